"""oneDNN convolutions (models/onednn.py) against XLA's own, on 1 and 4 fake CPU devices.

Oracles: lax.conv_general_dilated (XLA's Eigen/YNNPACK kernels, another library) for the
output and both gradients; the same FixMatch train step with XLA's convolutions; the
compiled HLO for where the custom calls run (each device on its own images).
"""
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fixmatch_jax import algorithms, models, optim, steps, train_state
from fixmatch_jax.models import conv as conv_lib
from fixmatch_jax.models import onednn

NHWC = ("NHWC", "HWIO", "NHWC")


def _loss(conv_fn, strides, padding):
  def loss(x, w):
    y = conv_fn(x, w, strides, padding, dimension_numbers=NHWC)
    return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)
  return loss


def _value_and_grads(conv_fn, x, w, strides, padding):
  return jax.jit(jax.value_and_grad(_loss(conv_fn, strides, padding), (0, 1)))(x, w)


def _assert_close(ours, reference, atol=None):
  """Equal to float32 rounding: 2e-5 of each array's largest magnitude, or `atol`."""
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
    scale = float(jnp.max(jnp.abs(b))) or 1.0
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * scale if atol is None else atol)


@pytest.mark.parametrize("shape,kernel,strides,padding", [
    ((6, 9, 9, 5), (3, 3, 5, 7), (1, 1), "SAME"),  # WRN's 3x3 convs (odd size).
    ((6, 10, 10, 4), (3, 3, 4, 8), (2, 2), "SAME"),  # First conv of a group.
    ((6, 10, 10, 4), (1, 1, 4, 8), (2, 2), "SAME"),  # The 1x1 shortcut.
    ((4, 8, 6, 3), (3, 2, 3, 5), (1, 1), "VALID"),  # Non-square everything.
    ((4, 7, 7, 3), (3, 3, 3, 2), (2, 1), ((0, 2), (1, 0))),  # Asymmetric explicit padding.
])
def test_output_and_both_gradients_match_xla(shape, kernel, strides, padding):
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.randn(*shape), jnp.float32)
  w = jnp.asarray(rng.randn(*kernel), jnp.float32)
  y = onednn.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)
  y_xla = jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)
  assert y.shape == y_xla.shape
  _assert_close(y, y_xla)
  _assert_close(_value_and_grads(onednn.conv_general_dilated, x, w, strides, padding),
                _value_and_grads(jax.lax.conv_general_dilated, x, w, strides, padding))


def test_unsupported_calls_go_to_xla():
  calls = []
  original = onednn.conv
  try:
    onednn.conv = lambda *a: calls.append(a) or original(*a)
    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    onednn.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)
    assert len(calls) == 1
    for kwargs in (dict(rhs_dilation=(2, 2)), dict(preferred_element_type=jnp.float32)):
      onednn.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC, **kwargs)
    onednn.conv_general_dilated(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), (1, 1),
                                "SAME", dimension_numbers=NHWC)
    onednn.conv_general_dilated(jnp.ones((2, 3, 8, 8)), jnp.ones((4, 3, 3, 3)), (1, 1),
                                "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    onednn.conv_general_dilated(jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 2, 4)), (1, 1),
                                "SAME", dimension_numbers=NHWC, feature_group_count=2)
    assert len(calls) == 1
  finally:
    onednn.conv = original


def _mesh_fn(mesh, fn):
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(steps.DATA_AXIS))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.jit(steps.under_mesh(fn, mesh), in_shardings=(sharded, replicated))


def test_under_a_mesh_each_device_convolves_its_own_images():
  mesh = steps.make_mesh(jax.devices()[:4])
  rng = np.random.RandomState(1)
  x = jnp.asarray(rng.randn(8, 6, 6, 3), jnp.float32)
  w = jnp.asarray(rng.randn(3, 3, 3, 4), jnp.float32)
  fn = jax.value_and_grad(_loss(onednn.conv_general_dilated, (1, 1), "SAME"), (0, 1))
  ours = _mesh_fn(mesh, fn)
  text = ours.lower(x, w).compile().as_text()
  calls = [line for line in text.splitlines() if "FixmatchOnednnConv" in line]
  assert len(calls) == 3, calls  # Forward, input gradient, weight gradient.
  for line in calls:  # Per-device shapes: 2 of the 8 images (kernel gradient: HWIO).
    assert re.search(r"f32\[2,6,6,[34]\]|f32\[3,3,3,4\]", line.split("=")[1]), line
  assert " all-gather(" not in text and " all-gather-start(" not in text
  # The kernel gradient is summed over the 4 devices.
  _assert_close(ours(x, w), _value_and_grads(jax.lax.conv_general_dilated, x, w, (1, 1),
                                             "SAME"))


def test_devices_calling_at_the_same_time_do_not_share_scratch_memory():
  # XLA runs the 4 devices' custom calls on 4 threads at once. With oneDNN's default
  # (one library-owned scratchpad shared by all primitives) this gave different, wrong
  # gradients on every one of 30 repeats (relative errors up to 1.4); each call now brings
  # its thread's own scratchpad.
  mesh = steps.make_mesh(jax.devices()[:4])
  rng = np.random.RandomState(1)
  x = jnp.asarray(rng.randn(16, 8, 8, 16), jnp.float32)
  ws = [jnp.asarray(rng.randn(3, 3, 16, 16) * 0.1, jnp.float32) for _ in range(6)]

  def net(conv_fn):
    def loss(x, ws):
      for w in ws:
        x = jnp.tanh(conv_fn(x, w, (1, 1), "SAME", dimension_numbers=NHWC))
      return jnp.sum(x**2)
    return jax.value_and_grad(loss, (0, 1))

  ours = _mesh_fn(mesh, net(onednn.conv_general_dilated))
  first = jax.device_get(ours(x, ws))
  _assert_close(first, jax.jit(net(jax.lax.conv_general_dilated))(x, ws))
  for _ in range(10):
    again = jax.device_get(ours(x, ws))
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(first), strict=True):
      np.testing.assert_array_equal(a, b)


def test_a_batch_that_does_not_split_over_the_mesh_still_computes_the_right_thing():
  mesh = steps.make_mesh(jax.devices()[:4])
  rng = np.random.RandomState(2)
  x = jnp.asarray(rng.randn(8, 6, 6, 3), jnp.float32)
  w = jnp.asarray(rng.randn(3, 3, 3, 4), jnp.float32)
  # 8 images are sharded over the devices, but the convolution sees 6 of them.
  fn = lambda x, w: _loss(onednn.conv_general_dilated, (1, 1), "SAME")(x[:6], w)
  ours = _mesh_fn(mesh, jax.value_and_grad(fn, (0, 1)))(x, w)
  reference = jax.value_and_grad(
      lambda x, w: _loss(jax.lax.conv_general_dilated, (1, 1), "SAME")(x[:6], w), (0, 1))(x, w)
  _assert_close(ours, reference)


def test_inside_a_user_shard_map_it_follows_jax_semantics():
  """In a shard_map over "data" (check_vma on) the calls stay on each device's images, and
  the gradient of a replicated kernel is the sum over devices, as JAX gives for lax's."""
  mesh = steps.make_mesh(jax.devices()[:4])
  rng = np.random.RandomState(3)
  x = jnp.asarray(rng.randn(16, 6, 6, 3), jnp.float32)  # 4 images per device.
  w = jnp.asarray(rng.randn(3, 3, 3, 4), jnp.float32)
  data, replicated = jax.sharding.PartitionSpec(steps.DATA_AXIS), jax.sharding.PartitionSpec()

  def run(conv_fn):
    def per_device(x, w):
      y, vjp = jax.vjp(lambda x, w: conv_fn(x, w, (1, 1), "SAME", dimension_numbers=NHWC),
                       x, w)
      return (y, *vjp(jnp.sin(y)))
    return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(data, replicated),
                                 out_specs=(data, data, replicated)))(x, w)

  ours = run(onednn.conv_general_dilated)
  _assert_close(ours, run(jax.lax.conv_general_dilated))
  y, vjp = jax.vjp(lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=NHWC), x, w)
  _assert_close(ours, (y, *vjp(jnp.sin(y))))


def test_models_use_onednn_only_when_asked_and_on_the_cpu():
  config = ml_collections.ConfigDict(dict(name="wrn10_1"))
  assert models.create(config, 10).conv_kernels == "xla"
  assert models.create(config, 10, "eigen").conv_kernels == "xla"
  assert models.create(config, 10, "onednn").conv_kernels == "onednn"
  # Models without the field (cnn_small) are unaffected.
  small = models.create(ml_collections.ConfigDict(dict(name="cnn_small")), 10, "onednn")
  assert not hasattr(small, "conv_kernels")
  with pytest.raises(ValueError, match="conv_kernels='cudnn'"):
    conv_lib.for_model(-1, "cudnn")


def _fixmatch_step(cpu_convolutions, num_devices):
  config = ml_collections.ConfigDict(dict(
      seed=0, algorithm="fixmatch",
      algo=dict(threshold=0.5, lambda_u=1.0, temperature=1.0, soft_labels=False),
      model=dict(name="wrn10_1"),
      optim=dict(name="sgd", lr=0.03, momentum=0.9, nesterov=True, weight_decay=5e-4,
                 schedule="cosine", cosine_cycles=7 / 16, warmup_steps=0, ema_decay=0.999)))
  model = models.create(config.model, 4, cpu_convolutions)
  tx = optim.create_optimizer(config.optim, num_steps=10)
  lr_fn = optim.learning_rate_schedule(config.optim, num_steps=10)
  algorithm = algorithms.get("fixmatch")
  state = train_state.create(model, tx, algorithm, jax.random.key(0, impl="rbg"),
                             (1, 8, 8, 3), config)
  rng = np.random.RandomState(0)
  images = lambda n: rng.randint(0, 256, (n, 8, 8, 3)).astype(np.uint8)
  batch = {"labelled": {"image": images(4), "label": rng.randint(0, 4, 4).astype(np.int32)},
           "unlabelled": {"weak": images(8), "strong": images(8),
                          "index": np.arange(8, dtype=np.int32),
                          "label": rng.randint(0, 4, 8).astype(np.int32)}}
  mesh = steps.make_mesh(jax.devices()[:num_devices])
  step = steps.make_train_step(model, algorithm, tx, lr_fn, config, mesh)
  new_state, metrics = step(steps.replicate(mesh, state), steps.shard_batch(mesh, batch))
  text = step.lower(steps.replicate(mesh, state), steps.shard_batch(mesh, batch)).as_text()
  return jax.device_get((new_state.params, metrics)), text


def test_fixmatch_step_with_onednn_matches_xla_on_one_and_four_devices():
  (params_xla, metrics_xla), text_xla = _fixmatch_step("xla", 4)
  assert "FixmatchOnednnConv" not in text_xla
  for devices in (1, 4):
    (params, metrics), text = _fixmatch_step("onednn", devices)
    # WRN-10-1 has 9 convolutions: 9 forward, 9 weight-gradient and 8 input-gradient calls
    # (the images need no gradient: JAX drops the stem's).
    assert text.count("FixmatchOnednnConv") == 26, devices
    for name in metrics_xla:
      np.testing.assert_allclose(metrics[name], metrics_xla[name], rtol=1e-4, atol=1e-5,
                                 err_msg=name)
    # Parameters (about unit scale) after one update; the conv biases' gradients are
    # rounding noise (~1e-9: a bias before BatchNorm has no effect), hence an absolute bound.
    _assert_close(params, params_xla, atol=1e-6)


def test_missing_onednn_names_the_fix(monkeypatch, tmp_path):
  monkeypatch.setattr(onednn, "_prefixes", lambda: [tmp_path])
  with pytest.raises(onednn.OneDnnUnavailable,
                     match=r"(?s)not found.*pip install onednn-cpu-gomp.*cpu_convolutions=eigen"):
    onednn.find_onednn()


def test_a_failed_build_reports_the_compiler_error_and_the_fix(monkeypatch, tmp_path):
  broken = tmp_path / "broken.cc"
  broken.write_text("this is not C++\n")
  monkeypatch.setattr(onednn, "SOURCE", broken)
  monkeypatch.setenv("FIXMATCH_JAX_CACHE", str(tmp_path / "cache"))
  with pytest.raises(onednn.OneDnnUnavailable, match=r"(?s)compiling.*broken.cc.*error.*fix:"):
    onednn.build()
  assert not list((tmp_path / "cache" / "native").glob("*"))  # No half-built library left.


def test_the_library_is_built_once_and_cached(monkeypatch, tmp_path):
  monkeypatch.setenv("FIXMATCH_JAX_CACHE", str(tmp_path))
  first = onednn.build()
  assert first.parent == tmp_path / "native" and first.is_file()
  mtime = first.stat().st_mtime_ns
  assert onednn.build() == first and first.stat().st_mtime_ns == mtime
  # Another source (an edit) builds another library.
  edited = tmp_path / "edited.cc"
  edited.write_text(onednn.SOURCE.read_text() + "\n// edited\n")
  monkeypatch.setattr(onednn, "SOURCE", edited)
  assert onednn.build() != first


def test_threads_per_call_divides_the_cores_over_the_local_devices():
  cores = len(os.sched_getaffinity(0))
  assert onednn.threads_per_call() == max(1, cores // jax.local_device_count())


def test_source_is_shipped_with_the_package():
  assert onednn.SOURCE.is_file()
  setup = (pathlib.Path(__file__).parents[2] / "setup.py").read_text()
  assert "native/*.cc" in setup


def test_training_falls_back_to_eigen_where_onednn_is_missing_and_says_why(monkeypatch, caplog):
  wrn = ml_collections.ConfigDict(dict(name="wrn10_1"))
  model = models.create(wrn, 10, "onednn")
  assert model.conv_kernels == "onednn"
  info = onednn.cpu_convolutions_info("onednn", model)
  assert info["cpu_convolutions"] == "onednn"
  assert re.fullmatch(r"3\.\d+\.\d+", info["onednn_version"])
  monkeypatch.setattr(onednn, "unavailable_reason", lambda: "no oneDNN on this machine")
  with caplog.at_level("WARNING"):
    model = models.create(wrn, 10, "onednn")
  assert model.conv_kernels == "xla"
  assert onednn.cpu_convolutions_info("onednn", model) == {"cpu_convolutions": "eigen"}
  assert "no oneDNN on this machine" in caplog.text and "Eigen" in caplog.text
  assert models.create(wrn, 10, "xla").conv_kernels == "xla"
  assert onednn.cpu_convolutions_info("xla", model) == {"cpu_convolutions": "xla"}
  assert onednn.cpu_convolutions_info("eigen", model) == {"cpu_convolutions": "eigen"}
  # A model without oneDNN convolutions runs Eigen's under "onednn" (the XLA flags).
  small = models.create(ml_collections.ConfigDict(dict(name="cnn_small")), 10, "onednn")
  assert onednn.cpu_convolutions_info("onednn", small) == {"cpu_convolutions": "eigen"}


def test_command_line_run_with_onednn_convolutions(tmp_path):
  """fixmatch_jax.main on a wide ResNet with oneDNN: 2 devices (its CPU default), the library
  built in a fresh cache, finite losses, and run_info.json naming the kernels."""
  repo = pathlib.Path(__file__).parents[2]
  env = dict(os.environ, XLA_FLAGS="", FIXMATCH_JAX_CACHE=str(tmp_path / "cache"))
  result = subprocess.run(
      [sys.executable, "-m", "fixmatch_jax.main",
       f"--config={repo / 'experiments' / 'tiny.py'}:steps=2", f"--workdir={tmp_path / 'wd'}",
       "--config.model.name=wrn10_1", "--config.train.cpu_convolutions=onednn",
       "--compilation_cache=none"],
      cwd=repo, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  info = json.loads((tmp_path / "wd" / "run_info.json").read_text())
  assert info["cpu_convolutions"] == "onednn" and info["onednn_version"].startswith("3.")
  assert "xla_force_host_platform_device_count=" in info["xla_flags"]
  assert list((tmp_path / "cache" / "native").glob("onednn_conv-*.so"))
  rows = [json.loads(line) for line in (tmp_path / "wd" / "metrics.jsonl").read_text().splitlines()]
  losses = [row["train/loss"] for row in rows if "train/loss" in row]
  assert losses and all(np.isfinite(losses))
