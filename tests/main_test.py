"""The CLI's CPU defaults: one XLA host device per core and Eigen convolutions, set before
any backend starts, tcmalloc preloaded by a restart when installed, and the cap on glibc's
malloc arenas."""

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from fixmatch_jax import configs, main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cpu_device_count_is_the_largest_count_dividing_every_batch():
  config = configs.base_config()
  config.data.batch_size, config.data.mu, config.data.eval_batch_size = 6, 7, 1024
  # Batches 6, 42, 1024 with 4 cores: 4 does not divide 6, 3 does not divide 1024 -> 2.
  assert main.cpu_device_count(config, cores=4) == 2
  config.data.eval_batch_size = 1026
  assert main.cpu_device_count(config, cores=4) == 3
  config.train.cpu_devices = 1
  assert main.cpu_device_count(config, cores=4) == 1


def test_devices_are_forced_even_when_jax_was_imported_by_the_config():
  # Loading an experiment file imports the algorithm registry, hence JAX; XLA reads
  # XLA_FLAGS only when the first backend starts, so the CLI must still set them.
  code = (
      "import jax, fixmatch_jax.algorithms\n"
      "from fixmatch_jax import configs, main\n"
      "config = configs.base_config()\n"
      "config.train.cpu_devices = 2\n"
      "main.set_cpu_xla_flags(config)\n"
      "print(len(jax.devices()))\n")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True, timeout=120)
  assert out.stdout.strip().splitlines()[-1] == "2"


def _arenas_after_threads_allocate(cap: int) -> int:
  """Arenas glibc reports (malloc_stats) after 4 threads each malloc, with the CLI's cap."""
  code = (
      "import ctypes, threading\n"
      "from fixmatch_jax import main\n"
      f"applied = main.limit_malloc_arenas({cap})\n"
      "libc = ctypes.CDLL(None)\n"
      "libc.malloc.restype = ctypes.c_void_p\n"
      "barrier = threading.Barrier(4)\n"
      "def work():\n"
      "  barrier.wait()\n"
      "  for _ in range(100):\n"
      "    libc.malloc(4096)\n"
      "threads = [threading.Thread(target=work) for _ in range(4)]\n"
      "[t.start() for t in threads]; [t.join() for t in threads]\n"
      "libc.malloc_stats()\n"
      "print(applied)\n")
  env = {k: v for k, v in os.environ.items()
         if k not in ("MALLOC_ARENA_MAX", "LD_PRELOAD", main.MALLOC_ENV)}
  env.update(PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True, timeout=120)
  assert out.stdout.strip() == str(cap > 0)
  # glibc prints one "Arena N:" block per arena to stderr.
  return sum(line.startswith("Arena ") for line in out.stderr.splitlines())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_malloc_arena_cap_holds_for_new_threads():
  # The oracle is glibc's own count; without the cap the same threads get arenas of their own.
  assert _arenas_after_threads_allocate(0) > 2
  assert _arenas_after_threads_allocate(2) <= 2


def test_malloc_arena_cap_yields_to_the_environment(monkeypatch):
  monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
  assert not main.limit_malloc_arenas(2)
  monkeypatch.delenv("MALLOC_ARENA_MAX")
  assert not main.limit_malloc_arenas(0)


def test_allocator_choice_and_its_errors(monkeypatch):
  assert main.allocator_library("glibc") is None
  assert main.allocator_environment("glibc") == {main.MALLOC_ENV: "glibc"}
  with pytest.raises(ValueError, match="Unknown allocator"):
    main.allocator_library("jemalloc")
  monkeypatch.setattr(main, "find_tcmalloc", lambda: None)
  assert main.allocator_library("auto") is None  # Not installed: glibc, no error.
  with pytest.raises(ValueError, match="apt-get install libtcmalloc-minimal4"):
    main.allocator_library("tcmalloc")
  if sys.platform.startswith("linux"):
    monkeypatch.setattr(main, "find_tcmalloc", lambda: "libtcmalloc_minimal.so.4")
    assert main.allocator_environment("auto") == {
        main.MALLOC_ENV: "libtcmalloc_minimal.so.4", "LD_PRELOAD": "libtcmalloc_minimal.so.4"}


# Prints its PID, asks for the allocator of argv[1], then reports which malloc is mapped.
RESTART = """
import os, sys
from fixmatch_jax import main
print("pid", os.getpid(), flush=True)
main.restart_with_allocator(sys.argv[1])
with open("/proc/self/maps") as f:
  mapped = "tcmalloc" if "tcmalloc" in f.read() else "glibc"
print(mapped, os.environ.get(main.MALLOC_ENV), " ".join(sys.argv[1:]))
"""


def _restart(*args, **env):
  clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", main.MALLOC_ENV)}
  out = subprocess.run([sys.executable, "-c", RESTART, *args], capture_output=True, text=True,
                       env=dict(clean, PYTHONPATH=REPO, **env), check=True, timeout=120)
  lines = out.stdout.strip().splitlines()
  return [line.split()[1] for line in lines if line.startswith("pid ")], lines[-1]


@pytest.mark.skipif(not sys.platform.startswith("linux") or main.find_tcmalloc() is None,
                    reason="needs tcmalloc (.ci/run installs libtcmalloc-minimal4)")
def test_restart_preloads_tcmalloc_in_the_same_process_with_the_same_arguments():
  pids, last = _restart("auto", "--flag=1")
  # The script ran twice (before and after the exec) as one process, with its arguments.
  assert len(pids) == 2 and pids[0] == pids[1]
  assert last.split()[0] == "tcmalloc" and "tcmalloc" in last.split()[1]
  assert last.endswith("auto --flag=1")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_restart_leaves_glibc_and_a_users_preload_alone():
  pids, last = _restart("glibc")
  assert len(pids) == 1 and last.split()[:2] == ["glibc", "glibc"]
  # The user's own LD_PRELOAD (here one that ld.so cannot find and skips) wins: no restart.
  pids, last = _restart("auto", LD_PRELOAD="libnot-installed-here.so")
  assert len(pids) == 1 and last.split()[:2] == ["glibc", "None"]


def test_process_environment_replaces_any_allocator_setting_of_the_base(monkeypatch):
  base = {"PATH": "/bin", "LD_PRELOAD": "libjemalloc.so.2", main.MALLOC_ENV: "x"}
  assert main.process_environment("glibc", base) == {"PATH": "/bin", main.MALLOC_ENV: "glibc"}
  if sys.platform.startswith("linux"):
    monkeypatch.setattr(main, "find_tcmalloc", lambda: "libtcmalloc_minimal.so.4")
    assert main.process_environment("auto", base) == {
        "PATH": "/bin", main.MALLOC_ENV: "libtcmalloc_minimal.so.4",
        "LD_PRELOAD": "libtcmalloc_minimal.so.4"}


_CONV_PROBE = """
import json, sys
import numpy as np
from fixmatch_jax import configs, main
config = configs.base_config()
config.train.cpu_devices = 1
config.train.cpu_convolutions = sys.argv[1]
added = main.set_cpu_xla_flags(config)
import jax
from jax import lax
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 8, 8, 32), np.float32)
w = rng.standard_normal((3, 3, 32, 32), np.float32)
g = rng.standard_normal((4, 8, 8, 32), np.float32)
def conv(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
def forward_and_gradients(x, w, g):
  y, vjp = jax.vjp(conv, x, w)
  return (y, *vjp(g))
fn = jax.jit(forward_and_gradients)
hlo = fn.lower(x, w, g).compile().as_text()
y, dx, dw = fn(x, w, g)
np.savez(sys.argv[2], y=y, dx=dx, dw=dw)
print(json.dumps(dict(added=added, ynn_fusions=hlo.count('"__ynn_fusion"'),
                      convolutions=hlo.count(" convolution("))))
"""


def _conv_probe(choice: str, out: str) -> dict:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  run = subprocess.run([sys.executable, "-c", _CONV_PROBE, choice, out], env=env,
                       capture_output=True, text=True, check=True, timeout=120)
  return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not main.xla_has_eigen_convolutions_flag(),
                    reason="this jaxlib has no YNNPACK fusion flag")
def test_eigen_convolutions_leave_ynnpack_and_compute_the_same_gradients(tmp_path):
  eigen = _conv_probe("eigen", str(tmp_path / "eigen.npz"))
  xla = _conv_probe("xla", str(tmp_path / "xla.npz"))
  assert eigen["added"][-1] == main.EIGEN_CONVOLUTIONS_FLAG
  assert main.EIGEN_CONVOLUTIONS_FLAG not in " ".join(xla["added"])
  # The oracle is the compiled HLO: with the flag, the forward convolution and both of its
  # gradients stay XLA convolution thunks (Eigen); without it XLA wraps each of the three in
  # a YNNPACK fusion.
  assert (eigen["ynn_fusions"], eigen["convolutions"]) == (0, 3)
  assert (xla["ynn_fusions"], xla["convolutions"]) == (3, 3)
  a, b = np.load(tmp_path / "eigen.npz"), np.load(tmp_path / "xla.npz")
  for key in ("y", "dx", "dw"):
    np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-3 * np.abs(b[key]).max())


def test_eigen_convolutions_flag_yields_to_the_user_and_to_old_jaxlibs(monkeypatch, caplog):
  monkeypatch.setattr(main, "jax_backends_initialized", lambda: False)
  config = configs.base_config()
  assert config.train.cpu_convolutions == "onednn"  # Its leftover convolutions: Eigen's.
  own = "--xla_force_host_platform_device_count=1 --xla_cpu_experimental_ynn_fusion_type=+eltwise"
  monkeypatch.setenv("XLA_FLAGS", own)
  assert main.set_cpu_xla_flags(config) == [] and os.environ["XLA_FLAGS"] == own
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  monkeypatch.setattr(main, "xla_has_eigen_convolutions_flag", lambda: False)
  with caplog.at_level("WARNING"):
    assert main.set_cpu_xla_flags(config) == []
  assert "lacks" in caplog.text and main.EIGEN_CONVOLUTIONS_FLAG in caplog.text
  monkeypatch.setattr(main, "xla_has_eigen_convolutions_flag", lambda: True)
  assert main.set_cpu_xla_flags(config) == [main.EIGEN_CONVOLUTIONS_FLAG]
  assert os.environ["XLA_FLAGS"].endswith(main.EIGEN_CONVOLUTIONS_FLAG)
  config.train.cpu_convolutions = "xla"
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  assert main.set_cpu_xla_flags(config) == []
  with pytest.raises(ValueError, match="convolutions='mkl'"):
    main.cpu_xla_flags(2, "mkl")
  # With "onednn", the flag only where this jaxlib has it (XLA aborts on unknown flags).
  assert main.cpu_xla_flags(2, "onednn").endswith(main.EIGEN_CONVOLUTIONS_FLAG)
  monkeypatch.setattr(main, "xla_has_eigen_convolutions_flag", lambda: False)
  assert main.EIGEN_CONVOLUTIONS_FLAG not in main.cpu_xla_flags(2, "onednn")
