"""Virtual Adversarial Training (Miyato et al. 2018, arXiv:1704.03976, Sec. 3.1-3.3):

  r_adv = argmax_{||r||_2 <= eps} KL(p(y|u) || p(y|u + r))       (Eq. 5)
  loss  = 1/B sum_b H(y_b, f(x_b)) + w(t) 1/U sum_u KL(stop_gradient(p(y|u)) || p(y|u + r_adv))

r_adv is approximated by power iteration (Eqs. 8-12): d ~ N(0, I); repeat K times
d <- grad_r KL(p(y|u) || p(y|u + r)) at r = xi d/||d||; then r_adv = eps d/||d|| (norms per
example, over all pixels). r_adv is a constant for the outer gradient. u is the weakly
augmented unlabelled image in the model's input space ([-1, 1]: eps is measured there). All
unlabelled passes share one dropout mask, so they differ only by r; BatchNorm moving averages
come from the labelled pass only.

Recipe: Oliver et al. 2018 (arXiv:1804.09170, Table 4): weight 0.3 ramped by the sigmoid
over 200k steps, eps = 6 (SVHN: 1), xi = 1e-6, one power iteration, Adam lr 3e-3.
VAT+EntMin is "vat+entmin" (entmin.py), with the entropy of the clean unlabelled logits.

cfg (config.algo): lambda_u, rampup, rampup_start, rampup_end, xi, eps, num_power_iterations.
"""
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from fixmatch_jax.algorithms import Algorithm, consistency, register
from fixmatch_jax.models.wide_resnet import to_model_input


def l2_normalize(d: jnp.ndarray) -> jnp.ndarray:
  """d / ||d||_2 per example (over all axes but the first); scaled by max |d| first so that
  tiny gradients (of order xi) do not underflow when squared."""
  axes = tuple(range(1, d.ndim))
  d = d / (1e-12 + jnp.max(jnp.abs(d), axis=axes, keepdims=True))
  return d / jnp.sqrt(1e-6 + jnp.sum(d ** 2, axis=axes, keepdims=True))


def kl_divergence(probs: jnp.ndarray, logits: jnp.ndarray) -> jnp.ndarray:
  """KL(probs || softmax(logits)) per example."""
  return jnp.sum(probs * (jnp.log(jnp.maximum(probs, 1e-30)) - jax.nn.log_softmax(logits)), -1)


def adversarial_perturbation(logits_fn: Callable[[jnp.ndarray], jnp.ndarray],
                             inputs: jnp.ndarray, probs: jnp.ndarray, key: Any, *, xi: float,
                             eps: float, num_power_iterations: int) -> jnp.ndarray:
  """r_adv for `inputs` (float, model input space), a constant of norm eps per example.

  Args:
    logits_fn: inputs -> logits (the model at fixed parameters and dropout mask).
    inputs: float [U, ...].
    probs: p(y|u), the clean predictions (a constant).
    key: for the random start d.
    xi: finite-difference radius.
    eps: norm of the returned perturbation.
    num_power_iterations: K.
  """
  def divergence(r):
    return jnp.sum(kl_divergence(probs, logits_fn(inputs + r).astype(jnp.float32)))

  d = jax.random.normal(key, inputs.shape, jnp.float32)
  for _ in range(num_power_iterations):
    d = jax.grad(divergence)(xi * l2_normalize(d))
  return jax.lax.stop_gradient(eps * l2_normalize(d))


def loss_fn(params: Any, batch: dict[str, Any], *, forward, algo_state: Any, key: Any,
            step: Any, cfg: ml_collections.ConfigDict,
            num_classes: int) -> tuple[jnp.ndarray, dict[str, Any]]:
  """VAT loss of one batch (see the module docstring).

  Returns:
    (loss, aux); aux["entmin_logits"] are the clean unlabelled logits (with gradient).
  """
  labelled, unlabelled = batch["labelled"], batch["unlabelled"]
  logits_labelled, loss_sup, batch_stats = consistency.labelled_pass(params, labelled, forward)
  inputs = to_model_input(unlabelled["weak"]).astype(jnp.float32)
  rngs = consistency.dropout_rngs(key, 0)
  logits_fn = lambda x, p=params: forward(p, x, train=True, rngs=rngs)[0]
  logits_clean = logits_fn(inputs).astype(jnp.float32)
  probs = jax.lax.stop_gradient(jax.nn.softmax(logits_clean))
  r_adv = adversarial_perturbation(
      lambda x: logits_fn(x, jax.lax.stop_gradient(params)), inputs, probs,
      jax.random.fold_in(key, 1), xi=cfg.xi, eps=cfg.eps,
      num_power_iterations=cfg.num_power_iterations)
  loss_unsup = jnp.mean(kl_divergence(probs, logits_fn(inputs + r_adv).astype(jnp.float32)))
  weight = consistency.unsup_weight(step, cfg)

  metrics = {"train/loss_sup": loss_sup, "train/loss_unsup": loss_unsup,
             "train/unsup_weight": weight}
  metrics.update(consistency.monitors(logits_labelled, labelled["label"], probs,
                                      jnp.ones(probs.shape[:1]), unlabelled, num_classes))
  return loss_sup + weight * loss_unsup, {
      "batch_stats": batch_stats, "algo_state": algo_state, "metrics": metrics,
      "entmin_logits": logits_clean}


def default_config() -> ml_collections.ConfigDict:
  """Oliver et al. 2018's CIFAR-10 values: weight 0.3, sigmoid ramp over 200k, eps 6."""
  return ml_collections.ConfigDict(dict(
      lambda_u=0.3, rampup="sigmoid", rampup_start=0, rampup_end=200_000, xi=1e-6, eps=6.0,
      num_power_iterations=1))


VAT = register(Algorithm(name="vat", views=("weak",), loss_fn=loss_fn,
                         default_config=default_config))
