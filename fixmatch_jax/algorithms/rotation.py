"""Self-supervised pre-training by rotation prediction (Gidaris et al. 2018, arXiv:1803.07728).

Each unlabelled image x_u is rotated by r_u * 90 degrees, r_u in {0, 1, 2, 3}, and the
network learns to tell which rotation it sees (Sec. 2.2, Eq. 1-3):

  loss = 1/muB sum_u H(r_u, p_rot(r | rot(x_u, r_u)))

Rotations are assigned in a balanced way within a batch (r_u = (u + o) mod 4 with a random
offset o per step), one rotation per image: the paper feeds all four rotations of each
image, which costs four forward passes; one balanced rotation per image keeps the batch
size of the other stages on a CPU. Labels are not used.

The rotation head is the first four outputs of the model's classifier (the other outputs
get no gradient); a run that starts from this checkpoint (config.init_from) keeps the body
and re-initialises the classifier (config.init_from_exclude = "classifier").

Why rotation rather than SimCLR (Chen et al. 2020): it needs one forward pass of one view
per image and no large batch of negatives (SimCLR's gains need batches of 256-4096 and
hundreds of epochs), which fits the 2-core CPU runs this project can make.

cfg (config.algo): none.
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fixmatch_jax.algorithms import Algorithm, register

NUM_ROTATIONS = 4


def rotate_batch(images: jnp.ndarray, rotations: jnp.ndarray) -> jnp.ndarray:
  """images[u] rotated counter-clockwise by rotations[u] * 90 degrees (square [U,H,W,C])."""
  if images.shape[1] != images.shape[2]:
    raise ValueError(f"Rotation prediction needs square images, got {images.shape[1:3]}.")
  candidates = jnp.stack([jnp.rot90(images, k, axes=(1, 2)) for k in range(NUM_ROTATIONS)])
  return jnp.take_along_axis(
      candidates, rotations[None, :, None, None, None], axis=0)[0]


def loss_fn(params: Any, batch: dict[str, Any], *, forward, algo_state: Any, key: Any,
            step: Any, cfg: ml_collections.ConfigDict,
            num_classes: int) -> tuple[jnp.ndarray, dict[str, Any]]:
  """Rotation-prediction cross-entropy on the weakly augmented unlabelled batch.

  Args:
    params: model parameters (differentiated).
    batch: {"unlabelled": {"weak": uint8 [U,H,W,C], ...}}; the labelled batch is ignored.
    forward: see fixmatch_jax.algorithms.
    algo_state: passed through unchanged.
    key: draws this step's rotation offset.
    step, cfg: unused.
    num_classes: must be >= 4 (the head is the classifier's first four outputs).

  Returns:
    (loss, aux) with aux = {"batch_stats", "algo_state", "metrics"}.
  """
  del step, cfg
  if num_classes < NUM_ROTATIONS:
    raise ValueError(f"The rotation head uses {NUM_ROTATIONS} classifier outputs; this model "
                     f"has {num_classes}.")
  images = batch["unlabelled"]["weak"]
  offset = jax.random.randint(key, (), 0, NUM_ROTATIONS)
  rotations = (jnp.arange(images.shape[0]) + offset) % NUM_ROTATIONS
  logits, batch_stats = forward(params, rotate_batch(images, rotations), train=True)
  logits = logits.astype(jnp.float32)[:, :NUM_ROTATIONS]
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, rotations).mean()
  metrics = {"train/loss_rotation": loss,
             "train/rotation_acc": jnp.mean(jnp.argmax(logits, -1) == rotations)}
  return loss, {"batch_stats": batch_stats, "algo_state": algo_state, "metrics": metrics}


ROTATION = register(Algorithm(name="rotation", views=("weak",), loss_fn=loss_fn))
