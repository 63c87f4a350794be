"""`config.init_from`: start a run from the network of another run's checkpoint.

Pre-training combined with semi-supervised learning (e.g. a self-supervised rotation
run, then FixMatch) needs a run whose parameters, EMA parameters and BatchNorm statistics
start as another run's, while its step, optimizer, algorithm state and PRNG start fresh.
`config.init_from` names the other run's workdir (its newest checkpoint is read) or one
checkpoint directory of it (`<workdir>/checkpoints/<step>`); `config.init_from_exclude` is
a regular expression of parameter paths to keep at their fresh initialisation, e.g.
"classifier" for a pre-training head whose number of outputs differs.

Only a run that starts at step 0 is initialised: a run resuming from its own checkpoint
keeps that checkpoint's values.
"""

from __future__ import annotations

import os
import re
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from fixmatch_jax import checkpointing

# TrainState fields taken from the other run; everything else starts fresh.
COPIED_FIELDS = ("params", "ema_params", "batch_stats")


class InitFromError(ValueError):
  """The checkpoint named by config.init_from cannot initialise this run's model."""


def checkpoint_path(init_from: str) -> str:
  """The orbax item directory of the newest checkpoint of a workdir (or of a step directory).

  Raises:
    InitFromError: nothing readable there.
  """
  path = os.path.abspath(init_from)
  candidates = []
  ckpt_dir = os.path.join(path, checkpointing.CHECKPOINT_DIR)
  if os.path.isdir(ckpt_dir):
    steps = sorted((int(d) for d in os.listdir(ckpt_dir) if d.isdigit()), reverse=True)
    candidates = [os.path.join(ckpt_dir, str(s)) for s in steps]
  elif os.path.basename(path).isdigit():
    candidates = [path]
  for candidate in candidates:
    item = os.path.join(candidate, "default")
    if os.path.isdir(item):
      return item
  raise InitFromError(
      f"config.init_from={init_from!r}: no checkpoint found (expected "
      f"{ckpt_dir}/<step>/default). Point it at the workdir of a finished run.")


def load_variables(init_from: str) -> dict[str, Any]:
  """{"params", "ema_params", "batch_stats"} of the newest checkpoint, as host NumPy arrays."""
  path = checkpoint_path(init_from)
  checkpointer = ocp.StandardCheckpointer()
  tree = checkpointer.metadata(path).item_metadata.tree
  # Restore onto one local device whatever topology saved it, then move to the host.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)
  restored = checkpointer.restore(path, abstract)
  checkpointer.close()
  return {field: jax.tree.map(np.asarray, restored.get(field, {})) for field in COPIED_FIELDS}


def _path_name(path: tuple[Any, ...]) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def merge(fresh: Any, loaded: Any, *, exclude: str | None, field: str,
          source: str) -> Any:
  """`fresh` with every leaf replaced by the leaf at the same path of `loaded`.

  Args:
    fresh: this run's freshly initialised tree (e.g. params).
    loaded: the other run's tree.
    exclude: regular expression; leaves whose path ("conv0/kernel") it matches (re.search)
      keep their fresh value.
    field: the TrainState field, for messages.
    source: config.init_from, for messages.

  Returns:
    A tree with the structure, dtypes and shardings of `fresh`.

  Raises:
    InitFromError: a non-excluded leaf is missing from `loaded` or has another shape;
      the message lists every such leaf and the fix.
  """
  loaded_leaves = {_path_name(p): v for p, v in jax.tree_util.tree_leaves_with_path(loaded)}
  pattern = re.compile(exclude) if exclude else None
  problems = []

  def take(path, value):
    name = _path_name(path)
    if pattern is not None and pattern.search(name):
      return value
    if name not in loaded_leaves:
      problems.append(f"  {field}/{name}: missing from the checkpoint")
      return value
    other = loaded_leaves[name]
    if tuple(other.shape) != tuple(value.shape):
      problems.append(f"  {field}/{name}: checkpoint has shape {tuple(other.shape)}, this "
                      f"model has {tuple(value.shape)}")
      return value
    sharding = getattr(value, "sharding", None)
    array = np.asarray(other, dtype=value.dtype)
    return jax.device_put(array, sharding) if sharding is not None else array

  merged = jax.tree_util.tree_map_with_path(take, fresh)
  if problems:
    raise InitFromError(
        f"config.init_from={source!r} does not fit this model:\n" + "\n".join(problems) +
        "\nUse the same config.model as that run, or leave these parameters at their fresh "
        "initialisation with config.init_from_exclude='<regex>' (e.g. 'classifier').")
  return merged


def apply(state: Any, init_from: str, exclude: str | None = None) -> Any:
  """`state` (a fresh TrainState) with params, EMA params and BatchNorm statistics loaded.

  Args:
    state: the run's TrainState at step 0 (replicated on its mesh).
    init_from: a workdir of another run, or one of its checkpoint step directories.
    exclude: regular expression of parameter paths to keep fresh (config.init_from_exclude).

  Returns:
    The state with COPIED_FIELDS taken from the checkpoint (same shardings); step,
    optimizer state, algorithm state and PRNG untouched.
  """
  loaded = load_variables(init_from)
  updates = {field: merge(getattr(state, field), loaded[field], exclude=exclude, field=field,
                          source=init_from)
             for field in COPIED_FIELDS}
  return state.replace(**updates)
