#!/usr/bin/env bash
# The runs behind docs/ctaugment.md: FixMatch (RA) vs FixMatch (CTA) on real Fashion-MNIST,
# 40 labels, seeds 1-3, 600 steps in both arms (identical settings but the strong augmentation).
# Usage: bash experiments/runs/ctaugment.sh [RUNS_DIR]   (default runs/ctaugment)
set -euo pipefail
runs=${1:-runs/ctaugment}
for seed in 1 2 3; do
  for strong in randaugment ctaugment; do
    arm=$([ "${strong}" = randaugment ] && echo ra || echo cta)
    python -m fixmatch_jax.main \
      --config="experiments/fashion_mnist.py:algorithm=fixmatch,labels=40,seed=${seed},steps=600,strong=${strong}" \
      --workdir="${runs}/${arm}_labels40_seed${seed}"
  done
done
python scripts/ctaugment_report.py --runs="${runs}" --out=docs/ctaugment_rates.png
