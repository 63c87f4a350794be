"""Pi-model against a NumPy hand computation on fixed logits; stop-gradient on the target."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from fixmatch_jax import algorithms
from fixmatch_jax.algorithms import pi_model

sys.path.insert(0, os.path.dirname(__file__))
import table_model as tm  # noqa: E402


def softmax_jacobian_product(probs, upstream):
  """Row-wise J^T g for J = diag(p) - p p^T, the softmax Jacobian."""
  return probs * (upstream - np.sum(probs * upstream, -1, keepdims=True))


def run(cfg, step):
  def loss(params, step):
    return pi_model.loss_fn(params, tm.batch(), forward=tm.forward, algo_state={},
                            key=jax.random.key(0), step=step, cfg=cfg,
                            num_classes=tm.NUM_CLASSES)
  (value, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
      tm.params(), jnp.asarray(step))
  return float(value), aux, np.asarray(grads["table"])


def test_mse_between_two_views_with_a_fixed_target():
  cfg = pi_model.default_config()
  cfg.rampup_end = 100
  value, aux, grads = run(cfg, step=50)  # weight 10 * 0.5
  p1, p2 = tm.softmax(tm.TABLE[tm.WEAK_ROWS]), tm.softmax(tm.TABLE[tm.SECOND_ROWS])
  mse = np.mean((p1 - p2) ** 2)  # 1/(C U) sum ||p1 - p2||^2
  loss_sup, grad_sup = tm.supervised_loss_and_grad()
  np.testing.assert_allclose(value, loss_sup + 5.0 * mse, rtol=1e-5)
  np.testing.assert_allclose(aux["metrics"]["train/loss_unsup"], mse, rtol=1e-5)
  np.testing.assert_allclose(grads[tm.LABELLED_ROWS], grad_sup, rtol=1e-5)
  np.testing.assert_allclose(grads[tm.SECOND_ROWS],
                             softmax_jacobian_product(p2, -5.0 * 2 * (p1 - p2) / p1.size),
                             rtol=1e-4, atol=1e-7)
  np.testing.assert_array_equal(grads[tm.WEAK_ROWS], 0.0)  # stop_gradient on the target
  np.testing.assert_array_equal(aux["batch_stats"]["rows"], tm.LABELLED_ROWS)
  assert float(aux["metrics"]["train/mask_rate"]) == 1.0


def test_both_branches_differentiated_without_stop_gradient():
  cfg = pi_model.default_config()
  cfg.rampup, cfg.stop_gradient_target = "none", False
  _, _, grads = run(cfg, step=0)
  p1, p2 = tm.softmax(tm.TABLE[tm.WEAK_ROWS]), tm.softmax(tm.TABLE[tm.SECOND_ROWS])
  np.testing.assert_allclose(grads[tm.WEAK_ROWS],
                             softmax_jacobian_product(p1, 10.0 * 2 * (p1 - p2) / p1.size),
                             rtol=1e-4, atol=1e-7)


def test_registered_with_two_weak_views_and_the_fixmatch_codebase_weight():
  algorithm = algorithms.get("pi_model")
  assert algorithm.views == ("weak", "weak2")
  cfg = algorithm.default_config()
  assert (cfg.lambda_u, cfg.rampup, cfg.rampup_end) == (10.0, "linear", int(0.4 * 2**20))
