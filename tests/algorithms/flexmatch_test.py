"""FlexMatch: loss, class-wise thresholds and their state against a NumPy re-implementation.

The fake forward returns its parameters as the logits of concat[labelled, weak, strong]. The
oracle (`numpy_step`) follows the paper's curriculum pseudo-labelling with a Counter over the
selected labels, as the official hook counts them; three consecutive steps are compared.
"""
import collections
import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fixmatch_jax import algorithms, checkpointing, configs, steps, train_state
from fixmatch_jax.algorithms import flexmatch

NUM_CLASSES, NUM_EXAMPLES, TAU = 3, 6, 0.95
LABELLED_LOGITS = [[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]]
LABELS = [0, 2]
# Three steps: (unlabelled indices, weak logits, strong logits, true labels).
STEPS = [
    ([0, 1, 2], [[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [1.0, 0.0, 0.0]],
     [[0.5, 0.0, 0.2], [0.1, 0.3, 0.0], [0.0, 0.0, 1.0]], [0, 1, 2]),
    ([3, 4, 5], [[4.0, 0.0, 0.0], [6.0, 0.0, 0.5], [0.0, 0.2, 0.1]],
     [[1.0, 0.0, 0.0], [0.2, 0.2, 0.0], [0.0, 1.0, 0.0]], [0, 0, 1]),
    ([0, 2, 5], [[0.3, 0.1, 0.0], [0.0, 0.0, 5.0], [0.0, 0.6, 0.0]],
     [[0.0, 0.4, 0.0], [0.3, 0.0, 0.9], [0.0, 0.0, 0.0]], [0, 2, 1]),
]


def cfg(**overrides):
  config = flexmatch.default_config()
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


def numpy_step(selected, acc, weak_logits, index, *, warmup, mapping):
  """One step of the paper's algorithm: mask from the old beta, then update sigma and beta."""
  probs = softmax(weak_logits)
  confidence, pseudo = probs.max(-1), probs.argmax(-1)
  mapped = acc / (2 - acc) if mapping == "convex" else acc
  mask = (confidence >= TAU * mapped[pseudo]).astype(np.float64)
  selected = selected.copy()
  for i, n in enumerate(index):
    if confidence[i] >= TAU:
      selected[n] = pseudo[i]
  counter = collections.Counter(selected.tolist())
  acc = acc.copy()
  if max(counter.values()) < len(selected):
    if warmup:
      denominator = max(counter.values())
    else:
      denominator = max(v for k, v in counter.items() if k != -1)
    acc = np.array([counter[c] / denominator for c in range(NUM_CLASSES)])
  return selected, acc, mask, pseudo


def run_step(state, step, config):
  index, weak, strong, true = STEPS[step]
  params = {"logits": jnp.asarray(LABELLED_LOGITS + weak + strong, jnp.float32)}
  batch = {"labelled": {"image": jnp.zeros((2, 1, 1, 1), jnp.uint8), "label": jnp.asarray(LABELS)},
           "unlabelled": {"weak": jnp.zeros((3, 1, 1, 1), jnp.uint8),
                          "strong": jnp.zeros((3, 1, 1, 1), jnp.uint8),
                          "index": jnp.asarray(index), "label": jnp.asarray(true)}}

  (value, aux), grads = compiled_loss(tuple(sorted(config.items())))(params, state, batch)
  return value, aux, grads["logits"]


@functools.cache
def compiled_loss(config_items):
  """One compiled value-and-grad per config (op-by-op dispatch would compile every op)."""
  config = ml_collections.ConfigDict(dict(config_items))

  def loss(params, state, batch):
    return flexmatch.loss_fn(params, batch, forward=fake_forward, algo_state=state, key=None,
                             step=jnp.asarray(0), cfg=config, num_classes=NUM_CLASSES,
                             some_future_keyword=None)
  return jax.jit(jax.value_and_grad(loss, has_aux=True))


@pytest.mark.parametrize("warmup,mapping", [(True, "convex"), (False, "convex"),
                                            (True, "linear")])
def test_three_steps_match_numpy_reference(warmup, mapping):
  config = cfg(threshold_warmup=warmup, mapping=mapping, lambda_u=2.0)
  state = flexmatch.init_state(config, NUM_EXAMPLES, NUM_CLASSES)
  selected, acc = -np.ones(NUM_EXAMPLES, np.int64), np.zeros(NUM_CLASSES)
  masks, betas = [], []
  for step in range(3):
    index, weak, strong, _ = STEPS[step]
    value, aux, grads = run_step(state, step, config)
    selected, acc, mask, pseudo = numpy_step(selected, acc, weak, index, warmup=warmup,
                                             mapping=mapping)
    masks.append(mask)
    betas.append(acc)
    state = aux["algo_state"]
    np.testing.assert_array_equal(state["selected_label"], selected)
    np.testing.assert_allclose(state["classwise_acc"], acc, rtol=1e-6)
    loss_sup = -np.mean(np.log(softmax(LABELLED_LOGITS)[[0, 1], LABELS]))
    per_example = -np.log(softmax(strong)[np.arange(3), pseudo])
    loss_unsup = np.sum(mask * per_example) / 3
    np.testing.assert_allclose(aux["metrics"]["train/loss_unsup"], loss_unsup, rtol=1e-5)
    np.testing.assert_allclose(value, loss_sup + 2.0 * loss_unsup, rtol=1e-5)
    np.testing.assert_allclose(aux["metrics"]["train/mask_rate"], mask.mean(), rtol=1e-6)
    # No gradient through the weak pseudo-labels.
    np.testing.assert_array_equal(grads[2:5], 0.0)
  # The reference itself: the first step sees beta = 0 (thresholds 0, all in); the second
  # uses beta after one step; the hand values pin the warm-up denominator.
  np.testing.assert_array_equal(masks[0], [1.0, 1.0, 1.0])
  if warmup and mapping == "convex":
    # After step 1: selected [0, 1, -1, -1, -1, -1] -> beta = (1/4, 1/4, 0) (4 unused);
    # step 2's weak row 2 (class 1, confidence 0.37) passes T(1) = 0.95 (1/4) / (7/4) = 0.136.
    np.testing.assert_allclose(betas[0], [0.25, 0.25, 0.0])
    np.testing.assert_array_equal(masks[1], [1.0, 1.0, 1.0])
    # After step 2: selected [0, 1, -1, 0, 0, -1] -> counts 3, 1, 0 and 2 unused: beta =
    # (1, 1/3, 0), T = (0.95, 0.19, 0): step 3 drops row 0 (class 0, confidence 0.39).
    np.testing.assert_allclose(betas[1], [1.0, 1 / 3, 0.0])
    np.testing.assert_array_equal(masks[2], [0.0, 1.0, 1.0])
    # Step 3 selects example 2 as class 2: counts 3, 1, 1, 1 unused.
    np.testing.assert_allclose(betas[2], [1.0, 1 / 3, 1 / 3])


def test_learning_effect_keeps_previous_value_while_one_bucket_holds_everything():
  previous = jnp.asarray([0.3, 0.2, 0.1])
  for warmup in (True, False):
    all_unused = jnp.full((4,), -1, jnp.int32)
    np.testing.assert_allclose(
        flexmatch.learning_effect(all_unused, previous, threshold_warmup=warmup), previous)
    all_class_one = jnp.ones((4,), jnp.int32)
    np.testing.assert_allclose(
        flexmatch.learning_effect(all_class_one, previous, threshold_warmup=warmup), previous)
  mixed = jnp.asarray([1, 1, -1, 2], jnp.int32)
  np.testing.assert_allclose(
      flexmatch.learning_effect(mixed, previous, threshold_warmup=False), [0.0, 1.0, 0.5])
  np.testing.assert_allclose(
      flexmatch.learning_effect(mixed, previous, threshold_warmup=True), [0.0, 1.0, 0.5])


def test_unknown_mapping_is_rejected():
  with pytest.raises(ValueError, match="mapping"):
    flexmatch.class_thresholds(jnp.zeros(3), cfg(mapping="concave"))


def state_with(algo_state):
  """A TrainState holding `algo_state` (tiny stand-ins elsewhere: no model to initialise)."""
  return train_state.TrainState(
      step=jnp.asarray(3, jnp.int32), params={"w": jnp.ones(2)}, batch_stats={},
      opt_state=(), ema_params={"w": jnp.ones(2)}, algo_state=algo_state,
      rng=jax.random.key_data(jax.random.key(0)))


def test_state_restored_exactly_from_checkpoint(tmp_path):
  config = cfg()
  state = flexmatch.init_state(config, NUM_EXAMPLES, NUM_CLASSES)
  for step in range(3):
    state = run_step(state, step, config)[1]["algo_state"]
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=1)
  checkpointer.save(3, state_with(state), wait=True)
  # Restored onto a fresh state's structure, as train.py resumes.
  fresh = state_with(flexmatch.init_state(config, NUM_EXAMPLES, NUM_CLASSES))
  restored, step = checkpointer.restore(fresh)
  checkpointer.close()
  assert step == 3
  for key in ("selected_label", "classwise_acc"):
    assert restored.algo_state[key].dtype == state[key].dtype
    np.testing.assert_array_equal(restored.algo_state[key], state[key])
  assert not np.array_equal(restored.algo_state["selected_label"],
                            fresh.algo_state["selected_label"])


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("labels", [40, 250, 4000])
def test_paper_config_builds_through_flags_and_carries_the_recipe(labels):
  from absl import flags
  from ml_collections import config_flags
  argv = ["prog", f"--config={REPO}/experiments/flexmatch_cifar10.py:labels={labels},seed=2"]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  config = flag_values.config
  configs.validate(config)
  assert config.algorithm == "flexmatch" and algorithms.get(config.algorithm).views == (
      "weak", "strong")
  assert (config.data.dataset, config.data.num_labels, config.seed) == ("cifar10", labels, 2)
  # Zhang et al. 2021, Sec. 4.1 (TorchSSL's FixMatch recipe): tau 0.95, lambda_u 1,
  # threshold warm-up, convex mapping; B 64, mu 7, SGD-Nesterov lr 0.03, cosine 7/16 over
  # 2^20 steps, wd 5e-4, EMA 0.999, WRN-28-2.
  assert config.algo.to_dict() == dict(threshold=0.95, lambda_u=1.0, threshold_warmup=True,
                                        mapping="convex")
  assert config.data.batch_size == 64 and config.data.mu == 7
  assert config.data.unlabelled_includes_labelled
  assert config.optim.lr == 0.03 and config.optim.nesterov and config.optim.momentum == 0.9
  assert config.optim.schedule == "cosine" and config.optim.cosine_cycles == 7 / 16
  assert config.train.num_steps == 2**20 == config.optim.decay_steps
  assert config.optim.weight_decay == 5e-4 and config.optim.ema_decay == 0.999
  assert config.model.name == "wrn28_2"
