r"""FixMatch (CTA), every cell of Sohn et al. 2020 (arXiv:2001.07685), Table 2.

  python -m fixmatch_jax.main \
      --config=experiments/fixmatch_cta.py:dataset=cifar10,labels=40,seed=1 \
      --workdir=runs/fixmatch_cta/cifar10_labels40_seed1

Arguments: dataset in {cifar10, cifar100, svhn, stl10}; labels (the cells below); seed in
1..5 (the paper's five folds); extra (SVHN only, default False: add the 531k "extra" images,
as in `fixmatch_svhn.py`). Everything is the RA recipe of the matching `fixmatch_<dataset>.py`
(B = 64, mu = 7, tau = 0.95, lambda_u = 1, SGD-Nesterov, lr 0.03 cosine 7/16 over 2^20 steps,
EMA 0.999, the dataset's weak augmentation, model and weight decay) with the strong
augmentation replaced by CTAugment (`configs.use_ctaugment`: 2 ops, threshold 0.8, decay
0.99, probe updates from the EMA model every step, Cutout; docs/ctaugment.md).

Paper, FixMatch (CTA) (error %, median of the last 20 EMA evaluations, mean +/- std over
5 folds):
  CIFAR-10 (WRN-28-2)    40 labels: 11.39 +/- 3.35   250: 5.07 +/- 0.33   4000: 4.31 +/- 0.15
  CIFAR-100 (WRN-28-8)  400 labels: 49.95 +/- 3.01  2500: 28.64 +/- 0.24  10000: 23.18 +/- 0.11
  SVHN (WRN-28-2)        40 labels:  7.65 +/- 7.65   250: 2.64 +/- 0.64   1000: 2.36 +/- 0.19
  STL-10 (WRN-37-2)    1000 labels:  5.17 +/- 0.63
Run length: 2^20 steps, an accelerator job per cell (the RA files give the data set-up:
TFDS cifar10/cifar100/svhn_cropped/stl10, STL-10's fold file).
"""

from fixmatch_jax import configs

# (dataset, labels) -> (error %, std) of the FixMatch (CTA) column of Table 2.
PAPER_ERROR = {
    ("cifar10", 40): (11.39, 3.35), ("cifar10", 250): (5.07, 0.33),
    ("cifar10", 4000): (4.31, 0.15),
    ("cifar100", 400): (49.95, 3.01), ("cifar100", 2500): (28.64, 0.24),
    ("cifar100", 10000): (23.18, 0.11),
    ("svhn", 40): (7.65, 7.65), ("svhn", 250): (2.64, 0.64), ("svhn", 1000): (2.36, 0.19),
    ("stl10", 1000): (5.17, 0.63),
}
_TFDS_NAME = {"cifar10": "cifar10", "cifar100": "cifar100", "svhn": "svhn_cropped",
              "stl10": "stl10"}


def get_config(arg=None):
  args = configs.parse_arg(arg, dataset="cifar10", labels=40, seed=1, extra=False)
  if args.dataset not in _TFDS_NAME:
    raise ValueError(f"dataset={args.dataset!r}: Table 2 has {sorted(_TFDS_NAME)}.")
  cells = sorted(labels for dataset, labels in PAPER_ERROR if dataset == args.dataset)
  if (args.dataset, args.labels) not in PAPER_ERROR:
    raise ValueError(f"labels={args.labels}: Table 2 has {cells} for {args.dataset}.")
  if args.extra and args.dataset != "svhn":
    raise ValueError("extra=True is for dataset=svhn only (SVHN's 531k extra images).")
  config = configs.fixmatch_paper(_TFDS_NAME[args.dataset], args.labels, args.seed)
  if args.dataset == "svhn":
    config.data.dataset_options.extra = args.extra
  if args.dataset == "stl10":
    # The unlabelled pool: the 5k labelled training images plus the 100k unlabelled ones.
    config.data.dataset_options.include_unlabelled = True
  configs.use_ctaugment(config)
  return config
