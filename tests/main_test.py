"""The CLI's CPU defaults: one XLA host device per core, set before any backend starts, and
the cap on glibc's malloc arenas."""

import os
import platform
import subprocess
import sys

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
      "main.set_cpu_devices(config)\n"
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
  env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
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
