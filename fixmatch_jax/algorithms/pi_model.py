"""Pi-model (Laine & Aila 2017, arXiv:1610.02242, Sec. 2.1, Algorithm 1; Sajjadi et al. 2016):

  loss = 1/B sum_b H(y_b, f(x_b)) + w(t) 1/(C U) sum_u || f(alpha_1(u)) - f(alpha_2(u)) ||^2

where f is the softmax output, alpha_1 and alpha_2 two independent weak augmentations (and
dropout masks) of the same unlabelled image, and w(t) a ramped weight (consistency.py).

Recipes (config.algo):
- FixMatch codebase baseline (Sohn et al. 2020, Table 2): weight 10, linear ramp over the
  first 40% of training, the first view's prediction is a fixed target (stop_gradient);
  BatchNorm moving averages from the labelled pass only.
- Oliver et al. 2018 (arXiv:1804.09170, Table 4): weight 20, sigmoid ramp over 200k steps.
Laine & Aila's Algorithm 1 differentiates both branches; `stop_gradient_target=False` does
that.

cfg: lambda_u, rampup, rampup_start, rampup_end, stop_gradient_target.
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from fixmatch_jax.algorithms import Algorithm, consistency, register


def loss_fn(params: Any, batch: dict[str, Any], *, forward, algo_state: Any, key: Any,
            step: Any, cfg: ml_collections.ConfigDict,
            num_classes: int) -> tuple[jnp.ndarray, dict[str, Any]]:
  """Pi-model loss of one batch: supervised CE + w(t) * MSE between the two views' softmax.

  Args:
    batch: {"labelled": {"image", "label"}, "unlabelled": {"weak", "weak2", "label"?}}.
    key: the two unlabelled passes draw dropout masks from fold_in(key, 0) and (key, 1).
    Others: see fixmatch_jax.algorithms.

  Returns:
    (loss, aux); aux["entmin_logits"] are the second view's logits.
  """
  labelled, unlabelled = batch["labelled"], batch["unlabelled"]
  logits_labelled, loss_sup, batch_stats = consistency.labelled_pass(params, labelled, forward)
  logits_1, _ = forward(params, unlabelled["weak"], train=True,
                        rngs=consistency.dropout_rngs(key, 0))
  logits_2, _ = forward(params, unlabelled["weak2"], train=True,
                        rngs=consistency.dropout_rngs(key, 1))
  probs_1 = jax.nn.softmax(logits_1.astype(jnp.float32))
  if cfg.stop_gradient_target:
    probs_1 = jax.lax.stop_gradient(probs_1)
  probs_2 = jax.nn.softmax(logits_2.astype(jnp.float32))
  loss_unsup = jnp.mean((probs_1 - probs_2) ** 2)
  weight = consistency.unsup_weight(step, cfg)

  metrics = {"train/loss_sup": loss_sup, "train/loss_unsup": loss_unsup,
             "train/unsup_weight": weight}
  metrics.update(consistency.monitors(logits_labelled, labelled["label"],
                                      jax.lax.stop_gradient(probs_1),
                                      jnp.ones(probs_1.shape[:1]), unlabelled, num_classes))
  return loss_sup + weight * loss_unsup, {
      "batch_stats": batch_stats, "algo_state": algo_state, "metrics": metrics,
      "entmin_logits": logits_2}


def default_config() -> ml_collections.ConfigDict:
  """The FixMatch codebase's baseline: weight 10, linear over 40% of K = 2^20 steps."""
  return ml_collections.ConfigDict(dict(
      lambda_u=10.0, rampup="linear", rampup_start=0, rampup_end=int(0.4 * 2**20),
      stop_gradient_target=True))


PI_MODEL = register(Algorithm(name="pi_model", views=("weak", "weak2"), loss_fn=loss_fn,
                              default_config=default_config))
