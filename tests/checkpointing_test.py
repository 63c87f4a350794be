"""Checkpoints: exact round trip, keep-N, and fallback past a corrupted newest one."""

import os

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
