r"""Table and curves of the Fashion-MNIST runs (experiments/runs/fashion_mnist.sh).

  python scripts/fashion_mnist_report.py --runs=runs/fashion_mnist

Reads each run's summary.json and metrics.jsonl, prints a markdown table (accuracy =
median of the last N evaluations of the EMA model, N = config.train.summary_last_n;
best-of-run beside it; run time)
and writes docs/fashion_mnist_curves.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # Runs from a checkout without `pip install -e .`, like the others.

from fixmatch_jax import metrics  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--runs", default="runs/fashion_mnist")
  parser.add_argument("--labels", default="40,250")
  parser.add_argument("--seed", type=int, default=1)
  parser.add_argument("--figure", default=os.path.join(REPO, "docs", "fashion_mnist_curves.png"))
  args = parser.parse_args()
  label_counts = [int(x) for x in args.labels.split(",")]

  print("| labels | supervised-only | FixMatch | gain (points) | supervised best-of-run | "
        "FixMatch best-of-run | run time supervised / FixMatch |")
  print("|---|---|---|---|---|---|---|")
  fig, axes = plt.subplots(1, 1 + len(label_counts), figsize=(5 * (1 + len(label_counts)), 3.6))
  for column, labels in enumerate(label_counts):
    summaries = {}
    for algorithm in ("supervised", "fixmatch"):
      workdir = os.path.join(args.runs, f"{algorithm}_labels{labels}_seed{args.seed}")
      with open(os.path.join(workdir, "summary.json")) as f:
        summaries[algorithm] = json.load(f)
      rows = metrics.read(workdir)
      evals = [r for r in rows if "eval/acc_ema" in r]
      axes[column].plot([r["step"] for r in evals], [100 * r["eval/acc_ema"] for r in evals],
                        label=f"{algorithm} (EMA)")
      if algorithm == "fixmatch":
        train_rows = [r for r in rows if "train/mask_rate" in r]
        steps = [r["step"] for r in train_rows]
        axes[-1].plot(steps, [100 * r["train/mask_rate"] for r in train_rows],
                      label=f"mask rate, {labels} labels")
        axes[-1].plot(steps, [100 * r["train/pseudo_label_acc"] for r in train_rows], "--",
                      label=f"pseudo-label acc (masked), {labels} labels")
    axes[column].set_title(f"Fashion-MNIST, {labels} labels: test accuracy")
    axes[column].set_xlabel("step")
    axes[column].set_ylabel("%")
    axes[column].legend()
    sup, fix = summaries["supervised"], summaries["fixmatch"]
    key = next(k for k in fix if k.startswith("acc_ema_median_last"))
    print(f"| {labels} | {100 * sup[key]:.2f} | {100 * fix[key]:.2f} | "
          f"{100 * (fix[key] - sup[key]):+.2f} | {100 * sup['acc_ema_best_of_run']:.2f} | "
          f"{100 * fix['acc_ema_best_of_run']:.2f} | "
          f"{sup['wall_seconds'] / 60:.1f} / {fix['wall_seconds'] / 60:.1f} min |")
  axes[-1].set_title("FixMatch: unlabelled batch monitors")
  axes[-1].set_xlabel("step")
  axes[-1].set_ylabel("%")
  axes[-1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(args.figure, dpi=80)
  print(f"\nwrote {args.figure}")


if __name__ == "__main__":
  main()
