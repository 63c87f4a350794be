r"""Benchmark: one FixMatch WRN-28-2 train step, ours (JAX) vs the PyTorch peer, same run.

  python scripts/bench_step.py --batches 8,64 --steps 4

For each labelled batch size B (mu = 7, so B + 2*7*B images of 32x32x3 per step) it
times, each in a fresh subprocess so device settings cannot leak between them:
  - ours with one XLA device per core (the CPU default of fixmatch_jax.main),
  - ours with a single XLA device (JAX's own default),
  - the peer `../shared/peers/torch_fixmatch_step.py`, with and without --channels-last.
Ours runs with the allocator fixmatch_jax.main picks (`--malloc auto`: tcmalloc when
installed, else glibc with its arenas capped at 2, `--arenas`); `--malloc auto,glibc`
adds the glibc rows for comparison, `--peer-malloc glibc,tcmalloc` runs the peer under
both allocators (it runs as shipped, glibc, by default); `--repeats N` runs every
configuration, the peer's included, in N fresh processes and reports the median peak RSS.
The step is the real `steps.train_step` (one forward/backward over
concat[labelled, weak, strong], thresholded pseudo-label loss, SGD-Nesterov with L2
on kernels, EMA), fed random uint8 images already on the device. Prints a table and
one JSON line per measurement (median step time over `--steps` steps after a warm-up
step that includes compilation; peak RSS of the process, read before anything else is
compiled).
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
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# No JAX import at module level: the workers set XLA_FLAGS first.
from fixmatch_jax.main import (  # noqa: E402
    EIGEN_CONVOLUTIONS_FLAG,
    MALLOC_ENV,
    cpu_xla_flags,
    process_environment,
    recipe_cpu_convolutions,
    xla_has_eigen_convolutions_flag,
)

DEFAULT_PEER = os.path.join(REPO, "..", "shared", "peers", "torch_fixmatch_step.py")


def build_step(batch: int, mu: int, image_size: int, conv_bias: bool,
               dtype: str | None = None, matmul_wgrad_min_images: int | None = None,
               cpu_convolutions: str | None = None) -> tuple:
  """(jitted step, replicated state, device batch) of FixMatch WRN-28-2 on random images.

  `cpu_convolutions`: config.train.cpu_convolutions (None: the recipe's); the caller has
  set the matching XLA flags (`fixmatch_jax.main.cpu_xla_flags`) before JAX started.
  """
  import jax
  import numpy as np

  from fixmatch_jax import algorithms, configs, models, optim, train_state
  from fixmatch_jax import steps as steps_lib
  from fixmatch_jax.main import recipe_cpu_convolutions

  if cpu_convolutions is None:
    cpu_convolutions = recipe_cpu_convolutions()

  config = configs.base_config()
  config.data.batch_size, config.data.mu = batch, mu
  config.model.conv_bias = conv_bias
  if matmul_wgrad_min_images is not None:  # None: the recipe's (configs.base_config).
    config.model.matmul_wgrad_min_images = matmul_wgrad_min_images
  if dtype:
    config.model.dtype = dtype
  config.train.cpu_convolutions = cpu_convolutions
  model = models.create(config.model, 10, cpu_convolutions)
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
  return step_fn, state, device_batch


def uses_matmul_wgrad(requested: int | None, images: int) -> bool:
  """Whether the step's 3x3 weight gradients are matrix products (models/conv.py), for
  `images` per step and a `matmul_wgrad_min_images` of `requested` (None: the recipe's)."""
  import jax  # noqa: PLC0415

  from fixmatch_jax import configs  # noqa: PLC0415
  from fixmatch_jax.models import conv  # noqa: PLC0415
  threshold = (configs.base_config().model.matmul_wgrad_min_images if requested is None
               else requested)
  return jax.default_backend() == "cpu" and conv.takes_matmul_path(images, threshold)


def _rss_peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(batch: int, mu: int, steps: int, image_size: int, conv_bias: bool,
             dtype: str | None = None, matmul_wgrad_min_images: int | None = None,
             cpu_convolutions: str | None = None) -> dict:
  """Times our jitted train step in this process (XLA_FLAGS already set by the parent).

  Memory, three ways: the process's peak RSS (what the peer reports too), the peak RSS
  after the imports alone (so `step_mb` = peak - imports is the step's own share,
  compilation included), and XLA's buffer assignment for the compiled step (arguments,
  outputs and temporaries: what the step needs, independent of the allocator).
  """
  import jax

  from fixmatch_jax import algorithms, models, optim, train_state  # noqa: F401

  imports_mb = _rss_peak_mb()
  step_fn, state, device_batch = build_step(batch, mu, image_size, conv_bias, dtype,
                                            matmul_wgrad_min_images, cpu_convolutions)
  times = []
  for _ in range(steps + 1):
    start = time.perf_counter()
    state, metrics = step_fn(state, device_batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  median = statistics.median(times[1:])
  peak = _rss_peak_mb()
  # After the peak is read: compiling (or loading) a second copy of the step for its buffer
  # assignment adds memory a training run never uses.
  analysis = step_fn.lower(state, device_batch).compile().memory_analysis()
  return {
      "impl": "jax", "devices": len(jax.devices()), "batch": batch, "mu": mu,
      "conv_bias": conv_bias, "dtype": dtype or "float32",
      "matmul_wgrad": uses_matmul_wgrad(matmul_wgrad_min_images, batch * (1 + 2 * mu)),
      "first_step_s": round(times[0], 4),
      "median_step_s": round(median, 4),
      "images_per_s": round((batch + 2 * mu * batch) / median, 1),
      "peak_rss_mb": round(peak, 1), "imports_rss_mb": round(imports_mb, 1),
      "step_rss_mb": round(peak - imports_mb, 1),
      # Per device (every device holds its shard of the batch and a copy of the state).
      "xla_temp_mb_per_device": round(analysis.temp_size_in_bytes / 2**20, 1),
      "xla_total_mb_per_device": round(
          (analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
           + analysis.output_size_in_bytes - analysis.alias_size_in_bytes) / 2**20, 1),
  }


def torch_imports_rss_mb() -> float:
  """Peak RSS of a Python process that only imports torch (the peer's baseline)."""
  code = ("import resource, torch, torch.nn.functional; "
          "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  return float(out.stdout.strip())


def subprocess_json(cmd: list[str], env: dict[str, str]) -> dict:
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  if out.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def repeated(cmd: list[str], env: dict[str, str], repeats: int) -> dict:
  """Runs `cmd` `repeats` times, each a fresh process; the row of the median step time,
  with the peak RSS replaced by the median over the processes (and its range kept)."""
  rows = [subprocess_json(cmd, env) for _ in range(repeats)]
  peaks = [r["peak_rss_mb"] for r in rows]
  row = dict(sorted(rows, key=lambda r: r["median_step_s"])[(repeats - 1) // 2])
  row["peak_rss_mb"] = round(statistics.median(peaks), 1)
  row["peak_rss_mb_runs"] = peaks
  row["repeats"] = repeats
  return row


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="8,64")
  parser.add_argument("--mu", type=int, default=7)
  parser.add_argument("--steps", type=int, default=4)
  parser.add_argument("--image-size", type=int, default=32)
  parser.add_argument("--peer", default=DEFAULT_PEER)
  parser.add_argument("--conv-bias", action="store_true",
                      help="Our WRN with the TF code's conv biases (the peer has none).")
  parser.add_argument("--warm-cache", action="store_true",
                      help="Also measure ours on a warm persistent compilation cache (what "
                           "fixmatch_jax.main uses by default): one run fills a fresh cache, "
                           "a second, measured, run loads the compiled step from it.")
  parser.add_argument("--devices", default=None,
                      help="XLA device counts for ours, e.g. '2' (default: cores and 1).")
  parser.add_argument("--no-peer", action="store_true", help="Skip the PyTorch peer.")
  parser.add_argument("--malloc", default="auto",
                      help="Allocators for ours, e.g. 'auto,glibc' (fixmatch_jax.main's "
                           "--malloc: auto = tcmalloc when installed, else glibc).")
  parser.add_argument("--peer-malloc", default="glibc",
                      help="Allocators for the peer, e.g. 'glibc,tcmalloc' (glibc: as shipped).")
  parser.add_argument("--cpu-weight-grad", default="default",
                      help="Our 3x3 weight gradients as matrix products on CPU "
                           "(models/conv.py, config.model.matmul_wgrad_min_images): 'default' "
                           "(the recipe's: never since 2026-12-06), 'on' (always), "
                           "'off' (never), or e.g. 'on,off' for both.")
  parser.add_argument("--cpu-convs", default="default",
                      help="Which library runs our convolutions on CPU "
                           "(config.train.cpu_convolutions): 'default' (the recipe's, "
                           "configs.base_config), 'onednn' (models/onednn.py), 'eigen', "
                           "'xla' (XLA's choice: YNNPACK in jaxlib 0.10), or e.g. "
                           "'onednn,eigen' for both.")
  parser.add_argument("--arenas", default="2",
                      help="glibc malloc arena caps for ours under glibc, e.g. '2,0' (2: the "
                           "default of fixmatch_jax.main's --malloc_arena_max; 0: glibc's "
                           "own default).")
  parser.add_argument("--repeats", type=int, default=1,
                      help="Fresh processes per configuration (ours and the peer alike); the "
                           "table gives the median peak RSS and the run of median step time. "
                           "A process's peak RSS varies by ~10%% from run to run.")
  parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args.worker:
    from fixmatch_jax.main import limit_malloc_arenas  # noqa: PLC0415
    arenas = int(os.environ.get("BENCH_STEP_ARENAS", "0"))
    limit_malloc_arenas(arenas)  # First: before JAX starts its threads.
    cache = os.environ.get("BENCH_STEP_CACHE")
    if cache:  # Before anything is compiled; as fixmatch_jax.main does.
      from fixmatch_jax.main import use_compilation_cache  # noqa: PLC0415
      use_compilation_cache(cache)
    row = run_ours(args.worker, args.mu, args.steps, args.image_size, args.conv_bias,
                   matmul_wgrad_min_images={"on": 0, "off": -1}.get(
                       os.environ.get("BENCH_STEP_WGRAD", "default")),
                   cpu_convolutions=os.environ.get("BENCH_STEP_CONVS"))
    row["compilation_cache"] = "warm" if cache and os.environ.get("BENCH_STEP_WARM") else "none"
    row["malloc"] = os.environ.get(MALLOC_ENV, "glibc")
    row["cpu_convolutions"] = os.environ.get("BENCH_STEP_CONVS", "xla")
    row["malloc_arena_max"] = arenas if row["malloc"] == "glibc" else None
    print(json.dumps(row))
    return

  cores = os.cpu_count() or 1
  load_before = os.getloadavg()[0]
  rows = []
  torch_imports_mb = torch_imports_rss_mb()
  for batch in (int(b) for b in args.batches.split(",")):
    device_counts = ([int(d) for d in args.devices.split(",")] if args.devices
                     else sorted({cores, 1}, reverse=True))
    variants = [(d, m, a, w, c) for d in device_counts for m in args.malloc.split(",")
                for a in (int(a) for a in args.arenas.split(","))
                for w in args.cpu_weight_grad.split(",") for c in args.cpu_convs.split(",")]
    for devices, malloc, arenas, wgrad, convs in variants:
      convs = recipe_cpu_convolutions() if convs == "default" else convs
      if convs != "xla" and not xla_has_eigen_convolutions_flag():
        raise SystemExit(f"This jaxlib lacks {EIGEN_CONVOLUTIONS_FLAG}; use --cpu-convs xla.")
      env = dict(process_environment(malloc), XLA_FLAGS=cpu_xla_flags(devices, convs),
                 JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO,
                 BENCH_STEP_ARENAS=str(arenas), BENCH_STEP_WGRAD=wgrad,
                 BENCH_STEP_CONVS=convs)
      if env[MALLOC_ENV] != "glibc" and arenas != int(args.arenas.split(",")[0]):
        continue  # Arena caps are a glibc setting.
      cmd = [sys.executable, __file__, f"--worker={batch}", f"--mu={args.mu}",
             f"--steps={args.steps}", f"--image-size={args.image_size}"]
      cmd += ["--conv-bias"] if args.conv_bias else []
      rows.append(repeated(cmd, env, args.repeats))
      if args.warm_cache:
        with tempfile.TemporaryDirectory() as cache:
          subprocess_json(cmd, dict(env, BENCH_STEP_CACHE=cache))  # Fills the cache.
          rows.append(repeated(cmd, dict(env, BENCH_STEP_CACHE=cache, BENCH_STEP_WARM="1"),
                               args.repeats))
    peer_variants = [(c, m) for m in args.peer_malloc.split(",") for c in (False, True)]
    for channels_last, malloc in ([] if args.no_peer else peer_variants):
      cmd = [sys.executable, args.peer, f"--batch={batch}", f"--mu={args.mu}",
             f"--steps={args.steps}", f"--image-size={args.image_size}"]
      peer_env = process_environment(malloc)
      row = repeated(cmd + (["--channels-last"] if channels_last else []), peer_env,
                     args.repeats)
      row["malloc"] = peer_env[MALLOC_ENV]
      row["imports_rss_mb"] = torch_imports_mb
      row["step_rss_mb"] = round(row["peak_rss_mb"] - torch_imports_mb, 1)
      rows.append(row)

  print(f"\nmachine: {platform.processor() or platform.machine()}, {cores} cores; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
  print("| implementation | B | images/step | median step (s) | images/s | peak RSS (MB) | "
        "RSS after imports (MB) | step's share = peak - imports (MB) | "
        "XLA buffers per device (MB) |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  for row in rows:
    warm = ", warm compilation cache" if row.get("compilation_cache") == "warm" else ""
    malloc = row.get("malloc", "glibc")
    arenas = row.get("malloc_arena_max")
    alloc = (", tcmalloc" if "tcmalloc" in malloc else
             f", glibc malloc (arenas <= {arenas})" if arenas else ", glibc malloc")
    if row.get("impl") == "jax":
      wgrad = (", weight gradients as matrix products" if row.get("matmul_wgrad")
               else "" if row.get("cpu_convolutions") == "onednn"
               else ", XLA's weight gradients")
      convs = {"eigen": ", Eigen convolutions", "onednn": ", oneDNN convolutions"}.get(
          row.get("cpu_convolutions"), ", XLA's convolutions (YNNPACK)")
      name = f"ours, {row['devices']} XLA device(s){alloc}{convs}{wgrad}{warm}"
    else:
      name = (f"torch {row['torch']}" + (", channels_last" if row["channels_last"] else "")
              + alloc)
    images = row["batch"] * (1 + 2 * row["mu"])
    xla = row.get("xla_total_mb_per_device")
    print(f"| {name} | {row['batch']} | {images} | {row['median_step_s']:.3f} | "
          f"{row['images_per_s']:.1f} | {row['peak_rss_mb']:.0f} | {row['imports_rss_mb']:.0f} | "
          f"{row['step_rss_mb']:.0f} | {'-' if xla is None else f'{xla:.0f}'} |")
  for row in rows:
    print(json.dumps(row))


if __name__ == "__main__":
  main()
