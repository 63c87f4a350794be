r"""Where the FixMatch WRN-28-2 step's time goes on XLA:CPU: a per-operation breakdown.

  python scripts/profile_step.py --batch 8 --steps 3

Builds the step of `scripts/bench_step.py` (B labelled + 2 * 7 * B unlabelled 32x32x3
images, one XLA host device per core), runs two warm-up steps, then records `--steps`
steps with `jax.profiler.trace` and sums the durations of the executed XLA operations
(thunks) by kind: the number after a fused operation's name is dropped, so
`ynn_fusion.35` and `ynn_fusion.36` (convolutions handed to YNNPACK, with whatever XLA
fused into them) count as one kind. Times are per device and per step; a cross-device
reduction's time includes waiting for the other device. Prints a table (share of the
operations' total, count per step and device) and the median step time.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "scripts")]

# No JAX import at module level: XLA_FLAGS is set first.
from fixmatch_jax.main import (  # noqa: E402
    cpu_xla_flags,
    recipe_cpu_convolutions,
    restart_with_allocator,
)

# Profiler events that are not operations of the step (runtime bookkeeping, Python frames).
_NOT_OPS = ("ThunkExecutor", "$", "Rendezvous", "Wait", "PjitFunction", "CommonPjRt",
            "ParseArguments", "end: ", "[")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8, help="Labelled batch size B (mu = 7).")
  parser.add_argument("--steps", type=int, default=3, help="Profiled steps.")
  parser.add_argument("--devices", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--top", type=int, default=12, help="Rows of the table.")
  parser.add_argument("--malloc", default="auto", choices=("auto", "tcmalloc", "glibc"),
                      help="Allocator, as fixmatch_jax.main's --malloc (restarts the script "
                           "once with tcmalloc preloaded when it applies).")
  parser.add_argument("--cpu-convs", default="default",
                      choices=("default", "onednn", "eigen", "xla"),
                      help="Convolution library (config.train.cpu_convolutions; default: the "
                           "recipe's).")
  args = parser.parse_args()
  restart_with_allocator(args.malloc)
  convs = recipe_cpu_convolutions() if args.cpu_convs == "default" else args.cpu_convs
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " "
                             + cpu_xla_flags(args.devices, convs)).strip()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import bench_step  # noqa: PLC0415
  import jax  # noqa: PLC0415

  step_fn, state, batch = bench_step.build_step(args.batch, 7, 32, conv_bias=False,
                                                cpu_convolutions=convs)
  for _ in range(2):  # Compilation, then one step with warm caches.
    state, metrics = step_fn(state, batch)
    jax.block_until_ready((state, metrics))
  times = []
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      for _ in range(args.steps):
        start = time.perf_counter()
        state, metrics = step_fn(state, batch)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
      events = json.load(f)["traceEvents"]
  total_us, count = collections.Counter(), collections.Counter()
  for event in events:
    if event.get("ph") != "X" or "dur" not in event or event["name"].startswith(_NOT_OPS):
      continue
    kind = re.sub(r"[.\d]+$", "", event["name"])
    total_us[kind] += event["dur"]
    count[kind] += 1
  runs = args.steps * len(jax.devices())  # Each device runs every operation once per step.
  all_us = sum(total_us.values())
  print(f"\nFixMatch WRN-28-2 step, B = {args.batch}, mu = 7, {len(jax.devices())} XLA devices, "
        f"{os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"median step {statistics.median(times):.3f} s while profiled")
  print("| operation kind | ms per step and device | share | count per step and device |")
  print("|---|---:|---:|---:|")
  for kind, us in total_us.most_common(args.top):
    print(f"| {kind} | {us / runs / 1000:.1f} | {100 * us / all_us:.1f}% | "
          f"{count[kind] / runs:.0f} |")
  print(f"| all operations | {all_us / runs / 1000:.1f} | 100% | "
        f"{sum(count.values()) / runs:.0f} |")


if __name__ == "__main__":
  main()
