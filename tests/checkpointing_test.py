"""Checkpoints: exact round trip, keep-N, and fallback past a corrupted newest one."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixmatch_jax import checkpointing


def make_state(value):
  return {"params": {"w": jnp.full((3, 2), value, jnp.float32)},
          "step": jnp.int32(value), "rng": jnp.array([1, 2], jnp.uint32)}


def test_round_trip_and_keep_n(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=2)
  assert ckpt.restore(make_state(0)) is None
  for step in (1, 2, 3):
    ckpt.save(step, make_state(step), wait=True)
  assert ckpt.all_steps() == [2, 3]
  state, step = ckpt.restore(make_state(0))
  assert step == 3
  jax.tree.map(np.testing.assert_array_equal, state, make_state(3))
  ckpt.close()


def test_corrupted_newest_checkpoint_falls_back(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  ckpt.save(1, make_state(1), wait=True)
  ckpt.save(2, make_state(2), wait=True)
  ckpt.close()
  # Truncate every file of the newest checkpoint, as a disk-full or a bad copy would.
  newest = os.path.join(str(tmp_path), checkpointing.CHECKPOINT_DIR, "2")
  for root, _, files in os.walk(newest):
    for name in files:
      with open(os.path.join(root, name), "r+b") as f:
        f.truncate(max(0, os.path.getsize(f.name) // 3))
  state, step = checkpointing.Checkpointer(str(tmp_path), keep=3).restore(make_state(0))
  assert step == 1
  jax.tree.map(np.testing.assert_array_equal, state, make_state(1))


def test_no_readable_checkpoint_is_a_clear_error(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  ckpt.save(1, make_state(1), wait=True)
  ckpt.close()
  newest = os.path.join(str(tmp_path), checkpointing.CHECKPOINT_DIR, "1")
  for root, _, files in os.walk(newest):
    for name in files:
      open(os.path.join(root, name), "wb").close()
  with pytest.raises(checkpointing.CheckpointError, match="from scratch"):
    checkpointing.Checkpointer(str(tmp_path), keep=3).restore(make_state(0))


def test_half_written_checkpoint_is_never_used(tmp_path):
  """Orbax writes into `<step>.orbax-checkpoint-tmp-<time>` and renames when complete: a
  process killed mid-write leaves such a directory, which must be ignored."""
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  ckpt.save(1, make_state(1), wait=True)
  ckpt.close()
  directory = os.path.join(str(tmp_path), checkpointing.CHECKPOINT_DIR)
  partial = os.path.join(directory, "2.orbax-checkpoint-tmp-1795600000000000")
  shutil.copytree(os.path.join(directory, "1"), partial)
  os.remove(os.path.join(partial, "commit_success.txt"))
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  assert ckpt.all_steps() == [1]
  state, step = ckpt.restore(make_state(0))
  assert step == 1
  jax.tree.map(np.testing.assert_array_equal, state, make_state(1))


def test_config_is_stored_in_the_checkpoint_and_checked_before_restoring(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  ckpt.save(1, make_state(1), wait=True, config={"seed": 1, "optim": {"lr": 0.03}})
  ckpt.save(2, make_state(2), wait=True)  # Saved without a config (older versions).
  ckpt.close()
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  assert ckpt.stored_config(1) == {"seed": 1, "optim": {"lr": 0.03}}
  assert ckpt.stored_config(2) is None
  seen = []
  ckpt.restore(make_state(0), check_config=lambda stored, step: seen.append((step, stored)))
  assert seen == [(2, None)]

  def refuse(stored, step):
    raise ValueError(f"checkpoint {step} is from another run")
  # A refusal is not a damaged file: it propagates, no older checkpoint is tried.
  with pytest.raises(ValueError, match="checkpoint 2 is from another run"):
    ckpt.restore(make_state(0), check_config=refuse)


def test_restore_failure_names_the_accepted_config_changes(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  ckpt.save(1, make_state(1), wait=True, config={"model": {"width": 8}})
  ckpt.close()
  bigger = {"params": {"w": jnp.zeros((4, 2), jnp.float32)}, "step": jnp.int32(0),
            "rng": jnp.array([1, 2], jnp.uint32)}
  with pytest.raises(checkpointing.CheckpointError) as error:
    checkpointing.Checkpointer(str(tmp_path), keep=3).restore(
        bigger, check_config=lambda stored, step: ["  model.width: saved 8, new has 16"])
  assert "(4, 2)" in str(error.value) and "model.width: saved 8" in str(error.value)


def test_pending_metrics_round_trip_exactly(tmp_path):
  """The per-step metrics since the last log row travel with the checkpoint, bit for bit
  (dtype, NaN, vectors), so a resumed run logs the same averages."""
  rows = [{"train/loss": np.float32(1 / 3), "train/per_class": np.array([0.5, np.nan], np.float32),
           "count": np.int32(7)},
          {"train/loss": np.float32(0.1), "train/per_class": np.array([1.0, 0.0], np.float32),
           "count": np.int32(8)}]
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=2)
  ckpt.save(1, make_state(1), wait=True, pending_metrics=rows)
  ckpt.save(2, make_state(2), wait=True)
  ckpt.close()
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=2)
  assert ckpt.pending_metrics(2) == []
  restored = ckpt.pending_metrics(1)
  assert [sorted(r) for r in restored] == [sorted(r) for r in rows]
  for got, want in zip(restored, rows, strict=True):
    for name, value in want.items():
      assert got[name].dtype == value.dtype, name
      np.testing.assert_array_equal(got[name], value)
