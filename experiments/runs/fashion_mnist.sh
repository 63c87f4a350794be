#!/usr/bin/env bash
# The runs behind docs/fashion_mnist.md: FixMatch vs supervised-only on real Fashion-MNIST,
# 40 and 250 labels, seed 1, one run at a time on the machine (timings are per run).
# Usage: bash experiments/runs/fashion_mnist.sh [RUNS_DIR]   (default runs/fashion_mnist)
set -euo pipefail
runs=${1:-runs/fashion_mnist}
for labels in 40 250; do
  for algorithm in supervised fixmatch; do
    python -m fixmatch_jax.main \
      --config="experiments/fashion_mnist.py:algorithm=${algorithm},labels=${labels},seed=1" \
      --workdir="${runs}/${algorithm}_labels${labels}_seed1"
  done
done
python scripts/fashion_mnist_report.py --runs="${runs}"
