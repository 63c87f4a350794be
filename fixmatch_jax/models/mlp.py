"""The multilayer perceptron of Lee 2013 (Pseudo-Label, ICML WREPL workshop, Sec. 4.1).

MNIST: 784 -> 5000 ReLU units -> 10 outputs, trained with dropout. The inputs are flattened
(any image shape); uint8 images are scaled to [-1, 1] like every model of the package.
Lee's output layer is a sigmoid per class trained with a summed binary cross-entropy; here
the outputs are logits for the package's softmax cross-entropy, so every algorithm sees the
same model interface (documented deviation).

The model has no BatchNorm: its "batch_stats" collection is empty.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fixmatch_jax.models.wide_resnet import to_model_input


class MLP(nn.Module):
  """flatten -> dropout -> [dense -> ReLU -> dropout] x len(hidden_units) -> dense.

  Attributes:
    num_classes: size of the output layer.
    hidden_units: widths of the hidden layers ((5000,) in Lee 2013).
    input_dropout_rate: dropout on the flattened input.
    dropout_rate: dropout after every hidden layer.
    dtype: computation dtype (parameters and logits stay float32).
  """

  num_classes: int
  hidden_units: tuple[int, ...] = (5000,)
  input_dropout_rate: float = 0.2
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool, return_embedding: bool = False):
    """Classifies a batch; see WideResNet.__call__ (the embedding is the last hidden layer)."""
    x = to_model_input(images).astype(self.dtype).reshape(images.shape[0], -1)
    x = nn.Dropout(self.input_dropout_rate, deterministic=not train)(x)
    for index, units in enumerate(self.hidden_units):
      x = nn.relu(nn.Dense(units, dtype=self.dtype, name=f"hidden{index}")(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    embedding = x.astype(jnp.float32)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
    logits = logits.astype(jnp.float32)
    return (logits, embedding) if return_embedding else logits
