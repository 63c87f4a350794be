"""Quadratic discriminant analysis (QDA) in JAX, with masks for vmapped ragged problems.

Reproduces scikit-learn's `QuadraticDiscriminantAnalysis(reg_param=r)` (`solver="svd"`).
For class c with n_c rows, mean mu_c and centred rows Xc = X_c - mu_c, scikit-learn takes the
SVD Xc = U S V^T and uses the scalings S^2 / (n_c - ddof), regularised to
(1 - r) S^2 / (n_c - ddof) + r, with rotations V. Whenever n_c >= d the rotations span the whole
space, so this is the Gaussian with

  Sigma_c = (1 - r) Xc^T Xc / (n_c - ddof) + r I,
  log p(c | x) = -1/2 [(x - mu_c)^T Sigma_c^-1 (x - mu_c) + log det Sigma_c] + log pi_c + const,

with priors pi_c = n_c / n. We compute it from a Cholesky factor of Sigma_c, which is cheaper
than an SVD per class and batches well. scikit-learn 1.9 divides by n_c (ddof=0, our default); older
releases (those of 2019, which the Kaggle kernels ran) divided by n_c - 1 (ddof=1).

Singular covariances: with r > 0, Sigma_c is positive definite and the two agree (tested with
duplicated and constant columns). With r = 0 and a rank-deficient class, scikit-learn warns
("covariance matrix ... is not full rank") and returns numerically arbitrary probabilities; the
Cholesky here returns NaN or huge values, so use r > 0. When n_c < d scikit-learn keeps only n_c
SVD directions, one of which is an arbitrary unit vector in the null space of Xc, so its answer
is not well defined; we keep all d directions (the null space gets variance r).

Padding: every array has a fixed shape so that `jax.vmap` can batch problems of different sizes.
`sample_mask` drops padded rows; `feature_mask` drops padded columns by giving them mean 0, zero
input and unit variance uncorrelated with everything else, identical for every class, so they
add 0 to both the Mahalanobis term and the log-determinant.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def _floats(a) -> jax.Array:
  """`a` as JAX's default float type: float32, or float64 under `jax.enable_x64`."""
  return jnp.asarray(a, jnp.result_type(float))


class QDAParams(NamedTuple):
  """A fitted QDA model for C classes over F (possibly padded) features.

  Attributes:
    means: (C, F) class means (0 on padded features).
    precisions: (C, F, F) Sigma_c^-1.
    log_dets: (C,) log det Sigma_c.
    log_priors: (C,) log class frequencies (-inf for a class absent from the data).
    feature_mask: (F,) float, 1 on real features and 0 on padding.
  """

  means: jax.Array
  precisions: jax.Array
  log_dets: jax.Array
  log_priors: jax.Array
  feature_mask: jax.Array


def class_moments(
  x: jax.Array, y: jax.Array, num_classes: int, sample_mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-class count, sum and sum of outer products of the rows in `sample_mask`.

  Moments add over disjoint row sets, which lets K-fold CV fit each fold's model as
  (all rows) - (held-out rows) instead of re-reading the training rows K times.

  Args:
    x: (N, F) inputs, ideally already centred near the data mean (float32 accuracy).
    y: (N,) integer labels in [0, num_classes).
    num_classes: C.
    sample_mask: optional (N,) row mask.

  Returns:
    counts (C,), sums (C, F), outer_sums (C, F, F).
  """
  rows = jnp.ones(x.shape[0]) if sample_mask is None else _floats(sample_mask)
  weights = rows * jax.nn.one_hot(y, num_classes).T  # (C, N)
  return weights.sum(axis=1), weights @ x, jnp.einsum("cn,ni,nj->cij", weights, x, x)


def _lower_triangular_inverse(lower: jax.Array) -> jax.Array:
  """Inverse of a batch (..., F, F) of lower-triangular matrices by forward substitution.

  Row i of W = L^-1 is (e_i - L[i, :i] W[:i]) / L[i, i]: one batched vector-matrix product per
  row in a `fori_loop`. On CPU this beat LAPACK's triangular solve (called once per small matrix
  and, with OpenBLAS threads, erratically slow when cores are shared) and compiles in a fraction
  of the time of a recursive blocked inverse.
  """
  size = lower.shape[-1]
  eye = jnp.eye(size, dtype=lower.dtype)

  def next_row(i, inverse):
    lower_row = jax.lax.dynamic_index_in_dim(lower, i, axis=-2, keepdims=False)  # (..., F)
    # Rows >= i of `inverse` are still zero, so the full product sums over k < i only.
    row = eye[i] - jnp.einsum("...k,...kj->...j", lower_row, inverse)
    row = row / jax.lax.dynamic_index_in_dim(lower_row, i, axis=-1)
    return jax.lax.dynamic_update_index_in_dim(inverse, row, i, axis=-2)

  return jax.lax.fori_loop(0, size, next_row, jnp.zeros_like(lower))


def qda_from_moments(
  counts: jax.Array,
  sums: jax.Array,
  outer_sums: jax.Array,
  *,
  centre: jax.Array,
  feature_mask: jax.Array,
  reg_param: float,
  ddof: int = 0,
) -> QDAParams:
  """Builds the QDA model from `class_moments` of rows x - centre.

  Args:
    counts: (C,) rows per class.
    sums: (C, F) sums of x - centre.
    outer_sums: (C, F, F) sums of (x - centre)(x - centre)^T.
    centre: (F,) the point the moments were taken about.
    feature_mask: (F,) float 0/1; 0 marks padded columns (which must hold zeros).
    reg_param: covariance regularisation r in [0, 1].
    ddof: covariance denominator n_c - ddof.

  Returns:
    The fitted `QDAParams`.
  """
  n_features = sums.shape[-1]
  safe_counts = jnp.maximum(counts, 1.0)
  means = sums / safe_counts[:, None]
  scatter = outer_sums / safe_counts[:, None, None] - means[:, :, None] * means[:, None, :]
  cov = scatter * (safe_counts / jnp.maximum(counts - ddof, 1.0))[:, None, None]
  eye = jnp.eye(n_features)
  pair_mask = feature_mask[:, None] * feature_mask[None, :]
  # Real block: (1 - r) S + r I. Padded rows/columns: identity, the same for every class.
  sigma = ((1.0 - reg_param) * cov + reg_param * eye) * pair_mask + eye * (1.0 - pair_mask)
  # Sigma is symmetric by construction: skip jnp.linalg.cholesky's symmetrisation pass.
  chol = jax.lax.linalg.cholesky(sigma, symmetrize_input=False)
  chol_inverse = _lower_triangular_inverse(chol)
  log_dets = 2.0 * jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
  return QDAParams(
    means=(means + centre) * feature_mask,
    precisions=jnp.einsum("cki,ckj->cij", chol_inverse, chol_inverse),
    log_dets=log_dets,
    log_priors=jnp.log(counts / jnp.maximum(counts.sum(), 1.0)),
    feature_mask=feature_mask,
  )


def qda_fit(
  x: jax.Array,
  y: jax.Array,
  *,
  num_classes: int = 2,
  reg_param: float = 0.0,
  sample_mask: jax.Array | None = None,
  feature_mask: jax.Array | None = None,
  ddof: int = 0,
) -> QDAParams:
  """Fits one Gaussian per class, as scikit-learn's QDA with `reg_param` does.

  Args:
    x: (N, F) inputs.
    y: (N,) integer labels in [0, num_classes).
    num_classes: number of classes C (static).
    reg_param: covariance regularisation r in [0, 1].
    sample_mask: optional (N,) bool/0-1 weights; rows with 0 are ignored.
    feature_mask: optional (F,) bool; False columns are padding and do not change the model.
    ddof: covariance denominator is n_c - ddof: 0 matches scikit-learn 1.9, 1 older releases.

  Returns:
    The fitted `QDAParams`.
  """
  x = _floats(x)
  rows = jnp.ones(x.shape[0]) if sample_mask is None else _floats(sample_mask)
  cols = jnp.ones(x.shape[1]) if feature_mask is None else _floats(feature_mask)
  x = x * cols  # padded columns become exact zeros, whatever they held
  # Moments about the overall mean stay accurate in float32 (no large-mean cancellation).
  centre = (rows @ x) / jnp.maximum(rows.sum(), 1.0)
  moments = class_moments(x - centre, y, num_classes, rows)
  return qda_from_moments(
    *moments, centre=centre, feature_mask=cols, reg_param=reg_param, ddof=ddof
  )


def qda_log_posterior_unnormalised(params: QDAParams, x: jax.Array) -> jax.Array:
  """Returns scikit-learn's `_decision_function`: log pi_c + log N(x; mu_c, Sigma_c) + const.

  Args:
    params: a fitted model.
    x: (N, F) inputs (padded columns may hold anything).

  Returns:
    (N, C) unnormalised log posteriors.
  """
  x = _floats(x) * params.feature_mask
  diffs = x[None, :, :] - params.means[:, None, :]  # (C, N, F)
  mahalanobis = jnp.sum(jnp.einsum("cnj,cij->cni", diffs, params.precisions) * diffs, axis=-1)
  return (-0.5 * (mahalanobis + params.log_dets[:, None]) + params.log_priors[:, None]).T


def qda_predict_log_proba(params: QDAParams, x: jax.Array) -> jax.Array:
  """Log class probabilities, (N, C)."""
  return jax.nn.log_softmax(qda_log_posterior_unnormalised(params, x), axis=-1)


def qda_predict_proba(params: QDAParams, x: jax.Array) -> jax.Array:
  """Class probabilities, (N, C), as scikit-learn's `predict_proba`."""
  return jax.nn.softmax(qda_log_posterior_unnormalised(params, x), axis=-1)


class QuadraticForm(NamedTuple):
  """f(x) = x^T quadratic x + linear^T x + constant (the two-class QDA log-odds)."""

  quadratic: jax.Array
  linear: jax.Array
  constant: jax.Array


def qda_binary_log_odds_form(params: QDAParams) -> QuadraticForm:
  """log P(y=1|x) - log P(y=0|x) of a two-class model as one quadratic form in x.

  Equals the difference of the two `qda_log_posterior_unnormalised` columns but costs one
  F x F product per row instead of two, and, unlike probabilities, does not saturate in float32
  (ranking, e.g. for AUC, stays exact for confident rows).
  """
  precisions, means = params.precisions, params.means
  # (x - mu)^T P (x - mu) = x^T P x - 2 (P mu)^T x + mu^T P mu, differenced between classes.
  # Elementwise products: batched (F x F)(F) dots are slow on CPU.
  p_means = jnp.sum(precisions * means[:, None, :], axis=-1)
  mahalanobis_means = jnp.sum(p_means * means, axis=-1)
  return QuadraticForm(
    quadratic=-0.5 * (precisions[1] - precisions[0]),
    linear=p_means[1] - p_means[0],
    constant=(
      -0.5 * (mahalanobis_means[1] - mahalanobis_means[0])
      - 0.5 * (params.log_dets[1] - params.log_dets[0])
      + params.log_priors[1] - params.log_priors[0]
    ),
  )


def evaluate_quadratic_form(form: QuadraticForm, x: jax.Array) -> jax.Array:
  """f(x) for rows x (..., N, F) of padded features (padded columns must be zero)."""
  return jnp.sum((x @ form.quadratic) * x, axis=-1) + x @ form.linear + form.constant


def qda_binary_log_odds(params: QDAParams, x: jax.Array) -> jax.Array:
  """(N,) log-odds of class 1 under a two-class model, for inputs x (N, F)."""
  x = _floats(x) * params.feature_mask
  return evaluate_quadratic_form(qda_binary_log_odds_form(params), x)


def column_moments(
  x: jax.Array, sample_mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Row count, column sums and column sums of squares of the rows in `sample_mask`.

  Moments of disjoint row sets add, so a caller can combine parts (e.g. train rows and
  pseudo-labelled test rows) without concatenating a large input. Written as contractions, which
  XLA's CPU backend runs several times faster than the equivalent masked reductions.

  Args:
    x: (N, D) inputs.
    sample_mask: optional (N,) row mask.

  Returns:
    count (), sums (D,), sums_of_squares (D,).
  """
  if sample_mask is None:
    return _floats(x.shape[0]), jnp.sum(x, axis=0), jnp.einsum("nd,nd->d", x, x)
  rows = jnp.asarray(sample_mask, x.dtype)
  return rows.sum(), rows @ x, jnp.einsum("nd,nd->d", x * rows[:, None], x)


def variance_threshold_columns(
  count: jax.Array, sums: jax.Array, sums_of_squares: jax.Array, threshold: float,
  max_features: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Selects columns with variance > threshold (as `VarianceThreshold`) into a padded block.

  The variance is the population variance (ddof 0), E[x^2] - E[x]^2 from `column_moments`; in
  float32 that is accurate when a column's mean is not much larger than its spread (true of the
  centred `make_classification` data; shift the data first otherwise). Selected columns keep
  their original order in the first slots; the remaining slots are padding.

  Args:
    count: number of rows.
    sums: (D,) column sums.
    sums_of_squares: (D,) column sums of squares.
    threshold: keep columns whose variance is strictly greater.
    max_features: static width F of the padded block.

  Returns:
    (indices (F,) int32 into D, feature_mask (F,) bool, num_selected ()) int32. If
    num_selected > F, the extra columns are dropped: callers should check it.
  """
  count = jnp.maximum(count, 1.0)
  variance = sums_of_squares / count - (sums / count) ** 2
  selected = variance > threshold
  num_selected = selected.sum().astype(jnp.int32)
  # A stable argsort lists the selected columns first, in order (cheaper to compile than nonzero).
  indices = jnp.argsort(~selected, stable=True)[:max_features].astype(jnp.int32)
  return indices, jnp.arange(max_features) < num_selected, num_selected


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
  """Area under the ROC curve, tie-aware like `sklearn.metrics.roc_auc_score` (NumPy, float64).

  Mann-Whitney form: (sum of the positives' mid-ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg),
  the probability that a random positive outscores a random negative with ties counted as one
  half, which equals the trapezoidal area under the ROC curve. Kept in NumPy: it runs once per
  evaluation, and a jitted sort + search over 262k scores cost more to compile than to run.

  Args:
    y_true: binary labels (1 is positive), any shape.
    y_score: scores, same shape.

  Returns:
    The AUC.
  """
  positive = np.asarray(y_true).ravel() == 1
  _, inverse, counts = np.unique(
    np.asarray(y_score, np.float64).ravel(), return_inverse=True, return_counts=True
  )
  mid_ranks = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each value
  n_pos = positive.sum()
  n_neg = positive.size - n_pos
  return float((mid_ranks[inverse][positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
