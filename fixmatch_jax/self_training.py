"""Teacher/student self-training rounds as a driver over `train.train_and_evaluate`.

The 5-step recipe (recipes.md; Noisy Student, Xie et al. 2020, arXiv:1911.04252, Alg. 1):
(1) train a teacher on the labelled data; (2) predict the unlabelled data; (3) keep the
confident predictions as labels; (4) train a new, noised student on labelled + pseudo-labelled
data; (5) the student becomes the next round's teacher. Round 0 is the teacher run (any
config, usually `supervised`); rounds 1..R are student runs (`noisy_student`: RandAugment +
Cutout on the pseudo-labelled images and dropout, or `student`: weak augmentation), each
trained from scratch on the targets the previous round's EMA model predicts on the
non-augmented training images.

Selection (config `selection`):
- rule "threshold": keep examples whose largest class probability is >= `threshold`;
- rule "topk": class-balanced, for each class c the `per_class` examples predicted as c with
  the highest p(c | x) (all of them if fewer are predicted as c), as Noisy Student balances
  its pseudo-labelled data;
- `soft_labels`: the target is the full predicted distribution instead of its one-hot argmax.
Labelled examples always keep their true one-hot label with weight 1.

Workdir layout: `round<r>/` is round r's run directory (round 0 may be elsewhere: `teacher`);
before training round r the driver writes `round<r>/pseudo_labels.npz` (targets, weights,
selected, predictions) and `round<r>/pseudo_labels.json` (their accuracy against the hidden
labels). `results.json` collects every round. Re-running resumes: finished rounds are read
back, a round with pseudo-labels but no summary resumes its training at its last checkpoint.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from fixmatch_jax import evaluation, init_from, models, train
from fixmatch_jax.data import splits

TARGETS_FILE = "pseudo_labels.npz"
TARGETS_STATS = "pseudo_labels.json"
RESULTS_FILE = "results.json"


def select_threshold(probs: np.ndarray, threshold: float) -> np.ndarray:
  """bool [N]: max_c p(c | x) >= threshold."""
  if not 0.0 < threshold <= 1.0:
    raise ValueError(f"threshold={threshold} must be in (0, 1].")
  return np.max(probs, axis=1) >= threshold


def select_top_k_per_class(probs: np.ndarray, per_class: int) -> np.ndarray:
  """bool [N]: for each class c, the `per_class` most confident examples predicted as c.

  Ties in confidence go to the lower index (stable sort).
  """
  if per_class < 1:
    raise ValueError(f"per_class={per_class} must be >= 1.")
  predicted = np.argmax(probs, axis=1)
  selected = np.zeros(len(probs), bool)
  for c in range(probs.shape[1]):
    members = np.flatnonzero(predicted == c)
    order = np.argsort(-probs[members, c], kind="stable")
    selected[members[order[:per_class]]] = True
  return selected


def make_targets(probs: np.ndarray, selection: ml_collections.ConfigDict,
                 labelled: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
  """The student's table: targets [N, C], weights [N] (1 selected or labelled, else 0).

  Args:
    probs: float [N, C] teacher probabilities on every training example.
    selection: rule ("threshold" | "topk"), threshold, per_class, soft_labels.
    labelled: indices of the labelled examples; labels: their true classes.

  Returns:
    {"targets", "weights", "selected" (bool, pseudo-labelled, labelled excluded),
     "predictions" (argmax)}.
  """
  if selection.rule == "threshold":
    selected = select_threshold(probs, selection.threshold)
  elif selection.rule == "topk":
    selected = select_top_k_per_class(probs, selection.per_class)
  else:
    raise ValueError(f"selection.rule={selection.rule!r}: use 'threshold' or 'topk'.")
  num_classes = probs.shape[1]
  predictions = np.argmax(probs, axis=1)
  targets = (probs.astype(np.float32) if selection.soft_labels
             else np.eye(num_classes, dtype=np.float32)[predictions])
  selected[labelled] = False
  targets[labelled] = np.eye(num_classes, dtype=np.float32)[labels]
  weights = selected.astype(np.float32)
  weights[labelled] = 1.0
  return {"targets": targets, "weights": weights, "selected": selected,
          "predictions": predictions}


def target_stats(table: dict[str, np.ndarray], true_labels: np.ndarray,
                 labelled: np.ndarray) -> dict[str, Any]:
  """Pseudo-label accuracy against the hidden labels (never used for training)."""
  unlabelled = np.ones(len(true_labels), bool)
  unlabelled[labelled] = False
  known = unlabelled & (true_labels >= 0)
  selected = table["selected"] & known
  correct = table["predictions"] == true_labels
  hard = np.argmax(table["targets"], axis=1)
  return {
      "num_selected": int(selected.sum()),
      "fraction_selected": float(selected.sum() / max(known.sum(), 1)),
      "pseudo_label_acc": float(correct[selected].mean()) if selected.any() else None,
      "prediction_acc_all_unlabelled": float(correct[known].mean()),
      "selected_per_class": np.bincount(hard[selected], minlength=table["targets"].shape[1]
                                        ).tolist(),
  }


def save_npz(path: str, **arrays: np.ndarray) -> None:
  """Writes arrays atomically: a killed driver never leaves a half file to resume from."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
  with os.fdopen(fd, "wb") as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)


def save_json(path: str, record: Any) -> None:
  """Writes JSON atomically (a temporary file, then os.replace)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=2)
  os.replace(tmp, path)


def predict(run_config: ml_collections.ConfigDict, run_workdir: str, images: np.ndarray,
            num_classes: int, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
  """Softmax probabilities and penultimate embeddings of a finished run's EMA model."""
  variables = init_from.load_variables(run_workdir)
  model = models.create(run_config.model, num_classes)
  logits, embeddings = evaluation.embed(
      model, variables["ema_params"], variables["batch_stats"], images, batch_size=batch_size)
  return np.asarray(jax.nn.softmax(logits.astype(np.float32))), embeddings


def summary_of(workdir: str) -> dict[str, Any] | None:
  path = os.path.join(workdir, train.SUMMARY_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def train_stage(config: ml_collections.ConfigDict, workdir: str) -> tuple[dict[str, Any], float]:
  """Runs (or resumes) one stage; returns its summary and this call's wall time."""
  started = time.perf_counter()
  summary = summary_of(workdir)
  if summary is None:
    train.train_and_evaluate(config, workdir)
    summary = summary_of(workdir)
    if summary is None:  # Stopped early (SIGTERM): the next call resumes.
      raise InterruptedError(f"{workdir} stopped before its last step; re-run to resume.")
  return summary, time.perf_counter() - started


def run_rounds(config: ml_collections.ConfigDict, workdir: str,
               teacher_workdir: str | None = None) -> list[dict[str, Any]]:
  """Teacher, then `config.rounds` student rounds (module docstring).

  Args:
    config: {teacher: run config, student: run config (an algorithm reading
      algo.targets_file), rounds: int, selection: {rule, threshold, per_class, soft_labels},
      predict_batch_size: int}.
    workdir: the driver's directory.
    teacher_workdir: round 0's run directory (default `<workdir>/round0`).

  Returns:
    One record per round (0 = teacher): test accuracy, pseudo-label statistics, times.
  """
  os.makedirs(workdir, exist_ok=True)
  teacher_workdir = teacher_workdir or os.path.join(workdir, "round0")
  train_source, _ = train.load_sources(config.teacher.data)
  num_classes = train_source.num_classes
  summary, seconds = train_stage(config.teacher, teacher_workdir)
  labelled = splits.load(os.path.join(teacher_workdir, splits.SPLIT_FILE)).labelled
  records = [{"round": 0, "workdir": teacher_workdir, "test_acc": summary["acc_ema_final"],
              "train_seconds_this_call": round(seconds, 1),
              "train_wall_seconds": summary["wall_seconds"]}]
  previous = (config.teacher, teacher_workdir)
  partial_path = os.path.join(workdir, RESULTS_FILE + ".partial")
  for round_index in range(1, config.rounds + 1):
    round_dir = os.path.abspath(os.path.join(workdir, f"round{round_index}"))
    targets_path = os.path.join(round_dir, TARGETS_FILE)
    record = {"round": round_index, "workdir": round_dir}
    if not os.path.exists(targets_path):
      started = time.perf_counter()
      probs, _ = predict(previous[0], previous[1], train_source.images, num_classes,
                         config.predict_batch_size)
      table = make_targets(probs, config.selection, labelled, train_source.labels[labelled])
      stats = target_stats(table, train_source.labels, labelled)
      stats["predict_seconds"] = round(time.perf_counter() - started, 1)
      save_json(os.path.join(round_dir, TARGETS_STATS), stats)
      save_npz(targets_path, **table)
      logging.info("Round %d pseudo-labels: %s", round_index, stats)
    with open(os.path.join(round_dir, TARGETS_STATS)) as f:
      record.update(json.load(f))
    student = copy.deepcopy(config.student)
    student.algo.targets_file = targets_path
    summary, seconds = train_stage(student, round_dir)
    record.update(test_acc=summary["acc_ema_final"], train_wall_seconds=summary["wall_seconds"],
                  train_seconds_this_call=round(seconds, 1))
    records.append(record)
    # The rounds so far, for a reader while the driver runs; the final file supersedes it.
    save_json(partial_path, records)
    previous = (student, round_dir)
  save_json(os.path.join(workdir, RESULTS_FILE), records)
  if os.path.exists(partial_path):
    os.remove(partial_path)
  return records
