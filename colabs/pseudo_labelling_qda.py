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
# # Pseudo-labelling with QDA: a 2-D picture and Instant Gratification
#
# The classic form of pseudo-labelling: fit a model on the labelled points, predict the
# unlabelled ones, add the confident predictions (p <= 0.01 or p >= 0.99) as labels and refit.
# The model is quadratic discriminant analysis (one Gaussian per class), written in JAX in
# `fixmatch_jax.classic.qda` to match scikit-learn's `QuadraticDiscriminantAnalysis`, and
# vectorised over many problems with `jax.vmap` in `fixmatch_jax.classic.instant_gratification`
# (docs/classic_qda.md).


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
import time

import matplotlib.pyplot as plt
import numpy as np

from fixmatch_jax.classic import instant_gratification as ig
from fixmatch_jax.classic import qda

# %% [markdown]
# ## 2-D: two Gaussian classes, 4 labels each, 600 unlabelled points

# %%
rng = np.random.default_rng(0)
means = np.array([[0.0, 0.0], [2.2, 1.0]])
covariances = np.array([[[3.0, 1.6], [1.6, 1.2]], [[0.5, -0.2], [-0.2, 1.5]]])


def sample(n):
  y = rng.integers(0, 2, size=n)
  x = np.stack([rng.multivariate_normal(means[c], covariances[c]) for c in y])
  return x.astype(np.float32), y


x_labelled, y_labelled = sample(40)
x_labelled = np.concatenate([x_labelled[y_labelled == c][:4] for c in (0, 1)])
y_labelled = np.repeat([0, 1], 4)
x_unlabelled, _ = sample(600)
x_test, y_test = sample(4000)

models = [qda.qda_fit(x_labelled, y_labelled, reg_param=0.05)]
x_fit, y_fit = x_labelled, y_labelled
for _ in range(5):  # self-training rounds: pseudo-label, refit on labels + pseudo-labels
  proba = qda.qda_predict_proba(models[-1], x_unlabelled)[:, 1]
  keep, pseudo = (np.asarray(a) for a in ig.select_pseudo_labels(proba))
  x_fit = np.concatenate([x_labelled, x_unlabelled[keep]])
  y_fit = np.concatenate([y_labelled, pseudo[keep]])
  models.append(qda.qda_fit(x_fit, y_fit, reg_param=0.05))


def accuracy(params):
  return float(np.mean(np.asarray(qda.qda_predict_proba(params, x_test)).argmax(1) == y_test))


grid = np.stack(np.meshgrid(np.linspace(-5, 6, 150), np.linspace(-4, 5, 150)), -1)
figure, axes = plt.subplots(1, 2, figsize=(10, 4.2))
for ax, params, title in zip(axes, (models[0], models[-1]), ("8 labels", "+ 5 rounds of PL"),
                             strict=True):
  proba = np.asarray(qda.qda_predict_proba(params, grid.reshape(-1, 2)))[:, 1]
  ax.contourf(grid[..., 0], grid[..., 1], proba.reshape(150, 150), levels=[0, 0.5, 1],
              colors=("tab:blue", "tab:orange"), alpha=0.15)
  ax.scatter(*x_unlabelled.T, s=3, c="0.6")
  ax.scatter(*x_labelled.T, s=80, c=y_labelled, cmap="coolwarm", marker="*", edgecolors="k")
  ax.set_title(f"{title}: test accuracy {accuracy(params):.3f}")
plt.show()

# %% [markdown]
# One seed is not the rule: when the first model is wrong, its confident mistakes become labels
# (confirmation bias). `python scripts/qda_2d_figure.py --sweep 20` averages over 20 seeds.
#
# ## Instant Gratification (Kaggle 2019)
#
# 512 sub-datasets drawn like `make_classification` (255 columns, 33-47 informative); per
# sub-dataset keep the columns with variance > 1.5, QDA(reg_param=0.5) in 11-fold stratified
# CV, pseudo-label the test rows, cross-validate again. Published: CV AUC 0.965 -> 0.970.
# The JAX pipeline runs all sub-datasets in vmapped batches; the scikit-learn loop is the
# oracle (here on a few sub-datasets; `scripts/bench_instant_gratification.py` times both).

# %%
num_datasets = 8 if TINY else 512
data = ig.make_instant_gratification(num_datasets=num_datasets, seed=0)
start = time.perf_counter()
jax_summary = ig.run_jax_pipeline(data)
print(f"JAX, {num_datasets} sub-datasets: {time.perf_counter() - start:.1f} s "
      "(compilation included)")
print({k: round(v, 4) for k, v in jax_summary.items()})

# %%
few = {k: v[:4] for k, v in data.items()}
sklearn_summary = ig.run_sklearn_pipeline(few)
jax_few = ig.run_jax_pipeline(few)
for key in ("cv_auc_before", "cv_auc_after"):
  print(f"{key}: scikit-learn {sklearn_summary[key]:.4f}, JAX {jax_few[key]:.4f}")
