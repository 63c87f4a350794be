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
# # Your own dataset: NumPy arrays or a TFDS name
#
# Every run reads its data through `fixmatch_jax.data.sources.load(config.data.dataset, ...)`:
# uint8 images [N, H, W, C] and integer labels. Two ways to bring your own:
#
# * **a TFDS name** with an `image` and a `label` feature, in `sources.TFDS_DATASETS`
#   (cifar10, cifar100, svhn_cropped, stl10, mnist, fashion_mnist); in Colab TFDS downloads it;
# * **NumPy arrays**: write them once with `sources.save_npz(path, ...)` and train with
#   `config.data.dataset = "npz"`, `config.data.data_dir = path`.
#
# Here the arrays are scikit-learn's bundled 8x8 digits (any arrays of yours work the same).


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
import numpy as np
from sklearn.datasets import load_digits

from fixmatch_jax import configs, train
from fixmatch_jax.data import sources

digits = load_digits()
images = np.round(digits.images * 255 / 16).astype(np.uint8)  # uint8 [N, 8, 8]
labels = digits.target
rng = np.random.default_rng(0)
order = rng.permutation(len(images))
train_rows, test_rows = order[:1400], order[1400:]
os.makedirs(WORKDIR, exist_ok=True)
path = os.path.abspath(os.path.join(WORKDIR, "my_digits.npz"))
sources.save_npz(path, train_images=images[train_rows], train_labels=labels[train_rows],
                 test_images=images[test_rows], test_labels=labels[test_rows])
train_source = sources.load("npz", "train", data_dir=path)
print(train_source.images.shape, train_source.num_classes)

# %% [markdown]
# A FixMatch run on it: 50 labels (5 per class), the rest of the 1400 training images
# unlabelled. `configs.short_run` is the paper's recipe shrunk to a short run; no flip for
# digits (as for SVHN). For a TFDS name instead: `configs.short_run("svhn_cropped", ...)`.

# %%
steps = 6 if TINY else 1000
config = configs.short_run("npz", algorithm="fixmatch", num_labels=50, seed=1, num_steps=steps,
                           batch_size=8 if TINY else 32, mu=2 if TINY else 7,
                           eval_every_steps=steps if TINY else 100,
                           summary_last_n=1 if TINY else 5)
config.data.data_dir = path
config.data.weak.flip = False
config.data.eval_batch_size = 32 if TINY else 400
config.lock()
state = train.train_and_evaluate(config, os.path.join(WORKDIR, "own_dataset"))
with open(os.path.join(WORKDIR, "own_dataset", "summary.json")) as f:
  print(f.read())
