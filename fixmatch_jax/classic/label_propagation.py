"""Label propagation on fixed embeddings (Iscen et al. 2019, arXiv:1904.04717, Sec. 3.2), in JAX.

Given L2-normalised features v_1..v_N, labels on a subset L, and C classes:

  1. kNN graph (Eq. 5): a_ij = [v_i^T v_j]_+^gamma if j is among the k nearest neighbours of
     i (itself excluded), else 0; W = A + A^T (zero diagonal);
  2. symmetric normalisation: W_n = D^-1/2 W D^-1/2 with D = diag(W 1);
  3. diffusion (Eq. 6-7): solve (I - alpha W_n) Z = Y by conjugate gradient, one system per
     class, with Y_ij = 1/|L_j| if i is labelled with class j (Eq. 4 up to the per-class
     scale of the paper's code), else 0;
  4. pseudo-labels (Eq. 8): yhat_i = argmax_j z_ij;
  5. weights: z_i clipped at 0 and L1-normalised, omega_i = 1 - H(z_i) / log C (Eq. 9),
     divided by the largest omega as in the authors' code, 1 for labelled examples; and
     class weights zeta_j = N / (C n_j), inverse to the pseudo-class sizes n_j (Eq. 10;
     1 when the classes are balanced).

The paper's defaults: k = 50, gamma = 3, alpha = 0.99, 20 CG iterations.

The kNN search is exact and blocked: queries go through in blocks of `block_size` rows, each
block's similarities to all N points ([block, N], never [N, N]) reduced to its top k+1 with
`jax.lax.top_k`. Memory is O(block N + N k) instead of the O(N^2) of a dense similarity
matrix (60k points: 14 GB dense in float32, 0.25 GB per 1024-row block); the work is the
same N^2 D multiply-adds, done as matrix products (docs/self_training.md measures it). The
graph is kept as [N, k] neighbour indices and weights; W x is a gather plus a segment sum.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Propagation:
  """The result of `propagate`.

  Attributes:
    scores: float [N, C], the diffusion solution Z.
    pseudo_labels: int [N], argmax of Z, with the given labels on labelled examples.
    entropy_weights: float [N], omega_i (1 on labelled examples).
    class_weights: float [C], zeta_j.
  """
  scores: np.ndarray
  pseudo_labels: np.ndarray
  entropy_weights: np.ndarray
  class_weights: np.ndarray

  @property
  def example_weights(self) -> np.ndarray:
    """omega_i * zeta_{yhat_i}: the weight of example i in the loss (Eq. 10)."""
    return self.entropy_weights * self.class_weights[self.pseudo_labels]


def l2_normalise(features: np.ndarray | jnp.ndarray) -> jnp.ndarray:
  features = jnp.asarray(features, jnp.float32)
  return features / jnp.maximum(jnp.linalg.norm(features, axis=1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("k",))
def _block_top_k(queries: jnp.ndarray, first_row: jnp.ndarray, features: jnp.ndarray,
                 k: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  similarity = queries @ features.T
  rows = first_row + jnp.arange(queries.shape[0])
  # A point is never its own neighbour.
  similarity = jnp.where(rows[:, None] == jnp.arange(features.shape[0])[None, :],
                         -jnp.inf, similarity)
  values, indices = jax.lax.top_k(similarity, k)
  return values, indices


def knn(features: np.ndarray | jnp.ndarray, k: int, *,
        block_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
  """Exact k nearest neighbours by inner product, self excluded, in blocks of query rows.

  Args:
    features: float [N, D] (L2-normalise first for cosine similarity).
    k: neighbours per point (< N).
    block_size: query rows per block; peak memory is about block_size * N floats.

  Returns:
    (similarities float [N, k] in decreasing order, indices int32 [N, k]).
  """
  features = jnp.asarray(features, jnp.float32)
  n = features.shape[0]
  if not 0 < k < n:
    raise ValueError(f"k={k} must be in [1, N-1] for N={n} points.")
  block_size = min(block_size, n)
  values, indices = [], []
  for start in range(0, n, block_size):
    queries = features[start:start + block_size]
    pad = block_size - queries.shape[0]
    if pad:  # One compiled shape for every block.
      queries = jnp.concatenate([queries, jnp.zeros((pad, features.shape[1]), jnp.float32)])
    block_values, block_indices = _block_top_k(queries, jnp.int32(start), features, k)
    values.append(np.asarray(block_values)[:block_size - pad])
    indices.append(np.asarray(block_indices)[:block_size - pad])
  return np.concatenate(values), np.concatenate(indices).astype(np.int32)


def _matvec_parts(neighbours: jnp.ndarray, affinities: jnp.ndarray):
  """x -> W x for W = A + A^T, A sparse with rows (neighbours[i], affinities[i])."""
  n = neighbours.shape[0]

  def matvec(x):  # x: [N, C]
    # (A x)_i = sum_k a_ik x_{nbr(i,k)};  (A^T x)_j = sum_{(i,k): nbr(i,k)=j} a_ik x_i.
    a_x = jnp.einsum("nk,nkc->nc", affinities, x[neighbours])
    a_t_x = jax.ops.segment_sum((affinities[..., None] * x[:, None, :]).reshape(-1, x.shape[1]),
                                neighbours.reshape(-1), num_segments=n)
    return a_x + a_t_x
  return matvec


def conjugate_gradient(matvec, b: jnp.ndarray, num_iterations: int) -> jnp.ndarray:
  """Solves matvec(x) = b for a symmetric positive definite operator, column by column.

  Plain CG (Hestenes & Stiefel 1952) from x = 0, a fixed number of iterations, with its
  own step sizes for each column of b [N, C] (the C systems are independent).
  """
  def body(_, carry):
    x, r, p, rs = carry
    ap = matvec(p)
    step = rs / jnp.maximum(jnp.sum(p * ap, axis=0), 1e-30)
    x = x + step * p
    r = r - step * ap
    rs_new = jnp.sum(r * r, axis=0)
    p = r + (rs_new / jnp.maximum(rs, 1e-30)) * p
    return x, r, p, rs_new

  x = jnp.zeros_like(b)
  rs = jnp.sum(b * b, axis=0)
  x, *_ = jax.lax.fori_loop(0, num_iterations, body, (x, b, b, rs))
  return x


@functools.partial(jax.jit, static_argnames=("num_classes", "num_iterations"))
def diffuse(neighbours: jnp.ndarray, similarities: jnp.ndarray, labelled: jnp.ndarray,
            labels: jnp.ndarray, *, num_classes: int, gamma: float, alpha: float,
            num_iterations: int) -> jnp.ndarray:
  """Z solving (I - alpha W_n) Z = Y on the kNN graph (steps 1-3 of the module docstring).

  Args:
    neighbours: int [N, k] kNN indices; similarities: float [N, k] their similarities.
    labelled: int [L] indices of the labelled examples; labels: int [L] their classes.
    num_classes: C. gamma: affinity exponent. alpha: diffusion weight in [0, 1).
    num_iterations: CG iterations.

  Returns:
    float [N, C].
  """
  n = neighbours.shape[0]
  affinities = jnp.maximum(similarities, 0.0) ** gamma
  matvec_w = _matvec_parts(neighbours, affinities)
  degree = matvec_w(jnp.ones((n, 1)))[:, 0]
  inv_sqrt_degree = jnp.where(degree > 0, 1.0 / jnp.sqrt(jnp.maximum(degree, 1e-30)), 0.0)

  def system(x):  # (I - alpha D^-1/2 W D^-1/2) x
    return x - alpha * inv_sqrt_degree[:, None] * matvec_w(inv_sqrt_degree[:, None] * x)

  one_hot = jax.nn.one_hot(labels, num_classes)
  per_class = jnp.maximum(one_hot.sum(axis=0), 1.0)
  y = jnp.zeros((n, num_classes)).at[labelled].set(one_hot / per_class)
  return conjugate_gradient(system, y, num_iterations)


def weights(scores: np.ndarray, labelled: np.ndarray, labels: np.ndarray,
            num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Pseudo-labels, entropy weights and class weights from Z (steps 4-5).

  Returns:
    (pseudo_labels int [N], entropy_weights float [N], class_weights float [C]).
  """
  scores = np.maximum(np.asarray(scores, np.float64), 0.0)
  probs = scores / np.maximum(scores.sum(axis=1, keepdims=True), 1e-30)
  pseudo_labels = np.argmax(probs, axis=1)
  pseudo_labels[labelled] = labels
  with np.errstate(divide="ignore", invalid="ignore"):
    entropy = -np.sum(np.where(probs > 0, probs * np.log(probs), 0.0), axis=1)
  omega = 1.0 - entropy / math.log(num_classes)
  omega = omega / max(omega.max(), 1e-12)
  omega[labelled] = 1.0
  counts = np.bincount(pseudo_labels, minlength=num_classes).astype(np.float64)
  zeta = np.where(counts > 0, len(pseudo_labels) / (num_classes * np.maximum(counts, 1)), 0.0)
  return pseudo_labels, omega.astype(np.float32), zeta.astype(np.float32)


def propagate(features: np.ndarray, labelled: np.ndarray, labels: np.ndarray,
              num_classes: int, *, k: int = 50, gamma: float = 3.0, alpha: float = 0.99,
              num_iterations: int = 20, block_size: int = 1024) -> Propagation:
  """Label propagation of Iscen et al. 2019 on fixed features (the module docstring).

  Args:
    features: float [N, D], e.g. penultimate-layer embeddings (L2-normalised here).
    labelled: int [L] indices of the labelled examples.
    labels: int [L] their classes in [0, C).
    num_classes: C.
    k, gamma, alpha, num_iterations: the paper's 50, 3, 0.99, 20.
    block_size: query rows per kNN block.

  Returns:
    A `Propagation`.
  """
  labelled = np.asarray(labelled, np.int64)
  labels = np.asarray(labels, np.int64)
  if labelled.shape != labels.shape or not len(labelled):
    raise ValueError(f"labelled {labelled.shape} and labels {labels.shape} must be equal, "
                     "non-empty 1-D arrays.")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"labels must be in [0, {num_classes}).")
  if not 0.0 <= alpha < 1.0:
    raise ValueError(f"alpha={alpha} must be in [0, 1) for I - alpha W_n to be invertible.")
  similarities, neighbours = knn(l2_normalise(features), k, block_size=block_size)
  scores = np.asarray(diffuse(
      jnp.asarray(neighbours), jnp.asarray(similarities), jnp.asarray(labelled),
      jnp.asarray(labels), num_classes=num_classes, gamma=gamma, alpha=alpha,
      num_iterations=num_iterations))
  pseudo_labels, omega, zeta = weights(scores, labelled, labels, num_classes)
  return Propagation(scores=scores, pseudo_labels=pseudo_labels, entropy_weights=omega,
                     class_weights=zeta)
