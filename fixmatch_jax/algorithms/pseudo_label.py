"""Pseudo-Label (Lee 2013, ICML WREPL workshop), Eqs. (1) and (15)-(16), two recipes.

  y'_u = argmax_c f_c(u)                  hard target, recomputed at every update
  loss = 1/B sum_b H(y_b, f(x_b)) + alpha(t) 1/U sum_u m_u H(y'_u, f(u))

with no gradient through y'_u (it is a target, as a true label would be) and the unlabelled
sum divided by all U examples.

(a) The FixMatch codebase's "Pseudo-Labeling" baseline (Sohn et al. 2020, arXiv:2001.07685,
    Table 2; recipes.md): u is the weakly augmented unlabelled image, m_u = 1[max_c f_c(u)
    >= tau] with tau = 0.95, alpha(t) = lambda_u * min(t / (0.4 K), 1) with lambda_u = 1 over
    K steps ("linear" ramp, rampup_start 0, rampup_end 0.4 K).
(b) Lee's original: m_u = 1 for every example (no "threshold" key in cfg) and
    alpha(t) = alpha_f * clip((t - T1) / (T2 - T1), 0, 1) with alpha_f = 3, T1 = 100 and
    T2 = 600 epochs ("linear" ramp from rampup_start T1 to rampup_end T2, in steps).

Two training-mode passes, labelled then unlabelled: BatchNorm normalises each batch with its
own statistics and its moving averages are updated from the labelled pass only, as in the
FixMatch codebase. The unlabelled pass draws its own dropout mask.

cfg (config.algo): threshold (tau; absent = Lee, every example counts), lambda_u, rampup,
rampup_start, rampup_end (see consistency.py).
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fixmatch_jax.algorithms import Algorithm, consistency, register


def loss_fn(params: Any, batch: dict[str, Any], *, forward, algo_state: Any, key: Any,
            step: Any, cfg: ml_collections.ConfigDict,
            num_classes: int) -> tuple[jnp.ndarray, dict[str, Any]]:
  """Pseudo-Label loss of one batch (see the module docstring).

  Args:
    params: model parameters (differentiated).
    batch: {"labelled": {"image", "label"}, "unlabelled": {"weak", "label"?}}.
    forward: see fixmatch_jax.algorithms.
    algo_state: passed through unchanged.
    key: dropout key of the unlabelled pass.
    step: t, for the weight alpha(t).
    cfg: config.algo.
    num_classes: C, for the monitors.

  Returns:
    (loss, aux); aux["entmin_logits"] are the unlabelled logits.
  """
  labelled, unlabelled = batch["labelled"], batch["unlabelled"]
  logits_labelled, loss_sup, batch_stats = consistency.labelled_pass(params, labelled, forward)
  logits_unlabelled, _ = forward(params, unlabelled["weak"], train=True,
                                 rngs=consistency.dropout_rngs(key, 0))
  logits_unlabelled = logits_unlabelled.astype(jnp.float32)

  probs = jax.nn.softmax(jax.lax.stop_gradient(logits_unlabelled))
  pseudo_labels = jnp.argmax(probs, axis=-1)
  threshold = cfg.get("threshold")
  if threshold is None:
    mask = jnp.ones(probs.shape[:1], jnp.float32)
  else:
    mask = (jnp.max(probs, axis=-1) >= threshold).astype(jnp.float32)
  per_example = optax.softmax_cross_entropy_with_integer_labels(logits_unlabelled, pseudo_labels)
  loss_unsup = jnp.mean(per_example * mask)
  weight = consistency.unsup_weight(step, cfg)
  loss = loss_sup + weight * loss_unsup

  metrics = {"train/loss_sup": loss_sup, "train/loss_unsup": loss_unsup,
             "train/unsup_weight": weight}
  metrics.update(consistency.monitors(logits_labelled, labelled["label"], probs, mask,
                                      unlabelled, num_classes))
  return loss, {"batch_stats": batch_stats, "algo_state": algo_state, "metrics": metrics,
                "entmin_logits": logits_unlabelled}


def default_config() -> ml_collections.ConfigDict:
  """Recipe (a), the FixMatch codebase's baseline, for the paper's K = 2^20 steps."""
  return ml_collections.ConfigDict(dict(
      threshold=0.95, lambda_u=1.0, rampup="linear", rampup_start=0,
      rampup_end=int(0.4 * 2**20)))


def lee_config(t1_steps: int, t2_steps: int) -> ml_collections.ConfigDict:
  """Recipe (b), Lee 2013 Sec. 3.2: alpha_f = 3, ramp from T1 to T2, no threshold."""
  return ml_collections.ConfigDict(dict(
      lambda_u=3.0, rampup="linear", rampup_start=t1_steps, rampup_end=t2_steps))


PSEUDO_LABEL = register(Algorithm(name="pseudo_label", views=("weak",), loss_fn=loss_fn,
                                  default_config=default_config))
