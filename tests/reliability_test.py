"""Reliability: exact resume after SIGTERM, SIGKILL and a crash; multi-process training;
device-count invariance. The oracle is always the same run never interrupted, on 4 devices.

The tiny config (experiments/tiny.py) runs 12 steps: logs every 2, evaluates and checkpoints
every 3. Faults are injected by wrapping `steps.make_train_step` (in a subprocess for the
signals), so the code under test is the real `fixmatch_jax.main` / `train_and_evaluate`.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from fixmatch_jax import checkpointing, metrics, steps, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments"))
import tiny  # noqa: E402

STEPS, KEEP = 12, 4
TIMINGS = ("train/steps_per_s", "eval/seconds")
# Runs `fixmatch_jax.main` with the train step wrapped: env FAULT_SLEEP_FROM=s sleeps 0.3 s
# before each step from step s on; FAULT_SIGKILL_AT=k SIGKILLs the process before step k+1.
FAULT_RUNNER = """
import os, signal, sys, time
from absl import app
from fixmatch_jax import main, steps
make_train_step = steps.make_train_step
sleep_from = int(os.environ.get("FAULT_SLEEP_FROM", "-1"))
kill_at = int(os.environ.get("FAULT_SIGKILL_AT", "-1"))
def faulty_make_train_step(*args, **kwargs):
  step_fn = make_train_step(*args, **kwargs)
  def step(state, batch):
    done = int(state.step)
    if done == kill_at:
      os.kill(os.getpid(), signal.SIGKILL)
    if 0 <= sleep_from <= done:
      time.sleep(0.3)
    return step_fn(state, batch)
  return step
steps.make_train_step = faulty_make_train_step
app.run(main.main, argv=sys.argv)
"""


def config(**overrides):
  config = tiny.get_config(f"steps={STEPS}")
  config.train.keep_checkpoints = KEEP
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  config.lock()
  return config


def command_line(workdir, *extra):
  return [sys.executable, "-c", FAULT_RUNNER,
          f"--config={os.path.join(REPO, 'experiments', 'tiny.py')}:steps={STEPS}",
          f"--workdir={workdir}", f"--config.train.keep_checkpoints={KEEP}", *extra]


def leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


def restore(workdir, like):
  restored, _ = checkpointing.Checkpointer(workdir, keep=KEEP).restore(like)
  return restored


def rows_without_timings(workdir):
  return [{k: v for k, v in row.items() if k not in TIMINGS} for row in metrics.read(workdir)]


def assert_rows_close(rows, expected, rtol=1e-4, atol=1e-6):
  """Same rows, steps and keys; numbers equal within the tolerance ("nan" strings equal)."""
  assert [sorted(r) for r in rows] == [sorted(r) for r in expected]
  largest = 0.0
  for row, want in zip(rows, expected, strict=True):
    for key, value in want.items():
      if isinstance(value, str) or key == "step":
        assert row[key] == value, (row["step"], key)
      else:
        np.testing.assert_allclose(row[key], value, rtol=rtol, atol=atol,
                                   err_msg=f"step {row['step']} {key}")
        largest = max(largest, float(np.max(np.abs(np.subtract(row[key], value)))))
  print(f"largest metric difference: {largest:.3g}")  # Shown with pytest -s.


def assert_leaves_close(expected, actual, rtol=1e-5, atol=1e-6):
  largest = 0.0
  for a, b in zip(leaves(expected), leaves(actual), strict=True):
    np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)
    if a.size and np.issubdtype(a.dtype, np.floating):
      largest = max(largest, float(np.max(np.abs(a - b))))
  print(f"largest state difference: {largest:.3g}")


def read_bytes(path):
  with open(path, "rb") as f:
    return f.read()


@pytest.fixture(scope="module")
def subprocess_env(tmp_path_factory):
  """Environment of the training subprocesses: this checkout, and a compilation cache shared
  by them (a restart loads the executables the first launch compiled)."""
  return dict(os.environ, PYTHONPATH=REPO,
              JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """The uninterrupted 12-step run on the 4 test devices: (workdir, final state)."""
  workdir = str(tmp_path_factory.mktemp("straight"))
  return workdir, train.train_and_evaluate(config(), workdir)


def test_sigterm_sigkill_crash_then_resume_is_bit_identical(straight, subprocess_env, tmp_path,
                                                            monkeypatch):
  """One run hit by all three faults, restarted each time with the same command."""
  straight_dir, straight_state = straight
  workdir = str(tmp_path / "faulty")
  env = subprocess_env

  # 1. SIGTERM from outside once the checkpoint at step 3 is on disk (steps are slowed to
  #    0.3 s from step 3 on, so the run is mid-way): it must save and exit cleanly, fast.
  proc = subprocess.Popen(command_line(workdir), cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True,
                          env=dict(env, FAULT_SLEEP_FROM="3"))
  deadline = time.time() + 300
  while not os.path.isdir(os.path.join(workdir, "checkpoints", "3")):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
    time.sleep(0.1)
  signalled = time.time()
  proc.send_signal(signal.SIGTERM)
  output = proc.communicate(timeout=120)[0]
  exit_seconds = time.time() - signalled
  assert proc.returncode == 0, output[-3000:]
  # Bounded: one step, a blocking checkpoint write and the shutdown. Measured ~1-3 s on an
  # idle 2-core VM; the bound leaves room for a machine loaded by parallel tests.
  assert exit_seconds < 60, exit_seconds
  print(f"SIGTERM to exit: {exit_seconds:.1f} s")  # Shown with pytest -s (docs/reliability.md).
  stopped_at = checkpointing.Checkpointer(workdir, keep=KEEP).latest_step()
  assert 3 < stopped_at < STEPS and f"Stopped at step {stopped_at}" in output
  split_bytes = read_bytes(os.path.join(workdir, "labelled_indices.json"))

  # 2. Restart; SIGKILL just before step 8 (between the checkpoints at 6 and 9, possibly
  #    while the one at 6 is still being written in the background).
  result = subprocess.run(command_line(workdir), cwd=REPO, capture_output=True, text=True,
                          env=dict(env, FAULT_SIGKILL_AT="7"), timeout=300)
  assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
  assert f"Resumed from the checkpoint at step {stopped_at}" in result.stderr
  assert read_bytes(os.path.join(workdir, "labelled_indices.json")) == split_bytes

  # 3. Restart in this process; a crash (an exception) before step 11.
  make_train_step, checkpointers = steps.make_train_step, []

  def crashing_make_train_step(*args, **kwargs):
    step_fn = make_train_step(*args, **kwargs)

    def step(state, batch):
      if int(state.step) == 10:
        raise RuntimeError("injected crash")
      return step_fn(state, batch)
    return step

  class RecordingCheckpointer(checkpointing.Checkpointer):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      checkpointers.append(self)

  monkeypatch.setattr(steps, "make_train_step", crashing_make_train_step)
  monkeypatch.setattr(checkpointing, "Checkpointer", RecordingCheckpointer)
  with pytest.raises(RuntimeError, match="injected crash"):
    train.train_and_evaluate(config(), workdir)
  checkpointers[-1].wait()  # As interpreter exit would: let the in-flight write finish.
  assert checkpointers[-1].latest_step() == 9

  # 4. Restart: finishes, and matches the run that was never interrupted, bit for bit.
  monkeypatch.setattr(steps, "make_train_step", make_train_step)
  final = train.train_and_evaluate(config(), workdir)
  assert int(final.step) == STEPS
  for a, b in zip(leaves(straight_state), leaves(final), strict=True):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(leaves(straight_state), leaves(restore(workdir, final)), strict=True):
    np.testing.assert_array_equal(a, b)
  assert rows_without_timings(workdir) == rows_without_timings(straight_dir)
  assert read_bytes(os.path.join(workdir, "labelled_indices.json")) == split_bytes
  assert split_bytes == read_bytes(os.path.join(straight_dir, "labelled_indices.json"))


def test_checkpoint_of_another_config_is_refused(straight, tmp_path):
  """The config stored inside each checkpoint is checked, even without config.json."""
  workdir = str(tmp_path / "copy")
  shutil.copytree(straight[0], workdir)
  os.remove(os.path.join(workdir, train.CONFIG_FILE))  # Deleted, or from another run.
  with pytest.raises(train.ConfigMismatchError) as error:
    train.train_and_evaluate(config(**{"algo.threshold": 0.9, "optim.lr": 0.01}), workdir)
  message = str(error.value)
  assert "Checkpoint" in message and f"checkpoints{os.sep}{STEPS}" in message
  assert "algo.threshold: saved 0.95, new config has 0.9" in message
  assert "optim.lr: saved 0.03, new config has 0.01" in message
  assert "allow_config_change" in message
  assert "seed" not in message  # Only the differing keys are named.


def test_resuming_onto_other_shapes_is_a_clear_error(straight, tmp_path):
  """A model/dataset change (image size) accepted by allow_config_change cannot restore."""
  workdir = str(tmp_path / "copy")
  shutil.copytree(straight[0], workdir)
  changed = tiny.get_config(f"steps={STEPS}")
  changed.train.keep_checkpoints = KEEP
  changed.train.allow_config_change = True
  changed.model.width = 16
  changed.lock()
  with pytest.raises(checkpointing.CheckpointError) as error:
    train.train_and_evaluate(changed, workdir)
  message = str(error.value)
  assert "model.width: saved 8, new config has 16" in message
  assert "not compatible with the stored shape" in message


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_and_share_checkpoints(straight, subprocess_env, tmp_path):
  """Two CPU processes x 2 devices (jax.distributed, gloo) resume the single-process run's
  step-6 checkpoint and finish it: same result as the single process, one set of files."""
  straight_dir, straight_state = straight
  workdir = str(tmp_path / "two_processes")
  shutil.copytree(straight_dir, workdir)
  for step in (9, 12):  # Keep the single-process checkpoints up to step 6.
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(step)))
  os.remove(os.path.join(workdir, train.SUMMARY_FILE))
  address = f"127.0.0.1:{free_port()}"
  env = dict(subprocess_env,
             XLA_FLAGS="--xla_force_host_platform_device_count=2 "
                       "--xla_cpu_collective_call_terminate_timeout_seconds=600")
  procs = [subprocess.Popen(
      command_line(workdir, "--distributed", f"--coordinator_address={address}",
                   "--num_processes=2", f"--process_id={i}"),
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=400)[0] for p in procs]
  for p, output in zip(procs, outputs, strict=True):
    assert p.returncode == 0, output[-3000:]
    assert "Resumed from the checkpoint at step 6" in output
    assert "JAX process" in output and "/2" in output
  # Written once: one directory per step, and the processes split the replicated arrays
  # between them (orbax's ocdbt.process_<i> files): together they hold as many bytes of
  # array data as the single-process checkpoint, not one copy per process.
  assert checkpointing.Checkpointer(workdir, keep=KEEP).all_steps() == [3, 6, 9, 12]
  def array_bytes(workdir, process):
    root = os.path.join(workdir, "checkpoints", "12", "default", f"ocdbt.process_{process}")
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(root)
               for f in names)
  single, split = array_bytes(straight_dir, 0), [array_bytes(workdir, p) for p in (0, 1)]
  # A copy per process would be >= 2x. The files' own overhead varies with how the two
  # writers chunk their data (1.14x in a quiet run, 1.33x once under CI's parallel load).
  assert min(split) > 0 and sum(split) < 1.6 * single, (split, single)
  # Restorable by this single process (4 devices), equal to the single-process run. The
  # gloo all-reduce over 2 processes sums in another order than the in-process one.
  assert_leaves_close(straight_state, restore(workdir, straight_state))
  assert_rows_close(rows_without_timings(workdir), rows_without_timings(straight_dir))


@pytest.mark.parametrize("num_devices", [1, 2])
def test_same_metrics_on_1_2_and_4_devices(straight, tmp_path, monkeypatch, num_devices):
  """The step is one function of the global batch: the mesh size changes only the order of
  float reductions (BatchNorm statistics, losses, gradients), not the result."""
  straight_dir, straight_state = straight
  make_mesh = steps.make_mesh
  monkeypatch.setattr(steps, "make_mesh",
                      lambda devices=None: make_mesh(jax.devices()[:num_devices]))
  state = train.train_and_evaluate(config(), str(tmp_path))
  assert len(jax.tree.leaves(state.params)[0].sharding.device_set) == num_devices
  assert_leaves_close(straight_state, state)
  assert_rows_close(rows_without_timings(str(tmp_path)), rows_without_timings(straight_dir))
