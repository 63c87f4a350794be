r"""Self-training, label propagation and pre-training on Fashion-MNIST, sized for a 2-core CPU.

One cheap protocol shared by every stage of docs/self_training.md (commands in
experiments/runs/self_training.sh):

  python -m fixmatch_jax.main \
      --config=experiments/self_training.py:stage=fixmatch,seed=1 \
      --workdir=runs/self_training/seed1/fixmatch

Arguments: stage, labels (40), seed (1..3 = label folds), steps (300); for the drivers
(stage=rounds: fixmatch_jax/self_training.py, stage=deep_lp_driver:
fixmatch_jax/deep_label_propagation.py, run by scripts/self_training.py): rounds (3),
selection (topk | threshold), per_class (3000 = half of each class), threshold (0.9),
soft (false), epochs (2: deep label propagation splits its `steps` into 2 epochs of 150),
lp_nodes (20000 training images in the propagation graph; 0 = all 60k).
Stages (each a `train_and_evaluate` run; the drivers in fixmatch_jax/self_training.py and
fixmatch_jax/label_propagation.py fill in `algo.targets_file` and `init_from`):
  teacher     supervised on the labels only (round 0 of self-training)
  student     Noisy Student round: labels + the teacher's pseudo-labels, strong augmentation
              (RandAugment + Cutout) and dropout 0.3 on the student (Xie et al. 2020)
  deep_lp     one epoch of deep label propagation's stage 2 (Iscen et al. 2019): labels +
              weighted propagated labels, weak augmentation
  rotation    self-supervised rotation prediction (Gidaris et al. 2018) on the unlabelled set
  fixmatch    FixMatch (Sohn et al. 2020); with init_from=<rotation workdir> it starts from
              the pre-trained network

Every stage: WRN-10-1 (as experiments/fashion_mnist.py), B = 32 labelled, mu = 3 (96
unlabelled), SGD-Nesterov lr 0.03 with the FixMatch cosine, EMA and BatchNorm momentum
1 - 12/steps (0.96 at 300 steps; 0.99 until 2026-12-04, see docs/self_training.md),
300 steps, one test evaluation at the end (10k images take ~1 min on the loaded 2-core
machine); the reported
number is the EMA model's test accuracy at the last step (summary_last_n = 1). This is
~1/4 of experiments/fashion_mnist.py's run (1200 steps, mu = 7): a protocol to compare
stages with each other, not the paper's.
"""

from fixmatch_jax import configs

STAGES = {"teacher": "supervised", "student": "noisy_student", "deep_lp": "student",
          "rotation": "rotation", "fixmatch": "fixmatch"}


DRIVERS = ("rounds", "deep_lp_driver")


def get_config(arg=None):
  args = configs.parse_arg(arg, stage="teacher", labels=40, seed=1, steps=300, rounds=3,
                           selection="topk", threshold=0.9, per_class=3000, soft=False,
                           epochs=2, lp_nodes=20000)
  if args.stage == "rounds":
    return _rounds_config(args)
  if args.stage == "deep_lp_driver":
    return _deep_lp_config(args)
  if args.stage not in STAGES:
    raise ValueError(f"Unknown stage {args.stage!r}; choose one of "
                     f"{sorted(STAGES) + list(DRIVERS)}.")
  algorithm = STAGES[args.stage]
  config = configs.short_run(
      "fashion_mnist_local", algorithm="fixmatch" if algorithm == "fixmatch" else "supervised",
      num_labels=args.labels, seed=args.seed, num_steps=args.steps, batch_size=32, mu=3,
      eval_every_steps=args.steps, summary_last_n=1)
  config.model.name = "wrn10_1"
  configs.average_over_last_twelfth(config, args.steps)  # 0.96 at 300 steps.
  config.data.eval_batch_size = 1000
  config.train.checkpoint_every_steps = 100
  if algorithm not in ("fixmatch", "supervised"):
    from fixmatch_jax import algorithms  # noqa: PLC0415 - only these stages need the registry.
    config.algorithm = algorithm
    config.algo = algorithms.get(algorithm).default_config()
  if args.stage == "student":
    config.model.dropout_rate = 0.3
  return config


def _stage(args, stage: str, **overrides):
  return get_config(",".join([f"stage={stage}", f"labels={args.labels}", f"seed={args.seed}"] +
                             [f"{k}={v}" for k, v in overrides.items()]))


def _rounds_config(args):
  """Driver config of fixmatch_jax.self_training.run_rounds: teacher + `rounds` students."""
  return configs.ml_collections.ConfigDict(dict(
      teacher=_stage(args, "teacher", steps=args.steps),
      student=_stage(args, "student", steps=args.steps),
      rounds=args.rounds,
      selection=dict(rule=args.selection, threshold=args.threshold, per_class=args.per_class,
                     soft_labels=args.soft),
      predict_batch_size=1000))


def _deep_lp_config(args):
  """Driver config of fixmatch_jax.deep_label_propagation.run: `steps` split into epochs."""
  return configs.ml_collections.ConfigDict(dict(
      teacher=_stage(args, "teacher", steps=args.steps),
      student=_stage(args, "deep_lp", steps=args.steps // args.epochs),
      epochs=args.epochs,
      # The graph: the 40 labelled + 19,960 random other training images (not all 60k: the
      # exact kNN over 60k takes ~7 min on the loaded 2-core machine, docs/self_training.md).
      lp=dict(k=50, gamma=3.0, alpha=0.99, num_iterations=20, block_size=1024,
              max_nodes=args.lp_nodes),
      predict_batch_size=1000))
