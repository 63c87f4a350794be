"""CTAugment as FixMatch uses it (arXiv:2001.07685, Sec. 3.2, App. C; the "CTA" rows), in TF.

The op set, each with magnitude parameters v in [0, 1) (bins in `ctaugment_rates.OPS`), and what
v means (the reference code's mapping; PIL is the oracle, as for RandAugment):

  autocontrast, equalize, invert   blend(x, op(x), v)         (PIL Image.blend)
  blur, smooth                     blend(x, x.filter(BLUR or SMOOTH), v)
  brightness, color, contrast,     ImageEnhance factor 0.1 + 1.9 v
  sharpness
  cutout                           grey square of side 1 + int(v * min(H, W) * 0.499)
  identity                         -
  posterize                        1 + int(7.999 v) bits
  rescale (v, m)                   crop the border 0.25 v of each side, resize back with method
                                   int(5.99 m) of (LANCZOS, BICUBIC, BILINEAR, BOX, HAMMING,
                                   NEAREST)
  rotate                           int(round((2v - 1) 45)) degrees
  shear_x, shear_y                 (2v - 1) 0.3
  solarize                         threshold int(255.999 v)
  translate_x, translate_y         (2v - 1) 0.3 * side pixels

Translate bug of the reference code: it passes (2v - 1) 0.3, a fraction of at most 0.3, to
PIL's AFFINE transform as the pixel offset, so with nearest-neighbour sampling no pixel ever
moves (|offset| < 0.5 px) and translate_x/y act as identity. Here the fraction is of the image
side (up to 9.6 px at 32 px), which is what the parameter range means.

Policies. Strong (unlabelled): `depth` = 2 ops drawn uniformly; for each parameter, with its
rates r: p = r + (1 - decay), p /= max(p), p[p < threshold] = 0, a bin b drawn with probability
proportional to p, and v = (b + U(0, 1)) / bins; then always cutout at level 1 (a square of
half the side). Probe (labelled): `depth` ops drawn uniformly, each v ~ U(0, 1), no cutout; the
bins int(v * bins * 0.999) it used are returned for the rate update (`ctaugment_rates`).

Differences from the reference kept on purpose, all documented in docs/ctaugment.md: cutout
(the op and the final one) fills with grey 128 as our RandAugment does (the reference: 127);
geometric ops fill with `fill` (default 0, the reference's PIL default).

As in `randaugment`, randomness and image work are split: `sample_policy` draws the choices for
a whole batch from one stateless seed (row i depends on (seed, first_row + i) only), and
`apply` runs each op once per batch on the images that drew it.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from fixmatch_jax.data import augment
from fixmatch_jax.data import ctaugment_rates as layout

OP_NAMES = layout.OP_NAMES
DEPTH = 2
_SALT = 23  # Folded into the caller's seed: CTA draws never reuse the weak view's.
_ENHANCE = ("brightness", "color", "contrast", "sharpness")
_BLEND_OPS = {"autocontrast": augment.autocontrast, "equalize": augment.equalize}
# PIL's BLUR (5x5 ring, /16) and SMOOTH (3x3, centre 5, /13) kernels.
_BLUR = (np.array([[1, 1, 1, 1, 1], [1, 0, 0, 0, 1], [1, 0, 0, 0, 1], [1, 0, 0, 0, 1],
                   [1, 1, 1, 1, 1]], np.float32), 16.0)
_SMOOTH = (np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32), 13.0)
RESCALE_METHODS = ("lanczos", "bicubic", "bilinear", "box", "hamming", "nearest")
_PRECISION_BITS = 22  # PIL's fixed point for 8-bit resampling coefficients.
_no_autograph = tf.autograph.experimental.do_not_convert
Params = dict[str, tf.Tensor]


# ----------------------------------------------------------------------------- op arithmetic

def _blend(images: tf.Tensor, other: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
  """PIL Image.blend(images, other, alpha) of uint8 batches, alpha [N] (float32 as PIL's C)."""
  flat = tf.reshape(tf.cast(images, tf.float32), [tf.shape(images)[0], -1])
  flat_other = tf.reshape(tf.cast(other, tf.float32), [tf.shape(images)[0], -1])
  blended = flat + tf.reshape(tf.cast(alpha, tf.float32), [-1, 1]) * (flat_other - flat)
  out = tf.cast(tf.clip_by_value(blended, 0.0, 255.0), tf.uint8)  # Truncates, as PIL.
  return tf.reshape(out, tf.shape(images))


def pil_filter(images: tf.Tensor, kernel: np.ndarray, divisor: float) -> tf.Tensor:
  """PIL `Image.filter(Kernel)`: float sum / divisor rounded half up; border rows kept.

  The weighted sums of bytes with integer weights are exact in float32, and for divisors 13
  and 16 (SMOOTH, BLUR) sum / divisor + 0.5 is exact or never within float error of an
  integer, so this gives PIL's bytes whatever the summation order.
  """
  channels, size = images.shape[-1], kernel.shape[0]
  border = size // 2
  weights = np.broadcast_to(kernel[:, :, None, None], (size, size, channels, 1)).copy()
  pixels = tf.cast(images, tf.float32)
  sums = tf.nn.depthwise_conv2d(pixels, weights, [1, 1, 1, 1], "SAME")
  filtered = tf.floor((sums + divisor / 2) / divisor)
  h, w = tf.shape(images)[1], tf.shape(images)[2]
  interior = tf.pad(tf.ones([h - 2 * border, w - 2 * border]), [[border, border]] * 2)
  interior = interior[None, :, :, None]
  return tf.cast(pixels + interior * (filtered - pixels), tf.uint8)


def _resample_filter(method: str):
  """PIL's resampling kernels (Resample.c) and their supports, for upscaling."""
  def bicubic(x):
    x, a = abs(x), -0.5
    if x < 1.0:
      return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    return (((x - 5) * x + 8) * x - 4) * a if x < 2.0 else 0.0

  def sinc(x):
    return 1.0 if x == 0.0 else np.sin(x * np.pi) / (x * np.pi)

  def hamming(x):
    x = abs(x)
    if x == 0.0:
      return 1.0
    if x >= 1.0:
      return 0.0
    x = x * np.pi
    # PIL's constants are C floats (0.54f, 0.46f).
    return np.sin(x) / x * (float(np.float32(0.54)) + float(np.float32(0.46)) * np.cos(x))

  return {"lanczos": (lambda x: sinc(x) * sinc(x / 3) if -3.0 <= x < 3.0 else 0.0, 3.0),
          "bicubic": (bicubic, 2.0),
          "bilinear": (lambda x: 1.0 - abs(x) if abs(x) < 1.0 else 0.0, 1.0),
          "box": (lambda x: 1.0 if -0.5 < x <= 0.5 else 0.0, 0.5),
          "hamming": (hamming, 1.0)}[method]


def resize_matrix(size: int, x0: int, x1: int, method: str) -> np.ndarray:
  """PIL's `crop([x0, x1)).resize(size, method)` along one axis as a fixed-point matrix.

  Row `out` holds the 8-bit path's integer coefficients (scaled by 2^22) over the input
  columns, as PIL's precompute_coeffs and normalize_coeffs_8bpc compute them; NEAREST is
  PIL's scale-affine index table (x_in = floor(c/size * (out + 0.5)), accumulated).
  """
  crop = x1 - x0
  matrix = np.zeros((size, size), np.float64)
  one = float(1 << _PRECISION_BITS)
  if crop == size:
    return np.eye(size) * one  # PIL copies an image resized to its own size.
  if method == "nearest":
    scale, position = crop / size, crop / size * 0.5
    for out in range(size):
      source = -1 if position < 0 else int(position)
      if 0 <= source < crop:
        matrix[out, x0 + source] = one
      position += scale
    return matrix
  kernel, support = _resample_filter(method)
  scale = crop / size  # < 1: upscaling, so the filter keeps its support.
  for out in range(size):
    center = (out + 0.5) * scale
    low = max(int(center - support + 0.5), 0)
    high = min(int(center + support + 0.5), crop)
    weights = [kernel(x + low - center + 0.5) for x in range(high - low)]
    total = sum(weights)
    for x, weight in enumerate(weights):
      k = weight / total if total != 0.0 else weight
      matrix[out, x0 + low + x] = int(k * one - 0.5) if k < 0 else int(k * one + 0.5)
  return matrix


@functools.lru_cache(maxsize=8)
def _rescale_table(size: int) -> np.ndarray:
  """float32 [boxes * 6, size, size]: `resize_matrix` of every reachable crop and method.

  With s in [0, 0.25), the reference's box is x0 = round(s * size), x1 = round(size * (1 - s))
  (Python's round, half to even), so x1 - (size - x0) is -1, 0 or 1: index
  (3 * x0 + x1 - (size - x0) + 1) * 6 + method. Coefficients are integers below 2^23, exact in
  float32.
  """
  boxes = size // 4 + 2
  table = np.zeros((boxes * 3 * len(RESCALE_METHODS), size, size), np.float32)
  for x0 in range(boxes):
    for delta in (-1, 0, 1):
      x1 = size - x0 + delta
      for m, method in enumerate(RESCALE_METHODS):
        index = (3 * x0 + delta + 1) * len(RESCALE_METHODS) + m
        table[index] = (resize_matrix(size, x0, x1, method) if x0 < x1 <= size
                        else np.eye(size) * (1 << _PRECISION_BITS))
  return table


def _resample_pass(pixels: tf.Tensor, matrices: tf.Tensor, equation: str) -> tf.Tensor:
  """One PIL resampling pass: (2^21 + sum in * k) >> 22, clipped to bytes, in float64."""
  sums = tf.einsum(equation, pixels, matrices)
  one = float(1 << _PRECISION_BITS)
  return tf.clip_by_value(tf.floor((sums + one / 2) / one), 0.0, 255.0)


def rescale(images: tf.Tensor, scale_value: tf.Tensor, method_value: tf.Tensor) -> tf.Tensor:
  """The reference's rescale: crop 0.25 v of each border, resize back (PIL, 8-bit path).

  PIL resamples horizontally, rounds to bytes, then vertically.
  """
  height, width = images.shape[1], images.shape[2]
  scale = tf.cast(scale_value, tf.float64) * 0.25
  method = tf.cast(tf.floor(tf.cast(method_value, tf.float64) * 5.99), tf.int32)

  def matrices(size):
    x0 = tf.round(scale * size)  # tf.round rounds half to even, as Python's round.
    x1 = tf.round(size * (1.0 - scale))
    index = (3 * x0 + x1 - (size - x0) + 1) * len(RESCALE_METHODS)
    index = tf.cast(index, tf.int32) + method
    return tf.cast(tf.gather(_rescale_table(size), index), tf.float64)

  pixels = tf.cast(images, tf.float64)
  pixels = _resample_pass(pixels, matrices(width), "nhwc,nvw->nhvc")
  pixels = _resample_pass(pixels, matrices(height), "nhwc,nuh->nuwc")
  return tf.cast(pixels, tf.uint8)


def _run_op(name: str, images: tf.Tensor, values: tf.Tensor, centers: tf.Tensor,
            fill: int) -> tf.Tensor:
  """Op `name` on a batch [n, H, W, C], magnitudes [n, MAX_PARAMS], cutout centres [n, 2]."""
  height, width = images.shape[1], images.shape[2]
  v = tf.cast(values[:, 0], tf.float64)
  if name == "identity":
    return images
  if name in _BLEND_OPS:
    return _blend(images, _BLEND_OPS[name](images), v)
  if name == "invert":
    return _blend(images, tf.bitwise.invert(images), v)
  if name in ("blur", "smooth"):
    return _blend(images, pil_filter(images, *(_BLUR if name == "blur" else _SMOOTH)), v)
  if name in _ENHANCE:
    return getattr(augment, name)(images, 0.1 + 1.9 * v)
  if name == "cutout":
    size = 1 + tf.floor(v * min(height, width) * 0.499)
    return augment.cutout_at(images, centers[:, 0], centers[:, 1], size)
  if name == "posterize":
    return augment.posterize(images, 1 + tf.floor(v * 7.999))
  if name == "solarize":
    return augment.solarize(images, tf.floor(v * 255.999))
  if name == "rescale":
    return rescale(images, values[:, 0], values[:, 1])
  signed = 2.0 * v - 1.0
  if name == "rotate":
    coeffs = augment.rotate_coeffs(tf.round(signed * 45.0), height, width)
  elif name == "shear_x":
    coeffs = augment.shear_x_coeffs(signed * 0.3)
  elif name == "shear_y":
    coeffs = augment.shear_y_coeffs(signed * 0.3)
  elif name == "translate_x":
    coeffs = augment.translate_x_coeffs(signed * 0.3 * width)  # Fixed: a fraction of the side.
  elif name == "translate_y":
    coeffs = augment.translate_y_coeffs(signed * 0.3 * height)
  else:
    raise ValueError(f"Unknown CTAugment op {name!r}.")
  return augment._affine(images, coeffs, fill)  # noqa: SLF001 - the shared PIL affine core.


def apply_op(name: str, images: tf.Tensor, values, centers=None, *, fill: int = 0) -> tf.Tensor:
  """One op on uint8 [N, H, W, C] (or [H, W, C]) with magnitudes [N, MAX_PARAMS] (or [P])."""
  images = tf.convert_to_tensor(images)
  single = images.shape.rank == 3
  batch = images[None] if single else images
  values = tf.reshape(tf.convert_to_tensor(values, tf.float32), [-1, layout.MAX_PARAMS])
  centers = tf.zeros([tf.shape(batch)[0], 2], tf.int32) if centers is None else tf.reshape(
      tf.convert_to_tensor(centers, tf.int32), [-1, 2])
  out = _run_op(name, batch, values, centers, fill)
  return out[0] if single else out


# ----------------------------------------------------------------------------- policies

@_no_autograph
def sample_policy(seed: tf.Tensor, image_shape: tuple[int, ...], rates: tf.Tensor | None = None,
                  *, probe: bool = False, depth: int = DEPTH, threshold: float = 0.8,
                  decay: float = 0.99, cutout: float = 1.0, batch_size: int = 1,
                  first_row: int = 0) -> Params:
  """Draws a batch's CTAugment policies from one stateless seed.

  Args:
    seed: int32/int64 [2] stateless seed.
    image_shape: (H, W, C).
    rates: float32 [NUM_RATES] (strong policy; None: all ones). Unused for probes.
    probe: True for the probe policy (uniform magnitudes, no final cutout).
    depth: ops per image.
    threshold: bins whose normalised rate is below it are never drawn (0.8).
    decay: the rate decay; 1 - decay is added to every rate before normalising.
    cutout: level of the final cutout of strong views (1: side 1 + int(0.499 min(H, W)),
      0: none).
    batch_size: images; image i uses row first_row + i of the draws (see randaugment).
    first_row: see batch_size.

  Returns:
    "op" int32 [N, depth]; "value" float32 [N, depth, MAX_PARAMS]; "center" int32
    [N, depth, 2] (for the cutout op); "cutout" int32 [N, 3] (centre y, x, side);
    "bins" int32 [N, depth * MAX_PARAMS] flat rate indices a probe updates (-1: none).
  """
  if depth < 0 or not 0.0 <= threshold <= 1.0 or not 0.0 <= cutout <= 1.0:
    raise ValueError(f"Bad CTAugment options: depth={depth}, threshold={threshold}, "
                     f"cutout={cutout} (need depth >= 0, threshold and cutout in [0, 1]).")
  height, width = image_shape[:2]
  n, p_max = batch_size, layout.MAX_PARAMS
  seed = tf.random.experimental.stateless_fold_in(seed, _SALT)
  draws = tf.random.stateless_uniform(
      [first_row + n, depth * (3 + 2 * p_max) + 2], seed)[first_row:]
  op_u, offset_u, bin_u, center_u, final_u = tf.split(
      draws, [depth, depth * p_max, depth * p_max, depth * 2, 2], axis=1)
  op = tf.minimum(tf.cast(op_u * len(OP_NAMES), tf.int32), len(OP_NAMES) - 1)
  offset_u = tf.reshape(offset_u, [n, depth, p_max])
  num_bins = tf.gather(tf.constant(layout.NUM_BINS), op)  # [N, depth, P]
  bins_f = tf.cast(num_bins, tf.float32)
  if probe:
    value = offset_u
    chosen = tf.cast(tf.floor(tf.cast(value, tf.float64) * tf.cast(num_bins, tf.float64)
                              * 0.999), tf.int32)
  else:
    chosen = _draw_bins(op, tf.reshape(bin_u, [n, depth, p_max]), rates, threshold, decay)
    value = (tf.cast(chosen, tf.float32) + offset_u) / tf.maximum(bins_f, 1.0)
  used = num_bins > 0
  flat = tf.gather(tf.constant(layout.OFFSETS, tf.int32), op) + chosen
  scale = tf.constant([height, width], tf.float32)
  center = tf.minimum(tf.cast(tf.reshape(center_u, [n, depth, 2]) * scale, tf.int32),
                      tf.constant([height - 1, width - 1]))
  final_center = tf.minimum(tf.cast(final_u * scale, tf.int32),
                            tf.constant([height - 1, width - 1]))
  side = 0 if probe or cutout == 0 else 1 + int(cutout * min(height, width) * 0.499)
  return {"op": op, "value": tf.where(used, value, 0.0), "center": center,
          "cutout": tf.concat([final_center, tf.fill([n, 1], side)], 1),
          "bins": tf.reshape(tf.where(used, flat, -1), [n, depth * p_max])}


def bin_probabilities(rates: tf.Tensor, threshold: float = 0.8,
                      decay: float = 0.99) -> tf.Tensor:
  """float32 [num_ops, MAX_PARAMS, MAX_BINS]: the strong policy's bin distribution.

  p = rate + (1 - decay); p /= max(p); p[p < threshold] = 0; normalised to sum 1 (rows of
  parameters an op does not have are 0).
  """
  index = tf.constant(layout.rate_index_table())
  valid = index >= 0
  rates = tf.convert_to_tensor(rates, tf.float32)
  p = tf.where(valid, tf.gather(rates, tf.maximum(index, 0)) + (1.0 - decay), 0.0)
  p = p / tf.maximum(tf.reduce_max(p, axis=-1, keepdims=True), 1e-30)
  p = tf.where(p < threshold, 0.0, p)
  return p / tf.maximum(tf.reduce_sum(p, axis=-1, keepdims=True), 1e-30)


def _draw_bins(op: tf.Tensor, uniform: tf.Tensor, rates: tf.Tensor | None, threshold: float,
               decay: float) -> tf.Tensor:
  """Bins drawn in proportion to `bin_probabilities` by inverse CDF; [N, depth, P] int32."""
  rates = tf.ones([layout.NUM_RATES]) if rates is None else rates
  probs = tf.gather(bin_probabilities(rates, threshold, decay), op)  # [N, depth, P, BINS]
  cdf = tf.cumsum(probs, axis=-1)
  total = cdf[..., -1:]
  count = tf.reduce_sum(tf.cast(cdf <= uniform[..., None] * total, tf.int32), axis=-1)
  # Float rounding can leave u * total at the total: fall back on the last drawable bin.
  last = tf.reduce_max(tf.where(probs > 0, tf.range(layout.MAX_BINS)[None, None, None], 0), -1)
  return tf.minimum(count, last)


@_no_autograph
def apply(images: tf.Tensor, params: Mapping[str, tf.Tensor], *, fill: int = 0) -> tf.Tensor:
  """Applies sampled policies to a batch uint8 [N, H, W, C]: the ops in order, then cutout."""
  images = tf.convert_to_tensor(images)
  num = len(OP_NAMES)
  for slot in range(params["op"].shape[1]):
    op = params["op"][:, slot]
    positions = tf.dynamic_partition(tf.range(tf.shape(images)[0]), op, num)
    parts = zip(tf.dynamic_partition(images, op, num),
                tf.dynamic_partition(params["value"][:, slot], op, num),
                tf.dynamic_partition(params["center"][:, slot], op, num), strict=True)
    outputs = [_run_op(name, *part, fill) for name, part in zip(OP_NAMES, parts, strict=True)]
    stitched = tf.dynamic_stitch(positions, outputs)
    stitched.set_shape(images.shape)
    images = stitched
  center_y, center_x, side = tf.unstack(params["cutout"], axis=1)
  return augment.cutout_at(images, center_y, center_x, side)
