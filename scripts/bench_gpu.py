r"""Accelerator benchmark of the FixMatch step: steps/s, achieved TFLOP/s vs the measured
peak, and whether the input pipeline keeps up; with the PyTorch peer on the same device.

  python scripts/bench_gpu.py --batch 64 --mu 7 --dtype bfloat16 --peer
  python scripts/bench_gpu.py --batch 64 --mu 7 --dtype float32 --peer

What one run measures, in this order, on the first JAX device (a GPU if there is one;
otherwise the CPU, with small defaults, so the script itself can be checked anywhere):

1. Peak: the median time of a large square matmul (`--matmul-size`, in `--dtype`),
   giving the card's achievable TFLOP/s measured here, not the datasheet's.
2. Ours: the real `steps.train_step` (FixMatch, WRN-28-2 by default, 32x32x3, B labelled
   + 2*mu*B unlabelled images per step) on one device, `--dtype` the model's computation
   dtype (parameters, BatchNorm statistics and the loss stay float32). FLOPs per step from
   XLA's cost analysis of the compiled step; achieved TFLOP/s = FLOPs / median step time.
3. The peer on the same device (`--peer`): the WideResNet class of
   `../shared/peers/torch_fixmatch_step.py` (same architecture, 1,467,610 parameters),
   moved to the device, channels_last, with the peer's loss and SGD-Nesterov step written
   out here (the peer script itself only runs on the CPU); bfloat16 via torch.autocast.
   Its TFLOP/s uses our FLOP count (same network, same images).
4. Input pipeline: the real `pipeline.train_stream` (weak + strong RandAugment views) on
   synthetic 32x32x3 images, batches/s with every CPU core of this host (tf.data
   AUTOTUNE), against the steps/s the device consumes.

Prints a markdown table and a JSON line; record it with the card's name in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "scripts")]
DEFAULT_PEER = os.path.join(REPO, "..", "shared", "peers", "torch_fixmatch_step.py")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def timed(fn, repeats: int) -> list[float]:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def matmul_peak_tflops(size: int, dtype: str, repeats: int) -> float:
  """Achievable TFLOP/s of this device: a size x size x size matmul (2 n^3 FLOPs)."""
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(0), (size, size), jnp.dtype(dtype))
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.dtype(dtype))
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, b).block_until_ready()
  times = timed(lambda: matmul(a, b).block_until_ready(), repeats)
  return 2 * size**3 / statistics.median(times) / 1e12


def ours(args: argparse.Namespace) -> dict:
  import bench_step
  import jax

  step_fn, state, batch = bench_step.build_step(
      args.batch, args.mu, args.image_size, conv_bias=False,
      dtype=None if args.dtype == "float32" else args.dtype)
  compiled = step_fn.lower(state, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan")))
  state, metrics = step_fn(state, batch)
  jax.block_until_ready((state, metrics))

  def one_step():
    nonlocal state
    state, step_metrics = step_fn(state, batch)
    jax.block_until_ready((state, step_metrics))

  times = timed(one_step, args.steps)
  return {"median_step_s": statistics.median(times), "flops_per_step": flops}


def peer(args: argparse.Namespace, device_kind: str) -> dict:
  import torch
  import torch.nn.functional as F

  if not os.path.exists(args.peer):
    raise FileNotFoundError(f"PyTorch peer {args.peer} not found; pass --peer=<path to "
                            "torch_fixmatch_step.py> (it lives in ../shared/peers/).")
  spec = importlib.util.spec_from_file_location("torch_peer", args.peer)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  device = torch.device("cuda" if device_kind == "gpu" and torch.cuda.is_available() else "cpu")
  torch.manual_seed(0)
  model = module.WideResNet().to(device).to(memory_format=torch.channels_last)
  b, mu, s = args.batch, args.mu, args.image_size
  x = (torch.rand(b + 2 * mu * b, 3, s, s, device=device) * 2 - 1).contiguous(
      memory_format=torch.channels_last)
  y = torch.randint(0, 10, (b,), device=device)
  decayed = [p for p in model.parameters() if p.ndim > 1]
  others = [p for p in model.parameters() if p.ndim <= 1]
  optimizer = torch.optim.SGD([{"params": decayed, "weight_decay": 5e-4},
                               {"params": others, "weight_decay": 0.0}],
                              lr=0.03, momentum=0.9, nesterov=True)
  autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                            enabled=args.dtype == "bfloat16")

  def step():
    with autocast:
      logits = model(x).float()
    logits_x, logits_weak, logits_strong = logits[:b], logits[b:b + mu * b], logits[b + mu * b:]
    confidence, pseudo_labels = torch.softmax(logits_weak.detach(), -1).max(-1)
    mask = (confidence >= 0.95).float()
    loss = F.cross_entropy(logits_x, y) + (
        F.cross_entropy(logits_strong, pseudo_labels, reduction="none") * mask).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if device.type == "cuda":
      torch.cuda.synchronize()

  model.train()
  step()
  times = timed(step, args.steps)
  return {"median_step_s": statistics.median(times), "torch": torch.__version__,
          "device": str(device)}


def pipeline_rate(args: argparse.Namespace, seconds: float) -> float:
  """Batches/s of the real training input pipeline on synthetic 32x32x3 images."""
  import numpy as np

  from fixmatch_jax import configs
  from fixmatch_jax.data import pipeline, sources, splits

  config = configs.base_config()
  config.data.batch_size, config.data.mu = args.batch, args.mu
  rng = np.random.default_rng(0)
  num = 8192
  shape = (args.image_size, args.image_size, 3)
  source = sources.ArraySource(
      name="synthetic", images=rng.integers(0, 256, (num, *shape), np.uint8),
      labels=rng.integers(0, 10, num).astype(np.int64), num_classes=10)
  config.data.num_labels = 250
  split = splits.make_split(config.data, source, seed=1)
  stream = pipeline.train_stream(config.data, source, split, views=("weak", "strong"), seed=1,
                                 start_step=0)
  for _ in range(3):  # Warm-up: thread pools, AUTOTUNE.
    next(stream)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(stream)
    count += 1
  return count / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=None, help="Default 64 (GPU) or 2 (CPU).")
  parser.add_argument("--mu", type=int, default=7)
  parser.add_argument("--image-size", type=int, default=32)
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
  parser.add_argument("--steps", type=int, default=None, help="Default 50 (GPU) or 3 (CPU).")
  parser.add_argument("--matmul-size", type=int, default=None,
                      help="Default 8192 (GPU) or 1024 (CPU).")
  parser.add_argument("--pipeline-seconds", type=float, default=None,
                      help="Default 20 (GPU host) or 3 (CPU); 0 skips.")
  parser.add_argument("--peer", nargs="?", const=DEFAULT_PEER, default=None,
                      help="Also time the PyTorch peer's WideResNet on the same device.")
  args = parser.parse_args()

  import jax

  device = jax.devices()[0]
  on_gpu = device.platform == "gpu"
  args.batch = args.batch or (64 if on_gpu else 2)
  args.steps = args.steps or (50 if on_gpu else 3)
  args.matmul_size = args.matmul_size or (8192 if on_gpu else 1024)
  if args.pipeline_seconds is None:
    args.pipeline_seconds = 20.0 if on_gpu else 3.0
  if not on_gpu:
    print("No GPU: CPU fallback with small defaults (a check of the script, not a result).",
          file=sys.stderr)

  peak = matmul_peak_tflops(args.matmul_size, args.dtype, repeats=10 if on_gpu else 3)
  result = ours(args)
  rows = [("ours (JAX)", result["median_step_s"])]
  peer_result = None
  if args.peer:
    peer_result = peer(args, device.platform)
    rows.append((f"torch {peer_result['torch']} peer, channels_last ({peer_result['device']})",
                 peer_result["median_step_s"]))
  batches_per_s = pipeline_rate(args, args.pipeline_seconds) if args.pipeline_seconds else None

  flops = result["flops_per_step"]
  images = args.batch * (1 + 2 * args.mu)
  print(f"\n{device.device_kind} ({device.platform}); {os.cpu_count()} host CPU cores; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; B = {args.batch}, mu = "
        f"{args.mu}, {images} images of {args.image_size}x{args.image_size}x3 per step; "
        f"{args.dtype}; median of {args.steps} steps")
  print(f"measured peak ({args.matmul_size}^3 matmul, {args.dtype}): {peak:.3g} TFLOP/s; "
        f"XLA cost analysis: {flops / 1e12:.3g} TFLOP per step "
        f"({flops / images / 1e9:.3g} GFLOP per image, forward + backward)")
  print("| implementation | median step (ms) | steps/s | images/s | achieved TFLOP/s | "
        "% of measured peak |")
  print("|---|---:|---:|---:|---:|---:|")
  for name, seconds in rows:
    achieved = flops / seconds / 1e12
    print(f"| {name} | {1e3 * seconds:.1f} | {1 / seconds:.2f} | {images / seconds:.0f} | "
          f"{achieved:.3g} | {100 * achieved / peak:.0f}% |")
  if batches_per_s is not None:
    demand = 1 / result["median_step_s"]
    print(f"\ninput pipeline (real train_stream, weak + strong views, {os.cpu_count()} cores): "
          f"{batches_per_s:.2f} batches/s vs {demand:.2f} steps/s demanded by our step: "
          f"{'keeps up' if batches_per_s >= demand else 'does NOT keep up'} "
          f"({batches_per_s / demand:.2f}x)")
  print(json.dumps({"device": device.device_kind, "platform": device.platform,
                    "batch": args.batch, "mu": args.mu, "dtype": args.dtype,
                    "peak_tflops": peak, "flops_per_step": flops, "ours": result,
                    "peer": peer_result, "pipeline_batches_per_s": batches_per_s}))


if __name__ == "__main__":
  main()
