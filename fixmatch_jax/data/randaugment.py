"""RandAugment as FixMatch uses it (arXiv:2001.07685, the "RA" rows), in core TensorFlow.

Official variant (default), for each strong image: draw `num_ops` = 2 ops with replacement from
the 14 of `OP_NAMES`; apply each with probability `prob` = 0.5 at an integer level drawn uniformly
from `min_level..max_level` = 1..9, independently per op; then always Cutout a grey square of side
`cutout` = 0.5 of the image width. Level -> argument table (recipes.md; sizes scale with the image):

  rotate int(3L) degrees, solarize threshold 256 - int(25.6L), color/contrast/brightness/
  sharpness factor 0.1 + 0.18L, shear 0.03L, translate L * size/32 pixels, posterize
  4 - int(0.4L) bits; rotate, shear and translate get a random sign.

"ports" variant (TorchSSL-style ranges): the argument is drawn continuously, t ~ U[0, 1)
(min/max_level are ignored; a fixed `magnitude` m means t = m/10): rotate 30t degrees, solarize
threshold 256t, factors 0.05 + 0.9t, shear 0.3t, translate 0.3t * size, posterize int(4 + 4t)
bits; the Cutout side is drawn uniformly in [0, cutout * width). TorchSSL applies 3 ops always:
pass num_ops=3, prob=1.0 with it.

Randomness and work are split, so that the work can be batched:
`sample_params(seed, ...)` makes a few stateless draws (per image, or for a whole batch from one
seed), and `apply(images, params)` does the image work, with identical results for one image
(`tf.switch_case` on the op, one graph for all ops) and for a batch (images grouped by op with
`tf.dynamic_partition`, so each op runs once per batch: several times faster in `tf.data`).
`rand_augment(image, seed)` and `strong_augment(image, seed, cfg)` do both for one image.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from fixmatch_jax.data import augment

OP_NAMES = ("identity", "autocontrast", "equalize", "rotate", "solarize", "color", "contrast",
            "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y",
            "posterize")
VARIANTS = ("fixmatch", "ports")
_SIGNED = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_ENHANCE = ("color", "contrast", "brightness", "sharpness")
# Images are grouped by the code that runs them: the five geometric ops share one affine gather.
_GROUPS = ("identity", "autocontrast", "equalize", "affine", "solarize", "color", "contrast",
           "brightness", "sharpness", "posterize")
_GROUP_OF_OP = tuple(_GROUPS.index("affine" if name in _SIGNED else name) for name in OP_NAMES)
# Where each shear/translate argument goes in the affine matrix (a, b, c, d, e, f).
_AFFINE_SLOT = {"shear_x": 1, "translate_x": 2, "shear_y": 3, "translate_y": 5}
_no_autograph = tf.autograph.experimental.do_not_convert  # Plain graph code: tracing is faster.
_SALT = 17  # Folded into the caller's seed so the strong view never shares the weak view's draws.
Params = dict[str, tf.Tensor]


def _arg_table(variant: str, height: int, width: int) -> np.ndarray:
  """Per op (c0, c1, k, c2, signed): arg = c0 + c1 * floor(k * level) + c2 * level (* sign).

  One formula for all ops, so a batch computes its arguments with a handful of ops. Float64, in
  the reference code's order of operations, so int(25.6 * L) etc. truncate exactly as there.
  """
  if variant == "fixmatch":
    enhance, rows = (0.1, 0, 0, 0.18, 0), {
        "rotate": (0, 1, 3, 0, 1), "solarize": (256, -1, 25.6, 0, 0),
        "shear_x": (0, 0, 0, 0.03, 1), "shear_y": (0, 0, 0, 0.03, 1),
        "translate_x": (0, 0, 0, width / 32, 1), "translate_y": (0, 0, 0, height / 32, 1),
        "posterize": (4, -1, 0.4, 0, 0)}
  elif variant == "ports":
    enhance, rows = (0.05, 0, 0, 0.9, 0), {
        "rotate": (0, 0, 0, 30, 1), "solarize": (0, 0, 0, 256, 0),
        "shear_x": (0, 0, 0, 0.3, 1), "shear_y": (0, 0, 0, 0.3, 1),
        "translate_x": (0, 0, 0, 0.3 * width, 1), "translate_y": (0, 0, 0, 0.3 * height, 1),
        "posterize": (4, 1, 4, 0, 0)}
  else:
    raise ValueError(f"Unknown RandAugment variant {variant!r}; expected one of {VARIANTS}.")
  rows.update({name: enhance for name in _ENHANCE})
  return np.array([rows.get(name, (0, 0, 0, 0, 0)) for name in OP_NAMES], np.float64)


def _args(ops: tf.Tensor, level: tf.Tensor, sign: tf.Tensor, table: np.ndarray) -> tf.Tensor:
  """Arguments (float64) of ops (indices into OP_NAMES) at `level`, with `sign`."""
  c0, c1, k, c2, signed = tf.unstack(tf.gather(tf.constant(table), ops), axis=-1)
  level = tf.cast(level, tf.float64)
  arg = c0 + c1 * tf.floor(k * level) + c2 * level
  return arg * (1.0 + signed * (tf.cast(sign, tf.float64) - 1.0))  # sign only where signed.


def level_to_arg(name: str, level: tf.Tensor, sign: tf.Tensor, *, variant: str = "fixmatch",
                 height: int = 32, width: int = 32) -> tf.Tensor | None:
  """The op's argument at `level` (recipes.md table), float64; None for ops without one.

  Args:
    name: one of `OP_NAMES`.
    level: float tensor: the integer level L (official) or t in [0, 1) ("ports").
    sign: +1 or -1 (shaped like level), applied to rotate, shear and translate.
    variant: "fixmatch" or "ports".
    height: image height (translate_y scales with it).
    width: image width (translate_x scales with it).

  Returns:
    float64 tensor shaped like `level`, or None.
  """
  table = _arg_table(variant, height, width)
  if name in ("identity", "autocontrast", "equalize"):
    return None
  level = tf.convert_to_tensor(level)
  return _args(tf.fill(tf.shape(level), OP_NAMES.index(name)), level, sign, table)


@_no_autograph
def sample_params(seed: tf.Tensor, image_shape: tuple[int, ...], *, num_ops: int = 2,
                  prob: float = 0.5, min_level: int = 1, max_level: int = 9,
                  magnitude: float | None = None, variant: str = "fixmatch",
                  cutout: float = 0.5, batch_size: int | None = None,
                  first_row: int = 0) -> Params:
  """Draws RandAugment's random choices from a stateless seed.

  Args:
    seed: int32/int64 [2] stateless seed.
    image_shape: (H, W, ...) of the images to augment.
    num_ops: ops drawn (with replacement) per image.
    prob: probability that each drawn op is applied.
    min_level: smallest level (official variant).
    max_level: largest level (official variant), inclusive.
    magnitude: fixed level for every op (None or <= 0: random levels).
    variant: "fixmatch" (official) or "ports".
    cutout: cutout side as a fraction of the width (0 disables).
    batch_size: None for one image; else params for that many images from this one seed. Image
      i uses row first_row + i of one stateless draw, which depends on (seed, first_row + i)
      only, not on batch_size: a process holding rows [a, b) of a global batch passes
      batch_size=b - a, first_row=a and gets exactly those rows of the global batch's params.
    first_row: see batch_size.

  Returns:
    dict of "op" int32 [num_ops] (index into OP_NAMES), "applied" bool [num_ops], "level" float32
    [num_ops], "sign" float32 [num_ops] (+/-1), "cutout" int32 [3] (centre y, centre x, side);
    each with a leading [batch_size] axis if batch_size is given.
  """
  if num_ops < 0 or not 0.0 <= prob <= 1.0 or not 0.0 <= cutout <= 1.0:
    raise ValueError(f"Bad RandAugment options: num_ops={num_ops}, prob={prob}, cutout={cutout}.")
  if not 0 <= min_level <= max_level:
    raise ValueError(f"Need 0 <= min_level <= max_level, got {min_level}, {max_level}.")
  if variant not in VARIANTS:
    raise ValueError(f"Unknown RandAugment variant {variant!r}; expected one of {VARIANTS}.")
  height, width = image_shape[:2]
  rows = 1 if batch_size is None else batch_size
  seed = tf.random.experimental.stateless_fold_in(seed, _SALT)
  # One draw for everything: a random op call costs far more than the numbers it makes.
  draws = tf.random.stateless_uniform([first_row + rows, 4 * num_ops + 3], seed)[first_row:]
  op_u, apply_u, level_u, sign_u = tf.split(draws[:, :4 * num_ops], 4, axis=1)
  op = tf.minimum(tf.cast(op_u * len(OP_NAMES), tf.int32), len(OP_NAMES) - 1)
  fixed = magnitude is not None and magnitude > 0
  if variant == "fixmatch":
    levels = max_level - min_level + 1
    level = min_level + tf.minimum(tf.floor(level_u * levels), levels - 1)
    level = tf.fill([rows, num_ops], float(magnitude)) if fixed else level
  else:
    level = tf.fill([rows, num_ops], magnitude / 10.0) if fixed else level_u
  size = tf.fill([rows, 1], int(cutout * width))
  if variant == "ports":
    size = tf.cast(draws[:, -1:] * int(cutout * width), tf.int32)
  center = tf.cast(draws[:, -3:-1] * tf.constant([height, width], tf.float32), tf.int32)
  center = tf.minimum(center, tf.constant([height - 1, width - 1]))
  params = {"op": op, "applied": apply_u < prob, "level": level,
            "sign": tf.where(sign_u < 0.5, -1.0, 1.0), "cutout": tf.concat([center, size], 1)}
  return {k: v[0] for k, v in params.items()} if batch_size is None else params


def _args_and_coeffs(chosen: tf.Tensor, level: tf.Tensor, sign: tf.Tensor, variant: str,
                     height: int, width: int) -> tuple[tf.Tensor, tf.Tensor]:
  """Per-image argument [N] of the chosen op, and affine matrix [N, 6] (identity if not affine)."""
  arg = _args(chosen, level, sign, _arg_table(variant, height, width))
  slots = np.zeros((len(OP_NAMES), 6))
  for name, slot in _AFFINE_SLOT.items():
    slots[OP_NAMES.index(name), slot] = 1.0
  coeffs = augment.translate_x_coeffs(tf.zeros_like(arg)) + arg[:, None] * tf.gather(slots, chosen)
  is_rotate = tf.equal(chosen, OP_NAMES.index("rotate"))[:, None]
  return arg, tf.where(is_rotate, augment.rotate_coeffs(arg, height, width), coeffs)


def _run_group(group: int, images: tf.Tensor, arg: tf.Tensor, coeffs: tf.Tensor) -> tf.Tensor:
  """Runs _GROUPS[group] on a batch [N, H, W, C] with per-image arguments [N] and [N, 6]."""
  name = _GROUPS[group]
  if name == "affine":
    return augment.affine(images, coeffs)
  op = getattr(augment, name)
  return op(images) if name in ("identity", "autocontrast", "equalize") else op(images, arg)


@_no_autograph
def apply(images: tf.Tensor, params: Mapping[str, tf.Tensor], *,
          variant: str = "fixmatch") -> tf.Tensor:
  """Applies sampled RandAugment params to one image or to a batch.

  Args:
    images: uint8 [H, W, C] with params of one image, or uint8 [N, H, W, C] with params for N
      images (from `sample_params(..., batch_size=N)`, or per-image params batched by tf.data).
    params: output of `sample_params`.
    variant: the variant the params were sampled with.

  Returns:
    uint8 tensor shaped like `images`.
  """
  images = tf.convert_to_tensor(images)
  single = images.shape.rank == 3
  batch = images[None] if single else images
  params = {k: v[None] if single else v for k, v in params.items()}
  height, width = batch.shape[1], batch.shape[2]
  # "Not applied" dispatches to identity (index 0).
  chosen = tf.where(params["applied"], params["op"], 0)
  group_of_op = tf.constant(_GROUP_OF_OP, tf.int32)
  for slot in range(params["op"].shape[-1]):
    arg, coeffs = _args_and_coeffs(chosen[:, slot], params["level"][:, slot],
                                   params["sign"][:, slot], variant, height, width)
    group = tf.gather(group_of_op, chosen[:, slot])
    if single:
      branches = [functools.partial(_run_group, g, batch, arg, coeffs) for g in range(len(_GROUPS))]
      batch = tf.switch_case(group[0], branches)
    else:
      batch = _apply_grouped(batch, group, arg, coeffs)
  center_y, center_x, size = tf.unstack(params["cutout"], axis=1)
  batch = augment.cutout_at(batch, center_y, center_x, size)
  return batch[0] if single else batch


def _apply_grouped(images: tf.Tensor, group: tf.Tensor, arg: tf.Tensor,
                   coeffs: tf.Tensor) -> tf.Tensor:
  """Runs each group's code once on the images that drew it, then restores the image order."""
  num = len(_GROUPS)
  positions = tf.dynamic_partition(tf.range(tf.shape(images)[0]), group, num)
  parts = zip(tf.dynamic_partition(images, group, num), tf.dynamic_partition(arg, group, num),
              tf.dynamic_partition(coeffs, group, num), strict=True)
  outputs = [part[0] if g == 0 else _run_group(g, *part) for g, part in enumerate(parts)]
  stitched = tf.dynamic_stitch(positions, outputs)
  stitched.set_shape(images.shape)
  return stitched


@_no_autograph
def rand_augment(image: tf.Tensor, seed: tf.Tensor, *, num_ops: int = 2, prob: float = 0.5,
                 min_level: int = 1, max_level: int = 9, magnitude: float | None = None,
                 variant: str = "fixmatch", cutout: float = 0.5) -> tf.Tensor:
  """FixMatch's RandAugment of one uint8 image [H, W, C]; arguments as in `sample_params`."""
  image = tf.convert_to_tensor(image)
  params = sample_params(seed, tuple(image.shape), num_ops=num_ops, prob=prob,
                         min_level=min_level, max_level=max_level, magnitude=magnitude,
                         variant=variant, cutout=cutout)
  return apply(image, params, variant=variant)


def _options(cfg: Any) -> dict[str, Any]:
  """RandAugment keyword arguments from a config (ConfigDict or any attribute object)."""
  name = getattr(cfg, "name", "randaugment")
  if name != "randaugment":
    raise ValueError(f"strong augmentation {name!r} is not RandAugment.")
  magnitude = cfg.magnitude
  return {"num_ops": int(cfg.num_ops), "prob": float(cfg.prob), "min_level": int(cfg.min_level),
          "max_level": int(cfg.max_level),
          "magnitude": None if magnitude is None or magnitude <= 0 else float(magnitude),
          "variant": str(cfg.variant), "cutout": float(cfg.cutout)}


@_no_autograph
def strong_augment(image: tf.Tensor, seed: tf.Tensor, cfg: Any) -> tf.Tensor:
  """The strong view of one image, as configured by `config.data.strong`.

  Args:
    image: uint8 [H, W, C].
    seed: int32/int64 [2] stateless seed.
    cfg: has num_ops, prob, min_level, max_level, magnitude (-1: random), variant, cutout.

  Returns:
    uint8 [H, W, C].
  """
  return rand_augment(image, seed, **_options(cfg))


@_no_autograph
def strong_augment_params(seed: tf.Tensor, image_shape: tuple[int, ...], cfg: Any,
                          batch_size: int | None = None, first_row: int = 0) -> Params:
  """The random half of `strong_augment`: `sample_params` as configured by `cfg`.

  Per example (then batch them with tf.data), or for a whole batch from one seed.
  """
  return sample_params(seed, image_shape, batch_size=batch_size, first_row=first_row,
                       **_options(cfg))


@_no_autograph
def strong_augment_batch(images: tf.Tensor, params: Mapping[str, tf.Tensor], cfg: Any) -> tf.Tensor:
  """The image half: uint8 [N, H, W, C] and params for N images -> their strong views.

  Equals `strong_augment` image by image when the params came from the same seeds.
  """
  return apply(images, params, variant=_options(cfg)["variant"])
