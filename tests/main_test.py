"""The CLI's CPU defaults: one XLA host device per core, set before any backend starts."""

import os
import subprocess
import sys

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
