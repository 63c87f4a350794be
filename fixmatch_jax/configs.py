"""Base configuration and the helpers experiment files are built from.

Every hyperparameter of a run lives in one `ml_collections.ConfigDict`; step code
reads none as a literal. The defaults are the official FixMatch CIFAR-10 recipe
(Sohn et al. 2020, arXiv:2001.07685, Sec. 4 and App. B.1); experiment files in
`experiments/` override a few fields and say which paper cell they reproduce.

Experiment files take a typed argument string, as in big_vision:
`experiments/fixmatch_cifar10.py:labels=40,seed=1` calls
`get_config("labels=40,seed=1")`, which uses `parse_arg` below.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import ml_collections

# Per-dataset facts: classes, image shape, weak augmentation (recipes.md, "Weak
# augmentation") and the model and weight decay of the paper's Table 2 row.
DATASETS: dict[str, dict[str, Any]] = {
    "cifar10": dict(num_classes=10, image_shape=(32, 32, 3), flip=True, pad_fraction=0.125,
                    model="wrn28_2", weight_decay=5e-4),
    # Paper text: wd 1e-3 for CIFAR-100; the official code default is 5e-4. We follow the
    # paper and expose the value (recipes.md).
    "cifar100": dict(num_classes=100, image_shape=(32, 32, 3), flip=True, pad_fraction=0.125,
                     model="wrn28_8", weight_decay=1e-3),
    # SVHN: digits are not mirror-symmetric, so no flip; shift only.
    "svhn_cropped": dict(num_classes=10, image_shape=(32, 32, 3), flip=False,
                         pad_fraction=0.125, model="wrn28_2", weight_decay=5e-4),
    # STL-10 (96x96): flip + shift of 12 px = 0.125 of the side.
    "stl10": dict(num_classes=10, image_shape=(96, 96, 3), flip=True, pad_fraction=0.125,
                  model="wrn37_2", weight_decay=5e-4),
    "mnist": dict(num_classes=10, image_shape=(28, 28, 1), flip=False, pad_fraction=0.125,
                  model="wrn28_2", weight_decay=5e-4),
    "fashion_mnist": dict(num_classes=10, image_shape=(28, 28, 1), flip=True,
                          pad_fraction=0.125, model="wrn28_2", weight_decay=5e-4),
    "fashion_mnist_local": dict(num_classes=10, image_shape=(28, 28, 1), flip=True,
                                pad_fraction=0.125, model="wrn28_2", weight_decay=5e-4),
    "digits": dict(num_classes=10, image_shape=(8, 8, 1), flip=False, pad_fraction=0.125,
                   model="cnn_small", weight_decay=5e-4),
    # Your own arrays (sources.save_npz): class count and shape come from the file.
    "npz": dict(num_classes=None, image_shape=None, flip=False, pad_fraction=0.125,
                model="cnn_small", weight_decay=5e-4),
    "synthetic": dict(num_classes=4, image_shape=(8, 8, 3), flip=True, pad_fraction=0.125,
                      model="cnn_small", weight_decay=5e-4),
}


def base_config() -> ml_collections.ConfigDict:
  """The FixMatch (RA) CIFAR-10 recipe with every field a run reads."""
  config = ml_collections.ConfigDict()
  config.seed = 1
  config.algorithm = "fixmatch"
  # Hyperparameters of the chosen algorithm; `algorithms.get(name).default_config()`
  # documents the keys. FixMatch: Sohn et al. 2020, Eq. 2-4.
  config.algo = ml_collections.ConfigDict(dict(
      threshold=0.95, lambda_u=1.0, temperature=1.0, soft_labels=False))

  # matmul_wgrad_min_images: on CPU, the 3x3 convolutions' weight gradients as matrix
  # products (models/conv.py) when each device holds at least this many images; -1: never.
  # With train.cpu_convolutions "onednn" (the default) or "eigen" the libraries' own are
  # faster; with "xla" (YNNPACK) 240 made the B = 64 step 1.3x faster on the 2-core CPU.
  config.model = ml_collections.ConfigDict(dict(name="wrn28_2", matmul_wgrad_min_images=-1))
  # Start from the network (params, EMA params, BatchNorm statistics) of another run:
  # its workdir, or None. Parameter paths matching the regex init_from_exclude (e.g.
  # "classifier") keep their fresh initialisation. See fixmatch_jax/init_from.py.
  config.init_from = ml_collections.FieldReference(None, field_type=str)
  config.init_from_exclude = ml_collections.FieldReference(None, field_type=str)

  config.data = ml_collections.ConfigDict(dict(
      dataset="cifar10",
      data_dir=ml_collections.FieldReference(None, field_type=str),
      dataset_options=ml_collections.ConfigDict(),
      num_labels=4000,
      # STL-10 only: the official fold_indices.txt of the STL-10 binary release; line
      # `seed` is the labelled fold (needs num_labels=1000). None: class-balanced draw.
      stl10_fold_file=ml_collections.FieldReference(None, field_type=str),
      unlabelled_includes_labelled=True,
      batch_size=64,
      mu=7,
      eval_batch_size=1024,
      weak=ml_collections.ConfigDict(dict(flip=True, pad_fraction=0.125)),
      strong=ml_collections.ConfigDict(dict(
          name="randaugment", num_ops=2, prob=0.5, min_level=1, max_level=9,
          magnitude=-1, variant="fixmatch", cutout=0.5)),
      prefetch=2,
      num_parallel_calls=-1,
  ))

  num_steps = 2**20  # 1024 "epochs" of 1024 steps.
  config.optim = ml_collections.ConfigDict(dict(
      name="sgd", lr=0.03, momentum=0.9, nesterov=True, weight_decay=5e-4,
      schedule="cosine", cosine_cycles=7 / 16, warmup_steps=0, decay_steps=num_steps,
      boundaries=(), boundary_factor=0.1, ema_decay=0.999,
      adam_b1=0.9, adam_b2=0.999))

  config.train = ml_collections.ConfigDict(dict(
      num_steps=num_steps,
      log_every_steps=256,
      eval_every_steps=1024,
      checkpoint_every_steps=8192,
      keep_checkpoints=2,
      summary_last_n=20,
      # Refuse to resume in a workdir whose config.json differs (other than in
      # `train.num_steps`), unless this is set.
      allow_config_change=False,
      # Host (CPU) devices to force when running on CPU; 0 = one per core.
      cpu_devices=0,
      # CPU only, which kernels run the convolutions: "onednn" gives the wide ResNets'
      # convolutions to oneDNN (models/onednn.py; 0.74x the Eigen step time at B = 8 and
      # 0.68x at B = 64 on the project's 2-core CPU) and the rest to Eigen, falling back to
      # "eigen" where oneDNN cannot be built; "eigen" keeps XLA's convolutions out of
      # YNNPACK (0.86x its step time at B = 8: its weight gradients are slow); "xla" leaves
      # XLA's choice. Changes rounding, not results. docs/benchmarks.md, "oneDNN
      # convolutions" and "Eigen convolutions".
      cpu_convolutions="onednn",
  ))
  return config


def apply_dataset(config: ml_collections.ConfigDict, dataset: str) -> None:
  """Sets the dataset and its paper defaults (weak augmentation, model, weight decay)."""
  if dataset not in DATASETS:
    raise ValueError(f"Unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}.")
  facts = DATASETS[dataset]
  config.data.dataset = dataset
  config.data.weak.flip = facts["flip"]
  config.data.weak.pad_fraction = facts["pad_fraction"]
  config.model.name = facts["model"]
  config.optim.weight_decay = facts["weight_decay"]


def set_num_steps(config: ml_collections.ConfigDict, num_steps: int) -> None:
  """Sets the run length and the cosine schedule's horizon together."""
  config.train.num_steps = num_steps
  config.optim.decay_steps = num_steps


def average_over_last_twelfth(config: ml_collections.ConfigDict, num_steps: int) -> None:
  """EMA of the weights and BatchNorm momentum 1 - 12 / num_steps: both average over the
  last 1/12 of the run, as `short_run`'s 0.99 does over 1200 steps. For shorter runs, where
  0.99 (a ~100-step average) leaves the EMA model far behind the raw one at the end: at
  300 steps it lagged by 21 points at step 180 (experiments/fashion_mnist_family.py,
  supervised, 40 labels, seed 1: 11.6% vs 32.5%)."""
  config.model.bn_momentum = config.optim.ema_decay = 1 - 12 / num_steps


def use_ctaugment(config: ml_collections.ConfigDict) -> None:
  """Makes the strong augmentation CTAugment, as in the paper's "FixMatch (CTA)" rows.

  Sohn et al. 2020 (arXiv:2001.07685), Sec. 3.2 and App. C (see data/ctaugment.py): `depth`
  = 2 ops per strong view, bins whose normalised rate is below `threshold` = 0.8 never drawn,
  rates updated with `decay` = 0.99 from the EMA model's probe predictions, then Cutout at
  level `cutout` = 1 (side 1 + int(0.499 * side)). `lag`: the strong views of step t use the
  rates after step t - lag (exactly; see data/ctaugment_rates.py). `fill`: value of the
  pixels geometric ops bring in (0: the reference code's PIL default).
  """
  config.data.strong = ml_collections.ConfigDict(dict(
      name="ctaugment", depth=2, threshold=0.8, decay=0.99, cutout=1.0, lag=2, fill=0))


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses "labels=40,seed=1" into a ConfigDict typed by `defaults`.

  Args:
    arg: comma-separated `key=value` pairs; None or "" keeps the defaults.
    **defaults: every accepted key with its default; the default's type is the
      type a value is converted to (bool accepts true/false/1/0).

  Returns:
    A ConfigDict with all keys of `defaults`.

  Raises:
    ValueError: on an unknown key or a value that does not convert.
  """
  parsed = ml_collections.ConfigDict(defaults)
  if not arg:
    return parsed
  for item in arg.split(","):
    if "=" not in item:
      raise ValueError(f"Config argument {item!r} is not key=value (in {arg!r}).")
    key, value = (s.strip() for s in item.split("=", 1))
    if key not in defaults:
      raise ValueError(
          f"Unknown config argument {key!r}; this experiment accepts {sorted(defaults)}.")
    default = defaults[key]
    try:
      if isinstance(default, bool):
        if value.lower() not in ("true", "false", "1", "0"):
          raise ValueError(value)
        parsed[key] = value.lower() in ("true", "1")
      elif isinstance(default, int):
        parsed[key] = int(value)
      elif isinstance(default, float):
        parsed[key] = float(value)
      else:
        parsed[key] = value
    except ValueError as e:
      raise ValueError(
          f"Config argument {key}={value!r} is not a {type(default).__name__}.") from e
  return parsed


# Sections whose keys depend on a choice (model, algorithm, dataset, strong augmentation) and
# are checked where that choice is made (models.create, the algorithm, sources.load).
_FREE_FORM = ("model", "algo", "data.dataset_options", "data.strong")


def _keys(tree: Any, prefix: str = "") -> set[str]:
  out = set()
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict) and name not in _FREE_FORM:
      out |= _keys(value, f"{name}.")
    else:
      out.add(name)
  return out


def _check_known_keys(config: ml_collections.ConfigDict) -> None:
  """Unknown keys (set in an experiment file before locking) would be silently ignored."""
  known = _keys(base_config())
  problems = []
  for key in sorted(_keys(config) - known):
    close = difflib.get_close_matches(key, known, n=1)
    problems.append(f"config.{key}" + (f" (did you mean config.{close[0]}?)" if close else ""))
  from fixmatch_jax import algorithms  # noqa: PLC0415 - keeps this module free of JAX.
  expected = set(algorithms.get(config.algorithm).default_config().keys())
  if expected:  # An algorithm that documents its keys: config.algo must use only those.
    for key in sorted(set(config.get("algo", {}).keys()) - expected):
      close = difflib.get_close_matches(key, expected, n=1)
      problems.append(f"config.algo.{key}, which {config.algorithm} does not read" +
                      (f" (did you mean config.algo.{close[0]}?)" if close else ""))
  if problems:
    raise ValueError("Unknown config keys: " + "; ".join(problems) + ". Nothing reads them: "
                     "fix the spelling or remove them (valid keys: configs.base_config() and "
                     f"algorithms.get({config.algorithm!r}).default_config()).")


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks values that would otherwise fail deep inside a run; names the fix.

  Raises:
    ValueError: with the offending key, its value and the accepted range.
  """
  def require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
      raise ValueError(f"config.{key}={value!r} is invalid: expected {expected}.")

  _check_known_keys(config)
  data, optim, train = config.data, config.optim, config.train
  require(data.batch_size >= 1, "data.batch_size", data.batch_size, "an integer >= 1")
  require(data.mu >= 1, "data.mu", data.mu, "an integer >= 1 (unlabelled ratio)")
  require(data.num_labels >= 1, "data.num_labels", data.num_labels, "an integer >= 1")
  if "threshold" in config.algo:
    tau = config.algo.threshold
    require(0.0 < tau <= 1.0, "algo.threshold", tau, "a confidence in (0, 1]")
  if "temperature" in config.algo:
    require(config.algo.temperature > 0, "algo.temperature", config.algo.temperature, "> 0")
  require(0.0 <= optim.ema_decay < 1.0, "optim.ema_decay", optim.ema_decay, "in [0, 1)")
  require(optim.lr > 0 and math.isfinite(optim.lr), "optim.lr", optim.lr, "a positive number")
  require(optim.weight_decay >= 0, "optim.weight_decay", optim.weight_decay, ">= 0")
  require(train.num_steps >= 1, "train.num_steps", train.num_steps, ">= 1")
  for key in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
    require(train[key] >= 1, f"train.{key}", train[key], ">= 1")
  require(train.keep_checkpoints >= 1, "train.keep_checkpoints", train.keep_checkpoints, ">= 1")
  require(train.summary_last_n >= 1, "train.summary_last_n", train.summary_last_n, ">= 1")
  require(train.cpu_convolutions in ("onednn", "eigen", "xla"), "train.cpu_convolutions",
          train.cpu_convolutions, "'onednn', 'eigen' or 'xla'")


def fixmatch_paper(dataset: str, num_labels: int, seed: int) -> ml_collections.ConfigDict:
  """FixMatch (RA) exactly as in the paper's Table 2 for one dataset and label count.

  B = 64, mu = 7, tau = 0.95, lambda_u = 1, SGD-Nesterov 0.9, lr 0.03 with the
  7/16 cosine over 2^20 steps, EMA 0.999, evaluation every 1024 steps, and the
  dataset's weak augmentation, model and weight decay (`DATASETS`).
  """
  config = base_config()
  apply_dataset(config, dataset)
  config.seed = seed
  config.data.num_labels = num_labels
  return config


def short_run(dataset: str, *, algorithm: str, num_labels: int, seed: int, num_steps: int,
              batch_size: int, eval_every_steps: int, summary_last_n: int,
              mu: int = 7) -> ml_collections.ConfigDict:
  """The paper's recipe shrunk to a CPU run of a few thousand steps.

  Everything stays as in `base_config` (tau, lambda_u, SGD-Nesterov, cosine 7/16,
  RandAugment + Cutout) except the run length, the batch size, the evaluation
  schedule and two averaging rates: BatchNorm momentum and EMA decay 0.99 instead of
  0.999, so that neither average is still dominated by its initial value when the
  run is evaluated (0.999**2000 = 0.14).

  Args:
    dataset: a key of `DATASETS`.
    algorithm: a registered algorithm, e.g. "fixmatch" or "supervised" (same model, steps,
      labels and weak augmentation, no unlabelled loss); config.algo is its default_config().
    num_labels: labelled examples (a multiple of the number of classes).
    seed: label fold and initialisation seed.
    num_steps: training steps (also the cosine schedule's horizon).
    batch_size: labelled batch B (the unlabelled batch is mu * B).
    eval_every_steps: evaluation period.
    summary_last_n: the summary is the median of this many last EMA evaluations.
    mu: unlabelled ratio.
  """
  config = base_config()
  apply_dataset(config, dataset)
  config.seed = seed
  config.algorithm = algorithm
  from fixmatch_jax import algorithms  # noqa: PLC0415 - keeps this module free of JAX.
  # The algorithm's own hyperparameters at its paper's values ({} for supervised).
  config.algo = algorithms.get(algorithm).default_config()
  # Ramp-ups in steps follow the run's length: the FixMatch codebase's baselines warm up
  # over the first 40% of training (as do Oliver et al.'s, 200k of 500k steps); UDA's TSA
  # anneals over the whole run (algorithms/consistency.py, uda.py).
  if "rampup_end" in config.algo:
    config.algo.rampup_end = config.train.get_ref("num_steps") * 2 // 5
  if "tsa_steps" in config.algo:
    config.algo.tsa_steps = config.train.get_ref("num_steps")
  config.data.num_labels = num_labels
  config.data.batch_size = batch_size
  config.data.mu = mu
  config.model.bn_momentum = 0.99
  # XLA's own weight gradients: the CPU tables in docs/ were measured with them, and they
  # are as fast or faster at these small per-device batches.
  config.model.matmul_wgrad_min_images = -1
  # Likewise XLA's own choice of convolution kernels (YNNPACK in jaxlib 0.10).
  config.train.cpu_convolutions = "xla"
  config.optim.ema_decay = 0.99
  set_num_steps(config, num_steps)
  config.train.log_every_steps = min(100, eval_every_steps)
  config.train.eval_every_steps = eval_every_steps
  config.train.summary_last_n = summary_last_n
  config.train.checkpoint_every_steps = max(eval_every_steps, num_steps // 3)
  return config


def fashion_mnist_cpu(arg: str | None, *, steps: int, mu: int = 7, eval_every_steps: int = 100,
                      summary_last_n: int = 5) -> ml_collections.ConfigDict:
  """The Fashion-MNIST CPU protocol shared by experiments/fashion_mnist*.py.

  `short_run` on the local Fashion-MNIST files with WRN-10-1, B = 32, evaluation batches of
  1000 and a checkpoint every 1000 steps. `arg` is the experiment's argument string:
  algorithm (fixmatch), labels (40), seed (1), steps (`steps`), strong (randaugment or
  ctaugment: FixMatch (RA) or (CTA)).
  """
  args = parse_arg(arg, algorithm="fixmatch", labels=40, seed=1, steps=steps,
                   strong="randaugment")
  config = short_run(
      "fashion_mnist_local", algorithm=args.algorithm, num_labels=args.labels, seed=args.seed,
      num_steps=args.steps, batch_size=32, eval_every_steps=eval_every_steps,
      summary_last_n=summary_last_n, mu=mu)
  config.model.name = "wrn10_1"
  config.data.eval_batch_size = 1000
  config.train.checkpoint_every_steps = 1000
  if args.strong == "ctaugment":
    use_ctaugment(config)
  elif args.strong != "randaugment":
    raise ValueError(f"strong={args.strong!r}: choose randaugment or ctaugment.")
  return config
