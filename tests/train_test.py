"""End to end: `train_and_evaluate` on the tiny synthetic config, and resuming it."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from fixmatch_jax import checkpointing, main, metrics, steps, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments"))
import tiny  # noqa: E402


def tiny_config(**kwargs):
  config = tiny.get_config(",".join(f"{k}={v}" for k, v in kwargs.items()))
  config.lock()
  return config


def leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


def test_runs_writes_metrics_checkpoints_and_summary(tmp_path):
  workdir = str(tmp_path)
  train.train_and_evaluate(tiny_config(steps=6), workdir)
  for name in ("config.json", "labelled_indices.json", "metrics.jsonl", "summary.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  rows = metrics.read(workdir)
  train_rows = [r for r in rows if "train/loss" in r]
  eval_rows = [r for r in rows if "eval/acc_ema" in r]
  assert [r["step"] for r in train_rows] == [2, 4, 6]
  assert [r["step"] for r in eval_rows] == [3, 6]
  for key in ("train/loss_sup", "train/loss_unsup", "train/mask_rate", "train/pseudo_label_acc",
              "train/per_class_mask_rate", "train/lr"):
    assert key in train_rows[0], key
  assert len(train_rows[0]["train/per_class_mask_rate"]) == 4
  assert checkpointing.Checkpointer(workdir, keep=2).all_steps() == [3, 6]
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  assert 0.0 <= summary["acc_ema_median_last20"] <= 1.0
  # Re-launching the finished run trains nothing and keeps its summary (and wall time).
  train.train_and_evaluate(tiny_config(steps=6), workdir)
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f) == summary


def test_sigterm_then_resume_matches_uninterrupted_run(tmp_path, monkeypatch):
  """SIGTERM after step 4 (between checkpoints at 3 and 6): the loop saves and returns;
  re-running finishes with bit-identical state and metrics to a run never stopped."""
  straight_dir, resumed_dir = str(tmp_path / "straight"), str(tmp_path / "resumed")
  straight = train.train_and_evaluate(tiny_config(steps=6), straight_dir)

  make_train_step = steps.make_train_step

  def make_train_step_with_sigterm(*args, **kwargs):
    step_fn, calls = make_train_step(*args, **kwargs), []

    def step_then_signal(state, batch):
      calls.append(1)
      if len(calls) == 4:
        os.kill(os.getpid(), signal.SIGTERM)
      return step_fn(state, batch)
    return step_then_signal

  monkeypatch.setattr(steps, "make_train_step", make_train_step_with_sigterm)
  stopped = train.train_and_evaluate(tiny_config(steps=6), resumed_dir)
  assert int(stopped.step) == 4
  assert checkpointing.Checkpointer(resumed_dir, keep=2).all_steps() == [3, 4]
  monkeypatch.setattr(steps, "make_train_step", make_train_step)
  resumed = train.train_and_evaluate(tiny_config(steps=6), resumed_dir)
  assert int(resumed.step) == 6
  for a, b in zip(leaves(straight), leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)
  assert_same_rows_but_timings(metrics.read(resumed_dir), metrics.read(straight_dir))


def assert_same_rows_but_timings(rows_a, rows_b):
  """Equal metrics rows, ignoring the wall-clock ones (steps/s, evaluation seconds)."""
  timings = ("train/steps_per_s", "eval/seconds")
  strip = lambda rows: [{k: v for k, v in r.items() if k not in timings} for r in rows]
  assert strip(rows_a) == strip(rows_b)


def test_workdir_with_other_config_is_refused(tmp_path):
  train.train_and_evaluate(tiny_config(steps=3), str(tmp_path))
  with pytest.raises(train.ConfigMismatchError, match="seed"):
    train.train_and_evaluate(tiny_config(steps=3, seed=2), str(tmp_path))


def test_command_line_run(tmp_path):
  """The CLI trains and prints the summary; a second run of the same config (another
  workdir) loads its compiled steps from the persistent cache and gives the same metrics."""
  env = dict(os.environ, XLA_FLAGS="")  # Let main.py pick the CPU device count itself.
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  cache = tmp_path / "cache"

  def run(workdir):
    result = subprocess.run(
        [sys.executable, "-m", "fixmatch_jax.main",
         f"--config={os.path.join(REPO, 'experiments', 'tiny.py')}:steps=3",
         f"--workdir={workdir}", "--config.train.eval_every_steps=3",
         f"--compilation_cache={cache}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.exists(workdir / "summary.json")
    assert "acc_ema_median_last20" in result.stdout
    with open(workdir / "metrics.jsonl") as f:
      return [json.loads(line) for line in f]

  rows = run(tmp_path / "a")
  entries = sorted(os.listdir(cache))
  assert any("train_step" in e for e in entries), entries
  assert_same_rows_but_timings(rows, run(tmp_path / "b"))
  assert sorted(os.listdir(cache)) == entries  # Every compilation was a cache hit.


def test_compilation_cache_dir_flag_env_and_default(monkeypatch):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  assert main.compilation_cache_dir(None).endswith(os.path.join(".cache", "fixmatch_jax", "jax"))
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/x/cache")
  assert main.compilation_cache_dir(None) == "/x/cache"
  assert main.compilation_cache_dir("/y") == "/y"
  assert main.compilation_cache_dir("none") is None and main.compilation_cache_dir("") is None
