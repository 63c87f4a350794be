"""Soft pseudo-labels with mixup (Arazo et al. 2019, arXiv:1908.02983), against confirmation bias.

Every unlabelled example n keeps a soft pseudo-label h~_n (a probability vector) in the
algorithm state. A batch of labelled (targets one-hot y) and unlabelled (targets h~) images
is trained with mixup (Zhang et al. 2018) and two regularisers (Sec. 3 of the paper):

  delta ~ Beta(alpha, alpha);  pi = a random permutation of the batch
  x_i = delta x_i + (1 - delta) x_pi(i),   t_i = delta t_i + (1 - delta) t_pi(i)
  l*  = -1/N sum_i t_i^T log h_theta(x_i)
  R_A = sum_c p_c log(p_c / h_bar_c),  p_c = 1/C,  h_bar = 1/N sum_i h_theta(x_i)
  R_H = -1/N sum_i sum_c h_theta^c(x_i) log h_theta^c(x_i)
  loss = l* + lambda_A R_A + lambda_H R_H

The pseudo-labels are the network's softmax predictions on the NON-augmented unlabelled images
(the "raw" view), made in an extra forward pass without gradient, and are used one epoch
later: each step trains example n on the h~_n stored at its previous visit (one epoch of the
unlabelled stream ago) and then stores today's prediction, which is the paper's "update the
soft labels at the end of every epoch" done example by example. An example with no stored
prediction yet (first visit) is trained on today's. As in the official code, the extra pass
runs in training mode (BatchNorm batch statistics; its moving-average update is kept); unlike
it, dropout is not switched off for that pass (the shared `forward` has no such switch), which
matters only when model.dropout_rate > 0.

Minimum labelled examples per batch (the paper: at least 16 of 100): the two-stream input
pipeline puts exactly data.batch_size labelled images in every batch (the official
TwoStreamBatchSampler does the same); with data.unlabelled_includes_labelled=False the
unlabelled rows are all truly unlabelled. The loss refuses a batch with fewer labelled images
than cfg.min_labelled_per_batch.

Warm-up (the paper: 10 epochs on the labelled data alone): while step < cfg.warmup_steps the
loss is the same mixup + regularisers over the labelled images only; the pseudo-labels are
still refreshed, so training on unlabelled data starts from the warmed-up model's predictions.

cfg (config.algo): mixup_alpha (1.0), prior_weight (lambda_A, 0.8), entropy_weight
(lambda_H, 0.4), warmup_steps, min_labelled_per_batch (16).
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fixmatch_jax.algorithms import Algorithm, register
from fixmatch_jax.algorithms.fixmatch import pseudo_label_monitors
from fixmatch_jax.models.wide_resnet import to_model_input


def init_state(cfg: ml_collections.ConfigDict, num_unlabelled: int,
               num_classes: int) -> dict[str, jnp.ndarray]:
  """soft_labels [N, C] (uniform) and seen [N] (False: no prediction stored yet)."""
  del cfg
  return {"soft_labels": jnp.full((num_unlabelled, num_classes), 1.0 / num_classes, jnp.float32),
          "seen": jnp.zeros((num_unlabelled,), jnp.bool_)}


def mixup(key: jax.Array, images: jnp.ndarray, targets: jnp.ndarray,
          alpha: float) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Mixes each row with a random partner: one delta ~ Beta(alpha, alpha) for the batch.

  Args:
    key: PRNG key.
    images: [N, H, W, C], uint8 (mapped to model input first) or float model input.
    targets: float [N, C] probability vectors.
    alpha: Beta parameter; 0 disables mixup (delta = 1).

  Returns:
    (mixed images (float model input), mixed targets, delta, permutation [N]).
  """
  inputs = to_model_input(images)
  if alpha <= 0:
    return inputs, targets, jnp.ones((), jnp.float32), jnp.arange(images.shape[0])
  delta_key, permutation_key = jax.random.split(key)
  delta = jax.random.beta(delta_key, alpha, alpha)
  permutation = jax.random.permutation(permutation_key, images.shape[0])
  mixed = delta * inputs + (1 - delta) * inputs[permutation]
  return mixed, delta * targets + (1 - delta) * targets[permutation], delta, permutation


def regularisers(logits: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(R_A, R_H): KL of the uniform prior to the batch-mean prediction, and the mean entropy."""
  num_classes = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits)
  probs = jnp.exp(log_probs)
  log_prior = -jnp.log(float(num_classes))
  prior_kl = jnp.sum(jnp.exp(log_prior) * (log_prior - jnp.log(jnp.mean(probs, axis=0))))
  entropy = -jnp.mean(jnp.sum(probs * log_probs, axis=-1))
  return prior_kl, entropy


def loss_fn(params: Any, batch: dict[str, Any], *, forward, algo_state: dict[str, Any],
            key: jax.Array, step: Any, cfg: ml_collections.ConfigDict, num_classes: int,
            **unused_kwargs) -> tuple[jnp.ndarray, dict[str, Any]]:
  """Mixup loss with soft pseudo-labels and R_A, R_H; refreshes the pseudo-labels.

  Args:
    params: model parameters (differentiated).
    batch: {"labelled": {"image", "label"}, "unlabelled": {"weak", "raw", "index",
      "label"?}}: "weak" is trained on, "raw" (non-augmented) makes the pseudo-labels.
    forward: see fixmatch_jax.algorithms.
    algo_state: {"soft_labels": float [N, C], "seen": bool [N]}.
    key: draws delta and the mixup permutation.
    step: compared with cfg.warmup_steps.
    cfg: config.algo (module docstring).
    num_classes: C.
    **unused_kwargs: later optional arguments of the interface.

  Returns:
    (loss, aux) with aux = {"batch_stats", "algo_state", "metrics"}.

  Raises:
    ValueError: the labelled batch is smaller than cfg.min_labelled_per_batch.
  """
  del unused_kwargs
  labelled, unlabelled = batch["labelled"], batch["unlabelled"]
  num_labelled = labelled["image"].shape[0]
  if num_labelled < cfg.min_labelled_per_batch:
    raise ValueError(
        f"Arazo et al. train with at least {cfg.min_labelled_per_batch} labelled images per "
        f"batch but the batch has {num_labelled}: set config.data.batch_size >= "
        "config.algo.min_labelled_per_batch.")
  index = unlabelled["index"]

  # Today's predictions on the non-augmented images: no gradient, stored for the next epoch.
  raw_logits, raw_batch_stats = forward(params, unlabelled["raw"], train=True)
  raw_probs = jax.nn.softmax(jax.lax.stop_gradient(raw_logits.astype(jnp.float32)))
  seen = algo_state["seen"][index]
  targets_unlabelled = jnp.where(seen[:, None], algo_state["soft_labels"][index], raw_probs)
  new_state = {"soft_labels": algo_state["soft_labels"].at[index].set(raw_probs),
               "seen": algo_state["seen"].at[index].set(True)}
  targets_labelled = jax.nn.one_hot(labelled["label"], num_classes, dtype=jnp.float32)

  def mixup_loss(images, targets, batch_stats):
    mixed, mixed_targets, delta, _ = mixup(key, images, targets, cfg.mixup_alpha)
    logits, new_batch_stats = forward(params, mixed, train=True, batch_stats=batch_stats)
    logits = logits.astype(jnp.float32)
    per_row = optax.softmax_cross_entropy(logits, mixed_targets)
    prior_kl, entropy = regularisers(logits)
    loss = (jnp.mean(per_row) + cfg.prior_weight * prior_kl + cfg.entropy_weight * entropy)
    # Rows whose delta-weighted image is labelled vs unlabelled (monitors only).
    loss_sup = jnp.mean(per_row[:num_labelled])
    loss_unsup = (jnp.mean(per_row[num_labelled:]) if per_row.shape[0] > num_labelled
                  else jnp.zeros((), jnp.float32))
    parts = {"train/loss_sup": loss_sup, "train/loss_unsup": loss_unsup,
             "train/reg_prior": prior_kl, "train/reg_entropy": entropy,
             "train/mixup_delta": delta}
    return loss, (new_batch_stats, parts)

  def warmup(_):
    # Labelled images only; the extra pass's BatchNorm update is dropped with them.
    return mixup_loss(labelled["image"], targets_labelled, None)

  def semi_supervised(_):
    return mixup_loss(jnp.concatenate([labelled["image"], unlabelled["weak"]]),
                      jnp.concatenate([targets_labelled, targets_unlabelled]), raw_batch_stats)

  in_warmup = step < cfg.warmup_steps
  # Both losses, then a select, not jax.lax.cond: under jax.grad on XLA:CPU the cond made
  # the step ~25x slower (8.6 s vs 0.33 s per step, WRN-10-1, B = 32, mu = 3; 2026-12-04),
  # while the warm-up loss costs only a labelled-batch forward/backward more.
  select = lambda warm, semi: jax.tree.map(lambda a, b: jnp.where(in_warmup, a, b), warm, semi)
  loss, (batch_stats, metrics) = select(warmup(None), semi_supervised(None))

  used = jnp.broadcast_to(1.0 - in_warmup.astype(jnp.float32), index.shape)
  metrics["train/mask_rate"] = jnp.mean(used)
  metrics["train/confidence"] = jnp.mean(jnp.max(targets_unlabelled, axis=-1))
  metrics["train/seen_fraction"] = jnp.mean(new_state["seen"])
  if "label" in unlabelled:
    metrics.update(pseudo_label_monitors(
        used, jnp.argmax(targets_unlabelled, -1), unlabelled["label"], num_classes))
  return loss, {"batch_stats": batch_stats, "algo_state": new_state, "metrics": metrics}


def default_config() -> ml_collections.ConfigDict:
  """config.algo of the paper: alpha 1, lambda_A 0.8, lambda_H 0.4, k = 16 labelled per batch.

  warmup_steps is 0 here; the experiment files set it to 10 labelled epochs in steps.
  """
  return ml_collections.ConfigDict(dict(
      mixup_alpha=1.0, prior_weight=0.8, entropy_weight=0.4, warmup_steps=0,
      min_labelled_per_batch=16))


ARAZO = register(Algorithm(name="arazo", views=("weak", "raw"), loss_fn=loss_fn,
                           init_state=init_state, default_config=default_config))
