#!/usr/bin/env bash
# FixMatch (RA), Sohn et al. 2020 (arXiv:2001.07685), Table 2,
# CIFAR-100 (WRN-28-8, wd 1e-3): every label count x the
# paper's five folds (seeds 1-5), one command per run. Each run is 2^20 steps: an accelerator
# job (days on one GPU; not feasible on the 2-core CI machine). Needs the TFDS data (tfds build cifar100).
# Usage: bash experiments/runs/fixmatch_cifar100.sh [RUNS_DIR]   (default runs/fixmatch_cifar100)
#   LABELS="400 2500 10000" SEEDS="1 2 3 4 5" narrow it (the summarizer then expects only those runs).
# Table (re-run any time; lists missing and unfinished runs):
#   python -m fixmatch_jax.summarize --script=experiments/runs/fixmatch_cifar100.sh --runs=RUNS_DIR
set -euo pipefail
runs=${1:-runs/fixmatch_cifar100}
for labels in ${LABELS:-400 2500 10000}; do
  for seed in ${SEEDS:-1 2 3 4 5}; do
    python -m fixmatch_jax.main \
      --config="experiments/fixmatch_cifar100.py:labels=${labels},seed=${seed}" \
      --workdir="${runs}/labels${labels}_seed${seed}"
  done
done
python -m fixmatch_jax.summarize --script="$0" --runs="${runs}"
