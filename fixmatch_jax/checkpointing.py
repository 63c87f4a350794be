"""Checkpoints of the whole TrainState with orbax: save, keep N, auto-resume.

Orbax writes each checkpoint into a temporary directory
(`<step>.orbax-checkpoint-tmp-<time>`) and renames it to `<step>` only once every
file is written, so a run killed mid-write leaves the previous checkpoints intact
and the half-written one is never listed. A checkpoint that still fails to restore
(truncated or corrupted files) is reported and the next older one is tried, so no
run loses more than the work since its last good checkpoint.

Each checkpoint also carries the configuration that wrote it (orbax custom
metadata, written inside the same atomic directory), so a resume can check the
checkpoint itself rather than trusting the workdir's config.json.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

CHECKPOINT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
  """No checkpoint in the workdir could be restored."""


class Checkpointer:
  """Saves and restores TrainStates under `<workdir>/checkpoints/<step>`.

  Only the primary process writes (orbax coordinates the processes of a multi-host
  run); every process restores, onto its own devices, whatever topology saved it.
  """

  def __init__(self, workdir: str, *, keep: int):
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, *, wait: bool = False,
           config: Mapping[str, Any] | None = None,
           pending_metrics: Sequence[Mapping[str, Any]] = ()) -> None:
    """Saves `state` at `step` (asynchronously unless `wait`); keeps the newest N.

    Args:
      step: the step number (the checkpoint's directory name).
      state: the pytree to save.
      wait: block until the checkpoint is complete on disk.
      config: the run's config as JSON-compatible dict, stored inside the checkpoint.
      pending_metrics: host metrics of the steps since the last logged row, stored exactly
        (dtype and values) so that a resumed run logs the same averages.
    """
    if step in self._manager.all_steps():
      return
    custom = {"pending_metrics": [
        {name: [str(np.asarray(v).dtype), np.asarray(v).tolist()] for name, v in row.items()}
        for row in pending_metrics]}
    if config is not None:
      custom["config"] = dict(config)
    self._manager.save(step, args=ocp.args.StandardSave(state), custom_metadata=custom)
    if wait:
      self._manager.wait_until_finished()

  def pending_metrics(self, step: int) -> list[dict[str, np.ndarray]]:
    """The per-step metrics saved with checkpoint `step` by `save` ([] if none)."""
    custom = self._manager.metadata(step).custom_metadata or {}
    return [{name: np.asarray(value, dtype=dtype) for name, (dtype, value) in row.items()}
            for row in custom.get("pending_metrics", [])]

  def stored_config(self, step: int) -> dict[str, Any] | None:
    """The config saved with checkpoint `step` (None for a checkpoint saved without one)."""
    custom = self._manager.metadata(step).custom_metadata or {}
    return custom.get("config")

  def restore(self, target: Any, *,
              check_config: Callable[[dict[str, Any] | None, int], list[str] | None]
              | None = None
              ) -> tuple[Any, int] | None:
    """Restores the newest readable checkpoint onto `target`'s structure and shardings.

    Args:
      target: a TrainState (concrete or abstract) whose leaves give shape, dtype and
        sharding of the restored arrays.
      check_config: called as `check_config(stored_config, step)` before a checkpoint is
        restored; an exception it raises (e.g. the checkpoint belongs to another
        configuration) propagates: that is a refusal, not a corrupted file, so no older
        checkpoint is tried. It may return the config differences it accepted; they are
        named if the checkpoint then fails to restore (e.g. a model of other shapes).

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
      path = os.path.join(self.directory, str(step))
      try:
        stored = self.stored_config(step)
      except Exception as e:  # noqa: BLE001 - unreadable metadata: a damaged checkpoint.
        message = f"checkpoint {path}: unreadable metadata: {type(e).__name__}: {e}"
        logging.error("Cannot restore %s; trying an older one.", message)
        errors.append(message)
        continue
      accepted = check_config(stored, step) if check_config is not None else None
      try:
        state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return state, step
      except Exception as e:  # noqa: BLE001 - any failure means this checkpoint is unusable.
        message = f"checkpoint {path}: {type(e).__name__}: {e}"
        if accepted:
          message += ("\n  It was written with another config (accepted by "
                      "train.allow_config_change), which may explain the failure:\n  " +
                      "\n  ".join(accepted))
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
