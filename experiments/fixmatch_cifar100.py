r"""FixMatch (RA) on CIFAR-100, WRN-28-8: Sohn et al. 2020 (arXiv:2001.07685), Table 2.

  python -m fixmatch_jax.main --config=experiments/fixmatch_cifar100.py:labels=400,seed=1 \
      --workdir=runs/fixmatch_cifar100/labels400_seed1

Arguments: labels in {400, 2500, 10000}; seed in 1..5 (the paper's five folds).
Paper (error %, median of the last 20 EMA evaluations, mean +/- std over 5 folds):
  400 labels: 48.85 +/- 1.75    2500: 28.29 +/- 0.11    10000: 22.60 +/- 0.12
Weight decay 1e-3 as in the paper's text (the official code's default is 5e-4; set
--config.optim.weight_decay=5e-4 for that variant). WRN-28-8 (~23M parameters),
2^20 steps: an accelerator job.
"""

from fixmatch_jax import configs

PAPER_ERROR = {400: (48.85, 1.75), 2500: (28.29, 0.11), 10000: (22.60, 0.12)}


def get_config(arg=None):
  args = configs.parse_arg(arg, labels=400, seed=1)
  if args.labels not in PAPER_ERROR:
    raise ValueError(f"labels={args.labels}: Table 2 has {sorted(PAPER_ERROR)} for CIFAR-100.")
  return configs.fixmatch_paper("cifar100", args.labels, args.seed)
