"""Tests for fixmatch_jax.classic.qda against scikit-learn and NumPy oracles.

JAX computes in float32 and scikit-learn in float64, so probabilities are compared with
atol 1e-4 (covariance condition numbers here reach ~1e3; most errors are ~1e-6). Under
`jax.enable_x64` the same code agrees to 1e-9, which shows the formulas are the same.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
from sklearn.feature_selection import VarianceThreshold
from sklearn.metrics import roc_auc_score

from fixmatch_jax.classic import qda

ATOL = 1e-4
# Jitted once per shape (reg_param is traced): faster than compiling every op eagerly.
fit = jax.jit(qda.qda_fit, static_argnames=("num_classes", "ddof"))
predict_proba = jax.jit(qda.qda_predict_proba)


def _gaussian_classes(rng, n, d, num_classes=2):
  """Classes with different means and covariances, so QDA's quadratic terms matter."""
  y = rng.integers(0, num_classes, size=n)
  x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d) + 1.0
  for c in range(num_classes):
    mixing = np.eye(d) + 0.3 * rng.normal(size=(d, d))
    x[y == c] = x[y == c] @ mixing + c
  return x, y


@pytest.mark.parametrize("reg_param", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("num_classes", [2, 3])
def test_predict_proba_matches_sklearn(reg_param, num_classes):
  rng = np.random.default_rng(0)
  x, y = _gaussian_classes(rng, 400, 6, num_classes)
  x_new, _ = _gaussian_classes(rng, 100, 6, num_classes)
  expected = QuadraticDiscriminantAnalysis(reg_param=reg_param).fit(x, y).predict_proba(x_new)
  params = fit(x, y, num_classes=num_classes, reg_param=reg_param)
  np.testing.assert_allclose(predict_proba(params, x_new), expected, atol=ATOL)
  np.testing.assert_allclose(
    np.exp(qda.qda_predict_log_proba(params, x_new)), expected, atol=ATOL
  )
  with jax.enable_x64(True):
    params = fit(x, y, num_classes=num_classes, reg_param=reg_param)
    np.testing.assert_allclose(predict_proba(params, x_new), expected, atol=1e-9)


@pytest.mark.parametrize("reg_param", [0.05, 0.5])
def test_singular_covariance_matches_sklearn(reg_param):
  # Duplicated and constant columns make every class covariance singular; reg_param > 0 makes
  # (1 - r) S + r I invertible and both implementations agree.
  rng = np.random.default_rng(1)
  base, y = _gaussian_classes(rng, 300, 4)
  x = np.c_[base, base[:, :2], np.full(len(base), 3.0)]
  base_new, _ = _gaussian_classes(rng, 80, 4)
  x_new = np.c_[base_new, base_new[:, :2] + 0.1 * rng.normal(size=(80, 2)), np.full(80, 3.2)]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # scikit-learn may warn about the rank
    expected = QuadraticDiscriminantAnalysis(reg_param=reg_param).fit(x, y).predict_proba(x_new)
  actual = predict_proba(fit(x, y, reg_param=reg_param), x_new)
  assert 0.05 < np.mean((expected[:, 1] > 0.01) & (expected[:, 1] < 0.99))  # not all saturated
  np.testing.assert_allclose(actual, expected, atol=ATOL)
  with jax.enable_x64(True):
    actual = predict_proba(fit(x, y, reg_param=reg_param), x_new)
    np.testing.assert_allclose(actual, expected, atol=1e-9)


@pytest.mark.parametrize("ddof", [0, 1])
def test_fewer_rows_than_features_is_the_full_regularised_gaussian(ddof):
  # With n_c < d scikit-learn's SVD keeps an arbitrary null-space direction (documented in
  # qda.py); ours is the Gaussian with (1 - r) S + r I over all d dimensions: NumPy oracle.
  rng = np.random.default_rng(2)
  d, reg = 12, 0.3
  x, y = rng.normal(size=(16, d)), np.r_[np.zeros(8, int), np.ones(8, int)]
  x_new = rng.normal(size=(20, d))
  log_posterior = []
  for c in (0, 1):
    rows = x[y == c]
    centred = rows - rows.mean(0)
    sigma = (1 - reg) * centred.T @ centred / (len(rows) - ddof) + reg * np.eye(d)
    diff = x_new - rows.mean(0)
    mahalanobis = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(sigma), diff)
    log_posterior.append(-0.5 * (mahalanobis + np.linalg.slogdet(sigma)[1]) + np.log(0.5))
  log_posterior = np.stack(log_posterior, axis=1)
  expected = np.exp(log_posterior - np.logaddexp.reduce(log_posterior, axis=1, keepdims=True))
  actual = predict_proba(fit(x, y, reg_param=reg, ddof=ddof), x_new)
  np.testing.assert_allclose(actual, expected, atol=ATOL)


def test_padded_features_and_rows_do_not_change_the_model():
  rng = np.random.default_rng(3)
  x, y = _gaussian_classes(rng, 200, 5)
  x_new, _ = _gaussian_classes(rng, 50, 5)
  reference = predict_proba(fit(x, y, reg_param=0.2), x_new)
  # Three padded columns of large garbage and 40 padded rows with garbage labels.
  pad_columns = lambda a: np.c_[a, 1e3 * rng.normal(size=(len(a), 3))]
  x_padded = np.r_[pad_columns(x), 1e3 * rng.normal(size=(40, 8))]
  y_padded = np.r_[y, rng.integers(0, 2, size=40)]
  params = fit(
    x_padded, y_padded, reg_param=0.2, sample_mask=np.arange(240) < 200,
    feature_mask=np.arange(8) < 5,
  )
  np.testing.assert_allclose(predict_proba(params, pad_columns(x_new)), reference,
                             atol=1e-6)
  # Padded columns carry identity covariance and zero mean in every class: they cancel.
  np.testing.assert_array_equal(params.means[:, 5:], 0.0)
  np.testing.assert_array_equal(params.precisions[:, 5:, 5:], np.broadcast_to(np.eye(3), (2, 3, 3)))


def test_binary_log_odds_is_the_posterior_difference():
  rng = np.random.default_rng(4)
  x, y = _gaussian_classes(rng, 300, 7)
  params = fit(x, y, reg_param=0.5)
  log_posterior = qda.qda_log_posterior_unnormalised(params, x)
  np.testing.assert_allclose(
    qda.qda_binary_log_odds(params, x), log_posterior[:, 1] - log_posterior[:, 0],
    rtol=1e-4, atol=1e-4,
  )


def test_moments_of_disjoint_rows_add_up():
  rng = np.random.default_rng(5)
  x, y = rng.normal(size=(50, 4)), rng.integers(0, 2, 50)
  split = rng.uniform(size=50) < 0.3
  total = qda.class_moments(x, y, 2)
  parts = [qda.class_moments(x, y, 2, mask) for mask in (split, ~split)]
  for whole, first, second in zip(total, *parts, strict=True):
    np.testing.assert_allclose(whole, first + second, atol=1e-5)


def test_lower_triangular_inverse():
  rng = np.random.default_rng(6)
  a = rng.normal(size=(3, 10, 20))
  lower = np.linalg.cholesky(a @ a.transpose(0, 2, 1) / 20 + np.eye(10))
  inverse = jax.jit(qda._lower_triangular_inverse)(jnp.asarray(lower, jnp.float32))
  np.testing.assert_allclose(inverse, np.linalg.inv(lower), atol=1e-5)


def test_variance_threshold_matches_sklearn():
  rng = np.random.default_rng(7)
  x = rng.normal(size=(300, 40)) * rng.uniform(0.2, 3.0, size=40) + 5.0
  rows = rng.uniform(size=300) < 0.7
  expected = VarianceThreshold(1.5).fit(x[rows]).get_support(indices=True)
  indices, feature_mask, num_selected = qda.variance_threshold_columns(
    *qda.column_moments(jnp.asarray(x, jnp.float32), rows), 1.5, 32
  )
  assert num_selected == len(expected)
  np.testing.assert_array_equal(np.asarray(indices)[: len(expected)], expected)
  np.testing.assert_array_equal(feature_mask, np.arange(32) < len(expected))


@pytest.mark.parametrize("decimals", [0, 1, 3])
def test_roc_auc_matches_sklearn_with_ties(decimals):
  rng = np.random.default_rng(8)
  y = rng.integers(0, 2, size=2000)
  scores = np.round(rng.normal(size=2000) + 0.7 * y, decimals)  # rounding makes many ties
  assert len(np.unique(scores)) < 2000
  np.testing.assert_allclose(qda.roc_auc(y, scores), roc_auc_score(y, scores), atol=1e-12)
  assert qda.roc_auc(y, np.zeros(2000)) == 0.5  # all tied
  assert qda.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.4, 0.9]) == 0.875  # by hand: (1+.5+1+1)/4
