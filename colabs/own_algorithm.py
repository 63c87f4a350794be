# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Your own algorithm: a new loss in one cell, trained with the shared step
#
# An algorithm is a loss function plus the unlabelled views it needs; `algorithms.register`
# plugs it into the one jitted train step every method shares (`steps.train_step`: forward,
# gradients, optimizer, EMA, metrics), so nothing else changes. The example: FixMatch with
# the hard threshold replaced by a soft confidence weight, each unlabelled example weighted
# by its max probability raised to a power (a simple relative of the weighting schemes of
# later papers, e.g. SoftMatch, Chen et al. 2023, arXiv:2301.10921).


# %% [markdown]
# **Install (Colab).** Like the README, this notebook uses the package installed from a copy of
# this repository with `pip install -e .`: upload the repository to Colab (Files pane, a zip,
# then `!unzip`) or `!git clone` your copy of it, `%cd` into its root, and run the next cell.
# For training, pick Runtime > Change runtime type > GPU. Locally: `pip install -e .` in the
# repository root and start Jupyter there (the notebooks read `experiments/` relative to it).

# %%
import os
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the repository this notebook runs from.
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "."], check=True)
  sys.path.insert(0, os.getcwd())
IN_COLAB = "google.colab" in sys.modules

# %% tags=["parameters"]
# FIXMATCH_COLAB_TINY=1 (set by tests/colabs_test.py) shrinks every run to seconds.
TINY = os.environ.get("FIXMATCH_COLAB_TINY") == "1"
WORKDIR = os.environ.get("FIXMATCH_COLAB_WORKDIR", "runs/colabs")
# %%
import jax
import jax.numpy as jnp
import ml_collections
import optax

from fixmatch_jax import algorithms, configs, metrics, train


def confidence_weighted_loss(params, batch, *, forward, algo_state, key, step, cfg,
                             num_classes):
  del key, step, num_classes
  labelled, unlabelled = batch["labelled"], batch["unlabelled"]
  num_labelled, num_unlabelled = len(labelled["image"]), len(unlabelled["weak"])
  images = jnp.concatenate([labelled["image"], unlabelled["weak"], unlabelled["strong"]])
  logits, batch_stats = forward(params, images, train=True)  # one pass: shared BN statistics
  logits_labelled = logits[:num_labelled]
  logits_weak = logits[num_labelled:num_labelled + num_unlabelled]
  logits_strong = logits[num_labelled + num_unlabelled:]
  loss_sup = optax.softmax_cross_entropy_with_integer_labels(
      logits_labelled, labelled["label"]).mean()
  probs = jax.nn.softmax(jax.lax.stop_gradient(logits_weak))  # targets get no gradient
  weight = jnp.max(probs, axis=-1) ** cfg.power
  loss_unsup = jnp.mean(weight * optax.softmax_cross_entropy_with_integer_labels(
      logits_strong, jnp.argmax(probs, axis=-1)))
  loss = loss_sup + cfg.lambda_u * loss_unsup
  aux_metrics = {"train/loss_sup": loss_sup, "train/loss_unsup": loss_unsup,
                 "train/mean_weight": jnp.mean(weight)}
  return loss, {"batch_stats": batch_stats, "algo_state": algo_state, "metrics": aux_metrics}


if "confidence_weighted" not in algorithms.names():  # re-running the cell keeps the first one
  algorithms.register(algorithms.Algorithm(
      name="confidence_weighted", views=("weak", "strong"), loss_fn=confidence_weighted_loss,
      default_config=lambda: ml_collections.ConfigDict(dict(power=4.0, lambda_u=1.0))))

# %% [markdown]
# Train it like any built-in method: the config names the algorithm, `config.algo` holds its
# hyperparameters (here `power` and `lambda_u`).

# %%
steps = 6 if TINY else 1200
if TINY:
  config = configs.short_run("synthetic", algorithm="confidence_weighted", num_labels=8, seed=1,
                             num_steps=steps, batch_size=8, mu=2, eval_every_steps=3,
                             summary_last_n=2)
  config.data.eval_batch_size = 32
  config.model.width = 8
else:
  dataset = "fashion_mnist" if IN_COLAB else "fashion_mnist_local"
  config = configs.short_run(dataset, algorithm="confidence_weighted", num_labels=40, seed=1,
                             num_steps=steps, batch_size=32, eval_every_steps=100,
                             summary_last_n=5)
  config.model.name = "wrn10_1"
  config.data.eval_batch_size = 1000
config.lock()
workdir = os.path.join(WORKDIR, "own_algorithm")
state = train.train_and_evaluate(config, workdir)
rows = metrics.read(workdir)
print([(r["step"], round(r["train/mean_weight"], 3)) for r in rows if "train/mean_weight" in r])
print([(r["step"], r["eval/acc_ema"]) for r in rows if "eval/acc_ema" in r])
