"""UDA: sharpened soft targets, unsharpened confidence mask, TSA (NumPy hand computation)."""
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixmatch_jax import algorithms
from fixmatch_jax.algorithms import uda

sys.path.insert(0, os.path.dirname(__file__))
import table_model as tm  # noqa: E402


def run(cfg, step):
  def loss(params, step):
    return uda.loss_fn(params, tm.batch(second_view="strong"), forward=tm.forward,
                       algo_state={}, key=None, step=step, cfg=cfg, num_classes=tm.NUM_CLASSES)
  (value, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
      tm.params(), jnp.asarray(step))
  return float(value), aux, np.asarray(grads["table"])


def test_soft_targets_mask_and_gradient():
  cfg = uda.default_config()
  cfg.threshold, cfg.lambda_u = 0.95, 2.0
  value, aux, grads = run(cfg, step=0)
  weak = tm.TABLE[tm.WEAK_ROWS]
  # Mask on the unsharpened confidence: row 2 (0.964) in, row 4 (0.926) out, although
  # its sharpened confidence (T = 0.4) is 0.9994.
  mask = (tm.softmax(weak).max(-1) >= 0.95).astype(np.float64)
  assert mask.tolist() == [1.0, 0.0, 0.0, 0.0]
  assert tm.softmax(weak / 0.4)[2].max() > 0.99
  targets = tm.softmax(weak / 0.4)
  strong = tm.softmax(tm.TABLE[tm.SECOND_ROWS])
  kl = np.sum(targets * (np.log(targets) - np.log(strong)), -1)
  loss_sup, grad_sup = tm.supervised_loss_and_grad()
  np.testing.assert_allclose(aux["metrics"]["train/loss_unsup"], np.sum(mask * kl) / 4, rtol=1e-5)
  np.testing.assert_allclose(value, loss_sup + 2.0 * np.sum(mask * kl) / 4, rtol=1e-5)
  np.testing.assert_allclose(grads[tm.SECOND_ROWS], 2.0 * mask[:, None] * (strong - targets) / 4,
                             rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(grads[tm.LABELLED_ROWS], grad_sup, rtol=1e-5)
  np.testing.assert_array_equal(grads[tm.WEAK_ROWS], 0.0)  # targets are constants
  np.testing.assert_array_equal(aux["batch_stats"]["rows"], tm.LABELLED_ROWS + tm.WEAK_ROWS
                                + tm.SECOND_ROWS)  # one pass over everything


def test_tsa_thresholds_at_their_breakpoints():
  def eta(step, schedule):
    return float(uda.tsa_threshold(step, 1000, schedule, 3))
  assert eta(0, "none") == 1.0 and eta(500, "none") == 1.0
  np.testing.assert_allclose([eta(0, "linear"), eta(500, "linear"), eta(1000, "linear")],
                             [1 / 3, 2 / 3, 1.0], rtol=1e-6)
  np.testing.assert_allclose(eta(500, "log"), (1 - math.exp(-2.5)) * 2 / 3 + 1 / 3, rtol=1e-6)
  np.testing.assert_allclose(eta(500, "exp"), math.exp(-2.5) * 2 / 3 + 1 / 3, rtol=1e-6)
  np.testing.assert_allclose(eta(1000, "exp"), 1.0, rtol=1e-6)
  np.testing.assert_allclose(eta(5000, "log"), 1 - math.exp(-5) * 2 / 3, rtol=1e-6)
  with pytest.raises(ValueError, match="tsa"):
    uda.tsa_threshold(0, 10, "cosine", 3)


def test_tsa_leaves_out_confident_labelled_examples():
  cfg = uda.default_config()
  cfg.tsa, cfg.tsa_steps = "linear", 1000
  _, aux, grads = run(cfg, step=0)  # eta = 1/3
  probs = tm.softmax(tm.TABLE[tm.LABELLED_ROWS])
  true_prob = probs[[0, 1], tm.LABELS]
  assert true_prob[0] > 1 / 3 > true_prob[1]  # row 0 left out, row 1 kept
  np.testing.assert_allclose(aux["metrics"]["train/loss_sup"], -np.log(true_prob[1]), rtol=1e-5)
  assert float(aux["metrics"]["train/tsa_kept"]) == 0.5
  np.testing.assert_array_equal(grads[0], 0.0)
  np.testing.assert_allclose(grads[1], probs[1] - np.eye(3)[2], rtol=1e-5)


def test_registered_with_the_uda_paper_defaults():
  algorithm = algorithms.get("uda")
  assert algorithm.views == ("weak", "strong")
  cfg = algorithm.default_config()
  assert (cfg.temperature, cfg.threshold, cfg.lambda_u, cfg.tsa) == (0.4, 0.8, 1.0, "none")
