#!/usr/bin/env bash
# The runs behind docs/fashion_mnist.md's 15-minute table: FixMatch vs supervised-only on real
# Fashion-MNIST, 40 and 250 labels, seed 1, 6000 steps at mu = 3, lr 0.1
# (experiments/fashion_mnist_15min.py); one run at a time on the machine (timings are per run).
# Usage: bash experiments/runs/fashion_mnist_15min.sh [RUNS_DIR]   (default runs/fashion_mnist_15min)
set -euo pipefail
runs=${1:-runs/fashion_mnist_15min}
for labels in ${LABELS:-250 40}; do
  for algorithm in fixmatch supervised; do
    python -m fixmatch_jax.main \
      --config="experiments/fashion_mnist_15min.py:algorithm=${algorithm},labels=${labels},seed=1" \
      --workdir="${runs}/${algorithm}_labels${labels}_seed1"
  done
done
python -m fixmatch_jax.summarize --script=experiments/runs/fashion_mnist_15min.sh \
    --runs="${runs}" --metric=accuracy --view=full
