"""Deep label propagation driver: epoch 1 trains on label propagation over the teacher."""

import json
import os
import sys

import ml_collections
import numpy as np

from fixmatch_jax import algorithms, deep_label_propagation, self_training, train
from fixmatch_jax.classic import label_propagation
from fixmatch_jax.data import splits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments"))
import tiny  # noqa: E402


def test_two_epochs_on_propagated_labels(tmp_path):
  teacher = tiny.get_config("algorithm=supervised,steps=3")
  student = tiny.get_config("steps=2")
  student.algorithm = "student"
  student.algo = algorithms.get("student").default_config()
  config = ml_collections.ConfigDict(dict(
      teacher=teacher, student=student, epochs=2, predict_batch_size=64,
      lp=dict(k=5, gamma=3.0, alpha=0.99, num_iterations=20, block_size=100, max_nodes=200)))
  results = deep_label_propagation.run(config, str(tmp_path))

  # Epoch 1's table is label propagation on the teacher's embeddings of the graph's 200
  # nodes (a second code path: predict + propagate called directly), weighted by
  # omega * zeta; the 56 images outside the graph get weight 0.
  train_source, _ = train.load_sources(teacher.data)
  split = splits.load(os.path.join(tmp_path, "teacher", splits.SPLIT_FILE))
  table = np.load(tmp_path / "epoch1" / self_training.TARGETS_FILE)
  nodes = table["nodes"]
  assert len(nodes) == 200 and set(split.labelled) <= set(nodes)
  _, embeddings = self_training.predict(teacher, str(tmp_path / "teacher"),
                                        train_source.images[nodes], 4, 64)
  expected = label_propagation.propagate(embeddings, np.searchsorted(nodes, split.labelled),
                                         train_source.labels[split.labelled], 4, k=5,
                                         block_size=100)
  np.testing.assert_array_equal(np.argmax(table["targets"][nodes], 1), expected.pseudo_labels)
  np.testing.assert_allclose(table["weights"][nodes], expected.example_weights, rtol=1e-5,
                             atol=1e-6)
  outside = np.setdiff1d(np.arange(256), nodes)
  assert not table["weights"][outside].any()
  # Epoch 2 starts from epoch 1's network; epoch 1 from the teacher's.
  for epoch, source in ((1, "teacher"), (2, "epoch1")):
    with open(tmp_path / f"epoch{epoch}" / "config.json") as f:
      assert json.load(f)["init_from"].endswith(source)
  assert [r["epoch"] for r in results["epochs"]] == [1, 2]
  assert 0.0 <= results["teacher_lp"]["test_acc"] <= 1.0
