"""Ramp-up schedules at their breakpoints (Lee 2013 Eq. 16; Laine & Aila 2017's sigmoid)."""
import math

import ml_collections
import numpy as np
import pytest

from fixmatch_jax.algorithms import consistency


def ramp(step, start, end, kind):
  return float(consistency.rampup(step, start, end, kind))


def test_lee_alpha_schedule_at_its_breakpoints():
  # Lee 2013: alpha_f = 3, T1 = 100, T2 = 600 (epochs; here any unit of t).
  cfg = ml_collections.ConfigDict(dict(lambda_u=3.0, rampup="linear", rampup_start=100,
                                       rampup_end=600))
  expected = {0: 0.0, 99: 0.0, 100: 0.0, 101: 3 * 1 / 500, 350: 1.5, 599: 3 * 499 / 500,
              600: 3.0, 10_000: 3.0}
  for t, alpha in expected.items():
    np.testing.assert_allclose(float(consistency.unsup_weight(t, cfg)), alpha, rtol=1e-6)


def test_fixmatch_codebase_linear_warmup_over_40_percent():
  total = 1000
  assert ramp(0, 0, 0.4 * total, "linear") == 0.0
  assert ramp(200, 0, 0.4 * total, "linear") == 0.5
  assert ramp(400, 0, 0.4 * total, "linear") == 1.0
  assert ramp(999, 0, 0.4 * total, "linear") == 1.0


def test_sigmoid_rampup_of_laine_and_aila():
  np.testing.assert_allclose(ramp(0, 0, 200_000, "sigmoid"), math.exp(-5), rtol=1e-6)
  np.testing.assert_allclose(ramp(100_000, 0, 200_000, "sigmoid"), math.exp(-1.25), rtol=1e-6)
  assert ramp(200_000, 0, 200_000, "sigmoid") == 1.0
  assert ramp(500_000, 0, 200_000, "sigmoid") == 1.0
  assert ramp(5, 10, 20, "sigmoid") == 0.0  # before T1


def test_degenerate_and_constant_ramps():
  assert ramp(9, 10, 10, "linear") == 0.0 and ramp(10, 10, 10, "linear") == 1.0
  assert ramp(0, 0, 100, "none") == 1.0
  with pytest.raises(ValueError, match="rampup"):
    consistency.rampup(0, 0, 1, "cosine")
