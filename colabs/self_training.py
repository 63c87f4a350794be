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
# # Self-training rounds: teacher, pseudo-labels, student
#
# The 5-step recipe (Noisy Student, Xie et al. 2020, arXiv:1911.04252, Alg. 1): (1) train a
# teacher on the labels; (2) predict the unlabelled data; (3) keep confident predictions as
# labels; (4) train a new, noised student on labels + pseudo-labels; (5) the student is the
# next teacher. `fixmatch_jax.self_training.run_rounds` drives `train.train_and_evaluate`
# through the rounds and writes each round's pseudo-labels and their accuracy against the
# hidden labels (docs/self_training.md).


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
import json

import matplotlib.pyplot as plt
import ml_collections

from fixmatch_jax import configs, self_training

# %% [markdown]
# The full setting is `experiments/self_training.py:stage=rounds` (Fashion-MNIST, 40 labels,
# WRN-10-1, 300 steps per round). The tiny one: synthetic 8x8 images, 6 steps per round.
# Students here use weak augmentation (`student`); `noisy_student` adds RandAugment + Cutout.

# %%
def stage(algorithm, steps):
  if TINY:
    config = configs.short_run("synthetic", algorithm=algorithm, num_labels=8, seed=1,
                               num_steps=steps, batch_size=8, mu=2, eval_every_steps=steps,
                               summary_last_n=1)
    config.data.eval_batch_size = 32
    config.model.width = 8
  else:
    dataset = "fashion_mnist" if IN_COLAB else "fashion_mnist_local"
    config = configs.short_run(dataset, algorithm=algorithm, num_labels=40, seed=1,
                               num_steps=steps, batch_size=32, mu=3, eval_every_steps=steps,
                               summary_last_n=1)
    config.model.name = "wrn10_1"
    config.data.eval_batch_size = 1000
  return config


steps = 6 if TINY else 300
driver = ml_collections.ConfigDict(dict(
    teacher=stage("supervised", steps), student=stage("student", steps),
    rounds=1 if TINY else 2,
    selection=dict(rule="threshold", threshold=0.9, per_class=3000, soft_labels=False),
    predict_batch_size=256))
records = self_training.run_rounds(driver, os.path.join(WORKDIR, "self_training"))
print(json.dumps(records, indent=1))

# %%
rounds = [r["round"] for r in records]
figure, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(rounds, [r["test_acc"] for r in records], "o-", label="test accuracy (EMA)")
ax.plot(rounds[1:], [r["pseudo_label_acc"] or 0.0 for r in records[1:]], "s--",
        label="pseudo-label accuracy")
ax.plot(rounds[1:], [r["fraction_selected"] for r in records[1:]], "^:",
        label="fraction pseudo-labelled")
ax.set(xlabel="round (0 = teacher)", xticks=rounds)
ax.legend(fontsize=8)
plt.show()
