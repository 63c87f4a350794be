r"""Benchmark: training throughput with the real input pipeline vs the step alone, same run.

  python scripts/bench_pipeline_overhead.py \
      --config=experiments/fashion_mnist.py:algorithm=fixmatch,labels=40 --windows 3 --steps 15

Builds what `train.train_and_evaluate` builds for the experiment (data source, labelled
split, model, optimizer, the jitted shared step on the CPU-default device mesh, and the
real `pipeline.train_stream` with the algorithm's views), then alternates timing windows
in one process, so machine load hits both alike (A B B A A B ...):

- step alone ("the peer"): `--steps` steps on one batch already on the device;
- end to end: `--steps` iterations of the training loop's own body, i.e. next(train_iter)
  (tf.data: gathers, weak and strong augmentation, prefetch), `steps.shard_batch` and the
  step; the pipeline's threads compete with the step for the same cores, as in training.

Both modes keep at most a few steps queued (`steps.DispatchWindow`), as training does.

Also times the pipeline alone (batches/s it can make with the step idle). The input
pipeline's cost is (end-to-end time per step) / (step-alone time per step) - 1, in wall
time and in this process's CPU time (all threads; the load-robust view on a shared
machine); the target is under 10%. Per-window rates, medians and the load average are
printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from fixmatch_jax import main as main_lib  # noqa: E402  (imports no JAX)


def load_config(spec: str, overrides: list[str]):
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("experiment", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  for item in overrides:  # "data.batch_size=16": converted to the existing value's type.
    key, value = item.split("=", 1)
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    old = node[leaf]
    node[leaf] = (value if old is None else value.lower() in ("1", "true")
                  if isinstance(old, bool) else type(old)(value))
  return config


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="experiments/fashion_mnist.py:algorithm=fixmatch")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="Override a config field, e.g. --set data.batch_size=64.")
  parser.add_argument("--windows", type=int, default=3, help="Windows per mode.")
  parser.add_argument("--steps", type=int, default=15, help="Steps per window.")
  parser.add_argument("--malloc", default="auto", choices=("auto", "tcmalloc", "glibc"),
                      help="Allocator, as fixmatch_jax.main's --malloc (restarts the script "
                           "once with tcmalloc preloaded when it applies).")
  args = parser.parse_args()
  main_lib.restart_with_allocator(args.malloc)

  config = load_config(args.config, args.set)
  main_lib.set_cpu_xla_flags(config)  # As fixmatch_jax.main: devices, convolution library.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import jax  # noqa: PLC0415 - after XLA_FLAGS.
  import tensorflow as tf  # noqa: PLC0415

  from fixmatch_jax import algorithms, models, optim, steps, train, train_state  # noqa: PLC0415
  from fixmatch_jax.data import pipeline, splits  # noqa: PLC0415

  tf.config.set_visible_devices([], "GPU")
  algorithm = algorithms.get(config.algorithm)
  train_source, _ = train.load_sources(config.data)
  with tempfile.TemporaryDirectory() as workdir:
    split = splits.load_or_create(workdir, config.data, train_source, config.seed)
  model = models.create(config.model, train_source.num_classes,
                        config.train.cpu_convolutions)
  tx = optim.create_optimizer(config.optim)
  lr_fn = optim.learning_rate_schedule(config.optim)
  mesh = steps.make_mesh()
  state = train_state.create(
      model, tx, algorithm, jax.random.PRNGKey(config.seed), train_source.images.shape[1:],
      config, num_unlabelled=len(train_source.labels))
  state = steps.replicate(mesh, state)
  train_fn = steps.make_train_step(model, algorithm, tx, lr_fn, config, mesh)
  train_iter = pipeline.train_stream(config.data, train_source, split, views=algorithm.views,
                                     seed=config.seed, start_step=0)
  fixed_batch = steps.shard_batch(mesh, next(train_iter))
  state, metrics = train_fn(state, fixed_batch)  # Compilation.
  jax.block_until_ready((state, metrics))

  def window(mode: str) -> float:
    nonlocal state
    if mode == "pipeline_alone":
      # tf.data keeps filling its buffers while the step runs alone, so the first batches
      # come for free: drain as many as the window takes, then time the steady state.
      for _ in range(args.steps):
        jax.block_until_ready(next(train_iter))
    start, cpu_start = time.perf_counter(), time.process_time()
    in_flight = steps.DispatchWindow()  # As the training loop: a bounded queue of steps.
    for _ in range(args.steps):
      if mode == "pipeline_alone":
        jax.block_until_ready(next(train_iter))
        continue
      batch = fixed_batch if mode == "step_alone" else steps.shard_batch(mesh, next(train_iter))
      state, step_metrics = train_fn(state, batch)
      in_flight.push(step_metrics)
    jax.block_until_ready(state)
    cpu[mode].append((time.process_time() - cpu_start) / args.steps)
    return (time.perf_counter() - start) / args.steps

  cpu: dict[str, list[float]] = {"step_alone": [], "end_to_end": [], "pipeline_alone": []}
  window("end_to_end")  # Warm the pipeline's threads and prefetch buffer.
  cpu["end_to_end"].clear()
  load_before = os.getloadavg()[0]
  times: dict[str, list[float]] = {"step_alone": [], "end_to_end": [], "pipeline_alone": []}
  order = ["step_alone", "end_to_end", "end_to_end", "step_alone"]
  for i in range(args.windows):
    for mode in order if i % 2 == 0 else order[::-1]:
      if len(times[mode]) < args.windows:
        times[mode].append(window(mode))
    times["pipeline_alone"].append(window("pipeline_alone"))
    print(f"windows {i + 1}/{args.windows}: " + ", ".join(
        f"{m} {t[-1]:.3f} s/step" for m, t in times.items()), file=sys.stderr, flush=True)
  load_after = os.getloadavg()[0]

  step_alone = statistics.median(times["step_alone"])
  end_to_end = statistics.median(times["end_to_end"])
  pipeline_alone = statistics.median(times["pipeline_alone"])
  images = config.data.batch_size * (1 + 2 * config.data.mu)
  print(f"\n{args.config} {' '.join(args.set)}: {config.data.dataset}, {config.model.name}, "
        f"B = {config.data.batch_size}, mu = {config.data.mu}, {len(jax.devices())} XLA devices, "
        f"{os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load "
        f"average {load_before:.2f} before, {load_after:.2f} after; {args.windows} windows x "
        f"{args.steps} steps per mode, interleaved")
  print("| mode | median s/step | steps/s | images/s | CPU s/step (all threads) | "
        "windows (s/step) |")
  print("|---|---:|---:|---:|---:|---|")
  for mode, label in (("step_alone", "step alone, in-memory batch (peer)"),
                      ("end_to_end", "end to end: real input pipeline + step"),
                      ("pipeline_alone", "input pipeline alone (no step)")):
    median = statistics.median(times[mode])
    print(f"| {label} | {median:.3f} | {1 / median:.2f} | {images / median:.0f} | "
          f"{statistics.median(cpu[mode]):.3f} | " + ", ".join(f"{t:.3f}" for t in times[mode])
          + " |")
  overhead = end_to_end / step_alone - 1
  cpu_overhead = statistics.median(cpu["end_to_end"]) / statistics.median(cpu["step_alone"]) - 1
  print(f"\ninput pipeline cost: {100 * overhead:+.1f}% of the step's wall time, "
        f"{100 * cpu_overhead:+.1f}% of its CPU time (target < 10%: wall "
        f"{'met' if overhead < 0.10 else 'NOT met'}, CPU "
        f"{'met' if cpu_overhead < 0.10 else 'NOT met'}); the pipeline alone makes "
        f"{step_alone / pipeline_alone:.1f}x the batches the step consumes")
  print(json.dumps({"config": args.config, "set": args.set, "times": times, "cpu": cpu,
                    "overhead": overhead, "cpu_overhead": cpu_overhead,
                    "load_before": load_before, "load_after": load_after}))


if __name__ == "__main__":
  main()
