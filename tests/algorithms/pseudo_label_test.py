"""Pseudo-Label (both recipes) against a NumPy hand computation on fixed logits."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from fixmatch_jax import algorithms
from fixmatch_jax.algorithms import pseudo_label

sys.path.insert(0, os.path.dirname(__file__))
import table_model as tm  # noqa: E402


def run(cfg, step):
  def loss(params, step):
    return pseudo_label.loss_fn(params, tm.batch(), forward=tm.forward, algo_state={"kept": 1},
                                key=jax.random.key(0), step=step, cfg=cfg,
                                num_classes=tm.NUM_CLASSES)
  (value, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
      tm.params(), jnp.asarray(step))
  return float(value), aux, np.asarray(grads["table"])


def expected(mask, weight):
  probs = tm.softmax(tm.TABLE[tm.WEAK_ROWS])
  pseudo = probs.argmax(-1)
  per_example = -np.log(probs[np.arange(4), pseudo])
  loss_unsup = np.sum(mask * per_example) / 4  # over all U examples
  loss_sup, grad_sup = tm.supervised_loss_and_grad()
  grads = np.zeros_like(tm.TABLE, np.float64)
  grads[tm.LABELLED_ROWS] = grad_sup
  # The pseudo-label is a constant target: d/dz of H(onehot(argmax), softmax(z)) only.
  grads[tm.WEAK_ROWS] = weight * mask[:, None] * (probs - np.eye(3)[pseudo]) / 4
  return loss_sup + weight * loss_unsup, loss_unsup, grads


def test_fixmatch_codebase_recipe_threshold_and_linear_warmup():
  cfg = pseudo_label.default_config()
  cfg.rampup_end = 1000  # 40% of 2500 steps
  value, aux, grads = run(cfg, step=250)
  probs = tm.softmax(tm.TABLE[tm.WEAK_ROWS])
  mask = (probs.max(-1) >= 0.95).astype(np.float64)
  assert mask.tolist() == [1.0, 0.0, 0.0, 0.0]  # only row 2 (p = 0.96) is confident
  total, loss_unsup, expected_grads = expected(mask, weight=0.25)
  np.testing.assert_allclose(value, total, rtol=1e-5)
  np.testing.assert_allclose(aux["metrics"]["train/loss_unsup"], loss_unsup, rtol=1e-5)
  np.testing.assert_allclose(grads, expected_grads, rtol=1e-4, atol=1e-7)
  assert float(aux["metrics"]["train/unsup_weight"]) == 0.25
  assert float(aux["metrics"]["train/mask_rate"]) == 0.25
  assert float(aux["metrics"]["train/pseudo_label_acc"]) == 1.0  # row 2 -> class 0, true 0
  # BatchNorm statistics of the labelled pass only.
  np.testing.assert_array_equal(aux["batch_stats"]["rows"], tm.LABELLED_ROWS)
  assert int(aux["algo_state"]["kept"]) == 1


def test_lee_recipe_uses_every_example_with_alpha_schedule():
  cfg = pseudo_label.lee_config(t1_steps=100, t2_steps=600)
  assert "threshold" not in cfg and cfg.lambda_u == 3.0
  for step, weight in [(50, 0.0), (350, 1.5), (600, 3.0)]:
    value, aux, grads = run(cfg, step)
    total, _, expected_grads = expected(np.ones(4), weight)
    np.testing.assert_allclose(value, total, rtol=1e-5)
    np.testing.assert_allclose(grads, expected_grads, rtol=1e-4, atol=1e-7)
    assert float(aux["metrics"]["train/mask_rate"]) == 1.0
  # All four argmax pseudo-labels [0, 1, 2, 1] equal the true labels.
  assert float(aux["metrics"]["train/pseudo_label_acc_all"]) == 1.0


def test_registered_with_the_papers_hyperparameters():
  algorithm = algorithms.get("pseudo_label")
  assert algorithm.views == ("weak",) and not algorithm.uses_ema_params
  cfg = algorithm.default_config()
  # FixMatch codebase (recipes.md): tau 0.95, weight 1, linear over the first 40% of 2^20.
  assert (cfg.threshold, cfg.lambda_u, cfg.rampup, cfg.rampup_start) == (0.95, 1.0, "linear", 0)
  assert cfg.rampup_end == int(0.4 * 2**20)
