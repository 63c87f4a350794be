r"""A seconds-long FixMatch run on synthetic data: for tests and smoke checks.

  python -m fixmatch_jax.main --config=experiments/tiny.py --workdir=/tmp/tiny

Arguments: algorithm (fixmatch | supervised), steps, seed. Synthetic 8x8x3 images
of 4 classes, a small CNN of width 8, B = 8, mu = 2; logs every 2 steps, evaluates
and checkpoints every 3.
"""

from fixmatch_jax import configs


def get_config(arg=None):
  args = configs.parse_arg(arg, algorithm="fixmatch", steps=6, seed=1)
  config = configs.short_run(
      "synthetic", algorithm=args.algorithm, num_labels=8, seed=args.seed,
      num_steps=args.steps, batch_size=8, mu=2, eval_every_steps=3, summary_last_n=20)
  config.data.dataset_options = configs.ml_collections.ConfigDict(
      dict(num_examples=256, image_size=8, channels=3, num_classes=4))
  config.data.eval_batch_size = 32
  config.model.width = 8
  config.train.log_every_steps = 2
  config.train.checkpoint_every_steps = 3
  return config
