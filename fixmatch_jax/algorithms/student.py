"""Student training on fixed pseudo-labels: self-training rounds and deep label propagation.

The student of a teacher/student round (Xie et al. 2020, Noisy Student, arXiv:1911.04252,
Sec. 2; the 5-step recipe in recipes.md) and stage 2 of deep label propagation (Iscen et
al. 2019, arXiv:1904.04717, Eq. 10) minimise the same loss: cross-entropy on the labelled
batch plus a weighted cross-entropy towards per-example targets fixed before training,

  loss = 1/B sum_b H(y_b, p(y | alpha(x_b)))
       + lambda_u 1/muB sum_u w_u H(t_u, p(y | view(u)))

where t_u (one-hot or soft) and w_u >= 0 are looked up by the unlabelled example's index in
a table written by the driver (fixmatch_jax.self_training, fixmatch_jax.label_propagation).
w_u = 0 leaves an example out (not selected); label propagation's w_u is its entropy weight
times its class weight. As in FixMatch, the sum is divided by all muB unlabelled examples.
One training-mode forward pass covers concat[labelled, unlabelled view].

Two registered variants differ only in the unlabelled view: "student" (weak augmentation,
Iscen et al.) and "noisy_student" (RandAugment + Cutout, the input noise of Noisy Student;
its dropout is config.model.dropout_rate).

cfg (config.algo): targets_file (an .npz with "targets" float [N, C] and "weights" float [N]
over the whole training set), lambda_u (1.0).
"""
import functools
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fixmatch_jax.algorithms import Algorithm, register


def load_targets(cfg: ml_collections.ConfigDict, num_unlabelled: int,
                 num_classes: int) -> dict[str, jnp.ndarray]:
  """The algorithm state: {"targets": [N, C], "weights": [N]} read from cfg.targets_file.

  Raises:
    ValueError: no file set, or its arrays do not match the training set and classes.
  """
  path = cfg.get("targets_file")
  if not path:
    raise ValueError("config.algo.targets_file is not set: a student trains on pseudo-labels "
                     "written by fixmatch_jax.self_training or fixmatch_jax.label_propagation "
                     "(see experiments/runs/self_training.sh).")
  with np.load(path) as table:
    targets = np.asarray(table["targets"], np.float32)
    weights = np.asarray(table["weights"], np.float32)
  if targets.shape != (num_unlabelled, num_classes) or weights.shape != (num_unlabelled,):
    raise ValueError(f"{path}: targets {targets.shape} and weights {weights.shape} must be "
                     f"({num_unlabelled}, {num_classes}) and ({num_unlabelled},), one row per "
                     "training example; was it written for another dataset?")
  if not (np.isfinite(targets).all() and np.isfinite(weights).all() and (weights >= 0).all()):
    raise ValueError(f"{path}: targets and weights must be finite and weights >= 0.")
  return {"targets": jnp.asarray(targets), "weights": jnp.asarray(weights)}


def loss_fn(params: Any, batch: dict[str, Any], *, forward, algo_state: Any, key: Any,
            step: Any, cfg: ml_collections.ConfigDict, num_classes: int,
            view: str) -> tuple[jnp.ndarray, dict[str, Any]]:
  """Labelled cross-entropy + weighted cross-entropy to the stored targets (module docstring).

  Args:
    params: model parameters (differentiated).
    batch: {"labelled": {"image", "label"}, "unlabelled": {view, "index", "label"?}}.
    forward: see fixmatch_jax.algorithms.
    algo_state: {"targets": [N, C], "weights": [N]} (load_targets); passed through.
    key, step, num_classes: unused.
    cfg: config.algo (lambda_u).
    view: the unlabelled view the student is trained on ("weak" or "strong").

  Returns:
    (loss, aux) with aux = {"batch_stats", "algo_state", "metrics"}.
  """
  del key, step, num_classes
  labelled, unlabelled = batch["labelled"], batch["unlabelled"]
  logits, batch_stats = forward(params, (labelled["image"], unlabelled[view]), train=True)
  logits_labelled, logits_unlabelled = (x.astype(jnp.float32) for x in logits)
  loss_sup = optax.softmax_cross_entropy_with_integer_labels(
      logits_labelled, labelled["label"]).mean()
  targets = algo_state["targets"][unlabelled["index"]]
  weights = algo_state["weights"][unlabelled["index"]]
  loss_unsup = jnp.mean(weights * optax.softmax_cross_entropy(logits_unlabelled, targets))
  loss = loss_sup + cfg.lambda_u * loss_unsup

  used = (weights > 0).astype(jnp.float32)
  metrics = {
      "train/loss_sup": loss_sup,
      "train/loss_unsup": loss_unsup,
      "train/mask_rate": jnp.mean(used),
      "train/mean_weight": jnp.mean(weights),
      "train/acc_labelled": jnp.mean(jnp.argmax(logits_labelled, -1) == labelled["label"]),
  }
  if "label" in unlabelled:
    known = used * (unlabelled["label"] >= 0)
    correct = (jnp.argmax(targets, -1) == unlabelled["label"]).astype(jnp.float32)
    metrics["train/pseudo_label_acc"] = jnp.sum(known * correct) / jnp.maximum(known.sum(), 1)
  return loss, {"batch_stats": batch_stats, "algo_state": algo_state, "metrics": metrics}


def default_config() -> ml_collections.ConfigDict:
  """targets_file (set by the driver) and lambda_u = 1 (Iscen et al. weigh both terms 1)."""
  return ml_collections.ConfigDict(dict(
      targets_file=ml_collections.FieldReference(None, field_type=str), lambda_u=1.0))


STUDENT = register(Algorithm(
    name="student", views=("weak",), loss_fn=functools.partial(loss_fn, view="weak"),
    init_state=load_targets, default_config=default_config))
NOISY_STUDENT = register(Algorithm(
    name="noisy_student", views=("strong",), loss_fn=functools.partial(loss_fn, view="strong"),
    init_state=load_targets, default_config=default_config))
