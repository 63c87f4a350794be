"""t-SNE of test-set embeddings, supervised vs FixMatch at 600 labels: docs/tsne_pseudo_labels.png.

Usage:
  nice -n 5 python scripts/tsne_figure.py --runs runs/tsne          # trains both, then plots
  python scripts/tsne_figure.py --runs runs/tsne --num_points 2500  # re-plot (runs resume)
  python scripts/tsne_figure.py --fixmatch_steps 500 --stop_after_minutes 50  # a busy machine

Trains on real Fashion-MNIST with 600 labels (60 per class, seed 1; all 60k training images are
the unlabelled set) twice with `experiments/fashion_mnist.py`: supervised-only (the unlabelled
data unused) and FixMatch (pseudo-labels from the weak view, threshold 0.95, on the strong view;
Sohn et al. 2020, arXiv:2001.07685). Each run goes through `train.train_and_evaluate` in its own
workdir, so re-running the command only resumes (a finished run trains no further) and plots.
`--stop_after_minutes` stops a run that is still training after that long the way a preemption
does (SIGTERM: checkpoint, return) and plots the model as it is; titles give the steps trained.

Then the EMA model of each run embeds the whole test set (penultimate features,
`evaluation.embed`), and t-SNE (van der Maaten & Hinton 2008, JMLR 9; scikit-learn's Barnes-Hut
version) maps a random subsample of the test points to 2-D, coloured by their true class.
Titles give the EMA model's accuracy on all 10k test images at the last step. Results, run
times and the machine: docs/tsne_pseudo_labels.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import threading
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from fixmatch_jax import main as cli  # noqa: E402 - imports no JAX, so devices can still be set

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


def _config(algorithm: str, labels: int, steps: int):
  path = os.path.join(REPO, "experiments", "fashion_mnist.py")
  spec = importlib.util.spec_from_file_location("fashion_mnist_experiment", path)
  experiment = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(experiment)
  config = experiment.get_config(f"algorithm={algorithm},labels={labels},seed=1,steps={steps}")
  config.lock()
  return config


def _finished_variables(workdir: str, num_steps: int) -> dict | None:
  """EMA params and BatchNorm statistics of a run that reached `num_steps`, else None.

  Read from the newest checkpoint by its own metadata (not through a TrainState template), so a
  finished run still plots after the TrainState gains or loses a field.
  """
  import jax  # noqa: PLC0415
  import orbax.checkpoint as ocp  # noqa: PLC0415

  from fixmatch_jax import checkpointing  # noqa: PLC0415

  directory = os.path.join(os.path.abspath(workdir), checkpointing.CHECKPOINT_DIR)
  steps = sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(
      directory) else []
  if not steps or steps[-1] < num_steps:
    return None
  path = os.path.join(directory, str(steps[-1]), "default")
  checkpointer = ocp.StandardCheckpointer()
  tree = checkpointer.metadata(path).item_metadata.tree
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)
  restored = checkpointer.restore(path, abstract)
  checkpointer.close()
  return {"ema_params": restored["ema_params"], "batch_stats": restored["batch_stats"],
          "step": int(restored["step"])}


def _train_and_embed(config, workdir: str, stop_after_minutes: float) -> dict:
  """Trains (or resumes) one run; returns EMA logits/embeddings of the test set and timings."""
  import jax  # noqa: PLC0415 - after the XLA device count is set

  from fixmatch_jax import evaluation, models, train  # noqa: PLC0415

  start = time.perf_counter()
  variables = _finished_variables(workdir, config.train.num_steps)
  if variables is None:
    # The train loop turns SIGTERM into "checkpoint and return" (as on a preempted machine).
    timer = threading.Timer(60 * stop_after_minutes, os.kill, (os.getpid(), signal.SIGTERM))
    if stop_after_minutes > 0:
      timer.start()
    try:
      state = train.train_and_evaluate(config, workdir)
    finally:
      timer.cancel()
    variables = {"ema_params": state.ema_params, "batch_stats": state.batch_stats,
                 "step": int(jax.device_get(state.step))}
  train_seconds = time.perf_counter() - start
  _, test = train.load_sources(config.data)
  model = models.create(config.model, test.num_classes)
  ema_params, batch_stats = jax.device_get((variables["ema_params"], variables["batch_stats"]))
  start = time.perf_counter()
  logits, embeddings = evaluation.embed(model, ema_params, batch_stats, test.images)
  summary_path = os.path.join(workdir, train.SUMMARY_FILE)
  summary = {}
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      summary = json.load(f)
  return {"logits": logits, "embeddings": embeddings, "labels": np.asarray(test.labels),
          "train_seconds": train_seconds, "embed_seconds": time.perf_counter() - start,
          "summary": summary, "steps_trained": variables["step"]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--runs", default="runs/tsne", help="parent of the two workdirs")
  parser.add_argument("--labels", type=int, default=600)
  parser.add_argument("--supervised_steps", type=int, default=1200)
  parser.add_argument("--fixmatch_steps", type=int, default=1200)
  parser.add_argument("--stop_after_minutes", type=float, default=0.0,
                      help="per run; 0: train to the end")
  parser.add_argument("--num_points", type=int, default=2500, help="test points in the t-SNE")
  parser.add_argument("--perplexity", type=float, default=30.0)
  parser.add_argument("--seed", type=int, default=0, help="subsample and t-SNE seed")
  parser.add_argument("--out", default="docs/tsne_pseudo_labels.png")
  args = parser.parse_args()

  steps = {"supervised": args.supervised_steps, "fixmatch": args.fixmatch_steps}
  configs = {name: _config(name, args.labels, steps[name]) for name in steps}
  cli.set_cpu_xla_flags(configs["fixmatch"])  # one XLA device per core, before JAX starts
  results = {}
  for name, config in configs.items():
    workdir = os.path.join(args.runs, f"{name}_labels{args.labels}_steps{steps[name]}_seed1")
    results[name] = _train_and_embed(config, workdir, args.stop_after_minutes)

  rng = np.random.default_rng(args.seed)
  subset = rng.choice(len(results["fixmatch"]["labels"]), size=args.num_points, replace=False)
  figure, axes = plt.subplots(1, 2, figsize=(10, 5.4), layout="constrained")
  record = {"labels": args.labels, "num_points": args.num_points}
  for ax, (name, title) in zip(axes, (("supervised", "Supervised only"),
                                      ("fixmatch", "FixMatch (pseudo-labels)")), strict=True):
    result = results[name]
    accuracy = float(np.mean(result["logits"].argmax(-1) == result["labels"]))
    start = time.perf_counter()
    points = TSNE(n_components=2, perplexity=args.perplexity, init="pca",
                  random_state=args.seed).fit_transform(result["embeddings"][subset])
    tsne_seconds = time.perf_counter() - start
    classes = result["labels"][subset]
    scatter = ax.scatter(points[:, 0], points[:, 1], c=classes, cmap="tab10", s=3,
                         vmin=-0.5, vmax=9.5)
    ax.set(xticks=[], yticks=[],
           title=f"{title}, {args.labels} labels, {result['steps_trained']} steps\n"
                 f"test accuracy {100 * accuracy:.1f}% (EMA model)")
    record[name] = {"test_accuracy_ema_final": accuracy, "steps_trained": result["steps_trained"],
                    "train_seconds": result["train_seconds"],
                    "embed_seconds": result["embed_seconds"], "tsne_seconds": tsne_seconds,
                    "summary": result["summary"]}
  colourbar = figure.colorbar(scatter, ax=axes, ticks=range(10), fraction=0.025)
  colourbar.ax.set_yticklabels(FASHION_CLASSES, fontsize=7)
  figure.suptitle(f"Fashion-MNIST test embeddings (t-SNE of {args.num_points} test images)")
  figure.savefig(args.out, dpi=72)
  print(json.dumps(record))


if __name__ == "__main__":
  main()
