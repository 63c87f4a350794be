"""Tests for fixmatch_jax.data.augment: every op against PIL (the oracle), on real images.

Real images: Fashion-MNIST (28x28x1, the Debian IDX files, read here with gzip + NumPy) and
scikit-learn's bundled photographs cut into 32x32x3 crops. Random images add the corner cases
(full 0..255 range, flat channels, non-square sizes).

Tolerances, and why: the ops reproduce PIL's arithmetic, so most comparisons are exact.
- LUT ops (autocontrast, equalize, solarize, posterize) and geometric ops (rotate, shear,
  translate: PIL's own fixed-point / float index arithmetic, NEAREST): exact, no tolerance.
- Enhance ops (color, contrast, brightness, sharpness) blend in float32 and truncate as PIL's C
  code does, and are exact here too; we allow 1 grey level on at most 0.1% of pixels because a
  compiler that fuses PIL's multiply-add (FMA, e.g. on ARM builds) can move a value that lands
  within float32 rounding of an integer across it.
"""
import functools
import gzip
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from fixmatch_jax.data import augment

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
ENHANCE = ("color", "contrast", "brightness", "sharpness")


@functools.cache
def fashion_images(count: int = 24) -> np.ndarray:
  path = os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz")
  if not os.path.exists(path):
    pytest.skip(f"Fashion-MNIST not found at {path} (apt-get install dataset-fashion-mnist).")
  with gzip.open(path) as f:
    data = np.frombuffer(f.read(), np.uint8, offset=16)
  return data.reshape(-1, 28, 28, 1)[:count].copy()


@functools.cache
def photo_crops() -> np.ndarray:
  datasets = pytest.importorskip("sklearn.datasets")
  crops = []
  for name in ("china.jpg", "flower.jpg"):
    photo = datasets.load_sample_image(name)
    for k in range(5):
      y, x = 40 + 60 * k, 30 + 90 * k
      crop = Image.fromarray(photo[y:y + 128, x:x + 128]).resize((32, 32), Image.BILINEAR)
      crops.append(np.asarray(crop))
  return np.stack(crops)


def random_images(shape, seed=0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, shape, dtype=np.uint8)
  images[0] = 77  # A flat image: PIL's "nothing to stretch / equalize" paths.
  images[1] = images[1] // 64 * 64 + 30  # Four grey levels only.
  return images


def pil_apply(images: np.ndarray, fn) -> np.ndarray:
  """Applies fn(PIL image) to each uint8 image, in mode L (C = 1) or RGB (C = 3)."""
  out = []
  for array in images:
    gray = array.shape[-1] == 1
    result = np.asarray(fn(Image.fromarray(array[..., 0] if gray else array)))
    out.append(result[..., None] if gray else result)
  return np.stack(out)


def pil_op(name: str, arg):
  """PIL's version of `augment.<name>` with argument `arg` (fill grey, NEAREST, as the peer)."""
  def affine(coeffs):
    return lambda im: im.transform(im.size, Image.AFFINE, coeffs, fillcolor=128 if
                                   im.mode == "L" else (128,) * 3)
  return {
      "autocontrast": ImageOps.autocontrast,
      "equalize": ImageOps.equalize,
      "solarize": lambda im: ImageOps.solarize(im, arg),
      "posterize": lambda im: ImageOps.posterize(im, arg),
      "color": lambda im: ImageEnhance.Color(im).enhance(arg),
      "contrast": lambda im: ImageEnhance.Contrast(im).enhance(arg),
      "brightness": lambda im: ImageEnhance.Brightness(im).enhance(arg),
      "sharpness": lambda im: ImageEnhance.Sharpness(im).enhance(arg),
      "rotate": lambda im: im.rotate(arg, fillcolor=128 if im.mode == "L" else (128,) * 3),
      "shear_x": affine((1, arg, 0, 0, 1, 0)),
      "shear_y": affine((1, 0, 0, arg, 1, 0)),
      "translate_x": affine((1, 0, arg, 0, 1, 0)),
      "translate_y": affine((1, 0, 0, 0, 1, arg)),
  }[name]


def ours(name: str, images: np.ndarray, arg) -> np.ndarray:
  op = getattr(augment, name)
  return (op(images) if arg is None else op(images, arg)).numpy()


def assert_matches_pil(name: str, got: np.ndarray, want: np.ndarray) -> None:
  assert got.shape == want.shape and got.dtype == np.uint8
  diff = np.abs(got.astype(int) - want.astype(int))
  if name in ENHANCE:
    assert diff.max() <= 1 and np.mean(diff > 0) <= 1e-3, (name, diff.max(), np.mean(diff > 0))
  else:
    np.testing.assert_array_equal(got, want, err_msg=name)


# The FixMatch RandAugment arguments at levels 1, 5 and 9 (recipes.md), with both signs.
def level_args(name: str, size: int) -> list:
  levels = (1, 5, 9)
  return {
      "autocontrast": [None], "equalize": [None],
      "solarize": [256 - int(25.6 * lv) for lv in levels],
      "posterize": [4 - int(0.4 * lv) for lv in levels],
      "rotate": [s * int(3 * lv) for lv in levels for s in (1, -1)],
      "shear_x": [s * 0.03 * lv for lv in levels for s in (1, -1)],
      "shear_y": [s * 0.03 * lv for lv in levels for s in (1, -1)],
      "translate_x": [s * lv * size / 32 for lv in levels for s in (1, -1)],
      "translate_y": [s * lv * size / 32 for lv in levels for s in (1, -1)],
      **{op: [0.1 + 0.18 * lv for lv in levels] for op in ENHANCE},
  }[name]


OPS = ("autocontrast", "equalize", "rotate", "solarize", "color", "contrast", "brightness",
       "sharpness", "shear_x", "shear_y", "translate_x", "translate_y", "posterize")


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dataset", ["fashion_mnist", "photos"])
def test_op_matches_pil_on_real_images(name, dataset):
  images = fashion_images() if dataset == "fashion_mnist" else photo_crops()
  for arg in level_args(name, images.shape[1]):
    assert_matches_pil(name, ours(name, images, arg), pil_apply(images, pil_op(name, arg)))


@pytest.mark.parametrize("shape", [(12, 32, 32, 3), (12, 28, 28, 1), (6, 24, 40, 3),
                                   (6, 37, 19, 1)])
def test_ops_match_pil_beyond_the_table(shape):
  """Wider arguments than RandAugment uses, non-square images, flat and 4-level images."""
  images = random_images(shape)
  args = {"rotate": [90, 180, -45, 7.5, 359], "shear_x": [0.5, -0.77], "shear_y": [0.31],
          "translate_x": [-12.5, 3.3], "translate_y": [20, -2.7], "solarize": [0, 128, 256],
          "posterize": [1, 7, 8], **{op: [-0.5, 0.0, 1.0, 2.7] for op in ENHANCE},
          "autocontrast": [None], "equalize": [None]}
  for name, values in args.items():
    for arg in values:
      assert_matches_pil(name, ours(name, images, arg), pil_apply(images, pil_op(name, arg)))


def test_batch_with_per_image_arguments_equals_single_images():
  images = photo_crops()[:4]
  factors = np.array([0.2, 0.9, 1.3, 1.9])
  batch = augment.sharpness(images, factors).numpy()
  for image, factor, got in zip(images, factors, batch, strict=True):
    np.testing.assert_array_equal(augment.sharpness(image, factor).numpy(), got)


ALL_OPS = [("identity", None), ("autocontrast", None), ("equalize", None), ("rotate", 13.0),
           ("solarize", 100.0), ("color", 0.4), ("contrast", 1.5), ("brightness", 0.7),
           ("sharpness", 1.6), ("shear_x", -0.2), ("shear_y", 0.1), ("translate_x", 5.0),
           ("translate_y", -3.0), ("posterize", 3.0)]


@pytest.mark.parametrize("channels", [1, 3])
def test_every_op_in_tf_data_equals_eager(channels):
  image = random_images((3, 20, 24, channels), seed=channels)[2]

  def all_ops(image, magnitude):
    # The magnitude is a traced tensor: one graph serves every level.
    return {name: getattr(augment, name)(image) if arg is None else
            getattr(augment, name)(image, magnitude * arg) for name, arg in ALL_OPS}

  dataset = tf.data.Dataset.from_tensors((image, tf.constant(1.0, tf.float64))).map(all_ops)
  in_graph = next(iter(dataset))
  for name, arg in ALL_OPS:
    eager = ours(name, image, arg)
    assert eager.shape == image.shape and eager.dtype == np.uint8, name
    np.testing.assert_array_equal(in_graph[name].numpy(), eager, err_msg=name)


@pytest.mark.parametrize("channels", [1, 3])
def test_ops_accept_an_empty_batch(channels):
  empty = np.zeros((0, 8, 8, channels), np.uint8)
  for name, arg in ALL_OPS:
    assert ours(name, empty, arg).shape == empty.shape, name
  assert augment.cutout_at(empty, [], [], []).shape == empty.shape


def test_color_is_identity_for_grayscale():
  images = fashion_images()
  np.testing.assert_array_equal(augment.color(images, 0.3).numpy(), images)


def test_rejects_non_uint8_images():
  with pytest.raises(TypeError):
    augment.solarize(np.zeros((4, 4, 3), np.float32), 128)


def numpy_cutout(image, cy, cx, size):
  """The FixMatch reference (and PIL peer) cutout, in NumPy."""
  out = image.copy()
  out[max(0, cy - size // 2):cy + size // 2, max(0, cx - size // 2):cx + size // 2] = 128
  return out


@pytest.mark.parametrize("center", [(0, 0), (31, 31), (16, 5), (3, 29)])
@pytest.mark.parametrize("size", [16, 15, 0])
def test_cutout_at_clips_at_borders(center, size):
  image = photo_crops()[0]
  got = augment.cutout_at(image, center[0], center[1], size).numpy()
  np.testing.assert_array_equal(got, numpy_cutout(image, *center, size))


def test_cutout_random_centre_is_deterministic_and_grey():
  image = np.zeros((32, 32, 3), np.uint8)
  first = augment.cutout(image, tf.constant([1, 2]), 16).numpy()
  np.testing.assert_array_equal(augment.cutout(image, tf.constant([1, 2]), 16).numpy(), first)
  grey = np.all(first == 128, axis=-1)
  rows, cols = np.nonzero(grey.any(1))[0], np.nonzero(grey.any(0))[0]
  assert set(np.unique(first)) <= {0, 128} and 0 < grey.sum() <= 16 * 16
  assert grey.sum() == len(rows) * len(cols)  # One axis-aligned rectangle.
  others = [augment.cutout(image, tf.constant([1, s]), 16).numpy() for s in range(3, 9)]
  assert any(not np.array_equal(first, other) for other in others)


def crop_candidates(image, pad, flip):
  """Every output weak augmentation may give: (mirrored?) reflect-pad then crop, NumPy."""
  sources = [image, image[:, ::-1]] if flip else [image]
  out = {}
  h, w = image.shape[:2]
  for mirrored, source in enumerate(sources):
    padded = np.pad(source, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    for oy in range(2 * pad + 1):
      for ox in range(2 * pad + 1):
        out[(mirrored, oy, ox)] = padded[oy:oy + h, ox:ox + w]
  return out


def which_candidate(candidates, got):
  matches = [key for key, want in candidates.items() if np.array_equal(want, got)]
  assert matches, "output is not a flip/pad/crop of the input"
  return matches[0]


def test_flip_and_pad_crop_against_numpy():
  image = random_images((3, 12, 10, 3))[2]
  keys = []
  for s in range(60):
    seed = tf.constant([s, 5])
    flipped = augment.random_flip_lr(image, seed).numpy()
    assert np.array_equal(flipped, image) or np.array_equal(flipped, image[:, ::-1])
    np.testing.assert_array_equal(augment.random_flip_lr(image, seed).numpy(), flipped)
    cropped = augment.pad_and_crop(image, seed, 4).numpy()
    keys.append(which_candidate(crop_candidates(image, 4, flip=False), cropped))
  offsets = np.array(keys)[:, 1:]
  assert offsets.min() == 0 and offsets.max() == 8  # The whole 0..2*pad range is reached.
  np.testing.assert_array_equal(augment.pad_and_crop(image, tf.constant([1, 1]), 0), image)


@pytest.mark.parametrize("flip", [True, False])
def test_weak_augment_single_and_batched(flip):
  images = fashion_images()[:8]
  batched = augment.weak_augment_batch(images, tf.constant([4, 2]), flip=flip, pad=4).numpy()
  keys = []
  for i, image in enumerate(images):
    candidates = crop_candidates(image, 4, flip)
    single = augment.weak_augment(image, tf.constant([i, 9]), flip=flip, pad=4).numpy()
    keys += [which_candidate(candidates, single), which_candidate(candidates, batched[i])]
  assert flip == any(key[0] for key in keys)
  # Same seed, same output; image i uses row first_row + i of the seed's draws only.
  again = augment.weak_augment_batch(images[:5], tf.constant([4, 2]), flip=flip, pad=4)
  np.testing.assert_array_equal(again.numpy(), batched[:5])
  rows_3_to_8 = augment.weak_augment_batch(images[3:], tf.constant([4, 2]), flip=flip, pad=4,
                                           first_row=3)
  np.testing.assert_array_equal(rows_3_to_8.numpy(), batched[3:])


def test_weak_augment_in_tf_data_equals_eager():
  images = photo_crops()
  seeds = np.stack([np.arange(len(images)), np.full(len(images), 3)], 1)
  dataset = tf.data.Dataset.from_tensor_slices((images, seeds)).map(
      lambda image, seed: augment.weak_augment(image, seed, flip=True, pad=4))
  for (image, seed), got in zip(zip(images, seeds, strict=True), dataset, strict=True):
    eager = augment.weak_augment(image, seed, flip=True, pad=4)
    np.testing.assert_array_equal(got.numpy(), eager.numpy())
  different = [augment.weak_augment(images[0], tf.constant([s, 0]), flip=True, pad=4).numpy()
               for s in range(8)]
  assert len({d.tobytes() for d in different}) > 1
