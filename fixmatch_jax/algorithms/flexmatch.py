"""FlexMatch (Zhang et al. 2021, arXiv:2110.08263): FixMatch with curriculum pseudo-labelling.

The fixed threshold tau of FixMatch becomes one threshold per class, scaled by how well the
model has learnt that class so far (Sec. 3.2, curriculum pseudo-labelling; Sec. 3.3,
threshold warm-up and non-linear mapping):

  sigma_t(c) = sum_n 1[max p(u_n) >= tau] 1[argmax p(u_n) = c]          (learning effect)
  beta_t(c)  = sigma_t(c) / max(max_c' sigma_t(c'), N - sum_c' sigma_t(c'))   (warm-up)
  T_t(c)     = M(beta_t(c)) tau,    M(x) = x / (2 - x)                  (convex mapping)
  l_u = 1/muB sum_b 1[max q_b >= T_t(argmax q_b)] H(argmax q_b, p_model(y | A(u_b)))

sigma_t is counted over the whole unlabelled set from each example's latest confident
prediction: the state keeps `selected_label` [N] (-1 = never predicted with confidence >= tau),
updated from every weak batch. N - sum sigma is the number of unused examples; the threshold
warm-up divides by it while it dominates, so thresholds start low and rise. As in the official
code (TorchSSL / USB FlexMatchThresholdingHook): the mask of step t uses the class-wise
learning effect computed after step t-1; beta keeps its previous value while the largest bucket
(a class or the unused examples) holds all N examples, so it starts at 0; without warm-up the
denominator is max_c sigma_t(c). Everything else (one forward pass over
concat[labelled, weak, strong], l_u over all muB, lambda_u) is FixMatch's.

N is the size of the per-example state, i.e. the training set (train.py): the unlabelled pool
of FixMatch/TorchSSL includes the labelled images, so N = 50000 on CIFAR-10 as in the paper.

cfg (config.algo): threshold (tau, 0.95), lambda_u (1.0), threshold_warmup (True), mapping
("convex": M(x) = x / (2 - x), the paper's choice; "linear": M(x) = x).
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fixmatch_jax.algorithms import Algorithm, register
from fixmatch_jax.algorithms.fixmatch import pseudo_label_monitors, weak_strong_pass

MAPPINGS = ("convex", "linear")


def init_state(cfg: ml_collections.ConfigDict, num_unlabelled: int,
               num_classes: int) -> dict[str, jnp.ndarray]:
  """selected_label = -1 for all N examples; classwise_acc (beta) = 0 for all C classes."""
  del cfg
  return {"selected_label": jnp.full((num_unlabelled,), -1, jnp.int32),
          "classwise_acc": jnp.zeros((num_classes,), jnp.float32)}


def learning_effect(selected_label: jnp.ndarray, previous: jnp.ndarray, *,
                    threshold_warmup: bool) -> jnp.ndarray:
  """beta_t(c) from the per-example selected labels, with or without the threshold warm-up.

  Args:
    selected_label: int [N], the class of each example's latest confident prediction, -1 if
      none yet.
    previous: float [C], beta of the previous step, kept while one bucket holds all N.
    threshold_warmup: count the unused examples (-1) in the denominator.

  Returns:
    float [C] in [0, 1].
  """
  num_examples, num_classes = selected_label.shape[0], previous.shape[0]
  # Bucket 0 counts the unused examples (-1), bucket c + 1 the examples of class c.
  counts = jnp.bincount(selected_label + 1, length=num_classes + 1).astype(jnp.float32)
  per_class, unused = counts[1:], counts[0]
  if threshold_warmup:
    denominator = jnp.maximum(jnp.max(per_class), unused)
  else:
    denominator = jnp.max(per_class)
  beta = per_class / jnp.maximum(denominator, 1.0)
  return jnp.where(jnp.maximum(jnp.max(per_class), unused) < num_examples, beta, previous)


def class_thresholds(classwise_acc: jnp.ndarray, cfg: ml_collections.ConfigDict) -> jnp.ndarray:
  """T_t(c) = M(beta_t(c)) tau for the configured mapping M."""
  if cfg.mapping == "convex":
    mapped = classwise_acc / (2.0 - classwise_acc)
  elif cfg.mapping == "linear":
    mapped = classwise_acc
  else:
    raise ValueError(f"config.algo.mapping={cfg.mapping!r}; choose one of {MAPPINGS}.")
  return cfg.threshold * mapped


def loss_fn(params: Any, batch: dict[str, Any], *, forward, algo_state: dict[str, Any],
            key: Any, step: Any, cfg: ml_collections.ConfigDict, num_classes: int,
            **unused_kwargs) -> tuple[jnp.ndarray, dict[str, Any]]:
  """FlexMatch loss of one batch and the updated learning-effect state (module docstring).

  Args:
    params: model parameters (differentiated).
    batch: {"labelled": {"image", "label"}, "unlabelled": {"weak", "strong", "index",
      "label"?}}; "index" addresses `selected_label`.
    forward: see fixmatch_jax.algorithms.
    algo_state: {"selected_label": int [N], "classwise_acc": float [C]}.
    key, step: unused.
    cfg: config.algo with threshold, lambda_u, threshold_warmup, mapping.
    num_classes: C.
    **unused_kwargs: later optional arguments of the interface.

  Returns:
    (loss, aux) with aux = {"batch_stats", "algo_state", "metrics"}.
  """
  del key, step, unused_kwargs
  labelled, unlabelled = batch["labelled"], batch["unlabelled"]
  logits_labelled, logits_weak, logits_strong, loss_sup, batch_stats = weak_strong_pass(
      params, batch, forward)

  weak_probs = jax.nn.softmax(jax.lax.stop_gradient(logits_weak))
  confidence = jnp.max(weak_probs, axis=-1)
  pseudo_labels = jnp.argmax(weak_probs, axis=-1)
  # The mask of this step uses the learning effect estimated up to the previous step.
  thresholds = class_thresholds(algo_state["classwise_acc"], cfg)
  confidence_mask = (confidence >= thresholds[pseudo_labels]).astype(jnp.float32)
  unsup_per_example = optax.softmax_cross_entropy_with_integer_labels(
      logits_strong, pseudo_labels)
  loss_unsup = jnp.mean(unsup_per_example * confidence_mask)
  loss = loss_sup + cfg.lambda_u * loss_unsup

  # sigma_t counts predictions confident at the FIXED tau; unconfident ones keep their old
  # entry (examples never confident stay -1, "unused").
  index = unlabelled["index"]
  selected = jnp.where(confidence >= cfg.threshold, pseudo_labels,
                       algo_state["selected_label"][index])
  selected_label = algo_state["selected_label"].at[index].set(selected.astype(jnp.int32))
  classwise_acc = learning_effect(selected_label, algo_state["classwise_acc"],
                                  threshold_warmup=cfg.threshold_warmup)
  new_state = {"selected_label": selected_label, "classwise_acc": classwise_acc}

  metrics = {
      "train/loss_sup": loss_sup,
      "train/loss_unsup": loss_unsup,
      "train/mask_rate": jnp.mean(confidence_mask),
      "train/confidence": jnp.mean(confidence),
      "train/acc_labelled": jnp.mean(jnp.argmax(logits_labelled, -1) == labelled["label"]),
      "train/per_class_threshold": thresholds,
      "train/unused_fraction": jnp.mean(selected_label < 0),
  }
  if "label" in unlabelled:
    metrics.update(pseudo_label_monitors(
        confidence_mask, pseudo_labels, unlabelled["label"], num_classes))
  return loss, {"batch_stats": batch_stats, "algo_state": new_state, "metrics": metrics}


def default_config() -> ml_collections.ConfigDict:
  """config.algo of the paper (Sec. 4.1, TorchSSL): tau 0.95, lambda_u 1, warm-up, convex M."""
  return ml_collections.ConfigDict(dict(
      threshold=0.95, lambda_u=1.0, threshold_warmup=True, mapping="convex"))


FLEXMATCH = register(Algorithm(name="flexmatch", views=("weak", "strong"), loss_fn=loss_fn,
                               init_state=init_state, default_config=default_config))
