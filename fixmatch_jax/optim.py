"""Optimisation of the FixMatch recipe: learning-rate schedules, SGD-Nesterov with coupled L2
on conv/dense kernels only, and the EMA of the parameters.

FixMatch (arXiv:2001.07685, Sec. 4 and App. B) trains with SGD, momentum 0.9, Nesterov,
lr = 0.03 * cos(7 * pi * k / (16 * K)) and adds wd * sum 0.5 * ||w||^2 over conv and dense
kernels to the loss. Here that L2 term enters as its gradient, wd * w, added to the gradient
before momentum (`optax.add_decayed_weights` first in the chain), which is the same update
and keeps the weight decay out of the algorithms' losses.

Config fields (config.optim): name ("sgd" | "adam"), lr, momentum, nesterov, weight_decay,
schedule ("cosine" | "constant" | "step"), cosine_cycles (7/16), warmup_steps,
boundaries (steps), boundary_factor, decay_steps (K, if not passed as `num_steps`),
adam_b1, adam_b2, adam_eps, ema_decay (read by the train step).
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax


def l2_mask(params: Any) -> Any:
  """True for conv and dense kernels (leaves named "kernel"): biases and BN scale/offset are not
  decayed, as in the official code (`if 'kernel' in v.name`)."""

  def is_kernel(path, _):
    last = path[-1]
    return getattr(last, "key", getattr(last, "name", None)) == "kernel"

  return jax.tree_util.tree_map_with_path(is_kernel, params)


def _decay_steps(config_optim: ml_collections.ConfigDict, num_steps: int | None) -> int:
  steps = num_steps if num_steps is not None else config_optim.get("decay_steps")
  if not steps:
    raise ValueError("The cosine schedule needs the number of training steps K: pass num_steps "
                     "(config.train.num_steps) or set config.optim.decay_steps.")
  return int(steps)


def learning_rate_schedule(config_optim: ml_collections.ConfigDict,
                           num_steps: int | None = None) -> optax.Schedule:
  """The learning rate at step k (k counts optimizer updates from 0).

  "cosine": lr * cos(cosine_cycles * pi * k' / K') with k' = k - warmup_steps and
    K' = K - warmup_steps, so with no warm-up it is the paper's lr * cos(7 pi k / (16 K)).
  "constant": lr.  "step": lr * boundary_factor ** (number of boundaries <= k), boundaries
  in absolute steps.
  With warmup_steps > 0 the rate first rises linearly, lr * k / warmup_steps.

  Args:
    config_optim: config.optim.
    num_steps: K, the total number of training steps (config.train.num_steps); defaults to
      config_optim.decay_steps. Only "cosine" needs it.

  Returns:
    A function of the step count returning a float32 scalar.
  """
  base_lr = config_optim.lr
  warmup_steps = config_optim.get("warmup_steps", 0) or 0
  kind = config_optim.get("schedule", "cosine")
  if kind == "cosine":
    decay_steps = _decay_steps(config_optim, num_steps) - warmup_steps
    if decay_steps <= 0:
      raise ValueError(f"warmup_steps ({warmup_steps}) must be below the number of steps")
    cycles = config_optim.get("cosine_cycles", 7 / 16)
    main = lambda k: base_lr * jnp.cos(cycles * jnp.pi * (k - warmup_steps) / decay_steps)
  elif kind == "constant":
    main = lambda k: base_lr * jnp.ones_like(k)
  elif kind == "step":
    boundaries = jnp.asarray(config_optim.boundaries, jnp.float32)
    factor = config_optim.boundary_factor
    main = lambda k: base_lr * factor ** jnp.sum(k[..., None] >= boundaries, axis=-1)
  else:
    raise ValueError(f"Unknown schedule {kind!r}; valid: cosine, constant, step")

  def schedule(count):
    k = jnp.asarray(count, jnp.float32)
    if not warmup_steps:
      return main(k).astype(jnp.float32)
    warm = base_lr * k / warmup_steps
    return jnp.where(k < warmup_steps, warm, main(k)).astype(jnp.float32)

  return schedule


def create_optimizer(config_optim: ml_collections.ConfigDict,
                     num_steps: int | None = None) -> optax.GradientTransformation:
  """SGD (momentum, Nesterov) or Adam with coupled L2 wd * w on kernels, added before momentum.

  Args:
    config_optim: config.optim (see the module docstring).
    num_steps: K for the cosine schedule (config.train.num_steps).

  Returns:
    The optax transformation; its learning rate follows `learning_rate_schedule`.
  """
  schedule = learning_rate_schedule(config_optim, num_steps)
  name = config_optim.get("name", "sgd")
  if name == "sgd":
    optimizer = optax.sgd(schedule, momentum=config_optim.momentum or None,
                          nesterov=config_optim.nesterov)
  elif name == "adam":
    optimizer = optax.adam(schedule, b1=config_optim.get("adam_b1", 0.9),
                           b2=config_optim.get("adam_b2", 0.999),
                           eps=config_optim.get("adam_eps", 1e-8))
  else:
    raise ValueError(f"Unknown optimizer {name!r}; valid: sgd, adam")
  weight_decay = config_optim.get("weight_decay", 0.0)
  if not weight_decay:
    return optimizer
  return optax.chain(optax.add_decayed_weights(weight_decay, mask=l2_mask), optimizer)


def ema_update(ema: Any, params: Any, decay: float | jax.Array) -> Any:
  """ema <- decay * ema + (1 - decay) * params, leaf by leaf (FixMatch: decay 0.999)."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)

