"""Bad input reaching `train_and_evaluate`: each a clear error naming the problem and the fix.

Every case goes through the real entry point. The config cases fail in `configs.validate`
or while building the split, before anything is compiled, so they cost milliseconds.
"""

import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fixmatch_jax import checkpointing, steps, train
from fixmatch_jax.data import sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments"))
import tiny  # noqa: E402


def config(lock=True, **overrides):
  config = tiny.get_config("steps=6")
  for key, value in overrides.items():
    *sections, name = key.split(".")
    node = config
    for section in sections:
      node = node[section]
    node[name] = value
  if lock:
    config.lock()
  return config


def test_unknown_config_keys_name_the_likely_spelling(tmp_path):
  bad = config(lock=False)
  bad.train.chekpoint_every_steps = 5  # Set in an experiment file, before locking.
  bad.algo.treshold = 0.9
  with pytest.raises(ValueError) as error:
    train.train_and_evaluate(bad, str(tmp_path))
  message = str(error.value)
  assert "config.train.chekpoint_every_steps (did you mean config.train.checkpoint_every_" \
         "steps?)" in message
  assert "config.algo.treshold, which fixmatch does not read (did you mean " \
         "config.algo.threshold?)" in message
  assert not os.listdir(tmp_path)  # Refused before writing anything.


@pytest.mark.parametrize("key, value, expected", [
    ("algo.threshold", 0.0, "config.algo.threshold=0.0 is invalid: expected a confidence in "
                            "(0, 1]"),
    ("algo.threshold", 1.5, "config.algo.threshold=1.5 is invalid"),
    ("data.mu", 0, "config.data.mu=0 is invalid: expected an integer >= 1"),
])
def test_out_of_range_values(tmp_path, key, value, expected):
  with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
    train.train_and_evaluate(config(**{key: value}), str(tmp_path))


def test_labels_not_divisible_by_classes(tmp_path):
  # tiny.py: 4 classes. 10 labels cannot be class-balanced; the message suggests 8.
  with pytest.raises(ValueError, match=r"multiple of the number of classes \(4\).*"
                                       r"config.data.num_labels to e.g. 8"):
    train.train_and_evaluate(config(**{"data.num_labels": 10}), str(tmp_path))


def test_more_labels_than_examples(tmp_path):
  # 256 synthetic training examples, 64 per class: 400 labels would need 100 per class.
  train_set = sources.load("synthetic", "train", num_examples=256, image_size=8, channels=3,
                           num_classes=4)
  smallest = min(np.bincount(train_set.labels, minlength=4))
  with pytest.raises(ValueError, match=f"too many. Set config.data.num_labels to at most "
                                       f"{smallest * 4}"):
    train.train_and_evaluate(config(**{"data.num_labels": 400}), str(tmp_path))


def test_missing_dataset_says_how_to_get_it(tmp_path):
  # TFDS_DATA_DIR is a nonexistent directory in tests: CIFAR-10 is not prepared.
  no_options = ml_collections.ConfigDict()
  with pytest.raises(sources.DatasetNotFoundError, match="cifar10"):
    train.train_and_evaluate(
        config(**{"data.dataset": "cifar10", "data.dataset_options": no_options}), str(tmp_path))
  with pytest.raises(sources.DatasetNotFoundError, match="dataset-fashion-mnist"):
    train.train_and_evaluate(
        config(**{"data.dataset": "fashion_mnist_local", "data.dataset_options": no_options,
                  "data.data_dir": str(tmp_path / "nowhere")}), str(tmp_path / "run"))


def test_train_and_test_images_of_different_shapes(tmp_path, monkeypatch):
  """A user dataset whose splits disagree (here 8x8 train, 16x16 test) is refused."""
  load = sources.load

  def inconsistent_load(name, split, **kwargs):
    if split == "test":
      kwargs["image_size"] = 16
    return load(name, split, **kwargs)

  monkeypatch.setattr(sources, "load", inconsistent_load)
  with pytest.raises(ValueError, match=r"Train images are \(8, 8, 3\) but test images are "
                                       r"\(16, 16, 3\)"):
    train.train_and_evaluate(config(), str(tmp_path))


def poison_make_train_step(monkeypatch, *, before_step=None, after_step=None):
  """Wraps the real step: NaN parameters going into step `before_step + 1`, or coming out
  of step `after_step` (the real step then computes a NaN loss, or returns NaN weights)."""
  make_train_step = steps.make_train_step

  def poisoned(*args, **kwargs):
    step_fn = make_train_step(*args, **kwargs)

    def nan_params(state):
      return state.replace(params=jax.tree.map(lambda p: p * jnp.nan, state.params))

    def step(state, batch):
      if int(state.step) == before_step:
        state = nan_params(state)
      state, metrics = step_fn(state, batch)
      return (nan_params(state) if int(state.step) == after_step else state), metrics
    return step

  monkeypatch.setattr(steps, "make_train_step", poisoned)


def test_nan_loss_stops_at_the_logging_step_with_the_step_range(tmp_path, monkeypatch):
  """The loss turns NaN at step 5; losses are only fetched at logging steps (every 2), so the
  run stops at step 6 naming steps 5-6, and the checkpoint at 3 is left as the last one."""
  poison_make_train_step(monkeypatch, before_step=4)
  with pytest.raises(FloatingPointError) as error:
    train.train_and_evaluate(config(), str(tmp_path))
  message = str(error.value)
  assert "Non-finite training loss (nan) between steps 5 and 6" in message
  assert "last checkpoint (step 3)" in message and "Lower optim.lr" in message
  assert checkpointing.Checkpointer(str(tmp_path), keep=2).all_steps() == [3]


def test_nan_weights_are_never_checkpointed(tmp_path, monkeypatch):
  """Weights that turn NaN in the update of step 3 (loss still finite) stop the run at the
  checkpoint of step 3 instead of being saved."""
  poison_make_train_step(monkeypatch, after_step=3)
  with pytest.raises(FloatingPointError, match="Non-finite parameters between steps 1 and 3"):
    train.train_and_evaluate(config(), str(tmp_path))
  assert checkpointing.Checkpointer(str(tmp_path), keep=2).all_steps() == []
