"""TrainState: everything a run needs to continue, as one pytree that orbax can checkpoint."""
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fixmatch_jax.algorithms import Algorithm


@flax.struct.dataclass
class TrainState:
  """The state of a run.

  Attributes:
    step: int32 scalar, number of optimizer updates done.
    params: model parameters (the online model: it makes the pseudo-labels).
    batch_stats: BatchNorm moving averages ({} for a model without BatchNorm).
    opt_state: optax state.
    ema_params: exponential moving average of `params` (FixMatch evaluates these, with the
      online `batch_stats`).
    algo_state: the algorithm's own pytree ({} when it has none).
    rng: raw PRNG key data (uint32 [2] for the default threefry), so orbax can save it; the
      step key is fold_in(wrap_key_data(rng, impl=rng_impl), step).
    rng_impl: name of the PRNG implementation of `rng` (static, not a pytree leaf).
    augment_state: state of a learned augmentation ({} when none): CTAugment's rate ring
      {"rates": float32 [lag + 1, NUM_RATES]} (data/ctaugment_rates.py), updated by the step.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  ema_params: Any
  algo_state: Any
  rng: jax.Array
  rng_impl: str = flax.struct.field(pytree_node=False, default="threefry2x32")
  augment_state: Any = flax.struct.field(default_factory=dict)


def create(model: flax.linen.Module, tx: optax.GradientTransformation, algorithm: Algorithm,
           rng: jax.Array | int, sample_image_shape: tuple[int, ...],
           config: ml_collections.ConfigDict, *, num_unlabelled: int = 0) -> TrainState:
  """Initialises the model, optimizer, EMA and algorithm state.

  Args:
    model: a Flax module with `__call__(images, train)` and `num_classes`.
    tx: the optimizer (optim.create_optimizer).
    algorithm: supplies init_state(config.algo, num_unlabelled, num_classes).
    rng: an integer seed (default threefry key), a typed PRNG key of any implementation
      (e.g. jax.random.key(0, impl="rbg"), whose initialisers compile several times faster
      on CPU), or raw key data of the default implementation.
    sample_image_shape: [N, H, W, C] (or [H, W, C]) of one input batch; only H, W, C matter.
    config: the run config (reads config.algo).
    num_unlabelled: size of the unlabelled set, for algorithms keeping per-example state.

  Returns:
    The initial TrainState at step 0; the EMA starts equal to the parameters.
  """
  if isinstance(rng, int | np.integer):
    rng = jax.random.key(rng)
  elif not jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.wrap_key_data(rng)
  params_key, dropout_key, state_key = jax.random.split(rng, 3)
  shape = tuple(sample_image_shape)
  if len(shape) == 3:
    shape = (1, *shape)
  variables = _init_variables(model, shape, params_key, dropout_key)
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=tx.init(params),
      # A copy, not the same buffers: the train step donates the state, and one buffer cannot
      # be donated twice.
      ema_params=jax.tree.map(jnp.copy, params),
      algo_state=algorithm.init_state(config.algo, num_unlabelled, model.num_classes),
      rng=jax.random.key_data(state_key),
      rng_impl=str(jax.random.key_impl(state_key)),
      augment_state=_augment_state(config),
  )


def _augment_state(config: ml_collections.ConfigDict) -> Any:
  """CTAugment's initial rates (all ones) when the strong augmentation is CTAugment."""
  strong = (config.get("data") or {}).get("strong") or {}
  if strong.get("name") != "ctaugment":
    return {}
  from fixmatch_jax.data import ctaugment_rates  # NumPy and JAX only.
  return jax.tree.map(jnp.asarray, ctaugment_rates.init_state(strong.lag))


@functools.partial(jax.jit, static_argnames=("model", "shape"))
def _init_variables(model: flax.linen.Module, shape: tuple[int, ...], params_key: jax.Array,
                    dropout_key: jax.Array) -> Any:
  # Jitted, and cached across calls for equal models: initialising op by op, or compiling
  # the random initialisers again for every state, takes seconds on CPU.
  return model.init({"params": params_key, "dropout": dropout_key},
                    jnp.zeros(shape, jnp.uint8), train=False)
