"""Mean Teacher (Tarvainen & Valpola 2017, arXiv:1703.01780, Sec. 2):

  theta'_t = a theta'_{t-1} + (1 - a) theta_t                  (EMA teacher, Eq. 1)
  loss = 1/B sum_b H(y_b, f_theta(x_b))
       + w(t) 1/(C U) sum_u || f_theta'(alpha_1(u)) - f_theta(alpha_2(u)) ||^2

f is the softmax output, alpha_1 and alpha_2 two independent weak augmentations of the same
unlabelled image; the teacher's prediction is a constant (no gradient to theta, and theta'
is never differentiated). The teacher is the TrainState's `ema_params`, updated by the
shared step with config.optim.ema_decay (a), so this loss asks for them
(`uses_ema_params=True`). Like the student, the teacher runs in training mode (BatchNorm
normalises with the batch's statistics; the EMA parameters have no moving averages of
their own); only the labelled pass updates the moving averages.

Recipes: FixMatch codebase baseline (Sohn et al. 2020, Table 2): weight 50, linear ramp
over the first 40% of training, EMA 0.999. Oliver et al. 2018 (Table 4): weight 8,
sigmoid ramp over 200k steps, EMA 0.95, Adam lr 4e-4.

cfg (config.algo): lambda_u, rampup, rampup_start, rampup_end; the decay is config.optim.
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from fixmatch_jax.algorithms import Algorithm, consistency, register


def loss_fn(params: Any, batch: dict[str, Any], *, forward, algo_state: Any, key: Any,
            step: Any, cfg: ml_collections.ConfigDict, num_classes: int,
            ema_params: Any) -> tuple[jnp.ndarray, dict[str, Any]]:
  """Mean Teacher loss of one batch (see the module docstring).

  Args:
    batch: {"labelled": {"image", "label"}, "unlabelled": {"weak", "weak2", "label"?}}:
      the teacher sees "weak", the student "weak2".
    ema_params: the teacher's parameters.
    Others: see fixmatch_jax.algorithms.

  Returns:
    (loss, aux); aux["entmin_logits"] are the student's unlabelled logits.
  """
  labelled, unlabelled = batch["labelled"], batch["unlabelled"]
  logits_labelled, loss_sup, batch_stats = consistency.labelled_pass(params, labelled, forward)
  logits_teacher, _ = forward(jax.lax.stop_gradient(ema_params), unlabelled["weak"], train=True,
                              rngs=consistency.dropout_rngs(key, 0))
  logits_student, _ = forward(params, unlabelled["weak2"], train=True,
                              rngs=consistency.dropout_rngs(key, 1))
  probs_teacher = jax.lax.stop_gradient(jax.nn.softmax(logits_teacher.astype(jnp.float32)))
  probs_student = jax.nn.softmax(logits_student.astype(jnp.float32))
  loss_unsup = jnp.mean((probs_teacher - probs_student) ** 2)
  weight = consistency.unsup_weight(step, cfg)

  metrics = {"train/loss_sup": loss_sup, "train/loss_unsup": loss_unsup,
             "train/unsup_weight": weight}
  metrics.update(consistency.monitors(logits_labelled, labelled["label"], probs_teacher,
                                      jnp.ones(probs_teacher.shape[:1]), unlabelled,
                                      num_classes))
  return loss_sup + weight * loss_unsup, {
      "batch_stats": batch_stats, "algo_state": algo_state, "metrics": metrics,
      "entmin_logits": logits_student}


def default_config() -> ml_collections.ConfigDict:
  """The FixMatch codebase's baseline: weight 50, linear over 40% of K = 2^20 steps."""
  return ml_collections.ConfigDict(dict(
      lambda_u=50.0, rampup="linear", rampup_start=0, rampup_end=int(0.4 * 2**20)))


MEAN_TEACHER = register(Algorithm(name="mean_teacher", views=("weak", "weak2"), loss_fn=loss_fn,
                                  default_config=default_config, uses_ema_params=True))
