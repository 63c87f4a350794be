"""Tests for fixmatch_jax.data.sources: one schema for TFDS and offline data, never a download."""

import gzip
import os
import struct
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits
from tensorflow_datasets.core import shuffle as tfds_shuffle

from fixmatch_jax.data import sources


@pytest.fixture(autouse=True)
def _fresh_cache():
  # The cache would otherwise hand mocked TFDS arrays from one test to the next.
  sources.clear_cache()
  yield
  sources.clear_cache()


def _write_idx(path, array, type_byte=0x08, compress=True):
  """Writes an IDX file by the format's definition (independent of the reader)."""
  header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
  with (gzip.open if compress else open)(path, "wb") as f:
    f.write(payload)


def _assert_schema(source, shape, num_classes):
  assert source.images.dtype == np.uint8 and source.images.shape[1:] == shape
  assert source.labels.dtype == np.int64 and source.labels.shape == (len(source.images),)
  assert source.num_classes == num_classes


# ----------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, compress):
  images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  ints = np.array([-5, 7, 1 << 20], np.int32)
  _write_idx(tmp_path / "a", images, compress=compress)
  _write_idx(tmp_path / "b", ints, type_byte=0x0C, compress=compress)
  np.testing.assert_array_equal(sources.read_idx(str(tmp_path / "a")), images)
  np.testing.assert_array_equal(sources.read_idx(str(tmp_path / "b")), ints)


def test_read_idx_rejects_corrupt_files(tmp_path):
  good = np.zeros((2, 3), np.uint8)
  _write_idx(tmp_path / "good.gz", good)
  raw = gzip.decompress((tmp_path / "good.gz").read_bytes())
  cases = {
      "magic": b"\x01\x02" + raw[2:],
      "type": raw[:2] + b"\x07" + raw[3:],
      "truncated": raw[:-1],
      "trailing": raw + b"\x00",
  }
  for name, content in cases.items():
    (tmp_path / name).write_bytes(gzip.compress(content))
    with pytest.raises(ValueError):
      sources.read_idx(str(tmp_path / name))
  (tmp_path / "badgzip").write_bytes((tmp_path / "good.gz").read_bytes()[:20])
  with pytest.raises(ValueError, match="gzip"):
    sources.read_idx(str(tmp_path / "badgzip"))
  with pytest.raises(sources.DatasetNotFoundError):
    sources.read_idx(str(tmp_path / "missing.gz"))


def _write_fashion_dir(directory, num_train=5, num_test=3, label_count=None):
  rng = np.random.RandomState(0)
  for prefix, n in (("train", num_train), ("t10k", num_test)):
    _write_idx(directory / f"{prefix}-images-idx3-ubyte.gz",
               rng.randint(0, 256, (n, 28, 28)).astype(np.uint8))
    _write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz",
               (np.arange(label_count or n) % 10).astype(np.uint8))


def test_fashion_mnist_local_from_idx_files(tmp_path):
  _write_fashion_dir(tmp_path)
  train = sources.load("fashion_mnist_local", "train", data_dir=str(tmp_path))
  test = sources.load("fashion_mnist_local", "test", data_dir=str(tmp_path))
  _assert_schema(train, (28, 28, 1), 10)
  assert len(train) == 5 and len(test) == 3
  expected = sources.read_idx(str(tmp_path / "train-images-idx3-ubyte.gz"))
  np.testing.assert_array_equal(train.images[..., 0], expected)
  np.testing.assert_array_equal(train.labels, np.arange(5) % 10)


def test_fashion_mnist_local_errors(tmp_path):
  with pytest.raises(sources.DatasetNotFoundError, match="dataset-fashion-mnist"):
    sources.load("fashion_mnist_local", "train", data_dir=str(tmp_path))
  _write_fashion_dir(tmp_path, label_count=4)  # 5 images, 4 labels.
  with pytest.raises(ValueError, match="labels"):
    sources.load("fashion_mnist_local", "train", data_dir=str(tmp_path))


@pytest.mark.skipif(not os.path.exists(sources.FASHION_MNIST_DIR),
                    reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_local_real_files():
  train = sources.load("fashion_mnist_local", "train")
  test = sources.load("fashion_mnist_local", "test")
  _assert_schema(train, (28, 28, 1), 10)
  assert len(train) == 60000 and len(test) == 10000
  np.testing.assert_array_equal(np.bincount(train.labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)
  assert train.images.max() == 255 and train.images.min() == 0


# ----------------------------------------------------------------------------- offline


def test_digits_fixed_split_and_scaling():
  train, test = sources.load("digits", "train"), sources.load("digits", "test")
  _assert_schema(train, (8, 8, 1), 10)
  assert (len(train), len(test)) == (1437, 360)
  digits = load_digits()
  np.testing.assert_array_equal(test.labels, digits.target[1437:])
  # 0..16 -> 0..255, rounded: 16 -> 255, 8 -> 128 (127.5 rounds up), 1 -> 16 (15.94).
  lookup = {0: 0, 1: 16, 8: 128, 16: 255}
  pixels = digits.images[:1437].astype(int)
  for level, value in lookup.items():
    assert np.all(train.images[..., 0][pixels == level] == value)


def test_synthetic_is_deterministic_and_learnable():
  options = dict(num_examples=400, image_size=8, channels=3, num_classes=4)
  a = sources.load("synthetic", "train", **options)
  sources.clear_cache()
  b = sources.load("synthetic", "train", **options)
  other = sources.load("synthetic", "train", seed=1, **options)
  test = sources.load("synthetic", "test", **options)
  _assert_schema(a, (8, 8, 3), 4)
  np.testing.assert_array_equal(a.images, b.images)
  assert not np.array_equal(a.images, other.images)
  np.testing.assert_array_equal(np.bincount(a.labels), [100] * 4)
  assert len(test) == 100
  # Class structure: a nearest-class-mean classifier fitted on train is near-perfect on test.
  means = np.stack([a.images[a.labels == c].reshape(-1, 192).mean(0) for c in range(4)])
  distances = ((test.images.reshape(-1, 1, 192) - means[None]) ** 2).sum(-1)
  assert np.mean(distances.argmin(1) == test.labels) > 0.95


def test_load_validates_and_caches():
  with pytest.raises(ValueError, match="Unknown dataset"):
    sources.load("imagenet", "train")
  with pytest.raises(ValueError, match="no option"):
    sources.load("cifar10", "train", extra=True)
  with pytest.raises(ValueError, match="splits"):
    sources.load("digits", "unlabelled")
  first = sources.load("digits", "train")
  assert sources.load("digits", "train") is first
  with pytest.raises(ValueError):
    first.images[0, 0, 0, 0] = 1  # Cached arrays are read-only.


# ----------------------------------------------------------------------------- TFDS


def test_tfds_sources_under_mock_data():
  with tfds.testing.mock_data(num_examples=6):
    cifar10 = sources.load("cifar10", "train")
    cifar100 = sources.load("cifar100", "test")
    svhn = sources.load("svhn_cropped", "train")
    svhn_extra = sources.load("svhn_cropped", "train", extra=True)
    svhn_extra_test = sources.load("svhn_cropped", "test", extra=True)
    stl_train = sources.load("stl10", "train")
    stl_unlabelled = sources.load("stl10", "unlabelled")
    stl_both = sources.load("stl10", "train", include_unlabelled=True)
    fashion = sources.load("fashion_mnist", "train")
    mnist = sources.load("mnist", "test")
  _assert_schema(cifar10, (32, 32, 3), 10)
  _assert_schema(cifar100, (32, 32, 3), 100)
  _assert_schema(svhn_extra, (32, 32, 3), 10)
  assert (len(cifar10), len(svhn), len(svhn_extra), len(svhn_extra_test)) == (6, 6, 12, 6)
  _assert_schema(stl_both, (96, 96, 3), 10)
  assert np.all(stl_unlabelled.labels == -1)
  assert len(stl_both) == 12
  np.testing.assert_array_equal(stl_both.labels[:6], stl_train.labels)
  assert np.all(stl_both.labels[6:] == -1) and np.all(stl_train.labels >= 0)
  np.testing.assert_array_equal(stl_both.images[:6], stl_train.images)
  _assert_schema(fashion, (28, 28, 1), 10)
  _assert_schema(mnist, (28, 28, 1), 10)


@pytest.mark.parametrize("name", ["cifar10", "fashion_mnist"])
def test_missing_tfds_dataset_raises_with_the_fix(tmp_path, name):
  start = time.monotonic()
  with pytest.raises(sources.DatasetNotFoundError) as error:
    sources.load(name, "train", data_dir=str(tmp_path))
  assert time.monotonic() - start < 10  # Fails fast: never waits on the network.
  message = str(error.value)
  assert f"tfds build {name}" in message and str(tmp_path) in message
  if name == "fashion_mnist":
    assert "dataset-fashion-mnist" in message and "fashion_mnist_local" in message
  assert not any(tmp_path.iterdir())  # Nothing was downloaded or prepared.


def test_prepared_tfds_files_are_read_in_written_order(tmp_path):
  # A real prepared dataset (TFDS's offline DummyMnist: key i has label i % 10), read through
  # the same path as the public datasets: rows come in the order TFDS wrote them.
  builder = tfds.testing.DummyMnist(data_dir=str(tmp_path))
  builder.download_and_prepare()
  images, labels = sources._read_tfds_split(builder, "train", str(tmp_path))
  assert images.shape == (20, 28, 28, 1) and images.dtype == np.uint8
  rows = sources.tfds_rows_of_keys(20, salt="train")
  np.testing.assert_array_equal(labels[rows], np.arange(20) % 10)


# ----------------------------------------------------------------------------- STL-10 folds


def test_tfds_row_order_matches_the_tfds_writer(tmp_path):
  # Oracle: TFDS's own Shuffler, which orders records as they are written to disk.
  shuffler = tfds_shuffle.Shuffler(str(tmp_path), hash_salt="train")
  for key in range(500):
    shuffler.add(key, str(key).encode())
  written = [int(data) for _, data in shuffler]
  rows = sources.tfds_rows_of_keys(500, salt="train")
  np.testing.assert_array_equal(rows[written], np.arange(500))


def test_stl10_fold_indices(tmp_path):
  rng = np.random.RandomState(0)
  folds = [rng.choice(5000, 1000, replace=False) for _ in range(10)]
  path = tmp_path / "fold_indices.txt"
  path.write_text("\n".join(" ".join(map(str, fold)) for fold in folds) + "\n")
  original = sources.stl10_fold_indices(3, str(path), tfds_order=False)
  np.testing.assert_array_equal(original, np.sort(folds[3]))
  mapped = sources.stl10_fold_indices(3, str(path))
  np.testing.assert_array_equal(mapped, np.sort(sources.tfds_rows_of_keys(5000, "train")[folds[3]]))
  with pytest.raises(ValueError, match="fold 10"):
    sources.stl10_fold_indices(10, str(path))
  with pytest.raises(sources.DatasetNotFoundError, match="fold_indices.txt"):
    sources.stl10_fold_indices(0, None)


# ----------------------------------------------------------------------------- npz


def test_npz_round_trip_and_errors(tmp_path):
  # Oracle: the arrays written are the arrays read (channel axis added to [N, H, W]).
  rng = np.random.RandomState(0)
  train_images = rng.randint(0, 256, (12, 5, 6), dtype=np.uint8)
  test_images = rng.randint(0, 256, (4, 5, 6), dtype=np.uint8)
  train_labels, test_labels = np.arange(12) % 3, np.array([2, 0, 1, 4])
  path = str(tmp_path / "mine.npz")
  sources.save_npz(path, train_images=train_images, train_labels=train_labels,
                   test_images=test_images, test_labels=test_labels)
  train, test = sources.load("npz", "train", data_dir=path), sources.load("npz", "test",
                                                                           data_dir=path)
  _assert_schema(train, (5, 6, 1), num_classes=5)  # largest label of either split + 1
  _assert_schema(test, (5, 6, 1), num_classes=5)
  np.testing.assert_array_equal(train.images[..., 0], train_images)
  np.testing.assert_array_equal(test.labels, test_labels)

  with pytest.raises(ValueError, match=r"astype\(np.uint8\)"):
    sources.save_npz(path, train_images=train_images / 255.0, train_labels=train_labels,
                     test_images=test_images, test_labels=test_labels)
  with pytest.raises(ValueError, match="differ in shape"):
    sources.save_npz(path, train_images=train_images, train_labels=train_labels,
                     test_images=test_images[:, :4], test_labels=test_labels)
  with pytest.raises(ValueError, match="12 integers"):
    sources.save_npz(path, train_images=train_images, train_labels=train_labels[:5],
                     test_images=test_images, test_labels=test_labels)
  np.savez(str(tmp_path / "partial.npz"), train_images=train_images)
  with pytest.raises(ValueError, match="no array 'train_labels'"):
    sources.load("npz", "train", data_dir=str(tmp_path / "partial.npz"))
  with pytest.raises(sources.DatasetNotFoundError, match="save_npz"):
    sources.load("npz", "train", data_dir=str(tmp_path / "missing.npz"))
