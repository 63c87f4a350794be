"""Registry of semi-supervised algorithms that plug into the shared train step (steps.py).

An algorithm declares the unlabelled views it needs from the input pipeline and a loss:

  loss_fn(params, batch, *, forward, algo_state, key, step, cfg, num_classes) -> (loss, aux)

- `batch`: {"labelled": {"image", "label"}, "unlabelled": {<view>..., "index", "label"}}
  (uint8 images; the unlabelled "label" is for monitoring only, never for a loss);
- `forward(params, images, *, train, rngs=None, batch_stats=None) -> (logits, batch_stats)`;
  with train=True BatchNorm uses batch statistics and returns its updated moving averages;
  its default dropout rng is one key per step (pass `rngs` to vary it between calls);
  `images` may be a tuple of image groups, e.g. (labelled, weak, strong): one pass over
  all of them (BatchNorm sees them all) returns a list of their logits, group by group,
  without moving images between devices (steps.concat_groups);
- `algo_state`: the algorithm's own pytree kept in the TrainState (checkpointed);
- `key`: a PRNG key for this step; `step`: the step number (int32 scalar, traced);
- `cfg`: config.algo; `num_classes`: the model's number of classes;
- `ema_params` (only passed to an algorithm with `uses_ema_params=True`, e.g. Mean Teacher):
  the TrainState's exponential moving average of the parameters, the teacher.
- `aux` = {"batch_stats": ..., "algo_state": ..., "metrics": {"train/...": array}}, and
  optionally "entmin_logits": the unlabelled logits (with gradient) that entropy
  minimisation should sharpen (see `entmin`; without them it runs its own forward pass).

Only the labelled pass of some methods updates BatchNorm's moving averages (the
FixMatch codebase's Pseudo-Label, Pi-model, Mean Teacher): their loss_fn returns the
`batch_stats` of that pass and drops those of the others.

Entropy minimisation (Grandvalet & Bengio 2004) can be added to any registered method by
name: `get("vat+entmin")` wraps "vat" with `entmin.with_entropy_minimisation`, whose weight
is config.algo.entmin_weight.

Weight decay is not part of any loss: it is in the optimizer (optim.py).
"""
import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections


def _no_state(cfg: ml_collections.ConfigDict, num_unlabelled: int, num_classes: int) -> Any:
  del cfg, num_unlabelled, num_classes
  return {}


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """A semi-supervised method: its name, the unlabelled views it needs, its loss and state.

  Attributes:
    name: registry name (config.algorithm).
    views: unlabelled views requested from the pipeline, e.g. ("weak", "strong"); () means
      the batch has no "unlabelled" entry.
    loss_fn: see the module docstring.
    init_state: (config.algo, number of unlabelled examples, num_classes) -> algo_state pytree.
    default_config: () -> the algorithm's config.algo with the paper's defaults; documents
      the keys its loss reads.
    uses_ema_params: loss_fn also takes `ema_params=` (the EMA teacher's parameters).
  """

  name: str
  views: tuple[str, ...]
  loss_fn: Callable[..., tuple[Any, dict[str, Any]]]
  init_state: Callable[[ml_collections.ConfigDict, int, int], Any] = _no_state
  default_config: Callable[[], ml_collections.ConfigDict] = ml_collections.ConfigDict
  uses_ema_params: bool = False


_REGISTRY: dict[str, Algorithm] = {}


def register(algorithm: Algorithm) -> Algorithm:
  """Adds `algorithm` to the registry under its name and returns it.

  Raises:
    ValueError: the name is already taken by another algorithm.
  """
  existing = _REGISTRY.get(algorithm.name)
  if existing is not None and existing is not algorithm:
    raise ValueError(f"Algorithm {algorithm.name!r} is already registered")
  _REGISTRY[algorithm.name] = algorithm
  return algorithm


def get(name: str) -> Algorithm:
  """The registered algorithm called `name` (config.algorithm).

  `"<name>+entmin"` is `<name>` plus entropy minimisation (registered on first use).

  Raises:
    ValueError: unknown name; the message lists the valid ones.
  """
  suffix = "+" + entmin.NAME
  if name not in _REGISTRY and name.endswith(suffix) and name[:-len(suffix)] in _REGISTRY:
    return register(entmin.with_entropy_minimisation(_REGISTRY[name[:-len(suffix)]]))
  if name not in _REGISTRY:
    raise ValueError(f"Unknown algorithm {name!r}; valid names: {', '.join(names())}")
  return _REGISTRY[name]


def names() -> list[str]:
  """Registered algorithm names, sorted."""
  return sorted(_REGISTRY)


# The built-in algorithms register themselves on import; they need Algorithm, hence last.
# One line per group, so that concurrent additions do not touch each other's lines.
from fixmatch_jax.algorithms import fixmatch, supervised  # noqa: E402,F401,I001
from fixmatch_jax.algorithms import entmin, mean_teacher, pi_model  # noqa: E402,F401
from fixmatch_jax.algorithms import pseudo_label, uda, vat  # noqa: E402,F401
from fixmatch_jax.algorithms import rotation, student  # noqa: E402,F401
from fixmatch_jax.algorithms import arazo, flexmatch, freematch  # noqa: E402,F401
