"""Smoke test: baselines train end to end through the pipeline and the shared step.

One representative keeps it cheap (about 10 s of CPU): Mean Teacher, which needs the most
plumbing (the "weak2" view and the EMA teacher passed by the step). The losses themselves are
pinned by the unit tests; `vat+entmin` (float perturbations of a real model) also ran this
test once (2026-11-25) before it was trimmed for time: add it to the list to re-check.
"""
import math
import os
import sys

import jax
import numpy as np
import pytest

from fixmatch_jax import algorithms, metrics, train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "experiments"))
import tiny  # noqa: E402


def tiny_config(algorithm):
  config = tiny.get_config("steps=2")
  config.algorithm = algorithm
  config.algo = algorithms.get(algorithm).default_config()
  for key in ("rampup_end", "tsa_steps"):
    if key in config.algo:
      config.algo[key] = 2
  config.train.eval_every_steps = config.train.checkpoint_every_steps = 2
  config.lock()
  return config


@pytest.mark.parametrize("algorithm", ["mean_teacher"])
def test_two_steps_of_training(algorithm, tmp_path):
  state = train.train_and_evaluate(tiny_config(algorithm), str(tmp_path))
  assert int(state.step) == 2
  rows = [r for r in metrics.read(str(tmp_path)) if "train/loss" in r]
  assert rows and all(math.isfinite(r["train/loss"]) for r in rows)
  assert "train/mask_rate" in rows[-1] and "train/pseudo_label_acc" in rows[-1]
  if algorithm == "vat+entmin":
    assert "train/loss_entmin" in rows[-1]
  if algorithm == "mean_teacher":
    # The teacher is the EMA (decay 0.99 in the tiny config): it moved, but less than params.
    params, ema = jax.device_get((state.params, state.ema_params))
    assert any(not np.array_equal(a, b)
               for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ema), strict=True))
