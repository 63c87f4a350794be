"""Self-training rounds: the selection rules on fixed predictions, and a resumed driver."""

import json
import os
import signal
import sys

import ml_collections
import numpy as np
import pytest

from fixmatch_jax import algorithms, self_training, steps, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments"))
import tiny  # noqa: E402

# 6 examples, 3 classes: argmax 0,0,1,1,2,0 with confidences .9 .6 .95 .5 .4 .7.
PROBS = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.025, 0.95, 0.025],
                  [0.3, 0.5, 0.2], [0.3, 0.3, 0.4], [0.7, 0.2, 0.1]])


def test_threshold_keeps_confidence_at_or_above_tau():
  np.testing.assert_array_equal(self_training.select_threshold(PROBS, 0.7),
                                [True, False, True, False, False, True])
  with pytest.raises(ValueError, match="threshold"):
    self_training.select_threshold(PROBS, 0.0)


def test_top_k_per_class_is_class_balanced():
  # Class 0 is predicted for 0 (.9), 1 (.6), 5 (.7): top-2 keeps 0 and 5. Class 1: 2 (.95),
  # 3 (.5): both. Class 2: only 4, kept although unconfident.
  np.testing.assert_array_equal(self_training.select_top_k_per_class(PROBS, 2),
                                [True, False, True, True, True, True])
  np.testing.assert_array_equal(self_training.select_top_k_per_class(PROBS, 1),
                                [True, False, True, False, True, False])


@pytest.mark.parametrize("soft", [False, True])
def test_targets_keep_true_labels_on_labelled_examples(soft):
  selection = ml_collections.ConfigDict(dict(rule="threshold", threshold=0.7, per_class=1,
                                             soft_labels=soft))
  table = self_training.make_targets(PROBS, selection, labelled=np.array([1, 2]),
                                     labels=np.array([2, 0]))
  np.testing.assert_array_equal(table["weights"], [1, 1, 1, 0, 0, 1])
  # Example 2 was confidently predicted as 1 but its true label (0) wins; it is not counted
  # as selected (pseudo-labelled).
  np.testing.assert_array_equal(table["selected"], [True, False, False, False, False, True])
  np.testing.assert_array_equal(table["targets"][1], [0, 0, 1])
  np.testing.assert_array_equal(table["targets"][2], [1, 0, 0])
  expected_0 = PROBS[0] if soft else [1, 0, 0]
  np.testing.assert_allclose(table["targets"][0], expected_0, rtol=1e-6)
  stats = self_training.target_stats(table, np.array([0, 2, 0, 1, 2, 1]), np.array([1, 2]))
  # Selected unlabelled: 0 (predicted 0, true 0: right) and 5 (predicted 0, true 1: wrong).
  assert stats["num_selected"] == 2 and stats["pseudo_label_acc"] == 0.5
  # All unlabelled (0, 3, 4, 5): predictions 0,1,2,0 vs 0,1,2,1.
  assert stats["prediction_acc_all_unlabelled"] == 0.75


def driver_config(rounds=1):
  teacher = tiny.get_config("algorithm=supervised,steps=4")
  student = tiny.get_config("steps=4")
  student.algorithm = "noisy_student"
  student.algo = algorithms.get("noisy_student").default_config()
  student.model.dropout_rate = 0.3
  return ml_collections.ConfigDict(dict(
      teacher=teacher, student=student, rounds=rounds, predict_batch_size=64,
      selection=dict(rule="topk", threshold=0.9, per_class=20, soft_labels=False)))


def test_round_driver_resumes_at_the_round_and_step(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  make_train_step, calls = steps.make_train_step, []

  def sigterm_in_round_1(*args, **kwargs):
    step_fn = make_train_step(*args, **kwargs)
    is_round_1 = len(calls) == 1  # make_train_step is called once per stage: 0, 1.
    calls.append(1)
    count = []

    def step(state, batch):
      count.append(1)
      if is_round_1 and len(count) == 2:
        os.kill(os.getpid(), signal.SIGTERM)
      return step_fn(state, batch)
    return step

  monkeypatch.setattr(steps, "make_train_step", sigterm_in_round_1)
  with pytest.raises(InterruptedError, match="round1"):
    self_training.run_rounds(driver_config(), workdir)
  teacher_metrics = open(tmp_path / "round0" / "metrics.jsonl").read()
  targets_round1 = dict(np.load(tmp_path / "round1" / self_training.TARGETS_FILE))
  assert not os.path.exists(tmp_path / "round1" / train.SUMMARY_FILE)

  monkeypatch.setattr(steps, "make_train_step", make_train_step)
  trained = []
  train_and_evaluate = train.train_and_evaluate
  monkeypatch.setattr(train, "train_and_evaluate",
                      lambda config, wd: trained.append(wd) or train_and_evaluate(config, wd))
  records = self_training.run_rounds(driver_config(), workdir)
  # Only round 1 trains again, from its SIGTERM checkpoint at step 2; the finished teacher
  # (round 0) and round 1's pseudo-labels are reused as they were.
  assert [os.path.basename(w) for w in trained] == ["round1"]
  summary = json.load(open(tmp_path / "round1" / train.SUMMARY_FILE))
  assert summary["resumed_from_step"] == 2 and summary["last_eval_step"] == 4
  assert open(tmp_path / "round0" / "metrics.jsonl").read() == teacher_metrics
  for key, value in np.load(tmp_path / "round1" / self_training.TARGETS_FILE).items():
    np.testing.assert_array_equal(value, targets_round1[key])
  assert [r["round"] for r in records] == [0, 1]
  # Top-20 per class of 4 classes, minus any labelled example among them.
  assert 0 < records[1]["num_selected"] <= 80
  assert 0.0 <= records[1]["pseudo_label_acc"] <= 1.0
  assert json.load(open(tmp_path / self_training.RESULTS_FILE)) == records
  assert not os.path.exists(tmp_path / (self_training.RESULTS_FILE + ".partial"))
