"""Entropy minimisation (Grandvalet & Bengio 2004, NeurIPS, "Semi-supervised Learning by
Entropy Minimization", Eq. 6): a penalty on the entropy of the predictions on unlabelled data,

  loss = 1/B sum_b H(y_b, f(x_b)) + lambda_e * 1/U sum_u H(f(u)),
  H(p) = -sum_c p_c log p_c,

with the gradient flowing through f(u) (it pushes decision boundaries into low-density regions).

Two ways to use it:
- alone: the "entmin" algorithm (supervised loss + the penalty on the weakly augmented
  unlabelled batch; BatchNorm moving averages from the labelled pass, as the FixMatch
  codebase's baselines);
- on top of any method: `with_entropy_minimisation(algorithm)`, or simply
  `config.algorithm = "<name>+entmin"` (`algorithms.get` wraps on first use), e.g.
  Oliver et al. 2018's VAT+EntMin row is "vat+entmin". The penalty is taken on the
  method's aux["entmin_logits"] when it exposes them (the unlabelled logits of its own
  pass, no extra cost); otherwise on one more training-mode pass over its first unlabelled
  view, whose BatchNorm statistics are discarded.

cfg (config.algo): entmin_weight (lambda_e; 0.1 for VAT+EntMin in recipes.md), plus the
wrapped method's keys. Standalone: entmin_weight, rampup, rampup_start, rampup_end (the
weight is ramped as in consistency.py, with lambda_u read as entmin_weight).
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from fixmatch_jax.algorithms import Algorithm, consistency, register

NAME = "entmin"


def mean_entropy(logits: jnp.ndarray) -> jnp.ndarray:
  """1/U sum_u H(softmax(logits_u)), in nats, differentiable in the logits."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.mean(jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1))


def loss_fn(params: Any, batch: dict[str, Any], *, forward, algo_state: Any, key: Any,
            step: Any, cfg: ml_collections.ConfigDict,
            num_classes: int) -> tuple[jnp.ndarray, dict[str, Any]]:
  """Supervised cross-entropy + entmin_weight(t) * mean entropy of the unlabelled batch."""
  labelled, unlabelled = batch["labelled"], batch["unlabelled"]
  logits_labelled, loss_sup, batch_stats = consistency.labelled_pass(params, labelled, forward)
  logits_unlabelled, _ = forward(params, unlabelled["weak"], train=True,
                                 rngs=consistency.dropout_rngs(key, 0))
  entropy = mean_entropy(logits_unlabelled)
  weight = cfg.entmin_weight * consistency.rampup(
      step, cfg.rampup_start, cfg.rampup_end, cfg.rampup)
  probs = jax.nn.softmax(jax.lax.stop_gradient(logits_unlabelled.astype(jnp.float32)))
  metrics = {"train/loss_sup": loss_sup, "train/loss_entmin": entropy,
             "train/unsup_weight": weight}
  metrics.update(consistency.monitors(logits_labelled, labelled["label"], probs,
                                      jnp.ones(probs.shape[:1]), unlabelled, num_classes))
  return loss_sup + weight * entropy, {"batch_stats": batch_stats, "algo_state": algo_state,
                                       "metrics": metrics}


def default_config() -> ml_collections.ConfigDict:
  """lambda_e = 0.1 (recipes.md), constant."""
  return ml_collections.ConfigDict(dict(entmin_weight=0.1, rampup="none", rampup_start=0,
                                        rampup_end=0))


def with_entropy_minimisation(base: Algorithm) -> Algorithm:
  """`base` plus cfg.entmin_weight * mean entropy of its unlabelled predictions.

  Args:
    base: a registered algorithm with at least one unlabelled view.

  Returns:
    An Algorithm named "<base>+entmin" with base's views, state and EMA needs.

  Raises:
    ValueError: `base` uses no unlabelled data.
  """
  if not base.views:
    raise ValueError(f"Algorithm {base.name!r} has no unlabelled view to minimise the entropy "
                     f"of; use the standalone {NAME!r} algorithm instead.")
  view = base.views[0]

  def wrapped_loss_fn(params, batch, *, forward, key, **kwargs):
    base_key, entmin_key = jax.random.split(key)
    loss, aux = base.loss_fn(params, batch, forward=forward, key=base_key, **kwargs)
    logits = aux.get("entmin_logits")
    if logits is None:  # The base does not expose its unlabelled logits: one more pass.
      logits, _ = forward(params, batch["unlabelled"][view], train=True,
                          rngs={"dropout": entmin_key})
    entropy = mean_entropy(logits)
    metrics = dict(aux["metrics"], **{"train/loss_entmin": entropy})
    return loss + kwargs["cfg"].entmin_weight * entropy, dict(aux, metrics=metrics)

  def wrapped_default_config():
    config = base.default_config()
    config.entmin_weight = default_config().entmin_weight
    return config

  return dataclasses.replace(base, name=f"{base.name}+{NAME}", loss_fn=wrapped_loss_fn,
                             default_config=wrapped_default_config)


ENTMIN = register(Algorithm(name=NAME, views=("weak",), loss_fn=loss_fn,
                            default_config=default_config))
