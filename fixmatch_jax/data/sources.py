"""Datasets as in-memory arrays with one schema: uint8 images [N,H,W,C], int64 labels [N].

`load(name, split)` is the only entry point. Public image sets come from TFDS
(cifar10, cifar100, svhn_cropped, stl10, mnist, fashion_mnist) and are never
downloaded here: when a dataset is not prepared, `DatasetNotFoundError` says how
to get it. Offline sources with the same schema:

* "fashion_mnist_local": the original gzip IDX files, e.g. from Debian's
  `dataset-fashion-mnist` package (TFDS rejects those files on checksum because
  Debian re-compressed them, so they are parsed here).
* "digits": scikit-learn's bundled 8x8 digits. Fixed split: the first 1437
  examples are "train", the last 360 "test" (the file order; no shuffling, so
  every machine agrees). Pixels 0..16 are scaled to uint8 by round(x * 255 / 16).
* "synthetic": deterministic class-structured images for tests.
* "npz": your own arrays, from one NumPy .npz file (`data_dir` is its path) holding
  train_images, train_labels, test_images, test_labels (see `save_npz`).

Row i of an `ArraySource` is example i: splits and streams address examples by
that position. Loaded arrays are cached in-process and read-only.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import math
import os
import zlib
from collections.abc import Hashable
from typing import Any

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
TFDS_DATASETS = ("cifar10", "cifar100", "svhn_cropped", "stl10", "mnist", "fashion_mnist")
OFFLINE_DATASETS = ("fashion_mnist_local", "digits", "synthetic", "npz")
# Options each dataset accepts; anything else is a typo and fails loudly.
_OPTIONS: dict[str, frozenset[str]] = {
    "svhn_cropped": frozenset({"extra"}),
    "stl10": frozenset({"include_unlabelled"}),
    "synthetic": frozenset(
        {"num_examples", "num_test_examples", "image_size", "channels", "num_classes", "seed",
         "noise_std"}),
}
DIGITS_NUM_TRAIN = 1437  # sklearn digits: first 1437 train, last 360 test (80/20, file order).
STL10_NUM_TRAIN = 5000


class DatasetNotFoundError(FileNotFoundError):
  """The dataset is not available on this machine; the message says how to get it."""


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySource:
  """One split of one dataset, in memory.

  Attributes:
    name: dataset name as given to `load`.
    images: uint8 [N, H, W, C].
    labels: int64 [N]; -1 marks examples without a label (STL-10's unlabelled set).
    num_classes: number of classes of the dataset.
  """
  name: str
  images: np.ndarray
  labels: np.ndarray
  num_classes: int

  def __post_init__(self):
    if self.images.dtype != np.uint8 or self.images.ndim != 4:
      raise ValueError(f"{self.name}: images must be uint8 [N,H,W,C], got "
                       f"{self.images.dtype} {self.images.shape}.")
    if self.labels.shape != (len(self.images),):
      raise ValueError(f"{self.name}: {len(self.images)} images but labels of shape "
                       f"{self.labels.shape}.")

  def __len__(self) -> int:
    return len(self.labels)


def load(name: str, split: str, *, data_dir: str | None = None, **options: Any) -> ArraySource:
  """Loads one split of a dataset into memory (cached per process).

  Args:
    name: one of `TFDS_DATASETS` or `OFFLINE_DATASETS`.
    split: "train" or "test"; "unlabelled" for stl10 (the 100k images, labels -1).
    data_dir: TFDS data directory (None: TFDS's default, $TFDS_DATA_DIR or ~/tensorflow_datasets).
      For "fashion_mnist_local", the directory of the IDX .gz files (None: FASHION_MNIST_DIR).
    **options: svhn_cropped: `extra` (train = train + the 531k extra images).
      stl10: `include_unlabelled` (train = the 5k labelled images, rows 0..4999, then the
      100k unlabelled ones with label -1). synthetic: `num_examples` (train, 512),
      `num_test_examples` (num_examples // 4), `image_size` (8), `channels` (3),
      `num_classes` (4), `seed` (0), `noise_std` (32.0). Options that only shape the
      training split are accepted and ignored for the others, so one options dict serves all.

  Returns:
    The split as an `ArraySource` whose arrays are read-only (they are shared by the cache).

  Raises:
    DatasetNotFoundError: the data is not on this machine (never downloads).
    ValueError: unknown name, split or option, or corrupt files.
  """
  if name not in TFDS_DATASETS + OFFLINE_DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; choose one of {TFDS_DATASETS + OFFLINE_DATASETS}.")
  unknown = set(options) - _OPTIONS.get(name, frozenset())
  if unknown:
    raise ValueError(f"Dataset {name!r} has no option(s) {sorted(unknown)}; it accepts "
                     f"{sorted(_OPTIONS.get(name, ()))}.")
  valid_splits = ("train", "test", "unlabelled") if name == "stl10" else ("train", "test")
  if split not in valid_splits:
    raise ValueError(f"Dataset {name!r} has splits {valid_splits}, not {split!r}.")
  for value in options.values():
    if not isinstance(value, Hashable):
      raise TypeError(f"Dataset options must be hashable scalars, got {options}.")
  return _load_cached(name, split, data_dir, tuple(sorted(options.items())))


def clear_cache() -> None:
  """Forgets the arrays `load` has cached (e.g. after preparing a dataset, or in tests)."""
  _load_cached.cache_clear()


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, split: str, data_dir: str | None,
                 options: tuple[tuple[str, Any], ...]) -> ArraySource:
  kwargs = dict(options)
  if name == "fashion_mnist_local":
    images, labels, num_classes = _load_fashion_mnist_local(split, data_dir)
  elif name == "digits":
    images, labels, num_classes = _load_digits(split)
  elif name == "synthetic":
    images, labels, num_classes = _make_synthetic(split, **kwargs)
  elif name == "npz":
    images, labels, num_classes = _load_npz(split, data_dir)
  else:
    images, labels, num_classes = _load_tfds(name, split, data_dir, **kwargs)
  images = np.ascontiguousarray(images, dtype=np.uint8)
  labels = np.asarray(labels, dtype=np.int64)
  # The cache hands the same arrays to every caller: make accidental in-place edits fail.
  images.setflags(write=False)
  labels.setflags(write=False)
  return ArraySource(name=name, images=images, labels=labels, num_classes=num_classes)


# --------------------------------------------------------------------------- TFDS


def _not_prepared_message(name: str, data_dir: str | None) -> str:
  where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  message = (
      f"TFDS dataset {name!r} is not prepared in data_dir={where!r}, and this code never "
      f"downloads. On a machine with internet run `tfds build {name} --data_dir=DIR` (or "
      f"`tfds.load({name!r}, data_dir=DIR, download=True)`), copy DIR here and pass it as "
      f"data_dir (--config.data.data_dir=DIR).")
  if name == "fashion_mnist":
    message += (" Offline alternative: `apt-get install dataset-fashion-mnist` and use the "
                "dataset name 'fashion_mnist_local'.")
  return message


def _load_tfds(name: str, split: str, data_dir: str | None, *, extra: bool = False,
               include_unlabelled: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
  import tensorflow_datasets as tfds  # Heavy import, only needed for TFDS datasets.

  builder = tfds.builder(name, data_dir=data_dir)
  num_classes = builder.info.features["label"].num_classes
  parts = [split]
  if split == "train" and name == "svhn_cropped" and extra:
    parts.append("extra")
  if split == "train" and name == "stl10" and include_unlabelled:
    parts.append("unlabelled")
  images, labels = [], []
  for part in parts:
    part_images, part_labels = _read_tfds_split(builder, part, data_dir)
    if part == "unlabelled":  # TFDS stores -1 already; make it hold for any TFDS version.
      part_labels = np.full_like(part_labels, -1)
    images.append(part_images)
    labels.append(part_labels)
  if len(parts) == 1:
    return images[0], labels[0], num_classes
  return np.concatenate(images), np.concatenate(labels), num_classes


def _read_tfds_split(builder, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
  import tensorflow_datasets as tfds

  # `as_dataset` reads only local files and raises AssertionError when they are missing;
  # `download_and_prepare` (the only path to the network) is never called.
  try:
    ds = builder.as_dataset(
        split=split, shuffle_files=False,
        # One file at a time: rows come in the order TFDS wrote them, on every machine.
        read_config=tfds.ReadConfig(interleave_cycle_length=1))
  except AssertionError as error:
    raise DatasetNotFoundError(_not_prepared_message(builder.name, data_dir)) from error
  ds = ds.map(lambda example: (example["image"], example["label"])).batch(4096)
  images, labels = [], []
  for image_batch, label_batch in tfds.as_numpy(ds):
    images.append(image_batch)
    labels.append(label_batch)
  return np.concatenate(images), np.concatenate(labels)


def stl10_fold_indices(fold: int, fold_file: str | None, *, tfds_order: bool = True) -> np.ndarray:
  """Labelled indices of one official STL-10 training fold.

  The official folds are the 10 lines of `fold_indices.txt` in the STL-10 binary release
  (stl10_binary.tar.gz), each 1000 0-based positions in train_X.bin; FixMatch uses line
  `seed`. TFDS does not ship this file, and TFDS stores the training images in a different
  order (its writer sorts records by md5(split name + key), the key being the position in
  train_X.bin), so by default the positions are mapped to rows of `load("stl10", "train")`
  by recomputing that order.

  Args:
    fold: line of the file, 0..9.
    fold_file: path of fold_indices.txt; None raises with how to get it.
    tfds_order: map to TFDS rows (True) or return positions in train_X.bin (False).

  Returns:
    Sorted int64 indices.

  Raises:
    DatasetNotFoundError: no fold file given or the file is missing.
    ValueError: fold out of range or a malformed line.
  """
  if fold_file is None or not os.path.exists(fold_file):
    raise DatasetNotFoundError(
        f"STL-10 official folds need fold_indices.txt from the STL-10 binary release "
        f"(http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz, "
        f"stl10_binary/fold_indices.txt); got {fold_file!r}. TFDS does not include it.")
  with open(fold_file) as f:
    lines = [line.split() for line in f.read().splitlines() if line.strip()]
  if not 0 <= fold < len(lines):
    raise ValueError(f"{fold_file} has {len(lines)} folds; fold {fold} does not exist.")
  positions = np.array([int(token) for token in lines[fold]], np.int64)
  if (positions.min(initial=0) < 0 or positions.max(initial=0) >= STL10_NUM_TRAIN
      or len(np.unique(positions)) != len(positions)):
    raise ValueError(f"{fold_file} line {fold} is not a set of 0-based positions < 5000.")
  if tfds_order:
    positions = tfds_rows_of_keys(STL10_NUM_TRAIN, salt="train")[positions]
  return np.sort(positions)


def tfds_rows_of_keys(num_examples: int, salt: str) -> np.ndarray:
  """Row at which TFDS stores the example generated with integer key k, for k < num_examples.

  TFDS writes a split sorted by md5(salt + str(key)) with the split name as salt
  (tensorflow_datasets/core/hashing.py, shuffle.py); reading with one file at a time
  returns that order.
  """
  prefix = hashlib.md5(salt.encode())
  hashes = []
  for key in range(num_examples):
    digest = prefix.copy()
    digest.update(str(key).encode())
    hashes.append(int(digest.hexdigest(), 16))
  order = sorted(range(num_examples), key=hashes.__getitem__)  # 128-bit ints: Python sort.
  rows = np.empty(num_examples, np.int64)
  rows[order] = np.arange(num_examples)
  return rows


# --------------------------------------------------------------------------- IDX files

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "IDX format").
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (gzip-compressed or not) into an array of the shape its header gives.

  Args:
    path: file path; gzip is detected from the content, not the name.

  Returns:
    The array, in native byte order.

  Raises:
    DatasetNotFoundError: the file does not exist.
    ValueError: bad magic number, unknown type, truncated or oversized data, corrupt gzip.
  """
  if not os.path.exists(path):
    raise DatasetNotFoundError(f"IDX file {path} not found.")
  with open(path, "rb") as f:
    raw = f.read()
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
      raise ValueError(f"{path}: corrupt gzip data ({error}).") from error
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex() or 'missing'}).")
  dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
  header_size = 4 + 4 * ndim
  if ndim == 0 or len(raw) < header_size:
    raise ValueError(f"{path}: truncated IDX header.")
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
  expected = math.prod(shape) * dtype.itemsize
  if len(raw) - header_size != expected:
    raise ValueError(f"{path}: header says {shape} ({expected} bytes of data) but the file has "
                     f"{len(raw) - header_size} bytes; the file is truncated or corrupt.")
  data = np.frombuffer(raw, dtype, offset=header_size).reshape(shape)
  return data.astype(dtype.newbyteorder("="))


def _load_fashion_mnist_local(split: str, directory: str | None
                              ) -> tuple[np.ndarray, np.ndarray, int]:
  directory = directory or FASHION_MNIST_DIR
  prefix = "train" if split == "train" else "t10k"
  image_path = os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz")
  label_path = os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz")
  for path in (image_path, label_path):
    if not os.path.exists(path):
      raise DatasetNotFoundError(
          f"Fashion-MNIST file {path} not found. Install it with `apt-get install "
          f"dataset-fashion-mnist` (files in {FASHION_MNIST_DIR}), or put the original "
          f"*-idx?-ubyte.gz files in a directory and pass it as data_dir.")
  images, labels = read_idx(image_path), read_idx(label_path)
  # Magic 2051 (uint8, 3 dims) and 2049 (uint8, 1 dim): the type byte and rank checked here.
  if images.dtype != np.uint8 or images.ndim != 3:
    raise ValueError(f"{image_path}: expected uint8 images [N,28,28] (magic 2051), got "
                     f"{images.dtype} {images.shape}.")
  if labels.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
    raise ValueError(f"{label_path}: expected {len(images)} uint8 labels (magic 2049), got "
                     f"{labels.dtype} {labels.shape}.")
  if labels.size and labels.max() >= 10:
    raise ValueError(f"{label_path}: labels must be 0..9, found {labels.max()}.")
  return images[..., None], labels, 10


# --------------------------------------------------------------------------- sklearn digits


def _load_digits(split: str) -> tuple[np.ndarray, np.ndarray, int]:
  from sklearn.datasets import load_digits  # Bundled with scikit-learn: no download.

  digits = load_digits()
  images = np.floor(digits.images * 255.0 / 16.0 + 0.5).astype(np.uint8)[..., None]
  rows = slice(0, DIGITS_NUM_TRAIN) if split == "train" else slice(DIGITS_NUM_TRAIN, None)
  return images[rows], digits.target[rows], 10


# --------------------------------------------------------------------------- npz


def save_npz(path: str, *, train_images: np.ndarray, train_labels: np.ndarray,
             test_images: np.ndarray, test_labels: np.ndarray) -> None:
  """Writes your own arrays as the "npz" dataset (`data.dataset="npz"`, `data.data_dir=path`).

  Args:
    path: the .npz file to write.
    train_images, test_images: uint8 [N, H, W, C] or [N, H, W] (one channel).
    train_labels, test_labels: integer classes 0..C-1, [N].

  Raises:
    ValueError: as `load` would on reading the file back.
  """
  arrays = dict(train_images=train_images, train_labels=train_labels, test_images=test_images,
                test_labels=test_labels)
  _check_npz(arrays, path)
  np.savez(path, **arrays)


def _check_npz(arrays, path: str) -> int:
  """Validates the four arrays; returns the number of classes (largest label + 1)."""
  for key in ("train_images", "train_labels", "test_images", "test_labels"):
    if key not in arrays:
      raise ValueError(f"{path}: no array {key!r}; an npz dataset holds train_images, "
                       "train_labels, test_images and test_labels (sources.save_npz writes them).")
  for split in ("train", "test"):
    images, labels = np.asarray(arrays[f"{split}_images"]), np.asarray(arrays[f"{split}_labels"])
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
      raise ValueError(f"{path}: {split}_images must be uint8 [N,H,W] or [N,H,W,C], got "
                       f"{images.dtype} {images.shape}; scale pixels to 0..255 and cast with "
                       ".astype(np.uint8).")
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f"{path}: {split}_labels must be {len(images)} integers, got "
                       f"{labels.dtype} {labels.shape}.")
    if labels.size and labels.min() < 0:
      raise ValueError(f"{path}: {split}_labels must be classes >= 0, found {labels.min()}.")
  shapes = {np.asarray(arrays[f"{s}_images"]).shape[1:] for s in ("train", "test")}
  if len({shape + (1,) * (3 - len(shape)) for shape in shapes}) != 1:
    raise ValueError(f"{path}: train and test images differ in shape: {sorted(shapes)}.")
  return int(max(np.max(arrays["train_labels"], initial=0),
                 np.max(arrays["test_labels"], initial=0))) + 1


def _load_npz(split: str, path: str | None) -> tuple[np.ndarray, np.ndarray, int]:
  if not path or not os.path.isfile(path):
    raise DatasetNotFoundError(
        f"npz dataset file {path!r} not found: set config.data.data_dir to the .npz file "
        "written by fixmatch_jax.data.sources.save_npz.")
  with np.load(path) as arrays:
    arrays = dict(arrays)
  num_classes = _check_npz(arrays, path)
  images = arrays[f"{split}_images"]
  return (images[..., None] if images.ndim == 3 else images), arrays[f"{split}_labels"], num_classes


# --------------------------------------------------------------------------- synthetic


def _make_synthetic(split: str, *, num_examples: int = 512, num_test_examples: int | None = None,
                    image_size: int = 8, channels: int = 3, num_classes: int = 4, seed: int = 0,
                    noise_std: float = 32.0) -> tuple[np.ndarray, np.ndarray, int]:
  """Each class is a fixed random pattern with its own brightness, plus per-image noise.

  The class prototypes depend on `seed` only, so train and test share them; the noise and
  the label order depend on (seed, split). Brightness survives flips and crops, so models
  learn the classes under weak augmentation too.
  """
  size = num_examples if split == "train" else (num_test_examples or max(num_examples // 4, 1))
  shape = (image_size, image_size, channels)
  prototype_rng = np.random.RandomState(seed)
  patterns = prototype_rng.uniform(0, 255, (num_classes,) + shape)
  brightness = np.linspace(32, 224, num_classes)[:, None, None, None]
  prototypes = 0.5 * patterns + 0.5 * brightness
  noise_rng = np.random.RandomState([seed, 1 if split == "train" else 2])
  labels = noise_rng.permutation(np.arange(size) % num_classes)
  images = prototypes[labels] + noise_rng.normal(0, noise_std, (size,) + shape)
  return np.clip(np.round(images), 0, 255).astype(np.uint8), labels, num_classes
