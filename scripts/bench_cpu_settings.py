r"""A/B of XLA:CPU settings for the FixMatch WRN-28-2 step, interleaved in one run.

  python scripts/bench_cpu_settings.py --batch 8 --rounds 8 \
      --settings default,one_device,onednn,bf16 [--peer]

The machine is shared, so settings are never timed one after the other: each setting is a
persistent worker process (XLA flags are read once, at JAX start-up) that compiles the real
`steps.train_step` once and then waits; the parent runs `--rounds` rounds, and in each round
asks every worker, in a shuffled order, for `--steps-per-round` steps (and, with `--peer`,
runs the PyTorch peer `../shared/peers/torch_fixmatch_step.py --channels-last` for as many
steps). Only one worker computes at a time. Reported per setting: the median step time
over all rounds, and the median over rounds of its ratio to the `default` setting timed in
the same round (the paired ratio is what load changes cancel out of), and the CPU time
the worker used per step (all its threads; less sensitive to other processes than wall
time, though spinning threads count). The load average before and after is printed.

Settings: see `--help` (each names what changes against `default`, the CPU default of
fixmatch_jax.main).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PEER = os.path.join(REPO, "..", "shared", "peers", "torch_fixmatch_step.py")
sys.path.insert(0, REPO)
# No JAX import at module level: the workers set XLA_FLAGS first.
from fixmatch_jax.main import (  # noqa: E402
    cpu_xla_flags,
    process_environment,
    recipe_cpu_convolutions,
)

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def _devices(n: int, convolutions: str | None = None) -> str:
  """Device count and convolution library (None: the recipe's, configs.base_config)."""
  return cpu_xla_flags(n, convolutions or DEFAULT_CONVOLUTIONS)


# What fixmatch_jax.main chooses for the paper recipes (config.train.cpu_convolutions).
DEFAULT_CONVOLUTIONS = recipe_cpu_convolutions()
CORES = os.cpu_count() or 1
# name -> (XLA_FLAGS, extra environment, model dtype, doc).
SETTINGS: dict[str, dict] = {
    "default": dict(flags=_devices(CORES), doc=f"{CORES} XLA host devices (one per core), f32, "
                    f"{DEFAULT_CONVOLUTIONS} convolutions: fixmatch_jax.main's CPU default"),
    "one_device": dict(flags=_devices(1), doc="1 XLA device (JAX's own default)"),
    "four_devices": dict(flags=_devices(2 * CORES), doc=f"{2 * CORES} devices (2 per core)"),
    "onednn": dict(flags=_devices(CORES) + " --xla_cpu_use_onednn=true",
                   doc="oneDNN for convolutions and matmuls"),
    "onednn_custom_call": dict(
        flags=_devices(CORES) + " --xla_cpu_use_onednn=true"
        " --xla_cpu_experimental_onednn_custom_call=true", doc="oneDNN as custom calls"),
    "xnnpack": dict(flags=_devices(CORES) + " --xla_cpu_use_xnnpack=true",
                    doc="XNNPACK for supported ops"),
    "no_xnnpack": dict(flags=_devices(CORES) + " --xla_cpu_use_xnnpack=false",
                       doc="XNNPACK off"),
    "xnn_graph": dict(
        flags=_devices(CORES) + " --xla_cpu_experimental_xnn_graph_fusion_mode="
        "XNN_GRAPH_FUSION_MODE_GREEDY", doc="XNNPACK graph fusion (greedy subgraphs)"),
    "xnn_fusions": dict(
        flags=_devices(CORES) + " --xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce",
        doc="XNNPACK library fusions for dot, eltwise, reduce"),
    "onednn_fusions": dict(
        flags=_devices(CORES) + " --xla_cpu_use_onednn=true"
        " --xla_cpu_experimental_onednn_fusion_type=dot,eltwise,reduce",
        doc="oneDNN thunks + oneDNN library fusions for dot, eltwise, reduce"),
    "fast_math": dict(flags=_devices(CORES) + " --xla_cpu_enable_fast_math=true",
                      doc="fast-math (reassociation, approximate functions)"),
    "no_thunks": dict(flags=_devices(CORES) + " --xla_cpu_use_thunk_runtime=false",
                      doc="legacy (non-thunk) runtime"),
    "single_thread_eigen": dict(flags=_devices(CORES) + " --xla_cpu_multi_thread_eigen=false",
                                doc="no intra-op Eigen thread pool (parallelism = devices)"),
    "vector512": dict(flags=_devices(CORES) + " --xla_cpu_prefer_vector_width=512",
                      doc="512-bit vectors in generated loops"),
    "eigen_convs": dict(
        flags=_devices(CORES, "eigen"), convs="eigen",
        doc="Eigen's convolutions (XLA's own; config.train.cpu_convolutions='eigen', the "
            "default from 2026-12-06 06:30 to 08:00 UTC, when 'onednn' replaced it)"),
    "xla_convs": dict(
        flags=_devices(CORES, "xla"), convs="xla",
        doc="XLA's own choice of convolution kernels (YNNPACK in jaxlib 0.10; the default "
            "until 2026-12-06, when config.train.cpu_convolutions='eigen' replaced it)"),
    "ynn_eltwise": dict(
        flags=_devices(CORES, "xla") + " --xla_cpu_experimental_ynn_fusion_type="
        + ("-individual_convolution," if DEFAULT_CONVOLUTIONS != "xla" else "")
        + "+eltwise,+reduce",
        doc="YNNPACK also for elementwise and reduce fusions"),
    "bf16": dict(flags=_devices(CORES), dtype="bfloat16",
                 doc="model computation in bfloat16 (parameters f32)"),
    "jemalloc": dict(flags=_devices(CORES), env={"LD_PRELOAD": JEMALLOC},
                     doc=f"jemalloc via LD_PRELOAD ({JEMALLOC})"),
}


def worker(batch: int, mu: int, image_size: int, dtype: str | None,
           convs: str | None = None) -> None:
  """Compiles the step, then answers "N" on stdin with a JSON list of N step times."""
  import jax

  sys.path[:0] = [REPO, os.path.join(REPO, "scripts")]
  import bench_step

  jitted, state, device_batch = bench_step.build_step(batch, mu, image_size, conv_bias=False,
                                                      dtype=dtype, cpu_convolutions=convs)
  start = time.perf_counter()
  step_fn = jitted.lower(state, device_batch).compile()
  state, metrics = step_fn(state, device_batch)
  jax.block_until_ready((state, metrics))
  # A setting whose optimised HLO equals the default's cannot change the step's speed: the
  # hash tells a real difference from timing noise. Library fusions (YNNPACK, oneDNN,
  # XNNPACK) show up in it as custom fusion kinds, counted here.
  text = step_fn.as_text()
  fusions = collections.Counter(re.findall(r'"kind":"(__\w+)"', text))
  # models/onednn.py's convolutions are custom calls, counted with the fusions.
  fusions.update(re.findall(r'custom_call_target="(Fixmatch\w+)"', text))
  print(json.dumps({"ready": True, "devices": len(jax.devices()),
                    "first_step_s": time.perf_counter() - start,
                    "hlo_sha1": hashlib.sha1(text.encode()).hexdigest()[:10],
                    "library_fusions": dict(fusions)}), flush=True)
  for line in sys.stdin:
    times, cpu = [], []
    for _ in range(int(line)):
      start, cpu_start = time.perf_counter(), time.process_time()
      state, metrics = step_fn(state, device_batch)
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - start)
      cpu.append(time.process_time() - cpu_start)
    print(json.dumps({"times": times, "cpu": cpu}), flush=True)


def start_worker(name: str, args: argparse.Namespace) -> subprocess.Popen:
  spec = SETTINGS[name]
  if "LD_PRELOAD" in spec.get("env", {}) and not os.path.exists(spec["env"]["LD_PRELOAD"]):
    raise FileNotFoundError(f"{spec['env']['LD_PRELOAD']} is missing: apt-get install "
                            "libjemalloc2, or leave the jemalloc setting out.")
  # Every setting runs with the allocator fixmatch_jax.main picks (tcmalloc when installed)
  # unless it names its own (LD_PRELOAD in its env).
  own = "LD_PRELOAD" in spec.get("env", {})
  env = dict(process_environment("glibc" if own else "auto"), XLA_FLAGS=spec["flags"],
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", **spec.get("env", {}))
  cmd = [sys.executable, os.path.abspath(__file__), f"--worker={args.batch}", f"--mu={args.mu}",
         f"--image-size={args.image_size}"]
  if spec.get("dtype"):
    cmd.append(f"--dtype={spec['dtype']}")
  if spec.get("convs"):
    cmd.append(f"--convs={spec['convs']}")
  return subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True)


def read_json(process: subprocess.Popen, name: str) -> dict:
  line = process.stdout.readline()
  if not line:
    raise RuntimeError(f"worker {name!r} exited (code {process.wait()}); see its stderr above.")
  return json.loads(line)


def run_peer(args: argparse.Namespace) -> list[float]:
  cmd = [sys.executable, args.peer, f"--batch={args.batch}", f"--mu={args.mu}",
         f"--steps={args.steps_per_round}", f"--image-size={args.image_size}", "--channels-last"]
  out = subprocess.run(cmd, capture_output=True, text=True, check=True)
  return [json.loads(out.stdout.strip().splitlines()[-1])["median_step_s"]]


def main() -> None:
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="settings:\n" + "\n".join(f"  {k}: {v['doc']}" for k, v in SETTINGS.items()))
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--mu", type=int, default=7)
  parser.add_argument("--image-size", type=int, default=32)
  parser.add_argument("--settings", default="default,one_device,onednn,xnnpack,bf16")
  parser.add_argument("--rounds", type=int, default=6,
                      help="0: only compile each setting and compare the optimised HLO.")
  parser.add_argument("--steps-per-round", type=int, default=2)
  parser.add_argument("--peer", nargs="?", const=DEFAULT_PEER, default=None,
                      help="Also time the PyTorch peer (channels_last) in every round.")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--dtype", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--convs", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    worker(args.worker, args.mu, args.image_size, args.dtype, args.convs)
    return

  names = args.settings.split(",")
  unknown = sorted(set(names) - set(SETTINGS))
  if unknown:
    parser.error(f"unknown settings {unknown}; choose from {sorted(SETTINGS)}")
  if "default" not in names:
    names.insert(0, "default")
  load_before = os.getloadavg()
  started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
  workers, info = {}, {}
  for name in names:  # One compilation at a time.
    workers[name] = start_worker(name, args)
    try:
      info[name] = read_json(workers[name], name)
    except RuntimeError as error:
      print(f"setting {name!r} failed to start: {error}", file=sys.stderr)
      workers.pop(name)
      continue
    if args.rounds == 0:  # HLO comparison only: free the worker's memory now.
      workers[name].stdin.close()
      workers[name].wait()
  if "default" not in workers:
    sys.exit("the default setting failed to start; nothing to compare against.")
  times: dict[str, list[float]] = {name: [] for name in workers}
  cpu: dict[str, list[float]] = {name: [] for name in workers}
  ratios: dict[str, list[float]] = {name: [] for name in workers}
  if args.peer:
    times["torch_peer_channels_last"], ratios["torch_peer_channels_last"] = [], []
  rng = random.Random(args.seed)
  for round_index in range(args.rounds):
    order = list(times)
    rng.shuffle(order)
    round_median = {}
    for name in order:
      if name == "torch_peer_channels_last":
        step_times = run_peer(args)
      else:
        workers[name].stdin.write(f"{args.steps_per_round}\n")
        workers[name].stdin.flush()
        answer = read_json(workers[name], name)
        step_times = answer["times"]
        cpu[name].extend(answer["cpu"])
      times[name].extend(step_times)
      round_median[name] = statistics.median(step_times)
    for name in times:
      ratios[name].append(round_median[name] / round_median["default"])
    print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(
        f"{n} {round_median[n]:.3f}s" for n in times), file=sys.stderr, flush=True)
  for process in workers.values():
    process.stdin.close()
    process.wait()
  load_after = os.getloadavg()

  print(f"\nB={args.batch}, mu={args.mu}, {args.image_size}x{args.image_size}x3; {CORES} cores; "
        f"{started}; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
        f"{args.rounds} rounds x {args.steps_per_round} steps, interleaved")
  print("| setting | median step (s) | x default (median of paired ratios) | "
        "CPU s/step (all threads) | first step incl. compile (s) | optimised HLO | "
        "library fusions |")
  print("|---|---:|---:|---:|---:|---|---|")
  default_hash = info["default"]["hlo_sha1"]
  for name in times:
    first = info.get(name, {}).get("first_step_s")
    cpu_cell = f"{statistics.median(cpu[name]):.3f}" if cpu.get(name) else "-"
    digest = info.get(name, {}).get("hlo_sha1")
    hlo = "-" if digest is None else "= default" if digest == default_hash else digest
    fusions = ", ".join(f"{k} x{v}" for k, v in info.get(name, {}).get(
        "library_fusions", {}).items()) or "-"
    median = f"{statistics.median(times[name]):.3f}" if times[name] else "-"
    ratio = f"{statistics.median(ratios[name]):.3f}" if ratios[name] else "-"
    print(f"| {name} | {median} | {ratio} | {cpu_cell} | "
          f"{'-' if first is None else f'{first:.1f}'} | {hlo} | {fusions} |")
  print(json.dumps({"batch": args.batch, "mu": args.mu, "date": started,
                    "load_before": load_before, "load_after": load_after,
                    "times": times, "ratios": ratios, "cpu": cpu}))


if __name__ == "__main__":
  main()
