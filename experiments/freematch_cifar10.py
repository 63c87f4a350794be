r"""FreeMatch on CIFAR-10, WRN-28-2: Wang et al. 2023 (arXiv:2205.07246).

  python -m fixmatch_jax.main --config=experiments/freematch_cifar10.py:labels=40,seed=1 \
      --workdir=runs/freematch_cifar10/labels40_seed1

Arguments: labels in {40, 250, 4000} (the CIFAR-10 cells of FixMatch's and FlexMatch's
tables); seed (label fold and initialisation); state_init ("paper": tau, p~, h~ start at
1/C as the paper writes; "usb": 1.0, as USB's code does).
The recipe is FixMatch's as in USB's classic-CV configs (config/classic_cv/freematch/
freematch_cifar10_{40,250,4000}_0.yaml): B = 64, mu = 7, SGD-Nesterov 0.9, lr 0.03 with the
7/16 cosine over 2^20 steps, wd 5e-4, EMA 0.999, WRN-28-2, hard pseudo-labels; FreeMatch's
own values: EMA momentum lambda = 0.999, w_u = 1, fairness weight w_f = 0.001.
Published numbers: the project's reference (shared/reference/paper_tables.md) has none for
FreeMatch, so none is given here; report ours without a paper column.
Run length: 2^20 steps of 64 + 2 x 448 images; needs an accelerator and the TFDS cifar10 data.
"""

from fixmatch_jax import configs
from fixmatch_jax.algorithms import freematch

LABEL_COUNTS = (40, 250, 4000)


def get_config(arg=None):
  args = configs.parse_arg(arg, labels=40, seed=1, state_init="paper")
  if args.labels not in LABEL_COUNTS:
    raise ValueError(f"labels={args.labels}: choose one of {LABEL_COUNTS} for CIFAR-10.")
  config = configs.fixmatch_paper("cifar10", args.labels, args.seed)
  config.algorithm = "freematch"
  config.algo = freematch.default_config()
  config.algo.state_init = args.state_init
  return config
