#!/usr/bin/env bash
# The runs behind docs/self_training.md: Fashion-MNIST, 40 labels, seeds 1-3, the cheap CPU
# protocol of experiments/self_training.py (WRN-10-1, B=32, mu=3, 300 steps per stage).
# Per seed: supervised teacher; FixMatch from scratch; rotation pre-training, then FixMatch
# from it (init_from), and FixMatch from scratch for 600 steps (the same number of steps as
# pre-training + FixMatch); 3 Noisy Student rounds over the teacher; label propagation on the
# teacher's embeddings, then 2 epochs of deep label propagation. One run at a time, niced;
# a stage whose summary exists is skipped, and a killed stage resumes where it stopped.
# Usage: bash experiments/runs/self_training.sh [RUNS_DIR] [SEEDS]
#        (default runs/self_training, "1 2 3"); CONTROL_SEEDS="1" runs the 600-step
#        FixMatch control for seed 1 only.
set -uo pipefail
runs=${1:-runs/self_training}
seeds=${2:-1 2 3}
config=experiments/self_training.py

train() {  # train <workdir> <config arg> [overrides...]
  local workdir=$1 arg=$2
  shift 2
  [ -f "$workdir/summary.json" ] && return 0
  mkdir -p "$workdir"
  nice -n 5 python -m fixmatch_jax.main --config="$config:$arg" --workdir="$workdir" "$@" \
    >> "$workdir.log" 2>&1 || echo "FAILED: $workdir (see $workdir.log)"
}

for seed in $seeds; do
  dir=$runs/seed$seed
  train "$dir/teacher" "stage=teacher,seed=$seed"
  train "$dir/fixmatch" "stage=fixmatch,seed=$seed"
  train "$dir/rotation" "stage=rotation,seed=$seed"
  train "$dir/fixmatch_from_rotation" "stage=fixmatch,seed=$seed" \
    --config.init_from="$dir/rotation" --config.init_from_exclude=classifier
  # FixMatch from scratch with the step count of rotation + FixMatch (equal-compute control),
  # for the seeds in CONTROL_SEEDS (default: all).
  case " ${CONTROL_SEEDS:-$seeds} " in
    *" $seed "*) train "$dir/fixmatch_600" "stage=fixmatch,seed=$seed,steps=600" ;;
  esac
  for driver in deep_lp_driver rounds; do
    [ -f "$dir/$driver/results.json" ] && continue
    mkdir -p "$dir/$driver"
    # One XLA device: with two fake CPU devices the student step (a gather from the
    # replicated pseudo-label table by sharded indices) hung once in an XLA:CPU all-to-all
    # rendezvous on the overloaded machine (2026-11-25); one device has no collectives.
    XLA_FLAGS="--xla_force_host_platform_device_count=1" \
      nice -n 5 python scripts/self_training.py --config="$config:stage=$driver,seed=$seed" \
        --teacher="$dir/teacher" --workdir="$dir/$driver" >> "$dir/$driver.log" 2>&1 \
        || echo "FAILED: $dir/$driver (see $dir/$driver.log)"
  done
done
python scripts/self_training_report.py --runs="$runs"
