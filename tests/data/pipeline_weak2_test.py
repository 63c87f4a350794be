"""The "weak2" view (Pi-model, Mean Teacher): a second, independent weak augmentation of the
same unlabelled images, which leaves the draws of the other views unchanged."""

import itertools

import ml_collections
import numpy as np

from fixmatch_jax.data import pipeline, sources, splits


def config():
  return ml_collections.ConfigDict(dict(
      dataset="synthetic", dataset_options=ml_collections.ConfigDict(), num_labels=8,
      unlabelled_includes_labelled=True, batch_size=4, mu=4, eval_batch_size=8,
      weak=dict(flip=True, pad_fraction=0.25),
      strong=dict(name="randaugment", num_ops=2, prob=0.5, min_level=1, max_level=9,
                  magnitude=-1, variant="fixmatch", cutout=0.5),
      prefetch=1, num_parallel_calls=-1))


def take(views, steps=2):
  cfg = config()
  source = sources.load("synthetic", "train", num_examples=48, image_size=8, channels=3,
                        num_classes=4)
  stream = pipeline.train_stream(cfg, source, splits.make_split(cfg, source, 1), views=views,
                                 seed=1, process_index=0, process_count=1)
  return source, list(itertools.islice(stream, steps))


def test_weak2_is_another_weak_draw_of_the_same_images():
  source, batches = take(("weak", "weak2", "raw"))
  _, weak_only = take(("weak",))
  for batch, reference in zip(batches, weak_only, strict=True):
    unlabelled = batch["unlabelled"]
    np.testing.assert_array_equal(unlabelled["raw"], source.images[unlabelled["index"]])
    # Adding views leaves the "weak" draws (and the example order) as they were.
    np.testing.assert_array_equal(unlabelled["weak"], reference["unlabelled"]["weak"])
    assert not np.array_equal(unlabelled["weak"], unlabelled["weak2"])
    # Each weak2 image is a flip + reflect-pad-crop (2 px) of its own raw image.
    for raw, view in zip(unlabelled["raw"], unlabelled["weak2"], strict=True):
      candidates = [
          augment_crop(image, dy, dx)
          for image in (raw, raw[:, ::-1]) for dy in range(-2, 3) for dx in range(-2, 3)]
      assert any(np.array_equal(view, c) for c in candidates)


def augment_crop(image, dy, dx):
  """The 8x8 crop of the 2-px reflect-padded image at offset (2 + dy, 2 + dx)."""
  padded = np.pad(image, ((2, 2), (2, 2), (0, 0)), mode="reflect")
  return padded[2 + dy:2 + dy + 8, 2 + dx:2 + dx + 8]
