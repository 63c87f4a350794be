"""Test set-up: 4 fake CPU devices, no network, quiet TensorFlow.

The XLA flag must be set before JAX initialises its backends, so it is set here,
at import time of the test session, before any test module imports jax.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    # 4 fake devices on 2 cores, with pytest-xdist workers beside them: give collectives
    # time (XLA:CPU's default aborts after 40 s).
    " --xla_cpu_collective_call_terminate_timeout_seconds=600"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# TFDS must never reach the network in tests.
os.environ.setdefault("TFDS_DATA_DIR", "/nonexistent-tfds-dir")

import tensorflow as tf  # noqa: E402

# Keep TensorFlow off any accelerator and small on CPU: JAX owns the devices.
tf.config.set_visible_devices([], "GPU")
