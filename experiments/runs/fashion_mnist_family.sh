#!/usr/bin/env bash
# The table of docs/fashion_mnist_family.md: ten methods of the pseudo-labelling family on
# real Fashion-MNIST, 40 and 250 labels, seeds 1-3, one protocol (experiments/
# fashion_mnist_family.py: WRN-10-1, B=32, mu=3, 300 steps). Seed-major order, so that a
# partial sweep still has every method; one run at a time (timings are per run).
# Usage: bash experiments/runs/fashion_mnist_family.sh [RUNS_DIR]  (default runs/fashion_mnist_family)
#   SEEDS, LABELS, METHODS narrow the sweep. Re-running skips finished runs and resumes
#   unfinished ones.
set -euo pipefail
runs=${1:-runs/fashion_mnist_family}
methods=${METHODS:-supervised pseudo_label entmin pi_model mean_teacher uda arazo fixmatch flexmatch freematch}
for seed in ${SEEDS:-1 2 3}; do
  for labels in ${LABELS:-40 250}; do
    for algorithm in ${methods}; do
      python -m fixmatch_jax.main \
        --config="experiments/fashion_mnist_family.py:algorithm=${algorithm},labels=${labels},seed=${seed}" \
        --workdir="${runs}/${algorithm}_labels${labels}_seed${seed}" \
        || echo "FAILED: ${runs}/${algorithm}_labels${labels}_seed${seed}" >&2
    done
  done
done
python -m fixmatch_jax.summarize --script="$0" --runs="${runs}" --metric=accuracy --view=both
