"""Wide ResNet of the FixMatch paper (arXiv:2001.07685) and its MixMatch/ReMixMatch lineage.

The network is the "ResNet" of the official FixMatch code, which the paper calls WRN-28-2
(CIFAR-10, SVHN), WRN-28-8 (CIFAR-100) and WRN-37-2 (STL-10, one more group):

- input in [-1, 1] (uint8 images are converted with x * 2/255 - 1);
- stem conv3x3 with 16 channels;
- groups of pre-activation residual blocks, widths 16k, 32k, 64k (, 128k) for widening
  factor k; stride 2 at the first block of every group but the first;
- block: BN -> lrelu -> conv3x3(stride) -> BN -> lrelu -> conv3x3, shortcut identity or a
  1x1 conv (with the stride) when the width changes; the very first block takes its
  shortcut from the activated input;
- head: BN -> lrelu -> global average pool -> (dropout) -> dense.

Initialisation follows the TF code: conv kernels ~ N(0, 2 / (k*k*c_out)) untruncated,
conv biases zero, dense kernel Glorot normal. BatchNorm momentum 0.999, epsilon 1e-3,
leaky ReLU slope 0.1.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fixmatch_jax.models import conv as conv_lib
from fixmatch_jax.models.batch_norm import BatchNorm

# He initialisation over the fan-out, untruncated, as tf.random_normal_initializer with
# stddev = sqrt(2 / (k * k * c_out)) in the official code.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
dense_kernel_init = nn.initializers.glorot_normal()


def to_model_input(images: jnp.ndarray) -> jnp.ndarray:
  """Maps uint8 images to [-1, 1]; float images are assumed already scaled and pass unchanged."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) * (2.0 / 255.0) - 1.0
  return images


class ResidualBlock(nn.Module):
  """Pre-activation residual block (BN -> lrelu -> conv, twice) with an optional 1x1 shortcut.

  Attributes:
    filters: output channels.
    strides: stride of the first conv and of the shortcut conv.
    activate_before_residual: take the shortcut from the activated input (first block only).
    conv_bias: give every conv a zero-initialised bias, as the TF code does.
    bn_momentum: BatchNorm moving-average decay.
    bn_epsilon: BatchNorm epsilon.
    leaky_slope: negative slope of the leaky ReLU.
    dtype: computation dtype (parameters stay float32).
    matmul_wgrad_min_images: on CPU, compute the 3x3 convolutions' weight gradients as
      matrix products when each device holds at least this many images (`models/conv.py`;
      the same values); -1: never (the default), 0: always.
    conv_kernels: "xla" (lax.conv_general_dilated) or "onednn" (oneDNN's CPU kernels as
      XLA custom calls, `models/onednn.py`; CPU only: models.create picks it from
      `config.train.cpu_convolutions`).
  """

  filters: int
  strides: int = 1
  activate_before_residual: bool = False
  conv_bias: bool = True
  bn_momentum: float = 0.999
  bn_epsilon: float = 1e-3
  leaky_slope: float = 0.1
  dtype: Any = jnp.float32
  matmul_wgrad_min_images: int = -1
  conv_kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    conv = lambda filters, size, strides, name: nn.Conv(
        filters, (size, size), strides=(strides, strides), padding="SAME",
        use_bias=self.conv_bias, kernel_init=conv_kernel_init, dtype=self.dtype, name=name,
        conv_general_dilated=conv_lib.for_model(self.matmul_wgrad_min_images,
                                                     self.conv_kernels))
    norm = lambda name: BatchNorm(
        use_running_average=not train, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
        dtype=self.dtype, name=name)
    activated = nn.leaky_relu(norm("bn1")(x), self.leaky_slope)
    shortcut = activated if self.activate_before_residual else x
    y = conv(self.filters, 3, self.strides, "conv1")(activated)
    y = nn.leaky_relu(norm("bn2")(y), self.leaky_slope)
    y = conv(self.filters, 3, 1, "conv2")(y)
    # As in the TF code, the projection is used whenever the width changes; every stride-2
    # block also changes the width, so an identity shortcut never needs a stride.
    if shortcut.shape[-1] != self.filters:
      shortcut = conv(self.filters, 1, self.strides, "shortcut")(shortcut)
    return shortcut + y


class WideResNet(nn.Module):
  """WRN-d-k of FixMatch: WRN-28-2 by default.

  Attributes:
    num_classes: size of the output layer.
    depth: total depth d = 2*n*G + G + 1 for G groups of n blocks (28 -> n=4 with 3 groups,
      37 -> n=4 with 4 groups, 10 -> n=1 with 3 groups).
    widen: widening factor k; group widths are 16k * 2^g, so k=2 gives the official code's
      `filters=32` (WRN-28-2) and k=8 its `filters=128` (WRN-28-8).
    extra_group: add a fourth group (stride 2, width 128k), as for STL-10 (WRN-37-2).
    conv_bias: zero-initialised conv biases. Default True, as in the official TF code
      (tf.layers.conv2d keeps its bias); PyTorch ports drop them (2,032 fewer parameters in
      WRN-28-2: 1,467,610 instead of 1,469,642). Biases are never weight-decayed.
    dropout_rate: dropout on the pooled features before the classifier (0 in FixMatch).
    bn_momentum: BatchNorm moving-average decay (0.999 in the TF code).
    bn_epsilon: BatchNorm epsilon (1e-3 in the TF code).
    leaky_slope: negative slope of the leaky ReLU (0.1).
    stem_filters: channels of the first conv (16).
    dtype: computation dtype, e.g. jnp.bfloat16 on accelerators; parameters, BatchNorm
      statistics and logits stay float32.
    matmul_wgrad_min_images: on CPU, 3x3 convolutions' weight gradients as matrix products
      when each device holds at least this many images (`models/conv.py`: the same values;
      faster than XLA's at large per-device batches, slower at small ones); -1: never
      (the default), 0: always.
    conv_kernels: "xla" or "onednn" (oneDNN's CPU kernels, `models/onednn.py`; as in
      ResidualBlock).
  """

  num_classes: int
  depth: int = 28
  widen: int = 2
  extra_group: bool = False
  conv_bias: bool = True
  dropout_rate: float = 0.0
  bn_momentum: float = 0.999
  bn_epsilon: float = 1e-3
  leaky_slope: float = 0.1
  stem_filters: int = 16
  dtype: Any = jnp.float32
  matmul_wgrad_min_images: int = -1
  conv_kernels: str = "xla"

  @property
  def num_groups(self) -> int:
    return 4 if self.extra_group else 3

  @property
  def blocks_per_group(self) -> int:
    groups = self.num_groups
    blocks, remainder = divmod(self.depth - groups - 1, 2 * groups)
    if remainder or blocks < 1:
      raise ValueError(
          f"depth {self.depth} is not 2*n*{groups} + {groups + 1} for an integer n >= 1")
    return blocks

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool, return_embedding: bool = False):
    """Classifies a batch of images.

    Args:
      images: uint8 [N, H, W, C] (scaled to [-1, 1] here) or float already in model range.
      train: use batch statistics and update the moving averages (mutable "batch_stats"),
        and apply dropout (needs a "dropout" rng when dropout_rate > 0).
      return_embedding: also return the pooled features.

    Returns:
      logits float32 [N, num_classes], or (logits, embedding [N, 16k * 2^(G-1)]).
    """
    x = to_model_input(images).astype(self.dtype)
    x = nn.Conv(self.stem_filters, (3, 3), padding="SAME", use_bias=self.conv_bias,
                kernel_init=conv_kernel_init, dtype=self.dtype, name="stem",
                conv_general_dilated=conv_lib.for_model(self.matmul_wgrad_min_images,
                                                        self.conv_kernels))(x)
    block_options = dict(conv_bias=self.conv_bias, bn_momentum=self.bn_momentum,
                         bn_epsilon=self.bn_epsilon, leaky_slope=self.leaky_slope,
                         dtype=self.dtype,
                         matmul_wgrad_min_images=self.matmul_wgrad_min_images,
                         conv_kernels=self.conv_kernels)
    for group in range(self.num_groups):
      filters = self.stem_filters * self.widen * 2**group
      for block in range(self.blocks_per_group):
        first = block == 0
        x = ResidualBlock(
            filters, strides=2 if first and group > 0 else 1,
            activate_before_residual=first and group == 0,
            name=f"group{group}_block{block}", **block_options)(x, train)
    x = BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                     epsilon=self.bn_epsilon, dtype=self.dtype, name="bn_final")(x)
    x = nn.leaky_relu(x, self.leaky_slope)
    embedding = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
    features = nn.Dropout(self.dropout_rate, deterministic=not train)(embedding)
    logits = nn.Dense(self.num_classes, kernel_init=dense_kernel_init, name="classifier")(features)
    return (logits, embedding) if return_embedding else logits
