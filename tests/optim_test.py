"""Tests of the learning-rate schedules, coupled L2 on kernels only, SGD-Nesterov and the EMA.

Oracles: the paper's formula lr * cos(7 pi k / (16 K)), and a NumPy transcription of TF's
MomentumOptimizer(use_nesterov=True) applied to grad + wd * w on kernels.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from fixmatch_jax import optim


def optim_config(**overrides):
  config = dict(name="sgd", lr=0.03, momentum=0.9, nesterov=True, weight_decay=5e-4,
                schedule="cosine", cosine_cycles=7 / 16, warmup_steps=0, ema_decay=0.999)
  config.update(overrides)
  return ml_collections.ConfigDict(config)


def fake_params():
  """A parameter tree shaped like a Flax CNN: conv/dense kernels, biases, BatchNorm."""
  rng = np.random.RandomState(0)
  leaf = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return {
      "stem": {"kernel": leaf(3, 3, 1, 4), "bias": leaf(4)},
      "block": {"bn1": {"scale": leaf(4), "bias": leaf(4)},
                "conv1": {"kernel": leaf(3, 3, 4, 4), "bias": leaf(4)}},
      "classifier": {"kernel": leaf(4, 10), "bias": leaf(10)},
  }


def test_cosine_schedule_matches_paper_formula():
  num_steps = 2**20
  schedule = optim.learning_rate_schedule(optim_config(), num_steps)
  for k in (0, num_steps // 2, num_steps):
    expected = 0.03 * np.cos(7 * np.pi * k / (16 * num_steps))
    assert float(schedule(k)) == pytest.approx(expected, rel=1e-6)
  assert float(schedule(num_steps)) == pytest.approx(0.03 * 0.19509, rel=1e-4)


def test_cosine_schedule_reads_decay_steps_from_config_or_fails_clearly():
  schedule = optim.learning_rate_schedule(optim_config(decay_steps=100))
  assert float(schedule(50)) == pytest.approx(0.03 * np.cos(7 * np.pi * 50 / 1600), rel=1e-6)
  with pytest.raises(ValueError, match="num_steps"):
    optim.learning_rate_schedule(optim_config())


def test_warmup_then_cosine():
  schedule = optim.learning_rate_schedule(optim_config(warmup_steps=10, cosine_cycles=0.5), 110)
  values = [float(schedule(k)) for k in (0, 5, 10, 60, 110)]
  np.testing.assert_allclose(values, [0.0, 0.015, 0.03, 0.03 * np.cos(np.pi / 4), 0.0],
                             atol=1e-7)


def test_constant_and_step_schedules():
  constant = optim.learning_rate_schedule(optim_config(schedule="constant"))
  assert float(constant(12345)) == pytest.approx(0.03)
  step = optim.learning_rate_schedule(
      optim_config(lr=0.1, schedule="step", boundaries=[250, 350], boundary_factor=0.1))
  np.testing.assert_allclose([float(step(k)) for k in (0, 249, 250, 349, 350, 400)],
                             [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
  warm_step = optim.learning_rate_schedule(optim_config(
      lr=0.1, schedule="step", boundaries=[250], boundary_factor=0.1, warmup_steps=10))
  np.testing.assert_allclose([float(warm_step(k)) for k in (5, 10, 249, 250)],
                             [0.05, 0.1, 0.1, 0.01], rtol=1e-6)
  with pytest.raises(ValueError, match="cosine, constant, step"):
    optim.learning_rate_schedule(optim_config(schedule="linear"))


def test_l2_mask_selects_kernels_only():
  mask = optim.l2_mask(fake_params())
  assert mask == {"stem": {"kernel": True, "bias": False},
                  "block": {"bn1": {"scale": False, "bias": False},
                            "conv1": {"kernel": True, "bias": False}},
                  "classifier": {"kernel": True, "bias": False}}


def test_weight_decay_touches_only_kernels():
  params = fake_params()
  tx = optim.create_optimizer(optim_config(), num_steps=100)
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  mask = optim.l2_mask(params)
  for path, update in jax.tree_util.tree_flatten_with_path(updates)[0]:
    value = params
    decayed = mask
    for entry in path:
      value, decayed = value[entry.key], decayed[entry.key]
    if decayed:
      # First Nesterov step from a zero trace: g + m * (g + m * 0) = (1 + m) g, g = wd * w.
      np.testing.assert_allclose(update, -0.03 * 1.9 * 5e-4 * value, rtol=1e-5)
    else:
      np.testing.assert_array_equal(update, 0.0)


def test_sgd_nesterov_matches_tf_momentum_optimizer():
  params = {"conv": {"kernel": jnp.asarray([1.0, -2.0]), "bias": jnp.asarray([0.5])}}
  num_steps, lr, wd, momentum = 8, 0.03, 5e-4, 0.9
  tx = optim.create_optimizer(optim_config(), num_steps=num_steps)
  opt_state = tx.init(params)
  rng = np.random.RandomState(1)
  reference = {"kernel": np.array([1.0, -2.0]), "bias": np.array([0.5])}
  accumulator = {name: np.zeros_like(value) for name, value in reference.items()}
  for k in range(num_steps):
    grads = {"kernel": rng.normal(size=2), "bias": rng.normal(size=1)}
    # TF: accum = m * accum + g; var -= lr_k * (g + m * accum), with g including wd * kernel.
    lr_k = lr * np.cos(7 * np.pi * k / (16 * num_steps))
    for name in reference:
      g = grads[name] + (wd * reference[name] if name == "kernel" else 0.0)
      accumulator[name] = momentum * accumulator[name] + g
      reference[name] = reference[name] - lr_k * (g + momentum * accumulator[name])
    jax_grads = {"conv": {name: jnp.asarray(value, jnp.float32) for name, value in grads.items()}}
    updates, opt_state = tx.update(jax_grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  for name in reference:
    np.testing.assert_allclose(params["conv"][name], reference[name], rtol=1e-5)


def test_adam_option_and_unknown_optimizer():
  params = fake_params()
  tx = optim.create_optimizer(optim_config(name="adam", lr=3e-4, weight_decay=0.0), 10)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # Adam's first step moves every parameter by lr * g / (|g| + eps) = lr.
  for update in jax.tree.leaves(updates):
    np.testing.assert_allclose(update, -3e-4, rtol=1e-4)
  with pytest.raises(ValueError, match="sgd, adam"):
    optim.create_optimizer(optim_config(name="lamb"), 10)


def test_ema_update_formula():
  ema = {"w": jnp.asarray([1.0, 2.0]), "b": jnp.asarray(-1.0)}
  params = {"w": jnp.asarray([3.0, 0.0]), "b": jnp.asarray(1.0)}
  new = optim.ema_update(ema, params, 0.999)
  np.testing.assert_allclose(new["w"], [0.999 * 1 + 0.001 * 3, 0.999 * 2], rtol=1e-6)
  np.testing.assert_allclose(new["b"], -0.999 + 0.001, rtol=1e-6)
