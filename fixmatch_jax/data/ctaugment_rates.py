"""CTAugment's learned rates: their layout, the probe update, and the host-side board.

CTAugment (Sohn et al. 2020, arXiv:2001.07685, Sec. 3.2 and App. C; introduced with ReMixMatch,
Berthelot et al. 2019, arXiv:1911.09785) keeps, for every magnitude parameter of every op, one
rate per bin (17 bins; posterize's bits 8, rescale's method 6), all starting at 1. A labelled
image also gets a "probe" view with `depth` uniformly drawn ops at uniform magnitudes; the EMA
model's prediction p on it gives the match

  w = 1 - 1/2 * ||p - onehot(y)||_1        (1 if correct with certainty, 0 if certainly wrong)

and every bin the probe used moves towards it, rate <- decay * rate + (1 - decay) * w, one
labelled example after the other (in batch order, ops and parameters in order), as the
reference code does. All rates live in one flat float32 vector of `NUM_RATES` entries.

Where the rates live. The TrainState holds `augment_state = {"rates": [lag + 1, NUM_RATES]}`:
a ring buffer whose row `v % (lag + 1)` holds the rates after `v` updates (v = state.step), for
the last lag + 1 versions. The jitted train step computes the probe predictions and writes the
next version (`probe_feedback`), so the rates are checkpointed with the TrainState and
restored with it. The input pipeline builds the strong views of step t with version
max(t - lag, 0), read from a host-side `RateBoard` to which the train loop publishes each
version once (about a kilobyte per step, never per example). The staleness is therefore
exactly `lag` steps (fewer in the first `lag` steps), whatever the prefetch depth: a batch
waits for its version rather than taking whatever is newest. That makes CTA runs
deterministic and their resumption exact (the ring holds every version the first `lag` batches
after a resume need). The pipeline can run at most `lag` batches ahead of the train step.
"""
from __future__ import annotations

import atexit
import json
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

# (name, bins of each magnitude parameter), in the reference code's registration order.
OPS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("autocontrast", (17,)), ("blur", (17,)), ("brightness", (17,)), ("color", (17,)),
    ("contrast", (17,)), ("cutout", (17,)), ("equalize", (17,)), ("invert", (17,)),
    ("identity", ()), ("posterize", (8,)), ("rescale", (17, 6)), ("rotate", (17,)),
    ("sharpness", (17,)), ("shear_x", (17,)), ("shear_y", (17,)), ("smooth", (17,)),
    ("solarize", (17,)), ("translate_x", (17,)), ("translate_y", (17,)))
OP_NAMES = tuple(name for name, _ in OPS)
MAX_PARAMS = max(len(bins) for _, bins in OPS)
MAX_BINS = max(max(bins, default=0) for _, bins in OPS)
# NUM_BINS[op, param]: bins of that parameter (0: the op has no such parameter).
NUM_BINS = np.array([list(bins) + [0] * (MAX_PARAMS - len(bins)) for _, bins in OPS], np.int32)
# OFFSETS[op, param]: where that parameter's bins start in the flat rate vector.
OFFSETS = (np.cumsum(NUM_BINS.reshape(-1)) - NUM_BINS.reshape(-1)).reshape(NUM_BINS.shape)
NUM_RATES = int(NUM_BINS.sum())


def rate_index_table() -> np.ndarray:
  """int32 [num_ops, MAX_PARAMS, MAX_BINS]: flat rate index of each bin, -1 where none."""
  table = np.full((len(OPS), MAX_PARAMS, MAX_BINS), -1, np.int32)
  for op in range(len(OPS)):
    for param in range(MAX_PARAMS):
      n = NUM_BINS[op, param]
      table[op, param, :n] = OFFSETS[op, param] + np.arange(n)
  return table


def rates_by_op(rates: np.ndarray) -> dict[str, list[np.ndarray]]:
  """Splits a flat rate vector into {op: [rates of parameter 0, ...]} (for logs and plots)."""
  rates = np.asarray(rates)
  return {name: [rates[OFFSETS[op, p]:OFFSETS[op, p] + NUM_BINS[op, p]]
                 for p in range(len(bins))] for op, (name, bins) in enumerate(OPS)}


def probe_bin(values: np.ndarray, num_bins: np.ndarray) -> np.ndarray:
  """The bin a probe magnitude updates: int(value * bins * 0.999), as the reference code."""
  return np.floor(np.asarray(values, np.float64) * num_bins * 0.999).astype(np.int32)


def init_state(lag: int) -> dict[str, np.ndarray]:
  """augment_state of a fresh run: every version in the ring is the all-ones start."""
  if lag < 1:
    raise ValueError(f"CTAugment policy lag={lag} must be >= 1: the pipeline has to build a "
                     "batch while the previous step runs (see ctaugment_rates).")
  return {"rates": np.ones((lag + 1, NUM_RATES), np.float32)}


def match_weight(probs: Any, labels: Any) -> Any:
  """w = 1 - 0.5 * ||p - onehot(y)||_1 per example (JAX or NumPy arrays)."""
  import jax.numpy as jnp
  onehot = jnp.eye(probs.shape[-1], dtype=probs.dtype)[labels]
  return 1.0 - 0.5 * jnp.abs(probs - onehot).sum(-1)


def update_rates(rates: Any, bins: Any, weights: Any, decay: float) -> Any:
  """Applies the probe updates of a batch to a flat rate vector, in the reference's order.

  Sequentially, update u (examples in batch order, then each example's bins in order) does
  rate[b_u] <- decay * rate[b_u] + (1 - decay) * w_u. In closed form, with later_u the number
  of updates to the same bin after u and count_b the number of updates of bin b:

    rate'[b] = decay^count_b * rate[b] + (1 - decay) * sum_{u: b_u = b} decay^later_u * w_u.

  Args:
    rates: float32 [NUM_RATES].
    bins: int32 [B, K] flat rate indices, -1 for none.
    weights: float32 [B], the match weight of each example.
    decay: 0.99 in the paper.

  Returns:
    float32 [NUM_RATES].
  """
  import jax.numpy as jnp
  flat_bins = bins.reshape(-1)
  flat_w = jnp.repeat(weights, bins.shape[1])
  onehot = (flat_bins[:, None] == jnp.arange(rates.shape[0])[None]).astype(jnp.float32)
  after = jnp.cumsum(onehot[::-1], axis=0)[::-1] - onehot  # Updates of each bin after u.
  later = jnp.sum(after * onehot, axis=1)
  count = onehot.sum(0)
  decay = jnp.float32(decay)
  added = (1 - decay) * jnp.sum(onehot * (flat_w * decay ** later)[:, None], axis=0)
  return decay ** count * rates + added


def update_rates_reference(rates: np.ndarray, bins: np.ndarray, weights: np.ndarray,
                           decay: float) -> np.ndarray:
  """`update_rates` as the reference code's Python loop (the test oracle)."""
  rates = np.array(rates, np.float64)
  for example_bins, w in zip(np.asarray(bins), np.asarray(weights), strict=True):
    for b in example_bins:
      if b >= 0:
        rates[b] = rates[b] * decay + w * (1 - decay)
  return rates


def probe_feedback(augment_state: Mapping[str, Any], probe_logits: Any, labels: Any,
                   probe_bins: Any, step: Any, decay: float) -> tuple[dict[str, Any], dict]:
  """The train step's part: version step + 1 of the rates from the probe predictions.

  Args:
    augment_state: {"rates": [lag + 1, NUM_RATES]} ring (row v % (lag + 1) = version v).
    probe_logits: [B, C] logits of the EMA model on the probe views.
    labels: int [B] labels of the labelled batch.
    probe_bins: int32 [B, K] flat rate indices the probes used (-1: none).
    step: the step (= the version of the current rates).
    decay: rate decay (0.99).

  Returns:
    (new augment_state, metrics "cta/probe_weight", "cta/probe_acc").
  """
  import jax
  import jax.numpy as jnp
  ring = augment_state["rates"]
  slots = ring.shape[0]
  probs = jax.nn.softmax(probe_logits.astype(jnp.float32))
  weights = match_weight(probs, labels)
  new = update_rates(ring[step % slots], probe_bins, weights, decay)
  ring = ring.at[(step + 1) % slots].set(new)
  metrics = {"cta/probe_weight": weights.mean(),
             "cta/probe_acc": jnp.mean(jnp.argmax(probs, -1) == labels)}
  return {**augment_state, "rates": ring}, metrics


class RateBoard:
  """Host-side versions of the rates, shared by the train loop and the input pipeline.

  The loop `publish`es version v (the rates after v steps); the pipeline asks for the version
  of step t, max(t - lag, 0), with `get(t)`, which blocks until that version is published.
  Only the last `keep` versions are kept.
  """

  def __init__(self, lag: int, initial: np.ndarray | None = None, *, keep: int = 64):
    if lag < 1:
      raise ValueError(f"CTAugment policy lag={lag} must be >= 1.")
    self.lag = lag
    self._keep = max(keep, lag + 2)
    self._versions: dict[int, np.ndarray] = {}
    self._cond = threading.Condition()
    self._closed = False
    self.wait_seconds = 0.0  # Total time the pipeline waited for a version.
    self.publish(0, np.ones(NUM_RATES, np.float32) if initial is None else initial)

  @classmethod
  def from_state(cls, augment_state: Mapping[str, Any], step: int) -> RateBoard:
    """A board holding the versions max(step - lag, 0) .. step of a (restored) state's ring."""
    ring = np.asarray(augment_state["rates"])
    lag = ring.shape[0] - 1
    board = cls(lag, ring[0] if step == 0 else None)
    for version in range(max(step - lag, 0), step + 1):
      board.publish(version, ring[version % (lag + 1)])
    return board

  def version_for_step(self, step: int) -> int:
    return max(int(step) - self.lag, 0)

  def publish(self, version: int, rates: np.ndarray) -> None:
    rates = np.asarray(rates, np.float32)
    if rates.shape != (NUM_RATES,):
      raise ValueError(f"rates must have shape ({NUM_RATES},), got {rates.shape}.")
    with self._cond:
      self._versions[int(version)] = rates
      for old in [v for v in self._versions if v <= version - self._keep]:
        del self._versions[old]
      self._cond.notify_all()

  def get(self, step: int) -> np.ndarray:
    """The rates for the strong views of `step` (blocks until published, or closed)."""
    version = self.version_for_step(step)
    start = time.perf_counter()
    with self._cond:
      while version not in self._versions and not self._closed:
        if self._versions and version < min(self._versions):
          raise RuntimeError(f"CTAugment rates version {version} was already dropped "
                             f"(oldest kept: {min(self._versions)}).")
        self._cond.wait(timeout=1.0)
      self.wait_seconds += time.perf_counter() - start
      if version in self._versions:
        return self._versions[version]
      return self._versions[max(self._versions)]  # Closed: training is over, any will do.

  def close(self) -> None:
    """Releases pipeline threads still waiting (the loop has stopped)."""
    with self._cond:
      self._closed = True
      self._cond.notify_all()

  def latest(self) -> tuple[int, np.ndarray]:
    with self._cond:
      version = max(self._versions)
      return version, self._versions[version]


@jax.jit
def _ring_row(ring: jax.Array, step: jax.Array) -> jax.Array:
  return ring[step % ring.shape[0]]


def board_for(augment_state: Mapping[str, Any], step: int) -> RateBoard | None:
  """The train loop's board for a (restored) state at `step`; None without CTAugment."""
  if "rates" not in augment_state:
    return None
  board = RateBoard.from_state(jax.device_get(augment_state), step)
  atexit.register(board.close)  # Never leave pipeline threads waiting at exit.
  return board


def current_rates(augment_state: Mapping[str, Any], step: int) -> jax.Array:
  """Version `step` of the rates, as a new device array (dispatch before donating the state)."""
  return _ring_row(augment_state["rates"], step)


def publish(board: RateBoard, step: int, rates: jax.Array) -> None:
  """Publishes version `step` (waits for the step that computed it, not for the current one)."""
  board.publish(step, np.asarray(rates.addressable_data(0)))


def append_log(workdir: str, step: int, board: RateBoard) -> None:
  """Appends the newest rates, by op, and the pipeline's waiting time to cta_rates.jsonl."""
  if jax.process_index() != 0:
    return
  version, rates = board.latest()
  row = {"step": step, "version": version, "pipeline_wait_s": round(board.wait_seconds, 3),
         "rates": {op: [np.round(r.astype(np.float64), 4).tolist() for r in params]
                   for op, params in rates_by_op(rates).items()}}
  with open(os.path.join(workdir, "cta_rates.jsonl"), "a") as f:
    f.write(json.dumps(row) + "\n")
