"""Label propagation (Iscen et al. 2019) against a dense NumPy/SciPy construction and solve."""

import math

import numpy as np
import pytest
import scipy.linalg

from fixmatch_jax.classic import label_propagation as lp


def dense_reference(features, labelled, labels, num_classes, k, gamma, alpha):
  """The paper's steps with dense matrices: kNN by argsort, W, W_n, a direct solve."""
  v = features / np.linalg.norm(features, axis=1, keepdims=True)
  similarity = v @ v.T
  n = len(v)
  np.fill_diagonal(similarity, -np.inf)
  a = np.zeros((n, n))
  for i in range(n):
    nearest = np.argsort(-similarity[i], kind="stable")[:k]
    a[i, nearest] = np.maximum(similarity[i, nearest], 0) ** gamma
  w = a + a.T
  d = w.sum(axis=1)
  w_n = w / np.sqrt(np.outer(d, d))
  y = np.zeros((n, num_classes))
  for c in range(num_classes):
    members = labelled[labels == c]
    y[members, c] = 1.0 / len(members)
  return scipy.linalg.solve(np.eye(n) - alpha * w_n, y, assume_a="pos")


@pytest.fixture
def graph():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 6)) * 2
  truth = np.repeat(np.arange(3), 30)
  features = centres[truth] + rng.normal(size=(90, 6))
  labelled = np.array([0, 1, 30, 31, 60, 61])
  return features, truth, labelled


def test_blocked_knn_equals_dense_search(graph):
  features, _, _ = graph
  v = np.asarray(lp.l2_normalise(features))
  similarity = v @ v.T
  np.fill_diagonal(similarity, -np.inf)
  expected = np.sort(similarity, axis=1)[:, ::-1][:, :7]
  # A block size that does not divide N, so the padded last block is exercised.
  values, indices = lp.knn(v, 7, block_size=16)
  np.testing.assert_allclose(values, expected, atol=1e-5)
  np.testing.assert_allclose(np.take_along_axis(similarity, indices, 1), values, atol=1e-5)
  assert not (indices == np.arange(90)[:, None]).any()  # Never its own neighbour.


def test_diffusion_matches_dense_solve(graph):
  features, truth, labelled = graph
  expected = dense_reference(features, labelled, truth[labelled], 3, k=10, gamma=3.0,
                             alpha=0.99)
  similarities, neighbours = lp.knn(lp.l2_normalise(features), 10, block_size=32)
  # Enough CG iterations to converge on 90 nodes; then the paper's 20 are checked to be close.
  scores = np.asarray(lp.diffuse(neighbours, similarities, labelled, truth[labelled],
                                 num_classes=3, gamma=3.0, alpha=0.99, num_iterations=300))
  np.testing.assert_allclose(scores, expected, rtol=2e-3, atol=2e-4 * np.abs(expected).max())
  result = lp.propagate(features, labelled, truth[labelled], 3, k=10, num_iterations=20)
  np.testing.assert_array_equal(result.pseudo_labels, np.argmax(expected, axis=1))
  assert np.mean(result.pseudo_labels == truth) > 0.9


def test_weights_against_hand_computation():
  # Example 0 labelled (class 1); example 1: z = (3, 1, 0) -> p = (.75, .25, 0);
  # example 2: z = (1, 1, 1) (uniform, omega 0); example 3: z = (-1, 2, 0) -> clipped (0, 1, 0).
  scores = np.array([[0.2, 0.5, 0.3], [3.0, 1.0, 0.0], [1.0, 1.0, 1.0], [-1.0, 2.0, 0.0]])
  pseudo, omega, zeta = lp.weights(scores, np.array([0]), np.array([1]), 3)
  np.testing.assert_array_equal(pseudo, [1, 0, 0, 1])  # Ties go to the lowest class.
  h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
  raw = np.array([1 - h1 / math.log(3), 0.0, 1.0])  # Examples 1, 2, 3 before normalising.
  np.testing.assert_allclose(omega, np.concatenate([[1.0], raw / raw.max()]), rtol=1e-6,
                             atol=1e-7)
  # Pseudo-classes: 0 twice, 1 twice, 2 never: zeta_j = N / (C n_j) = 4 / (3 * 2).
  np.testing.assert_allclose(zeta, [4 / 6, 4 / 6, 0.0], rtol=1e-6)
  result = lp.Propagation(scores, pseudo, omega, zeta)
  np.testing.assert_allclose(result.example_weights, omega * 4 / 6, rtol=1e-6)


def test_bad_inputs_name_the_problem(graph):
  features, truth, labelled = graph
  with pytest.raises(ValueError, match="alpha"):
    lp.propagate(features, labelled, truth[labelled], 3, alpha=1.0)
  with pytest.raises(ValueError, match="labels must be in"):
    lp.propagate(features, labelled, truth[labelled] + 1, 3)
  with pytest.raises(ValueError, match="k=90"):
    lp.knn(features, 90)
