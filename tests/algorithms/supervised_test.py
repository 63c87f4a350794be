"""Supervised baseline loss against a NumPy hand computation, and the algorithm registry."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fixmatch_jax import algorithms
from fixmatch_jax.algorithms import supervised

LOGITS = [[2.0, 1.0, 0.0], [0.0, 3.0, 0.5], [0.1, 0.2, 0.3]]
LABELS = [0, 2, 2]


def fake_forward(params, images, *, train, rngs=None, batch_stats=None):
  del rngs, batch_stats
  assert train and images.shape[0] == params.shape[0]
  return params, {"updated": jnp.ones(())}


def test_loss_is_mean_cross_entropy_of_labelled_batch():
  batch = {"labelled": {"image": jnp.zeros((3, 2, 2, 1), jnp.uint8),
                        "label": jnp.asarray(LABELS)}}  # no "unlabelled" entry (views=())

  def loss(params):
    return supervised.loss_fn(params, batch, forward=fake_forward, algo_state={},
                              key=None, step=jnp.asarray(0),
                              cfg=ml_collections.ConfigDict(), num_classes=3)

  (value, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
      jnp.asarray(LOGITS))
  logits = np.asarray(LOGITS, np.float64)
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  np.testing.assert_allclose(value, -np.mean(np.log(probs[[0, 1, 2], LABELS])), rtol=1e-6)
  np.testing.assert_allclose(grads, (probs - np.eye(3)[LABELS]) / 3, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(aux["metrics"]["train/acc_labelled"], 2 / 3, rtol=1e-6)
  assert set(aux["batch_stats"]) == {"updated"} and not aux["algo_state"]


def test_registry():
  assert algorithms.get("supervised").views == ()
  assert algorithms.get("supervised").default_config().to_dict() == {}
  assert {"supervised", "fixmatch"} <= set(algorithms.names())
  with pytest.raises(ValueError, match="fixmatch.*supervised"):
    algorithms.get("mixmatch")
  with pytest.raises(ValueError, match="already registered"):
    algorithms.register(algorithms.Algorithm("supervised", (), supervised.loss_fn))
  # Registering the same object again is harmless (module re-import).
  assert algorithms.register(supervised.SUPERVISED) is supervised.SUPERVISED
