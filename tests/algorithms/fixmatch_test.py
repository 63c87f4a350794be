"""FixMatch loss against a NumPy hand computation, with a fake model of fixed logits.

The fake forward returns its parameters as the logits of concat[labelled, weak, strong], so
the loss, its gradient (no gradient through the pseudo-labels) and the monitors can be
checked row by row.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fixmatch_jax import algorithms, steps
from fixmatch_jax.algorithms import fixmatch

NUM_CLASSES = 4
LABELLED_LOGITS = [[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 0.0, 0.5]]
LABELS = [0, 2]
WEAK_LOGITS = [
    [0.0, 0.0, -100.0, -100.0],  # confidence exactly 0.5 == threshold: masked IN (>=)
    [0.0, 0.0, 0.0, -100.0],     # confidence 1/3: masked out
    [1.0, 4.0, 0.0, 0.0],        # confidence 0.89: masked in, pseudo-label 1
    [0.2, 0.1, 0.0, 0.3],        # confidence 0.29: masked out
]
STRONG_LOGITS = [[0.5, -0.2, 0.1, 0.0], [1.0, 0.0, 0.0, 0.0],
                 [0.3, 0.2, -0.4, 1.1], [0.0, 0.0, 2.0, 0.0]]
UNLABELLED_TRUE_LABELS = [0, 1, 3, 3]


@steps.forward_groups
def fake_forward(params, images, *, train, rngs=None, batch_stats=None):
  del rngs, batch_stats
  assert train and images.shape[0] == params["logits"].shape[0]
  return params["logits"], {"moving_mean": jnp.ones(())}


def make_batch():
  image = lambda n: jnp.zeros((n, 1, 1, 1), jnp.uint8)
  return {"labelled": {"image": image(2), "label": jnp.asarray(LABELS)},
          "unlabelled": {"weak": image(4), "strong": image(4), "index": jnp.arange(4),
                         "label": jnp.asarray(UNLABELLED_TRUE_LABELS)}}


def algo_config(**overrides):
  config = dict(threshold=0.5, lambda_u=2.0, temperature=1.0, soft_labels=False)
  config.update(overrides)
  return ml_collections.ConfigDict(config)


def run_loss(cfg):
  params = {"logits": jnp.asarray(LABELLED_LOGITS + WEAK_LOGITS + STRONG_LOGITS, jnp.float32)}

  def loss(params):
    return fixmatch.loss_fn(params, make_batch(), forward=fake_forward, algo_state={"kept": 1},
                            key=None, step=jnp.asarray(3), cfg=cfg,
                            num_classes=NUM_CLASSES)

  # One compiled function: eager op-by-op dispatch compiles every primitive separately.
  (value, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return value, aux, grads["logits"]


def softmax(logits):
  logits = np.asarray(logits, np.float64)
  exp = np.exp(logits - logits.max(-1, keepdims=True))
  return exp / exp.sum(-1, keepdims=True)


def test_threshold_example_is_exactly_at_threshold():
  # Precondition of the ">=" test below: softmax max is exactly 0.5 in float32.
  assert float(jnp.max(jax.nn.softmax(jnp.asarray(WEAK_LOGITS[0])))) == 0.5


def test_hard_label_loss_gradient_and_monitors_match_hand_computation():
  value, aux, grads = run_loss(algo_config())
  labelled_probs, weak_probs = softmax(LABELLED_LOGITS), softmax(WEAK_LOGITS)
  strong_probs = softmax(STRONG_LOGITS)
  mask = np.array([1.0, 0.0, 1.0, 0.0])
  pseudo_labels = weak_probs.argmax(-1)
  np.testing.assert_array_equal(pseudo_labels[[0, 2]], [0, 1])
  loss_sup = -np.mean(np.log(labelled_probs[[0, 1], LABELS]))
  per_example = -np.log(strong_probs[np.arange(4), pseudo_labels])
  # Divided by all 4 unlabelled examples, not by the 2 confident ones.
  loss_unsup = (per_example[0] + per_example[2]) / 4
  metrics = aux["metrics"]
  np.testing.assert_allclose(metrics["train/loss_sup"], loss_sup, rtol=1e-6)
  np.testing.assert_allclose(metrics["train/loss_unsup"], loss_unsup, rtol=1e-6)
  np.testing.assert_allclose(value, loss_sup + 2.0 * loss_unsup, rtol=1e-6)

  # d loss / d logits: (p - onehot)/B for labelled rows, lambda_u * mask * (p - onehot)/muB
  # for strong rows, and exactly zero for weak rows (the pseudo-labels are constants).
  expected = np.zeros((10, NUM_CLASSES))
  expected[:2] = (labelled_probs - np.eye(NUM_CLASSES)[LABELS]) / 2
  expected[6:] = 2.0 * mask[:, None] * (strong_probs - np.eye(NUM_CLASSES)[pseudo_labels]) / 4
  np.testing.assert_allclose(grads, expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(grads[2:6], 0.0)

  assert float(metrics["train/mask_rate"]) == 0.5
  # Masked pseudo-labels: u0 right (0), u2 wrong (1 vs 3); all four: u0 and u3 right.
  assert float(metrics["train/pseudo_label_acc"]) == 0.5
  assert float(metrics["train/pseudo_label_acc_all"]) == 0.5
  # True class 0: {u0} in; class 1: {u1} out; class 2: absent -> 0; class 3: {u2 in, u3 out}.
  np.testing.assert_allclose(metrics["train/per_class_mask_rate"], [1.0, 0.0, 0.0, 0.5])
  assert int(aux["algo_state"]["kept"]) == 1
  assert set(aux["batch_stats"]) == {"moving_mean"}


def test_masked_pseudo_label_accuracy_is_zero_when_nothing_is_confident():
  _, aux, grads = run_loss(algo_config(threshold=0.999))
  metrics = aux["metrics"]
  assert float(metrics["train/mask_rate"]) == 0.0
  assert float(metrics["train/pseudo_label_acc"]) == 0.0
  assert float(metrics["train/loss_unsup"]) == 0.0
  np.testing.assert_array_equal(grads[2:], 0.0)


def test_soft_labels_with_temperature():
  cfg = algo_config(soft_labels=True, temperature=0.5, threshold=0.6, lambda_u=1.0)
  value, aux, grads = run_loss(cfg)
  sharpened = softmax(np.asarray(WEAK_LOGITS) / 0.5)
  mask = (sharpened.max(-1) >= 0.6).astype(np.float64)
  assert mask.tolist() == [0.0, 0.0, 1.0, 0.0]
  per_example = -np.sum(sharpened * np.log(softmax(STRONG_LOGITS)), axis=-1)
  np.testing.assert_allclose(aux["metrics"]["train/loss_unsup"], np.sum(mask * per_example) / 4,
                             rtol=1e-5)
  loss_sup = -np.mean(np.log(softmax(LABELLED_LOGITS)[[0, 1], LABELS]))
  np.testing.assert_allclose(value, loss_sup + np.sum(mask * per_example) / 4, rtol=1e-5)
  np.testing.assert_array_equal(grads[2:6], 0.0)


def test_registered_with_weak_and_strong_views():
  algorithm = algorithms.get("fixmatch")
  assert algorithm.views == ("weak", "strong")
  assert algorithm.loss_fn is fixmatch.loss_fn
  assert algorithm.init_state(algo_config(), 100, NUM_CLASSES) == {}
  # The paper's hyperparameters (Sec. 4): tau = 0.95, lambda_u = 1, hard labels.
  assert algorithm.default_config().to_dict() == dict(
      threshold=0.95, lambda_u=1.0, temperature=1.0, soft_labels=False)


def test_hyperparameters_come_from_config():
  # A config without the hyperparameters fails loudly instead of falling back to literals.
  with pytest.raises(AttributeError):
    run_loss(ml_collections.ConfigDict({"lambda_u": 1.0}))


def test_monitors_skip_examples_without_a_true_label():
  """STL-10's unlabelled images carry label -1: they count in no monitor."""
  mask = jnp.array([1.0, 1.0, 0.0, 1.0])
  pseudo = jnp.array([0, 1, 1, 2])
  true = jnp.array([0, -1, 1, 1])
  out = fixmatch.pseudo_label_monitors(mask, pseudo, true, 3)
  # Masked and known: rows 0 (correct) and 3 (wrong) -> 1/2. Known: rows 0, 2, 3; correct
  # rows 0 and 2 -> 2/3. Class 1 has rows 2 (unmasked) and 3 (masked) -> 1/2.
  np.testing.assert_allclose(out["train/pseudo_label_acc"], 0.5)
  np.testing.assert_allclose(out["train/pseudo_label_acc_all"], 2 / 3, rtol=1e-6)
  np.testing.assert_allclose(out["train/per_class_mask_rate"], [1.0, 0.5, 0.0])
