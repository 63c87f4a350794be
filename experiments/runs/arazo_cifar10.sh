#!/usr/bin/env bash
# Arazo et al. 2019 (arXiv:1908.02983), CIFAR-10 500/1000/4000 labels, 13-layer CNN: every label count x seeds 1 2 3
# (experiments/arazo_cifar10.py; its docstring gives the recipe and the published numbers).
# Each run is 400 epochs (~2.4e5 steps of 96 images): an accelerator job with the TFDS cifar10 data
# (not feasible on the 2-core CI machine).
# Usage: bash experiments/runs/arazo_cifar10.sh [RUNS_DIR]   (default runs/arazo_cifar10)
#   LABELS="500 1000 4000" SEEDS="1 2 3" narrow it (the summarizer then expects only those runs).
# Table (re-run any time; lists missing and unfinished runs):
#   python -m fixmatch_jax.summarize --script=experiments/runs/arazo_cifar10.sh --runs=RUNS_DIR
set -euo pipefail
runs=${1:-runs/arazo_cifar10}
for labels in ${LABELS:-500 1000 4000}; do
  for seed in ${SEEDS:-1 2 3}; do
    python -m fixmatch_jax.main \
      --config="experiments/arazo_cifar10.py:labels=${labels},seed=${seed}" \
      --workdir="${runs}/labels${labels}_seed${seed}"
  done
done
python -m fixmatch_jax.summarize --script="$0" --runs="${runs}"
