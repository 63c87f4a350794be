"""The "13-layer CNN" of the consistency-regularisation papers (Laine & Aila 2017,
arXiv:1610.02242; Tarvainen & Valpola 2017, arXiv:1703.01780), the network behind Arazo et al.
2019's (arXiv:1908.02983) CIFAR numbers.

  3 x [conv3x3(128), BN, lrelu] -> maxpool 2x2 -> dropout
  3 x [conv3x3(256), BN, lrelu] -> maxpool 2x2 -> dropout
  conv3x3(512, VALID), BN, lrelu -> conv1x1(256), BN, lrelu -> conv1x1(128), BN, lrelu
  -> global average pool -> dense(num_classes)

At 32x32 the last average pool covers the 6x6 map left by the VALID conv, as in the papers.
Departures from Mean Teacher's / Arazo's PyTorch version: no weight normalisation and no conv
bias (BatchNorm follows every conv, so the bias is redundant); the initialisation, input
scaling and BatchNorm settings are this package's (wide_resnet.py), so every model shares
one interface. Arazo et al. use dropout 0.1 at both places (`dropout_rate`).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fixmatch_jax.models.batch_norm import BatchNorm
from fixmatch_jax.models.wide_resnet import conv_kernel_init, dense_kernel_init, to_model_input


class CNN13(nn.Module):
  """The 13-layer CNN; see the module docstring.

  Attributes:
    num_classes: size of the output layer.
    dropout_rate: dropout after each of the two max-pools.
    bn_momentum: BatchNorm moving-average decay.
    bn_epsilon: BatchNorm epsilon.
    leaky_slope: negative slope of the leaky ReLU (0.1 in the papers).
    dtype: computation dtype (parameters and logits stay float32).
  """

  num_classes: int
  dropout_rate: float = 0.0
  bn_momentum: float = 0.999
  bn_epsilon: float = 1e-3
  leaky_slope: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool, return_embedding: bool = False):
    """Classifies a batch of images; see WideResNet.__call__ for the arguments and outputs."""
    x = to_model_input(images).astype(self.dtype)

    def conv_bn_lrelu(x, filters, kernel, padding, name):
      x = nn.Conv(filters, (kernel, kernel), padding=padding, use_bias=False,
                  kernel_init=conv_kernel_init, dtype=self.dtype, name=f"conv{name}")(x)
      x = BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                       epsilon=self.bn_epsilon, dtype=self.dtype, name=f"bn{name}")(x)
      return nn.leaky_relu(x, self.leaky_slope)

    for group, filters in ((1, 128), (2, 256)):
      for layer in "abc":
        x = conv_bn_lrelu(x, filters, 3, "SAME", f"{group}{layer}")
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = conv_bn_lrelu(x, 512, 3, "VALID", "3a")
    x = conv_bn_lrelu(x, 256, 1, "VALID", "3b")
    x = conv_bn_lrelu(x, 128, 1, "VALID", "3c")
    embedding = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
    logits = nn.Dense(self.num_classes, kernel_init=dense_kernel_init, name="classifier")(
        embedding)
    return (logits, embedding) if return_embedding else logits
