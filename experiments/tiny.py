r"""A seconds-long FixMatch run on synthetic data: for tests and smoke checks.

  python -m fixmatch_jax.main --config=experiments/tiny.py --workdir=/tmp/tiny

Arguments: algorithm (fixmatch | supervised), steps, seed. Synthetic 8x8x3 images
of 4 classes, a tiny CNN, B = 8, mu = 2.
"""

from fixmatch_jax import configs


def get_config(arg=None):
  args = configs.parse_arg(arg, algorithm="fixmatch", steps=6, seed=1)
  config = configs.base_config()
  configs.apply_dataset(config, "synthetic")
  config.seed = args.seed
  config.algorithm = args.algorithm
  if args.algorithm == "supervised":
    config.algo = configs.ml_collections.ConfigDict()
  config.data.dataset_options = configs.ml_collections.ConfigDict(
      dict(num_examples=256, image_size=8, channels=3, num_classes=4))
  config.data.num_labels = 8
  config.data.batch_size = 8
  config.data.mu = 2
  config.data.eval_batch_size = 32
  config.model.width = 8
  configs.set_num_steps(config, args.steps)
  config.train.log_every_steps = 2
  config.train.eval_every_steps = 3
  config.train.checkpoint_every_steps = 3
  return config
