"""FreeMatch (Wang et al. 2023, arXiv:2205.07246): self-adaptive thresholds and fairness.

FixMatch's fixed tau becomes a per-class threshold estimated from the model's own confidence
with exponential moving averages (momentum lambda) over the weak unlabelled batches q_b
(Sec. 3.2, self-adaptive thresholding):

  tau_t      = lambda tau_{t-1}     + (1 - lambda) 1/muB sum_b max(q_b)      (global)
  p~_t(c)    = lambda p~_{t-1}(c)   + (1 - lambda) 1/muB sum_b q_b(c)        (local)
  h~_t(c)    = lambda h~_{t-1}(c)   + (1 - lambda) Hist_muB(argmax q_b)(c)
  tau_t(c)   = MaxNorm(p~_t)(c) tau_t = p~_t(c) / max_c' p~_t(c') tau_t
  l_u = 1/muB sum_b 1[max q_b >= tau_t(argmax q_b)] H(argmax q_b, p_model(y | A(u_b)))

and adds the self-adaptive fairness term (Sec. 3.3) over the strong predictions Q_b of the
masked-in examples, p_bar = their mean probability vector and h_bar = the histogram of their
argmax:

  L_f = -H(SumNorm(p~_t / h~_t), SumNorm(p_bar / h_bar)),  H(a, b) = -sum_c a_c log b_c,
  loss = l_s + w_u l_u + w_f L_f.

L_f is used with the paper's sign, as the official code (USB `entropy_loss`) does: it adds
sum_c a_c log b_c. The left argument is a constant (EMA state); gradients flow through p_bar
only (a histogram has none). Classes with h = 0 get 0 instead of p / 0, and log(b + 1e-12)
keeps an empty class finite (both as in USB); with no masked-in example L_f = 0. Statistics
are updated with the current batch before the mask is computed (USB
FreeMatchThresholingHook). Initial values: the paper's 1/C for tau, p~ and h~
(`state_init="paper"`); USB's code starts all three at 1.0 (`state_init="usb"`), which starts
the threshold near 1 instead of near 1/C.

cfg (config.algo): lambda_u (w_u, 1.0), ema_momentum (lambda, 0.999), fairness_weight
(w_f; 0.001 in USB's CIFAR-10 configs), state_init ("paper" | "usb").
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fixmatch_jax.algorithms import Algorithm, register
from fixmatch_jax.algorithms.fixmatch import pseudo_label_monitors, weak_strong_pass

STATE_INITS = ("paper", "usb")


def init_state(cfg: ml_collections.ConfigDict, num_unlabelled: int,
               num_classes: int) -> dict[str, jnp.ndarray]:
  """tau (global threshold), p_model (p~) and label_hist (h~), all 1/C (paper) or 1 (USB)."""
  del num_unlabelled
  if cfg.state_init not in STATE_INITS:
    raise ValueError(f"config.algo.state_init={cfg.state_init!r}; choose one of {STATE_INITS}.")
  value = 1.0 / num_classes if cfg.state_init == "paper" else 1.0
  return {"global_threshold": jnp.asarray(value, jnp.float32),
          "p_model": jnp.full((num_classes,), value, jnp.float32),
          "label_hist": jnp.full((num_classes,), value, jnp.float32)}


def update_thresholds(state: dict[str, jnp.ndarray], weak_probs: jnp.ndarray,
                      momentum: float) -> tuple[dict[str, jnp.ndarray], jnp.ndarray]:
  """One EMA step of (tau_t, p~_t, h~_t) from the weak probabilities [U, C].

  Returns:
    (new state, per-class thresholds tau_t(c) [C]).
  """
  num_classes = weak_probs.shape[-1]
  histogram = jnp.bincount(jnp.argmax(weak_probs, -1), length=num_classes) / weak_probs.shape[0]
  new_state = {
      "global_threshold": momentum * state["global_threshold"]
                          + (1 - momentum) * jnp.mean(jnp.max(weak_probs, -1)),
      "p_model": momentum * state["p_model"] + (1 - momentum) * jnp.mean(weak_probs, 0),
      "label_hist": momentum * state["label_hist"] + (1 - momentum) * histogram,
  }
  thresholds = new_state["p_model"] / jnp.max(new_state["p_model"]) * new_state["global_threshold"]
  return new_state, thresholds


def _ratio_or_zero(numerator: jnp.ndarray, denominator: jnp.ndarray) -> jnp.ndarray:
  # numerator / denominator where the denominator is > 0, else 0, with finite gradients.
  positive = denominator > 0
  return jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), 0.0)


def fairness_loss(strong_logits: jnp.ndarray, confidence_mask: jnp.ndarray,
                  p_model: jnp.ndarray, label_hist: jnp.ndarray) -> jnp.ndarray:
  """L_f = sum_c a_c log(b_c + 1e-12) (module docstring); 0 when nothing is masked in."""
  num_classes = strong_logits.shape[-1]
  strong_probs = jax.nn.softmax(strong_logits)
  count = jnp.sum(confidence_mask)
  mean_probs = jnp.sum(confidence_mask[:, None] * strong_probs, 0) / jnp.maximum(count, 1.0)
  predicted = jax.nn.one_hot(jnp.argmax(strong_probs, -1), num_classes)
  histogram = jax.lax.stop_gradient(
      jnp.sum(confidence_mask[:, None] * predicted, 0) / jnp.maximum(count, 1.0))
  target = jax.lax.stop_gradient(_ratio_or_zero(p_model, label_hist))
  target = target / jnp.sum(target)
  scaled = _ratio_or_zero(mean_probs, histogram)
  scaled = scaled / jnp.maximum(jnp.sum(scaled), 1e-12)
  return jnp.where(count > 0, jnp.sum(target * jnp.log(scaled + 1e-12)), 0.0)


def loss_fn(params: Any, batch: dict[str, Any], *, forward, algo_state: dict[str, Any],
            key: Any, step: Any, cfg: ml_collections.ConfigDict, num_classes: int,
            **unused_kwargs) -> tuple[jnp.ndarray, dict[str, Any]]:
  """FreeMatch loss of one batch and the updated threshold state (module docstring).

  Args:
    params: model parameters (differentiated).
    batch: {"labelled": {"image", "label"}, "unlabelled": {"weak", "strong", "label"?}}.
    forward: see fixmatch_jax.algorithms.
    algo_state: {"global_threshold": [], "p_model": [C], "label_hist": [C]}.
    key, step: unused.
    cfg: config.algo with lambda_u, ema_momentum, fairness_weight.
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
  new_state, thresholds = update_thresholds(algo_state, weak_probs, cfg.ema_momentum)
  confidence_mask = (confidence >= thresholds[pseudo_labels]).astype(jnp.float32)
  unsup_per_example = optax.softmax_cross_entropy_with_integer_labels(
      logits_strong, pseudo_labels)
  loss_unsup = jnp.mean(unsup_per_example * confidence_mask)
  loss_fair = fairness_loss(logits_strong, confidence_mask, new_state["p_model"],
                            new_state["label_hist"])
  loss = loss_sup + cfg.lambda_u * loss_unsup + cfg.fairness_weight * loss_fair

  metrics = {
      "train/loss_sup": loss_sup,
      "train/loss_unsup": loss_unsup,
      "train/loss_fairness": loss_fair,
      "train/mask_rate": jnp.mean(confidence_mask),
      "train/confidence": jnp.mean(confidence),
      "train/acc_labelled": jnp.mean(jnp.argmax(logits_labelled, -1) == labelled["label"]),
      "train/global_threshold": new_state["global_threshold"],
      "train/per_class_threshold": thresholds,
  }
  if "label" in unlabelled:
    metrics.update(pseudo_label_monitors(
        confidence_mask, pseudo_labels, unlabelled["label"], num_classes))
  return loss, {"batch_stats": batch_stats, "algo_state": new_state, "metrics": metrics}


def default_config() -> ml_collections.ConfigDict:
  """config.algo: w_u 1, lambda 0.999, w_f 0.001 (USB CIFAR-10 configs), the paper's init."""
  return ml_collections.ConfigDict(dict(
      lambda_u=1.0, ema_momentum=0.999, fairness_weight=0.001, state_init="paper"))


FREEMATCH = register(Algorithm(name="freematch", views=("weak", "strong"), loss_fn=loss_fn,
                               init_state=init_state, default_config=default_config))
