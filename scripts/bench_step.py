r"""Benchmark: one FixMatch WRN-28-2 train step, ours (JAX) vs the PyTorch peer, same run.

  python scripts/bench_step.py --batches 8,64 --steps 4

For each labelled batch size B (mu = 7, so B + 2*7*B images of 32x32x3 per step) it
times, each in a fresh subprocess so device settings cannot leak between them:
  - ours with one XLA device per core (the CPU default of fixmatch_jax.main),
  - ours with a single XLA device (JAX's own default),
  - the peer `../shared/peers/torch_fixmatch_step.py`, with and without --channels-last.
The step is the real `steps.train_step` (one forward/backward over
concat[labelled, weak, strong], thresholded pseudo-label loss, SGD-Nesterov with L2
on kernels, EMA), fed random uint8 images already on the device. Prints a table and
one JSON line per measurement (median step time over `--steps` steps after a warm-up
step that includes compilation; peak RSS of the process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PEER = os.path.join(REPO, "..", "shared", "peers", "torch_fixmatch_step.py")


def run_ours(batch: int, mu: int, steps: int, image_size: int, conv_bias: bool) -> dict:
  """Times our jitted train step in this process (XLA_FLAGS already set by the parent)."""
  import jax
  import numpy as np

  from fixmatch_jax import algorithms, configs, models, optim, train_state
  from fixmatch_jax import steps as steps_lib

  config = configs.base_config()
  config.data.batch_size, config.data.mu = batch, mu
  config.model.conv_bias = conv_bias
  model = models.create(config.model, 10)
  algorithm = algorithms.get("fixmatch")
  tx = optim.create_optimizer(config.optim)
  lr_fn = optim.learning_rate_schedule(config.optim)
  mesh = steps_lib.make_mesh()
  shape = (image_size, image_size, 3)
  state = train_state.create(model, tx, algorithm, jax.random.key(0), shape, config)
  state = steps_lib.replicate(mesh, state)
  rng = np.random.default_rng(0)
  host_batch = {
      "labelled": {"image": rng.integers(0, 256, (batch, *shape), np.uint8),
                   "label": rng.integers(0, 10, (batch,), np.int32)},
      "unlabelled": {"weak": rng.integers(0, 256, (mu * batch, *shape), np.uint8),
                     "strong": rng.integers(0, 256, (mu * batch, *shape), np.uint8),
                     "index": np.arange(mu * batch, dtype=np.int32),
                     "label": rng.integers(0, 10, (mu * batch,), np.int32)}}
  device_batch = steps_lib.shard_batch(mesh, host_batch)
  step_fn = steps_lib.make_train_step(model, algorithm, tx, lr_fn, config, mesh)
  times = []
  for _ in range(steps + 1):
    start = time.perf_counter()
    state, metrics = step_fn(state, device_batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  median = statistics.median(times[1:])
  return {
      "impl": "jax", "devices": len(jax.devices()), "batch": batch, "mu": mu,
      "conv_bias": conv_bias, "first_step_s": round(times[0], 4),
      "median_step_s": round(median, 4),
      "images_per_s": round((batch + 2 * mu * batch) / median, 1),
      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
  }


def subprocess_json(cmd: list[str], env: dict[str, str]) -> dict:
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  if out.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="8,64")
  parser.add_argument("--mu", type=int, default=7)
  parser.add_argument("--steps", type=int, default=4)
  parser.add_argument("--image-size", type=int, default=32)
  parser.add_argument("--peer", default=DEFAULT_PEER)
  parser.add_argument("--conv-bias", action="store_true",
                      help="Our WRN with the TF code's conv biases (the peer has none).")
  parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args.worker:
    print(json.dumps(run_ours(args.worker, args.mu, args.steps, args.image_size, args.conv_bias)))
    return

  cores = os.cpu_count() or 1
  rows = []
  for batch in (int(b) for b in args.batches.split(",")):
    for devices in sorted({cores, 1}, reverse=True):
      env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                 JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
      cmd = [sys.executable, __file__, f"--worker={batch}", f"--mu={args.mu}",
             f"--steps={args.steps}", f"--image-size={args.image_size}"]
      rows.append(subprocess_json(cmd + (["--conv-bias"] if args.conv_bias else []), env))
    for channels_last in (False, True):
      cmd = [sys.executable, args.peer, f"--batch={batch}", f"--mu={args.mu}",
             f"--steps={args.steps}", f"--image-size={args.image_size}"]
      rows.append(subprocess_json(cmd + (["--channels-last"] if channels_last else []),
                                  dict(os.environ)))

  print(f"\nmachine: {platform.processor() or platform.machine()}, {cores} cores; "
        f"date: {time.strftime('%Y-%m-%d')}")
  print(f"{'impl':<28}{'B':>4}{'images':>8}{'median step s':>15}{'images/s':>10}"
        f"{'peak RSS MB':>13}")
  for row in rows:
    name = (f"jax, {row['devices']} XLA device(s)" if row.get("impl") == "jax" else
            f"torch {row['torch']}" + (", channels_last" if row["channels_last"] else ""))
    images = row["batch"] * (1 + 2 * row["mu"])
    print(f"{name:<28}{row['batch']:>4}{images:>8}{row['median_step_s']:>15.3f}"
          f"{row['images_per_s']:>10.1f}{row['peak_rss_mb']:>13.0f}")
  for row in rows:
    print(json.dumps(row))


if __name__ == "__main__":
  main()
