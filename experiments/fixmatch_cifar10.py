r"""FixMatch (RA) on CIFAR-10, WRN-28-2: Sohn et al. 2020 (arXiv:2001.07685), Table 2.

  python -m fixmatch_jax.main --config=experiments/fixmatch_cifar10.py:labels=40,seed=1 \
      --workdir=runs/fixmatch_cifar10/labels40_seed1

Arguments: labels in {40, 250, 4000}; seed in 1..5 (the paper's five folds).
Paper (error %, median of the last 20 EMA evaluations, mean +/- std over 5 folds):
  40 labels: 13.81 +/- 3.37    250: 5.07 +/- 0.65    4000: 4.26 +/- 0.05
Run length: 2^20 steps of 64 labelled + 448 unlabelled images. Needs an accelerator
and the TFDS cifar10 data (`tfds build cifar10` on a machine with internet); on the
2-core CPU of our CI machine one step takes tens of seconds (docs/benchmarks.md), so
the full run is not feasible there.
"""

from fixmatch_jax import configs

PAPER_ERROR = {40: (13.81, 3.37), 250: (5.07, 0.65), 4000: (4.26, 0.05)}


def get_config(arg=None):
  args = configs.parse_arg(arg, labels=40, seed=1)
  if args.labels not in PAPER_ERROR:
    raise ValueError(f"labels={args.labels}: Table 2 has {sorted(PAPER_ERROR)} for CIFAR-10.")
  return configs.fixmatch_paper("cifar10", args.labels, args.seed)
