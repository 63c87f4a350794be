r"""Blocked exact kNN (label propagation's graph) vs a dense N x N similarity matrix.

  python scripts/bench_knn.py --sizes 10000,20000,60000 --dense-sizes 10000,20000

Each measurement runs in its own subprocess so that its peak resident memory (ru_maxrss) is
its own. Features: random Gaussian, D = 64 (the WRN-10-1 embedding width), L2-normalised;
k = 50 (Iscen et al. 2019). "blocked": fixmatch_jax.classic.label_propagation.knn (1024
query rows per block). "dense": the full similarity matrix, then top-k of each row (the
obvious implementation; it needs N^2 floats: 14.4 GB at N = 60k, which this shared 24 GB
machine is not asked to hold). Times include XLA compilation (one compile per shape).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(method: str, n: int, dim: int, k: int) -> None:
  sys.path.insert(0, REPO)
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from fixmatch_jax.classic import label_propagation  # noqa: PLC0415

  features = label_propagation.l2_normalise(
      np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32))
  features.block_until_ready()
  started = time.perf_counter()
  if method == "blocked":
    values, _ = label_propagation.knn(features, k, block_size=1024)
  else:
    @jax.jit
    def dense(x):
      similarity = x @ x.T
      similarity = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, similarity)
      return jax.lax.top_k(similarity, k)
    values = np.asarray(dense(features)[0])
  seconds = time.perf_counter() - started
  print(json.dumps({"method": method, "n": n, "seconds": round(seconds, 2),
                    "checksum": float(np.asarray(values).sum())}))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="10000,20000,60000")
  parser.add_argument("--dense-sizes", default="10000,20000")
  parser.add_argument("--dim", type=int, default=64)
  parser.add_argument("--k", type=int, default=50)
  parser.add_argument("--worker", nargs=2, metavar=("METHOD", "N"))
  args = parser.parse_args()
  if args.worker:
    worker(args.worker[0], int(args.worker[1]), args.dim, args.k)
    return
  jobs = [("blocked", int(n)) for n in args.sizes.split(",") if n]
  jobs += [("dense", int(n)) for n in args.dense_sizes.split(",") if n]
  print("| method | N | seconds | peak RSS (GB) | N x N float32 (GB) |")
  print("|---|---|---|---|---|")
  for method, n in jobs:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run([sys.executable, __file__, "--worker", method, str(n),
                          f"--dim={args.dim}", f"--k={args.k}"], capture_output=True, text=True,
                         env=dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2"))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if out.returncode:
      print(f"| {method} | {n} | failed: {out.stderr.strip().splitlines()[-1][:80]} | | |")
      continue
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # ru_maxrss of children is the max over all finished children: report it only when it grew.
    rss = f"{peak / 2**20:.2f}" if peak > before else f"<= {before / 2**20:.2f}"
    print(f"| {method} | {n} | {result['seconds']} | {rss} | {n * n * 4 / 1e9:.1f} |",
          flush=True)


if __name__ == "__main__":
  main()
