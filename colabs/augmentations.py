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
# # Weak and strong views: what FixMatch's model sees
#
# FixMatch's weak view is a random horizontal flip (not for digits) and a reflect-pad + random
# crop of 12.5% of the side; its strong view is RandAugment (2 of 14 ops, each applied with
# probability 0.5 at a random level 1..9) then Cutout of half the side (Sohn et al. 2020,
# arXiv:2001.07685, Sec. 2.3 and App. D). This notebook draws one batch from the training
# input pipeline (`data.pipeline.train_stream`, the one `train.train_and_evaluate` uses) and
# shows, for each unlabelled image, the original and its two views.


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
import matplotlib.pyplot as plt

from fixmatch_jax import configs
from fixmatch_jax.data import pipeline, sources, splits

# %%
if TINY:
  dataset, num_labels = "synthetic", 8
else:
  dataset, num_labels = ("fashion_mnist" if IN_COLAB else "fashion_mnist_local"), 40
config = configs.short_run(dataset, algorithm="fixmatch", num_labels=num_labels, seed=1,
                           num_steps=1, batch_size=8, mu=1, eval_every_steps=1,
                           summary_last_n=1)
# Try other strong augmentations here, e.g. config.data.strong.num_ops = 3 or
# config.data.strong.magnitude = 9 (a fixed level instead of a random one).
source = sources.load(dataset, "train")
split = splits.make_split(config.data, source, seed=1)
stream = pipeline.train_stream(config.data, source, split, views=("weak", "strong"), seed=1)
batch = next(stream)
unlabelled = batch["unlabelled"]
print({view: unlabelled[view].shape for view in ("weak", "strong", "index")})

# %%
rows = {"original": source.images[unlabelled["index"]], "weak": unlabelled["weak"],
        "strong": unlabelled["strong"]}
columns = len(unlabelled["index"])
figure, axes = plt.subplots(3, columns, figsize=(1.4 * columns, 4.4))
for row, (name, images) in enumerate(rows.items()):
  for column in range(columns):
    image = images[column]
    ax = axes[row, column]
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
    ax.set(xticks=[], yticks=[])
    if column == 0:
      ax.set_ylabel(name)
plt.show()

# %% [markdown]
# The views are a pure function of (seed, step, example index): the same seed gives the same
# batches on any number of hosts, and a resumed run continues the stream where it stopped.

# %%
again = next(pipeline.train_stream(config.data, source, split, views=("weak", "strong"),
                                   seed=1))
assert (again["unlabelled"]["strong"] == unlabelled["strong"]).all()
print("Same seed, same strong views.")
