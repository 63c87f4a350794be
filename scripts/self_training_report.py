r"""Tables of docs/self_training.md from the runs of experiments/runs/self_training.sh.

  python scripts/self_training_report.py --runs=runs/self_training

For each seed directory: test accuracy (EMA model, last step) of every stage, the accuracy of
the pseudo-labels each stage trained on (against the hidden labels of the unlabelled
training images), and wall times. Stages not (yet) finished are shown as "-"; the mean
over seeds counts only the seeds where that stage finished (n given).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fixmatch_jax import summarize  # noqa: E402  (no JAX import)


def _load(path: str):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _partial_rounds(seed_dir: str):
  """Round records from results.json, or from each finished round directory."""
  results = _load(os.path.join(seed_dir, "rounds", "results.json"))
  if results is not None:
    return {r["round"]: r for r in results}
  records = {}
  for round_dir in sorted(glob.glob(os.path.join(seed_dir, "rounds", "round[0-9]*"))):
    index = int(os.path.basename(round_dir)[len("round"):])
    record = _load(os.path.join(round_dir, "pseudo_labels.json")) or {}
    summary = _load(os.path.join(round_dir, "summary.json"))
    if summary is not None:
      record.update(test_acc=summary["acc_ema_final"], train_wall_seconds=summary["wall_seconds"])
    records[index] = record
  return records


def collect(seed_dir: str) -> dict[str, dict]:
  """stage name -> {"test_acc", "pl_acc", "seconds"} for one seed."""
  rows: dict[str, dict] = {}

  def run(name, workdir):
    summary = _load(os.path.join(seed_dir, workdir, "summary.json"))
    if summary is not None:
      rows[name] = {"test_acc": summary["acc_ema_final"], "seconds": summary["wall_seconds"],
                    # FixMatch's: the masked pseudo-labels of the last logging interval.
                    "pl_acc": summarize.load_run(os.path.join(seed_dir, workdir))
                                       .last_logged(summarize.PSEUDO_LABEL_ACC)}

  run("supervised teacher", "teacher")
  for index, record in sorted(_partial_rounds(seed_dir).items()):
    if index == 0 or "test_acc" not in record:
      continue
    rows[f"self-training round {index}"] = {
        "test_acc": record["test_acc"], "pl_acc": record.get("pseudo_label_acc"),
        "selected": record.get("num_selected"),
        "seconds": record.get("train_wall_seconds", 0) + record.get("predict_seconds", 0)}
  lp_dir = os.path.join(seed_dir, "deep_lp_driver")
  teacher_lp = _load(os.path.join(lp_dir, "teacher_lp.json"))
  if teacher_lp is not None:
    rows["label propagation on the teacher's embeddings"] = {
        "test_acc": teacher_lp["test_acc"], "pl_acc": teacher_lp["pseudo_label_acc"],
        "seconds": teacher_lp["embed_seconds"] + teacher_lp["propagate_seconds"]}
  for epoch_dir in sorted(glob.glob(os.path.join(lp_dir, "epoch[0-9]*"))):
    stats = _load(os.path.join(epoch_dir, "pseudo_labels.json"))
    summary = _load(os.path.join(epoch_dir, "summary.json"))
    if stats is None or summary is None:
      continue
    rows[f"deep label propagation, {os.path.basename(epoch_dir)}"] = {
        "test_acc": summary["acc_ema_final"], "pl_acc": stats["pseudo_label_acc"],
        "seconds": summary["wall_seconds"] + stats["embed_seconds"] + stats["propagate_seconds"]}
  run("FixMatch from scratch", "fixmatch")
  run("rotation pre-training (test acc meaningless)", "rotation")
  run("FixMatch from the rotation checkpoint", "fixmatch_from_rotation")
  run("FixMatch from scratch, 600 steps (= rotation + FixMatch steps)", "fixmatch_600")
  return rows


def _fmt(values):
  values = [v for v in values if v is not None]
  if not values:
    return "-"
  if len(values) == 1:
    return f"{100 * values[0]:.1f}"
  # Sample standard deviation (ddof = 1), as fixmatch_jax.summarize.
  return (f"{100 * np.mean(values):.1f} +/- {100 * np.std(values, ddof=1):.1f} "
          f"(n={len(values)})")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--runs", default="runs/self_training")
  args = parser.parse_args()
  seeds = sorted(d for d in glob.glob(os.path.join(args.runs, "seed[0-9]*")) if os.path.isdir(d))
  per_seed = {os.path.basename(s): collect(s) for s in seeds}
  stages = []
  for rows in per_seed.values():
    stages += [name for name in rows if name not in stages]
  names = list(per_seed)
  print("Test accuracy (%), EMA model at the last step:\n")
  print("| stage | " + " | ".join(names) + " | mean +/- std |")
  print("|---|" + "---|" * (len(names) + 1))
  for stage in stages:
    values = [per_seed[n].get(stage, {}).get("test_acc") for n in names]
    cells = ["-" if v is None else f"{100 * v:.1f}" for v in values]
    print(f"| {stage} | " + " | ".join(cells) + f" | {_fmt(values)} |")
  print("\nPseudo-label accuracy (%) on the unlabelled training images (selected ones for "
        "self-training; all for label propagation; for FixMatch, the masked ones of the "
        "last 100 steps):\n")
  print("| stage | " + " | ".join(names) + " |")
  print("|---|" + "---|" * len(names))
  for stage in stages:
    values = [per_seed[n].get(stage, {}).get("pl_acc") for n in names]
    if all(v is None for v in values):
      continue
    cells = ["-" if v is None else f"{100 * v:.1f}" for v in values]
    print(f"| {stage} | " + " | ".join(cells) + " |")
  print("\nWall seconds per stage (training + prediction/propagation):\n")
  print("| stage | " + " | ".join(names) + " |")
  print("|---|" + "---|" * len(names))
  for stage in stages:
    values = [per_seed[n].get(stage, {}).get("seconds") for n in names]
    cells = ["-" if v is None else f"{v:.0f}" for v in values]
    print(f"| {stage} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
