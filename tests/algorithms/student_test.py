"""Student loss (self-training / deep label propagation) and rotation pre-training loss."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fixmatch_jax import algorithms, steps
from fixmatch_jax.algorithms import rotation, student


def log_softmax(logits):
  logits = np.asarray(logits, np.float64)
  return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def test_student_loss_is_labelled_ce_plus_weighted_ce_to_stored_targets():
  # 2 labelled + 3 unlabelled; the table covers 5 training examples (index 0..4).
  logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0],
                     [1.0, 2.0, 3.0], [0.5, 0.5, 0.0], [3.0, 0.0, 1.0]], np.float32)
  targets = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.2, 0.8, 0], [1, 0, 0]], np.float32)
  weights = np.array([1.0, 1.0, 0.5, 2.0, 0.0], np.float32)
  batch = {"labelled": {"image": jnp.zeros((2, 2, 2, 1), jnp.uint8), "label": jnp.array([0, 2])},
           "unlabelled": {"strong": jnp.zeros((3, 2, 2, 1), jnp.uint8),
                          "index": jnp.array([2, 3, 4]), "label": jnp.array([2, 0, 0])}}
  state = {"targets": jnp.asarray(targets), "weights": jnp.asarray(weights)}

  @steps.forward_groups
  def forward(params, images, *, train, rngs=None, batch_stats=None):
    assert train and images.shape[0] == 5  # One pass over labelled + unlabelled.
    return params, {}

  cfg = ml_collections.ConfigDict(dict(lambda_u=2.0, targets_file=None))
  loss, aux = algorithms.get("noisy_student").loss_fn(
      jnp.asarray(logits), batch, forward=forward, algo_state=state, key=None,
      step=jnp.asarray(0), cfg=cfg, num_classes=3)
  lsm = log_softmax(logits)
  loss_sup = -(lsm[0, 0] + lsm[1, 2]) / 2
  per_example = -(targets[2:] * lsm[2:]).sum(-1)
  loss_unsup = np.sum(weights[2:] * per_example) / 3  # Divided by all 3 unlabelled.
  np.testing.assert_allclose(loss, loss_sup + 2.0 * loss_unsup, rtol=1e-5)
  metrics = aux["metrics"]
  np.testing.assert_allclose(metrics["train/mask_rate"], 2 / 3, rtol=1e-6)
  # Used: index 2 (target 2, true 2: right), 3 (target 1, true 0: wrong).
  np.testing.assert_allclose(metrics["train/pseudo_label_acc"], 0.5, rtol=1e-6)
  assert aux["algo_state"] is state


def test_student_targets_file_is_checked(tmp_path):
  cfg = student.default_config()
  with pytest.raises(ValueError, match="targets_file is not set"):
    student.load_targets(cfg, 5, 3)
  path = str(tmp_path / "t.npz")
  np.savez(path, targets=np.zeros((4, 3)), weights=np.zeros(4))
  cfg.targets_file = path
  with pytest.raises(ValueError, match=r"\(5, 3\) and \(5,\)"):
    student.load_targets(cfg, 5, 3)
  np.savez(path, targets=np.ones((5, 3)), weights=np.arange(5.0))
  state = student.load_targets(cfg, 5, 3)
  np.testing.assert_array_equal(state["weights"], np.arange(5.0))


def test_rotate_batch_matches_numpy_rot90():
  images = np.arange(2 * 3 * 3 * 1, dtype=np.uint8).reshape(2, 3, 3, 1)
  images = np.concatenate([images] * 2)
  rotated = rotation.rotate_batch(jnp.asarray(images), jnp.array([0, 1, 2, 3]))
  for i, k in enumerate([0, 1, 2, 3]):
    np.testing.assert_array_equal(rotated[i], np.rot90(images[i], k, axes=(0, 1)))


def test_rotation_loss_uses_balanced_rotations_and_four_outputs():
  images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (8, 4, 4, 1), np.uint8))
  seen = {}

  def forward(params, batch_images, *, train, rngs=None, batch_stats=None):
    seen["images"] = np.asarray(batch_images)
    return params, {}

  logits = jnp.asarray(np.random.default_rng(1).normal(size=(8, 10)), jnp.float32)
  loss, aux = rotation.loss_fn(logits, {"unlabelled": {"weak": images}}, forward=forward,
                               algo_state={}, key=jax.random.key(3), step=0, cfg=None,
                               num_classes=10)
  # Recover each image's rotation from what the model saw.
  rotations = [next(k for k in range(4)
                    if np.array_equal(seen["images"][i], np.rot90(images[i], k, axes=(0, 1))))
               for i in range(8)]
  assert np.bincount(rotations, minlength=4).tolist() == [2, 2, 2, 2]
  lsm = log_softmax(np.asarray(logits)[:, :4])
  np.testing.assert_allclose(loss, -np.mean(lsm[np.arange(8), rotations]), rtol=1e-5)
  assert 0.0 <= float(aux["metrics"]["train/rotation_acc"]) <= 1.0
