"""Labelled / unlabelled splits of a training set, saved with the run so resumes reuse them.

As in the FixMatch code (scripts/create_split.py): the examples of each class are
shuffled with `np.random.RandomState(seed)` (classes in order 0..C-1; seed 0 means
no shuffling) and the first num_labels/C of each class are labelled. On a dataset
with equal class counts this is exactly FixMatch's rule; FixMatch draws
proportionally to class frequency on unequal ones, we stay class-balanced.
Seeds 1-5 are the papers' five folds. The unlabelled set is the whole training
set, labelled examples included (FixMatch), unless
`config.data.unlabelled_includes_labelled` is False. Examples labelled -1 (STL-10's
unlabelled images) are never drawn as labelled.

STL-10 official folds: if `config.data.stl10_fold_file` is set (the optional path of
fold_indices.txt), the labelled set of an stl10 run is fold `seed` of that file, as in
FixMatch, and num_labels must be 1000.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any

import ml_collections
import numpy as np

from fixmatch_jax.data import sources

SPLIT_FILE = "labelled_indices.json"


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """Indices into the training `ArraySource`.

  Attributes:
    labelled: sorted int64 indices of the labelled examples.
    unlabelled: sorted int64 indices of the unlabelled pool.
    meta: what the split was made from (dataset, options, num_labels, seed, num_train, ...);
      checked when a saved split is reused.
  """
  labelled: np.ndarray
  unlabelled: np.ndarray
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)


def select_labelled(labels: np.ndarray, num_labels: int, seed: int,
                    num_classes: int) -> np.ndarray:
  """Class-balanced labelled subset: num_labels / num_classes examples of each class.

  A pure function of its arguments (no global random state).

  Args:
    labels: int [N] class of each training example; negative = no label, never drawn.
    num_labels: total number of labelled examples.
    seed: shuffling seed (FixMatch: seeds 1-5 are the five folds; 0 = no shuffling).
    num_classes: number of classes C.

  Returns:
    Sorted int64 indices into `labels`.

  Raises:
    ValueError: num_labels not a positive multiple of num_classes, or a class has fewer
      examples than num_labels / num_classes.
  """
  if num_labels <= 0 or num_labels % num_classes:
    nearest = max(num_classes, round(num_labels / num_classes) * num_classes)
    raise ValueError(f"num_labels={num_labels} must be a positive multiple of the number of "
                     f"classes ({num_classes}) for a class-balanced split; set "
                     f"config.data.num_labels to e.g. {nearest}.")
  per_class = num_labels // num_classes
  labels = np.asarray(labels)
  smallest = min(int(np.sum(labels == c)) for c in range(num_classes))
  rng = np.random.RandomState(seed)
  chosen = []
  for c in range(num_classes):
    members = np.flatnonzero(labels == c).astype(np.int64)
    if len(members) < per_class:
      raise ValueError(f"Class {c} has {len(members)} examples; {per_class} labelled examples "
                       f"per class (num_labels={num_labels}) is too many. Set "
                       f"config.data.num_labels to at most {smallest * num_classes}.")
    if seed:  # FixMatch's create_split.py: seed 0 keeps the dataset order.
      rng.shuffle(members)
    chosen.append(members[:per_class])
  return np.sort(np.concatenate(chosen))


def unlabelled_pool(num_train: int, labelled: np.ndarray, includes_labelled: bool) -> np.ndarray:
  """All training indices, or all but the labelled ones."""
  everything = np.arange(num_train, dtype=np.int64)
  return everything if includes_labelled else np.setdiff1d(everything, labelled)


def _expected_meta(config_data: ml_collections.ConfigDict, train_source: sources.ArraySource,
                   seed: int) -> dict[str, Any]:
  return {
      "dataset": config_data.dataset,
      "dataset_options": dict(sorted(dict(config_data.get("dataset_options", {})).items())),
      "num_labels": int(config_data.num_labels),
      "seed": int(seed),
      "num_train": len(train_source),
      "unlabelled_includes_labelled": bool(config_data.unlabelled_includes_labelled),
      "stl10_fold_file": _fold_file(config_data),
  }


def _fold_file(config_data: ml_collections.ConfigDict) -> str | None:
  if config_data.dataset != "stl10":
    return None
  return config_data.get("stl10_fold_file", None)


def make_split(config_data: ml_collections.ConfigDict, train_source: sources.ArraySource,
               seed: int) -> Split:
  """The split a run uses: reads `dataset`, `num_labels`, `unlabelled_includes_labelled`.

  Args:
    config_data: `config.data`.
    train_source: the training `ArraySource` the indices refer to.
    seed: the run's seed (selects the fold).

  Returns:
    The `Split`, with `meta` filled in.
  """
  meta = _expected_meta(config_data, train_source, seed)
  if meta["stl10_fold_file"]:
    if meta["num_labels"] != 1000:
      raise ValueError("Official STL-10 folds have 1000 labels; set num_labels=1000 or unset "
                       "data.stl10_fold_file.")
    labelled = sources.stl10_fold_indices(seed, meta["stl10_fold_file"])
  else:
    labelled = select_labelled(train_source.labels, meta["num_labels"], seed,
                               train_source.num_classes)
  unlabelled = unlabelled_pool(len(train_source), labelled, meta["unlabelled_includes_labelled"])
  return Split(labelled=labelled, unlabelled=unlabelled, meta=meta)


def save(split: Split, path: str) -> None:
  """Writes the split as JSON atomically (a temporary file, then os.replace).

  The unlabelled pool is stored as its rule (`unlabelled_includes_labelled` and
  `num_train`) when it follows it, else as a list.
  """
  record = dict(split.meta)
  record["labelled"] = [int(i) for i in split.labelled]
  rule = unlabelled_pool(int(record.get("num_train", 0)), split.labelled,
                         bool(record.get("unlabelled_includes_labelled", True)))
  if "num_train" not in record or not np.array_equal(rule, split.unlabelled):
    record["unlabelled"] = [int(i) for i in split.unlabelled]
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  # A crash mid-write must never leave a half file that a resume would trust.
  fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".labelled_indices.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(record, f, indent=1)
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise


def load(path: str) -> Split:
  """Reads a split written by `save`."""
  with open(path) as f:
    record = json.load(f)
  labelled = np.asarray(record.pop("labelled"), np.int64)
  if "unlabelled" in record:
    unlabelled = np.asarray(record.pop("unlabelled"), np.int64)
  else:
    unlabelled = unlabelled_pool(record["num_train"], labelled,
                                 record["unlabelled_includes_labelled"])
  return Split(labelled=labelled, unlabelled=unlabelled, meta=record)


def load_or_create(workdir: str, config_data: ml_collections.ConfigDict,
                   train_source: sources.ArraySource, seed: int) -> Split:
  """Reuses `workdir/labelled_indices.json`, or makes the split and writes it there.

  Args:
    workdir: the run directory.
    config_data: `config.data`.
    train_source: the training `ArraySource`.
    seed: the run's seed.

  Returns:
    The split.

  Raises:
    ValueError: the saved split was made for another dataset, options, num_labels, seed,
      training-set size or unlabelled rule.
  """
  path = os.path.join(workdir, SPLIT_FILE)
  if not os.path.exists(path):
    split = make_split(config_data, train_source, seed)
    save(split, path)
    return split
  split = load(path)
  expected = _expected_meta(config_data, train_source, seed)
  differences = {key: (split.meta.get(key), value) for key, value in expected.items()
                 if split.meta.get(key) != value}
  if differences:
    detail = ", ".join(f"{key}: saved {saved!r} vs now {now!r}"
                       for key, (saved, now) in differences.items())
    raise ValueError(f"{path} was made for another run ({detail}). Use a new workdir, or "
                     f"delete the file to draw a new split.")
  if split.labelled.size and split.labelled.max() >= len(train_source):
    raise ValueError(f"{path} has indices beyond the {len(train_source)} training examples.")
  return split
