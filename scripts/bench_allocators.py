r"""Benchmark: the FixMatch WRN-28-2 step under different memory allocators, with page faults.

  python scripts/bench_allocators.py --batch 8 --steps 6
  python scripts/bench_allocators.py --batch 64 --steps 3 --allocators glibc,tcmalloc

XLA:CPU allocates a step's temporary buffers anew at every execution (hundreds of MB per
device). Each allocator runs the step of `scripts/bench_step.py` (2 XLA host devices by
default) in a fresh process and reports, per step after the warm-up: the median wall time,
the minor page faults (the kernel mapping fresh zeroed pages), the kernel (sys) and user
CPU time, and the process's peak RSS. Allocators:

  glibc          glibc's malloc with arenas capped at 2 (fixmatch_jax.main --malloc=glibc)
  glibc_hugetlb  the same with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (transparent huge
                 pages for malloc's mappings, where the kernel allows them)
  tcmalloc       LD_PRELOAD of libtcmalloc (fixmatch_jax.main's default when installed)
  jemalloc       LD_PRELOAD of libjemalloc with purging off and THP (MALLOC_CONF
                 dirty_decay_ms:-1,muzzy_decay_ms:-1,thp:always); skipped if not installed
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import platform
import resource
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "scripts")]

# No JAX import at module level: the workers set XLA_FLAGS first.
import bench_step  # noqa: E402

from fixmatch_jax.main import (  # noqa: E402
  MALLOC_ENV,
  cpu_xla_flags,
  find_tcmalloc,
  limit_malloc_arenas,
  process_environment,
  recipe_cpu_convolutions,
)


def allocator_env(name: str) -> dict[str, str] | None:
  """Environment of a worker for allocator `name`; None when it is not installed."""
  if name == "glibc":
    return process_environment("glibc")
  if name == "glibc_hugetlb":
    return dict(process_environment("glibc"), GLIBC_TUNABLES="glibc.malloc.hugetlb=1")
  if name == "tcmalloc":
    return process_environment("tcmalloc") if find_tcmalloc() else None
  if name == "jemalloc":
    library = ctypes.util.find_library("jemalloc")
    return None if library is None else dict(
        process_environment("glibc"), **{MALLOC_ENV: library, "LD_PRELOAD": library},
        MALLOC_CONF="dirty_decay_ms:-1,muzzy_decay_ms:-1,thp:always")
  raise ValueError(f"unknown allocator {name!r}")


def worker(batch: int, steps: int) -> None:
  if os.environ.get(MALLOC_ENV) == "glibc":
    limit_malloc_arenas(2)  # Before JAX starts its threads, as fixmatch_jax.main does.
  import jax  # noqa: PLC0415

  step_fn, state, device_batch = bench_step.build_step(batch, 7, 32, conv_bias=False)
  rows = []
  for _ in range(steps + 1):
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    state, metrics = step_fn(state, device_batch)
    jax.block_until_ready((state, metrics))
    after = resource.getrusage(resource.RUSAGE_SELF)
    rows.append((time.perf_counter() - start, after.ru_minflt - before.ru_minflt,
                 after.ru_stime - before.ru_stime, after.ru_utime - before.ru_utime))
  rows = rows[1:]  # The first step compiles.
  median = lambda i: statistics.median(r[i] for r in rows)
  print(json.dumps({
      "devices": len(jax.devices()), "batch": batch, "steps": steps,
      "median_step_s": round(median(0), 4), "step_times_s": [round(r[0], 3) for r in rows],
      "page_faults_per_step": int(median(1)),
      "faulted_mb_per_step": round(median(1) * resource.getpagesize() / 2**20, 1),
      "sys_s_per_step": round(median(2), 3), "user_s_per_step": round(median(3), 3),
      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8, help="Labelled batch B (mu = 7).")
  parser.add_argument("--steps", type=int, default=6, help="Timed steps after the warm-up.")
  parser.add_argument("--devices", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--allocators", default="glibc,glibc_hugetlb,tcmalloc,jemalloc")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    worker(args.batch, args.steps)
    return

  load_before = os.getloadavg()[0]
  results = []
  for name in args.allocators.split(","):
    env = allocator_env(name)
    if env is None:
      print(f"{name}: not installed, skipped", file=sys.stderr)
      continue
    env = dict(env, XLA_FLAGS=cpu_xla_flags(args.devices, recipe_cpu_convolutions()),
               JAX_PLATFORMS="cpu",
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    row = bench_step.subprocess_json([sys.executable, __file__, "--worker",
                                      f"--batch={args.batch}", f"--steps={args.steps}"], env)
    results.append(dict(row, allocator=name))

  print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after; B = {args.batch}, "
        f"{args.devices} XLA devices, median of {args.steps} steps")
  print("| allocator | median step (s) | x glibc | page faults per step (MB mapped) | "
        "sys s / step | user s / step | peak RSS (MB) | steps (s) |")
  print("|---|---:|---:|---:|---:|---:|---:|---|")
  glibc = next((r["median_step_s"] for r in results if r["allocator"] == "glibc"), None)
  for r in results:
    ratio = f"{r['median_step_s'] / glibc:.2f}" if glibc else "-"
    print(f"| {r['allocator']} | {r['median_step_s']:.3f} | {ratio} | "
          f"{r['page_faults_per_step']} ({r['faulted_mb_per_step']:.0f}) | "
          f"{r['sys_s_per_step']:.3f} | {r['user_s_per_step']:.3f} | {r['peak_rss_mb']:.0f} | "
          f"{', '.join(f'{t:.2f}' for t in r['step_times_s'])} |")
  for r in results:
    print(json.dumps(r))


if __name__ == "__main__":
  main()
