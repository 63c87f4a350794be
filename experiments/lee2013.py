r"""Lee 2013, "Pseudo-Label" (ICML 2013 WREPL workshop), Table 1: MNIST with 100, 600, 1000
and 3000 labels, the 784-5000-10 MLP with dropout, with (pl=true) and without Pseudo-Label.

  python -m fixmatch_jax.main --config=experiments/lee2013.py:labels=600,seed=1 \
      --workdir=runs/lee2013/mnist_labels600_pl_seed1

Arguments: dataset in {mnist (TFDS), fashion_mnist_local (runs here)}; labels in
{100, 600, 1000, 3000}; seed; pl (true: "+PL", false: "dropNN", supervised only);
epochs (1000) and steps_per_epoch (234 = 60000 // 256, one pass over the unlabelled set;
Lee's "epoch" is not defined more precisely): the alpha(t) breakpoints scale with them.
Paper (test error %, MNIST; paper_tables.md, "[unconfirmed]" there):
  labels   100    600   1000   3000
  dropNN  21.89  8.57   6.59   3.72
  +PL     16.15  5.03   4.30   2.80
  (+PL+DAE 10.49 4.01 3.46 2.69: needs denoising-autoencoder pre-training, not implemented.)
Recipe: alpha(t) = 0 before T1 = 100 epochs, linear to alpha_f = 3 at T2 = 600 epochs, then
3; hard argmax pseudo-labels of every unlabelled image, recomputed at every update; 32
labelled + 256 unlabelled images per step (mu = 8); no data augmentation; 1000 epochs.
MLP 784-5000-10, ReLU, dropout 0.5 on the hidden layer and 0.2 on the input (the usual rates
of Hinton et al. 2012; Lee does not state them). Deviations, documented: softmax outputs
with cross-entropy (Lee: sigmoid outputs); SGD momentum 0.9 with lr 0.01 and the 7/16
cosine (Lee: lr 1.5 x 0.998 per epoch, momentum 0.5 -> 0.99; optim.py has neither schedule;
lr 0.1 blew the supervised loss up to 19.7 after 100 steps on Fashion-MNIST).
No weight decay, no EMA (ema_decay 0: eval/acc_ema is the raw model); the summary is the
last evaluation (Lee reports the final error). Evaluation every 10 epochs.
A CPU run on Fashion-MNIST:
  --config=experiments/lee2013.py:dataset=fashion_mnist_local,labels=600,epochs=10,steps_per_epoch=100
"""

import ml_collections

from fixmatch_jax import algorithms, configs
from fixmatch_jax.algorithms import pseudo_label

LEE_TABLE = {  # labels -> (dropNN, +PL, +PL+DAE), MNIST test error %
    100: (21.89, 16.15, 10.49), 600: (8.57, 5.03, 4.01), 1000: (6.59, 4.30, 3.46),
    3000: (3.72, 2.80, 2.69),
}
# summarize.py's format, {(algorithm, labels): error %}: dropNN is "supervised", +PL is
# "pseudo_label" (MNIST numbers; a Fashion-MNIST run has no paper number).
PAPER_ERROR = {**{("supervised", n): row[0] for n, row in LEE_TABLE.items()},
               **{("pseudo_label", n): row[1] for n, row in LEE_TABLE.items()}}
T1_EPOCHS, T2_EPOCHS, ALPHA_F = 100, 600, 3.0


def get_config(arg=None):
  args = configs.parse_arg(arg, dataset="mnist", labels=600, seed=1, pl=True, epochs=1000,
                           steps_per_epoch=60000 // 256)
  if args.labels not in LEE_TABLE:
    raise ValueError(f"labels={args.labels}: Lee 2013 reports {sorted(LEE_TABLE)}.")
  if args.dataset not in ("mnist", "fashion_mnist_local"):
    raise ValueError(f"dataset={args.dataset!r}: choose mnist or fashion_mnist_local.")
  config = configs.base_config()
  configs.apply_dataset(config, args.dataset)
  config.seed = args.seed
  config.model = ml_collections.ConfigDict(dict(
      name="mlp_lee", hidden_units=(5000,), dropout_rate=0.5, input_dropout_rate=0.2))
  config.data.num_labels = args.labels
  config.data.batch_size, config.data.mu = 32, 8
  config.data.weak.flip, config.data.weak.pad_fraction = False, 0.0  # no augmentation
  config.data.eval_batch_size = 1000
  config.optim.update(dict(name="sgd", lr=0.01, momentum=0.9, nesterov=False, weight_decay=0.0,
                           ema_decay=0.0))
  configs.set_num_steps(config, args.epochs * args.steps_per_epoch)
  config.train.eval_every_steps = 10 * args.steps_per_epoch
  config.train.log_every_steps = min(256, args.steps_per_epoch)
  config.train.checkpoint_every_steps = 100 * args.steps_per_epoch
  config.train.summary_last_n = 1
  if args.pl:
    config.algorithm = "pseudo_label"
    # Breakpoints at the same fractions of the run as T1 = 100 and T2 = 600 of 1000 epochs.
    config.algo = pseudo_label.lee_config(
        t1_steps=args.epochs * args.steps_per_epoch * T1_EPOCHS // 1000,
        t2_steps=args.epochs * args.steps_per_epoch * T2_EPOCHS // 1000)
    config.algo.lambda_u = ALPHA_F
  else:
    config.algorithm = "supervised"
    config.algo = algorithms.get("supervised").default_config()
  return config
