r"""Reproduces the XLA:CPU deadlock that `steps.DispatchWindow` prevents, in a few seconds.

  python scripts/repro_dispatch_deadlock.py --limit 0     # unbounded queue: hangs, exit 3
  python scripts/repro_dispatch_deadlock.py --limit 4     # the training loop's bound: done

A tiny data-parallel step (a gradient through a batch mean, so every step has a
cross-device all-reduce) on 2 XLA host devices, dispatched `--steps` times as fast as
Python can, without waiting for results unless `--limit` > 0 (then at most that many steps
are unfinished). Found on JAX 0.10.2 / 2-core x86_64 (2026-12-06): with no limit or a limit
of 32 and above, one device's part of a step waits for an execution slot while the other
device's part waits for it in the all-reduce, and the process stalls until XLA's collective
timeout aborts it; limits up to 24 finish in under a second. The script runs the loop in a
child process and reports a stall (no result within `--timeout` seconds) as exit code 3.
"""
import argparse
import os
import subprocess
import sys
import time

CHILD = r"""
import os, sys, time
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, sys.argv[3])
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from fixmatch_jax import steps
limit, num_steps = int(sys.argv[1]), int(sys.argv[2])
mesh = Mesh(np.array(jax.devices()), ("data",))
replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

def step(w, x):
  def loss(w):
    h = jnp.tanh(x @ w)
    h = h - h.mean(0)  # The batch mean: an all-reduce across the two devices.
    return jnp.mean(jnp.square(h @ w))
  g = jax.grad(loss)(w)
  return w - 0.01 * g, jnp.mean(g)

step = jax.jit(step, in_shardings=(replicated, sharded), out_shardings=(replicated, replicated),
               donate_argnums=0)
w = jax.device_put(jnp.eye(64) * 0.5, replicated)
x = jax.device_put(jnp.ones((64, 64)), sharded)
window = steps.DispatchWindow(limit) if limit else None
start = time.perf_counter()
for _ in range(num_steps):
  w, metric = step(w, x)
  if window is not None:
    window.push(metric)
jax.block_until_ready(w)
print(f"done: {num_steps} steps in {time.perf_counter() - start:.2f} s", flush=True)
"""


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--limit", type=int, default=0,
                      help="DispatchWindow limit; 0 = no limit (the unguarded loop).")
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--timeout", type=float, default=30.0)
  args = parser.parse_args()
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  start = time.perf_counter()
  try:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(args.limit), str(args.steps), repo],
        capture_output=True, text=True, timeout=args.timeout)
  except subprocess.TimeoutExpired:
    print(f"limit {args.limit}: STALLED (no result after {args.timeout:.0f} s): the "
          "cross-device deadlock")
    return 3
  if result.returncode != 0:
    print(result.stderr[-3000:], file=sys.stderr)
    return result.returncode
  elapsed = time.perf_counter() - start
  print(f"limit {args.limit}: {result.stdout.strip()} (process {elapsed:.1f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
