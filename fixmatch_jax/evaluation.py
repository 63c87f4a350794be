"""Test-set evaluation of the online and the EMA model, and embeddings for plots.

Batches come padded to a fixed shape with a boolean mask (data.pipeline.eval_stream),
so one compiled eval step serves every batch and each test example counts once.
Counts are fetched per batch and summed on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from fixmatch_jax import steps


def evaluate(eval_fn: Callable[..., Mapping[str, jax.Array]], state: Any,
             batches: Iterable[Mapping[str, np.ndarray]], mesh: jax.sharding.Mesh
             ) -> dict[str, float]:
  """Accuracy of the online (`eval/acc`) and EMA (`eval/acc_ema`) parameters.

  Both use the online model's BatchNorm statistics, as the FixMatch code does
  (the EMA covers trainable parameters only).

  Args:
    eval_fn: the jitted `steps.eval_step` (see `steps.make_eval_step`).
    state: the TrainState.
    batches: host batches {"image", "label", "mask"} from `pipeline.eval_stream`.
    mesh: the device mesh the batches are sharded over.

  Returns:
    {"eval/acc", "eval/acc_ema", "eval/num_examples"}.
  """
  totals = {"correct": 0, "correct_ema": 0, "count": 0}
  for batch in batches:
    sharded = steps.shard_batch(mesh, batch)
    raw = eval_fn(state.params, state.batch_stats, sharded)
    ema = eval_fn(state.ema_params, state.batch_stats, sharded)
    # One fetch per batch: evaluation is off the hot loop, and keeping few programs in flight
    # avoids starving XLA:CPU's collectives when fake host devices outnumber the cores.
    raw, ema = jax.device_get((raw, ema))
    totals["correct"] += int(raw["correct"])
    totals["correct_ema"] += int(ema["correct"])
    totals["count"] += int(raw["count"])
  if not totals["count"]:
    raise ValueError("The evaluation set is empty.")
  count = float(totals["count"])
  return {
      "eval/acc": float(totals["correct"]) / count,
      "eval/acc_ema": float(totals["correct_ema"]) / count,
      "eval/num_examples": count,
  }


def embed(model: nn.Module, params: Any, batch_stats: Any, images: np.ndarray,
          *, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
  """Logits and penultimate features (for t-SNE plots and label propagation).

  Args:
    model: a model whose `__call__` accepts `return_embedding=True`.
    params: parameters to use (e.g. the EMA parameters).
    batch_stats: BatchNorm statistics.
    images: uint8 [N, H, W, C].
    batch_size: images per forward pass; the last pass is padded to this size so
      one compiled function serves all.

  Returns:
    (logits [N, classes], embeddings [N, D]) as numpy arrays.
  """
  @jax.jit
  def forward(x):
    return model.apply({"params": params, "batch_stats": batch_stats}, x, train=False,
                       return_embedding=True)

  logits, features = [], []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    pad = batch_size - len(chunk)
    padded = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    out_logits, out_features = jax.device_get(forward(padded))
    logits.append(out_logits[:len(chunk)])
    features.append(out_features[:len(chunk)])
  return np.concatenate(logits), np.concatenate(features)
