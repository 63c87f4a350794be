"""Arazo et al. 2019: mixup loss with R_A and R_H, the soft pseudo-label state, the warm-up,
and the minimum-labelled-per-batch guarantee of the input pipeline.

The fake forward returns fixed logits chosen by the number of rows it is given (unlabelled
raw pass, labelled + unlabelled mixup pass, labelled-only warm-up pass) and a BatchNorm
stand-in that records which passes were chained. The oracle is NumPy in float64.
"""
import functools
import itertools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fixmatch_jax import algorithms, checkpointing, configs, train_state
from fixmatch_jax.algorithms import arazo
from fixmatch_jax.data import pipeline, sources, splits

NUM_CLASSES, NUM_EXAMPLES = 3, 8
LABELS = [2, 0]
INDEX = [5, 1, 6]
UNLABELLED_TRUE = [1, 0, 2]
RAW_LOGITS = [[0.2, 1.5, 0.0], [2.0, 0.1, 0.3], [0.0, 0.4, 0.9]]
MIXED_LOGITS = [[0.1, 0.0, 1.2], [1.0, 0.2, 0.0], [0.0, 0.8, 0.3], [0.5, 0.5, 0.0],
                [0.0, 0.1, 0.6]]
LABELLED_LOGITS = [[0.3, 0.0, 0.9], [1.1, 0.2, 0.0]]
# Stored soft labels of example 5 (seen before) and 1 (seen); 6 has never been visited.
STORED = {5: [0.1, 0.7, 0.2], 1: [0.6, 0.3, 0.1]}


def cfg(**overrides):
  config = arazo.default_config()
  config.update(dict(min_labelled_per_batch=2, warmup_steps=10))
  config.update(overrides)
  return config


def fake_forward(params, images, *, train, rngs=None, batch_stats=None):
  """Logits by row count; batch_stats["trace"] = 10 * incoming trace + rows (chaining record)."""
  del rngs
  assert train
  logits = {3: params["raw"], 5: params["mixed"], 2: params["labelled"]}[images.shape[0]]
  incoming = 0 if batch_stats is None else batch_stats["trace"]
  return logits, {"trace": incoming * 10 + images.shape[0]}


def softmax(logits):
  logits = np.asarray(logits, np.float64)
  exp = np.exp(logits - logits.max(-1, keepdims=True))
  return exp / exp.sum(-1, keepdims=True)


def initial_state():
  state = arazo.init_state(cfg(), NUM_EXAMPLES, NUM_CLASSES)
  soft = np.array(state["soft_labels"])
  seen = np.array(state["seen"])
  for n, label in STORED.items():
    soft[n], seen[n] = label, True
  return {"soft_labels": jnp.asarray(soft), "seen": jnp.asarray(seen)}


@functools.cache
def compiled_loss(config_items):
  config = ml_collections.ConfigDict(dict(config_items))

  def loss(params, state, batch, key, step):
    return arazo.loss_fn(params, batch, forward=fake_forward, algo_state=state, key=key,
                         step=step, cfg=config, num_classes=NUM_CLASSES,
                         some_future_keyword=None)
  return jax.jit(jax.value_and_grad(loss, has_aux=True))


def run_loss(config, *, step, key=None):
  key = jax.random.key(3) if key is None else key
  params = {name: jnp.asarray(value, jnp.float32) for name, value in
            (("raw", RAW_LOGITS), ("mixed", MIXED_LOGITS), ("labelled", LABELLED_LOGITS))}
  image = lambda n: jnp.zeros((n, 2, 2, 1), jnp.uint8)
  batch = {"labelled": {"image": image(2), "label": jnp.asarray(LABELS)},
           "unlabelled": {"weak": image(3), "raw": image(3), "index": jnp.asarray(INDEX),
                          "label": jnp.asarray(UNLABELLED_TRUE)}}
  fn = compiled_loss(tuple(sorted(config.items())))
  (value, aux), grads = fn(params, initial_state(), batch, key, jnp.asarray(step))
  return value, aux, grads


# Compiled once: op-by-op, Beta sampling alone compiles dozens of small programs.
jitted_mixup = jax.jit(arazo.mixup, static_argnums=3)


def numpy_regularised_loss(logits, targets, prior_weight=0.8, entropy_weight=0.4):
  probs = softmax(logits)
  cross_entropy = -np.sum(targets * np.log(probs), axis=-1)
  mean_probs = probs.mean(0)
  prior_kl = np.sum(np.full(NUM_CLASSES, 1 / NUM_CLASSES)
                    * np.log((1 / NUM_CLASSES) / mean_probs))
  entropy = -np.mean(np.sum(probs * np.log(probs), axis=-1))
  return cross_entropy, cross_entropy.mean() + prior_weight * prior_kl + entropy_weight * entropy


def expected_targets():
  """Labelled: one-hot; unlabelled: stored soft label, or today's prediction if never seen."""
  raw = softmax(RAW_LOGITS)
  unlabelled = np.stack([STORED[n] if n in STORED else raw[i] for i, n in enumerate(INDEX)])
  return np.concatenate([np.eye(NUM_CLASSES)[LABELS], unlabelled])


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_semi_supervised_loss_state_and_gradients_match_numpy(alpha):
  key = jax.random.key(7)
  value, aux, grads = run_loss(cfg(mixup_alpha=alpha), step=10, key=key)
  targets = expected_targets()
  if alpha:
    # delta and the permutation are those of `mixup` for this key (tested on its own below).
    _, _, delta, permutation = jitted_mixup(key, jnp.zeros((5, 2, 2, 1), jnp.uint8),
                                           jnp.asarray(targets, jnp.float32), alpha)
    delta, permutation = float(delta), np.asarray(permutation)
    assert 0.0 < delta < 1.0 and sorted(permutation) == list(range(5))
    targets = delta * targets + (1 - delta) * targets[permutation]
  per_row, total = numpy_regularised_loss(MIXED_LOGITS, targets)
  np.testing.assert_allclose(value, total, rtol=1e-5)
  metrics = aux["metrics"]
  np.testing.assert_allclose(metrics["train/loss_sup"], per_row[:2].mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["train/loss_unsup"], per_row[2:].mean(), rtol=1e-5)
  assert float(metrics["train/mask_rate"]) == 1.0
  # Pseudo-labels used: argmax of [0.1, 0.7, 0.2], [0.6, 0.3, 0.1], softmax(raw row 2) -> 1, 0, 2.
  assert float(metrics["train/pseudo_label_acc"]) == 1.0

  # The state now holds today's predictions for the visited examples, and nothing else moved.
  state, before = aux["algo_state"], initial_state()
  expected_soft = np.array(before["soft_labels"])
  expected_soft[INDEX] = softmax(RAW_LOGITS)
  np.testing.assert_allclose(state["soft_labels"], expected_soft, rtol=1e-6)
  np.testing.assert_array_equal(np.flatnonzero(state["seen"]), sorted({*INDEX, *STORED}))

  # Gradient: only the mixup pass is trained; the pseudo-label pass is a constant.
  np.testing.assert_array_equal(grads["raw"], 0.0)
  np.testing.assert_array_equal(grads["labelled"], 0.0)
  assert np.abs(grads["mixed"]).max() > 0
  # BatchNorm: the mixup pass starts from the raw pass's statistics (3 rows, then 5).
  assert int(aux["batch_stats"]["trace"]) == 35


def test_warmup_trains_on_labelled_images_only_but_refreshes_pseudo_labels():
  value, aux, grads = run_loss(cfg(mixup_alpha=0.0), step=9)
  _, total = numpy_regularised_loss(LABELLED_LOGITS, np.eye(NUM_CLASSES)[LABELS])
  np.testing.assert_allclose(value, total, rtol=1e-5)
  np.testing.assert_array_equal(grads["mixed"], 0.0)
  np.testing.assert_array_equal(grads["raw"], 0.0)
  assert float(aux["metrics"]["train/mask_rate"]) == 0.0
  assert float(aux["metrics"]["train/loss_unsup"]) == 0.0
  np.testing.assert_allclose(aux["algo_state"]["soft_labels"][np.asarray(INDEX)],
                             softmax(RAW_LOGITS), rtol=1e-6)
  # The raw pass's BatchNorm update is dropped: only the labelled pass (2 rows) counts.
  assert int(aux["batch_stats"]["trace"]) == 2


def test_mixup_mixes_images_and_targets_with_one_delta_and_a_permutation():
  # Image i is constant i, target i is one-hot(i): every output row names its two sources.
  images = jnp.broadcast_to(jnp.arange(6, dtype=jnp.uint8)[:, None, None, None], (6, 2, 2, 1))
  targets = jnp.eye(6)
  mixed, mixed_targets, delta, permutation = jitted_mixup(jax.random.key(0), images, targets,
                                                          1.0)
  delta, permutation = float(delta), np.asarray(permutation)
  assert sorted(permutation) == list(range(6))
  inputs = np.arange(6) * 2 / 255 - 1  # the models' uint8 -> [-1, 1] scaling
  np.testing.assert_allclose(mixed[:, 0, 0, 0],
                             delta * inputs + (1 - delta) * inputs[permutation], rtol=1e-5)
  np.testing.assert_allclose(mixed_targets,
                             delta * np.eye(6) + (1 - delta) * np.eye(6)[permutation], atol=1e-6)
  # delta ~ Beta(1, 1) = U(0, 1): over 200 keys the mean is 1/2 +/- 0.02 (one sd).
  deltas = np.array([float(jitted_mixup(k, images, targets, 1.0)[2])
                     for k in jax.random.split(jax.random.key(1), 200)])
  assert abs(deltas.mean() - 0.5) < 0.07 and deltas.min() < 0.1 and deltas.max() > 0.9
  # alpha = 0: no mixing.
  same, same_targets, one, _ = jitted_mixup(jax.random.key(0), images, targets, 0.0)
  np.testing.assert_allclose(same[:, 0, 0, 0], inputs, rtol=1e-6)
  assert float(one) == 1.0 and np.array_equal(same_targets, targets)


def test_regularisers_match_numpy():
  logits = np.array([[0.3, -1.0, 2.0], [1.5, 0.0, 0.2], [0.0, 0.0, 0.0], [-0.5, 2.0, 1.0]])
  prior_kl, entropy = arazo.regularisers(jnp.asarray(logits, jnp.float32))
  probs = softmax(logits)
  np.testing.assert_allclose(prior_kl, np.sum(np.log((1 / 3) / probs.mean(0))) / 3, rtol=1e-5)
  np.testing.assert_allclose(entropy, -np.mean(np.sum(probs * np.log(probs), -1)), rtol=1e-5)
  # R_A is 0 exactly when the batch-mean prediction is uniform.
  assert abs(float(arazo.regularisers(jnp.eye(3) * 4.0)[0])) < 1e-6


def test_too_few_labelled_images_is_refused():
  with pytest.raises(ValueError, match="min_labelled_per_batch"):
    run_loss(cfg(min_labelled_per_batch=3), step=10)


def test_pipeline_guarantees_the_minimum_labelled_per_batch():
  """The two-stream pipeline with the Arazo data settings: every batch has exactly
  batch_size >= min_labelled_per_batch labelled images, no labelled image among the
  unlabelled rows, every labelled image once per labelled epoch, and a raw view equal to
  the stored (non-augmented) image."""
  num_train, batch_size = 40, 4
  images = np.broadcast_to((np.arange(num_train) + 1).astype(np.uint8)[:, None, None, None],
                           (num_train, 6, 6, 1)).copy()  # image i is constant i + 1
  source = sources.ArraySource(name="index", images=images,
                               labels=np.arange(num_train, dtype=np.int64) % 4, num_classes=4)
  config_data = ml_collections.ConfigDict(dict(
      dataset="synthetic", dataset_options=ml_collections.ConfigDict(), num_labels=8,
      unlabelled_includes_labelled=False, batch_size=batch_size, mu=3, eval_batch_size=8,
      weak=dict(flip=True, pad_fraction=2 / 32),
      strong=dict(name="randaugment", num_ops=2, prob=0.5, min_level=1, max_level=9,
                  magnitude=-1, variant="fixmatch", cutout=0.5),
      prefetch=1, num_parallel_calls=1))
  split = splits.make_split(config_data, source, 1)
  labelled_set = set(split.labelled.tolist())
  assert len(labelled_set) == 8 and not labelled_set & set(split.unlabelled.tolist())
  stream = pipeline.train_stream(config_data, source, split, views=arazo.ARAZO.views, seed=1,
                                 process_index=0, process_count=1)
  seen_labelled = []
  for batch in itertools.islice(stream, 6):
    labelled_ids = batch["labelled"]["image"][:, 0, 0, 0].astype(int) - 1
    assert len(labelled_ids) == batch_size >= cfg(min_labelled_per_batch=4).min_labelled_per_batch
    assert set(labelled_ids.tolist()) <= labelled_set
    unlabelled_index = batch["unlabelled"]["index"]
    assert not set(unlabelled_index.tolist()) & labelled_set
    np.testing.assert_array_equal(batch["unlabelled"]["raw"], images[unlabelled_index])
    seen_labelled.extend(labelled_ids.tolist())
  # 6 steps x 4 = 3 labelled epochs of 8: each labelled image exactly 3 times.
  assert sorted(seen_labelled) == sorted(list(labelled_set) * 3)


def test_state_restored_exactly_from_checkpoint(tmp_path):
  _, aux, _ = run_loss(cfg(), step=10)
  state = aux["algo_state"]
  holder = lambda algo_state: train_state.TrainState(
      step=jnp.asarray(11, jnp.int32), params={"w": jnp.ones(2)}, batch_stats={}, opt_state=(),
      ema_params={"w": jnp.ones(2)}, algo_state=algo_state,
      rng=jax.random.key_data(jax.random.key(0)))
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=1)
  checkpointer.save(11, holder(state), wait=True)
  restored, _ = checkpointer.restore(holder(arazo.init_state(cfg(), NUM_EXAMPLES, NUM_CLASSES)))
  checkpointer.close()
  for key in ("soft_labels", "seen"):
    assert restored.algo_state[key].dtype == state[key].dtype
    np.testing.assert_array_equal(restored.algo_state[key], state[key])
  assert restored.algo_state["seen"].sum() == len({*INDEX, *STORED}) == 3


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("labels", [500, 1000, 4000])
def test_paper_config_builds_through_flags_and_carries_the_recipe(labels):
  from absl import flags
  from ml_collections import config_flags
  argv = ["prog", f"--config={REPO}/experiments/arazo_cifar10.py:labels={labels},seed=4"]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  config = flag_values.config
  configs.validate(config)
  assert config.algorithm == "arazo" and algorithms.get("arazo").views == ("weak", "raw")
  assert (config.data.dataset, config.data.num_labels, config.seed) == ("cifar10", labels, 4)
  # Arazo et al. 2019 (recipes.md): mixup alpha 1, 0.8 R_A + 0.4 R_H, >= 16 labelled per
  # batch, 10 labelled warm-up epochs, SGD 0.9 lr 0.1 /10 at epochs 250 and 350 of 400,
  # wd 1e-4, dropout 0.1.
  algo = config.algo
  assert (algo.mixup_alpha, algo.prior_weight, algo.entropy_weight) == (1.0, 0.8, 0.4)
  assert algo.min_labelled_per_batch == 16 <= config.data.batch_size
  assert not config.data.unlabelled_includes_labelled
  assert algo.warmup_steps == int(np.ceil(10 * labels / config.data.batch_size))
  epoch = (50000 - labels) // (config.data.batch_size * config.data.mu)
  assert config.train.num_steps == algo.warmup_steps + 400 * epoch == config.optim.decay_steps
  assert tuple(config.optim.boundaries) == (algo.warmup_steps + 250 * epoch,
                                            algo.warmup_steps + 350 * epoch)
  assert config.optim.schedule == "step" and config.optim.boundary_factor == 0.1
  assert config.optim.lr == 0.1 and config.optim.momentum == 0.9 and not config.optim.nesterov
  assert config.optim.weight_decay == 1e-4
  assert config.model.name == "cnn13" and config.model.dropout_rate == 0.1
  assert config.train.eval_every_steps == epoch
