#!/usr/bin/env bash
# The runs behind docs/digits.md: FixMatch vs supervised-only on scikit-learn's digits,
# 50 labels, seed 1. Usage: bash experiments/runs/digits.sh [RUNS_DIR] (default runs/digits)
set -euo pipefail
runs=${1:-runs/digits}
for algorithm in supervised fixmatch; do
  python -m fixmatch_jax.main \
    --config="experiments/digits.py:algorithm=${algorithm},labels=50,seed=1" \
    --workdir="${runs}/${algorithm}_labels50_seed1"
done
