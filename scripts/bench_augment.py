"""Throughput of FixMatch's strong augmentation (RandAugment + Cutout) in tf.data vs PIL.

Runs, in one process and on the same 256 random 32x32x3 images as the PIL peer:

- batch_first: each tf.data element is a whole batch: gather the images, draw the batch's
  RandAugment choices from one seed, apply them grouped by op (`randaugment.apply`);
  parallel map over batches. The fastest layout.
- batch_first_weak_strong: the same, plus the weak flip/crop under the strong view
  (`augment.weak_augment_batch`), i.e. a complete strong view as FixMatch builds it.
- per_example_params: choices drawn per example (a per-example map, as pipeline.py did before it
  went batch-first), then `.batch()` and the grouped apply.
- per_image: `randaugment.rand_augment` per example (tf.switch_case per op), then `.batch()`.
- pipeline: the real training input pipeline, `pipeline.train_stream` with views
  ("weak", "strong") on 4096 synthetic 32x32x3 images (10 classes, 250 labels), B = 64,
  mu = 7: per step 64 weak labelled + 448 weak + 448 strong unlabelled images, the gathers,
  the index shuffles and the NumPy conversion included. Its rate counts the 448 unlabelled
  strong images per step only, so it is comparable with the modes above (which make one view).
- cta_batch_first: CTAugment's strong view (2 ops from the rates' bins + Cutout, `ctaugment`)
  laid out as batch_first; cta_batch_first_weak_strong: plus the weak flip/crop under it.
- cta_pipeline: `pipeline.train_stream` as "pipeline" with CTAugment: the strong views read
  the rates from a `RateBoard` once per batch, and the labelled stream adds the probe views
  (64 per step, not counted). Each consumed batch publishes a version, as the train loop does.

Compare cta_* with the RandAugment modes of the same run (same process, same load).

and the PIL peer (`pil_randaugment.py`, one process, as the PyTorch ports run it per data-loader
worker) as a subprocess, before, between and after ours.

Other processes share this machine's 2 cores, so every rate is taken over several windows
(ours) or runs (the peer) and both the best and the median are reported; the ratio column uses
best vs best, and the JSON has the medians too.

  python scripts/bench_augment.py                      # all modes, ~1.5 minutes
  python scripts/bench_augment.py --modes batch_first --seconds 5 --no-peer
"""
import argparse
import atexit
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fixmatch_jax import configs  # noqa: E402
from fixmatch_jax.data import (  # noqa: E402
    augment,
    ctaugment,
    ctaugment_rates,
    pipeline,
    randaugment,
    sources,
    splits,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PEER = os.path.join(REPO, "..", "shared", "peers", "pil_randaugment.py")
MODES = ("batch_first", "batch_first_weak_strong", "per_example_params", "per_image",
         "pipeline", "cta_batch_first", "cta_batch_first_weak_strong", "cta_pipeline")


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

  def cta_batch(step, weak):
    images = tf.gather(pool, (step * batch_size + tf.range(batch_size, dtype=tf.int64)) % num)
    if weak:
      images = augment.weak_augment_batch(images, batch_seed(step), flip=True, pad=4)
    policy = ctaugment.sample_policy(batch_seed(step), shape, cta_rates, batch_size=batch_size)
    return ctaugment.apply(images, policy)

  if mode.startswith("cta_batch_first"):
    # Learned-looking rates (random in [0, 1]), so the threshold leaves a few bins per op.
    cta_rates = tf.constant(np.random.default_rng(0).random(
        ctaugment_rates.NUM_RATES).astype(np.float32))
    weak = mode.endswith("weak_strong")
    return tf.data.Dataset.counter().map(lambda step: cta_batch(step, weak),
                                         num_parallel_calls=autotune)
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


def train_stream(batch_size: int = 64, mu: int = 7, size: int = 32, cta: bool = False):
  """The real training stream (views weak + strong) over synthetic data, as NumPy batches.

  cta: CTAugment; a new version of the rates is published after each batch is consumed, as
  the train loop does (with a train step that takes no time).
  """
  config = configs.base_config()
  if cta:
    configs.use_ctaugment(config)
  config_data = config.data
  config_data.dataset, config_data.num_labels = "synthetic", 250
  config_data.batch_size, config_data.mu = batch_size, mu
  source = sources.load("synthetic", "train", num_examples=4096, image_size=size, channels=3,
                        num_classes=10)
  split = splits.make_split(config_data, source, seed=1)
  board = ctaugment_rates.RateBoard(config_data.strong.lag) if cta else None
  if board is not None:
    atexit.register(board.close)  # Release prefetching map calls still waiting at exit.
  stream = pipeline.train_stream(config_data, source, split, views=("weak", "strong"), seed=1,
                                 process_index=0, process_count=1, rate_board=board)
  if not cta:
    return stream

  def with_feedback():
    # Plays the train loop: after consuming the batch of step t, publish version t + 1.
    rng = np.random.default_rng(0)
    for step, batch in enumerate(stream):
      board.publish(step + 1, rng.random(ctaugment_rates.NUM_RATES).astype(np.float32))
      yield batch

  return with_feedback()


def measure(dataset, seconds: float, windows: int) -> dict:
  """Images per second (wall) and CPU microseconds per image in `windows` windows, after warm-up.

  `dataset`: a tf.data.Dataset of image batches, or a `pipeline.train_stream` iterator, of
  which the unlabelled strong images are counted.
  """
  if isinstance(dataset, tf.data.Dataset):
    iterator, count = iter(dataset.prefetch(2)), lambda batch: int(batch.shape[0])
  else:
    iterator, count = dataset, lambda batch: len(batch["unlabelled"]["strong"])
  for _ in range(3):  # Tracing, graph optimisation, autotuning.
    next(iterator)
  rates, cpus = [], []
  for _ in range(windows):
    images, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds / windows:
      images += count(next(iterator))
    rates.append(images / (time.perf_counter() - start))
    cpus.append((time.process_time() - cpu) / images * 1e6)
  best = int(np.argmax(rates))
  return {"images_per_s": round(rates[best], 1), "median_images_per_s": round(
      float(np.median(rates)), 1), "cpu_us_per_image": round(cpus[best], 2),
          "windows_images_per_s": [round(r) for r in rates]}


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
  parser.add_argument("--windows", type=int, default=4, help="measurement windows per mode")
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
  modes = args.modes.split(",")
  peer_runs = []
  for i, mode in enumerate(modes):
    if not args.no_peer and i in (0, len(modes) // 2):
      peer_runs.append(run_peer(args.peer, args.peer_images, args.size))
    if mode in ("pipeline", "cta_pipeline"):
      dataset = train_stream(size=args.size, cta=mode == "cta_pipeline")
    else:
      dataset = make_dataset(mode, pool, args.batch_size)
    results[mode] = measure(dataset, args.seconds, args.windows)
  if not args.no_peer:
    peer_runs.append(run_peer(args.peer, args.peer_images, args.size))
    results["pil_peer"] = max(peer_runs, key=lambda r: r["images_per_s"])
    results["pil_peer_runs"] = [r["images_per_s"] for r in peer_runs]
    results["pil_peer_median_images_per_s"] = float(np.median(results["pil_peer_runs"]))
  results["load_average_after"] = round(os.getloadavg()[0], 2)

  peer_rate = results.get("pil_peer", {}).get("images_per_s")
  peer_median = results.get("pil_peer_median_images_per_s")
  print(f"{'mode':26s} {'best img/s':>10s} {'median':>8s} {'CPU us/img':>10s} "
        f"{'x peer (best)':>13s} {'x peer (median)':>15s}")
  for mode in modes:
    rate, median = results[mode]["images_per_s"], results[mode]["median_images_per_s"]
    ratios = (f"{rate / peer_rate:12.1f}x {median / peer_median:14.1f}x" if peer_rate else "")
    print(f"{mode:26s} {rate:10.0f} {median:8.0f} {results[mode]['cpu_us_per_image']:10.1f} "
          f"{ratios}")
  if peer_rate:
    print(f"{'pil_peer (1 process)':26s} {peer_rate:10.0f} {peer_median:8.0f} "
          f"{1e6 / peer_rate:10.1f} {1.0:12.1f}x {1.0:14.1f}x")
  print(json.dumps(results))


if __name__ == "__main__":
  main()
