"""Instant Gratification, QDA + pseudo-labelling: JAX vs scikit-learn, side by side, one run.

Usage:
  python scripts/bench_instant_gratification.py                # 512 sub-datasets, ~30 s idle
  python scripts/bench_instant_gratification.py --num_datasets 16 --json /tmp/ig.json

Both pipelines get the same generated data (`make_instant_gratification(seed)`): per sub-dataset
VarianceThreshold(1.5), QDA(reg_param=0.5) in 11-fold stratified CV, pseudo-labels for test
rows with p <= 0.01 or p >= 0.99, a second round, OOF AUC on the original train rows.
Published (Kaggle 2019; paper_tables.md): CV AUC 0.965 -> 0.970, LB 0.965 -> 0.969. Results
and the machine they were measured on: docs/classic_qda.md.

Timing is end to end for each pipeline: the JAX time starts cold in this process, so it includes
device initialisation, tracing and XLA compilation; the second JAX run (warm) is reported too,
and their difference is the one-off cost of tracing + compiling. Data generation is outside both
timings (the same arrays feed both pipelines); both include computing the AUCs.
Wall and CPU seconds (all threads of the process) are both given, with the load average: the
CPU may be shared with other work.
scikit-learn runs with BLAS limited to one thread (threadpoolctl): its matrices are tiny, and with
OpenBLAS threads on shared cores it was several times slower, so one thread is its best case.
Prints a table, then one JSON line (also written to --json).
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import time

import jax
import sklearn
import threadpoolctl

from fixmatch_jax.classic import instant_gratification as ig

PUBLISHED = {"cv_auc_before": 0.965, "cv_auc_after": 0.970,
             "test_auc_before": 0.965, "test_auc_after": 0.969}


def _timed(function, *args):
  """(result, wall seconds, CPU seconds of this process: all its threads)."""
  start, cpu_start = time.perf_counter(), time.process_time()
  result = function(*args)
  return result, time.perf_counter() - start, time.process_time() - cpu_start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_datasets", type=int, default=512)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--sklearn_blas_threads", type=int, default=1)
  parser.add_argument("--skip_sklearn", action="store_true")
  parser.add_argument("--json", default="")
  args = parser.parse_args()

  data, generate_seconds, _ = _timed(ig.make_instant_gratification, args.num_datasets, args.seed)
  config = ig.PipelineConfig()
  load_before = os.getloadavg()[0]
  jax_summary, jax_seconds, jax_cpu = _timed(ig.run_jax_pipeline, data, config)
  _, jax_warm_seconds, jax_warm_cpu = _timed(ig.run_jax_pipeline, data, config)
  sklearn_summary, sklearn_seconds, sklearn_cpu = {}, float("nan"), float("nan")
  if not args.skip_sklearn:
    with threadpoolctl.threadpool_limits(args.sklearn_blas_threads, user_api="blas"):
      sklearn_summary, sklearn_seconds, sklearn_cpu = _timed(
        ig.run_sklearn_pipeline, data, config
      )

  rows = [("cv_auc_before", "CV AUC, QDA"), ("cv_auc_after", "CV AUC, QDA + PL"),
          ("test_auc_before", "test AUC, QDA"), ("test_auc_after", "test AUC, QDA + PL"),
          ("pseudo_labels_per_dataset", "pseudo-labels / sub-dataset"),
          ("pseudo_label_accuracy", "pseudo-label accuracy")]
  print(f"{'':30s} {'published':>10s} {'sklearn':>10s} {'jax':>10s}")
  for key, label in rows:
    published = PUBLISHED.get(key, float("nan"))
    print(f"{label:30s} {published:10.3f} {sklearn_summary.get(key, float('nan')):10.4f} "
          f"{jax_summary[key]:10.4f}")
  print(f"{'seconds, end to end':30s} {'':10s} {sklearn_seconds:10.2f} {jax_seconds:10.2f}")
  print(f"{'CPU seconds, end to end':30s} {'':10s} {sklearn_cpu:10.2f} {jax_cpu:10.2f}")
  print(f"{'seconds, JAX warm (2nd run)':30s} {'':10s} {'':10s} {jax_warm_seconds:10.2f}")
  print(f"{'JAX trace + compile (cold-warm)':30s} {'':10s} {'':10s} "
        f"{jax_seconds - jax_warm_seconds:10.2f}")
  print(f"speed ratio (sklearn / jax, cold, wall): {sklearn_seconds / jax_seconds:.1f}x; "
        f"CPU: {sklearn_cpu / jax_cpu:.1f}x; load average {load_before:.1f} -> "
        f"{os.getloadavg()[0]:.1f}")

  record = {
    "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} on "
               f"{jax.devices()[0].platform}, sklearn {sklearn.__version__}",
    "num_datasets": args.num_datasets, "seed": args.seed, "config": dataclasses.asdict(config),
    "published": PUBLISHED, "sklearn": sklearn_summary, "jax": jax_summary,
    "sklearn_seconds": sklearn_seconds, "jax_seconds": jax_seconds,
    "jax_warm_seconds": jax_warm_seconds, "generate_seconds": generate_seconds,
    "sklearn_cpu_seconds": sklearn_cpu, "jax_cpu_seconds": jax_cpu,
    "jax_warm_cpu_seconds": jax_warm_cpu, "load_average": [load_before, os.getloadavg()[0]],
    "speed_ratio": sklearn_seconds / jax_seconds,
    "cpu_speed_ratio": sklearn_cpu / jax_cpu,
    "sklearn_blas_threads": args.sklearn_blas_threads,
    "max_abs_auc_difference": max(
      (abs(sklearn_summary[k] - jax_summary[k]) for k in PUBLISHED), default=float("nan")
    ) if sklearn_summary else float("nan"),
  }
  line = json.dumps(record)
  print(line)
  if args.json:
    with open(args.json, "w") as f:
      f.write(line + "\n")


if __name__ == "__main__":
  main()
