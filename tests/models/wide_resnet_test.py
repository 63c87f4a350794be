"""Tests of the FixMatch Wide ResNet and the small CPU models against the recipe.

Oracles: a parameter count computed from the architecture description (recipes.md), the
TF code's initialisers, and the BatchNorm update formula with momentum 0.999, eps 1e-3.
Shapes of the paper-size models are checked with jax.eval_shape (no compilation).
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fixmatch_jax import models
from fixmatch_jax.models.wide_resnet import ResidualBlock, WideResNet, to_model_input


def count_wrn_params(depth, widen, num_groups, num_classes, in_channels, conv_bias):
  """Parameters of WRN-depth-widen as described in the FixMatch recipe, layer by layer."""
  blocks = (depth - num_groups - 1) // (2 * num_groups)
  conv = lambda size, c_in, c_out: size * size * c_in * c_out + (c_out if conv_bias else 0)
  batch_norm = lambda channels: 2 * channels  # scale and offset
  total = conv(3, in_channels, 16)
  channels = 16
  for group in range(num_groups):
    width = 16 * widen * 2**group
    for _ in range(blocks):
      total += batch_norm(channels) + conv(3, channels, width)
      total += batch_norm(width) + conv(3, width, width)
      if channels != width:
        total += conv(1, channels, width)  # projection shortcut
      channels = width
  return total + batch_norm(channels) + channels * num_classes + num_classes


def param_shapes(model, image_shape):
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(image_shape, jnp.uint8), train=False))
  return variables


def num_params(variables):
  return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


def fast_key(seed=0):
  # Random initialisers built on threefry take seconds to compile on CPU; RBG keys compile in
  # a fraction of that, and these tests do not depend on which generator draws the weights.
  return jax.random.key(seed, impl="rbg")


def create(name, num_classes=10, **options):
  return models.create(ml_collections.ConfigDict(dict(name=name, **options)), num_classes)


@pytest.mark.parametrize("conv_bias, expected", [(True, 1_469_642), (False, 1_467_610)])
def test_wrn28_2_parameter_count(conv_bias, expected):
  # 1,467,610 is also what the PyTorch peer (bias-free convs) prints; ~1.47M in the paper.
  model = create("wrn28_2", conv_bias=conv_bias)
  count = num_params(param_shapes(model, (1, 32, 32, 3)))
  assert count == count_wrn_params(28, 2, 3, 10, 3, conv_bias) == expected


@pytest.mark.parametrize("name, depth, widen, groups, num_classes", [
    ("wrn28_8", 28, 8, 3, 100), ("wrn37_2", 37, 2, 4, 10), ("wrn10_1", 10, 1, 3, 10),
    ("wrn16_1", 16, 1, 3, 10)])
def test_other_wrn_parameter_counts(name, depth, widen, groups, num_classes):
  model = create(name, num_classes)
  count = num_params(param_shapes(model, (1, 32, 32, 3)))
  assert count == count_wrn_params(depth, widen, groups, num_classes, 3, True)
  if name == "wrn28_8":
    assert 23.3e6 < count < 23.5e6  # "WRN-28-8, ~23M parameters" for CIFAR-100


@pytest.mark.parametrize("name, image_shape, embedding_size", [
    ("wrn28_2", (2, 32, 32, 3), 128), ("wrn28_2", (2, 28, 28, 1), 128),
    ("wrn28_8", (2, 32, 32, 3), 512), ("wrn37_2", (2, 96, 96, 3), 256)])
def test_paper_model_output_shapes(name, image_shape, embedding_size):
  model = create(name)
  variables = param_shapes(model, image_shape)
  logits, embedding = jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros(image_shape, jnp.uint8), train=False,
                            return_embedding=True), variables)
  assert logits.shape == (image_shape[0], 10) and logits.dtype == jnp.float32
  assert embedding.shape == (image_shape[0], embedding_size)
  assert variables["params"]["stem"]["kernel"].shape == (3, 3, image_shape[-1], 16)


def test_small_models_run_on_cpu_dataset_shapes():
  # Parameters do not depend on the image size, only on its channels: one init per
  # (model, channels), then Fashion-MNIST 28x28x1, digits 8x8x1 and tiny CIFAR-like 32x32x3.
  rng = np.random.RandomState(0)
  for name, channels, sizes, embedding_size in [
      ("cnn_small", 1, (28, 8), 2 * 4), ("wrn10_1", 3, (32,), 64)]:
    model = create(name, 7, width=4)
    variables = jax.jit(lambda key, model=model, channels=channels: model.init(
        key, jnp.zeros((1, 8, 8, channels), jnp.uint8), train=False))(fast_key())
    for size in sizes:
      images = jnp.asarray(rng.randint(0, 256, (3, size, size, channels)), jnp.uint8)
      logits, embedding = jax.jit(
          lambda v, x, model=model: model.apply(v, x, train=False, return_embedding=True))(
              variables, images)
      assert logits.shape == (3, 7) and embedding.shape == (3, embedding_size), name
      assert np.all(np.isfinite(logits))


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = create("wrn28_2", dtype="bfloat16")
  variables = param_shapes(model, (2, 32, 32, 3))
  logits = jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3), jnp.uint8), train=False), variables)
  assert logits.dtype == jnp.float32
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


def test_uint8_images_are_scaled_to_minus_one_one():
  pixels = jnp.asarray([0, 128, 255], jnp.uint8)
  np.testing.assert_allclose(to_model_input(pixels), [-1.0, 128 * 2 / 255 - 1, 1.0], atol=1e-7)
  floats = jnp.asarray([0.25, -0.5])
  np.testing.assert_array_equal(to_model_input(floats), floats)


@pytest.fixture(scope="module")
def wrn10_1():
  """An initialised small WRN (1000 classes: enough dense weights to measure their std)."""
  model = create("wrn10_1", 1000)
  variables = jax.jit(lambda key: model.init(
      key, jnp.zeros((1, 8, 8, 3), jnp.uint8), train=False))(fast_key(1))
  return model, variables


def test_initialisation_follows_tf_code(wrn10_1):
  _, variables = wrn10_1
  flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  normalised_conv_weights = []
  for path, value in flat:
    names = [entry.key for entry in path]
    value = np.asarray(value)
    if names[-1] == "kernel" and value.ndim == 4:
      size, _, _, c_out = value.shape
      normalised_conv_weights.append(value.ravel() / np.sqrt(2.0 / (size * size * c_out)))
    elif names[-1] == "bias" or (names[-1] == "scale"):
      expected = 1.0 if names[-1] == "scale" else 0.0
      np.testing.assert_array_equal(value, expected, err_msg=str(names))
  weights = np.concatenate(normalised_conv_weights)
  assert weights.size > 70_000
  assert abs(weights.std() - 1.0) < 0.02 and abs(weights.mean()) < 0.02
  # Untruncated normal: values beyond 2 std exist (a truncated init would stop at 2).
  assert np.mean(np.abs(weights) > 2.0) == pytest.approx(0.0455, abs=0.005)
  dense = np.asarray(variables["params"]["classifier"]["kernel"])
  assert dense.shape == (64, 1000)
  assert dense.std() == pytest.approx(np.sqrt(2.0 / (64 + 1000)), rel=0.03)


def test_batchnorm_momentum_and_epsilon(wrn10_1):
  model, variables = wrn10_1
  images = jnp.asarray(np.random.RandomState(0).randint(0, 256, (4, 8, 8, 3)), jnp.uint8)
  _, updates = jax.jit(lambda v: model.apply(
      v, images, train=True, mutable=["batch_stats", "intermediates"],
      capture_intermediates=True))(variables)
  stem_out = np.asarray(updates["intermediates"]["stem"]["__call__"][0], np.float64)
  batch_mean, batch_var = stem_out.mean(axis=(0, 1, 2)), stem_out.var(axis=(0, 1, 2))
  stats = updates["batch_stats"]["group0_block0"]["bn1"]
  # moving = 0.999 * moving + 0.001 * batch, from the initial mean 0 and variance 1.
  np.testing.assert_allclose(stats["mean"], 0.001 * batch_mean, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(stats["var"], 0.999 + 0.001 * batch_var, rtol=1e-5)
  normalised = updates["intermediates"]["group0_block0"]["bn1"]["__call__"][0]
  np.testing.assert_allclose(
      normalised, (stem_out - batch_mean) / np.sqrt(batch_var + 1e-3), rtol=1e-3, atol=1e-4)


def test_recipe_constants():
  block = ResidualBlock(32)
  assert (block.bn_momentum, block.bn_epsilon, block.leaky_slope) == (0.999, 1e-3, 0.1)
  wrn = WideResNet(10)
  assert (wrn.depth, wrn.widen, wrn.conv_bias, wrn.dropout_rate) == (28, 2, True, 0.0)


def test_create_rejects_unknown_names_and_options():
  with pytest.raises(ValueError, match="wrn28_2.*") as error:
    create("resnet50")
  assert all(name in str(error.value) for name in ("cnn_small", "wrn28_8", "wrn37_2"))
  with pytest.raises(ValueError, match="conv_biass"):
    create("wrn28_2", conv_biass=False)
  with pytest.raises(ValueError, match="depth 27"):
    param_shapes(WideResNet(10, depth=27), (1, 8, 8, 3))
