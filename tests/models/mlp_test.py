"""Lee 2013's MLP: its size (784-5000-10), dropout only in training, no BatchNorm state."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fixmatch_jax import models


def test_lee_mlp_shape_parameters_and_dropout():
  model = models.create(ml_collections.ConfigDict(dict(name="mlp_lee")), 10)
  images = jnp.asarray(np.random.RandomState(0).randint(0, 256, (3, 28, 28, 1)), jnp.uint8)
  variables = jax.jit(lambda key: model.init({"params": key}, images, train=False))(
      jax.random.key(0))
  assert set(variables) == {"params"}  # no batch_stats
  count = sum(x.size for x in jax.tree.leaves(variables["params"]))
  assert count == 784 * 5000 + 5000 + 5000 * 10 + 10  # Lee 2013, Sec. 4.1

  apply = jax.jit(lambda key, train: model.apply(variables, images, train=train,
                                                 rngs={"dropout": key}), static_argnums=1)
  eval_logits = apply(jax.random.key(1), False)
  np.testing.assert_array_equal(eval_logits, apply(jax.random.key(2), False))
  assert eval_logits.shape == (3, 10) and eval_logits.dtype == jnp.float32
  # Dropout (input 0.2, hidden 0.5) changes the training-mode output with the key.
  assert not np.allclose(apply(jax.random.key(1), True), apply(jax.random.key(2), True))
