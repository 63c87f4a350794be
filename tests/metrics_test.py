"""Metric logging and the run summary (median of the last N EMA evaluations)."""

import json
import os

import jax.numpy as jnp
import numpy as np

from fixmatch_jax import metrics


def test_average_over_steps_scalars_and_vectors():
  steps = [{"a": jnp.float32(1.0), "v": jnp.array([0.0, 1.0])},
           {"a": jnp.float32(3.0), "v": jnp.array([1.0, 1.0])}]
  out = metrics.average(steps)
  assert out["a"] == 2.0
  np.testing.assert_allclose(out["v"], [0.5, 1.0])


def test_logger_writes_jsonl_and_truncate(tmp_path):
  logger = metrics.MetricLogger(str(tmp_path))
  for step in (10, 20, 30):
    logger.write(step, {"train/loss": np.float32(step), "train/per_class": np.array([1, 2])})
  logger.close()
  rows = metrics.read(str(tmp_path))
  assert [r["step"] for r in rows] == [10, 20, 30]
  assert rows[0]["train/per_class"] == [1, 2]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))
  metrics.truncate_after(str(tmp_path), 20)
  assert [r["step"] for r in metrics.read(str(tmp_path))] == [10, 20]


def test_summary_is_median_of_last_n_ema_evals():
  accs = [0.1, 0.9, 0.5, 0.7, 0.6, 0.8]
  rows = [{"step": i, "eval/acc_ema": a, "eval/acc": a - 0.05} for i, a in enumerate(accs)]
  rows.insert(2, {"step": 1, "train/loss": 1.0})  # Training rows are ignored.
  summary = metrics.summarize(rows, last_n=4)
  # Hand computation: last four EMA accuracies 0.5, 0.7, 0.6, 0.8 -> median 0.65.
  assert abs(summary["acc_ema_median_last4"] - 0.65) < 1e-12
  assert summary["acc_ema_best_of_run"] == 0.9
  assert summary["num_evals_in_median"] == 4
  assert abs(summary["acc_raw_final"] - 0.75) < 1e-12
  json.dumps(summary)


def test_run_info_records_hardware_once_per_machine(tmp_path):
  info = metrics.write_run_info(str(tmp_path))
  assert info["hardware"].startswith("4 x cpu (")  # conftest: 4 fake CPU devices.
  with open(tmp_path / metrics.RUN_INFO_FILE) as f:
    stored = json.load(f)
  stored["date"] = "2020-01-01"
  with open(tmp_path / metrics.RUN_INFO_FILE, "w") as f:
    json.dump(stored, f)
  again = metrics.write_run_info(str(tmp_path))  # A resumed run on the same machine.
  assert again["date"] == "2020-01-01" and again["hardware"] == info["hardware"]


def test_run_info_records_the_allocator_fixmatch_jax_main_chose(tmp_path, monkeypatch):
  from fixmatch_jax import main  # noqa: PLC0415
  assert metrics.ALLOCATOR_ENV == main.MALLOC_ENV  # The name main sets is the one read here.
  monkeypatch.delenv("LD_PRELOAD", raising=False)
  monkeypatch.delenv(main.MALLOC_ENV, raising=False)
  assert metrics.write_run_info(str(tmp_path))["allocator"] == "glibc"
  monkeypatch.setenv(main.MALLOC_ENV, "libtcmalloc_minimal.so.4")
  assert metrics.write_run_info(str(tmp_path))["allocator"] == "libtcmalloc_minimal.so.4"
  monkeypatch.delenv(main.MALLOC_ENV)
  monkeypatch.setenv("LD_PRELOAD", "/opt/lib/libjemalloc.so.2")  # The user's own preload.
  assert metrics.write_run_info(str(tmp_path))["allocator"] == "/opt/lib/libjemalloc.so.2"


def test_run_info_records_the_xla_flags(tmp_path, monkeypatch):
  from fixmatch_jax import main  # noqa: PLC0415
  flags = main.cpu_xla_flags(2, "eigen")
  monkeypatch.setenv("XLA_FLAGS", flags)
  info = metrics.write_run_info(str(tmp_path))
  assert info["xla_flags"] == flags and main.EIGEN_CONVOLUTIONS_FLAG in info["xla_flags"]
