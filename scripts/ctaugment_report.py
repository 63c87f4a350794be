"""FixMatch (RA) vs FixMatch (CTA) on Fashion-MNIST: the table and the learned-rates figure.

  python scripts/ctaugment_report.py --runs=runs/ctaugment --out=docs/ctaugment_rates.png

Reads `<runs>/{ra,cta}_labels40_seed<k>/` (metrics.jsonl, summary.json, cta_rates.jsonl), prints
a Markdown table (median of the last 5 EMA evaluations = the protocol of docs/fashion_mnist.md,
per seed, then mean +/- std over the finished seeds) and draws the CTA rates of the last
logged version of every CTA run: one row per op parameter, one column per bin, with the
threshold 0.8 (after `p = rate + 0.01; p /= max(p)`) marked.
"""
import argparse
import glob
import json
import os

import numpy as np


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def final_acc(run, last_n=5):
  """Median of the last `last_n` EMA evaluations, or None if the run has not finished."""
  summary = os.path.join(run, "summary.json")
  if not os.path.exists(summary):
    return None
  rows = [r for r in read_jsonl(os.path.join(run, "metrics.jsonl")) if "eval/acc_ema" in r]
  return float(np.median([r["eval/acc_ema"] for r in rows[-last_n:]]))


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--runs", default="runs/ctaugment")
  parser.add_argument("--out", default="docs/ctaugment_rates.png")
  args = parser.parse_args()

  print("| strong augmentation | seed | EMA acc. (median of last 5 evals) | EMA acc. at the "
        "last step | steps/s |")
  print("|---|---|---|---|---|")
  results, finals = {}, {}
  for arm in ("ra", "cta"):
    for run in sorted(glob.glob(os.path.join(args.runs, f"{arm}_labels40_seed*"))):
      seed = run.rsplit("seed", 1)[1]
      acc = final_acc(run)
      rows = read_jsonl(os.path.join(run, "metrics.jsonl")) if os.path.exists(
          os.path.join(run, "metrics.jsonl")) else []
      speed = [r["train/steps_per_s"] for r in rows if "train/steps_per_s" in r]
      done = max([r["step"] for r in rows], default=0)
      text = f"{100 * acc:.1f}%" if acc is not None else f"unfinished (step {done})"
      evals = [r["eval/acc_ema"] for r in rows if "eval/acc_ema" in r]
      last = f"{100 * evals[-1]:.1f}%" if acc is not None and evals else "-"
      print(f"| {arm.upper()} | {seed} | {text} | {last} | "
            f"{np.median(speed) if speed else 0:.2f} |")
      if acc is not None:
        results.setdefault(arm, {})[seed] = acc
        finals.setdefault(arm, {})[seed] = evals[-1]
  for arm, by_seed in results.items():
    accs = list(by_seed.values())
    std = f"{100 * np.std(accs, ddof=1):.1f}" if len(accs) > 1 else "n/a"
    last = list(finals[arm].values())
    last_std = f"{100 * np.std(last, ddof=1):.1f}" if len(last) > 1 else "n/a"
    print(f"| {arm.upper()} | mean of {len(accs)} | {100 * np.mean(accs):.1f} +/- {std}% "
          f"(sample std) | {100 * np.mean(last):.1f} +/- {last_std}% | |")
  paired = sorted(set(results.get("ra", {})) & set(results.get("cta", {})))
  if paired:  # Same label fold and initialisation in both arms: compare seed by seed.
    for name, table in (("median of last 5", results), ("last step", finals)):
      diffs = [100 * (table["cta"][s] - table["ra"][s]) for s in paired]
      print(f"\nCTA - RA, same seed, {name} (points): " + ", ".join(
          f"seed {s}: {d:+.1f}" for s, d in zip(paired, diffs, strict=True)) +
          f"; mean {np.mean(diffs):+.1f}")

  # EMA accuracy at every evaluation, so unfinished runs compare at matched steps.
  curves = {}
  for run in sorted(glob.glob(os.path.join(args.runs, "*_labels40_seed*"))):
    path = os.path.join(run, "metrics.jsonl")
    if os.path.exists(path):
      curves[os.path.basename(run)] = {r["step"]: r["eval/acc_ema"] for r in read_jsonl(path)
                                       if "eval/acc_ema" in r}
  steps = sorted({s for c in curves.values() for s in c})
  print("\n| run | " + " | ".join(f"step {s}" for s in steps) + " |")
  print("|---|" + "---|" * len(steps))
  for name, curve in curves.items():
    cells = [f"{100 * curve[s]:.1f}" if s in curve else "-" for s in steps]
    print(f"| {name} | " + " | ".join(cells) + " |")

  runs = sorted(glob.glob(os.path.join(args.runs, "cta_labels40_seed*")))
  logs = [(run, read_jsonl(os.path.join(run, "cta_rates.jsonl"))) for run in runs
          if os.path.exists(os.path.join(run, "cta_rates.jsonl"))]
  if not logs:
    print("No cta_rates.jsonl yet: no figure.")
    return
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(logs) + 1, figsize=(5.5 * len(logs) + 4.5, 6.5),
                           squeeze=False)
  for ax, (run, rows) in zip(axes[0][:-1], logs, strict=True):
    last = rows[-1]
    names, matrix = [], []
    for op, params in last["rates"].items():
      for p, rates in enumerate(params):
        names.append(op if len(params) == 1 else f"{op}[{p}]")
        matrix.append(rates + [np.nan] * (17 - len(rates)))
    image = ax.imshow(np.array(matrix), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("bin (magnitude 0 -> 1)")
    ax.set_title(f"{os.path.basename(run)}\nrates after step {last['step']}", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
  ax = axes[0][-1]
  for run, rows in logs:
    steps = [r["step"] for r in rows]
    for op in ("rotate", "translate_x", "shear_x", "invert", "solarize"):
      means = [np.mean(r["rates"][op][0]) for r in rows]
      ax.plot(steps, means, marker="o", label=f"{op} ({os.path.basename(run)[-5:]})")
  ax.set_xlabel("step")
  ax.set_ylabel("mean rate over bins")
  ax.set_title("Mean rate of some ops during training", fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(args.out, dpi=80)
  print(f"Wrote {args.out}")


if __name__ == "__main__":
  main()
