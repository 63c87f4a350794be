"""Tests for fixmatch_jax.data.ctaugment: CTAugment's ops, policies and pipeline views.

Oracles: PIL running the reference code's op definitions (with translate fixed), a NumPy
pixel loop for cutout, hand-computed bin distributions and draw statistics, and a second
run of the pipeline (determinism, exact resume).
"""
import functools
import gzip
import itertools
import os

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from fixmatch_jax.data import ctaugment, pipeline, sources, splits
from fixmatch_jax.data import ctaugment_rates as layout

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
PIL_METHODS = (Image.LANCZOS, Image.BICUBIC, Image.BILINEAR, Image.BOX, Image.HAMMING,
               Image.NEAREST)


def pil_op(name: str, image: np.ndarray, v: float, m: float, fill: int) -> np.ndarray:
  """The reference code's op with PIL (translate as a fraction of the side: the fix)."""
  x = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  width, height = x.size
  signed = 2 * v - 1
  if name == "identity":
    out = x
  elif name in ("autocontrast", "equalize", "invert"):
    out = Image.blend(x, getattr(ImageOps, name)(x), v)
  elif name in ("blur", "smooth"):
    out = Image.blend(x, x.filter(ImageFilter.BLUR if name == "blur" else ImageFilter.SMOOTH), v)
  elif name in ("brightness", "color", "contrast", "sharpness"):
    out = getattr(ImageEnhance, name.capitalize())(x).enhance(0.1 + 1.9 * v)
  elif name == "posterize":
    out = ImageOps.posterize(x, 1 + int(v * 7.999))
  elif name == "solarize":
    out = ImageOps.solarize(x, int(v * 255.999))
  elif name == "rotate":
    out = x.rotate(int(np.round(signed * 45)), fillcolor=fill)
  elif name == "rescale":
    s = v * 0.25
    crop = x.crop((s * width, s * height, width * (1 - s), height * (1 - s)))
    out = crop.resize(x.size, PIL_METHODS[int(m * 5.99)])
  else:
    coeffs = {"shear_x": (1, signed * 0.3, 0, 0, 1, 0), "shear_y": (1, 0, 0, signed * 0.3, 1, 0),
              "translate_x": (1, 0, signed * 0.3 * width, 0, 1, 0),
              "translate_y": (1, 0, 0, 0, 1, signed * 0.3 * height)}[name]
    out = x.transform(x.size, Image.AFFINE, coeffs, fillcolor=fill)
  return np.asarray(out).reshape(image.shape)


@functools.cache
def rgb_images() -> np.ndarray:
  rng = np.random.default_rng(0)
  # Smooth random images (upsampled noise) plus flat and saturated ones: PIL's edge cases.
  noise = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
  images = np.stack([np.asarray(Image.fromarray(n).resize((32, 32), Image.BILINEAR))
                     for n in noise])
  extra = np.stack([np.full((32, 32, 3), 77, np.uint8), rng.integers(0, 256, (32, 32, 3),
                                                                    dtype=np.uint8)])
  return np.concatenate([images, extra])


@functools.cache
def fashion_images(count: int = 12) -> np.ndarray:
  if not os.path.exists(FASHION):
    pytest.skip(f"Fashion-MNIST not found at {FASHION} (apt-get install dataset-fashion-mnist).")
  with gzip.open(FASHION) as f:
    return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)[:count].copy()


@pytest.mark.parametrize("kind", ["rgb32", "fashion28"])
@pytest.mark.parametrize("name", [n for n in layout.OP_NAMES if n != "cutout"])
def test_op_matches_pil(name, kind):
  images = rgb_images() if kind == "rgb32" else fashion_images()
  rng = np.random.default_rng(abs(hash((name, kind))) % 2**32)
  values = rng.random((len(images), layout.MAX_PARAMS)).astype(np.float32)
  values[:2, 0] = [0.0, 0.99999]  # The ends of the magnitude range.
  values[:, 1] = (np.arange(len(images)) % 6 + rng.random(len(images))) / 6  # Every method.
  fill = 0 if kind == "rgb32" else 128
  ours = ctaugment.apply_op(name, images, values, fill=fill).numpy()
  for i, image in enumerate(images):
    expected = pil_op(name, image, float(values[i, 0]), float(values[i, 1]), fill)
    np.testing.assert_array_equal(ours[i], expected, err_msg=f"{name} image {i} {values[i]}")


def test_cutout_op_matches_pixel_loop():
  """Side 1 + int(v * 32 * 0.499), rows/cols [c - side//2, c + side//2) clipped, grey."""
  images = rgb_images()
  values = np.array([[0.0, 0], [0.5, 0], [0.99, 0], [0.3, 0]] * 3, np.float32)
  centers = np.array([[0, 0], [16, 16], [31, 5], [3, 30]] * 3, np.int32)
  ours = ctaugment.apply_op("cutout", images, values, centers).numpy()
  for i, image in enumerate(images):
    expected = image.copy()
    side = 1 + int(float(values[i, 0]) * 32 * 0.499)
    cy, cx = centers[i]
    for y in range(max(0, cy - side // 2), min(32, cy + side // 2)):
      for x in range(max(0, cx - side // 2), min(32, cx + side // 2)):
        expected[y, x] = 128
    np.testing.assert_array_equal(ours[i], expected)


def test_translate_moves_pixels_and_the_reference_bug_did_not():
  image = np.arange(32 * 32 * 3, dtype=np.int64).reshape(32, 32, 3).astype(np.uint8)
  # v = 1: (2v - 1) * 0.3 * 32 = 9.6 px; PIL's float path reads x + floor(0.5 + 9.6) = x + 10.
  moved = ctaugment.apply_op("translate_x", image, [1.0, 0.0], fill=0).numpy()
  np.testing.assert_array_equal(moved[:, :22], image[:, 10:])
  assert (moved[:, 22:] == 0).all()
  moved_y = ctaugment.apply_op("translate_y", image, [0.0, 0.0], fill=0).numpy()  # -9.6 px.
  np.testing.assert_array_equal(moved_y[10:], image[:22])
  # The reference passed the fraction (2v - 1) * 0.3 as a pixel offset: PIL moves nothing.
  for fraction in (-0.3, -0.1, 0.1, 0.3):
    buggy = Image.fromarray(image).transform((32, 32), Image.AFFINE, (1, 0, fraction, 0, 1, 0))
    np.testing.assert_array_equal(np.asarray(buggy), image)


def test_bin_probabilities_by_hand():
  rates = np.ones(layout.NUM_RATES, np.float32)
  rotate = layout.OP_NAMES.index("rotate")
  start = layout.OFFSETS[rotate, 0]
  rotate_rates = np.linspace(0.0, 1.0, 17).astype(np.float32)
  rates[start:start + 17] = rotate_rates
  probs = ctaugment.bin_probabilities(rates, threshold=0.8, decay=0.99).numpy()
  p = rotate_rates.astype(np.float64) + 0.01
  p /= p.max()
  p[p < 0.8] = 0
  np.testing.assert_allclose(probs[rotate, 0], p / p.sum(), rtol=1e-6)
  assert (probs[rotate, 0, :13] == 0).all() and (probs[rotate, 0, 14:] > 0).all()
  # Rates all equal: every bin of every parameter is equally likely; absent rows are 0.
  posterize = layout.OP_NAMES.index("posterize")
  np.testing.assert_allclose(probs[posterize, 0, :8], 1 / 8)
  assert (probs[posterize, 0, 8:] == 0).all() and (probs[posterize, 1] == 0).all()


def test_strong_policy_draws_bins_in_proportion_to_thresholded_rates():
  rates = np.ones(layout.NUM_RATES, np.float32)
  posterize = layout.OP_NAMES.index("posterize")
  start = layout.OFFSETS[posterize, 0]
  # p = rate + 0.01, over max 1.01: bins 0-2 fall below 0.8 and are never drawn.
  rates[start:start + 8] = [0.1, 0.5, 0.78, 0.8, 0.9, 1.0, 0.85, 0.95]
  params = ctaugment.sample_policy(tf.constant([3, 4]), (8, 8, 3), tf.constant(rates),
                                   batch_size=60000)
  ops, values = params["op"].numpy(), params["value"].numpy()
  drawn = values[..., 0][ops == posterize]
  bins = np.floor(drawn * 8).astype(int)
  counts = np.bincount(bins, minlength=8)
  p = np.array(rates[start:start + 8], np.float64) + 0.01
  p /= p.max()
  p[p < 0.8] = 0
  expected = p / p.sum()
  assert counts[:3].sum() == 0
  n = counts.sum()
  assert n > 5000  # 60000 images x 2 ops / 19 ops.
  sigma = np.sqrt(n * expected * (1 - expected))
  assert (np.abs(counts - n * expected) <= 4 * sigma + 1).all(), (counts, n * expected)
  # Within a bin the magnitude is uniform: (bin + U) / 8.
  assert 0.4 < np.mean(drawn * 8 - bins) < 0.6
  # Ops are uniform over the 19, and every strong view ends with the level-1 cutout.
  np.testing.assert_allclose(np.bincount(ops.ravel(), minlength=19) / ops.size, 1 / 19,
                             atol=0.01)
  assert (params["cutout"].numpy()[:, 2] == 1 + int(8 * 0.499)).all()


def test_probe_policy_is_uniform_and_reports_its_bins():
  params = ctaugment.sample_policy(tf.constant([5, 6]), (32, 32, 3), probe=True,
                                   batch_size=20000)
  ops, values, bins = (params[k].numpy() for k in ("op", "value", "bins"))
  assert (params["cutout"].numpy()[:, 2] == 0).all()  # No cutout on probes.
  rescale = ops == layout.OP_NAMES.index("rescale")
  assert abs(values[..., 0][rescale].mean() - 0.5) < 0.03
  bins = bins.reshape(ops.shape + (layout.MAX_PARAMS,))
  for op in range(len(layout.OPS)):
    chosen = ops == op
    for param in range(layout.MAX_PARAMS):
      n = layout.NUM_BINS[op, param]
      if n == 0:
        assert (bins[..., param][chosen] == -1).all()
        continue
      expected = layout.OFFSETS[op, param] + layout.probe_bin(values[..., param][chosen], n)
      np.testing.assert_array_equal(bins[..., param][chosen], expected)


def _cta_config(lag=2):
  return ml_collections.ConfigDict(dict(
      dataset="synthetic", dataset_options=ml_collections.ConfigDict(), num_labels=8,
      unlabelled_includes_labelled=True, batch_size=4, mu=2, eval_batch_size=8,
      weak=dict(flip=True, pad_fraction=0.125),
      strong=dict(name="ctaugment", depth=2, threshold=0.8, decay=0.99, cutout=1.0, lag=lag,
                  fill=0),
      prefetch=2, num_parallel_calls=-1))


def _cta_batches(config, num_steps, start_step=0, board_rates=None):
  source = sources.load("synthetic", "train", num_examples=32, image_size=16, channels=3,
                        num_classes=4)
  split = splits.make_split(config, source, seed=1)
  board = layout.RateBoard(config.strong.lag)
  versions = board_rates or {}
  for version in range(num_steps + start_step + 1):
    if version in versions:
      board.publish(version, versions[version])
    elif version > 0:
      board.publish(version, np.ones(layout.NUM_RATES, np.float32))
  stream = pipeline.train_stream(config, source, split, views=("weak", "strong"), seed=1,
                                 start_step=start_step, process_index=0, process_count=1,
                                 rate_board=board)
  batches = list(itertools.islice(stream, num_steps))
  # Prefetching map calls may wait for versions nobody will publish: release them before
  # the iterator is destroyed (the train loop does the same when it stops).
  board.close()
  return batches


def test_pipeline_views_use_the_version_of_their_lag_and_resume_exactly():
  config = _cta_config(lag=2)
  rng = np.random.default_rng(1)
  # Versions with different rates: a batch's strong views depend on its version only.
  rates = {v: rng.random(layout.NUM_RATES).astype(np.float32) for v in range(7)}
  straight = _cta_batches(config, 6, board_rates=rates)
  resumed = _cta_batches(config, 3, start_step=3, board_rates=rates)
  for a, b in zip(straight[3:], resumed, strict=True):
    for part in a:
      for key in a[part]:
        np.testing.assert_array_equal(a[part][key], b[part][key], err_msg=f"{part}/{key}")
  assert [int(b["unlabelled"]["policy_version"][0]) for b in straight] == [0, 0, 0, 1, 2, 3]
  lab = straight[0]["labelled"]
  assert set(lab) == {"image", "label", "probe", "probe_bins"}
  assert lab["probe_bins"].shape == (4, 2 * layout.MAX_PARAMS)
  # Other rates for version 1 change the strong views of step 3 only (its version is 1).
  other = {**rates, 1: np.ones(layout.NUM_RATES, np.float32)}
  changed = _cta_batches(config, 6, board_rates=other)
  for step in range(6):
    same = np.array_equal(changed[step]["unlabelled"]["strong"],
                          straight[step]["unlabelled"]["strong"])
    assert same == (step != 3), step
    np.testing.assert_array_equal(changed[step]["unlabelled"]["weak"],
                                  straight[step]["unlabelled"]["weak"])


def test_unknown_strong_augmentation_is_refused():
  config = _cta_config()
  config.strong.name = "autoaugment"
  source = sources.load("synthetic", "train", num_examples=32, image_size=16, channels=3,
                        num_classes=4)
  with pytest.raises(ValueError, match="randaugment.*ctaugment"):
    pipeline.train_stream(config, source, splits.make_split(config, source, seed=1),
                          views=("weak", "strong"), seed=1, process_index=0, process_count=1)
