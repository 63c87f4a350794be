"""Image augmentation ops in core TensorFlow, with PIL's semantics.

Every op takes one uint8 image [H, W, C] (C = 1 or 3) or a batch [N, H, W, C] and returns uint8 of
the same shape. Magnitudes are tensors (a scalar, or one value per image of a batch), so one traced
graph serves every level, in eager mode and inside `tf.data` maps. The per-image results of a
batched call equal those of single-image calls: RandAugment's batched path relies on it.

The oracle is PIL (what the FixMatch reference code and the PyTorch ports run): `ImageOps`,
`ImageEnhance`, `Image.rotate` and `Image.transform(AFFINE)` with NEAREST resampling and grey
(128) fill. The ops reproduce PIL's arithmetic, not only its formulas:

- enhance ops blend in float32 and truncate, as PIL's `Image.blend`;
- grayscale is PIL's fixed-point `convert("L")`: (19595 R + 38470 G + 7471 B + 2^15) >> 16;
- geometric ops gather pixels at PIL's own source indices (its 16.16 fixed point for shear and
  rotation, its float path for translations), so outputs are bit-identical to PIL's, where a
  float projective transform (ImageProjectiveTransformV3) differs at half-pixel ties.

Grayscale (C = 1) follows PIL's "L" mode: `color` is the identity (an L image is its own
grayscale), `contrast` blends with the image's own mean.

Random ops take an explicit seed tensor of shape [2] and use stateless random ops only;
`weak_augment_batch` draws a whole batch from one seed (per-example tf.data maps cost tens of
microseconds per element on CPU, far more than the augmentation itself).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

TensorLike = tf.Tensor | np.ndarray | int | float
GREY = 128  # Fill for cutout and for pixels that geometric ops leave empty.

# Salts folded into the caller's seed, so weak ops never reuse another op's random numbers.
_FLIP_SALT, _CROP_SALT, _CUTOUT_SALT = 1, 2, 3
# The ops have no tensor-dependent Python control flow: AutoGraph would only slow down tracing.
_no_autograph = tf.autograph.experimental.do_not_convert


def _image_op(fn: Callable[..., tf.Tensor]) -> Callable[..., tf.Tensor]:
  """Lets `fn`, written for a batch [N, H, W, C] and magnitudes [N], take one image too."""

  @_no_autograph
  @functools.wraps(fn)
  def wrapper(image: TensorLike, *magnitudes: TensorLike) -> tf.Tensor:
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8 or image.shape.rank not in (3, 4):
      raise TypeError(f"{fn.__name__} expects uint8 [H, W, C] or [N, H, W, C], got {image}.")
    single = image.shape.rank == 3
    images = image[None] if single else image
    n = tf.shape(images)[0]
    # Python floats become float64, so magnitudes keep the precision PIL's Python code has.
    magnitudes = [tf.broadcast_to(tf.convert_to_tensor(m, dtype_hint=tf.float64), [n])
                  for m in magnitudes]
    out = tf.reshape(fn(images, *magnitudes), tf.shape(images))
    out.set_shape(images.shape)
    return out[0] if single else out

  return wrapper


# Speed notes (CPU, where tf.data runs): element-wise ops on [N, K] with per-image [N, 1] operands
# are fast; broadcasting along inner axes, tf.where on images, 4-D pads and gathers cost 5-30x
# more per element. So the ops below work on flattened images where they can.


def _shape(images: tf.Tensor, *groups: tuple[int, ...]) -> list[tf.Tensor]:
  """Products of groups of axes of tf.shape(images): ((0,), (1, 2, 3)) -> [N, H * W * C].

  Explicit sizes instead of -1, which reshape cannot infer for an empty batch.
  """
  shape = tf.shape(images)
  return [tf.reduce_prod(tf.gather(shape, list(axes))) for axes in groups]


def _rows(images: tf.Tensor) -> tf.Tensor:
  """[N, H, W, C] -> [N, H * W * C]."""
  return tf.reshape(images, _shape(images, (0,), (1, 2, 3)))


def _column(values: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
  """Per-image values [N] -> [N, 1]."""
  return tf.reshape(tf.cast(values, dtype), [-1, 1])


def _blend(degenerate: tf.Tensor, pixels: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL Image.blend(degenerate, image, factor): float32 interpolation, clip, truncate.

  Args:
    degenerate: float32 [N, K] or [N, 1].
    pixels: float32 [N, K].
    factor: [N], converted to float32 as PIL's C code does.

  Returns:
    uint8 [N, K].
  """
  blended = degenerate + _column(factor, tf.float32) * (pixels - degenerate)
  # The float -> uint8 cast truncates, as PIL's (UINT8) cast.
  return tf.cast(tf.clip_by_value(blended, 0.0, 255.0), tf.uint8)


def _gray_weights(channels: int) -> tf.Tensor:
  """[3, channels] weights of PIL's convert("L"): 19595 R + 38470 G + 7471 B, 16-bit fixed point."""
  return tf.constant([[19595.0] * channels, [38470.0] * channels, [7471.0] * channels])


def _grayscale(images: tf.Tensor, channels: int) -> tf.Tensor:
  """PIL's convert("L") of RGB [N, H, W, 3], float32 [N * H * W, channels] (gray repeated).

  The weighted sums are integers below 2^24, exact in float32 whatever the summation order, and
  (sum + 2^15) >> 16 is a floor division by a power of two, also exact.
  """
  weighted = tf.matmul(tf.cast(tf.reshape(images, [-1, 3]), tf.float32), _gray_weights(channels))
  return tf.floor((weighted + 32768.0) * (1.0 / 65536.0))


@_image_op
def identity(images: tf.Tensor) -> tf.Tensor:
  """Returns the image unchanged."""
  return tf.identity(images)


@_image_op
def autocontrast(images: tf.Tensor) -> tf.Tensor:
  """PIL ImageOps.autocontrast: stretches each channel's [min, max] to [0, 255]."""
  channels = images.shape[-1]
  # One row per (image, channel), so per-channel constants broadcast over rows (fast).
  pixels = tf.reshape(images, _shape(images, (0,), (1, 2), (3,)))
  if channels > 1:
    pixels = tf.transpose(pixels, [0, 2, 1])
  pixels = tf.reshape(pixels, _shape(images, (0, 3), (1, 2)))
  low = tf.cast(tf.reduce_min(pixels, axis=1, keepdims=True), tf.float64)
  high = tf.cast(tf.reduce_max(pixels, axis=1, keepdims=True), tf.float64)
  # A flat channel gets scale 1 and offset 0: PIL leaves it unchanged.
  flat = tf.equal(high, low)
  one = tf.ones_like(low)
  scale = tf.where(flat, one, 255.0 / tf.where(flat, one, high - low))
  offset = tf.where(flat, tf.zeros_like(low), -low * scale)
  # PIL's table is int(ix * scale + offset) in Python floats; x >= low keeps it >= 0, so the
  # truncating cast is that int().
  stretched = tf.cast(tf.minimum(tf.cast(pixels, tf.float64) * scale + offset, 255.0), tf.uint8)
  if channels == 1:
    return stretched
  stretched = tf.reshape(stretched, _shape(images, (0,), (3,), (1, 2)))
  return tf.transpose(stretched, [0, 2, 1])


@_image_op
def equalize(images: tf.Tensor) -> tf.Tensor:
  """PIL ImageOps.equalize: per-channel histogram equalisation with PIL's integer table."""
  n, channels = tf.shape(images)[0], images.shape[-1]
  count = tf.shape(images)[1] * tf.shape(images)[2]
  # Bin of a pixel: (image * C + channel) * 256 + value; channel = position % C.
  channel_offsets = tf.tile(256 * tf.range(channels), [count])
  image_offsets = _column(256 * channels * tf.range(n), tf.int32)
  bins = tf.cast(_rows(images), tf.int32) + image_offsets + channel_offsets[None]
  size = n * channels * 256
  hist = tf.reshape(tf.math.bincount(bins, minlength=size, maxlength=size), [-1, 256])
  # PIL: step = (count - count of the last non-empty bin) // 255; no-op if step == 0.
  pixels = tf.reshape(images, _shape(images, (0,), (1, 2), (3,)))
  channel_max = tf.reshape(tf.reduce_max(pixels, axis=1), [-1])
  last_count = tf.gather(tf.reshape(hist, [-1]),
                         256 * tf.range(n * channels) + tf.cast(channel_max, tf.int32))
  step = _column(count - last_count, tf.int32) // 255
  cumulative = tf.cumsum(hist, axis=1, exclusive=True)
  table = (step // 2 + cumulative) // tf.maximum(step, 1)
  # PIL stores its table as bytes, clipping the rare entries above 255.
  table = tf.where(step > 0, tf.minimum(table, 255), tf.range(256)[None])
  return tf.gather(tf.reshape(tf.cast(table, tf.uint8), [-1]), bins)


@_image_op
def solarize(images: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
  """PIL ImageOps.solarize: inverts pixels >= threshold."""
  pixels = _rows(images)
  above = tf.cast(tf.cast(pixels, tf.float32) >= _column(threshold, tf.float32), tf.uint8)
  return tf.bitwise.bitwise_xor(pixels, above * 255)  # 255 - x == x ^ 255 for bytes.


@_image_op
def posterize(images: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
  """PIL ImageOps.posterize: keeps the `bits` (0..8; 0 gives black) most significant bits."""
  shift = 8 - tf.clip_by_value(tf.cast(bits, tf.int32), 0, 8)
  mask = tf.bitwise.left_shift(tf.bitwise.right_shift(255, shift), shift)
  return tf.bitwise.bitwise_and(_rows(images), _column(mask, tf.uint8))


@_image_op
def color(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL ImageEnhance.Color: blends with the grayscale image (identity for C = 1, as PIL "L")."""
  if images.shape[-1] == 1:
    return tf.identity(images)
  gray = tf.reshape(_grayscale(images, 3), _shape(images, (0,), (1, 2, 3)))
  return _blend(gray, tf.cast(_rows(images), tf.float32), factor)


@_image_op
def contrast(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL ImageEnhance.Contrast: blends with the rounded mean of the grayscale image."""
  gray = images if images.shape[-1] == 1 else _grayscale(images, 1)
  total = tf.reduce_sum(tf.reshape(tf.cast(gray, tf.int32), _shape(images, (0,), (1, 2))), 1)
  count = tf.shape(images)[1] * tf.shape(images)[2]
  mean = (2 * total + count) // (2 * count)  # PIL: int(mean + 0.5), here exactly in integers.
  return _blend(_column(mean, tf.float32), tf.cast(_rows(images), tf.float32), factor)


@_image_op
def brightness(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL ImageEnhance.Brightness: blends with black."""
  return _blend(tf.zeros([1, 1]), tf.cast(_rows(images), tf.float32), factor)


@_image_op
def sharpness(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL ImageEnhance.Sharpness: blends with PIL's SMOOTH filter, whose border is unchanged."""
  channels = images.shape[-1]
  kernel = np.ones((3, 3, channels, 1), np.float32)
  kernel[1, 1] = 5.0
  pixels = tf.cast(images, tf.float32)
  # 3x3 sums of bytes with integer weights: exact in float32, whatever the summation order.
  sums = tf.nn.depthwise_conv2d(pixels, kernel, [1, 1, 1, 1], "SAME")
  # PIL rounds sum / 13 half up in float32; sum / 13 + 0.5 is never within float error of an
  # integer, so this exact form gives the same bytes.
  smooth = tf.floor((sums + 6.5) / 13.0)
  # PIL keeps the border pixels: blend the smoothing in through an interior mask [1, H, W * C].
  h, w = _shape(images, (1,), (2,))
  interior = tf.pad(tf.ones([1, h - 2, (w - 2) * channels]), [[0, 0], [1, 1], [channels] * 2])
  rows3d = _shape(images, (0,), (1,), (2, 3))
  pixels, smooth = tf.reshape(pixels, rows3d), tf.reshape(smooth, rows3d)
  degenerate = pixels + interior * (smooth - pixels)
  rows = _shape(images, (0,), (1, 2, 3))
  return _blend(tf.reshape(degenerate, rows), tf.reshape(pixels, rows), factor)


def _affine(images: tf.Tensor, coeffs: tf.Tensor, fill: int = GREY) -> tf.Tensor:
  """PIL Image.transform(AFFINE, coeffs, NEAREST, fillcolor=fill) of a batch.

  Output pixel (x, y) reads input (a x' + b y' + c, d x' + e y' + f) at pixel centres
  x' = x + 0.5, y' = y + 0.5, with PIL's index arithmetic: 16.16 fixed point when b or d is
  non-zero (shear, rotation); else PIL's float path, floor(c + a x'), which for integer a is
  a x + floor(c + a / 2) and so fits the same integer form exactly (translations).

  Args:
    images: uint8 [N, H, W, C].
    coeffs: float64 [N, 6]: a, b, c, d, e, f.
    fill: value of pixels read from outside the image (grey; CTAugment's reference code
      leaves PIL's default, 0).

  Returns:
    uint8 [N, H, W, C].
  """
  a, b, c, d, e, f = tf.unstack(tf.cast(coeffs, tf.float64), axis=1)
  shape = tf.shape(images)
  n, h, w = shape[0], shape[1], shape[2]

  def fixed(v):
    return tf.cast(tf.floor(v * 65536.0 + 0.5), tf.int32)

  float_path = tf.equal(b, 0.0) & tf.equal(d, 0.0) & tf.equal(a, tf.round(a)) & tf.equal(
      e, tf.round(e))
  x0, y0 = c + a * 0.5 + b * 0.5, f + d * 0.5 + e * 0.5
  x0 = tf.where(float_path, tf.cast(tf.floor(x0), tf.int32) * 65536, fixed(x0))
  y0 = tf.where(float_path, tf.cast(tf.floor(y0), tf.int32) * 65536, fixed(y0))
  xs, ys = tf.range(w)[None], tf.range(h)[None]
  # [N, H, 1] + [N, 1, W]; ">> 16" (arithmetic) is PIL's floor of the fixed-point coordinate.
  x_in = tf.bitwise.right_shift(
      (x0[:, None] + ys * fixed(b)[:, None])[:, :, None] + (xs * fixed(a)[:, None])[:, None], 16)
  y_in = tf.bitwise.right_shift(
      (y0[:, None] + ys * fixed(e)[:, None])[:, :, None] + (xs * fixed(d)[:, None])[:, None], 16)
  # Unsigned compares test 0 <= v < size at once.
  inside = (tf.bitcast(x_in, tf.uint32) < tf.cast(w, tf.uint32)) & (
      tf.bitcast(y_in, tf.uint32) < tf.cast(h, tf.uint32))
  # Pixels from outside read one `fill` pixel appended after the last real one.
  grey_index = n * h * w
  flat = y_in * w + x_in + tf.reshape(tf.range(n) * (h * w), [-1, 1, 1]) - grey_index
  flat = grey_index + tf.cast(inside, tf.int32) * flat
  source = tf.reshape(images, [-1, images.shape[-1]])
  source = tf.concat([source, tf.fill([1, images.shape[-1]], tf.constant(fill, tf.uint8))], 0)
  return tf.gather(source, flat)


@_no_autograph
def affine(image: TensorLike, coeffs: TensorLike) -> tf.Tensor:
  """PIL `image.transform(size, AFFINE, coeffs, NEAREST, fillcolor=128)`, bit-exact.

  Args:
    image: uint8 [H, W, C] or [N, H, W, C].
    coeffs: [6] or [N, 6] (a, b, c, d, e, f): output (x, y) reads input
      (a x + b y + c, d x + e y + f), pixel centres at half-integers, as PIL.

  Returns:
    uint8 tensor shaped like `image`.
  """
  image = tf.convert_to_tensor(image)
  single = image.shape.rank == 3
  images = image[None] if single else image
  coeffs = tf.reshape(tf.convert_to_tensor(coeffs, dtype_hint=tf.float64), [-1, 6])
  out = tf.reshape(_affine(images, coeffs), tf.shape(images))
  out.set_shape(images.shape)
  return out[0] if single else out


def rotate_coeffs(degrees: TensorLike, height: TensorLike, width: TensorLike) -> tf.Tensor:
  """PIL Image.rotate's matrix: counter-clockwise by `degrees` [N] about (W/2, H/2); [N, 6]."""
  angle = -(tf.cast(degrees, tf.float64) * (math.pi / 180.0))

  def round15(v):  # PIL rounds its matrix to 15 decimals (sin(pi) becomes exactly 0).
    return tf.round(v * 1e15) / 1e15

  cos, sin = round15(tf.cos(angle)), round15(tf.sin(angle))
  cx, cy = tf.cast(width, tf.float64) / 2.0, tf.cast(height, tf.float64) / 2.0
  return tf.stack([cos, sin, cos * -cx + sin * -cy + cx,
                   -sin, cos, -sin * -cx + cos * -cy + cy], axis=1)


def _affine_coeffs(shift: tuple[float, ...], magnitude: tf.Tensor) -> tf.Tensor:
  """Identity matrix plus `magnitude` [N] at the one place `shift` marks with 1; [N, 6]."""
  identity_matrix = tf.constant([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]], tf.float64)
  return identity_matrix + tf.cast(magnitude, tf.float64)[:, None] * tf.constant(
      [shift], tf.float64)


def shear_x_coeffs(shear: TensorLike) -> tf.Tensor:
  """(1, shear, 0, 0, 1, 0): input x = x + shear * y; [N, 6]."""
  return _affine_coeffs((0, 1, 0, 0, 0, 0), shear)


def shear_y_coeffs(shear: TensorLike) -> tf.Tensor:
  """(1, 0, 0, shear, 1, 0): input y = y + shear * x; [N, 6]."""
  return _affine_coeffs((0, 0, 0, 1, 0, 0), shear)


def translate_x_coeffs(pixels: TensorLike) -> tf.Tensor:
  """(1, 0, pixels, 0, 1, 0): content moves left by `pixels`; [N, 6]."""
  return _affine_coeffs((0, 0, 1, 0, 0, 0), pixels)


def translate_y_coeffs(pixels: TensorLike) -> tf.Tensor:
  """(1, 0, 0, 0, 1, pixels): content moves up by `pixels`; [N, 6]."""
  return _affine_coeffs((0, 0, 0, 0, 0, 1), pixels)


@_image_op
def rotate(images: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
  """PIL Image.rotate(degrees, NEAREST, fillcolor=grey): counter-clockwise about the centre."""
  return _affine(images, rotate_coeffs(degrees, tf.shape(images)[1], tf.shape(images)[2]))


@_image_op
def shear_x(images: tf.Tensor, shear: tf.Tensor) -> tf.Tensor:
  """PIL transform AFFINE (1, shear, 0, 0, 1, 0), grey fill."""
  return _affine(images, shear_x_coeffs(shear))


@_image_op
def shear_y(images: tf.Tensor, shear: tf.Tensor) -> tf.Tensor:
  """PIL transform AFFINE (1, 0, 0, shear, 1, 0), grey fill."""
  return _affine(images, shear_y_coeffs(shear))


@_image_op
def translate_x(images: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
  """PIL transform AFFINE (1, 0, pixels, 0, 1, 0), grey fill: content moves left."""
  return _affine(images, translate_x_coeffs(pixels))


@_image_op
def translate_y(images: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
  """PIL transform AFFINE (1, 0, 0, 0, 1, pixels), grey fill: content moves up."""
  return _affine(images, translate_y_coeffs(pixels))


@_image_op
def cutout_at(images: tf.Tensor, center_y: tf.Tensor, center_x: tf.Tensor,
              size: tf.Tensor) -> tf.Tensor:
  """Greys rows [cy - size//2, cy + size//2) and the same columns, clipped at the borders."""
  h, c = tf.shape(images)[1], images.shape[-1]
  half = _column(size, tf.int32)[:, :, None] // 2
  cy, cx = _column(center_y, tf.int32)[:, :, None], _column(center_x, tf.int32)[:, :, None]
  ys = tf.range(h)[None, :, None]
  xs = (tf.range(tf.shape(images)[2] * c) // c)[None, None]
  rows = (ys >= cy - half) & (ys < cy + half)  # [N, H, 1]
  cols = (xs >= cx - half) & (xs < cx + half)  # [N, 1, W * C]
  pixels = tf.reshape(images, _shape(images, (0,), (1,), (2, 3)))
  # x + m * (grey - x) with byte wrap-around is exact, and much faster than tf.where on CPU.
  return pixels + tf.cast(rows & cols, tf.uint8) * (tf.constant(GREY, tf.uint8) - pixels)


@_no_autograph
def cutout(image: TensorLike, seed: TensorLike, size: TensorLike) -> tf.Tensor:
  """Cutout as in the FixMatch reference: a grey square with a uniformly drawn centre.

  Args:
    image: uint8 [H, W, C].
    seed: int32/int64 [2] stateless seed.
    size: side of the square in pixels (rows cy - size//2 .. cy + size//2 - 1, clipped).

  Returns:
    uint8 [H, W, C].
  """
  image = tf.convert_to_tensor(image)
  seed = tf.random.experimental.stateless_fold_in(seed, _CUTOUT_SALT)
  hw = tf.shape(image)[:2]
  uniform = tf.random.stateless_uniform([2], seed)
  center = tf.minimum(tf.cast(uniform * tf.cast(hw, tf.float32), tf.int32), hw - 1)
  return cutout_at(image, center[0], center[1], size)


@_no_autograph
def random_flip_lr(image: TensorLike, seed: TensorLike) -> tf.Tensor:
  """Mirrors the image left-right with probability 1/2.

  Args:
    image: uint8 [H, W, C].
    seed: int32/int64 [2] stateless seed.

  Returns:
    uint8 [H, W, C].
  """
  image = tf.convert_to_tensor(image)
  seed = tf.random.experimental.stateless_fold_in(seed, _FLIP_SALT)
  flip = tf.random.stateless_uniform([], seed) < 0.5
  return tf.where(flip, tf.reverse(image, axis=[1]), image)


@_no_autograph
def pad_and_crop(image: TensorLike, seed: TensorLike, pad: int,
                 mode: str = "REFLECT") -> tf.Tensor:
  """Pads `pad` pixels on every side, then crops back to the original size at a uniform offset.

  Args:
    image: uint8 [H, W, C].
    seed: int32/int64 [2] stateless seed.
    pad: pixels of padding (0 returns the image). REFLECT needs pad < H and W.
    mode: `tf.pad` mode: "REFLECT" (FixMatch), "SYMMETRIC", or "CONSTANT" (grey).

  Returns:
    uint8 [H, W, C].
  """
  image = tf.convert_to_tensor(image)
  if pad == 0:
    return image
  seed = tf.random.experimental.stateless_fold_in(seed, _CROP_SALT)
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode=mode, constant_values=GREY)
  offset = tf.random.stateless_uniform([2], seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32)
  crop = tf.slice(padded, [offset[0], offset[1], 0], tf.shape(image))
  crop.set_shape(image.shape)
  return crop


@_no_autograph
def weak_augment(image: TensorLike, seed: TensorLike, *, flip: bool, pad: int) -> tf.Tensor:
  """FixMatch's weak augmentation: optional random mirror, then reflect-pad and random crop.

  Args:
    image: uint8 [H, W, C].
    seed: int32/int64 [2] stateless seed.
    flip: whether to mirror left-right with probability 1/2 (off for SVHN).
    pad: reflect padding in pixels before the random crop (4 at 32x32; 0 disables).

  Returns:
    uint8 [H, W, C].
  """
  image = tf.convert_to_tensor(image)
  if flip:
    image = random_flip_lr(image, seed)
  return pad_and_crop(image, seed, pad)


def _reflect(index: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
  """tf.pad REFLECT indexing: -1 -> 1, size -> size - 2 (valid for overshoots below size)."""
  index = tf.abs(index)
  return tf.minimum(index, 2 * (size - 1) - index)


@_no_autograph
def weak_augment_batch(images: TensorLike, seed: TensorLike, *, flip: bool, pad: int,
                       first_row: int = 0) -> tf.Tensor:
  """`weak_augment` of a batch, drawn from one seed: one gather instead of per-image pads.

  Same distribution as `weak_augment` (mirror with probability 1/2, then reflect-pad and crop at
  a uniform offset). Image i uses row first_row + i of the seed's stream of draws, which depends
  on (seed, first_row + i) only: a process holding rows [a, b) of a global batch passes
  first_row=a and gets exactly what a single process would give those rows.

  Args:
    images: uint8 [N, H, W, C].
    seed: int32/int64 [2] stateless seed for the whole batch.
    flip: whether to mirror left-right with probability 1/2.
    pad: reflect padding in pixels before the random crop (0: no crop).
    first_row: row of the seed's draws that the first image uses.

  Returns:
    uint8 [N, H, W, C].
  """
  images = tf.convert_to_tensor(images)
  n, h, w = _shape(images, (0,), (1,), (2,))
  draws = tf.random.stateless_uniform(
      [first_row + n, 3], tf.random.experimental.stateless_fold_in(seed, _CROP_SALT))[first_row:]
  offsets = tf.minimum(tf.cast(draws[:, :2] * (2 * pad + 1), tf.int32), 2 * pad)
  # Output (y, x) reads the (flipped) image at reflect(offset + y - pad), reflect(offset + x - pad).
  rows = _reflect(offsets[:, :1] + tf.range(h)[None] - pad, h)
  cols = _reflect(offsets[:, 1:] + tf.range(w)[None] - pad, w)
  if flip:
    mirrored = tf.cast(draws[:, 2:] < 0.5, tf.int32)
    cols = cols + mirrored * (w - 1 - 2 * cols)
  flat = (tf.range(n)[:, None, None] * h + rows[:, :, None]) * w + cols[:, None, :]
  out = tf.gather(tf.reshape(images, [n * h * w, images.shape[-1]]), flat)
  out.set_shape(images.shape)
  return out
