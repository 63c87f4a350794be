#!/usr/bin/env bash
# FreeMatch, Wang et al. 2023 (arXiv:2205.07246), CIFAR-10 40/250/4000 labels, WRN-28-2: every label count x seeds 1 2 3
# (experiments/freematch_cifar10.py; its docstring gives the recipe and the published numbers).
# Each run is 2^20 steps of 64 + 2 x 448 images: an accelerator job with the TFDS cifar10 data
# (not feasible on the 2-core CI machine).
# Usage: bash experiments/runs/freematch_cifar10.sh [RUNS_DIR]   (default runs/freematch_cifar10)
#   LABELS="40 250 4000" SEEDS="1 2 3" narrow it (the summarizer then expects only those runs).
# Table (re-run any time; lists missing and unfinished runs):
#   python -m fixmatch_jax.summarize --script=experiments/runs/freematch_cifar10.sh --runs=RUNS_DIR
set -euo pipefail
runs=${1:-runs/freematch_cifar10}
for labels in ${LABELS:-40 250 4000}; do
  for seed in ${SEEDS:-1 2 3}; do
    python -m fixmatch_jax.main \
      --config="experiments/freematch_cifar10.py:labels=${labels},seed=${seed}" \
      --workdir="${runs}/labels${labels}_seed${seed}"
  done
done
python -m fixmatch_jax.summarize --script="$0" --runs="${runs}"
