"""Instant Gratification (Kaggle 2019): QDA + pseudo-labelling over 512 sub-datasets, in JAX.

The competition data was 512 independent problems, each drawn by scikit-learn's
`make_classification` (n_informative 33..47 of 255 features, 3 clusters per class, 5% flipped
labels). The well-known recipe: per sub-dataset keep the columns with variance > 1.5, fit
QDA(reg_param=0.5) in 11-fold stratified CV, then pseudo-label the test rows whose averaged
prediction is <= 0.01 or >= 0.99, append them with hard labels, redo feature selection and CV,
and score the out-of-fold (OOF) ROC AUC on the original train rows only. Published: CV AUC
0.965 -> 0.970 (LB 0.965 -> 0.969).

`run_jax_pipeline` runs each round as one jitted function vmapped over a batch of sub-datasets
(one compilation serves both rounds); `run_sklearn_pipeline` is the same loop in scikit-learn,
one sub-dataset and fold at a time, as the Kaggle kernels wrote it. Ragged sizes are padded:
a sub-dataset's rows are its train rows then all its test rows, with a mask of the fitted ones
(pseudo-labelled test rows in round 2); the selected features sit in a fixed-width block with a
feature mask (see `qda`).
"""

import concurrent.futures
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from fixmatch_jax.classic import qda


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Hyperparameters of the published Instant Gratification pseudo-labelling kernel."""

  n_splits: int = 11
  reg_param: float = 0.5
  variance_threshold: float = 1.5
  pseudo_label_low: float = 0.01
  pseudo_label_high: float = 0.99
  # Padded width of the selected-feature block: n_informative <= 47 and pure-noise columns
  # (variance 1) never pass the 1.5 threshold, so 48 suffices; the pipeline checks it.
  max_features: int = 48
  datasets_per_batch: int = 16  # sub-datasets per vmapped call (16 ran fastest on 2 CPU cores)
  fold_seed: int = 42
  ddof: int = 0  # QDA covariance denominator n_c - ddof, as the installed scikit-learn


def make_instant_gratification(
  num_datasets: int = 512, seed: int = 0, n_train: int = 512, n_test: int = 256,
  n_samples: int = 1024, n_features: int = 255,
) -> dict[str, np.ndarray]:
  """Draws the synthetic competition data, one `make_classification` call per sub-dataset.

  Each sub-dataset draws n_samples rows (the competition: 512 train, 256 public test, 256
  private test); the first n_train rows are train, the next n_test the (unlabelled) test rows,
  the rest are dropped. `make_classification` shuffles rows, so the split is random.

  Args:
    num_datasets: number of sub-datasets (the "wheezy-copper-turtle-magic" values).
    seed: master seed; the data is a deterministic function of it.
    n_train: train rows per sub-dataset.
    n_test: test rows per sub-dataset.
    n_samples: rows drawn per sub-dataset (>= n_train + n_test).
    n_features: columns per sub-dataset.

  Returns:
    Dict with x_train (S, n_train, D) float32, y_train (S, n_train) int32, x_test, y_test
    (hidden labels, for reporting only) and n_informative (S,).
  """
  from sklearn.datasets import make_classification  # only the data generator needs it

  rng = np.random.default_rng(seed)
  n_informative = rng.integers(33, 48, size=num_datasets)
  states = rng.integers(0, 2**31 - 1, size=num_datasets)
  xs, ys = [], []
  for informative, state in zip(n_informative, states, strict=True):
    x, y = make_classification(
      n_samples=n_samples, n_features=n_features, n_informative=int(informative),
      n_redundant=0, n_repeated=0, n_classes=2, n_clusters_per_class=3, flip_y=0.05,
      random_state=int(state),
    )
    xs.append(x.astype(np.float32))
    ys.append(y.astype(np.int32))
  x, y = np.stack(xs), np.stack(ys)
  end = n_train + n_test
  return {
    "x_train": x[:, :n_train], "y_train": y[:, :n_train],
    "x_test": x[:, n_train:end], "y_test": y[:, n_train:end],
    "n_informative": n_informative,
  }


def stratified_folds(
  random_bits: jax.Array, y: jax.Array, mask: jax.Array, n_splits: int
) -> tuple[jax.Array, jax.Array]:
  """Shuffled stratified K-fold assignment for binary labels, as `StratifiedKFold(shuffle=True)`.

  Fold sizes per class follow scikit-learn's rule exactly (deal the label-sorted rows round-robin
  into the folds, classes ordered by first appearance); which rows of a class go to which fold is
  a uniform random permutation given by `random_bits`, where scikit-learn shuffles with NumPy.

  Args:
    random_bits: (N,) uint32 random numbers, e.g. `jax.random.bits(key, (N,), jnp.uint32)`.
    y: (N,) labels in {0, 1}.
    mask: (N,) rows to split; the others get fold -1.
    n_splits: number of folds K.

  Returns:
    (fold (N,) int32, rank (N,) int32): each row's fold and its position within the fold
    (0 .. fold size - 1), which lets callers lay folds out as fixed-size blocks without a sort.
  """
  mask = jnp.asarray(mask, bool)
  second = (y != y[jnp.argmax(mask)]).astype(jnp.uint32)  # 0 for the class seen first
  # One sort on (class, random bits): masked rows last, then a random order within each class.
  sort_key = (jnp.where(mask, second, 2) << 30) | (jnp.asarray(random_bits, jnp.uint32) >> 2)
  rows = jnp.arange(y.shape[0], dtype=jnp.int32)
  position = jnp.zeros_like(rows).at[jnp.argsort(sort_key)].set(rows)  # inverse permutation
  count_first = jnp.sum(mask & (second == 0))
  rank_in_class = position - jnp.where(second == 1, count_first, 0)
  # Dealing the label-sorted list round-robin, folds 0..f receive the rows j < m with
  # j mod K <= f: dealt(m, f) of them, in closed form (cheaper to compile than a cumsum).
  folds = jnp.arange(n_splits)
  dealt = lambda m: (m // n_splits) * (folds + 1) + jnp.minimum(m % n_splits, folds + 1)
  ends_first = dealt(count_first)
  ends = jnp.where(second[:, None] == 1, dealt(mask.sum()) - ends_first, ends_first)  # (N, K)
  fold = jnp.sum(rank_in_class[:, None] >= ends, axis=1)
  # Rank within the fold: the class's rows start after those in earlier folds; the first class's
  # rows come first in each fold, then the second's.
  is_fold = folds == fold[:, None]
  before = lambda e: jnp.where(folds == 0, 0, jnp.roll(e, 1, axis=-1))  # ends of fold f - 1
  class_start = jnp.sum(jnp.where(is_fold, before(ends), 0), axis=1)
  first_in_fold = jnp.sum(jnp.where(is_fold, ends_first - before(ends_first), 0), axis=1)
  rank = rank_in_class - class_start + jnp.where(second == 1, first_in_fold, 0)
  return jnp.where(mask, fold, -1).astype(jnp.int32), jnp.where(mask, rank, -1).astype(jnp.int32)


def select_pseudo_labels(
  proba: jax.Array, low: float = 0.01, high: float = 0.99
) -> tuple[jax.Array, jax.Array]:
  """The kernel's confidence rule: keep p <= low or p >= high (both inclusive), label p >= 0.5.

  Args:
    proba: (...,) predicted probability of class 1.
    low: keep rows at or below it, labelled 0.
    high: keep rows at or above it, labelled 1.

  Returns:
    (keep mask, hard labels int32), both shaped like `proba`.
  """
  keep = (proba <= low) | (proba >= high)
  return keep, (proba >= 0.5).astype(jnp.int32)


def cross_validate_qda(
  x_train: jax.Array, x_test: jax.Array, y_train: jax.Array, test_labels: jax.Array,
  test_fit_mask: jax.Array, fold_bits: jax.Array, config: PipelineConfig,
) -> dict[str, jax.Array]:
  """One round on one sub-dataset: variance-threshold selection, K-fold QDA, pseudo-labels.

  The rows are the train rows followed by the test rows; the fitted rows are all train rows plus
  the test rows in `test_fit_mask` (pseudo-labelled, with `test_labels`). Fold k's model comes
  from the class moments of all fitted rows minus those of fold k (one pass over the rows instead
  of K). It predicts its held-out rows (OOF) and every test row.

  Args:
    x_train: (n_train, D).
    x_test: (n_test, D).
    y_train: (n_train,) labels in {0, 1}.
    test_labels: (n_test,) pseudo-labels (ignored where `test_fit_mask` is False).
    test_fit_mask: (n_test,) test rows to fit on.
    fold_bits: (n_train + n_test,) uint32 random numbers for the fold assignment.
    config: pipeline hyperparameters.

  Returns:
    Dict with oof_log_odds (n_train,) out-of-fold log-odds of class 1; test_proba (n_test,) the
    mean over the K models of P(y=1); pseudo_keep, pseudo_labels (n_test,) from `test_proba` by
    `select_pseudo_labels`; folds (n_train + n_test,) (-1: not fitted); num_selected ().
  """
  split = select_and_split(x_train, x_test, y_train, test_labels, test_fit_mask, fold_bits, config)
  return fit_and_score(split, x_train.shape[0], config)


def select_and_split(
  x_train: jax.Array, x_test: jax.Array, y_train: jax.Array, test_labels: jax.Array,
  test_fit_mask: jax.Array, fold_bits: jax.Array, config: PipelineConfig,
) -> dict[str, jax.Array]:
  """First half of `cross_validate_qda` (same arguments): feature selection, folds, moments.

  Returns:
    The selected-feature block, the held-out row table and each fold's held-out class moments:
    what `fit_and_score` needs.
  """
  n_train, n_test, n_splits = x_train.shape[0], x_test.shape[0], config.n_splits
  n_rows = n_train + n_test
  y = jnp.concatenate([y_train, test_labels]).astype(jnp.int32)
  test_fit_mask = jnp.asarray(test_fit_mask, bool)
  fit_mask = jnp.concatenate([jnp.ones(n_train, bool), test_fit_mask])
  # Feature selection on the fitted rows, from the moments of the two parts: concatenating the
  # full-width rows would copy the largest array in the pipeline.
  train_moments = qda.column_moments(x_train)
  test_moments = qda.column_moments(x_test, test_fit_mask)
  columns, feature_mask, num_selected = qda.variance_threshold_columns(
    *(a + b for a, b in zip(train_moments, test_moments, strict=True)),
    config.variance_threshold, config.max_features,
  )
  feature_mask = feature_mask.astype(jnp.float32)
  x_selected = jnp.concatenate([x_train[:, columns], x_test[:, columns]]) * feature_mask
  # Moments about the fitted rows' mean stay accurate in float32.
  centre = (fit_mask @ x_selected) / jnp.maximum(fit_mask.sum(), 1)
  x_centred = x_selected - centre * feature_mask
  folds, rank = stratified_folds(fold_bits, y, fit_mask, n_splits)
  # Held-out blocks: fold k's rows in slots [0, size_k) of row k of a (K, B) table. Fold sizes
  # differ by at most one, so B = ceil(N / K) slots hold any fold; empty slots point at row N.
  # (Unfitted rows go to fold K, out of range, and are dropped: a -1 index would wrap around.)
  block = -(-n_rows // n_splits)
  held_rows = jnp.full((n_splits, block), n_rows).at[jnp.where(folds >= 0, folds, n_splits), rank]
  held_rows = held_rows.set(jnp.arange(n_rows), mode="drop")
  in_block = held_rows < n_rows
  held_rows = jnp.minimum(held_rows, n_rows - 1)

  held_out = jax.vmap(lambda r, m: qda.class_moments(x_centred[r], y[r], 2, m))(
    held_rows, in_block
  )
  return {
    "x_selected": x_selected, "centre": centre, "feature_mask": feature_mask,
    "num_selected": num_selected, "folds": folds, "held_rows": held_rows, "in_block": in_block,
    "held_counts": held_out[0], "held_sums": held_out[1], "held_outer_sums": held_out[2],
  }


def fit_and_score(
  split: dict[str, jax.Array], n_train: int, config: PipelineConfig
) -> dict[str, jax.Array]:
  """Second half of `cross_validate_qda`: the K fold models, OOF and test scores, pseudo-labels.

  Args:
    split: the output of `select_and_split`.
    n_train: number of train rows (the first rows of `split["x_selected"]`).
    config: pipeline hyperparameters.

  Returns:
    The outputs of `cross_validate_qda`.
  """
  x_selected, centre, feature_mask = split["x_selected"], split["centre"], split["feature_mask"]
  held_rows, in_block = split["held_rows"], split["in_block"]
  held_out = (split["held_counts"], split["held_sums"], split["held_outer_sums"])
  n_splits, n_rows = config.n_splits, x_selected.shape[0]
  n_test = n_rows - n_train
  # Every fitted row is held out exactly once, so the folds' moments add up to the total.
  total = [moment.sum(axis=0) for moment in held_out]
  fit_fold = lambda counts, sums, outer: qda.qda_from_moments(
    total[0] - counts, total[1] - sums, total[2] - outer, centre=centre,
    feature_mask=feature_mask, reg_param=config.reg_param, ddof=config.ddof,
  )
  models = jax.vmap(fit_fold)(*held_out)

  # Each model scores its held-out block (OOF) and every test row.
  forms = jax.vmap(qda.qda_binary_log_odds_form)(models)
  x_held = x_selected[held_rows]  # (K, B, F)
  held_log_odds = (
    jnp.sum(jnp.einsum("kbf,kfg->kbg", x_held, forms.quadratic) * x_held, axis=-1)
    + jnp.einsum("kbf,kf->kb", x_held, forms.linear) + forms.constant[:, None]
  )
  x_test_selected = x_selected[n_train:]  # (T, F), shared by the K models: one matmul
  n_features = x_test_selected.shape[-1]
  stacked = forms.quadratic.transpose(1, 0, 2).reshape(n_features, n_splits * n_features)
  products = (x_test_selected @ stacked).reshape(n_test, n_splits, n_features)
  test_log_odds = (
    jnp.sum(products * x_test_selected[:, None, :], axis=-1).T
    + forms.linear @ x_test_selected.T + forms.constant[:, None]
  )
  # Scatter the OOF scores back; empty slots point past the end and are dropped.
  targets = jnp.where(in_block, held_rows, n_rows)
  oof = jnp.zeros(n_rows).at[targets].set(held_log_odds, mode="drop")
  test_proba = jax.nn.sigmoid(test_log_odds).mean(axis=0)
  pseudo_keep, pseudo_labels = select_pseudo_labels(
    test_proba, config.pseudo_label_low, config.pseudo_label_high
  )
  return {
    "oof_log_odds": oof[:n_train],
    "test_proba": test_proba,
    "pseudo_keep": pseudo_keep,
    "pseudo_labels": pseudo_labels,
    "folds": split["folds"],
    "num_selected": split["num_selected"],
  }


# This function is compile-bound (about 90 small kernels, then ~20 ms per call): LLVM -O1 and
# XLA's classic CPU fusion emitters cut its compile time from ~2.1 s to ~0.85 s on 2 CPU cores,
# with the same run time (matmuls, sorts and Cholesky are library calls either way).
_FAST_COMPILE = {"xla_backend_optimization_level": 1, "xla_cpu_use_fusion_emitters": False}


@functools.partial(jax.jit, static_argnames="config", compiler_options=_FAST_COMPILE)
def cross_validate_batch(
  x_train: jax.Array, x_test: jax.Array, y_train: jax.Array, test_labels: jax.Array,
  test_fit_mask: jax.Array, fold_bits: jax.Array, config: PipelineConfig,
) -> dict[str, jax.Array]:
  """`cross_validate_qda` vmapped over a leading axis of S sub-datasets (all arguments)."""
  one = functools.partial(cross_validate_qda, config=config)
  return jax.vmap(one)(x_train, x_test, y_train, test_labels, test_fit_mask, fold_bits)


@functools.lru_cache(maxsize=8)
def compiled_round(
  config: PipelineConfig, n_train: int, n_test: int, n_columns: int, x_dtype: str, y_dtype: str
):
  """A round for `config.datasets_per_batch` sub-datasets as two programs compiled side by side.

  XLA compiles a program on one thread, and compilation is the largest fixed cost of the
  pipeline (~0.85 s of ~2.5 s on 2 CPU cores). `select_and_split` and `fit_and_score` (vmapped)
  take about half of it each; the first compiles on a worker thread (XLA releases the GIL)
  while the second is traced and compiled on this one. Cached: both rounds and later calls
  with the same shapes reuse the pair.

  Returns:
    (stage_one, stage_two): compiled; stage_two(stage_one(*cross_validate_batch arguments))
    equals `cross_validate_batch`.
  """
  batch, spec = config.datasets_per_batch, jax.ShapeDtypeStruct
  arguments = (
    spec((batch, n_train, n_columns), x_dtype), spec((batch, n_test, n_columns), x_dtype),
    spec((batch, n_train), y_dtype), spec((batch, n_test), jnp.int32),
    spec((batch, n_test), jnp.bool_), spec((batch, n_train + n_test), jnp.uint32),
  )
  one = jax.jit(jax.vmap(functools.partial(select_and_split, config=config)))
  one = one.trace(*arguments).lower()
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    stage_one = pool.submit(one.compile, _FAST_COMPILE)
    split = jax.tree.map(lambda info: spec(info.shape, info.dtype), one.out_info)
    two = jax.jit(jax.vmap(functools.partial(fit_and_score, n_train=n_train, config=config)))
    stage_two = two.trace(split).lower().compile(_FAST_COMPILE)
    return stage_one.result(), stage_two


def run_jax_rounds(
  data: dict[str, np.ndarray], config: PipelineConfig = PipelineConfig()
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """Both rounds (QDA, then QDA + pseudo-labels) for every sub-dataset, in JAX.

  One vmapped round per batch of `config.datasets_per_batch` sub-datasets (the last batch
  wraps around), as the two programs of `compiled_round`, compiled once. A host loop over
  batches, not `lax.map`: XLA's loop copied the whole 400 MB input at every iteration.

  Args:
    data: arrays from `make_instant_gratification`.
    config: pipeline hyperparameters.

  Returns:
    (before, after): the `cross_validate_qda` outputs of each round, stacked over sub-datasets.
  """
  num_datasets, n_train = data["y_train"].shape
  n_test = data["x_test"].shape[1]
  batch = config.datasets_per_batch
  # Fold shuffles drawn on the host: Threefry in the jitted round cost more to compile.
  fold_bits = np.random.default_rng(config.fold_seed).integers(
    0, 2**32, size=(2, num_datasets, n_train + n_test), dtype=np.uint32
  )
  # Round one fits no test rows. Same dtypes as round two's inputs, so one compilation serves both.
  no_labels, no_rows = np.zeros((batch, n_test), np.int32), np.zeros((batch, n_test), bool)
  stage_one, stage_two = compiled_round(
    config, n_train, n_test, data["x_train"].shape[2], str(data["x_train"].dtype),
    str(data["y_train"].dtype),
  )
  cross_validate = lambda *arguments: stage_two(stage_one(*arguments))
  rounds = []
  for start in range(0, num_datasets, batch):
    # Slices (views) for full batches; the last one wraps around to keep the compiled shape.
    index = slice(start, start + batch)
    if start + batch > num_datasets:
      index = np.arange(start, start + batch) % num_datasets
    x_train, x_test = jnp.asarray(data["x_train"][index]), jnp.asarray(data["x_test"][index])
    y_train = jnp.asarray(data["y_train"][index])
    before = cross_validate(x_train, x_test, y_train, no_labels, no_rows, fold_bits[0, index])
    after = cross_validate(
      x_train, x_test, y_train, before["pseudo_labels"], before["pseudo_keep"],
      fold_bits[1, index],
    )
    rounds.append((before, after))
  stack = lambda i: {name: np.concatenate([np.asarray(r[i][name]) for r in rounds])[:num_datasets]
                     for name in rounds[0][i]}
  return stack(0), stack(1)


def run_jax_pipeline(
  data: dict[str, np.ndarray], config: PipelineConfig = PipelineConfig()
) -> dict[str, float]:
  """`run_jax_rounds` and its summary.

  Args:
    data: arrays from `make_instant_gratification` (y_test only for reporting).
    config: pipeline hyperparameters.

  Returns:
    Summary dict: cv_auc_before/after (OOF AUC over all original train rows), test_auc_before/
    after (fold-mean test predictions vs hidden labels, the "leaderboard"), pseudo-labels per
    sub-dataset and their accuracy, and the largest number of selected features.

  Raises:
    ValueError: if more features passed the threshold than `config.max_features` holds.
  """
  before, after = run_jax_rounds(data, config)
  summary = _summarise(data, before["oof_log_odds"], after["oof_log_odds"],
                       before["test_proba"], after["test_proba"], before["pseudo_keep"])
  most = summary["max_selected_features"] = int(max(before["num_selected"].max(),
                                                    after["num_selected"].max()))
  if most > config.max_features:
    raise ValueError(f"{most} features passed the variance threshold but max_features="
                     f"{config.max_features}; raise PipelineConfig.max_features.")
  return summary


def _summarise(data, oof_before, oof_after, test_before, test_after, keep):
  hard = test_before >= 0.5
  return {
    "cv_auc_before": qda.roc_auc(data["y_train"], oof_before),
    "cv_auc_after": qda.roc_auc(data["y_train"], oof_after),
    "test_auc_before": qda.roc_auc(data["y_test"], test_before),
    "test_auc_after": qda.roc_auc(data["y_test"], test_after),
    "pseudo_labels_per_dataset": float(keep.sum(axis=1).mean()),
    "pseudo_label_accuracy": float(np.sum(keep & (hard == data["y_test"])) / max(keep.sum(), 1)),
  }


def run_sklearn_pipeline(
  data: dict[str, np.ndarray], config: PipelineConfig = PipelineConfig()
) -> dict[str, float]:
  """The same two rounds in scikit-learn, one sub-dataset and fold at a time (the oracle).

  Args:
    data: arrays from `make_instant_gratification`.
    config: pipeline hyperparameters (`max_features`, `datasets_per_batch` and `ddof` unused:
      scikit-learn's own QDA defines the covariance denominator).

  Returns:
    The summary dict of `run_jax_pipeline`, minus max_selected_features.
  """
  from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
  from sklearn.feature_selection import VarianceThreshold
  from sklearn.model_selection import StratifiedKFold

  def cv_round(x_fit, y_fit, x_train, x_test):
    # Returns OOF P(y=1) for the first len(x_train) rows of x_fit and fold-mean test P(y=1).
    selector = VarianceThreshold(threshold=config.variance_threshold).fit(x_fit)
    x_fit, x_train, x_test = (selector.transform(a) for a in (x_fit, x_train, x_test))
    oof, test = np.zeros(len(x_train)), np.zeros(len(x_test))
    splitter = StratifiedKFold(n_splits=config.n_splits, shuffle=True, random_state=42)
    for fit_index, held_index in splitter.split(x_fit, y_fit):
      held_index = held_index[held_index < len(x_train)]  # pseudo-labelled rows: no OOF
      model = QuadraticDiscriminantAnalysis(reg_param=config.reg_param)
      model.fit(x_fit[fit_index], y_fit[fit_index])
      oof[held_index] = model.predict_proba(x_train[held_index])[:, 1]
      test += model.predict_proba(x_test)[:, 1] / config.n_splits
    return oof, test

  results = {name: [] for name in ("oof_before", "test_before", "oof_after", "test_after", "keep")}
  for x_train, y_train, x_test in zip(data["x_train"], data["y_train"], data["x_test"],
                                      strict=True):
    # float64, as the kernels read the competition CSVs with pandas.
    x_train, x_test = x_train.astype(np.float64), x_test.astype(np.float64)
    oof, test = cv_round(x_train, y_train, x_train, x_test)
    keep = (test <= config.pseudo_label_low) | (test >= config.pseudo_label_high)
    x_fit = np.concatenate([x_train, x_test[keep]])
    y_fit = np.concatenate([y_train, (test[keep] >= 0.5).astype(y_train.dtype)])
    oof_after, test_after = cv_round(x_fit, y_fit, x_train, x_test)
    for name, value in zip(results, (oof, test, oof_after, test_after, keep), strict=True):
      results[name].append(value)
  stacked = {name: np.stack(values) for name, values in results.items()}
  return _summarise(data, stacked["oof_before"], stacked["oof_after"], stacked["test_before"],
                    stacked["test_after"], stacked["keep"])
