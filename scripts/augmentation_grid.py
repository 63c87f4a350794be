"""Saves docs/augmentations.png: real Fashion-MNIST images, weakly and strongly augmented.

Rows: the original images; FixMatch's weak view (random mirror, reflect-pad 4 px, random crop);
then several strong views (RandAugment, official FixMatch variant, on top of a weak view, then
Cutout), each titled with the ops that were applied and their levels.

  python scripts/augmentation_grid.py [--out docs/augmentations.png] [--strong-rows 4]
"""
import argparse
import gzip
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fixmatch_jax.data import augment, randaugment  # noqa: E402

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Boot")
SHORT = {"identity": "id", "autocontrast": "autoC", "equalize": "equal", "rotate": "rot",
         "solarize": "solar", "color": "color", "contrast": "contr", "brightness": "bright",
         "sharpness": "sharp", "shear_x": "shearX", "shear_y": "shearY", "translate_x": "transX",
         "translate_y": "transY", "posterize": "poster"}


def load_fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
  """Training images uint8 [N, 28, 28, 1] and labels, via the sources module if it is there."""
  try:
    from fixmatch_jax.data import sources
    source = sources.load("fashion_mnist_local", "train")
    return source.images, source.labels
  except (ImportError, AttributeError):
    def read(name):
      with gzip.open(os.path.join(FASHION_DIR, name)) as f:
        return np.frombuffer(f.read(), np.uint8)
    images = read("train-images-idx3-ubyte.gz")[16:].reshape(-1, 28, 28, 1)
    return images, read("train-labels-idx1-ubyte.gz")[8:].astype(np.int64)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default=os.path.normpath(os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "..", "docs", "augmentations.png")))
  parser.add_argument("--strong-rows", type=int, default=4)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  images, labels = load_fashion_mnist()
  # One image of each of the first 8 classes.
  picks = [int(np.flatnonzero(labels == c)[0]) for c in range(8)]
  originals = images[picks]
  rows = [("original", originals, None)]
  weak = augment.weak_augment_batch(originals, tf.constant([args.seed, 0]), flip=True, pad=4)
  rows.append(("weak", weak.numpy(), None))
  for r in range(args.strong_rows):
    seed = tf.constant([args.seed, r + 1])
    base = augment.weak_augment_batch(originals, seed, flip=True, pad=4)
    params = randaugment.sample_params(seed, originals.shape[1:], batch_size=len(picks))
    titles = []
    for ops, applied, levels in zip(params["op"].numpy(), params["applied"].numpy(),
                                    params["level"].numpy(), strict=True):
      used = [f"{SHORT[randaugment.OP_NAMES[o]]}{int(lv)}"
              for o, a, lv in zip(ops, applied, levels, strict=True) if a]
      titles.append(" ".join(used) or "(cutout only)")
    rows.append((f"strong {r + 1}", randaugment.apply(base, params).numpy(), titles))

  fig, axes = plt.subplots(len(rows), len(picks), figsize=(1.05 * len(picks), 1.2 * len(rows)))
  for i, (name, batch, titles) in enumerate(rows):
    for j in range(len(picks)):
      ax = axes[i, j]
      ax.imshow(batch[j, ..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      title = CLASSES[labels[picks[j]]] if i == 0 else (titles[j] if titles else "")
      ax.set_title(title, fontsize=6, pad=2)
      if j == 0:
        ax.set_ylabel(name, fontsize=8)
  fig.suptitle("Fashion-MNIST: weak (flip + pad-crop) and strong (RandAugment + Cutout) views",
               fontsize=8)
  fig.tight_layout(pad=0.3, rect=(0, 0, 1, 0.97))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  fig.savefig(args.out, dpi=110)
  print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.0f} KB)")


if __name__ == "__main__":
  main()
