#!/usr/bin/env bash
# FixMatch (CTA), Sohn et al. 2020 (arXiv:2001.07685), Table 2: every cell (CIFAR-10,
# CIFAR-100, SVHN, STL-10) x the paper's five folds (seeds 1-5), one command per run.
# Each run is 2^20 steps: an accelerator job. Needs the TFDS data (see the RA scripts);
# for STL-10's official folds set STL10_FOLD_FILE=<fold_indices.txt of the STL-10 release>.
# Usage: bash experiments/runs/fixmatch_cta.sh [RUNS_DIR]   (default runs/fixmatch_cta)
#   DATASETS="cifar10" SEEDS="1 2" narrow it (the summarizer then expects only those runs).
# Table: python -m fixmatch_jax.summarize --script=experiments/runs/fixmatch_cta.sh --runs=RUNS_DIR
set -euo pipefail
runs=${1:-runs/fixmatch_cta}
declare -A cells=([cifar10]="40 250 4000" [cifar100]="400 2500 10000" [svhn]="40 250 1000"
                  [stl10]="1000")
for dataset in ${DATASETS:-cifar10 cifar100 svhn stl10}; do
  for labels in ${cells[${dataset}]}; do
    for seed in ${SEEDS:-1 2 3 4 5}; do
      fold_file=()
      if [[ ${dataset} == stl10 && -n ${STL10_FOLD_FILE:-} ]]; then
        fold_file=(--config.data.stl10_fold_file="${STL10_FOLD_FILE}")
      fi
      python -m fixmatch_jax.main \
        --config="experiments/fixmatch_cta.py:dataset=${dataset},labels=${labels},seed=${seed}" \
        "${fold_file[@]}" \
        --workdir="${runs}/${dataset}_labels${labels}_seed${seed}"
    done
  done
done
python -m fixmatch_jax.summarize --script="$0" --runs="${runs}"
