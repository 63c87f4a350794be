"""Metric logging: TensorBoard events plus a JSON-lines file beside config.json.

The train loop hands over per-step metric pytrees still on device; they are only
fetched (one host sync) at logging steps, where `average` stacks and averages
them. Vector metrics (per-class rates) are kept as lists in metrics.jsonl and
written to TensorBoard as one scalar per class.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from clu import metric_writers

METRICS_FILE = "metrics.jsonl"


def average(step_metrics: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
  """Mean over steps of each metric; a single device_get for all of them."""
  host = jax.device_get(list(step_metrics))
  return {k: np.mean(np.stack([np.asarray(m[k]) for m in host]), axis=0) for k in host[0]}


def to_python(value: Any) -> Any:
  """Converts numpy scalars/arrays to JSON-serialisable Python values."""
  array = np.asarray(value)
  if array.ndim == 0:
    item = array.item()
    return item if not isinstance(item, float) or math.isfinite(item) else str(item)
  return [to_python(v) for v in array]


class MetricLogger:
  """Writes metrics to TensorBoard (process 0 only) and `<workdir>/metrics.jsonl`."""

  def __init__(self, workdir: str):
    self._is_main = jax.process_index() == 0
    self._writer = metric_writers.create_default_writer(
        workdir, just_logging=not self._is_main, asynchronous=True)
    self._path = os.path.join(workdir, METRICS_FILE)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Logs one row of metrics at `step` (a training step count)."""
    if not self._is_main:
      return
    scalars = {}
    for name, value in metrics.items():
      array = np.asarray(value)
      if array.ndim == 0:
        scalars[name] = float(array)
      else:
        scalars.update({f"{name}/{i}": float(v) for i, v in enumerate(array.ravel())})
    self._writer.write_scalars(step, scalars)
    row = {"step": int(step), **{k: to_python(v) for k, v in metrics.items()}}
    with open(self._path, "a") as f:
      f.write(json.dumps(row) + "\n")

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def read(workdir: str) -> list[dict[str, Any]]:
  """Rows of `<workdir>/metrics.jsonl`, in the order written."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def truncate_after(workdir: str, step: int) -> None:
  """Drops rows logged after `step`: a resumed run re-logs them from its checkpoint.

  Without this, a run killed between checkpoints would leave rows that the resumed
  run writes again, and the summary (median of the last evaluations) would count
  them twice.
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path) or jax.process_index() != 0:
    return
  rows = [r for r in read(workdir) if r["step"] <= step]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  os.replace(tmp, path)


def summarize(rows: Sequence[Mapping[str, Any]], last_n: int) -> dict[str, Any]:
  """The paper's number and the best-of-run from logged evaluations.

  FixMatch reports the median of the last 20 evaluations of the EMA model
  (Sohn et al. 2020, Sec. 4); other codebases report the best test accuracy seen
  during training. Both are returned, labelled.
  """
  evals = [r for r in rows if "eval/acc_ema" in r]
  if not evals:
    return {}
  ema = np.array([r["eval/acc_ema"] for r in evals], dtype=np.float64)
  raw = np.array([r.get("eval/acc", np.nan) for r in evals], dtype=np.float64)
  tail = ema[-last_n:]
  return {
      f"acc_ema_median_last{last_n}": float(np.median(tail)),
      "num_evals_in_median": int(len(tail)),
      "acc_ema_final": float(ema[-1]),
      "acc_raw_final": float(raw[-1]),
      "acc_ema_best_of_run": float(np.max(ema)),
      "acc_raw_best_of_run": float(np.nanmax(raw)),
      "last_eval_step": int(evals[-1]["step"]),
  }


RUN_INFO_FILE = "run_info.json"
# Set by fixmatch_jax.main (its MALLOC_ENV) to the allocator the process runs with.
ALLOCATOR_ENV = "FIXMATCH_JAX_MALLOC"


def allocator_description() -> str:
  """The process's malloc: "glibc", or the preloaded library (fixmatch_jax.main --malloc)."""
  return os.environ.get(ALLOCATOR_ENV) or os.environ.get("LD_PRELOAD") or "glibc"


def hardware_description() -> str:
  """E.g. "2 x cpu (AMD EPYC 9B14, 2 cores)" or "1 x NVIDIA H100 80GB HBM3" for tables."""
  devices = jax.devices()
  kind = devices[0].device_kind
  if devices[0].platform == "cpu":
    model = "unknown CPU"
    try:
      with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f
                      if line.startswith("model name")), model)
    except OSError:
      pass
    kind = f"cpu ({model}, {os.cpu_count()} cores)"
  processes = jax.process_count()
  return f"{len(devices)} x {kind}" + (f" over {processes} hosts" if processes > 1 else "")


def write_run_info(workdir: str, **extra: Any) -> dict[str, Any]:
  """Records the hardware and start date of a run in `<workdir>/run_info.json`.

  The first invocation's date is kept; a resumed run on other hardware adds its
  description, so a table built from the run names every machine it ran on. `extra`
  entries (e.g. the convolution kernels in use) are recorded as given, latest wins.
  """
  path = os.path.join(workdir, RUN_INFO_FILE)
  hardware = hardware_description()
  info = {}
  if os.path.exists(path):
    with open(path) as f:
      info = json.load(f)
  known = [h for h in info.get("hardware", "").split(" + ") if h]
  info.setdefault("date", time.strftime("%Y-%m-%d", time.gmtime()))
  info["hardware"] = " + ".join(known + ([hardware] if hardware not in known else []))
  info["jax_version"] = jax.__version__
  info["allocator"] = allocator_description()  # Speed, not numbers, depends on it.
  # What XLA read when JAX started (device count, convolution library: fixmatch_jax.main).
  info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
  info.update(extra)
  if jax.process_index() == 0:
    with open(path + ".tmp", "w") as f:
      json.dump(info, f, indent=2)
    os.replace(path + ".tmp", path)
  return info
