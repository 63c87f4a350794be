"""A fake model for loss tests: each image holds a row id, the logits are that row of a table.

Images are uint8 [n, 1, 1, 1] whose value is the row of `params["table"]` to return, so any
number of forward passes over any views of a batch have known, fixed logits whose gradient
can be checked row by row. The returned batch_stats name the rows of the pass, so a test
sees which pass's BatchNorm statistics a loss kept.
"""
import jax.numpy as jnp
import numpy as np

from fixmatch_jax import steps

NUM_CLASSES = 3
LABELLED_ROWS, WEAK_ROWS, SECOND_ROWS = [0, 1], [2, 3, 4, 5], [6, 7, 8, 9]
LABELS = [0, 2]
UNLABELLED_TRUE_LABELS = [0, 1, 2, 1]
TABLE = np.array([
    [2.0, 1.0, 0.0], [0.0, 3.0, 0.5],                                   # labelled
    [4.0, 0.0, 0.0], [0.1, 0.2, 0.0], [0.0, 0.5, 3.5], [1.0, 1.2, 0.9],  # weak view
    [0.5, -0.2, 0.1], [1.0, 0.0, 0.0], [0.3, 0.2, -0.4], [0.0, 2.0, 0.0],  # 2nd view
], np.float32)


def forward_one(params, images, *, train, rngs=None, batch_stats=None):
  del rngs, batch_stats
  assert train
  rows = images[:, 0, 0, 0].astype(jnp.int32)
  return params["table"][rows], {"rows": rows}


# As the train step's forward: also takes a tuple of image groups (one pass over all).
forward = steps.forward_groups(forward_one)


def images(rows):
  return jnp.asarray(rows, jnp.uint8)[:, None, None, None]


def batch(second_view="weak2"):
  unlabelled = {"weak": images(WEAK_ROWS), second_view: images(SECOND_ROWS),
                "index": jnp.arange(4), "label": jnp.asarray(UNLABELLED_TRUE_LABELS)}
  return {"labelled": {"image": images(LABELLED_ROWS), "label": jnp.asarray(LABELS)},
          "unlabelled": unlabelled}


def params(table=TABLE):
  return {"table": jnp.asarray(table)}


def softmax(logits):
  logits = np.asarray(logits, np.float64)
  exp = np.exp(logits - logits.max(-1, keepdims=True))
  return exp / exp.sum(-1, keepdims=True)


def supervised_loss_and_grad():
  """Mean CE of the labelled rows and its gradient on those rows: (p - onehot) / B."""
  probs = softmax(TABLE[LABELLED_ROWS])
  loss = -np.mean(np.log(probs[np.arange(2), LABELS]))
  return loss, (probs - np.eye(NUM_CLASSES)[LABELS]) / 2
