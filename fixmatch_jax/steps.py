"""The train and eval steps shared by every algorithm, and their data-parallel jit wiring.

`train_step` and `eval_step` are pure module-level functions; their collaborators (model,
algorithm, optimizer, schedule, config) are bound with functools.partial before jax.jit, so
tests can call them with fake models. The step is compiled for a 1-D ("data",) device mesh:
batches are sharded along their leading axis, the state is replicated, and XLA inserts the
cross-device reductions, so BatchNorm statistics and losses are over the global batch and a
run on 1 or 64 devices computes the same function.
"""
import collections
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fixmatch_jax import optim
from fixmatch_jax.algorithms import Algorithm
from fixmatch_jax.data import ctaugment_rates
from fixmatch_jax.train_state import TrainState

DATA_AXIS = "data"


def concat_groups(groups: Sequence[jax.Array], num_shards: int) -> jax.Array:
  """Concatenates image groups along the batch so that every device's shard stays local.

  With the batch axis split into `num_shards` equal slices (one per device), a plain
  concatenate puts, e.g., all labelled images on the first device, so XLA moves activations
  between devices (all-to-all and collective-permute) before the forward pass. Here the
  result is the concatenation of the groups' i-th slices, in shard order: the same images,
  in another order, and each device concatenates only what it holds. Batch-wide operations
  (BatchNorm statistics, means) do not depend on the order; `split_groups` undoes it.
  """
  if num_shards == 1 or any(g.shape[0] % num_shards for g in groups):
    return jnp.concatenate(groups)
  per_shard = [g.reshape(num_shards, g.shape[0] // num_shards, *g.shape[1:]) for g in groups]
  merged = jnp.concatenate(per_shard, axis=1)
  return merged.reshape(-1, *merged.shape[2:])


def forward_groups(forward: Callable[..., Any], num_shards: int = 1) -> Callable[..., Any]:
  """`forward(params, images, **kw)` that also takes a tuple of image groups.

  Given a tuple, one pass over `concat_groups(groups)` (BatchNorm sees every group) returns
  (list of the groups' logits, batch_stats); a single array passes straight through.
  """
  def grouped(params, images, **kwargs):
    if not isinstance(images, (tuple, list)):
      return forward(params, images, **kwargs)
    logits, batch_stats = forward(params, concat_groups(images, num_shards), **kwargs)
    return split_groups(logits, [g.shape[0] for g in images], num_shards), batch_stats
  return grouped


def split_groups(x: jax.Array, sizes: Sequence[int], num_shards: int) -> list[jax.Array]:
  """Inverse of `concat_groups`: the rows of each group (sizes in order), in their order."""
  if num_shards == 1 or any(n % num_shards for n in sizes):
    return jnp.split(x, np.cumsum(sizes)[:-1].tolist())
  per_shard = x.reshape(num_shards, -1, *x.shape[1:])
  parts, start = [], 0
  for n in sizes:
    part = per_shard[:, start:start + n // num_shards]
    parts.append(part.reshape(n, *x.shape[1:]))
    start += n // num_shards
  return parts


def train_step(state: TrainState, batch: dict[str, Any], *, model: nn.Module,
               algorithm: Algorithm, tx: optax.GradientTransformation,
               lr_fn: optax.Schedule, config: ml_collections.ConfigDict,
               num_shards: int = 1) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer update: algorithm loss, gradient, optimizer, EMA of the parameters.

  Args:
    state: the current TrainState.
    batch: the global batch (see fixmatch_jax.algorithms for its layout).
    model: the Flax module.
    algorithm: supplies loss_fn.
    tx: the optimizer; its weight decay (coupled L2) is applied here, not in the loss.
    lr_fn: the learning-rate schedule of `tx`, for logging.
    config: the run config; reads config.algo (passed to the loss) and config.optim.ema_decay
      (and config.data.strong.decay with CTAugment).
    num_shards: how many equal slices (devices) the batch axis is split into; a forward
      over several image groups concatenates them slice by slice (`concat_groups`).

  Returns:
    (new state, metrics): metrics are device arrays ("train/loss", "train/lr",
    "train/grad_norm" and the algorithm's), never pulled to the host here.
  """
  step_key = jax.random.fold_in(
      jax.random.wrap_key_data(state.rng, impl=state.rng_impl), state.step)
  dropout_key, algo_key = jax.random.split(step_key)

  def forward_one(params, images, *, train, rngs=None, batch_stats=None):
    variables = {"params": params,
                 "batch_stats": state.batch_stats if batch_stats is None else batch_stats}
    if not train:
      return model.apply(variables, images, train=False), variables["batch_stats"]
    rngs = {"dropout": dropout_key} if rngs is None else rngs
    logits, updates = model.apply(variables, images, train=True, rngs=rngs,
                                  mutable=["batch_stats"])
    return logits, updates.get("batch_stats", {})

  forward = forward_groups(forward_one, num_shards)

  # Only algorithms that declare it (Mean Teacher) receive the EMA teacher: the other
  # loss_fns keep the documented keyword set.
  extra = {"ema_params": state.ema_params} if algorithm.uses_ema_params else {}

  def loss_fn(params):
    return algorithm.loss_fn(
        params, batch, forward=forward, algo_state=state.algo_state, key=algo_key,
        step=state.step, cfg=config.algo, num_classes=model.num_classes, **extra)

  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # EMA of the updated parameters only; BatchNorm statistics are not averaged (FixMatch
  # evaluates the EMA parameters with the online model's statistics).
  ema_params = optim.ema_update(state.ema_params, params, config.optim.ema_decay)
  metrics = dict(aux["metrics"])
  augment_state = state.augment_state
  if "probe" in batch["labelled"]:
    # CTAugment: the EMA model (before this update, inference mode) on the probe views moves
    # the rates of the bins they used (data/ctaugment_rates.py).
    probe_logits, _ = forward(state.ema_params, batch["labelled"]["probe"], train=False)
    augment_state, probe_metrics = ctaugment_rates.probe_feedback(
        augment_state, probe_logits, batch["labelled"]["label"],
        batch["labelled"]["probe_bins"], state.step, config.data.strong.decay)
    metrics.update(probe_metrics)
  if "policy_version" in batch.get("unlabelled", {}):
    metrics["cta/policy_staleness"] = jnp.mean(
        state.step - batch["unlabelled"]["policy_version"].astype(jnp.float32))
  new_state = state.replace(
      step=state.step + 1, params=params, batch_stats=aux["batch_stats"],
      opt_state=opt_state, ema_params=ema_params, algo_state=aux["algo_state"],
      augment_state=augment_state)
  metrics["train/loss"] = loss
  metrics["train/lr"] = lr_fn(state.step)
  metrics["train/grad_norm"] = optax.global_norm(grads)
  return new_state, metrics


def eval_step(params: Any, batch_stats: Any, batch: dict[str, Any], *,
              model: nn.Module) -> dict[str, jax.Array]:
  """Inference-mode sums over one padded evaluation batch.

  Pass `state.ema_params` (with the online `state.batch_stats`) to evaluate the EMA model.

  Args:
    params: model parameters.
    batch_stats: BatchNorm moving averages.
    batch: {"image": uint8 [b,H,W,C], "label": int [b], "mask": bool [b]}; mask is False
      on padding rows, which count nowhere.
    model: the Flax module.

  Returns:
    {"correct": int32 sum of correct predictions, "count": int32 number of real examples,
     "loss": float32 sum of cross-entropies} over the unpadded rows.
  """
  logits = model.apply({"params": params, "batch_stats": batch_stats}, batch["image"],
                       train=False).astype(jnp.float32)
  mask = batch["mask"].astype(jnp.int32)
  correct = (jnp.argmax(logits, axis=-1) == batch["label"]).astype(jnp.int32)
  cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  return {
      "correct": jnp.sum(mask * correct),
      "count": jnp.sum(mask),
      "loss": jnp.sum(jnp.where(batch["mask"], cross_entropy, 0.0)),
  }


class DispatchWindow:
  """Keeps at most `limit` dispatched steps unfinished: a loop's guard against deadlock.

  A jitted call returns as soon as its work is queued, so a loop that dispatches faster than
  the devices compute (a fixed batch, or an input pipeline ahead of the step) queues steps
  without bound. With several XLA:CPU host devices (JAX 0.10.2) that deadlocks once about
  32 programs are queued per device: one device's part of a step waits for an execution
  slot while the other device's part waits for it inside a cross-device reduction, until
  XLA aborts the process (`scripts/repro_dispatch_deadlock.py` shows it in a few seconds).
  `push` each step's output; it waits for the output pushed `limit` steps earlier. Any limit
  of 2 or more keeps the devices busy, so this costs no speed.
  """

  def __init__(self, limit: int = 4):
    if limit < 1:
      raise ValueError(f"DispatchWindow limit={limit}: must be at least 1.")
    self.limit = limit
    self._outputs: collections.deque = collections.deque()

  def push(self, output: Any) -> None:
    """Records a just-dispatched step's output (any pytree of device arrays)."""
    self._outputs.append(output)
    while len(self._outputs) > self.limit:
      jax.block_until_ready(self._outputs.popleft())

  def __len__(self) -> int:
    return len(self._outputs)


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D ("data",) mesh over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def shard_batch(mesh: Mesh, host_batch: Any) -> Any:
  """Assembles each process's slice of the batch into global arrays sharded over "data".

  Every leaf's leading axis is the batch axis; with P processes the global batch is P times
  this process's slice (single-process: the slice is the whole batch).
  """
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), host_batch)


def replicate(mesh: Mesh, tree: Any) -> Any:
  """A copy of a pytree (e.g. the TrainState) fully replicated on every device of the mesh.

  Never aliases the input, so donating the result to the train step leaves `tree` usable.
  """
  # device_put(..., may_alias=False) still reuses the input buffer as one shard of a
  # multi-device array (JAX 0.10), so device arrays are copied first; host arrays are
  # copied by the transfer anyway.
  copied = jax.tree.map(lambda x: jnp.copy(x) if isinstance(x, jax.Array) else x, tree)
  return jax.device_put(copied, NamedSharding(mesh, P()))


def under_mesh(fn: Callable[..., Any], mesh: Mesh) -> Callable[..., Any]:
  """`fn` traced with `mesh` as the context mesh, so that custom calls that XLA cannot
  split over devices (models/onednn.py) can wrap themselves in shard_map over "data"."""

  def traced(*args, **kwargs):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args, **kwargs)

  # jit names the executable (profiles, the compilation cache) after the function.
  inner = fn.func if isinstance(fn, functools.partial) else fn
  traced.__name__ = traced.__qualname__ = getattr(inner, "__name__", "step")
  return traced


def make_train_step(model: nn.Module, algorithm: Algorithm, tx: optax.GradientTransformation,
                    lr_fn: optax.Schedule, config: ml_collections.ConfigDict,
                    mesh: Mesh) -> Callable[[TrainState, Any], tuple[TrainState, Any]]:
  """jit(train_step) for `mesh`: state replicated and donated, batch sharded over "data".

  The global labelled and unlabelled batch sizes must be divisible by the mesh size.
  """
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
  step = functools.partial(train_step, model=model, algorithm=algorithm, tx=tx, lr_fn=lr_fn,
                           config=config, num_shards=mesh.shape[DATA_AXIS])
  return jax.jit(under_mesh(step, mesh), in_shardings=(replicated, sharded),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def make_eval_step(model: nn.Module, mesh: Mesh) -> Callable[[Any, Any, Any], dict[str, Any]]:
  """jit(eval_step) for `mesh`: (params, batch_stats) replicated, batch sharded over "data"."""
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
  return jax.jit(under_mesh(functools.partial(eval_step, model=model), mesh),
                 in_shardings=(replicated, replicated, sharded), out_shardings=replicated)
