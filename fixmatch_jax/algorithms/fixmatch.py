"""FixMatch (Sohn et al. 2020, arXiv:2001.07685), Sec. 3, Eqs. (3)-(4): loss = l_s + lambda_u l_u,

  l_s = 1/B   sum_b H(y_b, p_model(y | alpha(x_b)))
  l_u = 1/muB sum_b 1[max(q_b) >= tau] H(argmax(q_b), p_model(y | A(u_b))),
  q_b = stop_gradient(p_model(y | alpha(u_b)))

with alpha the weak and A the strong augmentation. As in the official code, one
training-mode forward pass covers concat[labelled, unlabelled weak, unlabelled strong], so
BatchNorm normalises with, and updates its moving averages from, all B + 2 muB images, and
l_u divides by all muB unlabelled examples, not by the number of confident ones.

cfg (config.algo): threshold (tau, 0.95), lambda_u (1.0), temperature (T, 1.0: q_b is
softmax(logits / T), used for the mask and the targets), soft_labels (False; True trains
on q_b itself, the UDA-style soft target, instead of its argmax).
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fixmatch_jax.algorithms import Algorithm, register


def pseudo_label_monitors(confidence_mask: jnp.ndarray, pseudo_labels: jnp.ndarray,
                          true_labels: jnp.ndarray, num_classes: int) -> dict[str, jnp.ndarray]:
  """Quality of the pseudo-labels against the unlabelled ground truth (never used in a loss).

  Args:
    confidence_mask: float {0, 1} [U], 1 where the pseudo-label is used.
    pseudo_labels: int [U].
    true_labels: int [U], the monitor-only labels of the unlabelled batch (-1: unknown).
    num_classes: C.

  Returns:
    "train/pseudo_label_acc": accuracy over masked-in examples, sum(mask*correct)/max(sum(mask),1);
    "train/pseudo_label_acc_all": accuracy over all unlabelled examples;
    "train/per_class_mask_rate": [C], for each TRUE class c the fraction of its unlabelled
      examples that are masked in (0 for a class absent from the batch).
  """
  # A true label of -1 marks a truly unlabelled example (e.g. STL-10's 100k): it counts in
  # no monitor. jax.nn.one_hot maps -1 to an all-zero row.
  known = (true_labels >= 0).astype(jnp.float32)
  correct = (pseudo_labels == true_labels).astype(jnp.float32)
  true_one_hot = jax.nn.one_hot(true_labels, num_classes, dtype=jnp.float32)
  class_counts = true_one_hot.sum(axis=0)
  class_masked = (true_one_hot * confidence_mask[:, None]).sum(axis=0)
  masked_known = confidence_mask * known
  return {
      "train/pseudo_label_acc":
          jnp.sum(masked_known * correct) / jnp.maximum(jnp.sum(masked_known), 1.0),
      "train/pseudo_label_acc_all": jnp.sum(known * correct) / jnp.maximum(jnp.sum(known), 1.0),
      "train/per_class_mask_rate": class_masked / jnp.maximum(class_counts, 1.0),
  }


def weak_strong_pass(params: Any, batch: dict[str, Any], forward) -> tuple[Any, ...]:
  """One training-mode forward over concat[labelled, weak, strong] (BatchNorm sees all).

  Returns:
    (logits_labelled, logits_weak, logits_strong, loss_sup, batch_stats), logits in float32
    and loss_sup the mean cross-entropy of the labelled images.
  """
  labelled, unlabelled = batch["labelled"], batch["unlabelled"]
  logits, batch_stats = forward(
      params, (labelled["image"], unlabelled["weak"], unlabelled["strong"]), train=True)
  logits_labelled, logits_weak, logits_strong = (x.astype(jnp.float32) for x in logits)
  loss_sup = optax.softmax_cross_entropy_with_integer_labels(
      logits_labelled, labelled["label"]).mean()
  return logits_labelled, logits_weak, logits_strong, loss_sup, batch_stats


def loss_fn(params: Any, batch: dict[str, Any], *, forward, algo_state: Any, key: Any,
            step: Any, cfg: ml_collections.ConfigDict,
            num_classes: int) -> tuple[jnp.ndarray, dict[str, Any]]:
  """FixMatch loss of one batch (see the module docstring).

  Args:
    params: model parameters (differentiated).
    batch: {"labelled": {"image", "label"}, "unlabelled": {"weak", "strong", "label"?}}.
    forward: see fixmatch_jax.algorithms.
    algo_state: passed through unchanged (FixMatch is stateless).
    key, step: unused (augmentation randomness lives in the input pipeline).
    cfg: config.algo with threshold, lambda_u, temperature, soft_labels.
    num_classes: C, for the per-class monitors.

  Returns:
    (loss, aux) with aux = {"batch_stats", "algo_state", "metrics"}.
  """
  del key, step
  labelled, unlabelled = batch["labelled"], batch["unlabelled"]
  logits_labelled, logits_weak, logits_strong, loss_sup, batch_stats = weak_strong_pass(
      params, batch, forward)

  # Pseudo-labels are targets, not predictions to train: no gradient flows through them.
  weak_probs = jax.nn.softmax(jax.lax.stop_gradient(logits_weak) / cfg.temperature)
  confidence = jnp.max(weak_probs, axis=-1)
  pseudo_labels = jnp.argmax(weak_probs, axis=-1)
  confidence_mask = (confidence >= cfg.threshold).astype(jnp.float32)
  if cfg.soft_labels:
    unsup_per_example = optax.softmax_cross_entropy(logits_strong, weak_probs)
  else:
    unsup_per_example = optax.softmax_cross_entropy_with_integer_labels(
        logits_strong, pseudo_labels)
  # Mean over all muB unlabelled examples: masked-out ones count as zeros (official code).
  loss_unsup = jnp.mean(unsup_per_example * confidence_mask)
  loss = loss_sup + cfg.lambda_u * loss_unsup

  metrics = {
      "train/loss_sup": loss_sup,
      "train/loss_unsup": loss_unsup,
      "train/mask_rate": jnp.mean(confidence_mask),
      "train/confidence": jnp.mean(confidence),
      "train/acc_labelled": jnp.mean(jnp.argmax(logits_labelled, -1) == labelled["label"]),
  }
  if "label" in unlabelled:
    metrics.update(pseudo_label_monitors(
        confidence_mask, pseudo_labels, unlabelled["label"], num_classes))
  return loss, {"batch_stats": batch_stats, "algo_state": algo_state, "metrics": metrics}


def default_config() -> ml_collections.ConfigDict:
  """config.algo of the paper (Sec. 4): tau = 0.95, lambda_u = 1, hard pseudo-labels."""
  return ml_collections.ConfigDict(dict(
      threshold=0.95, lambda_u=1.0, temperature=1.0, soft_labels=False))


FIXMATCH = register(Algorithm(name="fixmatch", views=("weak", "strong"), loss_fn=loss_fn,
                              default_config=default_config))
