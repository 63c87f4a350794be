"""QDA before and after pseudo-labelling on 2-D toy data: docs/qda_pseudo_labels_2d.png.

Usage:
  python scripts/qda_2d_figure.py [--out docs/qda_pseudo_labels_2d.png] [--seed 0]

Two Gaussian classes with different covariances; 4 labelled points per class and 600 unlabelled
ones. Left: QDA fitted on the labelled points only. Right: after self-training rounds with the
Instant Gratification rule (keep unlabelled points with p <= 0.01 or p >= 0.99, add them with
hard labels, refit). Ellipses are the 2-sigma contours of each fitted class Gaussian (dashed: the
true ones); titles give the accuracy on 4000 held-out points.
"""

import argparse

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

from fixmatch_jax.classic import instant_gratification as ig  # noqa: E402
from fixmatch_jax.classic import qda  # noqa: E402

MEANS = np.array([[0.0, 0.0], [2.2, 1.0]])
COVARIANCES = np.array([[[3.0, 1.6], [1.6, 1.2]], [[0.5, -0.2], [-0.2, 1.5]]])
COLOURS = ("tab:blue", "tab:orange")
REG_PARAM = 0.05  # a little regularisation: 4 points per class make a noisy covariance


def _sample(rng, n):
  y = rng.integers(0, 2, size=n)
  x = np.stack([rng.multivariate_normal(MEANS[c], COVARIANCES[c]) for c in y])
  return x.astype(np.float32), y


def _ellipse(ax, mean, covariance, colour, **kwargs):
  variances, axes = np.linalg.eigh(covariance)
  angle = np.degrees(np.arctan2(axes[1, -1], axes[0, -1]))
  width, height = 2 * 2 * np.sqrt(variances[::-1])  # 2 sigma along each principal axis
  ax.add_patch(Ellipse(mean, width, height, angle=angle, fill=False, color=colour, **kwargs))


def _panel(ax, params, x_labelled, y_labelled, x_unlabelled, pseudo_keep, pseudo_labels, title):
  grid = np.stack(np.meshgrid(np.linspace(-5, 6, 200), np.linspace(-4, 5, 200)), axis=-1)
  proba = np.asarray(qda.qda_predict_proba(params, grid.reshape(-1, 2)))[:, 1].reshape(200, 200)
  ax.contourf(grid[..., 0], grid[..., 1], proba, levels=[0, 0.5, 1], colors=COLOURS, alpha=0.08)
  ax.contour(grid[..., 0], grid[..., 1], proba, levels=[0.5], colors="k", linewidths=0.8)
  ax.scatter(*x_unlabelled[~pseudo_keep].T, s=4, c="0.7", label="unlabelled")
  for c in (0, 1):
    chosen = pseudo_keep & (pseudo_labels == c)
    ax.scatter(*x_unlabelled[chosen].T, s=5, c=COLOURS[c], alpha=0.5)
    ax.scatter(*x_labelled[y_labelled == c].T, s=70, c=COLOURS[c], edgecolors="k", marker="*")
    covariance = np.linalg.inv(np.asarray(params.precisions[c]))
    _ellipse(ax, np.asarray(params.means[c]), covariance, COLOURS[c], linewidth=2)
    _ellipse(ax, MEANS[c], COVARIANCES[c], COLOURS[c], linewidth=1, linestyle="--")
  ax.set(xlim=(-5, 6), ylim=(-4, 5), title=title, xticks=[], yticks=[])


_fit = jax.jit(lambda x, y, mask: qda.qda_fit(x, y, reg_param=REG_PARAM, sample_mask=mask))


def _true_model():
  precisions = np.linalg.inv(COVARIANCES)
  return qda.QDAParams(
    means=MEANS, precisions=precisions, log_dets=np.linalg.slogdet(COVARIANCES)[1],
    log_priors=np.log([0.5, 0.5]), feature_mask=np.ones(2),
  )


def _self_train(seed, rounds, with_data=False, bayes=False):
  """QDA on the labelled points, then `rounds` of pseudo-labelling; returns both models."""
  rng = np.random.default_rng(seed)
  y_labelled = np.repeat([0, 1], 4)
  x_labelled = np.stack([rng.multivariate_normal(MEANS[c], COVARIANCES[c]) for c in y_labelled])
  x_unlabelled, _ = _sample(rng, 600)
  x_held_out, y_held_out = _sample(rng, 4000)
  accuracy = lambda p: float(np.mean(
    (np.asarray(qda.qda_predict_proba(p, x_held_out))[:, 1] >= 0.5) == y_held_out))
  if bayes:  # the true Gaussians' accuracy on the same held-out points: the ceiling
    return accuracy(_true_model())

  # All points in one padded array; the sample mask says which are (pseudo-)labelled.
  x_all = np.concatenate([x_labelled, x_unlabelled]).astype(np.float32)
  keep, labels = np.zeros(600, bool), np.zeros(600, int)
  params = _fit(x_all, np.r_[y_labelled, labels], np.r_[np.ones(8, bool), keep])
  before = (params, accuracy(params))
  for _ in range(rounds):
    proba = np.asarray(qda.qda_predict_proba(params, x_unlabelled))[:, 1]
    keep, labels = map(np.asarray, ig.select_pseudo_labels(proba, 0.01, 0.99))
    params = _fit(x_all, np.r_[y_labelled, labels], np.r_[np.ones(8, bool), keep])
  models = (*before, params, accuracy(params))
  return (models, (x_labelled, y_labelled, x_unlabelled, keep, labels)) if with_data else models


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="docs/qda_pseudo_labels_2d.png")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--sweep", type=int, default=0,
                      help="instead of plotting, report accuracies over this many seeds")
  args = parser.parse_args()
  if args.sweep:
    results = np.array([_self_train(seed, args.rounds)[1::2] for seed in range(args.sweep)])
    print(f"{args.sweep} seeds: accuracy {results[:, 0].mean():.3f} -> {results[:, 1].mean():.3f}"
          f" (improved on {np.sum(results[:, 1] > results[:, 0])})")
    return
  (before, accuracy_before, params, accuracy_after), data = _self_train(args.seed, args.rounds,
                                                                      with_data=True)
  x_labelled, y_labelled, x_unlabelled, keep, labels = data

  fig, axes = plt.subplots(1, 2, figsize=(9, 4.3))
  _panel(axes[0], before, x_labelled, y_labelled, x_unlabelled, np.zeros(600, bool), labels,
         f"QDA, 8 labels: held-out acc {accuracy_before:.1%}")
  _panel(axes[1], params, x_labelled, y_labelled, x_unlabelled, keep, labels,
         f"+ pseudo-labels ({keep.sum()} of 600, {args.rounds} rounds): "
         f"acc {accuracy_after:.1%}")
  fig.suptitle("2-sigma ellipses: fitted (solid) vs true (dashed); stars: labelled points; "
               f"Bayes accuracy {_self_train(args.seed, 0, bayes=True):.1%}", fontsize=9)
  fig.tight_layout()
  fig.savefig(args.out, dpi=80)
  print(f"wrote {args.out}: accuracy {accuracy_before:.3f} -> {accuracy_after:.3f}, "
        f"{keep.sum()} pseudo-labels")


if __name__ == "__main__":
  main()
