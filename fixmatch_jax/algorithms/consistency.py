"""Pieces shared by the pseudo-labelling and consistency baselines (PL, Pi, MT, UDA, VAT, EntMin).

Unlabelled-loss weight w(t) at step t, ramped up from rampup_start (T1) to rampup_end (T2):

  phase(t) = clip((t - T1) / (T2 - T1), 0, 1)      (a step at T2 when T2 == T1)
  "linear":  w(t) = lambda_u * phase(t)
      Lee 2013, Eq. (16): alpha(t) = 0 for t < T1, alpha_f (t - T1) / (T2 - T1) up to T2,
      then alpha_f; the FixMatch codebase's baselines use T1 = 0, T2 = 40% of training.
  "sigmoid": w(t) = lambda_u * exp(-5 (1 - phase(t))^2) for t >= T1, else 0
      Laine & Aila 2017 (arXiv:1610.02242, Sec. 3); Oliver et al. 2018 (arXiv:1804.09170)
      ramp over their first 200k steps.
  "none":    w(t) = lambda_u.

cfg keys read here: lambda_u, rampup, rampup_start, rampup_end (in optimizer steps).

The baselines of the FixMatch codebase (Pseudo-Label, Pi-model, Mean Teacher) run the
labelled batch and the unlabelled batch through separate training-mode passes and keep
only the labelled pass's BatchNorm moving averages (`labelled_pass`).
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fixmatch_jax.algorithms.fixmatch import pseudo_label_monitors

RAMPUPS = ("linear", "sigmoid", "none")


def rampup(step: Any, start: Any, end: Any, kind: str) -> jnp.ndarray:
  """The ramp factor in [0, 1] at `step` (see the module docstring).

  Raises:
    ValueError: unknown `kind`.
  """
  if kind not in RAMPUPS:
    raise ValueError(f"Unknown rampup {kind!r}; valid: {', '.join(RAMPUPS)}")
  if kind == "none":
    return jnp.ones((), jnp.float32)
  t = jnp.asarray(step, jnp.float32)
  start, end = jnp.float32(start), jnp.float32(end)
  phase = jnp.where(end > start, jnp.clip((t - start) / jnp.maximum(end - start, 1.0), 0.0, 1.0),
                    (t >= end).astype(jnp.float32))
  if kind == "linear":
    return phase
  return jnp.where(t >= start, jnp.exp(-5.0 * (1.0 - phase) ** 2), 0.0)


def unsup_weight(step: Any, cfg: ml_collections.ConfigDict) -> jnp.ndarray:
  """lambda_u times the configured ramp-up at `step`."""
  return cfg.lambda_u * rampup(step, cfg.rampup_start, cfg.rampup_end, cfg.rampup)


def labelled_pass(params: Any, labelled: dict[str, Any], forward,
                  ) -> tuple[jnp.ndarray, jnp.ndarray, Any]:
  """Training-mode pass over the labelled batch alone.

  Returns:
    (float32 logits [B, C], mean cross-entropy with the labels, the BatchNorm moving
    averages updated from this batch: the only ones the FixMatch-codebase baselines keep).
  """
  logits, batch_stats = forward(params, labelled["image"], train=True)
  logits = logits.astype(jnp.float32)
  loss_sup = optax.softmax_cross_entropy_with_integer_labels(logits, labelled["label"]).mean()
  return logits, loss_sup, batch_stats


def dropout_rngs(key: Any, index: int) -> dict[str, Any]:
  """An independent dropout key for the `index`-th extra forward pass of a step."""
  return {"dropout": jax.random.fold_in(key, index)}


def monitors(logits_labelled: jnp.ndarray, labels: jnp.ndarray, target_probs: jnp.ndarray,
             mask: jnp.ndarray, unlabelled: dict[str, Any],
             num_classes: int) -> dict[str, jnp.ndarray]:
  """Labelled accuracy, mask rate, confidence and pseudo-label quality (monitor only).

  Args:
    logits_labelled: [B, C].
    labels: int [B].
    target_probs: [U, C], the distribution the unlabelled loss pulls towards (its argmax is
      the pseudo-label).
    mask: float [U], 1 where the unlabelled example counts in the loss.
    unlabelled: the unlabelled batch; its "label" (if any) is the monitor-only truth.
    num_classes: C.
  """
  metrics = {
      "train/acc_labelled": jnp.mean(jnp.argmax(logits_labelled, -1) == labels),
      "train/mask_rate": jnp.mean(mask),
      "train/confidence": jnp.mean(jnp.max(target_probs, -1)),
  }
  if "label" in unlabelled:
    metrics.update(pseudo_label_monitors(mask, jnp.argmax(target_probs, -1),
                                         unlabelled["label"], num_classes))
  return metrics
