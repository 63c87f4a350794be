r"""The pseudo-labelling family side by side on real Fashion-MNIST, sized for a 2-core CPU.

  python -m fixmatch_jax.main \
      --config=experiments/fashion_mnist_family.py:algorithm=mean_teacher,labels=40,seed=1 \
      --workdir=runs/fashion_mnist_family/mean_teacher_labels40_seed1

The table of docs/fashion_mnist_family.md (all 60 commands: experiments/runs/
fashion_mnist_family.sh). Arguments: algorithm (any registered one; the table has
supervised, pseudo_label, entmin, pi_model, mean_teacher, uda, arazo, fixmatch, flexmatch,
freematch), labels (40 or 250), seed (1..3 = label folds and initialisation), steps (300).

One protocol for every method, so that only the algorithm differs: WRN-10-1, B = 32
labelled + mu * B = 96 unlabelled images per step, SGD-Nesterov lr 0.03 with FixMatch's
cosine, weight decay 5e-4, EMA and BatchNorm momentum 1 - 12/steps = 0.96 (an average over
the last 1/12 of the run, as 0.99 is for the 1200 steps of `configs.short_run`), weak
augmentation flip + translate, strong RandAugment + Cutout (for the methods with a strong
view), 300 steps (the length of experiments/self_training.py's stages), one evaluation of
the 10k test images every 60 steps; the number per run is the median of the last 3 EMA
evaluations (steps 180, 240, 300: the last 40% of training, as in
experiments/fashion_mnist.py).

Each algorithm keeps its paper's hyperparameters (`algorithms.get(name).default_config()`),
with its schedules rescaled to the run as `configs.short_run` does: the baselines' ramp-up
ends at 40% of training (120 steps), UDA's TSA anneals over the run. Arazo et al.'s
labelled-only warm-up is their 10 epochs of the labelled set, ceil(10 * labels / 32) steps
(13 at 40 labels, 79 at 250). FreeMatch's self-adaptive threshold is an EMA of the model's
confidence with momentum 0.999; like the EMA of the weights and BatchNorm's, it averages
over 1/12 of the run here (0.96), or it would still sit near its initial value
(0.999**300 = 0.74) when the run ends.

This is a short-budget comparison, ~1/4 of experiments/fashion_mnist.py's FixMatch run and
~1/3000 of the paper's: methods whose unlabelled loss ramps up slowly (Pi-model, Mean
Teacher, Pseudo-Label) are judged after few full-weight steps. It ranks the methods at
this budget; it does not reproduce the papers' orderings (their configs:
experiments/fixmatch_baselines.py, oliver2018.py, arazo_cifar10.py, flexmatch_cifar10.py,
freematch_cifar10.py).
"""

import math

from fixmatch_jax import configs

METHODS = ("supervised", "pseudo_label", "entmin", "pi_model", "mean_teacher", "uda", "arazo",
           "fixmatch", "flexmatch", "freematch")
ARAZO_WARMUP_EPOCHS = 10  # Arazo et al. 2019, Sec. 4.1: 10 epochs on the labelled data first.


def get_config(arg=None):
  args = configs.parse_arg(arg, algorithm="fixmatch", labels=40, seed=1, steps=300)
  config = configs.short_run(
      "fashion_mnist_local", algorithm=args.algorithm, num_labels=args.labels, seed=args.seed,
      num_steps=args.steps, batch_size=32, mu=3, eval_every_steps=60, summary_last_n=3)
  config.model.name = "wrn10_1"
  configs.average_over_last_twelfth(config, args.steps)  # Mean Teacher's teacher too.
  config.data.eval_batch_size = 1000
  config.train.checkpoint_every_steps = 150
  if args.algorithm == "arazo":
    config.algo.warmup_steps = math.ceil(
        ARAZO_WARMUP_EPOCHS * args.labels / config.data.batch_size)
  if args.algorithm == "freematch":
    config.algo.ema_momentum = config.optim.ema_decay
  return config
