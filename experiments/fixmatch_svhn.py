r"""FixMatch (RA) on SVHN, WRN-28-2: Sohn et al. 2020 (arXiv:2001.07685), Table 2.

  python -m fixmatch_jax.main --config=experiments/fixmatch_svhn.py:labels=40,seed=1 \
      --workdir=runs/fixmatch_svhn/labels40_seed1

Arguments: labels in {40, 250, 1000}; seed in 1..5; extra (default False): add the
531k "extra" images to the training (and so unlabelled) set, as TorchSSL does; the
official code builds both variants.
Paper (error %, median of the last 20 EMA evaluations, mean +/- std over 5 folds):
  40 labels: 3.96 +/- 2.17    250: 2.48 +/- 0.38    1000: 2.28 +/- 0.11
Weak augmentation: shift only (no flip). 2^20 steps: an accelerator job.
"""

from fixmatch_jax import configs

PAPER_ERROR = {40: (3.96, 2.17), 250: (2.48, 0.38), 1000: (2.28, 0.11)}


def get_config(arg=None):
  args = configs.parse_arg(arg, labels=40, seed=1, extra=False)
  if args.labels not in PAPER_ERROR:
    raise ValueError(f"labels={args.labels}: Table 2 has {sorted(PAPER_ERROR)} for SVHN.")
  config = configs.fixmatch_paper("svhn_cropped", args.labels, args.seed)
  config.data.dataset_options.extra = args.extra
  return config
