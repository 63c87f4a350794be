"""The 13-layer CNN: layer shapes and parameter count against a hand count of the architecture
table (Laine & Aila 2017, Table 5), the 6x6 final map at 32x32, and dropout placement."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fixmatch_jax import models


def test_parameter_count_and_shapes_match_the_architecture_table():
  model = models.create(ml_collections.ConfigDict(dict(name="cnn13")), 10)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3), jnp.uint8), train=False))
  params = variables["params"]
  # (kernel, c_in, c_out) of the 9 convs, by hand from the table.
  convs = {"1a": (3, 3, 128), "1b": (3, 128, 128), "1c": (3, 128, 128),
           "2a": (3, 128, 256), "2b": (3, 256, 256), "2c": (3, 256, 256),
           "3a": (3, 256, 512), "3b": (1, 512, 256), "3c": (1, 256, 128)}
  for name, (k, c_in, c_out) in convs.items():
    assert params[f"conv{name}"]["kernel"].shape == (k, k, c_in, c_out)
    assert "bias" not in params[f"conv{name}"]
  expected = (sum(k * k * c_in * c_out for k, c_in, c_out in convs.values())
              + sum(2 * c_out for _, _, c_out in convs.values())  # BN scale + offset
              + 128 * 10 + 10)
  count = sum(np.prod(x.shape) for x in jax.tree.leaves(params))
  # 3,116,416 conv weights + 4,096 BN + 1,290 dense: "3.1M".
  assert count == expected == 3_121_802
  logits, embedding = jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3), jnp.uint8), train=False,
                            return_embedding=True), variables)
  assert logits.shape == (2, 10) and embedding.shape == (2, 128)


def test_dropout_is_applied_in_training():
  images = jax.random.randint(jax.random.key(0), (2, 12, 12, 3), 0, 256).astype(jnp.uint8)
  model = models.create(ml_collections.ConfigDict(dict(name="cnn13", dropout_rate=0.5)), 4)
  variables = jax.jit(lambda: model.init(jax.random.key(1), images, train=False))()

  @jax.jit
  def run(keys):
    # Two dropout draws in training mode, and the deterministic inference pass, in one program.
    train = jax.vmap(lambda key: model.apply(variables, images, train=True,
                                             rngs={"dropout": key}, mutable=["batch_stats"])[0])
    return train(keys), model.apply(variables, images, train=False)

  train_logits, eval_logits = run(jax.random.split(jax.random.key(2)))
  assert not np.allclose(train_logits[0], train_logits[1])
  assert np.all(np.isfinite(eval_logits)) and eval_logits.shape == (2, 4)
