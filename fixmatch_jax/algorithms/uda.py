"""Unsupervised Data Augmentation (Xie et al. 2020, arXiv:1904.12848, Sec. 3.1-3.2):

  q_u = stop_gradient(softmax(f(alpha(u)) / T))                 sharpened weak-view target
  m_u = 1[max_c softmax(f(alpha(u)))_c >= beta]                  confidence mask (unsharpened)
  loss = L_sup + lambda_u 1/U sum_u m_u KL(q_u || softmax(f(A(u))))

with alpha the weak and A the strong (RandAugment) augmentation; the sum is divided by all U
unlabelled examples. KL differs from the cross-entropy H(q, p) by H(q), a constant, so the
gradient is that of the soft-target cross-entropy. As in FixMatch, one training-mode pass
covers concat[labelled, weak, strong] (BatchNorm statistics over all of them).

Training Signal Annealing (Sec. 3.2), optional: at step t a labelled example whose predicted
probability of its true class exceeds eta_t = a_t (1 - 1/C) + 1/C is left out of L_sup,
a_t = t/T (linear), 1 - exp(-5 t/T) (log) or exp(5 (t/T - 1)) (exp) over T = tsa_steps, and
L_sup = sum_b kept_b H(y_b, f(x_b)) / max(sum_b kept_b, 1). tsa = "none": the plain mean.

Recipes: UDA paper T = 0.4, beta = 0.8; the FixMatch codebase's UDA baseline (Sohn et al.
2020, Table 2) T = 1, beta = 0.95 (recipes.md); lambda_u = 1, mu = 7 in both.

cfg (config.algo): temperature, threshold, lambda_u, tsa, tsa_steps.
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fixmatch_jax.algorithms import Algorithm, consistency, register

TSA_SCHEDULES = ("none", "linear", "log", "exp")


def tsa_threshold(step: Any, tsa_steps: Any, schedule: str, num_classes: int) -> jnp.ndarray:
  """eta_t of Training Signal Annealing (1.0 for "none": nothing is left out).

  Raises:
    ValueError: unknown schedule.
  """
  if schedule not in TSA_SCHEDULES:
    raise ValueError(f"Unknown tsa {schedule!r}; valid: {', '.join(TSA_SCHEDULES)}")
  if schedule == "none":
    return jnp.ones((), jnp.float32)
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / jnp.float32(tsa_steps), 0.0, 1.0)
  alpha = {"linear": lambda: progress,
           "log": lambda: 1.0 - jnp.exp(-5.0 * progress),
           "exp": lambda: jnp.exp(5.0 * (progress - 1.0))}[schedule]()
  return alpha * (1.0 - 1.0 / num_classes) + 1.0 / num_classes


def loss_fn(params: Any, batch: dict[str, Any], *, forward, algo_state: Any, key: Any,
            step: Any, cfg: ml_collections.ConfigDict,
            num_classes: int) -> tuple[jnp.ndarray, dict[str, Any]]:
  """UDA loss of one batch (see the module docstring).

  Args:
    batch: {"labelled": {"image", "label"}, "unlabelled": {"weak", "strong", "label"?}}.
    key: unused (augmentation randomness lives in the input pipeline).
    step: t, for TSA.
    Others: see fixmatch_jax.algorithms.

  Returns:
    (loss, aux); aux["entmin_logits"] are the strong view's logits.
  """
  del key
  labelled, unlabelled = batch["labelled"], batch["unlabelled"]
  logits, batch_stats = forward(
      params, (labelled["image"], unlabelled["weak"], unlabelled["strong"]), train=True)
  logits_labelled, logits_weak, logits_strong = (x.astype(jnp.float32) for x in logits)
  logits_weak = jax.lax.stop_gradient(logits_weak)

  per_example_sup = optax.softmax_cross_entropy_with_integer_labels(
      logits_labelled, labelled["label"])
  eta = tsa_threshold(step, cfg.tsa_steps, cfg.tsa, num_classes)
  true_class_prob = jnp.take_along_axis(
      jax.nn.softmax(jax.lax.stop_gradient(logits_labelled)), labelled["label"][:, None], -1)[:, 0]
  kept = (true_class_prob <= eta).astype(jnp.float32) if cfg.tsa != "none" else jnp.ones_like(
      per_example_sup)
  loss_sup = jnp.sum(kept * per_example_sup) / jnp.maximum(jnp.sum(kept), 1.0)

  targets = jax.nn.softmax(logits_weak / cfg.temperature)
  mask = (jnp.max(jax.nn.softmax(logits_weak), -1) >= cfg.threshold).astype(jnp.float32)
  kl = jnp.sum(targets * (jnp.log(jnp.maximum(targets, 1e-30))
                          - jax.nn.log_softmax(logits_strong)), axis=-1)
  loss_unsup = jnp.mean(kl * mask)

  metrics = {"train/loss_sup": loss_sup, "train/loss_unsup": loss_unsup,
             "train/tsa_threshold": eta, "train/tsa_kept": jnp.mean(kept)}
  metrics.update(consistency.monitors(logits_labelled, labelled["label"], targets, mask,
                                      unlabelled, num_classes))
  return loss_sup + cfg.lambda_u * loss_unsup, {
      "batch_stats": batch_stats, "algo_state": algo_state, "metrics": metrics,
      "entmin_logits": logits_strong}


def default_config() -> ml_collections.ConfigDict:
  """The UDA paper's values: T = 0.4, beta = 0.8, lambda_u = 1, no TSA."""
  return ml_collections.ConfigDict(dict(
      temperature=0.4, threshold=0.8, lambda_u=1.0, tsa="none", tsa_steps=2**20))


UDA = register(Algorithm(name="uda", views=("weak", "strong"), loss_fn=loss_fn,
                         default_config=default_config))
