"""Entropy minimisation: value and gradient against NumPy, alone and wrapped around a method."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixmatch_jax import algorithms
from fixmatch_jax.algorithms import entmin

sys.path.insert(0, os.path.dirname(__file__))
import table_model as tm  # noqa: E402


def entropy_and_grad(logits):
  """Mean entropy over rows and d/dz: -p_k (log p_k + H) / U per row."""
  probs = tm.softmax(logits)
  entropy = -np.sum(probs * np.log(probs), -1)
  return entropy.mean(), -probs * (np.log(probs) + entropy[:, None]) / len(probs)


def run(algorithm, cfg, step=0, batch=None):
  def loss(params):
    return algorithm.loss_fn(params, tm.batch() if batch is None else batch,
                             forward=tm.forward, algo_state={}, key=jax.random.key(0),
                             step=jnp.asarray(step), cfg=cfg, num_classes=tm.NUM_CLASSES)
  (value, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(tm.params())
  return float(value), aux, np.asarray(grads["table"])


def test_standalone_entmin_loss_and_gradient():
  cfg = entmin.default_config()
  assert cfg.entmin_weight == 0.1
  value, aux, grads = run(algorithms.get("entmin"), cfg)
  entropy, entropy_grad = entropy_and_grad(tm.TABLE[tm.WEAK_ROWS])
  loss_sup, grad_sup = tm.supervised_loss_and_grad()
  np.testing.assert_allclose(value, loss_sup + 0.1 * entropy, rtol=1e-5)
  np.testing.assert_allclose(aux["metrics"]["train/loss_entmin"], entropy, rtol=1e-5)
  np.testing.assert_allclose(grads[tm.WEAK_ROWS], 0.1 * entropy_grad, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(grads[tm.LABELLED_ROWS], grad_sup, rtol=1e-5)
  np.testing.assert_array_equal(aux["batch_stats"]["rows"], tm.LABELLED_ROWS)


def test_entropy_of_uniform_and_one_hot_predictions():
  np.testing.assert_allclose(float(entmin.mean_entropy(jnp.zeros((2, 4)))), np.log(4), rtol=1e-6)
  assert float(entmin.mean_entropy(jnp.array([[100.0, 0.0, 0.0]]))) < 1e-6


def test_wrapper_adds_the_penalty_on_the_methods_own_unlabelled_logits():
  """pseudo_label+entmin: the entropy of the weak-view logits that Pseudo-Label exposes."""
  wrapped, base = algorithms.get("pseudo_label+entmin"), algorithms.get("pseudo_label")
  assert algorithms.get("pseudo_label+entmin") is wrapped  # registered once
  assert wrapped.views == base.views
  cfg = wrapped.default_config()
  assert cfg.entmin_weight == 0.1 and cfg.threshold == 0.95
  cfg.entmin_weight = 0.5
  base_value, _, base_grads = run(base, cfg, step=10**7)
  value, aux, grads = run(wrapped, cfg, step=10**7)
  entropy, entropy_grad = entropy_and_grad(tm.TABLE[tm.WEAK_ROWS])
  np.testing.assert_allclose(value, base_value + 0.5 * entropy, rtol=1e-5)
  np.testing.assert_allclose(grads - base_grads, np.pad(0.5 * entropy_grad, ((2, 4), (0, 0))),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(aux["metrics"]["train/loss_entmin"], entropy, rtol=1e-5)


def test_wrapper_runs_its_own_pass_when_the_method_exposes_no_logits():
  """fixmatch+entmin: FixMatch keeps its logits to itself; the wrapper uses its weak view."""
  wrapped = algorithms.get("fixmatch+entmin")
  cfg = wrapped.default_config()
  batch = tm.batch(second_view="strong")
  base_value, _, base_grads = run(algorithms.get("fixmatch"), cfg, batch=batch)
  value, _, grads = run(wrapped, cfg, batch=batch)
  entropy, entropy_grad = entropy_and_grad(tm.TABLE[tm.WEAK_ROWS])
  np.testing.assert_allclose(value, base_value + 0.1 * entropy, rtol=1e-5)
  np.testing.assert_allclose((grads - base_grads)[tm.WEAK_ROWS], 0.1 * entropy_grad, rtol=1e-4,
                             atol=1e-6)


def test_wrapping_a_method_without_unlabelled_data_is_refused():
  with pytest.raises(ValueError, match="no unlabelled view"):
    algorithms.get("supervised+entmin")
  with pytest.raises(ValueError, match="Unknown algorithm"):
    algorithms.get("nothing+entmin")
