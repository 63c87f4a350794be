"""Tests for fixmatch_jax.data.pipeline: schema, determinism, exact resume, per-process slices,
epoch coverage of the training streams, and exactly-once padded evaluation."""

import itertools

import ml_collections
import numpy as np
import pytest

from fixmatch_jax.data import pipeline, sources, splits

ALL_VIEWS = ("weak", "strong", "strong2", "raw")
NUM_TRAIN, NUM_LABELS = 48, 8


def _config(batch_size=4, mu=2, flip=True, pad_fraction=0.25, strong_name="randaugment"):
  return ml_collections.ConfigDict(dict(
      dataset="synthetic", dataset_options=ml_collections.ConfigDict(), num_labels=NUM_LABELS,
      unlabelled_includes_labelled=True, batch_size=batch_size, mu=mu, eval_batch_size=8,
      weak=dict(flip=flip, pad_fraction=pad_fraction),
      strong=dict(name=strong_name, num_ops=2, prob=0.5, min_level=1, max_level=9,
                  magnitude=-1, variant="fixmatch", cutout=0.5),
      prefetch=1, num_parallel_calls=-1))


def _random_source():
  return sources.load("synthetic", "train", num_examples=NUM_TRAIN, image_size=8, channels=3,
                      num_classes=4)


def _index_source():
  """Image i is constant i + 1, so flips and reflect-crops keep telling which example it is."""
  images = np.broadcast_to((np.arange(NUM_TRAIN) + 1).astype(np.uint8)[:, None, None, None],
                           (NUM_TRAIN, 8, 8, 1)).copy()
  return sources.ArraySource(name="index", images=images,
                             labels=np.arange(NUM_TRAIN, dtype=np.int64) % 4, num_classes=4)


def _split(config, source, seed=1):
  return splits.make_split(config, source, seed)


def _take(config, source, num_steps, *, views=ALL_VIEWS, seed=1, **kwargs):
  kwargs.setdefault("process_index", 0)
  kwargs.setdefault("process_count", 1)
  stream = pipeline.train_stream(config, source, _split(config, source), views=views, seed=seed,
                                 **kwargs)
  return list(itertools.islice(stream, num_steps))


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for part in a:
    assert a[part].keys() == b[part].keys()
    for key in a[part]:
      np.testing.assert_array_equal(a[part][key], b[part][key], err_msg=f"{part}/{key}")


@pytest.fixture(scope="module")
def reference():
  """Four steps of the P=1 stream with every view, seed 1."""
  return _take(_config(), _random_source(), 4)


def test_schema_shapes_and_dtypes(reference):
  batch = reference[0]
  assert set(batch) == {"labelled", "unlabelled"}
  assert set(batch["labelled"]) == {"image", "label"}
  assert batch["labelled"]["image"].shape == (4, 8, 8, 3)
  assert batch["labelled"]["image"].dtype == np.uint8
  assert batch["labelled"]["label"].shape == (4,) and batch["labelled"]["label"].dtype == np.int32
  assert set(batch["unlabelled"]) == set(ALL_VIEWS) | {"index", "label"}
  for view in ALL_VIEWS:
    assert batch["unlabelled"][view].shape == (8, 8, 8, 3)
    assert batch["unlabelled"][view].dtype == np.uint8
  for key in ("index", "label"):
    assert batch["unlabelled"][key].shape == (8,) and batch["unlabelled"][key].dtype == np.int32
  source = _random_source()
  index = batch["unlabelled"]["index"]
  np.testing.assert_array_equal(batch["unlabelled"]["raw"], source.images[index])
  np.testing.assert_array_equal(batch["unlabelled"]["label"], source.labels[index])


def test_supervised_stream_has_no_unlabelled_entry():
  batch = _take(_config(), _random_source(), 1, views=())[0]
  assert set(batch) == {"labelled"}


def test_resume_equals_fresh_stream_with_the_same_seed(reference):
  # A separately built stream, same seed, started at step 2: steps 2 and 3 of the fresh one.
  resumed = _take(_config(), _random_source(), 2, start_step=2)
  for step in range(2):
    _assert_batches_equal(resumed[step], reference[2 + step])


def test_other_seed_other_batches(reference):
  other = _take(_config(), _random_source(), 1, seed=2, views=("weak", "raw"))[0]
  assert not np.array_equal(other["unlabelled"]["index"], reference[0]["unlabelled"]["index"])
  assert not np.array_equal(other["labelled"]["image"], reference[0]["labelled"]["image"])


def test_process_slices_concatenate_to_the_global_batch(reference):
  slices = [_take(_config(), _random_source(), 2, process_index=p, process_count=2)
            for p in range(2)]
  for step in range(2):
    for part in ("labelled", "unlabelled"):
      for key, value in reference[step][part].items():
        joined = np.concatenate([slices[p][step][part][key] for p in range(2)])
        np.testing.assert_array_equal(joined, value, err_msg=f"step {step} {part}/{key}")


def test_views_are_independent_and_do_not_depend_on_each_other(reference):
  unlabelled = reference[0]["unlabelled"]
  assert not np.array_equal(unlabelled["strong"], unlabelled["strong2"])
  assert not np.array_equal(unlabelled["weak"], unlabelled["strong"])
  only_strong = _take(_config(), _random_source(), 1, views=("strong",))[0]
  np.testing.assert_array_equal(only_strong["unlabelled"]["strong"], unlabelled["strong"])
  np.testing.assert_array_equal(only_strong["labelled"]["image"],
                                reference[0]["labelled"]["image"])


def test_weak_augmentation_follows_the_config():
  batch = _take(_config(flip=False, pad_fraction=0.0), _random_source(), 1,
                views=("weak", "raw"))[0]["unlabelled"]
  np.testing.assert_array_equal(batch["weak"], batch["raw"])
  assert pipeline.weak_pad(_config().weak, (32, 32, 3)) == 8
  assert pipeline.weak_pad(ml_collections.ConfigDict(dict(pad_fraction=0.125)), (28, 28)) == 4


def _weak_draw(weak, raw, pad):
  """The (flip, row offset, column offset) that makes `weak` from `raw`, or None."""
  h, w = raw.shape[:2]
  for flip in (False, True):
    padded = np.pad(raw[:, ::-1] if flip else raw, [(pad, pad), (pad, pad), (0, 0)], "reflect")
    for dy, dx in itertools.product(range(2 * pad + 1), repeat=2):
      if np.array_equal(padded[dy:dy + h, dx:dx + w], weak):
        return flip, dy, dx
  return None


def test_weak_view_is_a_flip_and_crop_drawn_per_row():
  # Random 8x8 images, pad 2: each row's flip and offsets are identifiable, and 64 rows drawing
  # from 50 outcomes all alike would mean one draw per batch instead of per row. 8 steps of 8
  # rows cover the 48 unlabelled examples more than once.
  unlabelled = [b["unlabelled"] for b in _take(_config(), _random_source(), 8,
                                                views=("weak", "raw"))]
  draws = [_weak_draw(weak, raw, pad=2) for batch in unlabelled
           for weak, raw in zip(batch["weak"], batch["raw"], strict=True)]
  assert None not in draws
  assert len(set(draws)) > 16
  # The same example at two stream positions gets its own draws (by position, not by index).
  index = np.concatenate([batch["index"] for batch in unlabelled])
  first = {i: row for row, i in reversed(list(enumerate(index)))}
  repeats = [(first[i], row) for row, i in enumerate(index) if first[i] != row]
  assert len(repeats) >= 16
  assert sum(draws[a] != draws[b] for a, b in repeats) > len(repeats) // 2


def test_streams_cover_their_subsets_every_epoch():
  # batch 3 over 8 labelled examples: batches straddle epochs.
  config, source = _config(batch_size=3, mu=2), _index_source()
  split = _split(config, source)
  batches = _take(config, source, 8, views=("raw",))
  labelled_rows = np.concatenate([b["labelled"]["image"][:, 0, 0, 0] for b in batches]) - 1
  for epoch in range(3):
    np.testing.assert_array_equal(np.sort(labelled_rows[8 * epoch:8 * (epoch + 1)]),
                                  split.labelled)
  assert not np.array_equal(labelled_rows[:8], labelled_rows[8:16])  # A new order per epoch.
  index = np.concatenate([b["unlabelled"]["index"] for b in batches])
  np.testing.assert_array_equal(np.sort(index), np.arange(NUM_TRAIN))  # 8 steps x 6 = 1 epoch.
  raw = np.concatenate([b["unlabelled"]["raw"] for b in batches])
  np.testing.assert_array_equal(raw[:, 0, 0, 0], index + 1)


def test_unlabelled_stream_draws_from_its_subset_only():
  config, source = _config(), _index_source()
  config.unlabelled_includes_labelled = False
  split = _split(config, source)
  batches = _take(config, source, 5, views=("raw",))  # 40 rows = one epoch of the 40 left.
  index = np.concatenate([b["unlabelled"]["index"] for b in batches])
  np.testing.assert_array_equal(np.sort(index), split.unlabelled)


def test_bad_arguments_raise():
  source = _random_source()
  with pytest.raises(ValueError, match="views"):
    _take(_config(), source, 1, views=("weak", "blurry"))
  with pytest.raises(ValueError, match="divisible"):
    _take(_config(), source, 1, process_index=0, process_count=3)
  with pytest.raises(ValueError, match="randaugment.*ctaugment"):
    _take(_config(strong_name="autoaugment"), source, 1, views=("weak", "strong"))
  with pytest.raises(ValueError, match="use_ctaugment"):  # CTA name with RandAugment's keys.
    _take(_config(strong_name="ctaugment"), source, 1, views=("weak", "strong"))


@pytest.mark.parametrize("num_processes, batch_size", [(1, 4), (3, 6)])
def test_eval_stream_covers_every_example_once(num_processes, batch_size):
  source = sources.ArraySource(
      name="eval", images=_index_source().images[:10], labels=np.arange(10, dtype=np.int64),
      num_classes=10)
  per_process = [list(pipeline.eval_stream(source, batch_size=batch_size, process_index=p,
                                           process_count=num_processes))
                 for p in range(num_processes)]
  num_batches = pipeline.num_eval_batches(10, batch_size)
  assert all(len(batches) == num_batches for batches in per_process)
  global_batches = [{key: np.concatenate([per_process[p][b][key] for p in range(num_processes)])
                     for key in ("image", "label", "mask")} for b in range(num_batches)]
  for batch in global_batches:
    assert batch["image"].shape == (batch_size, 8, 8, 1) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32 and batch["mask"].dtype == bool
    assert np.all(batch["image"][~batch["mask"]] == 0)
  mask = np.concatenate([b["mask"] for b in global_batches])
  labels = np.concatenate([b["label"] for b in global_batches])[mask]
  np.testing.assert_array_equal(labels, np.arange(10))  # In order, each exactly once.
  images = np.concatenate([b["image"] for b in global_batches])[mask]
  np.testing.assert_array_equal(images, source.images)
  stream = pipeline.eval_stream(source, batch_size=batch_size, process_index=0,
                                process_count=num_processes)
  assert len(list(stream)) == len(list(stream)) == num_batches  # Re-iterable.
