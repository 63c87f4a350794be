r"""FixMatch vs supervised-only on scikit-learn's bundled digits (8x8 grey), in minutes on CPU.

  python -m fixmatch_jax.main --config=experiments/digits.py:algorithm=fixmatch,labels=50,seed=1 \
      --workdir=runs/digits/fixmatch_labels50_seed1

Arguments: algorithm in {fixmatch, supervised}; labels (a multiple of 10); seed (label
fold); steps. Data: sklearn.datasets.load_digits, the first 1437 images for training
(and as the unlabelled set) and the last 360 for testing (fixmatch_jax.data.sources).
The FixMatch recipe shrunk by `configs.short_run` on the small CNN, B = 32; weak
augmentation is a 1-pixel shift (no flip: digits are not mirror-symmetric).
"""

from fixmatch_jax import configs


def get_config(arg=None):
  args = configs.parse_arg(arg, algorithm="fixmatch", labels=50, seed=1, steps=1000)
  config = configs.short_run(
      "digits", algorithm=args.algorithm, num_labels=args.labels, seed=args.seed,
      num_steps=args.steps, batch_size=32, eval_every_steps=50, summary_last_n=10)
  config.model.width = 32
  config.data.eval_batch_size = 360
  return config
