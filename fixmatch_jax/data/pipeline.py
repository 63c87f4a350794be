"""Input pipelines: the labelled + unlabelled training stream and the padded eval stream.

Training streams are random-access: stream position k (k = step * global_batch + row)
is example `subset[index_shuffle(k % n, seed=(seed, stream_id, k // n))]`, a fresh
stateless permutation of the n examples every epoch. That row's augmentation is a function
of (seed, stream_id, step, row) only: each step draws its batch's augmentation from one seed
derived from (seed, stream_id, step), and row r uses row r of that seed's draws. For a fixed
global batch size, (step, row) is k, so the same seed gives the same batches on any number
of processes (a process holding rows [a, b) draws exactly rows [a, b) of the global batch's
draws), and `start_step=s` yields what a fresh stream yields after s steps, without
replaying it. Changing the global batch size changes the augmentation draws (and the batches).
The labelled stream (id 0) and the unlabelled stream (id 1) are independent.

One tf.data element is one step's local batch, built by a single parallel, deterministic map:
the process's global rows are computed in one vector op, their images gathered from the
in-memory array with NumPy (one call per batch: no copy of the dataset into the TF graph, no
Python per example), then the whole batch is augmented with the batch APIs
(`augment.weak_augment_batch`, `randaugment.strong_augment_params(batch_size=...)` and
`randaugment.strong_augment_batch`, which runs each RandAugment op once per batch). There is
no per-example map: on CPU one costs tens of microseconds per element whatever it does, more
than the augmentation itself. A strong view is RandAugment on top of its own weak (flip + crop)
draw, as in the FixMatch code; each view draws from its own seeds. The traced augmentation
functions are cached per process, so building a second stream costs no RandAugment re-tracing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf

from fixmatch_jax.data import augment, ctaugment, randaugment, sources, splits
from fixmatch_jax.data import ctaugment_rates as cta_rates

VIEWS = ("weak", "strong", "strong2", "raw", "weak2")
LABELLED_STREAM, UNLABELLED_STREAM = 0, 1
# Each augmented view owns two seeds of the step seed's split: [weak part, RandAugment part].
# Fixed slots, so a view's draws do not depend on which other views are requested; a new
# slot goes last (stateless_split(seed, n) is a prefix of the split into more seeds).
# "weak2" is a second, independent weak augmentation (Pi-model, Mean Teacher).
_VIEW_SLOT = {"weak": 0, "strong": 1, "strong2": 2, "weak2": 3}
_STRONG_VIEWS = ("strong", "strong2")
STRONG_AUGMENTATIONS = ("randaugment", "ctaugment")
# CTAugment's probe view of labelled images: its seed is folded from the step seed, so the
# weak and strong views keep their draws.
_PROBE_SALT = 99


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # Only to ask which process this is; the pipeline itself is TensorFlow.
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} not in [0, {process_count}).")
  return process_index, process_count


def _local_rows(global_batch: int, process_index: int, process_count: int, what: str) -> range:
  """Rows [p*B/P, (p+1)*B/P) of each global batch: the global batch does not depend on P."""
  if global_batch % process_count:
    raise ValueError(f"{what}={global_batch} is not divisible by the {process_count} processes.")
  local = global_batch // process_count
  return range(process_index * local, (process_index + 1) * local)


def weak_pad(config_weak: ml_collections.ConfigDict, image_shape: Sequence[int]) -> int:
  """Crop padding in pixels: pad_fraction of the image side, rounded half up (0.125*32 = 4)."""
  return int(math.floor(config_weak.pad_fraction * image_shape[0] + 0.5))


def _numpy_gather(array: np.ndarray, indices: tf.Tensor) -> tf.Tensor:
  """array[indices] for a host NumPy array, without copying the array into the graph."""
  out = tf.numpy_function(lambda idx: array[idx], [indices], tf.as_dtype(array.dtype),
                          stateful=False)
  out.set_shape(indices.shape.concatenate(array.shape[1:]))
  return out


@functools.lru_cache(maxsize=32)
def _view_function(views: tuple[str, ...], image_shape: tuple[int, ...], local: int,
                   first_row: int, flip: bool, pad: int,
                   strong_options: tuple[tuple[str, Any], ...]) -> Callable:
  """The traced batch augmentation for one set of views, shared by every stream that uses it.

  Tracing RandAugment's 14 ops takes seconds; as a cached `tf.function` it is traced once per
  process and local slice (`local` rows from global row `first_row`) instead of once per
  stream. Autograph is off: the ops are written with explicit TF control flow, and converting
  them only costs time.
  """
  strong_cfg = ml_collections.ConfigDict(dict(strong_options))
  cta = strong_cfg.name == "ctaugment"

  def cta_policy(seed, rates, probe):
    return ctaugment.sample_policy(
        seed, image_shape, rates, probe=probe, depth=strong_cfg.depth,
        threshold=strong_cfg.threshold, decay=strong_cfg.decay, cutout=strong_cfg.cutout,
        batch_size=local, first_row=first_row)

  @tf.function(autograph=False)
  def augment_batch(images, step_seed, rates):
    seeds = tf.random.experimental.stateless_split(step_seed, 2 * len(_VIEW_SLOT))
    out = {}
    for view in views:
      if view == "raw":
        out[view] = images
        continue
      if view == "probe":  # CTAugment's probe of the weak view (the labelled image).
        policy = cta_policy(tf.random.experimental.stateless_fold_in(step_seed, _PROBE_SALT),
                            rates, probe=True)
        out["probe"] = ctaugment.apply(out["weak"], policy, fill=strong_cfg.fill)
        out["probe_bins"] = policy["bins"]
        continue
      slot = _VIEW_SLOT[view]
      out[view] = augment.weak_augment_batch(images, seeds[2 * slot], flip=flip, pad=pad,
                                             first_row=first_row)
      if view in _STRONG_VIEWS and cta:
        policy = cta_policy(seeds[2 * slot + 1], rates, probe=False)
        out[view] = ctaugment.apply(out[view], policy, fill=strong_cfg.fill)
      elif view in _STRONG_VIEWS:
        params = randaugment.strong_augment_params(
            seeds[2 * slot + 1], image_shape, strong_cfg, batch_size=local, first_row=first_row)
        out[view] = randaugment.strong_augment_batch(out[view], params, strong_cfg)
    return out

  return augment_batch


def _stream(source: sources.ArraySource, subset: np.ndarray, *, stream_id: int,
            global_batch: int, rows: range, start_step: int, seed: int,
            views: tuple[str, ...], config_data: ml_collections.ConfigDict,
            rate_board: cta_rates.RateBoard | None = None) -> tf.data.Dataset:
  """One training stream: batches of `views` (+ "index", "label") of this process's rows.

  With CTAugment strong views, the rates of step t come from `rate_board.get(t)` (one host
  call per batch, which waits for that version), and each row carries "policy_version";
  without a board the rates stay at their initial value (benchmarks, tests).
  """
  n = len(subset)
  if n == 0:
    raise ValueError(f"Stream {stream_id} has no examples to draw from.")
  local = len(rows)
  subset_t = tf.constant(np.asarray(subset, np.int64))
  labels_t = tf.constant(source.labels.astype(np.int32))
  image_shape = tuple(source.images.shape[1:])
  # A 64-bit hash of (seed, stream) for the step seeds [hash, step]: streams never share seeds.
  stream_hash = int(np.random.SeedSequence([seed, stream_id]).generate_state(1, np.uint64)[0])
  stream_hash_t = tf.constant(np.uint64(stream_hash).astype(np.int64))
  num_parallel_calls = (tf.data.AUTOTUNE if config_data.num_parallel_calls < 0
                        else config_data.num_parallel_calls)
  augment_batch = _view_function(
      views, image_shape, local, rows.start, bool(config_data.weak.flip),
      weak_pad(config_data.weak, image_shape), tuple(sorted(config_data.strong.to_dict().items())))

  @tf.autograph.experimental.do_not_convert
  def make_batch(step):
    k = step * global_batch + rows.start + tf.range(local, dtype=tf.int64)
    epoch_seed = tf.stack([tf.fill([local], tf.constant(seed, tf.int64)),
                           tf.fill([local], tf.constant(stream_id, tf.int64)), k // n], axis=1)
    # The op behind tf.random.experimental.index_shuffle, called directly: its wrapper pads a
    # batch of seeds along the wrong axis, and the op takes the (seed, stream, epoch) triple as is.
    position = tf.raw_ops.RandomIndexShuffle(
        index=k % n, seed=epoch_seed, max_index=tf.constant(n - 1, tf.int64), rounds=4)
    index = tf.gather(subset_t, position)
    extra = {}
    if rate_board is None:
      rates = tf.ones([cta_rates.NUM_RATES], tf.float32)
    else:
      rates = tf.numpy_function(rate_board.get, [step], tf.float32, stateful=False)
      rates.set_shape([cta_rates.NUM_RATES])
      version = tf.maximum(step - rate_board.lag, 0)
      extra["policy_version"] = tf.fill([local], tf.cast(version, tf.int32))
    # The step seed, not the process's rows: every process draws from the global batch's seed.
    views_out = augment_batch(_numpy_gather(source.images, index),
                              tf.stack([stream_hash_t, step]), rates)
    return {"index": tf.cast(index, tf.int32), "label": tf.gather(labels_t, index),
            **views_out, **extra}

  return tf.data.Dataset.counter(start_step).map(
      make_batch, num_parallel_calls=num_parallel_calls, deterministic=True)


def train_stream(config_data: ml_collections.ConfigDict, train_source: sources.ArraySource,
                 split: splits.Split, *, views: Sequence[str], seed: int, start_step: int = 0,
                 process_index: int | None = None, process_count: int | None = None,
                 rate_board: cta_rates.RateBoard | None = None) -> Iterator[dict]:
  """Endless training batches (this process's slice of each global batch), as NumPy.

  Args:
    config_data: `config.data`; reads batch_size, mu, weak.flip, weak.pad_fraction, strong
      (passed to `randaugment`), num_parallel_calls (-1: autotune), prefetch (-1: autotune).
    train_source: the training set the split indexes.
    split: labelled and unlabelled indices.
    views: unlabelled views from `VIEWS`; () omits the "unlabelled" entry (supervised).
    seed: the run's seed (non-negative).
    start_step: first step to yield (resume).
    process_index: this process (default `jax.process_index()`).
    process_count: number of processes (default `jax.process_count()`).
    rate_board: CTAugment only (`config_data.strong.name == "ctaugment"`): the versions of
      the rates the train loop publishes; None keeps the initial rates.

  Returns:
    Iterator of {"labelled": {"image": uint8 [B/P,H,W,C] (weak), "label": int32 [B/P]},
    "unlabelled": {view: uint8 [muB/P,H,W,C] for each view, "index": int32, "label": int32}}.
    The unlabelled "label" is the ground truth for monitoring only (-1: none).
    With CTAugment strong views, "labelled" also has "probe" (CTAugment's probe of the
    labelled image) and "probe_bins" (int32 [B/P, depth * 2], the rate bins it used), and
    "unlabelled" has "policy_version" (int32 [muB/P], the version of the rates used).
  """
  unknown = [view for view in views if view not in VIEWS]
  if unknown or len(set(views)) != len(views):
    raise ValueError(f"views must be distinct names from {VIEWS}, got {tuple(views)}.")
  if config_data.strong.name not in STRONG_AUGMENTATIONS and any(
      v in _STRONG_VIEWS for v in views):
    raise ValueError(f"Strong augmentation {config_data.strong.name!r} is not supported by "
                     f"the pipeline; config.data.strong.name must be one of "
                     f"{STRONG_AUGMENTATIONS}.")
  cta = config_data.strong.name == "ctaugment" and any(v in _STRONG_VIEWS for v in views)
  missing = sorted({"depth", "threshold", "decay", "cutout", "lag", "fill"}
                   - set(config_data.strong)) if cta else []
  if missing:
    raise ValueError(f"config.data.strong is CTAugment but lacks {missing}; set it with "
                     "configs.use_ctaugment(config).")
  if seed < 0 or start_step < 0:
    raise ValueError(f"seed and start_step must be >= 0, got {seed}, {start_step}.")
  process_index, process_count = _process(process_index, process_count)
  batch_size = config_data.batch_size
  unlabelled_batch = config_data.mu * batch_size
  common = dict(start_step=start_step, seed=seed, config_data=config_data)
  labelled = _stream(
      train_source, split.labelled, stream_id=LABELLED_STREAM, global_batch=batch_size,
      rows=_local_rows(batch_size, process_index, process_count, "batch_size"),
      views=("weak", "probe") if cta else ("weak",), **common)
  probe_keys = ("probe", "probe_bins") if cta else ()
  labelled = labelled.map(lambda b: {"image": b["weak"], "label": b["label"],
                                     **{key: b[key] for key in probe_keys}})
  if views:
    unlabelled = _stream(
        train_source, split.unlabelled, stream_id=UNLABELLED_STREAM,
        global_batch=unlabelled_batch, views=tuple(views),
        rows=_local_rows(unlabelled_batch, process_index, process_count, "mu * batch_size"),
        rate_board=rate_board if cta else None, **common)
    ds = tf.data.Dataset.zip(labelled, unlabelled).map(
        lambda lab, unlab: {"labelled": lab, "unlabelled": unlab})
  else:
    ds = labelled.map(lambda lab: {"labelled": lab})
  return _finish(ds, config_data.prefetch).as_numpy_iterator()


def _finish(ds: tf.data.Dataset, prefetch: int) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options)
  if prefetch:
    ds = ds.prefetch(tf.data.AUTOTUNE if prefetch < 0 else prefetch)
  return ds


def num_eval_batches(num_examples: int, batch_size: int) -> int:
  """Number of (padded) global batches that cover `num_examples`."""
  return max(1, math.ceil(num_examples / batch_size))


def eval_stream(source: sources.ArraySource, *, batch_size: int,
                process_index: int | None = None, process_count: int | None = None,
                prefetch: int = 2) -> Iterable[dict]:
  """Every example of `source` exactly once, in order, in fixed-shape padded batches.

  Global batch b holds examples [b*batch_size, (b+1)*batch_size); process p gets rows
  [p*bs/P, (p+1)*bs/P) of it, as in training, so every process yields
  `num_eval_batches(len(source), batch_size)` batches and the global arrays keep the
  source order. Padding rows are zero images with label 0 and mask False.

  Args:
    source: the evaluation set.
    batch_size: global batch size (divisible by the number of processes).
    process_index: this process (default `jax.process_index()`).
    process_count: number of processes (default `jax.process_count()`).
    prefetch: batches to prepare ahead.

  Returns:
    A re-iterable of {"image": uint8 [bs/P,H,W,C], "label": int32 [bs/P], "mask": bool [bs/P]}.
  """
  import tensorflow_datasets as tfds  # `as_numpy` gives a re-iterable with a length.

  process_index, process_count = _process(process_index, process_count)
  rows = _local_rows(batch_size, process_index, process_count, "eval batch_size")
  num_examples = len(source)
  if num_examples == 0:
    raise ValueError(f"{source.name}: nothing to evaluate.")
  labels_t = tf.constant(source.labels.astype(np.int32))

  def make_batch(batch):
    position = batch * batch_size + rows.start + tf.range(len(rows), dtype=tf.int64)
    mask = position < num_examples
    index = tf.minimum(position, num_examples - 1)
    image = _numpy_gather(source.images, index)
    return {"image": tf.where(mask[:, None, None, None], image, tf.zeros_like(image)),
            "label": tf.where(mask, tf.gather(labels_t, index), 0), "mask": mask}

  ds = tf.data.Dataset.range(num_eval_batches(num_examples, batch_size)).map(make_batch)
  return tfds.as_numpy(_finish(ds, prefetch))
