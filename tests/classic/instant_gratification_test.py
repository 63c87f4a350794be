"""Tests for fixmatch_jax.classic.instant_gratification.

Oracles: scikit-learn's StratifiedKFold (fold sizes), a hand-checked pseudo-label rule, a
per-sub-dataset loop (for the vmapped batch), and scikit-learn's VarianceThreshold + QDA run on
the very folds the JAX round drew (for the whole round, both before and after pseudo-labelling).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
from sklearn.feature_selection import VarianceThreshold
from sklearn.model_selection import StratifiedKFold

from fixmatch_jax.classic import instant_gratification as ig

# Small sub-datasets: 3 of them, 128 train + 64 test rows, 60 columns (33..47 informative).
SMALL = dict(num_datasets=3, seed=5, n_train=128, n_test=64, n_samples=256, n_features=60)
CONFIG = ig.PipelineConfig(datasets_per_batch=3)


@pytest.fixture(scope="module")
def data():
  return ig.make_instant_gratification(**SMALL)


@pytest.fixture(scope="module")
def rounds(data):
  """Round one and round two (on round one's pseudo-labels) for the small sub-datasets."""
  bits = np.random.default_rng(0).integers(0, 2**32, size=(2, 3, 192), dtype=np.uint32)
  no_test = np.zeros((3, 64), np.int32)
  before = ig.cross_validate_batch(
    data["x_train"], data["x_test"], data["y_train"], no_test, no_test.astype(bool), bits[0],
    CONFIG,
  )
  after = ig.cross_validate_batch(
    data["x_train"], data["x_test"], data["y_train"], before["pseudo_labels"],
    before["pseudo_keep"], bits[1], CONFIG,
  )
  inputs = [(no_test, no_test.astype(bool), bits[0]),
            (before["pseudo_labels"], before["pseudo_keep"], bits[1])]
  return [jax.tree.map(np.asarray, r) for r in (before, after)], inputs


def test_generator_is_deterministic_and_shaped(data):
  again = ig.make_instant_gratification(**SMALL)
  for name in data:
    np.testing.assert_array_equal(data[name], again[name])
  other = ig.make_instant_gratification(**{**SMALL, "seed": 6})
  assert not np.array_equal(data["x_train"], other["x_train"])
  assert data["x_train"].shape == (3, 128, 60) and data["x_test"].shape == (3, 64, 60)
  assert data["x_train"].dtype == np.float32 and data["y_train"].dtype == np.int32
  assert np.all((data["n_informative"] >= 33) & (data["n_informative"] <= 47))
  assert 0.35 < data["y_train"].mean() < 0.65


def test_pseudo_label_rule_boundaries_are_inclusive():
  proba = jnp.array([0.0, 0.005, 0.01, 0.0101, 0.5, 0.9899, 0.99, 0.995, 1.0], jnp.float32)
  keep, labels = ig.select_pseudo_labels(proba, 0.01, 0.99)
  np.testing.assert_array_equal(keep, [1, 1, 1, 0, 0, 0, 1, 1, 1])
  np.testing.assert_array_equal(labels, [0, 0, 0, 0, 1, 1, 1, 1, 1])


@pytest.mark.parametrize("n, n_splits, seed", [(100, 11, 0), (57, 5, 1), (300, 11, 2), (40, 3, 3)])
def test_stratified_fold_sizes_match_sklearn(n, n_splits, seed):
  rng = np.random.default_rng(seed)
  y = (rng.uniform(size=n) < rng.uniform(0.2, 0.8)).astype(np.int32)
  mask = rng.uniform(size=n) < 0.8
  bits = rng.integers(0, 2**32, size=n, dtype=np.uint32)
  fold, rank = map(np.asarray, ig.stratified_folds(bits, y, mask, n_splits))
  class_counts = lambda labels: tuple(np.bincount(labels, minlength=2))
  expected = sorted(class_counts(y[mask][held])
                    for _, held in StratifiedKFold(n_splits).split(y[mask], y[mask]))
  assert sorted(class_counts(y[mask & (fold == k)]) for k in range(n_splits)) == expected
  assert np.all(fold[~mask] == -1) and np.all(rank[~mask] == -1)
  for k in range(n_splits):  # ranks enumerate each fold
    np.testing.assert_array_equal(np.sort(rank[fold == k]), np.arange(np.sum(fold == k)))
  again = ig.stratified_folds(bits, y, mask, n_splits)
  np.testing.assert_array_equal(again[0], fold)


def test_vmapped_batch_equals_per_dataset_loop(data, rounds):
  (before, after), inputs = rounds
  one = jax.jit(functools.partial(ig.cross_validate_qda, config=CONFIG))
  for result, (test_labels, test_fit, bits) in zip((before, after), inputs, strict=True):
    for i in range(3):
      single = one(data["x_train"][i], data["x_test"][i], data["y_train"][i], test_labels[i],
                   test_fit[i], bits[i])
      for name, value in single.items():
        # Batched and single matmuls round differently (log-odds reach ~100): float32 tolerances.
        np.testing.assert_allclose(value, result[name][i], rtol=1e-5, atol=1e-4, err_msg=name)


def test_round_matches_sklearn_on_the_same_folds(data, rounds):
  (before, after), _ = rounds
  for result, pseudo in ((before, None), (after, before)):
    for i in range(3):
      x = np.concatenate([data["x_train"][i], data["x_test"][i]]).astype(np.float64)
      y = np.concatenate([data["y_train"][i], np.zeros(64, np.int32)])
      fitted = np.arange(192) < 128
      if pseudo is not None:  # round two also fits the pseudo-labelled test rows
        y[128:], fitted[128:] = pseudo["pseudo_labels"][i], pseudo["pseudo_keep"][i]
      folds = result["folds"][i]
      np.testing.assert_array_equal(folds >= 0, fitted)
      selector = VarianceThreshold(CONFIG.variance_threshold).fit(x[fitted])
      assert result["num_selected"][i] == selector.get_support().sum()
      x = selector.transform(x)
      oof, test = np.zeros(128), np.zeros(64)
      for k in range(CONFIG.n_splits):
        train = fitted & (folds != k)
        model = QuadraticDiscriminantAnalysis(reg_param=CONFIG.reg_param).fit(x[train], y[train])
        held = np.flatnonzero(folds[:128] == k)
        oof[held] = model.predict_proba(x[held])[:, 1]
        test += model.predict_proba(x[128:])[:, 1] / CONFIG.n_splits
      np.testing.assert_allclose(jax.nn.sigmoid(result["oof_log_odds"][i]), oof, atol=1e-4)
      np.testing.assert_allclose(result["test_proba"][i], test, atol=1e-4)
  # Pseudo-labels: the rule applied to round one's test predictions.
  keep, labels = ig.select_pseudo_labels(before["test_proba"])
  np.testing.assert_array_equal(before["pseudo_keep"], keep)
  np.testing.assert_array_equal(before["pseudo_labels"], labels)
  assert before["pseudo_keep"].any() and after["pseudo_keep"].any()


def test_pipeline_summary_batching_and_feature_overflow(data):
  summary = ig.run_jax_pipeline(data, CONFIG)
  assert 0.8 < summary["cv_auc_before"] <= 1.0 and 0.8 < summary["cv_auc_after"] <= 1.0
  assert summary["max_selected_features"] == max(data["n_informative"])
  # Batches of 2 (the last one wraps around to sub-dataset 0) give the same answer.
  assert ig.run_jax_pipeline(data, ig.PipelineConfig(datasets_per_batch=2)) == summary
  with pytest.raises(ValueError, match="max_features"):
    ig.run_jax_pipeline(data, ig.PipelineConfig(datasets_per_batch=3, max_features=16))


def test_compiled_halves_equal_the_jitted_round(data, rounds):
  # Second code path: the two programs run_jax_rounds compiles side by side, chained, give the
  # outputs of the one jitted cross_validate_batch, in both rounds.
  stage_one, stage_two = ig.compiled_round(CONFIG, 128, 64, 60, "float32", "int32")
  expected, inputs = rounds
  for want, (test_labels, test_fit_mask, bits) in zip(expected, inputs, strict=True):
    got = stage_two(stage_one(data["x_train"], data["x_test"], data["y_train"], test_labels,
                              test_fit_mask, bits))
    for name, value in want.items():
      np.testing.assert_allclose(np.asarray(got[name], float), np.asarray(value, float),
                                 rtol=0, atol=1e-5, err_msg=name)
