"""Tests for fixmatch_jax.data.ctaugment_rates: the probe update, the board, the checkpoint.

Oracles: updates computed by hand from a known probe prediction, the reference code's
sequential loop, a checkpoint round trip through orbax, and an uninterrupted run for resume.
"""
import os
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixmatch_jax import checkpointing, configs, metrics, train
from fixmatch_jax.data import ctaugment_rates as rates_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "experiments"))
import tiny  # noqa: E402


def test_layout_counts_the_reference_bins():
  # 16 ops with one 17-bin parameter, posterize 8 bins, rescale 17 + 6, identity none.
  assert len(rates_lib.OPS) == 19
  assert rates_lib.NUM_RATES == 16 * 17 + 8 + 17 + 6
  by_op = rates_lib.rates_by_op(np.arange(rates_lib.NUM_RATES))
  assert [len(p) for p in by_op["rescale"]] == [17, 6] and by_op["identity"] == []
  assert np.concatenate([np.concatenate(p) for p in by_op.values() if p]).tolist() == list(
      range(rates_lib.NUM_RATES))


def test_rate_update_on_a_known_probe_prediction():
  """p = (0.7, 0.2, 0.1), label 0: ||p - onehot||_1 = 0.6, w = 0.7 (by hand)."""
  logits = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]]))
  labels = jnp.array([0, 2])  # Second: |0.1| + |0.6| + |0.3 - 1| = 1.4, w = 0.3.
  ring = jnp.ones((3, rates_lib.NUM_RATES))
  # Example 0 updates bins 5 and 9; example 1 updates bin 9, then bin 5 twice (the same op
  # drawn twice), and has one unused slot.
  bins = jnp.array([[5, -1, 9, -1], [9, 5, 5, -1]])
  state, m = rates_lib.probe_feedback({"rates": ring}, logits, labels, bins, step=4, decay=0.99)
  new = np.asarray(state["rates"][5 % 3])
  r5 = 1.0
  r5 = 0.99 * r5 + 0.01 * 0.7
  r5 = 0.99 * r5 + 0.01 * 0.3
  r5 = 0.99 * r5 + 0.01 * 0.3
  r9 = 0.99 * (0.99 * 1.0 + 0.01 * 0.7) + 0.01 * 0.3
  np.testing.assert_allclose(new[5], r5, rtol=1e-6)
  np.testing.assert_allclose(new[9], r9, rtol=1e-6)
  untouched = np.delete(new, [5, 9])
  np.testing.assert_array_equal(untouched, 1.0)
  np.testing.assert_allclose(m["cta/probe_weight"], (0.7 + 0.3) / 2, rtol=1e-6)
  assert float(m["cta/probe_acc"]) == 0.5
  # The ring: version 5 written at row 5 % 3; versions 3 and 4 (rows 0 and 1) kept.
  np.testing.assert_array_equal(state["rates"][0], 1.0)
  np.testing.assert_array_equal(state["rates"][1], 1.0)


def test_closed_form_update_equals_the_sequential_loop():
  rng = np.random.default_rng(0)
  rates = rng.random(rates_lib.NUM_RATES).astype(np.float32)
  bins = rng.integers(-1, 12, (64, 4)).astype(np.int32)  # Many repeats of few bins.
  weights = rng.random(64).astype(np.float32)
  ours = rates_lib.update_rates(jnp.asarray(rates), jnp.asarray(bins), jnp.asarray(weights),
                                0.99)
  np.testing.assert_allclose(ours, rates_lib.update_rates_reference(rates, bins, weights, 0.99),
                             rtol=2e-6)


def test_board_waits_for_the_version_of_its_lag():
  board = rates_lib.RateBoard(lag=2)
  np.testing.assert_array_equal(board.get(1), 1.0)  # Steps < lag use version 0.
  got = []
  reader = threading.Thread(target=lambda: got.append(board.get(5)))  # Needs version 3.
  reader.start()
  board.publish(1, np.full(rates_lib.NUM_RATES, 0.5, np.float32))
  board.publish(2, np.full(rates_lib.NUM_RATES, 0.6, np.float32))
  time.sleep(0.2)
  assert not got  # Still waiting: versions 1 and 2 are not the one step 5 uses.
  board.publish(3, np.full(rates_lib.NUM_RATES, 0.7, np.float32))
  reader.join(timeout=10)
  np.testing.assert_allclose(got[0], 0.7)
  board.close()


def test_rates_survive_a_checkpoint_round_trip(tmp_path):
  config = tiny.get_config()
  configs.use_ctaugment(config)
  from fixmatch_jax import algorithms, models, optim, train_state
  model = models.create(config.model, 4)
  state = train_state.create(model, optim.create_optimizer(config.optim),
                             algorithms.get("fixmatch"), 0, (8, 8, 3), config)
  assert state.augment_state["rates"].shape == (config.data.strong.lag + 1, rates_lib.NUM_RATES)
  learned = np.random.default_rng(3).random(state.augment_state["rates"].shape)
  state = state.replace(augment_state={"rates": jnp.asarray(learned, jnp.float32)})
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=1)
  ckpt.save(7, state, wait=True)
  fresh = train_state.create(model, optim.create_optimizer(config.optim),
                             algorithms.get("fixmatch"), 1, (8, 8, 3), config)
  restored, step = ckpt.restore(fresh)
  ckpt.close()
  assert step == 7
  np.testing.assert_array_equal(restored.augment_state["rates"], learned.astype(np.float32))
  # The board of the resumed run holds versions 5..7 (the ring rows 5 % 3, 6 % 3, 7 % 3).
  board = rates_lib.RateBoard.from_state(jax.device_get(restored.augment_state), 7)
  for version in (5, 6, 7):
    np.testing.assert_array_equal(board.get(version + 2), learned[version % 3].astype(
        np.float32))


@pytest.mark.parametrize("stop_at", [4])
def test_cta_run_resumes_exactly(tmp_path, stop_at):
  """6 steps straight vs 4 steps, then resumed to 6 with the same command: identical."""
  def config(steps):
    c = tiny.get_config("steps=6")
    configs.use_ctaugment(c)
    c.train.num_steps = steps  # Only the stopping point differs (cosine horizon stays 6).
    c.train.allow_config_change = True
    return c

  straight_dir, resumed_dir = str(tmp_path / "straight"), str(tmp_path / "resumed")
  straight = train.train_and_evaluate(config(6), straight_dir)
  train.train_and_evaluate(config(stop_at), resumed_dir)
  resumed = train.train_and_evaluate(config(6), resumed_dir)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)
  assert np.asarray(straight.augment_state["rates"]).min() < 1.0  # The rates did move.
  timings = ("train/steps_per_s", "eval/seconds")
  # The stopped run also evaluated at its last step (stop_at): not part of the comparison.
  rows = lambda d: [{k: v for k, v in r.items() if k not in timings} for r in metrics.read(d)
                    if not ("eval/acc" in r and r["step"] == stop_at)]
  assert rows(straight_dir) == rows(resumed_dir)


def test_table2_cta_configs():
  """Every FixMatch (CTA) cell of Table 2: the RA recipe with CTAugment's published settings."""
  import fixmatch_cta
  import fixmatch_svhn
  models = {"cifar10": "wrn28_2", "cifar100": "wrn28_8", "svhn": "wrn28_2", "stl10": "wrn37_2"}
  # Table 2, FixMatch (CTA) error rates (Sohn et al. 2020).
  published = {("cifar10", 40): 11.39, ("cifar10", 250): 5.07, ("cifar10", 4000): 4.31,
               ("cifar100", 400): 49.95, ("cifar100", 2500): 28.64, ("cifar100", 10000): 23.18,
               ("svhn", 40): 7.65, ("svhn", 250): 2.64, ("svhn", 1000): 2.36,
               ("stl10", 1000): 5.17}
  assert {k: v[0] for k, v in fixmatch_cta.PAPER_ERROR.items()} == published
  for dataset, labels in published:
    config = fixmatch_cta.get_config(f"dataset={dataset},labels={labels},seed=2")
    assert config.model.name == models[dataset] and config.data.num_labels == labels
    strong = config.data.strong
    assert (strong.name, strong.depth, strong.threshold, strong.decay, strong.cutout) == (
        "ctaugment", 2, 0.8, 0.99, 1.0)
    assert (config.data.batch_size, config.data.mu, config.algo.threshold) == (64, 7, 0.95)
    assert config.train.num_steps == 2**20 and config.seed == 2
  svhn = fixmatch_cta.get_config("dataset=svhn,labels=250")
  assert not svhn.data.weak.flip
  assert svhn.optim.to_dict() == fixmatch_svhn.get_config("labels=250").optim.to_dict()
  with pytest.raises(ValueError, match="Table 2 has"):
    fixmatch_cta.get_config("dataset=cifar10,labels=100")
