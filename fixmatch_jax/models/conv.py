"""Convolution for the models: lax.conv_general_dilated, optionally a matmul CPU weight grad.

`config.model.matmul_wgrad_min_images`: used for a convolution when each device holds at
least that many images (the global batch / jax.device_count(), i.e. data parallelism over
all devices); -1 (never) by default. It pays only where XLA:CPU runs the convolutions with
YNNPACK (`config.train.cpu_convolutions="xla"` in jaxlib 0.10), from about 240 images per
device: Eigen's weight gradients (`config.train.cpu_convolutions="eigen"`) beat both
(B = 64 step: 4.03 s with Eigen's, 4.62 s with these products; below), and oneDNN's
(`"onednn"`, models/onednn.py, the CPU default of the paper recipes since 2026-12-06
08:00 UTC) beat Eigen's; with "onednn" this path is not used. Forward and input gradient
are XLA's own. For 3x3, stride-1, "SAME" convolutions (NHWC activations, HWIO kernel) the
*weight* gradient on CPU is computed differently:

  dW[i, j, c, o] = sum over n, h, w of  x_pad[n, h + i, w + j, c] * dy[n, h, w, o]

XLA:CPU (jaxlib 0.10) runs this as a convolution whose "kernel" is the whole dy image,
after transposing the activations; on one core of the project's 2-core AMD EPYC VM
(2026-12-06, `python scripts/bench_conv.py --images 480`) it took 156 / 224 / 89 ms at
32x32x32 / 16x16x64 / 8x8x128, where the PyTorch peer's oneDNN kernel takes 43 / 44 / 37
ms, while XLA's forward and input-gradient convolutions are about as fast as the peer's.
Here the same sum is three matrix products, one per kernel row i: the row's three column
taps of the padded input side by side ([N*H*W, 3C]), and

  dW[i] (as [O, 3C]) = dy^T @ taps_i      (the N*H*W positions are the contraction),

127 / 90 / 63 ms for the same three layers. Against XLA's, per layer (32x32 / 16x16 /
8x8): 1.31 / 1.09 / 1.12x the time with 60 images, 1.41 / 1.02 / 0.87x with 120, 0.94 /
0.99 / 0.77x with 240, 0.81 / 0.40 / 0.71x with 480 (`scripts/bench_conv.py --images N`):
hence a threshold of 240 with YNNPACK. In the whole FixMatch WRN-28-2 step on 2 XLA
devices with YNNPACK convolutions: B = 64, 4.71 s instead of 6.08 s; B = 8 (forced on),
0.590 s instead of 0.561 s. With Eigen's convolutions (06:44 UTC the same day): B = 64,
4.62 s instead of 4.03 s; B = 8, 0.587 s instead of 0.452 s (`scripts/bench_step.py
--cpu-convs eigen,xla --cpu-weight-grad off,on`, docs/benchmarks.md). The copies are made
to wait for this layer's gradient (`after_dy` below); otherwise XLA builds every layer's
copies in the forward pass and keeps them, 4.3x the step's temporary memory. Only the CPU
gets this path (`lax.platform_dependent`); GPUs and TPUs keep their vendor kernels. The
result is the same sum in another order: equal to XLA's own weight gradient to float32
rounding (tests/models/conv_test.py).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

_NHWC_HWIO = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                      out_spec=(0, 3, 1, 2))


def is_plain_nhwc(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                  feature_group_count, batch_group_count) -> bool:
  """A 2-D convolution of NHWC activations with an HWIO kernel, no dilation, no groups."""
  if lhs.ndim != 4 or rhs.ndim != 4 or feature_group_count != 1 or batch_group_count != 1:
    return False
  if any(d is not None and tuple(d) != (1, 1) for d in (lhs_dilation, rhs_dilation)):
    return False
  return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC_HWIO


def _xla_conv(x: jax.Array, w: jax.Array, precision) -> jax.Array:
  return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                  dimension_numbers=_NHWC_HWIO, precision=precision)


def weight_grad_by_rows(x: jax.Array, dy: jax.Array, precision=None) -> jax.Array:
  """Gradient of a 3x3 stride-1 SAME NHWC conv w.r.t. its HWIO kernel, as 3 matrix products.

  Args:
    x: the convolution's input [N, H, W, C].
    dy: the gradient of its output [N, H, W, O].
    precision: lax precision of the products.

  Returns:
    [3, 3, C, O], in x's dtype (the products accumulate in float32).
  """
  n, h, w, c = x.shape
  out = dy.shape[-1]
  # The copies below would depend on x alone, and XLA:CPU then builds them during the
  # forward pass, every layer's at once, and keeps them to the backward pass: 4.3x the B = 8
  # step's temporary memory (1015 vs 237 MB per device, measured; an optimization_barrier
  # did not prevent it). Adding 0 * dy[0, 0, 0, 0] (not folded away: 0 * NaN is NaN) makes
  # them wait for this layer's gradient; the add is fused into the copies.
  after_dy = x + (dy[0, 0, 0, 0] * 0).astype(x.dtype)
  padded = jnp.pad(after_dy, ((0, 0), (1, 1), (1, 1), (0, 0)))
  dy_2d = dy.reshape(n * h * w, out)
  rows = []
  for i in range(3):
    # taps[n, r, q, j*C + c] = padded[n, r + i, q + j, c]: kernel row i's three column taps.
    taps = jnp.concatenate([padded[:, i:i + h, j:j + w] for j in range(3)], axis=-1)
    # [O, 3C]: contraction over the N*H*W positions, the leading axis of both operands.
    rows.append(lax.dot_general(dy_2d, taps.reshape(n * h * w, 3 * c),
                                (((0,), (0,)), ((), ())), precision=precision,
                                preferred_element_type=jnp.float32))
  grad = jnp.stack(rows).reshape(3, out, 3, c).transpose(0, 2, 3, 1)
  return grad.astype(x.dtype)


def _xla_weight_grad(x: jax.Array, dy: jax.Array, w_shape, precision) -> jax.Array:
  w = jnp.zeros(w_shape, x.dtype)
  return jax.vjp(lambda w: _xla_conv(x, w, precision), w)[1](dy)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3(x: jax.Array, w: jax.Array, precision=None) -> jax.Array:
  """3x3, stride 1, SAME convolution of NHWC `x` with HWIO `w` (XLA's), CPU weight gradient."""
  return _xla_conv(x, w, precision)


def _conv3x3_fwd(x, w, precision):
  return _xla_conv(x, w, precision), (x, w)


def _conv3x3_bwd(precision, residuals, dy):
  x, w = residuals
  dx = jax.vjp(lambda x: _xla_conv(x, w, precision), x)[1](dy)[0]
  dw = lax.platform_dependent(
      x, dy,
      cpu=lambda x, dy: weight_grad_by_rows(x, dy, precision),
      default=lambda x, dy: _xla_weight_grad(x, dy, w.shape, precision).astype(w.dtype))
  return dx, dw


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def _is_3x3_same(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                 dimension_numbers, feature_group_count, batch_group_count) -> bool:
  if not is_plain_nhwc(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                       feature_group_count, batch_group_count):
    return False
  if tuple(rhs.shape[:2]) != (3, 3) or tuple(window_strides) != (1, 1):
    return False
  pads = (lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
          if isinstance(padding, str) else padding)
  return [tuple(p) for p in pads] == [(1, 1), (1, 1)]


def images_per_device(batch: int) -> int:
  """Images of a global batch on each device under data parallelism over all devices."""
  return batch // max(1, jax.device_count())


def takes_matmul_path(batch: int, min_images: int) -> bool:
  """Whether a 3x3 convolution over `batch` images gets the matrix-product weight gradient
  with `matmul_wgrad_min_images` = `min_images` (on CPU; -1: never)."""
  return 0 <= min_images <= images_per_device(batch)


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding,
                         lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None,
                         min_images: int = 0) -> jax.Array:
  """Drop-in for lax.conv_general_dilated (flax `nn.Conv(conv_general_dilated=...)`).

  3x3 stride-1 SAME NHWC/HWIO convolutions whose batch puts at least `min_images` images
  on each device go through `conv3x3`; everything else (strides, 1x1 kernels, other
  layouts, small batches) is lax.conv_general_dilated unchanged.
  """
  if (preferred_element_type is None and takes_matmul_path(lhs.shape[0], min_images)
      and _is_3x3_same(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                       dimension_numbers, feature_group_count, batch_group_count)):
    return conv3x3(lhs, rhs, precision)
  return lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)


KERNELS = ("xla", "onednn")


def for_model(min_images: int, kernels: str = "xla"):
  """The conv_general_dilated for flax's nn.Conv, or None for lax's.

  Args:
    min_images: `matmul_wgrad_min_images` (ours with it; -1: off).
    kernels: "xla" (lax.conv_general_dilated, or ours with `min_images`) or "onednn"
      (`models/onednn.conv_general_dilated`, which replaces the matrix-product path).
  """
  if kernels not in KERNELS:
    raise ValueError(f"conv_kernels={kernels!r}; valid: {', '.join(KERNELS)}")
  if kernels == "onednn":
    from fixmatch_jax.models import onednn  # noqa: PLC0415 - builds C++ on first use.
    return onednn.conv_general_dilated
  if min_images < 0:
    return None
  return functools.partial(conv_general_dilated, min_images=min_images)
