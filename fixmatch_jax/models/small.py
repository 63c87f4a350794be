"""Small models for CPU runs and tests (Fashion-MNIST 28x28x1, digits 8x8x1, tiny images).

The small Wide ResNets ("wrn10_1", "wrn16_1") are the FixMatch WideResNet class at a smaller
depth and width, so a CPU run exercises the paper's architecture. `SmallCNN` is a plainer
network: four conv-BN-lrelu layers (two with stride 2), global average pooling and a dense
classifier, with the same input scaling, initialisation and BatchNorm settings as the
WideResNet so that every algorithm sees the same model interface.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fixmatch_jax.models.batch_norm import BatchNorm
from fixmatch_jax.models.wide_resnet import conv_kernel_init, dense_kernel_init, to_model_input


class SmallCNN(nn.Module):
  """conv(w) -> conv(w, /2) -> conv(2w) -> conv(2w, /2) -> pool -> dense, each conv BN + lrelu.

  Works for any input size and channel count (SAME padding, global pooling).

  Attributes:
    num_classes: size of the output layer.
    width: channels of the first two convs (the last two have twice as many).
    dropout_rate: dropout on the pooled features before the classifier.
    bn_momentum: BatchNorm moving-average decay.
    bn_epsilon: BatchNorm epsilon.
    leaky_slope: negative slope of the leaky ReLU.
    dtype: computation dtype (parameters and logits stay float32).
  """

  num_classes: int
  width: int = 32
  dropout_rate: float = 0.0
  bn_momentum: float = 0.999
  bn_epsilon: float = 1e-3
  leaky_slope: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool, return_embedding: bool = False):
    """Classifies a batch of images; see WideResNet.__call__ for the arguments and outputs."""
    x = to_model_input(images).astype(self.dtype)
    for index, (filters, strides) in enumerate(
        [(self.width, 1), (self.width, 2), (2 * self.width, 1), (2 * self.width, 2)]):
      # No conv bias: the BatchNorm that follows would cancel it.
      x = nn.Conv(filters, (3, 3), strides=(strides, strides), padding="SAME", use_bias=False,
                  kernel_init=conv_kernel_init, dtype=self.dtype, name=f"conv{index}")(x)
      x = BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                       epsilon=self.bn_epsilon, dtype=self.dtype, name=f"bn{index}")(x)
      x = nn.leaky_relu(x, self.leaky_slope)
    embedding = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
    features = nn.Dropout(self.dropout_rate, deterministic=not train)(embedding)
    logits = nn.Dense(self.num_classes, kernel_init=dense_kernel_init, name="classifier")(features)
    return (logits, embedding) if return_embedding else logits
