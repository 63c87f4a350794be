#!/usr/bin/env bash
# FixMatch Table 2 (Sohn et al. 2020, arXiv:2001.07685), baseline rows on CIFAR-10 (WRN-28-2):
# Pseudo-Labeling, Mean Teacher, Pi-Model, UDA, in the FixMatch codebase's recipe
# (experiments/fixmatch_baselines.py), every label count x seeds 1-5. Each run is 2^20 steps:
# an accelerator job. Needs the TFDS data (tfds build cifar10).
# Usage: bash experiments/runs/fixmatch_baselines.sh [RUNS_DIR] (default runs/fixmatch_baselines)
#   METHODS, LABELS, SEEDS narrow it. Table: python -m fixmatch_jax.summarize \
#     --script=experiments/runs/fixmatch_baselines.sh --runs=RUNS_DIR
set -euo pipefail
runs=${1:-runs/fixmatch_baselines}
for method in ${METHODS:-pseudo_label mean_teacher pi_model uda}; do
  for labels in ${LABELS:-40 250 4000}; do
    for seed in ${SEEDS:-1 2 3 4 5}; do
      python -m fixmatch_jax.main \
        --config="experiments/fixmatch_baselines.py:method=${method},labels=${labels},seed=${seed}" \
        --workdir="${runs}/${method}_labels${labels}_seed${seed}"
    done
  done
done
python -m fixmatch_jax.summarize --script="$0" --runs="${runs}"
