"""Deep label propagation (Iscen et al. 2019, arXiv:1904.04717, Alg. 1) over `train_and_evaluate`.

Stage 1 is a supervised run on the labelled examples (the teacher). Stage 2 repeats, for
each "epoch" e = 1..E: embed every training image with the current network (EMA parameters,
penultimate layer, no augmentation); propagate the labels on those embeddings
(`classic.label_propagation`: kNN graph k = 50, s^3 affinities, symmetric normalisation,
alpha = 0.99, 20 CG iterations); write the pseudo-labels with weights omega_i * zeta_{yhat_i}
(entropy x class weight, Eq. 10); then train the network for one epoch on labelled +
weighted pseudo-labelled data (`student` algorithm), starting from the previous epoch's
network (config.init_from). An "epoch" is `config.student.train.num_steps` steps; each epoch
restarts the optimizer and its learning-rate schedule (a fresh run initialised from the
previous one), where the paper keeps one SGD schedule across epochs.

Before stage 2, `propagate_on_teacher` reports label propagation on the teacher's fixed
embeddings: the graph spans the training and the test images (labels on the labelled
training images only), so both the unlabelled training and the test accuracy of the
propagated labels are measured.

`config.lp.max_nodes` (0 = all) limits the graph to the labelled examples plus a fixed random
subset of the other training images (drawn once with the run's seed), for machines where
the N^2 D work of the exact kNN search is too slow; images outside the graph get weight 0.

Workdir layout: `teacher_lp.json`; `epoch<e>/` (run directory with pseudo_labels.npz and
pseudo_labels.json); `results.json`. Re-running resumes like `self_training.run_rounds`.
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from fixmatch_jax import self_training, train
from fixmatch_jax.classic import label_propagation
from fixmatch_jax.data import splits


def _propagate(embeddings: np.ndarray, labelled: np.ndarray, labels: np.ndarray,
               num_classes: int, lp: ml_collections.ConfigDict
               ) -> tuple[label_propagation.Propagation, float]:
  started = time.perf_counter()
  result = label_propagation.propagate(
      embeddings, labelled, labels, num_classes, k=lp.k, gamma=lp.gamma, alpha=lp.alpha,
      num_iterations=lp.num_iterations, block_size=lp.block_size)
  return result, time.perf_counter() - started


def graph_nodes(num_train: int, labelled: np.ndarray, max_nodes: int, seed: int) -> np.ndarray:
  """Sorted training indices in the graph: all, or the labelled + a seeded random subset."""
  if not max_nodes or max_nodes >= num_train:
    return np.arange(num_train)
  others = np.setdiff1d(np.arange(num_train), labelled)
  chosen = np.random.RandomState(seed).choice(others, max_nodes - len(labelled), replace=False)
  return np.sort(np.concatenate([labelled, chosen]))


def propagate_on_teacher(config: ml_collections.ConfigDict, teacher_workdir: str,
                         labelled: np.ndarray, nodes: np.ndarray
                         ) -> tuple[dict[str, Any], np.ndarray]:
  """Label propagation on the teacher's embeddings of train + test images.

  Returns:
    (statistics, the teacher's embeddings of the training images, reused by epoch 1).
  """
  train_source, test_source = train.load_sources(config.teacher.data)
  num_classes = train_source.num_classes
  started = time.perf_counter()
  images = np.concatenate([train_source.images[nodes], test_source.images])
  _, embeddings = self_training.predict(config.teacher, teacher_workdir, images, num_classes,
                                        config.predict_batch_size)
  embed_seconds = time.perf_counter() - started
  result, lp_seconds = _propagate(embeddings, np.searchsorted(nodes, labelled),
                                  train_source.labels[labelled], num_classes, config.lp)
  num_train = len(nodes)
  unlabelled = np.flatnonzero(~np.isin(nodes, labelled))
  predicted = result.pseudo_labels
  return {
      "num_nodes": int(len(images)),
      "test_acc": float(np.mean(predicted[num_train:] == test_source.labels)),
      "pseudo_label_acc": float(np.mean(predicted[unlabelled] ==
                                        train_source.labels[nodes[unlabelled]])),
      "embed_seconds": round(embed_seconds, 1),
      "propagate_seconds": round(lp_seconds, 1),
  }, embeddings[:num_train]


def run(config: ml_collections.ConfigDict, workdir: str,
        teacher_workdir: str | None = None) -> dict[str, Any]:
  """Stage 1 (teacher), label propagation on it, then `config.epochs` epochs of stage 2.

  Args:
    config: {teacher: run config, student: run config of one epoch (algorithm "student"),
      epochs: int, lp: {k, gamma, alpha, num_iterations, block_size, max_nodes (0: all)},
      predict_batch_size: int}.
    workdir: the driver's directory.
    teacher_workdir: stage 1's run directory (default `<workdir>/teacher`).

  Returns:
    {"teacher": ..., "teacher_lp": ..., "epochs": [...]} (also written to results.json).
  """
  os.makedirs(workdir, exist_ok=True)
  teacher_workdir = teacher_workdir or os.path.join(workdir, "teacher")
  train_source, _ = train.load_sources(config.teacher.data)
  num_classes = train_source.num_classes
  summary, _ = self_training.train_stage(config.teacher, teacher_workdir)
  labelled = splits.load(os.path.join(teacher_workdir, splits.SPLIT_FILE)).labelled
  labels = train_source.labels[labelled]
  nodes = graph_nodes(len(train_source.labels), labelled, config.lp.get("max_nodes", 0),
                      config.teacher.seed)
  labelled_nodes = np.searchsorted(nodes, labelled)  # Positions of the labelled in `nodes`.
  unlabelled = np.flatnonzero(~np.isin(nodes, labelled))
  node_labels = train_source.labels[nodes]
  results: dict[str, Any] = {"teacher": {"workdir": teacher_workdir,
                                         "test_acc": summary["acc_ema_final"],
                                         "train_wall_seconds": summary["wall_seconds"]}}
  teacher_lp_path = os.path.join(workdir, "teacher_lp.json")
  teacher_embeddings = None
  if not os.path.exists(teacher_lp_path):
    stats, teacher_embeddings = propagate_on_teacher(config, teacher_workdir, labelled, nodes)
    self_training.save_json(teacher_lp_path, stats)
  with open(teacher_lp_path) as f:
    results["teacher_lp"] = json.load(f)
  logging.info("Label propagation on the teacher's embeddings: %s", results["teacher_lp"])

  previous = (config.teacher, teacher_workdir)
  results["epochs"] = []
  for epoch in range(1, config.epochs + 1):
    epoch_dir = os.path.abspath(os.path.join(workdir, f"epoch{epoch}"))
    targets_path = os.path.join(epoch_dir, self_training.TARGETS_FILE)
    if not os.path.exists(targets_path):
      started = time.perf_counter()
      if epoch == 1 and teacher_embeddings is not None:  # Just computed on the teacher.
        embeddings = teacher_embeddings
      else:
        _, embeddings = self_training.predict(previous[0], previous[1],
                                              train_source.images[nodes], num_classes,
                                              config.predict_batch_size)
      embed_seconds = time.perf_counter() - started
      result, lp_seconds = _propagate(embeddings, labelled_nodes, labels, num_classes,
                                      config.lp)
      weights = result.example_weights
      stats = {
          "num_nodes": int(len(nodes)),
          "pseudo_label_acc": float(np.mean(result.pseudo_labels[unlabelled] ==
                                            node_labels[unlabelled])),
          # Accuracy with each example counted by its loss weight: do the weights favour
          # the correct pseudo-labels?
          "weighted_pseudo_label_acc": float(np.average(
              result.pseudo_labels[unlabelled] == node_labels[unlabelled],
              weights=weights[unlabelled])),
          "class_weights": result.class_weights.tolist(),
          "embed_seconds": round(embed_seconds, 1),
          "propagate_seconds": round(lp_seconds, 1),
      }
      self_training.save_json(os.path.join(epoch_dir, self_training.TARGETS_STATS), stats)
      # One row per training image; images outside the graph are not used (weight 0).
      targets = np.zeros((len(train_source.labels), num_classes), np.float32)
      targets[nodes] = np.eye(num_classes, dtype=np.float32)[result.pseudo_labels]
      table_weights = np.zeros(len(train_source.labels), np.float32)
      table_weights[nodes] = weights
      self_training.save_npz(targets_path, targets=targets, weights=table_weights,
                             nodes=nodes, scores=result.scores)
      logging.info("Epoch %d propagated labels: %s", epoch, stats)
    with open(os.path.join(epoch_dir, self_training.TARGETS_STATS)) as f:
      record = {"epoch": epoch, "workdir": epoch_dir, **json.load(f)}
    student = copy.deepcopy(config.student)
    student.algo.targets_file = targets_path
    student.init_from = previous[1]
    summary, seconds = self_training.train_stage(student, epoch_dir)
    record.update(test_acc=summary["acc_ema_final"], train_wall_seconds=summary["wall_seconds"],
                  train_seconds_this_call=round(seconds, 1))
    results["epochs"].append(record)
    previous = (student, epoch_dir)
  self_training.save_json(os.path.join(workdir, self_training.RESULTS_FILE), results)
  return results
