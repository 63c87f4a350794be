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
# # Quickstart: train FixMatch, plot its curves and its pseudo-labels
#
# FixMatch (Sohn et al. 2020, arXiv:2001.07685) trains on the labelled batch with
# cross-entropy and, for each unlabelled image, turns the model's prediction on a weakly
# augmented view into a hard pseudo-label when its confidence is >= 0.95, then trains the
# strongly augmented view towards it. This notebook runs `train.train_and_evaluate`, the
# function behind `python -m fixmatch_jax.main`, and plots what it logs to `metrics.jsonl`:
# the losses, the mask rate (fraction of unlabelled images above the threshold) and the
# accuracy of those pseudo-labels against the hidden labels (monitor only, never trained on).


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
import importlib.util
import json

import matplotlib.pyplot as plt

from fixmatch_jax import metrics, train


def load_experiment(spec):
  """The config of an experiment file, as `--config=experiments/x.py:args` builds it."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("experiment", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


# %% [markdown]
# The run: real Fashion-MNIST with 40 labels, 600 steps of the FixMatch recipe on a WRN-10-1
# (6.5 min on a 2-core CPU, README). In Colab the data comes from TFDS (`fashion_mnist`);
# on a Debian machine from `apt-get install dataset-fashion-mnist`. The tiny setting is a
# few steps on synthetic 8x8 images.

# %%
if TINY:
  config = load_experiment("experiments/tiny.py:steps=6")
else:
  config = load_experiment("experiments/fashion_mnist.py:labels=40,steps=600")
  if IN_COLAB:
    config.data.dataset = "fashion_mnist"
config.lock()
workdir = os.path.join(WORKDIR, "quickstart")
state = train.train_and_evaluate(config, workdir)  # re-running resumes from the workdir

# %%
rows = metrics.read(workdir)
train_rows = [r for r in rows if "train/loss" in r]
eval_rows = [r for r in rows if "eval/acc_ema" in r]


def curve(ax, rows, key, label):
  ax.plot([r["step"] for r in rows], [r[key] for r in rows], ".-", label=label)


figure, axes = plt.subplots(1, 3, figsize=(14, 3.6))
curve(axes[0], train_rows, "train/loss_sup", "labelled loss")
curve(axes[0], train_rows, "train/loss_unsup", "unlabelled loss")
curve(axes[1], train_rows, "train/mask_rate", "mask rate (confidence >= 0.95)")
curve(axes[1], train_rows, "train/pseudo_label_acc", "pseudo-label accuracy (masked in)")
curve(axes[2], eval_rows, "eval/acc", "test accuracy")
curve(axes[2], eval_rows, "eval/acc_ema", "test accuracy, EMA model")
for ax, title in zip(axes, ("losses", "pseudo-labels", "test set"), strict=True):
  ax.set(title=title, xlabel="step")
  ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The number the paper reports is the median of the last evaluations of the EMA model
# (`summary.json`; here the last 5 of 6 evaluations, `config.train.summary_last_n`).

# %%
with open(os.path.join(workdir, "summary.json")) as f:
  summary = json.load(f)
print(json.dumps(summary, indent=1))
print("Per-class mask rate at the last log step:", train_rows[-1]["train/per_class_mask_rate"])
