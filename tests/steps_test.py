"""Tests of the shared train/eval steps and their data-parallel wiring (4 fake CPU devices).

Oracles: a second code path (the same step on a 1-device mesh vs a 4-device mesh, BatchNorm
over the global batch), a direct model.apply over concat[labelled, weak, strong] for the
BatchNorm statistics, the EMA formula, NumPy for evaluation counts, and a second run from
the same seed.
"""
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fixmatch_jax import algorithms, models, optim, steps, train_state

NUM_CLASSES, LABELLED, UNLABELLED, SIZE = 3, 4, 8, 8
# 1 vs 4 devices: the same math with a different reduction order (cross-device sums).
RTOL, ATOL = 1e-5, 1e-6


def make_config():
  return ml_collections.ConfigDict(dict(
      seed=0, algorithm="fixmatch",
      algo=dict(threshold=0.52, lambda_u=1.0, temperature=1.0, soft_labels=False),
      model=dict(name="cnn_small", width=4),
      optim=dict(name="sgd", lr=0.03, momentum=0.9, nesterov=True, weight_decay=5e-4,
                 schedule="cosine", cosine_cycles=7 / 16, warmup_steps=0, ema_decay=0.999),
  ))


def make_batch(seed=0):
  rng = np.random.RandomState(seed)
  images = lambda n: rng.randint(0, 256, (n, SIZE, SIZE, 1)).astype(np.uint8)
  labels = lambda n: rng.randint(0, NUM_CLASSES, n).astype(np.int32)
  return {"labelled": {"image": images(LABELLED), "label": labels(LABELLED)},
          "unlabelled": {"weak": images(UNLABELLED), "strong": images(UNLABELLED),
                         "index": np.arange(UNLABELLED, dtype=np.int32),
                         "label": labels(UNLABELLED)}}


class Setup:
  """Model, optimizer and the initial state (on the host, so each test can replicate it)."""

  def __init__(self):
    self.config = make_config()
    self.model = models.create(self.config.model, NUM_CLASSES)
    self.tx = optim.create_optimizer(self.config.optim, num_steps=100)
    self.lr_fn = optim.learning_rate_schedule(self.config.optim, num_steps=100)
    self.algorithm = algorithms.get(self.config.algorithm)
    self.initial_state = self.new_state()
    self.step_fns = {}

  def new_state(self):
    # An RBG key: threefry-based initialisers take seconds to compile on CPU.
    key = jax.random.key(self.config.seed, impl="rbg")
    state = train_state.create(self.model, self.tx, self.algorithm, key, (1, SIZE, SIZE, 1),
                               self.config)
    return jax.device_get(state)

  def step_fn(self, num_devices):
    if num_devices not in self.step_fns:
      mesh = steps.make_mesh(jax.devices()[:num_devices])
      self.step_fns[num_devices] = mesh, steps.make_train_step(
          self.model, self.algorithm, self.tx, self.lr_fn, self.config, mesh)
    return self.step_fns[num_devices]

  def run(self, num_devices, state=None, batch=None):
    mesh, step = self.step_fn(num_devices)
    state = steps.replicate(mesh, self.initial_state if state is None else state)
    new_state, metrics = step(state, steps.shard_batch(mesh, make_batch() if batch is None
                                                       else batch))
    return jax.device_get((new_state, metrics))


@pytest.fixture(scope="module")
def setup():
  return Setup()


@pytest.fixture(scope="module")
def one_device_result(setup):
  return setup.run(1)


def test_one_and_four_devices_compute_the_same_step(setup, one_device_result):
  assert len(jax.devices()) >= 4
  state_1, metrics_1 = one_device_result
  state_4, metrics_4 = setup.run(4)
  assert metrics_1.keys() == metrics_4.keys()
  # Non-trivial step: some pseudo-labels pass the threshold, so both loss terms act.
  assert 0 < metrics_1["train/mask_rate"] < 1 and metrics_1["train/loss_unsup"] > 0
  for name in metrics_1:
    np.testing.assert_allclose(metrics_4[name], metrics_1[name], rtol=RTOL, atol=ATOL,
                               err_msg=name)
  for leaf_1, leaf_4 in zip(jax.tree.leaves(state_1), jax.tree.leaves(state_4), strict=True):
    np.testing.assert_allclose(leaf_4, leaf_1, rtol=RTOL, atol=ATOL)


def test_batchnorm_statistics_come_from_one_pass_over_the_whole_batch(setup, one_device_result):
  state, _ = one_device_result
  batch, initial = make_batch(), setup.initial_state
  images = np.concatenate([batch["labelled"]["image"], batch["unlabelled"]["weak"],
                           batch["unlabelled"]["strong"]])
  _, expected = jax.jit(lambda variables: setup.model.apply(
      variables, images, train=True, mutable=["batch_stats"]))(
          {"params": initial.params, "batch_stats": initial.batch_stats})
  for leaf, expected_leaf in zip(jax.tree.leaves(state.batch_stats),
                                 jax.tree.leaves(expected["batch_stats"]), strict=True):
    np.testing.assert_allclose(leaf, expected_leaf, rtol=1e-5, atol=1e-7)


def test_step_counter_ema_and_metrics(setup, one_device_result):
  state, metrics = one_device_result
  initial = setup.initial_state
  assert int(state.step) == 1
  # EMA of the updated parameters, starting from the initial parameters.
  for ema, old, new in zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(initial.params),
                           jax.tree.leaves(state.params), strict=True):
    np.testing.assert_allclose(ema, 0.999 * old + 0.001 * new, rtol=1e-6, atol=1e-8)
  assert not all(np.array_equal(a, b) for a, b in
                 zip(jax.tree.leaves(state.params), jax.tree.leaves(initial.params), strict=True))
  assert float(metrics["train/lr"]) == pytest.approx(0.03)
  np.testing.assert_allclose(metrics["train/loss"],
                             metrics["train/loss_sup"] + metrics["train/loss_unsup"], rtol=1e-6)
  assert metrics["train/per_class_mask_rate"].shape == (NUM_CLASSES,)
  assert np.asarray(state.rng).dtype == np.uint32 and state.rng_impl == "rbg"


def test_same_seed_gives_identical_results(setup, one_device_result):
  state_again, metrics_again = setup.run(1, state=setup.new_state())
  state, metrics = one_device_result
  for name in metrics:
    np.testing.assert_array_equal(metrics_again[name], metrics[name], err_msg=name)
  for leaf, leaf_again in zip(jax.tree.leaves(state), jax.tree.leaves(state_again), strict=True):
    np.testing.assert_array_equal(leaf_again, leaf)


def test_step_has_no_host_sync(setup):
  mesh, step = setup.step_fn(4)
  state = steps.replicate(mesh, setup.initial_state)
  batch = steps.shard_batch(mesh, make_batch())
  # Any implicit device<->host transfer inside two steps would raise here.
  with jax.transfer_guard("disallow"):
    state, _ = step(state, batch)
    state, metrics = step(state, batch)
  assert all(isinstance(value, jax.Array) for value in metrics.values())
  assert int(state.step) == 2


class ZeroInitModel(nn.Module):
  """A model with dropout and no random initialiser (cheap to compile)."""

  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, images, train, return_embedding=False):
    features = images.reshape(images.shape[0], -1).astype(jnp.float32) / 255.0
    features = nn.Dropout(0.5, deterministic=not train)(features)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros)(features)


def test_step_key_is_fold_in_of_state_rng_and_step(setup):
  def loss_fn(params, batch, *, forward, algo_state, key, step, cfg, num_classes):
    logits, batch_stats = forward(params, batch["labelled"]["image"], train=True)
    metrics = {"key": jax.random.key_data(key), "step": step}
    return jnp.mean(logits), {"batch_stats": batch_stats, "algo_state": algo_state,
                              "metrics": metrics}

  algorithm = algorithms.Algorithm("record_key", (), loss_fn)
  model = ZeroInitModel()
  state = train_state.create(model, setup.tx, algorithm, jax.random.key(7), (SIZE, SIZE, 1),
                             setup.config)
  state = state.replace(step=jnp.asarray(5, jnp.int32))
  step = jax.jit(lambda state, batch: steps.train_step(
      state, batch, model=model, algorithm=algorithm, tx=setup.tx, lr_fn=setup.lr_fn,
      config=setup.config))
  assert state.rng.shape == (2,) and state.rng_impl == "threefry2x32"  # the default
  expected = jax.random.key_data(jax.random.split(
      jax.random.fold_in(jax.random.wrap_key_data(state.rng), 5))[1])
  _, metrics = step(state, {"labelled": make_batch()["labelled"]})
  np.testing.assert_array_equal(metrics["key"], expected)
  assert int(metrics["step"]) == 5


def test_supervised_step_has_no_unlabelled_batch(setup):
  mesh = steps.make_mesh(jax.devices()[:4])
  model, algorithm = ZeroInitModel(), algorithms.get("supervised")
  state = train_state.create(model, setup.tx, algorithm, 0, (SIZE, SIZE, 1), setup.config)
  step = steps.make_train_step(model, algorithm, setup.tx, setup.lr_fn, setup.config, mesh)
  batch = {"labelled": make_batch()["labelled"]}
  state, metrics = step(steps.replicate(mesh, state), steps.shard_batch(mesh, batch))
  assert int(state.step) == 1
  np.testing.assert_allclose(metrics["train/loss"], np.log(NUM_CLASSES), rtol=1e-6)
  assert "train/loss_unsup" not in metrics


def test_eval_step_counts_only_unpadded_examples(setup, one_device_result):
  state, _ = one_device_result
  rng = np.random.RandomState(3)
  batch = {"image": rng.randint(0, 256, (8, SIZE, SIZE, 1)).astype(np.uint8),
           "label": rng.randint(0, NUM_CLASSES, 8).astype(np.int32),
           "mask": np.array([True] * 5 + [False] * 3)}
  mesh = steps.make_mesh(jax.devices()[:4])
  sums = jax.device_get(steps.make_eval_step(setup.model, mesh)(
      steps.replicate(mesh, state.ema_params), steps.replicate(mesh, state.batch_stats),
      steps.shard_batch(mesh, batch)))
  logits = np.asarray(setup.model.apply(
      {"params": state.ema_params, "batch_stats": state.batch_stats}, batch["image"],
      train=False), np.float64)
  correct = (logits.argmax(-1) == batch["label"])[:5]
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  assert int(sums["count"]) == 5 and int(sums["correct"]) == int(correct.sum())
  np.testing.assert_allclose(sums["loss"], -log_probs[np.arange(5), batch["label"][:5]].sum(),
                             rtol=1e-5)


def test_shard_batch_and_replicate():
  mesh = steps.make_mesh(jax.devices()[:4])
  host = {"image": np.arange(8 * 2).reshape(8, 2), "label": np.arange(8)}
  sharded = steps.shard_batch(mesh, host)
  assert sharded["image"].sharding.spec == jax.sharding.PartitionSpec("data")
  assert len(sharded["image"].addressable_shards) == 4
  np.testing.assert_array_equal(sharded["image"], host["image"])
  original = {"w": jnp.ones(3)}
  replicated = steps.replicate(mesh, original)
  assert replicated["w"].sharding.is_fully_replicated
  jax.jit(lambda tree: tree, donate_argnums=0)(replicated)
  np.testing.assert_array_equal(original["w"], 1.0)  # not aliased by the donated copy


def test_concat_groups_keeps_each_devices_rows_local_and_split_undoes_it():
  groups = [np.arange(4) + 100, np.arange(8) + 200, np.arange(8) + 300]
  merged = np.asarray(steps.concat_groups([jnp.asarray(g) for g in groups], num_shards=4))
  # Device d's quarter of the result is the concatenation of each group's d-th quarter.
  expected = np.concatenate([np.concatenate([g.reshape(4, -1)[d] for g in groups])
                             for d in range(4)])
  np.testing.assert_array_equal(merged, expected)
  for split, group in zip(steps.split_groups(jnp.asarray(merged), [4, 8, 8], num_shards=4),
                          groups, strict=True):
    np.testing.assert_array_equal(split, group)
  # One shard, or sizes the shards do not divide: the plain concatenation.
  np.testing.assert_array_equal(steps.concat_groups(groups, 1), np.concatenate(groups))
  odd = [np.arange(3), np.arange(5)]
  np.testing.assert_array_equal(steps.concat_groups(odd, 4), np.concatenate(odd))
  assert [list(x) for x in steps.split_groups(jnp.arange(8), [3, 5], 4)] == [
      [0, 1, 2], [3, 4, 5, 6, 7]]


def test_four_device_step_moves_no_images_between_devices(setup):
  """The only cross-device traffic of the step is reductions (gradients, BatchNorm, means).

  A plain concatenate of [labelled, weak, strong] would put all labelled images on the
  first device and make XLA shuffle images with all-to-all / collective-permute.
  """
  mesh, step = setup.step_fn(4)
  state = steps.replicate(mesh, setup.initial_state)
  text = step.lower(state, steps.shard_batch(mesh, make_batch())).compile().as_text()
  assert " all-reduce(" in text or " all-reduce-start(" in text
  for op in ("all-to-all", "collective-permute", "all-gather"):
    assert f" {op}(" not in text and f" {op}-start(" not in text, op


def test_dispatch_window_waits_for_the_output_pushed_limit_steps_earlier():
  class Output:
    def __init__(self):
      self.waited = False

    def block_until_ready(self):
      self.waited = True
      return self

  window, outputs = steps.DispatchWindow(limit=2), [Output() for _ in range(4)]
  for i, output in enumerate(outputs):
    window.push(output)
    assert len(window) == min(i + 1, 2)
  assert [o.waited for o in outputs] == [True, True, False, False]
  with pytest.raises(ValueError, match="at least 1"):
    steps.DispatchWindow(limit=0)


def test_dispatch_window_prevents_the_xla_cpu_collective_deadlock():
  """2000 back-to-back steps with an all-reduce on 2 host devices finish (a child process).

  Without the window (`--limit 0`) the same loop stalls on JAX 0.10.2; the script's
  docstring has the measurement.
  """
  script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts",
                        "repro_dispatch_deadlock.py")
  result = subprocess.run([sys.executable, script, "--limit", "4", "--timeout", "120"],
                          capture_output=True, text=True, timeout=180)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "done: 2000 steps" in result.stdout
