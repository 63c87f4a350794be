r"""Benchmark: the WRN-28-2 3x3 convolutions one by one, XLA:CPU vs PyTorch, on one core.

  python scripts/bench_conv.py --images 60     # the B = 8 step's share of one device
  python scripts/bench_conv.py --images 480    # the B = 64 step's

For the three widths of WRN-28-2 (32x32x32, 16x16x64, 8x8x128; stride 1, SAME) it times
the forward convolution, the input gradient and the weight gradient: XLA's (through
jax.vjp; with XLA's own choice of kernels, YNNPACK in jaxlib 0.10, and with Eigen's, as
`config.train.cpu_convolutions="eigen"` sets), oneDNN's as our custom calls
(`models/onednn.py`, `config.train.cpu_convolutions="onednn"`, the recipes' CPU default),
our matrix-product weight gradient (`models/conv.py`, the models'
`matmul_wgrad_min_images` option), and PyTorch's
channels_last kernels (oneDNN; torch's `convolution_backward` with one output mask at a
time). Each side runs in its own process pinned to CPU 0 with one thread, so the numbers
are kernel against kernel; JAX runs with the allocator fixmatch_jax.main would pick
(tcmalloc when installed). Median of `--repeats` calls after a warm-up, in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "scripts")]

# No JAX import at module level.
import bench_step  # noqa: E402

from fixmatch_jax.main import (  # noqa: E402
    MALLOC_ENV,
    allocator_environment,
    cpu_xla_flags,
    process_environment,
    xla_has_eigen_convolutions_flag,
)

LAYERS = ((32, 32), (16, 64), (8, 128))  # (height = width, channels)


def _median_ms(fn, repeats: int) -> float:
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return round(sorted(times)[len(times) // 2] * 1e3, 2)


def jax_worker(images: int, repeats: int) -> dict:
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  from jax import lax  # noqa: PLC0415

  from fixmatch_jax.models import conv, onednn  # noqa: PLC0415

  dims = ("NHWC", "HWIO", "NHWC")
  # oneDNN: the unused gradient's custom call is dropped from the jitted function.
  conv_fn = (onednn.conv_general_dilated if os.environ.get("BENCH_CONV_KERNELS") == "onednn"
             else lax.conv_general_dilated)
  forward = lambda x, w: conv_fn(x, w, (1, 1), "SAME", dimension_numbers=dims)
  fns = {
      "forward": jax.jit(forward),
      "input grad": jax.jit(lambda x, w, g: jax.vjp(lambda x: forward(x, w), x)[1](g)[0]),
      "weight grad": jax.jit(lambda x, w, g: jax.vjp(lambda w: forward(x, w), w)[1](g)[0]),
  }
  if conv_fn is lax.conv_general_dilated:
    fns["weight grad, matrix products"] = jax.jit(
        lambda x, w, g: conv.weight_grad_by_rows(x, g))
  rng = np.random.default_rng(0)
  out = {}
  for size, channels in LAYERS:
    x = jax.numpy.asarray(rng.standard_normal((images, size, size, channels), np.float32))
    w = jax.numpy.asarray(rng.standard_normal((3, 3, channels, channels), np.float32) * 0.1)
    g = forward(x, w)
    for name, fn in fns.items():
      args = (x, w) if name == "forward" else (x, w, g)
      out[f"{size}x{size}x{channels} {name}"] = _median_ms(
          lambda fn=fn, args=args: jax.block_until_ready(fn(*args)), repeats)
  return out


def torch_worker(images: int, repeats: int) -> dict:
  import torch  # noqa: PLC0415

  torch.set_num_threads(1)
  torch.manual_seed(0)
  out = {}
  for size, channels in LAYERS:
    x = torch.randn(images, channels, size, size).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(channels, channels, 3, 3) * 0.1).contiguous(
        memory_format=torch.channels_last)
    g = torch.nn.functional.conv2d(x, w, padding=1)
    backward = lambda mask, g=g, x=x, w=w: torch.ops.aten.convolution_backward(
        g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)
    with torch.no_grad():
      out[f"{size}x{size}x{channels} forward"] = _median_ms(
          lambda x=x, w=w: torch.nn.functional.conv2d(x, w, padding=1), repeats)
      out[f"{size}x{size}x{channels} input grad"] = _median_ms(
          lambda backward=backward: backward([True, False, False]), repeats)
      out[f"{size}x{size}x{channels} weight grad"] = _median_ms(
          lambda backward=backward: backward([False, True, False]), repeats)
  out["torch"] = torch.__version__
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=60)
  parser.add_argument("--repeats", type=int, default=9)
  parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    os.sched_setaffinity(0, {0})
    fn = jax_worker if args.worker == "jax" else torch_worker
    print(json.dumps(fn(args.images, args.repeats)))
    return

  results = {}
  one_thread = "--xla_cpu_multi_thread_eigen=false"
  sides = [("ynnpack", "jax", dict(process_environment("auto"), JAX_PLATFORMS="cpu",
                                   XLA_FLAGS=f"{one_thread} {cpu_xla_flags(1, 'xla')}")),
           ("torch", "torch", process_environment("glibc"))]
  if xla_has_eigen_convolutions_flag():  # config.train.cpu_convolutions="eigen"
    sides.insert(1, ("eigen", "jax", dict(sides[0][2], XLA_FLAGS=f"{one_thread} "
                                                                f"{cpu_xla_flags(1, 'eigen')}")))
  sides.insert(-1, ("onednn", "jax", dict(sides[0][2], BENCH_CONV_KERNELS="onednn")))
  for name, worker, env in sides:
    results[name] = bench_step.subprocess_json(
        [sys.executable, __file__, f"--worker={worker}", f"--images={args.images}",
         f"--repeats={args.repeats}"], dict(env, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3"))

  print(f"\nmachine: {platform.processor() or platform.machine()}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; one core (CPU 0), one "
        f"thread each; {args.images} images per layer; torch {results['torch']['torch']}; "
        f"JAX allocator: {allocator_environment('auto')[MALLOC_ENV]}; ms per call")
  print("XLA (YNNPACK): XLA's own choice; XLA (Eigen): config.train.cpu_convolutions='eigen' "
        "('-': this jaxlib lacks the flag); oneDNN: ours, 'onednn' (the recipes' CPU default).")
  print("| layer | computation | XLA (YNNPACK) | XLA (Eigen) | oneDNN (ours) | "
        "ours: matrix products | torch channels_last (oneDNN) |")
  print("|---|---|---:|---:|---:|---:|---:|")
  for size, channels in LAYERS:
    layer = f"{size}x{size}x{channels}"
    for op in ("forward", "input grad", "weight grad"):
      cells = [results[side].get(f"{layer} {op}", "-") if side in results else "-"
               for side in ("ynnpack", "eigen", "onednn")]
      cells.append(results["ynnpack"].get(f"{layer} {op}, matrix products", "-"))
      cells.append(results["torch"][f"{layer} {op}"])
      print(f"| {layer} | {op} | " + " | ".join(str(c) for c in cells) + " |")
  print(json.dumps(results))


if __name__ == "__main__":
  main()
