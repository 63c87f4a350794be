r"""FixMatch vs supervised-only on real Fashion-MNIST, sized for a 2-core CPU.

  python -m fixmatch_jax.main \
      --config=experiments/fashion_mnist.py:algorithm=fixmatch,labels=40,seed=1 \
      --workdir=runs/fashion_mnist/fixmatch_labels40_seed1

Arguments: algorithm in {fixmatch, supervised}; labels (divisible by 10; 40 and 250
are the published rows, docs/fashion_mnist.md); seed (1..5 = label folds); steps;
strong in {randaugment, ctaugment} (FixMatch (RA) or (CTA); docs/ctaugment.md).
Data: the original IDX files of Debian's `dataset-fashion-mnist` package
(`apt-get install dataset-fashion-mnist`), 60k train / 10k test, 28x28 grey.
The recipe is FixMatch's (tau 0.95, lambda_u 1, mu 7, SGD-Nesterov, cosine 7/16,
RandAugment + Cutout), shrunk to run in minutes (`configs.short_run`): WRN-10-1,
B = 32, 1200 steps. Supervised-only uses the same model, steps, labels and weak
augmentation, with no unlabelled loss. The paper's protocol (median of the last 20
of 1024 evaluations) becomes the median of the last 5 evaluations, every 100 steps
(the last 40% of training).
"""

from fixmatch_jax import configs


def get_config(arg=None):
  return configs.fashion_mnist_cpu(arg, steps=1200)
