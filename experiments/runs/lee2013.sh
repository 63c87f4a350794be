#!/usr/bin/env bash
# Lee 2013 (Pseudo-Label), Table 1: MNIST 100/600/1000/3000 labels, 784-5000-10 MLP with
# dropout, without ("dropNN", pl=false) and with Pseudo-Label (experiments/lee2013.py).
# Full length is 1000 epochs (234k steps); DATASET=fashion_mnist_local runs here, and
# EPOCHS / STEPS_PER_EPOCH shorten it (alpha(t)'s breakpoints scale with the run).
# Usage: bash experiments/runs/lee2013.sh [RUNS_DIR] (default runs/lee2013)
#   LABELS, SEEDS, DATASET, EPOCHS, STEPS_PER_EPOCH. Table: python -m fixmatch_jax.summarize \
#     --script=experiments/runs/lee2013.sh --runs=RUNS_DIR
set -euo pipefail
runs=${1:-runs/lee2013}
dataset=${DATASET:-mnist}
length="epochs=${EPOCHS:-1000},steps_per_epoch=${STEPS_PER_EPOCH:-234}"
for labels in ${LABELS:-100 600 1000 3000}; do
  for pl in false true; do
    for seed in ${SEEDS:-1 2 3 4 5}; do
      python -m fixmatch_jax.main \
        --config="experiments/lee2013.py:dataset=${dataset},labels=${labels},pl=${pl},seed=${seed},${length}" \
        --workdir="${runs}/${dataset}_labels${labels}_pl${pl}_seed${seed}"
    done
  done
done
python -m fixmatch_jax.summarize --script="$0" --runs="${runs}"
