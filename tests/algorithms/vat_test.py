"""VAT: power iteration against the NumPy top eigenvector, loss and gradient on a linear model.

For linear logits z = x W, KL(p || softmax((x + r) W)) = 1/2 r^T W H W^T r + O(|r|^3) with
H = diag(p) - p p^T, so the power iteration must find the top eigenvector of W H W^T.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fixmatch_jax import algorithms
from fixmatch_jax.algorithms import vat
from fixmatch_jax.models.wide_resnet import to_model_input

RNG = np.random.RandomState(0)
W = RNG.normal(size=(4, 3)).astype(np.float32)  # 2x2x1 images, 3 classes
UNLABELLED = RNG.randint(0, 256, (5, 2, 2, 1)).astype(np.uint8)
LABELLED = RNG.randint(0, 256, (2, 2, 2, 1)).astype(np.uint8)


def linear_forward(params, images, *, train, rngs=None, batch_stats=None):
  del train, rngs, batch_stats
  x = to_model_input(images).reshape(images.shape[0], -1)
  return x @ params["w"], {"n": jnp.asarray(images.shape[0])}


def softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_power_iteration_finds_the_most_sensitive_direction():
  x = np.asarray(to_model_input(jnp.asarray(UNLABELLED))).reshape(5, -1)
  probs = softmax(x.astype(np.float64) @ W)
  r_adv = np.asarray(vat.adversarial_perturbation(
      lambda inputs: inputs @ jnp.asarray(W), jnp.asarray(x), jnp.asarray(probs, jnp.float32),
      jax.random.key(1), xi=1e-3, eps=2.0, num_power_iterations=30))
  np.testing.assert_allclose(np.linalg.norm(r_adv, axis=1), 2.0, rtol=1e-4)
  for u in range(5):
    hessian = W @ (np.diag(probs[u]) - np.outer(probs[u], probs[u])) @ W.T
    top = np.linalg.eigh(hessian)[1][:, -1]
    assert abs(np.dot(top, r_adv[u]) / 2.0) > 0.999


def test_loss_and_gradient_treat_target_and_perturbation_as_constants():
  cfg = vat.default_config()
  cfg.rampup, cfg.eps = "none", 1.5
  batch = {"labelled": {"image": jnp.asarray(LABELLED), "label": jnp.asarray([0, 2])},
           "unlabelled": {"weak": jnp.asarray(UNLABELLED), "label": jnp.asarray([0, 1, 2, 0, 1])}}
  key = jax.random.key(3)

  def loss(params):
    return vat.loss_fn(params, batch, forward=linear_forward, algo_state={}, key=key,
                       step=jnp.asarray(0), cfg=cfg, num_classes=3)

  (value, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))({"w": jnp.asarray(W)})
  # The same r_adv, recomputed outside the loss with the loss's random start (fold_in(key, 1)).
  x = to_model_input(jnp.asarray(UNLABELLED)).reshape(5, -1)
  probs = jax.nn.softmax(x @ W)
  r_adv = vat.adversarial_perturbation(lambda inputs: inputs @ jnp.asarray(W), x, probs,
                                       jax.random.fold_in(key, 1), xi=1e-6, eps=1.5,
                                       num_power_iterations=1)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(r_adv), axis=1), 1.5, rtol=1e-4)
  p, x_adv = np.asarray(probs, np.float64), np.asarray(x + r_adv, np.float64)
  kl = np.sum(p * (np.log(p) - np.log(softmax(x_adv @ W))), -1).mean()
  xl = np.asarray(to_model_input(jnp.asarray(LABELLED))).reshape(2, -1).astype(np.float64)
  pl = softmax(xl @ W)
  loss_sup = -np.mean(np.log(pl[[0, 1], [0, 2]]))
  np.testing.assert_allclose(float(value), loss_sup + 0.3 * kl, rtol=1e-4)
  # Gradient: CE part + 0.3 * d/dW KL(p_const || softmax(x_adv W)) = x_adv^T (q - p) / U.
  q = softmax(x_adv @ W)
  expected = xl.T @ (pl - np.eye(3)[[0, 2]]) / 2 + 0.3 * x_adv.T @ (q - p) / 5
  np.testing.assert_allclose(np.asarray(grads["w"]), expected, rtol=1e-3, atol=1e-5)
  assert int(aux["batch_stats"]["n"]) == 2  # labelled pass only


def test_registered_with_oliver_et_al_hyperparameters():
  algorithm = algorithms.get("vat")
  cfg = algorithm.default_config()
  assert algorithm.views == ("weak",)
  assert (cfg.lambda_u, cfg.eps, cfg.xi, cfg.num_power_iterations) == (0.3, 6.0, 1e-6, 1)
  assert (cfg.rampup, cfg.rampup_end) == ("sigmoid", 200_000)
  assert isinstance(cfg, ml_collections.ConfigDict)
