"""Model registry: `create(config.model, num_classes)` builds a Flax Linen module by name.

Every model has the same interface: `__call__(images, train, return_embedding=False)` with
uint8 (scaled to [-1, 1] inside) or float images, "params" and "batch_stats" collections,
and a `num_classes` attribute.

Names: "wrn28_2" (CIFAR-10/SVHN, ~1.47M params), "wrn28_8" (CIFAR-100, ~23.4M),
"wrn37_2" (STL-10), CPU variants "wrn10_1", "wrn16_1", "cnn_small", and "mlp_lee" (Lee
2013's 784-5000-10 MLP with dropout, models/mlp.py), "cnn13" (the 13-layer CNN of
Laine & Aila 2017 / Arazo et al. 2019, ~3.1M params, models/cnn13.py).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from fixmatch_jax.models.cnn13 import CNN13
from fixmatch_jax.models.mlp import MLP
from fixmatch_jax.models.small import SmallCNN
from fixmatch_jax.models.wide_resnet import WideResNet

# name -> (module class, architecture of that name); config fields may override any of them.
MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "wrn28_2": (WideResNet, dict(depth=28, widen=2)),
    "wrn28_8": (WideResNet, dict(depth=28, widen=8)),
    "wrn37_2": (WideResNet, dict(depth=37, widen=2, extra_group=True)),
    "wrn10_1": (WideResNet, dict(depth=10, widen=1)),
    "wrn16_1": (WideResNet, dict(depth=16, widen=1)),
    "cnn_small": (SmallCNN, dict(width=32)),
    "mlp_lee": (MLP, dict(hidden_units=(5000,))),
    "cnn13": (CNN13, {}),
}

# Optional config.model fields. A field a model does not have (e.g. conv_bias for cnn_small)
# is ignored, so one base config serves every model; a field no model has is a typo -> error.
OPTIONS = ("depth", "widen", "extra_group", "width", "conv_bias", "dropout_rate",
           "bn_momentum", "bn_epsilon", "leaky_slope", "dtype", "hidden_units",
           "input_dropout_rate", "matmul_wgrad_min_images")


def create(config_model: ml_collections.ConfigDict, num_classes: int,
           cpu_convolutions: str = "xla") -> nn.Module:
  """Builds the model named `config_model.name`.

  Args:
    config_model: `name` plus optional fields from OPTIONS (None = the model's default);
      `dtype` is a string such as "float32" or "bfloat16".
    num_classes: number of output classes.
    cpu_convolutions: `config.train.cpu_convolutions`; "onednn" gives models with a
      `conv_kernels` field (the wide ResNets) oneDNN's convolutions when JAX's default
      backend is the CPU and the library works here (models/onednn.py; otherwise a
      warning says why). Other values change XLA flags only (fixmatch_jax.main).

  Returns:
    An unbound Flax module.

  Raises:
    ValueError: unknown model name or unknown option.
  """
  name = config_model.name
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
  unknown = sorted(set(config_model.keys()) - set(OPTIONS) - {"name"})
  if unknown:
    raise ValueError(f"Unknown config.model fields {unknown}; valid: {', '.join(OPTIONS)}")
  module_class, architecture = MODELS[name]
  kwargs = dict(architecture)
  for field in OPTIONS:
    value = config_model.get(field)
    if value is not None and field in module_class.__dataclass_fields__:
      kwargs[field] = jnp.dtype(value) if field == "dtype" else value
  if (cpu_convolutions == "onednn" and "conv_kernels" in module_class.__dataclass_fields__
      and jax.default_backend() == "cpu"):
    from fixmatch_jax.models import onednn  # noqa: PLC0415 - builds C++ on first use.
    if onednn.available_or_warn():  # Else Eigen's (logged, with the fix).
      kwargs["conv_kernels"] = "onednn"
  return module_class(num_classes=num_classes, **kwargs)
