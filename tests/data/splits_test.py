"""Tests for fixmatch_jax.data.splits: FixMatch's class-balanced labelled subsets, saved per run."""

import json
import os

import ml_collections
import numpy as np
import pytest

from fixmatch_jax.data import sources, splits


def _labels(num_classes=10, per_class=30, seed=0):
  return np.random.RandomState(seed).permutation(np.arange(num_classes * per_class) % num_classes)


def _source(labels, name="synthetic"):
  images = np.zeros((len(labels), 2, 2, 1), np.uint8)
  return sources.ArraySource(name=name, images=images, labels=np.asarray(labels, np.int64),
                             num_classes=int(max(labels.max() + 1, 1)))


def _config(dataset="synthetic", num_labels=40, includes_labelled=True, **extra):
  return ml_collections.ConfigDict(dict(
      dataset=dataset, dataset_options=ml_collections.ConfigDict(), num_labels=num_labels,
      unlabelled_includes_labelled=includes_labelled, **extra))


def _fixmatch_create_split(labels, size, seed, num_classes):
  """FixMatch's scripts/create_split.py rule, global numpy random state as there: shuffle each
  class's ids in class order, then pick greedily to match the class distribution."""
  class_ids = [np.flatnonzero(labels == c) for c in range(num_classes)]
  stats = np.array([len(ids) for ids in class_ids], np.float64)
  stats /= stats.max()
  if seed:
    np.random.seed(seed)
    for ids in class_ids:
      np.random.shuffle(ids)
  taken = np.zeros(num_classes, np.int64)
  chosen = []
  for _ in range(size):
    c = np.argmax(stats - taken / max(taken.max(), 1))
    chosen.append(class_ids[c][taken[c]])
    taken[c] += 1
  return np.sort(chosen)


def test_select_labelled_is_class_balanced_and_matches_fixmatch():
  labels = _labels()
  for seed in (0, 1, 5):
    labelled = splits.select_labelled(labels, 40, seed, 10)
    assert labelled.dtype == np.int64 and len(np.unique(labelled)) == 40
    np.testing.assert_array_equal(np.bincount(labels[labelled], minlength=10), [4] * 10)
    np.testing.assert_array_equal(labelled, _fixmatch_create_split(labels, 40, seed, 10))


def test_select_labelled_is_pure_and_seeds_are_folds():
  labels = _labels()
  state = np.random.get_state()
  folds = [splits.select_labelled(labels, 40, seed, 10) for seed in range(1, 6)]
  assert np.array_equal(np.random.get_state()[1], state[1])  # No global random state touched.
  np.testing.assert_array_equal(folds[0], splits.select_labelled(labels, 40, 1, 10))
  assert len({tuple(fold) for fold in folds}) == 5


def test_select_labelled_skips_unlabelled_examples():
  labels = np.concatenate([_labels(per_class=3), -np.ones(50, np.int64)])
  labelled = splits.select_labelled(labels, 30, 1, 10)
  assert np.all(labels[labelled] >= 0)
  np.testing.assert_array_equal(labelled, np.arange(30))


@pytest.mark.parametrize("num_labels, match", [(45, "multiple"), (0, "multiple"),
                                               (310, "too many")])
def test_select_labelled_errors(num_labels, match):
  with pytest.raises(ValueError, match=match):
    splits.select_labelled(_labels(), num_labels, 1, 10)


@pytest.mark.parametrize("includes_labelled", [True, False])
def test_make_split_unlabelled_pool(includes_labelled):
  labels = _labels()
  split = splits.make_split(_config(includes_labelled=includes_labelled), _source(labels), 2)
  everything = np.arange(len(labels))
  if includes_labelled:
    np.testing.assert_array_equal(split.unlabelled, everything)
  else:
    assert not set(split.labelled) & set(split.unlabelled)
    np.testing.assert_array_equal(np.union1d(split.labelled, split.unlabelled), everything)
  assert split.meta["seed"] == 2 and split.meta["num_train"] == len(labels)


@pytest.mark.parametrize("includes_labelled", [True, False])
def test_save_load_round_trip(tmp_path, includes_labelled):
  split = splits.make_split(_config(includes_labelled=includes_labelled), _source(_labels()), 3)
  path = str(tmp_path / "labelled_indices.json")
  splits.save(split, path)
  record = json.loads(open(path).read())
  assert "unlabelled" not in record  # Stored as its rule, not 300 indices.
  loaded = splits.load(path)
  np.testing.assert_array_equal(loaded.labelled, split.labelled)
  np.testing.assert_array_equal(loaded.unlabelled, split.unlabelled)
  assert loaded.meta == split.meta
  custom = splits.Split(labelled=np.array([1, 2]), unlabelled=np.array([5, 7, 9]))
  splits.save(custom, path)
  np.testing.assert_array_equal(splits.load(path).unlabelled, [5, 7, 9])
  assert os.listdir(tmp_path) == ["labelled_indices.json"]  # No temporary file left behind.


def test_load_or_create_reuses_and_checks(tmp_path):
  source, config = _source(_labels()), _config()
  first = splits.load_or_create(str(tmp_path), config, source, 1)
  path = tmp_path / splits.SPLIT_FILE
  assert path.exists()
  # Reuse means the file, not a re-draw: an edited file is what comes back.
  record = json.loads(path.read_text())
  record["labelled"] = record["labelled"][::-1][:40]
  path.write_text(json.dumps(record))
  again = splits.load_or_create(str(tmp_path), config, source, 1)
  np.testing.assert_array_equal(again.labelled, first.labelled[::-1])
  with pytest.raises(ValueError, match="seed: saved 1 vs now 2"):
    splits.load_or_create(str(tmp_path), config, source, 2)
  with pytest.raises(ValueError, match="num_labels"):
    splits.load_or_create(str(tmp_path), _config(num_labels=20), source, 1)
  with pytest.raises(ValueError, match="dataset"):
    splits.load_or_create(str(tmp_path), _config(dataset="digits"), source, 1)


def test_stl10_official_fold_from_config(tmp_path):
  folds = [np.random.RandomState(i).choice(5000, 1000, replace=False) for i in range(10)]
  fold_file = tmp_path / "fold_indices.txt"
  fold_file.write_text("\n".join(" ".join(map(str, fold)) for fold in folds))
  labels = np.concatenate([np.arange(5000) % 10, -np.ones(20, np.int64)])
  source = _source(labels, name="stl10")
  config = _config(dataset="stl10", num_labels=1000, stl10_fold_file=str(fold_file))
  split = splits.make_split(config, source, 2)
  np.testing.assert_array_equal(split.labelled, sources.stl10_fold_indices(2, str(fold_file)))
  assert len(split.unlabelled) == 5020
  config.num_labels = 40
  with pytest.raises(ValueError, match="1000"):
    splits.make_split(config, source, 2)
