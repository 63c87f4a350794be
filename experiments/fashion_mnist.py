r"""FixMatch vs supervised-only on real Fashion-MNIST, sized for a 2-core CPU.

  python -m fixmatch_jax.main \
      --config=experiments/fashion_mnist.py:algorithm=fixmatch,labels=40,seed=1 \
      --workdir=runs/fashion_mnist/fixmatch_labels40_seed1

Arguments: algorithm in {fixmatch, supervised}; labels (divisible by 10; 40 and 250
are the published rows, docs/fashion_mnist.md); seed (1..5 = label folds); steps.
Data: the original IDX files of Debian's `dataset-fashion-mnist` package
(`apt-get install dataset-fashion-mnist`), 60k train / 10k test, 28x28 grey.
The recipe is FixMatch's (tau 0.95, lambda_u 1, mu 7, SGD-Nesterov, cosine 7/16,
EMA 0.999, RandAugment + Cutout), shrunk to run in minutes: a small WRN, B = 32,
a few thousand steps. Supervised-only uses the same model, steps, labels and
weak augmentation, with no unlabelled loss.
"""

from fixmatch_jax import configs


def get_config(arg=None):
  args = configs.parse_arg(arg, algorithm="fixmatch", labels=40, seed=1, steps=1500)
  config = configs.base_config()
  configs.apply_dataset(config, "fashion_mnist_local")
  config.seed = args.seed
  config.algorithm = args.algorithm
  if args.algorithm == "supervised":
    config.algo = configs.ml_collections.ConfigDict()
  config.data.num_labels = args.labels
  config.data.batch_size = 32
  config.data.eval_batch_size = 1000
  config.model.name = "wrn10_1"
  # A run of thousands (not a million) of steps: faster BatchNorm and EMA averages, so
  # neither is dominated by its initial value when evaluated (0.999**2000 = 0.14).
  config.model.bn_momentum = 0.99
  config.optim.ema_decay = 0.99
  configs.set_num_steps(config, args.steps)
  config.train.log_every_steps = 100
  config.train.eval_every_steps = 100
  config.train.checkpoint_every_steps = 1000
  return config
