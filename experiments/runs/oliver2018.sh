#!/usr/bin/env bash
# Oliver et al. 2018 (arXiv:1804.09170), Table 1: CIFAR-10 4000 labels / SVHN 1000 labels,
# WRN-28-2, Adam, 500k steps (experiments/oliver2018.py): Supervised, Pi-Model, Mean Teacher,
# VAT, VAT+EntMin, Pseudo-Label. Accelerator jobs; needs the TFDS data.
# Usage: bash experiments/runs/oliver2018.sh [RUNS_DIR] (default runs/oliver2018)
#   METHODS, DATASETS, SEEDS narrow it. Table: python -m fixmatch_jax.summarize \
#     --script=experiments/runs/oliver2018.sh --runs=RUNS_DIR
set -euo pipefail
runs=${1:-runs/oliver2018}
for dataset in ${DATASETS:-cifar10 svhn_cropped}; do
  for method in ${METHODS:-supervised pi_model mean_teacher vat vat_entmin pseudo_label}; do
    for seed in ${SEEDS:-1 2 3 4 5}; do
      python -m fixmatch_jax.main \
        --config="experiments/oliver2018.py:method=${method},dataset=${dataset},seed=${seed}" \
        --workdir="${runs}/${dataset}_${method}_seed${seed}"
    done
  done
done
python -m fixmatch_jax.summarize --script="$0" --runs="${runs}"
