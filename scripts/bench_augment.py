"""Throughput of FixMatch's strong augmentation (RandAugment + Cutout) in tf.data vs PIL.

Runs, in one process and on the same 256 random 32x32x3 images as the PIL peer:

- batch_first: each tf.data element is a whole batch: gather the images, draw the batch's
  RandAugment choices from one seed, apply them grouped by op (`randaugment.apply`);
  parallel map over batches. The fastest layout.
- batch_first_weak_strong: the same, plus the weak flip/crop under the strong view
  (`augment.weak_augment_batch`), i.e. a complete strong view as FixMatch builds it.
- per_example_params: choices drawn per example (per-example map, as in pipeline.py), then
  `.batch()` and the grouped apply.
- per_image: `randaugment.rand_augment` per example (tf.switch_case per op), then `.batch()`.

and the PIL peer (`pil_randaugment.py`, one process, as the PyTorch ports run it per data-loader
worker) as a subprocess, before and after ours; the faster of its two runs is reported.

  python scripts/bench_augment.py                      # all modes, ~1 minute
  python scripts/bench_augment.py --modes batch_first --seconds 5 --no-peer
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fixmatch_jax.data import augment, randaugment  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PEER = os.path.join(REPO, "..", "shared", "peers", "pil_randaugment.py")
MODES = ("batch_first", "batch_first_weak_strong", "per_example_params", "per_image")


def make_dataset(mode: str, pool: tf.Tensor, batch_size: int) -> tf.data.Dataset:
  """An endless dataset of strongly augmented uint8 batches [batch_size, H, W, C]."""
  shape = tuple(pool.shape[1:])
  num = pool.shape[0]
  autotune = tf.data.AUTOTUNE

  def batch_seed(step):
    return tf.stack([step, tf.constant(7, tf.int64)])

  def whole_batch(step, weak):
    images = tf.gather(pool, (step * batch_size + tf.range(batch_size, dtype=tf.int64)) % num)
    if weak:
      images = augment.weak_augment_batch(images, batch_seed(step), flip=True, pad=4)
    params = randaugment.sample_params(batch_seed(step), shape, batch_size=batch_size)
    return randaugment.apply(images, params)

  def example(index):
    return tf.gather(pool, index % num), batch_seed(index)

  if mode.startswith("batch_first"):
    weak = mode.endswith("weak_strong")
    return tf.data.Dataset.counter().map(lambda step: whole_batch(step, weak),
                                         num_parallel_calls=autotune)
  examples = tf.data.Dataset.counter().map(example, num_parallel_calls=autotune)
  if mode == "per_example_params":
    examples = examples.map(
        lambda image, seed: (image, randaugment.sample_params(seed, shape)),
        num_parallel_calls=autotune)
    return examples.batch(batch_size).map(randaugment.apply, num_parallel_calls=autotune)
  if mode == "per_image":
    return examples.map(randaugment.rand_augment, num_parallel_calls=autotune).batch(batch_size)
  raise ValueError(f"unknown mode {mode!r}")


def measure(dataset: tf.data.Dataset, seconds: float) -> dict:
  """Images per second (wall) and CPU microseconds per image, after a warm-up."""
  iterator = iter(dataset.prefetch(2))
  for _ in range(3):  # Tracing, graph optimisation, autotuning.
    next(iterator)
  images, start, cpu = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - start < seconds:
    images += int(next(iterator).shape[0])
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu
  return {"images": images, "images_per_s": round(images / wall, 1),
          "cpu_us_per_image": round(cpu / images * 1e6, 2)}


def run_peer(peer: str, images: int, size: int) -> dict:
  out = subprocess.run([sys.executable, peer, "--images", str(images), "--size", str(size)],
                       check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of "
                      + ", ".join(MODES))
  parser.add_argument("--batch-size", type=int, default=448, help="mu * B of FixMatch: 448")
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--seconds", type=float, default=10.0, help="measured time per mode")
  parser.add_argument("--peer", default=DEFAULT_PEER, help="path of pil_randaugment.py")
  parser.add_argument("--peer-images", type=int, default=20000)
  parser.add_argument("--no-peer", action="store_true")
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  pool = tf.constant(rng.integers(0, 256, (256, args.size, args.size, 3), dtype=np.uint8))
  results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                         "tensorflow": tf.__version__, "batch_size": args.batch_size,
                         "size": args.size},
             "load_average_before": round(os.getloadavg()[0], 2)}
  peer_runs = []
  if not args.no_peer:
    peer_runs.append(run_peer(args.peer, args.peer_images, args.size))
  for mode in args.modes.split(","):
    results[mode] = measure(make_dataset(mode, pool, args.batch_size), args.seconds)
  if not args.no_peer:
    peer_runs.append(run_peer(args.peer, args.peer_images, args.size))
    results["pil_peer"] = max(peer_runs, key=lambda r: r["images_per_s"])
    results["pil_peer_runs"] = [r["images_per_s"] for r in peer_runs]
  results["load_average_after"] = round(os.getloadavg()[0], 2)

  peer_rate = results.get("pil_peer", {}).get("images_per_s")
  print(f"{'mode':28s} {'images/s':>10s} {'CPU us/img':>11s} {'x PIL peer':>11s}")
  for mode in args.modes.split(","):
    rate = results[mode]["images_per_s"]
    ratio = f"{rate / peer_rate:10.1f}x" if peer_rate else "-"
    print(f"{mode:28s} {rate:10.0f} {results[mode]['cpu_us_per_image']:11.1f} {ratio:>11s}")
  if peer_rate:
    print(f"{'pil_peer (1 process)':28s} {peer_rate:10.0f} {1e6 / peer_rate:11.1f} {1.0:10.1f}x")
  print(json.dumps(results))


if __name__ == "__main__":
  main()
