"""Checkpoints of the whole TrainState with orbax: save, keep N, auto-resume.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a run killed mid-write leaves the previous checkpoint intact. A
checkpoint that still fails to restore (truncated or corrupted files) is
reported and the next older one is tried, so no run loses more than the work
since its last good checkpoint.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

CHECKPOINT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
  """No checkpoint in the workdir could be restored."""


class Checkpointer:
  """Saves and restores TrainStates under `<workdir>/checkpoints/<step>`."""

  def __init__(self, workdir: str, *, keep: int):
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, *, wait: bool = False) -> None:
    """Saves `state` at `step` (asynchronously unless `wait`); keeps the newest N."""
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state))
    if wait:
      self._manager.wait_until_finished()

  def restore(self, target: Any) -> tuple[Any, int] | None:
    """Restores the newest readable checkpoint onto `target`'s structure and shardings.

    Args:
      target: a TrainState (concrete or abstract) whose leaves give shape, dtype and
        sharding of the restored arrays.

    Returns:
      (state, step), or None when the workdir has no checkpoint.

    Raises:
      CheckpointError: if checkpoints exist but none can be restored.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    errors = []
    for step in steps:
      try:
        state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return state, step
      except Exception as e:  # noqa: BLE001 - any failure means this checkpoint is unusable.
        message = f"checkpoint {os.path.join(self.directory, str(step))}: {type(e).__name__}: {e}"
        logging.error("Cannot restore %s; trying an older one.", message)
        errors.append(message)
    raise CheckpointError(
        "No checkpoint could be restored:\n  " + "\n  ".join(errors) +
        f"\nMove {self.directory} aside to start the run from scratch, or restore the files.")

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
