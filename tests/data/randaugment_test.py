"""Tests for fixmatch_jax.data.randaugment: the FixMatch RandAugment recipe, pinned.

Oracles: the recipes.md level table, draw statistics, PIL (the whole augmentation replayed with
PIL from the sampled choices, as the reference PIL implementation would apply them), and the
per-image path against the batched path (bit-identical by construction).
"""
import functools
import gzip
import os
import types

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from fixmatch_jax.data import randaugment

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
NAMES = randaugment.OP_NAMES


@functools.cache
def fashion_images(count: int = 32) -> np.ndarray:
  if not os.path.exists(FASHION):
    pytest.skip(f"Fashion-MNIST not found at {FASHION} (apt-get install dataset-fashion-mnist).")
  with gzip.open(FASHION) as f:
    return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)[:count].copy()


@functools.cache
def photo_crops() -> np.ndarray:
  datasets = pytest.importorskip("sklearn.datasets")
  crops = []
  for name in ("china.jpg", "flower.jpg"):
    photo = datasets.load_sample_image(name)
    crops += [Image.fromarray(photo[y:y + 96, x:x + 96]).resize((32, 32), Image.BILINEAR)
              for y in (0, 80, 160, 240, 330) for x in (0, 180, 360, 540)]
  return np.stack([np.asarray(c) for c in crops])


def per_image_params(count: int, seed_offset: int = 0, **options) -> dict[str, np.ndarray]:
  """sample_params of `count` images with seeds [i, 7], batched by tf.data."""
  seeds = tf.stack([tf.range(count) + seed_offset, tf.fill([count], 7)], axis=1)
  dataset = tf.data.Dataset.from_tensor_slices(seeds).map(
      lambda seed: randaugment.sample_params(seed, (32, 32, 3), **options))
  return {k: v.numpy() for k, v in next(iter(dataset.batch(count))).items()}


def test_level_table_matches_recipes():
  levels = tf.range(1, 10, dtype=tf.float64)
  plus = tf.ones_like(levels)

  def arg(name, sign=plus, **kw):
    return randaugment.level_to_arg(name, levels, sign, **kw).numpy()

  np.testing.assert_array_equal(arg("rotate"), [3, 6, 9, 12, 15, 18, 21, 24, 27])
  np.testing.assert_array_equal(arg("rotate", -plus), -arg("rotate"))
  np.testing.assert_array_equal(arg("solarize"), [231, 205, 180, 154, 128, 103, 77, 52, 26])
  np.testing.assert_array_equal(arg("posterize"), [4, 4, 3, 3, 2, 2, 2, 1, 1])
  for name in ("color", "contrast", "brightness", "sharpness"):
    np.testing.assert_allclose(arg(name), 0.1 + 0.18 * np.arange(1, 10))
    np.testing.assert_array_equal(arg(name, -plus), arg(name))  # Factors are never signed.
  for name in ("shear_x", "shear_y"):
    np.testing.assert_allclose(arg(name, -plus), -0.03 * np.arange(1, 10))
  np.testing.assert_array_equal(arg("translate_x"), np.arange(1, 10))  # L pixels at 32.
  np.testing.assert_allclose(arg("translate_y", height=96), 3 * np.arange(1, 10))
  assert randaugment.level_to_arg("equalize", levels, plus) is None


def test_ports_variant_ranges():
  t = tf.constant([0.0, 0.5, 0.999], tf.float64)

  def arg(name):
    return randaugment.level_to_arg(name, t, tf.ones_like(t), variant="ports").numpy()

  np.testing.assert_allclose(arg("brightness"), [0.05, 0.5, 0.9491])
  np.testing.assert_array_equal(arg("posterize"), [4, 6, 7])
  np.testing.assert_allclose(arg("rotate"), [0, 15, 29.97])
  np.testing.assert_allclose(arg("translate_x"), [0, 4.8, 9.59], atol=0.01)
  params = per_image_params(500, variant="ports", num_ops=3, prob=1.0)
  assert params["applied"].all() and params["op"].shape == (500, 3)
  assert 0 <= params["level"].min() and params["level"].max() < 1
  assert 0 <= params["cutout"][:, 2].min() and params["cutout"][:, 2].max() < 16


def assert_uniform(counts, expected, tolerance=0.08):
  counts = np.asarray(counts)
  assert np.all(np.abs(counts / expected - 1) < tolerance), (counts, expected)


@pytest.mark.parametrize("source", ["one_batch_seed", "per_image_seeds"])
def test_draw_statistics(source):
  """Ops uniform over the 14, applied half the time, levels uniform in 1..9, random signs."""
  n = 20000 if source == "one_batch_seed" else 4000
  if source == "one_batch_seed":
    params = randaugment.sample_params(tf.constant([3, 1]), (32, 32, 3), batch_size=n)
    params = {k: v.numpy() for k, v in params.items()}
  else:
    params = per_image_params(n)
  draws = 2 * n
  assert params["op"].shape == (n, 2)
  assert_uniform(np.bincount(params["op"].ravel(), minlength=14), draws / 14,
                 tolerance=0.08 if n > 10000 else 0.2)
  assert abs(params["applied"].mean() - 0.5) < 0.01 + 0.02 * (n < 10000)
  for op in range(14):  # Applying does not depend on which op was drawn.
    assert abs(params["applied"][params["op"] == op].mean() - 0.5) < 0.06 + 0.06 * (n < 10000)
  assert set(np.unique(params["level"])) == set(range(1, 10))
  assert_uniform(np.bincount(params["level"].astype(int).ravel())[1:], draws / 9,
                 tolerance=0.06 if n > 10000 else 0.15)
  assert abs((params["sign"] > 0).mean() - 0.5) < 0.02 and set(np.unique(params["sign"])) == {-1, 1}
  centres = params["cutout"][:, :2]
  assert centres.min() == 0 and centres.max() == 31 and np.all(params["cutout"][:, 2] == 16)
  assert_uniform(np.bincount(centres[:, 0] // 8), n / 4, tolerance=0.1)


def test_batch_rows_depend_only_on_seed_and_row():
  """So a process holding rows [a, b) of a global batch gets exactly those rows' choices."""
  seed = tf.constant([5, 5])
  whole = randaugment.sample_params(seed, (32, 32, 3), batch_size=40)
  small = randaugment.sample_params(seed, (32, 32, 3), batch_size=8)
  middle = randaugment.sample_params(seed, (32, 32, 3), batch_size=10, first_row=20)
  for key in whole:
    np.testing.assert_array_equal(small[key].numpy(), whole[key].numpy()[:8])
    np.testing.assert_array_equal(middle[key].numpy(), whole[key].numpy()[20:30])


def test_fixed_magnitude_and_options():
  params = per_image_params(50, magnitude=5, num_ops=3, prob=1.0, cutout=0.25)
  assert np.all(params["level"] == 5) and params["applied"].all()
  assert params["op"].shape == (50, 3) and np.all(params["cutout"][:, 2] == 8)
  assert np.all(per_image_params(50, min_level=4, max_level=4)["level"] == 4)
  with pytest.raises(ValueError):
    randaugment.sample_params(tf.constant([0, 0]), (32, 32), variant="kornia")
  with pytest.raises(ValueError):
    randaugment.sample_params(tf.constant([0, 0]), (32, 32), prob=1.5)
  with pytest.raises(ValueError):
    randaugment.sample_params(tf.constant([0, 0]), (32, 32), min_level=5, max_level=2)


def pil_op(img: Image.Image, name: str, level: float, sign: float) -> Image.Image:
  """One op of the FixMatch RandAugment in PIL, as the PIL peer writes it (grey fill)."""
  fill = 128 if img.mode == "L" else (128, 128, 128)
  w, h = img.size
  factor = 0.1 + 0.18 * level
  affine = {"shear_x": (1, sign * 0.03 * level, 0, 0, 1, 0),
            "shear_y": (1, 0, 0, sign * 0.03 * level, 1, 0),
            "translate_x": (1, 0, sign * level * w / 32, 0, 1, 0),
            "translate_y": (1, 0, 0, 0, 1, sign * level * h / 32)}
  enhance = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
             "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}
  if name in affine:
    return img.transform(img.size, Image.AFFINE, affine[name], fillcolor=fill)
  if name in enhance:
    return enhance[name](img).enhance(factor)
  if name == "rotate":
    return img.rotate(sign * int(3 * level), fillcolor=fill)
  if name == "solarize":
    return ImageOps.solarize(img, 256 - int(25.6 * level))
  if name == "posterize":
    return ImageOps.posterize(img, 4 - int(0.4 * level))
  return {"identity": img, "autocontrast": ImageOps.autocontrast(img),
          "equalize": ImageOps.equalize(img)}[name]


def pil_replay(image: np.ndarray, params: dict, index: int) -> np.ndarray:
  """The FixMatch RandAugment of one image in PIL, given its sampled choices, then Cutout."""
  gray = image.shape[-1] == 1
  img = Image.fromarray(image[..., 0] if gray else image)
  for op, applied, level, sign in zip(params["op"][index], params["applied"][index],
                                      params["level"][index].astype(float),
                                      params["sign"][index].astype(float), strict=True):
    if applied:
      img = pil_op(img, NAMES[op], level, sign)
  out = np.array(img)
  out = out[..., None] if gray else out
  cy, cx, size = params["cutout"][index]
  out[max(0, cy - size // 2):cy + size // 2, max(0, cx - size // 2):cx + size // 2] = 128
  return out


@pytest.mark.parametrize("dataset", ["fashion_mnist", "photos"])
def test_rand_augment_equals_pil_replay(dataset):
  images = fashion_images() if dataset == "fashion_mnist" else photo_crops()
  n = len(images)
  shape = images.shape[1:]
  seed = tf.constant([11, len(shape)])
  # Every op applied (prob 1) so the replay covers all 14 on real images; then the default.
  for options in ({"prob": 1.0, "num_ops": 3}, {}):
    params = randaugment.sample_params(seed, shape, batch_size=n, **options)
    got = randaugment.apply(images, params).numpy()
    params = {k: v.numpy() for k, v in params.items()}
    for i in range(n):
      np.testing.assert_array_equal(got[i], pil_replay(images[i], params, i),
                                    err_msg=f"ops {[NAMES[o] for o in params['op'][i]]}")


@pytest.mark.parametrize("variant", ["fixmatch", "ports"])
def test_per_image_path_equals_batched_path(variant):
  """switch_case per image == dynamic_partition per batch, in tf.data (graph mode).

  Batches of 32 and 3 images: with 3, most op groups are empty.
  """
  images = photo_crops()[:35]
  seeds = np.stack([np.arange(35), np.full(35, 2)], 1)
  options = {"variant": variant, "num_ops": 3 if variant == "ports" else 2}
  dataset = tf.data.Dataset.from_tensor_slices((images, seeds))
  per_image = np.stack(list(dataset.map(
      lambda image, seed: randaugment.rand_augment(image, seed, **options)).as_numpy_iterator()))
  params = dataset.map(lambda image, seed: (image, randaugment.sample_params(
      seed, image.shape, **options))).batch(32)
  batched = np.concatenate(list(params.map(
      lambda image, p: randaugment.apply(image, p, variant=variant)).as_numpy_iterator()))
  np.testing.assert_array_equal(per_image, batched)
  assert per_image.dtype == np.uint8 and per_image.shape == images.shape
  assert np.mean(per_image != images) > 0.1


def test_rand_augment_eager_deterministic_and_seed_dependent():
  image = fashion_images()[0]
  first = randaugment.rand_augment(image, tf.constant([1, 2])).numpy()
  assert first.shape == image.shape and first.dtype == np.uint8
  np.testing.assert_array_equal(randaugment.rand_augment(image, tf.constant([1, 2])), first)
  others = {randaugment.rand_augment(image, tf.constant([1, s])).numpy().tobytes()
            for s in range(3, 11)}
  assert len(others | {first.tobytes()}) > 5


def config(**overrides):
  values = dict(name="randaugment", num_ops=2, prob=0.5, min_level=1, max_level=9,
                magnitude=-1, variant="fixmatch", cutout=0.5)
  values.update(overrides)
  return ml_collections.ConfigDict(values)


def test_strong_augment_reads_the_config():
  images = photo_crops()[:6]
  seed = tf.constant([8, 8])
  for cfg in (config(), types.SimpleNamespace(**config().to_dict())):
    np.testing.assert_array_equal(randaugment.strong_augment(images[0], seed, cfg),
                                  randaugment.rand_augment(images[0], seed))
  # prob 0 and no cutout: the identity.
  np.testing.assert_array_equal(
      randaugment.strong_augment(images[0], seed, config(prob=0.0, cutout=0.0)), images[0])
  params = randaugment.strong_augment_params(seed, images.shape[1:], config(magnitude=7),
                                             batch_size=6)
  assert np.all(params["level"].numpy() == 7)
  batch = randaugment.strong_augment_batch(images, params, config(magnitude=7)).numpy()
  np.testing.assert_array_equal(batch, randaugment.apply(images, params).numpy())
  with pytest.raises(ValueError):
    randaugment.strong_augment(images[0], seed, config(name="ctaugment"))
