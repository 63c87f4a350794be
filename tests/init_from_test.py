"""config.init_from: a run starts from the exact network of another run's checkpoint."""

import os
import sys

import jax
import numpy as np
import pytest

from fixmatch_jax import init_from, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments"))
import tiny  # noqa: E402


def as_numpy(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def assert_trees_equal(a, b):
  paths_a = jax.tree_util.tree_leaves_with_path(as_numpy(a))
  paths_b = jax.tree_util.tree_leaves_with_path(as_numpy(b))
  assert [p for p, _ in paths_a] == [p for p, _ in paths_b]
  for (path, x), (_, y) in zip(paths_a, paths_b, strict=True):
    np.testing.assert_array_equal(x, y, err_msg=str(path))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """A finished 3-step rotation pre-training run (4-way head inside a 4-class model)."""
  workdir = str(tmp_path_factory.mktemp("source"))
  config = tiny.get_config("steps=3")
  config.algorithm = "rotation"
  config.algo = config.algo.__class__()
  return workdir, train.train_and_evaluate(config, workdir)


def init_state(config, workdir, monkeypatch):
  """The state a run starts from (train_and_evaluate with zero steps to take)."""
  config.train.num_steps = 1
  captured = {}
  apply = init_from.apply

  def capture(*args, **kwargs):
    state = apply(*args, **kwargs)
    # A host copy: the train step donates (deletes) the device buffers of `state`.
    captured["state"] = jax.device_get(state)
    return state

  monkeypatch.setattr(init_from, "apply", capture)
  train.train_and_evaluate(config, workdir)
  return captured["state"]


def test_loads_the_exact_parameters_statistics_and_ema(source, tmp_path, monkeypatch):
  source_dir, source_state = source
  config = tiny.get_config("steps=3")
  config.init_from = source_dir
  state = init_state(config, str(tmp_path), monkeypatch)
  for field in ("params", "ema_params", "batch_stats"):
    assert_trees_equal(getattr(state, field), getattr(source_state, field))
  # Everything else starts fresh: step 0 and a new optimizer state.
  assert int(state.step) == 0
  assert not np.array_equal(
      np.asarray(jax.tree.leaves(state.opt_state)[-1]),
      np.asarray(jax.tree.leaves(source_state.opt_state)[-1]))


def test_excluded_parameters_keep_their_fresh_values(source, tmp_path, monkeypatch):
  source_dir, source_state = source
  config = tiny.get_config("steps=3")
  config.init_from, config.init_from_exclude = source_dir, "classifier"
  state = init_state(config, str(tmp_path), monkeypatch)
  loaded, original = as_numpy(state.params), as_numpy(source_state.params)
  np.testing.assert_array_equal(loaded["conv0"]["kernel"], original["conv0"]["kernel"])
  assert not np.array_equal(loaded["classifier"]["kernel"], original["classifier"]["kernel"])


def test_shape_mismatch_is_a_clear_error(source, tmp_path):
  source_dir, _ = source
  config = tiny.get_config("steps=3")
  config.model.width = 4  # The source has width 8.
  config.init_from = source_dir
  with pytest.raises(init_from.InitFromError) as error:
    train.train_and_evaluate(config, str(tmp_path))
  message = str(error.value)
  assert "params/conv0/kernel: checkpoint has shape (3, 3, 3, 8), this model has (3, 3, 3, 4)" \
      in message
  assert "init_from_exclude" in message


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(init_from.InitFromError, match="no checkpoint found"):
    init_from.load_variables(str(tmp_path))
