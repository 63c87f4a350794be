"""Supervised baseline: cross-entropy on the labelled batch only, no unlabelled data.

The "Supervised" rows of the semi-supervised tables (e.g. Oliver et al. 2018,
arXiv:1804.09170, Table 1) train the same network with the same optimizer on the labelled
subset alone:

  loss = 1/B sum_b H(y_b, p_model(y | alpha(x_b)))      (FixMatch arXiv:2001.07685, Eq. 3)

where alpha is the weak augmentation applied by the input pipeline.
"""
from typing import Any

import jax.numpy as jnp
import ml_collections
import optax

from fixmatch_jax.algorithms import Algorithm, register


def loss_fn(params: Any, batch: dict[str, Any], *, forward, algo_state: Any, key: Any,
            step: Any, cfg: ml_collections.ConfigDict,
            num_classes: int) -> tuple[jnp.ndarray, dict[str, Any]]:
  """Mean cross-entropy of the labelled batch; one training-mode forward pass.

  Args:
    params: model parameters (differentiated).
    batch: {"labelled": {"image": uint8 [B,H,W,C], "label": int [B]}}.
    forward: see fixmatch_jax.algorithms.
    algo_state: passed through unchanged.
    key, step, cfg, num_classes: unused (no randomness, ramp or hyperparameter).

  Returns:
    (loss, aux) with aux = {"batch_stats", "algo_state", "metrics"}.
  """
  del key, step, cfg, num_classes
  labelled = batch["labelled"]
  logits, batch_stats = forward(params, labelled["image"], train=True)
  logits = logits.astype(jnp.float32)
  loss_sup = optax.softmax_cross_entropy_with_integer_labels(logits, labelled["label"]).mean()
  metrics = {
      "train/loss_sup": loss_sup,
      "train/acc_labelled": jnp.mean(jnp.argmax(logits, -1) == labelled["label"]),
  }
  return loss_sup, {"batch_stats": batch_stats, "algo_state": algo_state, "metrics": metrics}


SUPERVISED = register(Algorithm(name="supervised", views=(), loss_fn=loss_fn))
