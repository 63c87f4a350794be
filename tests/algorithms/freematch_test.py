"""FreeMatch: self-adaptive thresholds, fairness term and state against a NumPy reference.

The fake forward returns its parameters as the logits of concat[labelled, weak, strong]. The
oracle (`numpy_step`) writes the paper's EMA updates, MaxNorm thresholds and the fairness term
in float64; two consecutive steps are compared, and the gradient with respect to the strong
logits is checked against central finite differences of the oracle.
"""
import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fixmatch_jax import algorithms, checkpointing, configs, steps, train_state
from fixmatch_jax.algorithms import freematch

NUM_CLASSES, MOMENTUM = 3, 0.5
LABELLED_LOGITS = [[1.0, 0.0, 0.0], [0.0, 0.5, 2.0]]
LABELS = [0, 2]
# Two steps of four unlabelled examples: (weak logits, strong logits).
STEPS = [
    ([[3.0, 0.0, 0.0], [0.0, 2.5, 0.0], [0.2, 0.0, 0.1], [4.0, 0.0, 1.0]],
     [[1.0, 0.2, 0.0], [0.0, 0.3, 0.1], [0.5, 0.0, 0.4], [0.3, 0.9, 0.0]]),
    ([[0.0, 0.0, 3.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.9], [0.1, 0.0, 0.0]],
     [[0.0, 0.1, 0.7], [0.6, 0.0, 0.2], [0.0, 0.8, 0.0], [0.2, 0.1, 0.0]]),
]


def cfg(**overrides):
  config = freematch.default_config()
  config.update(dict(ema_momentum=MOMENTUM, fairness_weight=0.5, lambda_u=2.0))
  config.update(overrides)
  return config


@steps.forward_groups
def fake_forward(params, images, *, train, rngs=None, batch_stats=None):
  del rngs, batch_stats
  assert train and images.shape[0] == params["logits"].shape[0]
  return params["logits"], {}


def softmax(logits):
  logits = np.asarray(logits, np.float64)
  exp = np.exp(logits - logits.max(-1, keepdims=True))
  return exp / exp.sum(-1, keepdims=True)


def numpy_step(state, weak_logits, strong_logits, lambda_u=2.0, fairness_weight=0.5):
  """(new state, mask, loss_unsup, loss_fairness, total loss) of the paper's equations."""
  tau, p_model, label_hist = state
  q = softmax(weak_logits)
  confidence, pseudo = q.max(-1), q.argmax(-1)
  tau = MOMENTUM * tau + (1 - MOMENTUM) * confidence.mean()
  p_model = MOMENTUM * p_model + (1 - MOMENTUM) * q.mean(0)
  label_hist = (MOMENTUM * label_hist
                + (1 - MOMENTUM) * np.bincount(pseudo, minlength=NUM_CLASSES) / len(pseudo))
  thresholds = p_model / p_model.max() * tau
  mask = confidence >= thresholds[pseudo]
  strong = softmax(strong_logits)
  loss_unsup = np.sum(-np.log(strong[np.arange(len(pseudo)), pseudo]) * mask) / len(pseudo)
  if mask.any():
    mean_probs = strong[mask].mean(0)
    histogram = np.bincount(strong[mask].argmax(-1), minlength=NUM_CLASSES) / mask.sum()
    target = p_model / label_hist
    target = target / target.sum()
    scaled = np.array([m / h if h > 0 else 0.0 for m, h in zip(mean_probs, histogram, strict=True)])
    scaled = scaled / scaled.sum()
    loss_fair = np.sum(target * np.log(scaled + 1e-12))
  else:
    loss_fair = 0.0
  loss_sup = -np.mean(np.log(softmax(LABELLED_LOGITS)[[0, 1], LABELS]))
  total = loss_sup + lambda_u * loss_unsup + fairness_weight * loss_fair
  return (tau, p_model, label_hist), mask.astype(np.float64), loss_unsup, loss_fair, total


@functools.cache
def compiled_loss(config_items):
  config = ml_collections.ConfigDict(dict(config_items))

  def loss(params, state, batch):
    return freematch.loss_fn(params, batch, forward=fake_forward, algo_state=state, key=None,
                             step=jnp.asarray(0), cfg=config, num_classes=NUM_CLASSES,
                             some_future_keyword=None)
  return jax.jit(jax.value_and_grad(loss, has_aux=True))


def run_step(state, step, config):
  weak, strong = STEPS[step]
  params = {"logits": jnp.asarray(LABELLED_LOGITS + weak + strong, jnp.float32)}
  image = lambda n: jnp.zeros((n, 1, 1, 1), jnp.uint8)
  batch = {"labelled": {"image": image(2), "label": jnp.asarray(LABELS)},
           "unlabelled": {"weak": image(4), "strong": image(4), "index": jnp.arange(4),
                          "label": jnp.asarray([0, 1, 2, 0])}}
  (value, aux), grads = compiled_loss(tuple(sorted(config.items())))(params, state, batch)
  return value, aux, grads["logits"]


def test_two_steps_match_numpy_reference_including_gradient():
  config = cfg()
  state = freematch.init_state(config, 10, NUM_CLASSES)
  reference = (1 / 3, np.full(3, 1 / 3), np.full(3, 1 / 3))
  masks, fairness = [], []
  for step in range(2):
    value, aux, grads = run_step(state, step, config)
    weak, strong = STEPS[step]
    new_reference, mask, loss_unsup, loss_fair, total = numpy_step(reference, weak, strong)
    state = aux["algo_state"]
    np.testing.assert_allclose(state["global_threshold"], new_reference[0], rtol=1e-6)
    np.testing.assert_allclose(state["p_model"], new_reference[1], rtol=1e-6)
    np.testing.assert_allclose(state["label_hist"], new_reference[2], rtol=1e-6)
    metrics = aux["metrics"]
    np.testing.assert_allclose(metrics["train/mask_rate"], mask.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["train/loss_unsup"], loss_unsup, rtol=1e-5)
    np.testing.assert_allclose(metrics["train/loss_fairness"], loss_fair, rtol=1e-5)
    np.testing.assert_allclose(value, total, rtol=1e-5)
    # Weak rows carry no gradient; strong rows match finite differences of the oracle.
    np.testing.assert_array_equal(grads[2:6], 0.0)
    numeric = np.zeros((4, NUM_CLASSES))
    for i in range(4):
      for c in range(NUM_CLASSES):
        plus, minus = np.array(strong), np.array(strong)
        plus[i, c] += 1e-5
        minus[i, c] -= 1e-5
        numeric[i, c] = (numpy_step(reference, weak, plus)[4]
                         - numpy_step(reference, weak, minus)[4]) / 2e-5
    np.testing.assert_allclose(grads[6:], numeric, atol=2e-5)
    reference = new_reference
    masks.append(mask)
    fairness.append(loss_fair)
  # The steps exercise both sides of the thresholds and a class the masked strong
  # predictions never hit (h_bar = 0 -> 0, not p / 0).
  assert masks[0].tolist() == [1.0, 1.0, 0.0, 1.0] and 0 < masks[1].sum() < 4
  assert all(np.isfinite(fairness)) and fairness[0] != 0.0


def test_nothing_masked_gives_zero_fairness_and_finite_gradients():
  # USB's initial values: thresholds start near 1, nothing passes with momentum 0.999.
  config = cfg(state_init="usb", ema_momentum=0.999)
  state = freematch.init_state(config, 10, NUM_CLASSES)
  assert float(state["global_threshold"]) == 1.0
  _, aux, grads = run_step(state, 0, config)
  assert float(aux["metrics"]["train/mask_rate"]) == 0.0
  assert float(aux["metrics"]["train/loss_fairness"]) == 0.0
  assert np.all(np.isfinite(grads)) and np.all(grads[2:] == 0.0)


def test_initial_state_and_bad_init_name():
  state = freematch.init_state(cfg(), 10, 4)
  np.testing.assert_allclose(state["p_model"], 0.25)
  np.testing.assert_allclose(state["label_hist"], 0.25)
  assert float(state["global_threshold"]) == 0.25
  with pytest.raises(ValueError, match="state_init"):
    freematch.init_state(cfg(state_init="zeros"), 10, 4)


def test_state_restored_exactly_from_checkpoint(tmp_path):
  config = cfg()
  state = freematch.init_state(config, 10, NUM_CLASSES)
  for step in range(2):
    state = run_step(state, step, config)[1]["algo_state"]
  holder = lambda algo_state: train_state.TrainState(
      step=jnp.asarray(2, jnp.int32), params={"w": jnp.ones(2)}, batch_stats={}, opt_state=(),
      ema_params={"w": jnp.ones(2)}, algo_state=algo_state,
      rng=jax.random.key_data(jax.random.key(0)))
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=1)
  checkpointer.save(2, holder(state), wait=True)
  restored, _ = checkpointer.restore(holder(freematch.init_state(config, 10, NUM_CLASSES)))
  checkpointer.close()
  for key, value in state.items():
    assert restored.algo_state[key].dtype == value.dtype
    np.testing.assert_array_equal(restored.algo_state[key], value)
  assert float(restored.algo_state["global_threshold"]) != 1 / 3


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("labels", [40, 250, 4000])
def test_config_builds_through_flags_and_carries_the_recipe(labels):
  from absl import flags
  from ml_collections import config_flags
  argv = ["prog", f"--config={REPO}/experiments/freematch_cifar10.py:labels={labels},seed=3"]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  config = flag_values.config
  configs.validate(config)
  assert config.algorithm == "freematch"
  assert algorithms.get(config.algorithm).views == ("weak", "strong")
  assert (config.data.dataset, config.data.num_labels, config.seed) == ("cifar10", labels, 3)
  # USB config/classic_cv/freematch/freematch_cifar10_*_0.yaml: ema_p 0.999,
  # ent_loss_ratio 0.001, uratio 7, batch 64, lr 0.03, momentum 0.9, wd 5e-4, ema_m 0.999,
  # 2^20 iterations, wrn_28_2; hard labels; w_u = 1.
  assert config.algo.to_dict() == dict(lambda_u=1.0, ema_momentum=0.999,
                                        fairness_weight=0.001, state_init="paper")
  assert config.data.batch_size == 64 and config.data.mu == 7
  assert config.optim.lr == 0.03 and config.optim.momentum == 0.9 and config.optim.nesterov
  assert config.optim.weight_decay == 5e-4 and config.optim.ema_decay == 0.999
  assert config.train.num_steps == 2**20 and config.model.name == "wrn28_2"
