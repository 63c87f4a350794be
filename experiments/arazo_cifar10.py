r"""Soft pseudo-labels + mixup on CIFAR-10: Arazo et al. 2019 (arXiv:1908.02983).

  python -m fixmatch_jax.main --config=experiments/arazo_cifar10.py:labels=500,seed=1 \
      --workdir=runs/arazo_cifar10/labels500_seed1

Arguments: labels in {500, 1000, 4000}; seed (label fold and initialisation).
Paper (error %, 13-layer CNN, shared/reference/paper_tables.md):
  500 labels: 8.80    1000: 6.85    4000: 5.97
The recipe (recipes.md, "Arazo et al. 2019", and the official run scripts): soft
pseudo-labels refreshed every epoch from predictions on non-augmented images; mixup with
alpha = 1 over labelled + unlabelled; 0.8 R_A + 0.4 R_H; at least 16 labelled images per batch;
10 warm-up epochs on the labelled data; SGD momentum 0.9 (no Nesterov), lr 0.1 divided by 10
after 250 and 350 of 400 epochs, wd 1e-4, dropout 0.1; flip + crop after a 2-pixel pad.
An epoch is one pass over the unlabelled images, as with the official two-stream sampler.

Where this config departs from the paper, and why:
- Batch: 16 labelled + 80 unlabelled = 96 images (paper: 16 + 84 = 100): the pipeline's
  unlabelled batch is an integer mu times the labelled one.
- Model: the paper's 13-layer CNN with dropout 0.1 after both max-pools ("cnn13"), without
  its weight normalisation and conv biases (models/cnn13.py).
- No colour jitter in the augmentation (the official "jitter" option adds it).
- No EMA (ema_decay 0, so "eval/acc_ema" is the raw model), as in the paper; the summary is
  the median of the last 20 per-epoch evaluations, which fall in the final lr phase.
- Warm-up epochs are counted in passes over the labelled set with 16 per step.
Run length: 2.3e5-2.5e5 steps of 96 images (plus a non-augmented pass over the 80); needs an
accelerator and the TFDS cifar10 data.
"""

import math

import ml_collections

from fixmatch_jax import configs
from fixmatch_jax.algorithms import arazo

PAPER_ERROR = {500: 8.80, 1000: 6.85, 4000: 5.97}
NUM_TRAIN = 50000
LABELLED_BATCH, MU = 16, 5
EPOCHS, LR_DROP_EPOCHS, WARMUP_EPOCHS = 400, (250, 350), 10


def get_config(arg=None):
  args = configs.parse_arg(arg, labels=500, seed=1)
  if args.labels not in PAPER_ERROR:
    raise ValueError(f"labels={args.labels}: Arazo et al. report {sorted(PAPER_ERROR)} for "
                     "CIFAR-10.")
  config = configs.base_config()
  configs.apply_dataset(config, "cifar10")
  config.seed = args.seed
  config.algorithm = "arazo"
  config.data.num_labels = args.labels
  config.data.unlabelled_includes_labelled = False
  config.data.batch_size, config.data.mu = LABELLED_BATCH, MU
  config.data.weak.pad_fraction = 2 / 32

  steps_per_epoch = (NUM_TRAIN - args.labels) // (MU * LABELLED_BATCH)
  warmup_steps = math.ceil(WARMUP_EPOCHS * args.labels / LABELLED_BATCH)
  config.algo = arazo.default_config()
  config.algo.warmup_steps = warmup_steps

  config.model = ml_collections.ConfigDict(dict(name="cnn13", dropout_rate=0.1))
  config.optim.update(dict(
      lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4, schedule="step",
      boundaries=tuple(warmup_steps + e * steps_per_epoch for e in LR_DROP_EPOCHS),
      boundary_factor=0.1, ema_decay=0.0))
  configs.set_num_steps(config, warmup_steps + EPOCHS * steps_per_epoch)
  config.train.eval_every_steps = steps_per_epoch
  config.train.checkpoint_every_steps = 10 * steps_per_epoch
  config.train.summary_last_n = 20
  return config
