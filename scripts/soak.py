r"""Soak benchmark: a long tiny CPU run killed and restarted many times vs one never stopped.

  nice -n 5 python scripts/soak.py --minutes 25 --out /tmp/soak

Runs the command of `experiments/tiny.py` (a real `python -m fixmatch_jax.main` process)
twice, from a frozen copy of the package (so edits to the working tree during the soak cannot
change the code under test):

1. *straight*: the run never stopped;
2. *killed*: the same command, killed every `--kill_min_s`..`--kill_max_s` seconds of its
   life (SIGKILL, every `--sigterm_every`-th time SIGTERM), and restarted with the same
   command until it finishes.

Both processes are sampled every `--sample_s` seconds: resident memory (VmRSS), open file
descriptors (/proc/<pid>/fd), and the workdir's disk use (all of it, and checkpoints/ alone).
At the end it checks that both runs finished with bit-identical TrainStates (every leaf of
the final checkpoint) and identical metrics.jsonl rows (minus wall-clock timings), and writes
`<out>/soak.json` and a Markdown summary `<out>/soak.md`. The time split between the two
phases is automatic: the straight run's length in steps is chosen from a short timing run so
that it takes about a third of the budget, and the killed run (same steps plus restarts) the rest.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMINGS = ("train/steps_per_s", "eval/seconds")


def snapshot(out: str) -> str:
  """A frozen copy of the package and the tiny experiment; returns its root."""
  root = os.path.join(out, "snapshot")
  if os.path.exists(root):
    shutil.rmtree(root)
  shutil.copytree(os.path.join(REPO, "fixmatch_jax"), os.path.join(root, "fixmatch_jax"),
                  ignore=shutil.ignore_patterns("__pycache__"))
  os.makedirs(os.path.join(root, "experiments"))
  shutil.copy(os.path.join(REPO, "experiments", "tiny.py"), os.path.join(root, "experiments"))
  return root


def command(root: str, workdir: str, args: argparse.Namespace, steps: int) -> list[str]:
  return [sys.executable, "-m", "fixmatch_jax.main",
          f"--config={os.path.join(root, 'experiments', 'tiny.py')}:steps={steps}",
          f"--workdir={workdir}",
          f"--config.train.checkpoint_every_steps={args.checkpoint_every}",
          f"--config.train.keep_checkpoints={args.keep}",
          f"--config.train.log_every_steps={args.log_every}",
          f"--config.train.eval_every_steps={args.eval_every}"]


def environment(root: str, args: argparse.Namespace) -> dict[str, str]:
  env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  # Restarts reuse compiled executables, as a production restart with a cache would.
  env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(args.out, "jax_cache")
  env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={args.devices} "
                      "--xla_cpu_collective_call_terminate_timeout_seconds=600")
  return env


def disk_bytes(path: str) -> int:
  total = 0
  for dirpath, _, files in os.walk(path):
    for name in files:
      try:
        total += os.lstat(os.path.join(dirpath, name)).st_size
      except FileNotFoundError:  # Removed by the run while walking (old checkpoints).
        pass
  return total


def sample(pid: int, workdir: str, started: float) -> dict | None:
  try:
    with open(f"/proc/{pid}/status") as f:
      rss_kb = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
  except (FileNotFoundError, ProcessLookupError, AttributeError):
    return None
  return {"t": round(time.time() - started, 1), "pid": pid, "rss_mb": round(rss_kb / 1024, 1),
          "fds": fds, "disk_mb": round(disk_bytes(workdir) / 2**20, 3),
          "ckpt_mb": round(disk_bytes(os.path.join(workdir, "checkpoints")) / 2**20, 3),
          "step": last_step(workdir)}


def last_step(workdir: str) -> int:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path, "rb") as f:
    f.seek(max(0, os.path.getsize(path) - 4096))
    lines = [line for line in f.read().decode(errors="ignore").splitlines() if line.strip()]
  for line in reversed(lines):
    try:
      return int(json.loads(line)["step"])
    except (ValueError, KeyError):
      continue
  return 0


def run(cmd, env, workdir, log, *, sample_s, kill_after=None, kill_signal=signal.SIGKILL):
  """Runs `cmd` until it exits, or kills it after `kill_after` s; returns (rc, samples)."""
  started = time.time()
  with open(log, "a") as log_file:
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
    samples = []
    while proc.poll() is None:
      point = sample(proc.pid, workdir, started)
      if point:
        samples.append(point)
      if kill_after is not None and time.time() - started >= kill_after:
        proc.send_signal(kill_signal)
        kill_after = None
      try:
        proc.wait(timeout=sample_s)
      except subprocess.TimeoutExpired:
        pass
  return proc.returncode, samples, round(time.time() - started, 1)


def final_state(workdir: str, step: int):
  """Every leaf of checkpoint `step` as host NumPy arrays (restored onto one device)."""
  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  path = os.path.join(workdir, "checkpoints", str(step), "default")
  checkpointer = ocp.StandardCheckpointer()
  tree = checkpointer.metadata(path).item_metadata.tree
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)
  restored = checkpointer.restore(path, abstract)
  checkpointer.close()
  return jax.tree.map(np.asarray, restored)


def compare(straight: str, killed: str, steps: int) -> dict:
  import jax
  import numpy as np
  a, b = final_state(straight, steps), final_state(killed, steps)
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  same_structure = jax.tree.structure(a) == jax.tree.structure(b)
  differing = sum(not np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b, strict=True))

  def rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS} for line in f]
  rows_a, rows_b = rows(straight), rows(killed)
  return {"state_leaves": len(leaves_a), "state_leaves_differing": int(differing),
          "same_structure": bool(same_structure), "metrics_rows": len(rows_a),
          "metrics_rows_equal": rows_a == rows_b,
          "labelled_split_equal": _read(straight, "labelled_indices.json")
          == _read(killed, "labelled_indices.json")}


def _read(workdir, name):
  with open(os.path.join(workdir, name), "rb") as f:
    return f.read()


def trend(samples: list[dict], key: str) -> dict:
  """First/last/max of `key`, and its least-squares slope per minute over the second half."""
  values = [s[key] for s in samples]
  times = [s["t"] for s in samples]
  half = len(values) // 2
  xs, ys = times[half:], values[half:]
  slope = 0.0
  if len(xs) >= 2 and max(xs) > min(xs):
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = covariance / sum((x - mx) ** 2 for x in xs)
  return {"first": values[0], "median_second_half": sorted(ys)[len(ys) // 2],
          "last": values[-1], "max": max(values), "slope_per_min_second_half": slope * 60}


def save_partial(out, report, straight_samples, killed_samples, lives):
  """What is known so far, in case the soak is stopped before it finishes."""
  with open(os.path.join(out, "soak_partial.json"), "w") as f:
    json.dump({**report, "lives": lives,
               "samples": {"straight": straight_samples, "killed": killed_samples}}, f)


def growth_table(samples: list[dict]) -> list[dict]:
  """Per process life, once training has started (a step was logged): RSS and open files at
  the first, middle and last sample, and the logged steps covered."""
  rows = []
  for pid in dict.fromkeys(s["pid"] for s in samples):
    life = [s for s in samples if s["pid"] == pid]
    training = [s for s in life if s["step"] > life[0]["step"]] or life[-1:]
    first, middle, last = training[0], training[len(training) // 2], training[-1]
    rows.append({"pid": pid, "steps": f"{first['step']}-{last['step']}",
                 "seconds": round(last["t"] - first["t"], 1),
                 "rss_mb": [first["rss_mb"], middle["rss_mb"], last["rss_mb"]],
                 "max_rss_mb": max(s["rss_mb"] for s in life),
                 "fds": [first["fds"], middle["fds"], last["fds"]],
                 "max_ckpt_mb": max(s["ckpt_mb"] for s in life),
                 "max_disk_mb": max(s["disk_mb"] for s in life)})
  return rows


def report_growth(path: str) -> None:
  """Prints `growth_table` for both runs of a soak.json as Markdown."""
  with open(path) as f:
    samples = json.load(f)["samples"]
  print("| run | life (pid) | logged steps | s | RSS MB first / mid / last (max) | open files "
        "first / mid / last | checkpoints MB (max) | workdir MB (max) |")
  print("|---|---|---|---|---|---|---|---|")
  for run_name in ("straight", "killed"):
    for row in growth_table(samples[run_name]):
      rss = " / ".join(f"{v:.0f}" for v in row["rss_mb"])
      fds = " / ".join(str(v) for v in row["fds"])
      print(f"| {run_name} | {row['pid']} | {row['steps']} | {row['seconds']} | {rss} "
            f"({row['max_rss_mb']:.0f}) | {fds} | {row['max_ckpt_mb']:.2f} | "
            f"{row['max_disk_mb']:.2f} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--minutes", type=float, default=25.0, help="total time budget")
  parser.add_argument("--out", default="/tmp/fixmatch_soak")
  parser.add_argument("--devices", type=int, default=2, help="forced XLA CPU devices")
  parser.add_argument("--checkpoint_every", type=int, default=200)
  parser.add_argument("--keep", type=int, default=3)
  parser.add_argument("--log_every", type=int, default=50)
  parser.add_argument("--eval_every", type=int, default=500)
  parser.add_argument("--kill_min_s", type=float, default=45.0)
  parser.add_argument("--kill_max_s", type=float, default=120.0)
  parser.add_argument("--sigterm_every", type=int, default=4)
  parser.add_argument("--sample_s", type=float, default=2.0)
  parser.add_argument("--steps", type=int, default=0, help="0: choose from a timing run")
  parser.add_argument("--seed", type=int, default=0, help="seeds the kill times")
  parser.add_argument("--report", default=None,
                      help="only print the per-life memory/files table of this soak.json")
  args = parser.parse_args()
  if args.report:
    report_growth(args.report)
    return 0

  os.makedirs(args.out, exist_ok=True)
  root = snapshot(args.out)
  env = environment(root, args)
  rng = random.Random(args.seed)
  begun = time.time()
  report = {"args": vars(args), "machine": f"{os.cpu_count()}-core {platform.machine()} "
            f"{platform.system()}", "date": datetime.datetime.now(datetime.UTC).isoformat(),
            "python": platform.python_version()}

  steps = args.steps
  if not steps:  # Time 600 steps (start-up included) to size the straight run.
    probe = os.path.join(args.out, "probe")
    shutil.rmtree(probe, ignore_errors=True)
    rc, samples, seconds = run(command(root, probe, args, 600), env, probe,
                               os.path.join(args.out, "probe.log"), sample_s=args.sample_s)
    if rc != 0:
      raise SystemExit(f"timing run failed (rc {rc}); see {args.out}/probe.log")
    with open(os.path.join(probe, "metrics.jsonl")) as f:
      rates = [r["train/steps_per_s"] for r in map(json.loads, f) if "train/steps_per_s" in r]
    rate = sorted(rates)[len(rates) // 2]
    # A killed life spends its first ~40 s starting up, so the killed run takes ~1.8x the
    # straight one: give the straight run 1/2.8 of what is left.
    budget = max(60.0, (args.minutes * 60 - (time.time() - begun)) / 2.8)
    steps = int(rate * budget) // args.checkpoint_every * args.checkpoint_every or 600
    report["probe"] = {"steps_per_s_median": rate, "seconds_600_steps": seconds}
  report["steps"] = steps

  straight = os.path.join(args.out, "straight")
  killed = os.path.join(args.out, "killed")
  for d in (straight, killed):
    shutil.rmtree(d, ignore_errors=True)
  print(f"straight run: {steps} steps", flush=True)
  rc, straight_samples, seconds = run(command(root, straight, args, steps), env, straight,
                                      os.path.join(args.out, "straight.log"),
                                      sample_s=args.sample_s)
  if rc != 0:
    raise SystemExit(f"straight run failed (rc {rc}); see {args.out}/straight.log")
  report["straight"] = {"seconds": seconds, "rss_mb": trend(straight_samples, "rss_mb"),
                        "fds": trend(straight_samples, "fds"),
                        "disk_mb": trend(straight_samples, "disk_mb"),
                        "ckpt_mb": trend(straight_samples, "ckpt_mb")}

  lives, killed_samples, launch = [], [], 0
  save_partial(args.out, report, straight_samples, killed_samples, lives)
  while True:
    launch += 1
    kill_after = rng.uniform(args.kill_min_s, args.kill_max_s)
    sig = signal.SIGTERM if launch % args.sigterm_every == 0 else signal.SIGKILL
    before = last_step(killed)
    rc, samples, seconds = run(command(root, killed, args, steps), env, killed,
                               os.path.join(args.out, "killed.log"), sample_s=args.sample_s,
                               kill_after=kill_after, kill_signal=sig)
    killed_samples.extend(samples)
    lives.append({"launch": launch, "signal": sig.name if rc != 0 or seconds >= kill_after
                  else None, "kill_after_s": round(kill_after, 1), "rc": rc,
                  "seconds": seconds, "logged_step_before": before,
                  "logged_step_after": last_step(killed),
                  "max_rss_mb": max((s["rss_mb"] for s in samples), default=None),
                  "max_fds": max((s["fds"] for s in samples), default=None)})
    print(json.dumps(lives[-1]), flush=True)
    save_partial(args.out, report, straight_samples, killed_samples, lives)
    if rc == 0 and last_step(killed) >= steps:
      break
    if rc not in (0, -signal.SIGKILL, -signal.SIGTERM):
      raise SystemExit(f"killed run failed (rc {rc}); see {args.out}/killed.log")
  report["killed"] = {"launches": launch, "lives": lives,
                      "rss_mb": trend(killed_samples, "rss_mb"),
                      "fds": trend(killed_samples, "fds"),
                      "disk_mb": trend(killed_samples, "disk_mb"),
                      "ckpt_mb": trend(killed_samples, "ckpt_mb")}
  with open(os.path.join(killed, "checkpoints", str(steps), "_CHECKPOINT_METADATA")):
    pass
  report["comparison"] = compare(straight, killed, steps)
  report["checkpoint_dirs_left"] = {
      name: sorted(os.listdir(os.path.join(d, "checkpoints")))
      for name, d in (("straight", straight), ("killed", killed))}
  report["total_minutes"] = round((time.time() - begun) / 60, 1)
  with open(os.path.join(args.out, "soak.json"), "w") as f:
    json.dump({**report, "samples": {"straight": straight_samples, "killed": killed_samples}},
              f, indent=1)
  print(json.dumps(report, indent=1))
  ok = (report["comparison"]["state_leaves_differing"] == 0
        and report["comparison"]["metrics_rows_equal"]
        and report["comparison"]["labelled_split_equal"])
  print("NO DRIFT" if ok else "DRIFT: the killed run differs from the straight run")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
