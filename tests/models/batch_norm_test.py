"""fixmatch_jax.models.BatchNorm against flax.linen.BatchNorm (the independent code path)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixmatch_jax.models.batch_norm import BatchNorm


def _pair(momentum=0.9, epsilon=1e-3, dtype=jnp.float32):
  ours = lambda train: BatchNorm(use_running_average=not train, momentum=momentum,
                                 epsilon=epsilon, dtype=dtype)
  flax_bn = lambda train: nn.BatchNorm(use_running_average=not train, momentum=momentum,
                                       epsilon=epsilon, dtype=dtype)
  return ours, flax_bn


def _inputs(shape=(6, 5, 4, 3), seed=0):
  rng = np.random.RandomState(seed)
  # An offset and uneven scales per channel, so E[x^2] - E[x]^2 is not trivially exact.
  return jnp.asarray(rng.randn(*shape) * [0.5, 2.0, 4.0] + [3.0, -1.0, 0.2], jnp.float32)


def test_same_variables_as_flax():
  ours, flax_bn = _pair()
  x = _inputs()
  a = ours(True).init(jax.random.PRNGKey(0), x)
  b = flax_bn(True).init(jax.random.PRNGKey(0), x)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert u.dtype == v.dtype and u.shape == v.shape
    np.testing.assert_array_equal(u, v)


def test_training_output_gradients_and_statistics_match_flax():
  ours, flax_bn = _pair()
  x = _inputs()
  rng = np.random.RandomState(1)
  variables = {"params": {"scale": jnp.asarray(rng.rand(3) + 0.5, jnp.float32),
                          "bias": jnp.asarray(rng.randn(3), jnp.float32)},
               "batch_stats": {"mean": jnp.asarray(rng.randn(3), jnp.float32),
                               "var": jnp.asarray(rng.rand(3) + 0.5, jnp.float32)}}
  weights = jnp.asarray(rng.randn(*x.shape), jnp.float32)

  def run(module):
    def loss(params, x):
      y, updates = module(True).apply({**variables, "params": params}, x,
                                      mutable=["batch_stats"])
      return jnp.sum(y * weights), (y, updates["batch_stats"])
    (_, (y, stats)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        variables["params"], x)
    return y, stats, grads

  y_ours, stats_ours, grads_ours = run(ours)
  y_flax, stats_flax, grads_flax = run(flax_bn)
  np.testing.assert_allclose(y_ours, y_flax, rtol=1e-5, atol=1e-5)
  ours_leaves = jax.tree.leaves((stats_ours, grads_ours))
  for a, b in zip(ours_leaves, jax.tree.leaves((stats_flax, grads_flax)), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # And against the formula itself: biased batch variance, momentum update.
  flat = np.asarray(x).reshape(-1, 3)
  np.testing.assert_allclose(stats_ours["mean"], 0.9 * variables["batch_stats"]["mean"]
                             + 0.1 * flat.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats_ours["var"], 0.9 * variables["batch_stats"]["var"]
                             + 0.1 * flat.var(0), rtol=1e-5, atol=1e-6)


def test_evaluation_uses_the_moving_averages_like_flax():
  ours, flax_bn = _pair()
  x = _inputs(seed=2)
  variables = ours(True).init(jax.random.PRNGKey(0), x)
  variables = {**variables, "batch_stats": {"mean": jnp.array([1.0, -2.0, 0.5]),
                                            "var": jnp.array([4.0, 0.25, 1.0])}}
  y_ours = ours(False).apply(variables, x)
  y_flax = flax_bn(False).apply(variables, x)
  np.testing.assert_allclose(y_ours, y_flax, rtol=1e-5, atol=1e-6)
  expected = (np.asarray(x) - [1.0, -2.0, 0.5]) / np.sqrt(np.array([4.0, 0.25, 1.0]) + 1e-3)
  np.testing.assert_allclose(y_ours, expected, rtol=1e-5, atol=1e-5)


def test_initialisation_does_not_move_the_averages():
  ours, _ = _pair()
  variables = ours(True).init(jax.random.PRNGKey(0), _inputs())
  np.testing.assert_array_equal(variables["batch_stats"]["mean"], np.zeros(3))
  np.testing.assert_array_equal(variables["batch_stats"]["var"], np.ones(3))


@pytest.mark.parametrize("train", [True, False])
def test_bfloat16_output_with_float32_statistics(train):
  ours, flax_bn = _pair(dtype=jnp.bfloat16)
  x = _inputs().astype(jnp.bfloat16)
  variables = ours(True).init(jax.random.PRNGKey(0), x)
  y_ours, _ = ours(train).apply(variables, x, mutable=["batch_stats"])
  y_flax, _ = flax_bn(train).apply(variables, x, mutable=["batch_stats"])
  assert y_ours.dtype == y_flax.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y_ours, np.float32), np.asarray(y_flax, np.float32),
                             rtol=2e-2, atol=2e-2)
