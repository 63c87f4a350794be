"""Mean Teacher: the EMA teacher's prediction is a constant target (NumPy hand computation)."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from fixmatch_jax import algorithms
from fixmatch_jax.algorithms import mean_teacher

sys.path.insert(0, os.path.dirname(__file__))
import table_model as tm  # noqa: E402

# The teacher (EMA) parameters differ from the student's.
TEACHER_TABLE = tm.TABLE + np.arange(tm.TABLE.size, dtype=np.float32).reshape(
    tm.TABLE.shape) % 3 * 0.4


def test_loss_and_gradients_for_student_and_teacher():
  cfg = mean_teacher.default_config()
  cfg.rampup = "none"

  def loss(params, ema_params):
    return mean_teacher.loss_fn(params, tm.batch(), forward=tm.forward, algo_state={},
                                key=jax.random.key(0), step=jnp.asarray(0), cfg=cfg,
                                num_classes=tm.NUM_CLASSES, ema_params=ema_params)

  (value, aux), (grads, teacher_grads) = jax.jit(
      jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
          tm.params(), tm.params(TEACHER_TABLE))
  teacher = tm.softmax(TEACHER_TABLE[tm.WEAK_ROWS])  # teacher on the first weak view
  student = tm.softmax(tm.TABLE[tm.SECOND_ROWS])     # student on the second
  mse = np.mean((teacher - student) ** 2)
  loss_sup, grad_sup = tm.supervised_loss_and_grad()
  np.testing.assert_allclose(float(value), loss_sup + 50.0 * mse, rtol=1e-5)
  grads = np.asarray(grads["table"])
  upstream = -50.0 * 2 * (teacher - student) / teacher.size
  np.testing.assert_allclose(
      grads[tm.SECOND_ROWS],
      student * (upstream - np.sum(student * upstream, -1, keepdims=True)), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(grads[tm.LABELLED_ROWS], grad_sup, rtol=1e-5)
  # No gradient reaches the teacher, nor the student through the teacher's view.
  np.testing.assert_array_equal(np.asarray(teacher_grads["table"]), 0.0)
  np.testing.assert_array_equal(grads[tm.WEAK_ROWS], 0.0)
  np.testing.assert_array_equal(aux["batch_stats"]["rows"], tm.LABELLED_ROWS)
  # Pseudo-label monitor: the teacher's argmax against the true labels.
  np.testing.assert_allclose(
      aux["metrics"]["train/pseudo_label_acc_all"],
      np.mean(teacher.argmax(-1) == tm.UNLABELLED_TRUE_LABELS), rtol=1e-6)


def test_registered_as_using_the_ema_teacher():
  algorithm = algorithms.get("mean_teacher")
  assert algorithm.uses_ema_params and algorithm.views == ("weak", "weak2")
  cfg = algorithm.default_config()
  # FixMatch codebase baseline (recipes.md): weight 50 with the 40% linear warm-up.
  assert (cfg.lambda_u, cfg.rampup, cfg.rampup_end) == (50.0, "linear", int(0.4 * 2**20))
  # Every other built-in loss keeps the old keyword set (no ema_params).
  assert not any(algorithms.get(name).uses_ema_params
                 for name in ("fixmatch", "supervised", "pseudo_label", "pi_model", "uda",
                              "vat", "entmin"))
