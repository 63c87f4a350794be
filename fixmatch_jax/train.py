"""`train_and_evaluate(config, workdir)`: the wiring and the loop, no math.

One run, as data flows (see DESIGN.md): write config.json; pick the algorithm;
select (or reload) the labelled split; build the input streams; create or
restore the TrainState; then loop over the jitted shared step, logging,
evaluating and checkpointing on the configured schedule. Re-running the same
command in the same workdir resumes from the newest checkpoint; SIGTERM saves a
checkpoint and returns.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from fixmatch_jax import (
    algorithms,
    checkpointing,
    configs,
    evaluation,
    init_from,
    metrics,
    models,
    optim,
    steps,
    train_state,
)
from fixmatch_jax.data import ctaugment_rates, pipeline, sources, splits
from fixmatch_jax.models import onednn

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
# Config keys that may change between a run and its resumption.
RESUMABLE_CHANGES = ("train.num_steps", "optim.decay_steps", "train.allow_config_change",
                     "train.cpu_convolutions")


class ConfigMismatchError(ValueError):
  """The workdir holds a run with a different configuration."""


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """One line per config key (dotted) that differs and may not change on resume."""
  old_flat, new_flat = _flatten(old), _flatten(new)
  differing = sorted(
      k for k in set(old_flat) | set(new_flat)
      if old_flat.get(k, "<missing>") != new_flat.get(k, "<missing>")
      and k not in RESUMABLE_CHANGES
      # A key added to the code since the run started, at its null default, changes nothing.
      and not (k not in old_flat and new_flat.get(k) is None))
  return [f"  {k}: saved {old_flat.get(k, '<missing>')!r}, "
          f"new config has {new_flat.get(k, '<missing>')!r}" for k in differing]


def _mismatch(what: str, lines: list[str]) -> ConfigMismatchError:
  return ConfigMismatchError(
      f"{what} disagrees with this run's config:\n" + "\n".join(lines) +
      "\nUse a new --workdir, or pass --config.train.allow_config_change=True to resume "
      "with the new values.")


def write_or_check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes config.json, or checks that a resumed run has the same config.

  Raises:
    ConfigMismatchError: naming every differing key, unless
      `config.train.allow_config_change` is set.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  new = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    differing = config_differences(old, new)
    if differing and not config.train.allow_config_change:
      raise _mismatch(path, differing)
  if jax.process_index() == 0:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(new, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def check_checkpoint_config(config: ml_collections.ConfigDict, directory: str,
                            stored: dict[str, Any] | None, step: int) -> list[str]:
  """Refuses a checkpoint written by another configuration (the checkpoint's own copy).

  config.json can be edited, deleted or overwritten independently of the checkpoints; the
  config saved inside each checkpoint cannot, so it is what a resume is checked against.

  Returns:
    The differences accepted because `config.train.allow_config_change` is set.

  Raises:
    ConfigMismatchError: naming every differing key, unless
      `config.train.allow_config_change` is set.
  """
  if stored is None:
    logging.warning("Checkpoint %d in %s has no stored config (written by an older "
                    "version); only config.json was checked.", step, directory)
    return []
  differing = config_differences(stored, json.loads(config.to_json_best_effort()))
  if differing and not config.train.allow_config_change:
    raise _mismatch(f"Checkpoint {os.path.join(directory, str(step))}", differing)
  return differing


class _Preemption:
  """Turns SIGTERM into a flag the loop polls (no host sync), then saves and returns."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread (e.g. a notebook worker): no handler.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _non_finite(what: str, first_step: int, last_step: int,
                checkpointer: checkpointing.Checkpointer) -> FloatingPointError:
  """The error that stops a diverged run; every checkpoint on disk is finite."""
  checkpointer.wait()
  return FloatingPointError(
      f"Non-finite {what} between steps {first_step} and {last_step}: training diverged. "
      f"The last checkpoint (step {checkpointer.latest_step()}) holds finite weights. Lower "
      "optim.lr (to resume from that checkpoint with it, add "
      "--config.train.allow_config_change=True) or check the inputs for NaN/Inf.")


def _format_seconds(seconds: float) -> str:
  seconds = int(seconds)
  days, rest = divmod(seconds, 86400)
  hours, rest = divmod(rest, 3600)
  minutes, secs = divmod(rest, 60)
  if days:
    return f"{days}d{hours:02d}h"
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def load_sources(config_data: ml_collections.ConfigDict
                 ) -> tuple[sources.ArraySource, sources.ArraySource]:
  """The training and test splits named by the config."""
  options = dict(config_data.dataset_options)
  train = sources.load(config_data.dataset, "train", data_dir=config_data.data_dir, **options)
  test = sources.load(config_data.dataset, "test", data_dir=config_data.data_dir, **options)
  if train.images.shape[1:] != test.images.shape[1:]:
    raise ValueError(f"Train images are {train.images.shape[1:]} but test images are "
                     f"{test.images.shape[1:]}; both splits must have one image shape.")
  return train, test


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> train_state.TrainState:
  """Trains `config.algorithm` with periodic evaluation and checkpoints in `workdir`.

  Args:
    config: a full config (see `configs.base_config`), ideally locked.
    workdir: where config.json, labelled_indices.json, metrics.jsonl, TensorBoard
      events, checkpoints and summary.json go. Re-running resumes.

  Returns:
    The final TrainState.
  """
  started = time.perf_counter()
  configs.validate(config)
  # TensorFlow is only the input pipeline: keep it off the accelerators.
  tf.config.set_visible_devices([], "GPU")
  os.makedirs(workdir, exist_ok=True)
  write_or_check_config(config, workdir)

  algorithm = algorithms.get(config.algorithm)
  train_source, test_source = load_sources(config.data)
  num_classes = train_source.num_classes
  split = splits.load_or_create(workdir, config.data, train_source, config.seed)
  logging.info("%s: %d labelled, %d unlabelled, %d test examples, %d classes.",
               config.data.dataset, len(split.labelled), len(split.unlabelled),
               len(test_source.labels), num_classes)

  model = models.create(config.model, num_classes, config.train.cpu_convolutions)
  # Hardware and date, for the summarizer's tables; which kernels run the convolutions.
  metrics.write_run_info(
      workdir, **onednn.cpu_convolutions_info(config.train.cpu_convolutions, model))
  lr_fn = optim.learning_rate_schedule(config.optim)
  tx = optim.create_optimizer(config.optim)
  mesh = steps.make_mesh()
  state = train_state.create(
      model, tx, algorithm, jax.random.PRNGKey(config.seed),
      train_source.images.shape[1:], config, num_unlabelled=len(train_source.labels))
  state = steps.replicate(mesh, state)

  checkpointer = checkpointing.Checkpointer(workdir, keep=config.train.keep_checkpoints)
  config_json = json.loads(config.to_json_best_effort())  # Saved in every checkpoint.
  restored = checkpointer.restore(
      state, check_config=lambda stored, step: check_checkpoint_config(
          config, checkpointer.directory, stored, step))
  start_step = 0
  if restored is not None:
    state, start_step = restored
    metrics.truncate_after(workdir, start_step)
    logging.info("Resumed from the checkpoint at step %d.", start_step)
  elif config.get("init_from"):
    state = init_from.apply(state, config.init_from, config.get("init_from_exclude"))
    logging.info("Initialised the network from %s.", config.init_from)

  train_fn = steps.make_train_step(model, algorithm, tx, lr_fn, config, mesh)
  eval_fn = steps.make_eval_step(model, mesh)
  # CTAugment: the host-side versions of the rates the pipeline reads (None without CTA).
  rate_board = ctaugment_rates.board_for(state.augment_state, start_step)
  train_iter = pipeline.train_stream(
      config.data, train_source, split, views=algorithm.views, seed=config.seed,
      start_step=start_step, rate_board=rate_board)
  eval_batches = list(pipeline.eval_stream(test_source, batch_size=config.data.eval_batch_size))

  logger = metrics.MetricLogger(workdir)
  num_steps = config.train.num_steps
  # Metrics of the steps since the last logged row; a resumed run starts from the ones saved
  # with its checkpoint, so that it logs exactly the rows of an uninterrupted run.
  pending: list[dict[str, Any]] = (
      checkpointer.pending_metrics(start_step) if restored is not None else [])
  last_log_time, last_log_step = time.perf_counter(), start_step
  step = last_checked_step = start_step
  in_flight = steps.DispatchWindow()  # Unbounded queues of steps deadlock XLA:CPU.
  with _Preemption() as preemption:
    while step < num_steps:
      batch = steps.shard_batch(mesh, next(train_iter))
      if rate_board is not None:  # Copied before the step donates the state.
        rates = ctaugment_rates.current_rates(state.augment_state, step)
      state, step_metrics = train_fn(state, batch)
      if rate_board is not None:
        ctaugment_rates.publish(rate_board, step, rates)
      pending.append(step_metrics)  # Still on device: fetched at the next logging step.
      in_flight.push(step_metrics)
      step += 1

      if step % config.train.log_every_steps == 0 or step == num_steps:
        row = metrics.average(pending)
        if not np.isfinite(row["train/loss"]):
          raise _non_finite(f"training loss ({row['train/loss']})", step - len(pending) + 1,
                            step, checkpointer)
        now = time.perf_counter()
        steps_per_s = (step - last_log_step) / max(now - last_log_time, 1e-9)
        row["train/steps_per_s"] = steps_per_s
        logger.write(step, row)
        logging.info("step %d/%d  %.2f steps/s  ETA %s  loss %.4f  mask %.3f  lr %.5f",
                     step, num_steps, steps_per_s,
                     _format_seconds((num_steps - step) / max(steps_per_s, 1e-9)),
                     row["train/loss"], row.get("train/mask_rate", float("nan")),
                     row["train/lr"])
        pending, last_log_time, last_log_step = [], now, step

      if step % config.train.eval_every_steps == 0 or step == num_steps:
        eval_start = time.perf_counter()
        result = evaluation.evaluate(eval_fn, state, eval_batches, mesh)
        result["eval/seconds"] = time.perf_counter() - eval_start
        logger.write(step, result)
        logging.info("step %d  eval/acc %.4f  eval/acc_ema %.4f  (%.1f s)", step,
                     result["eval/acc"], result["eval/acc_ema"], result["eval/seconds"])
        last_log_time += result["eval/seconds"]  # Keep evaluation out of the steps/s figure.
        if rate_board is not None:
          ctaugment_rates.append_log(workdir, step, rate_board)

      if (step % config.train.checkpoint_every_steps == 0 or step == num_steps
          or preemption.requested):
        # One host sync per checkpoint, so that no checkpoint ever holds NaN/Inf weights.
        if not bool(_all_finite(state.params)):
          raise _non_finite("parameters", last_checked_step + 1, step, checkpointer)
        last_checked_step = step
        checkpointer.save(step, state, wait=step == num_steps or preemption.requested,
                          config=config_json, pending_metrics=jax.device_get(pending))
      if preemption.requested:
        logging.warning("Stopped at step %d after SIGTERM; re-run the command to resume.", step)
        break

  if rate_board is not None:
    rate_board.close()
  checkpointer.close()
  logger.flush()
  logger.close()
  summary_path = os.path.join(workdir, SUMMARY_FILE)
  if start_step >= num_steps and os.path.exists(summary_path):
    # Re-launched after it finished: nothing was trained, and the summary written at the
    # end keeps the run's real wall time (this call's would be seconds).
    logging.info("The run had already finished; %s kept.", summary_path)
    return state
  summary = metrics.summarize(metrics.read(workdir), config.train.summary_last_n)
  # Wall time of this invocation (set-up, compilation, training, evaluation); a resumed
  # run counts only its own part.
  summary["wall_seconds"] = round(time.perf_counter() - started, 1)
  summary["resumed_from_step"] = start_step
  if len(summary) > 2 and jax.process_index() == 0 and step == num_steps:
    with open(summary_path, "w") as f:
      json.dump(summary, f, indent=2)
    logging.info("Summary (median of the last %d EMA evaluations = the paper's number): %s",
                 config.train.summary_last_n, summary)
  return state
