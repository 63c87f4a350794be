"""models/conv.py: the CPU weight gradient of 3x3 convolutions as matrix products.

Oracles: a NumPy loop over the nine taps (the definition of the weight gradient), XLA's
own convolution gradients (the second code path), and the whole WRN with either path.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax import lax

from fixmatch_jax import models
from fixmatch_jax.models import conv


def _xla_conv(x, w, strides=(1, 1), padding="SAME"):
  return lax.conv_general_dilated(x, w, strides, padding,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _numpy_weight_grad(x, dy):
  """dW[i, j, c, o] = sum_{n,h,w} x_pad[n, h+i, w+j, c] dy[n, h, w, o], in float64."""
  x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
  n, h, w, _ = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  grad = np.zeros((3, 3, x.shape[-1], dy.shape[-1]))
  for i in range(3):
    for j in range(3):
      window = padded[:, i:i + h, j:j + w].reshape(-1, x.shape[-1])
      grad[i, j] = window.T @ dy.reshape(-1, dy.shape[-1])
  return grad


@pytest.mark.parametrize("shape,out", [((2, 5, 7, 3), 4), ((3, 8, 8, 16), 8), ((1, 1, 1, 2), 3)])
def test_weight_grad_by_rows_is_the_weight_gradient(shape, out):
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.randn(*shape), jnp.float32)
  dy = jnp.asarray(rng.randn(*shape[:3], out), jnp.float32)
  ours = conv.weight_grad_by_rows(x, dy)
  np.testing.assert_allclose(ours, _numpy_weight_grad(x, dy), rtol=1e-5, atol=1e-4)
  w = jnp.zeros((3, 3, shape[-1], out))
  xla = jax.vjp(lambda w: _xla_conv(x, w), w)[1](dy)[0]
  np.testing.assert_allclose(ours, xla, rtol=1e-5, atol=1e-4)


def test_conv3x3_forward_and_both_gradients_equal_xla():
  rng = np.random.RandomState(1)
  x = jnp.asarray(rng.randn(4, 9, 6, 5), jnp.float32)
  w = jnp.asarray(rng.randn(3, 3, 5, 7) * 0.2, jnp.float32)
  target = jnp.asarray(rng.randn(4, 9, 6, 7), jnp.float32)
  loss = lambda f: lambda x, w: jnp.sum(jnp.tanh(f(x, w)) * target)
  np.testing.assert_allclose(conv.conv3x3(x, w), _xla_conv(x, w), rtol=1e-6, atol=1e-6)
  ours = jax.jit(jax.grad(loss(conv.conv3x3), argnums=(0, 1)))(x, w)
  xla = jax.jit(jax.grad(loss(_xla_conv), argnums=(0, 1)))(x, w)
  for a, b in zip(ours, xla, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_bfloat16_gradient_keeps_dtype_and_accumulates_in_float32():
  rng = np.random.RandomState(2)
  x = jnp.asarray(rng.randn(8, 8, 8, 4), jnp.bfloat16)
  w = jnp.asarray(rng.randn(3, 3, 4, 4) * 0.2, jnp.bfloat16)
  dw = jax.grad(lambda w: jnp.sum(conv.conv3x3(x, w).astype(jnp.float32)))(w)
  assert dw.dtype == jnp.bfloat16
  dy = np.ones((8, 8, 8, 4))
  np.testing.assert_allclose(np.asarray(dw, np.float64), _numpy_weight_grad(x, dy),
                             rtol=2e-2, atol=2e-2)


def test_only_3x3_stride_1_same_nhwc_convolutions_take_the_new_path(monkeypatch):
  calls = []
  monkeypatch.setattr(conv, "conv3x3", lambda x, w, p: calls.append(w.shape) or _xla_conv(x, w))
  x = jnp.ones((2, 8, 8, 3))
  cases = [
      (jnp.ones((3, 3, 3, 4)), (1, 1), "SAME", True),
      (jnp.ones((3, 3, 3, 4)), (1, 1), ((1, 1), (1, 1)), True),
      (jnp.ones((3, 3, 3, 4)), (2, 2), "SAME", False),  # Strided.
      (jnp.ones((1, 1, 3, 4)), (1, 1), "SAME", False),  # 1x1 shortcut.
      (jnp.ones((3, 3, 3, 4)), (1, 1), "VALID", False),
      (jnp.ones((5, 5, 3, 4)), (1, 1), "SAME", False),
  ]
  for w, strides, padding, expected in cases:
    calls.clear()
    y = conv.conv_general_dilated(x, w, strides, padding,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(y, _xla_conv(x, w, strides, padding))
    assert bool(calls) == expected, (w.shape, strides, padding)
  # The per-device batch decides: conftest gives 4 devices, so 8 images are 2 per device.
  w = jnp.ones((3, 3, 3, 4))
  for min_images, expected in ((2, True), (3, False)):
    calls.clear()
    conv.conv_general_dilated(jnp.ones((8, 8, 8, 3)), w, (1, 1), "SAME",
                              dimension_numbers=("NHWC", "HWIO", "NHWC"), min_images=min_images)
    assert bool(calls) == expected, min_images
  assert conv.for_model(-1) is None
  # Another layout (NCHW) is passed through too.
  calls.clear()
  conv.conv_general_dilated(jnp.ones((2, 3, 8, 8)), jnp.ones((4, 3, 3, 3)), (1, 1), "SAME",
                            dimension_numbers=("NCHW", "OIHW", "NCHW"))
  assert not calls


def test_wrn_training_gradients_are_the_same_with_either_weight_gradient():
  config = ml_collections.ConfigDict(dict(name="wrn10_1", conv_bias=False))
  rng = np.random.RandomState(3)
  images = jnp.asarray(rng.randint(0, 256, (6, 16, 16, 3)), jnp.uint8)
  labels = jnp.asarray(rng.randint(0, 10, 6))
  grads = []
  for min_images in (0, -1):  # Matrix products always; XLA's always.
    config.matmul_wgrad_min_images = min_images
    model = models.create(config, 10)
    variables = model.init(jax.random.key(0), images, train=False)

    def loss(params, model=model, variables=variables):
      logits, _ = model.apply({**variables, "params": params}, images, train=True,
                              mutable=["batch_stats"])
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

    grads.append(jax.jit(jax.grad(loss))(variables["params"]))
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def test_copies_wait_for_the_gradient_so_the_step_needs_no_extra_memory():
  # Without the dependency on dy, XLA:CPU builds every layer's shifted copies in the
  # forward pass and keeps them (7.7 MB here, measured); with it, one layer's copies
  # (3 x [8*16*16, 48] floats = 1.1 MB) at most on top of XLA's own path (1.75 MB).
  x = jnp.ones((8, 16, 16, 16))
  ws = [jnp.ones((3, 3, 16, 16)) * 0.01 for _ in range(6)]

  def net(ws, conv_fn):
    y = x
    for w in ws:
      y = jnp.tanh(conv_fn(y, w))
    return jnp.sum(y)

  def temp_mb(conv_fn):
    compiled = jax.jit(jax.grad(lambda ws: net(ws, conv_fn))).lower(ws).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20

  one_layer_copies = 3 * 8 * 16 * 16 * 48 * 4 / 2**20
  assert temp_mb(conv.conv3x3) <= temp_mb(_xla_conv) + one_layer_copies + 0.5
