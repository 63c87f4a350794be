"""The Colab notebooks: each runs end to end on a tiny setting, and each .ipynb is stored without
outputs and in sync with its jupytext .py twin (the file reviewed in diffs).

Execution goes through nbclient and a real Jupyter kernel, cell by cell as Colab runs them, with
FIXMATCH_COLAB_TINY=1 (seconds-long runs on synthetic or bundled data) and the repository root
as the working directory; a cell that raises fails the test with the cell's traceback.
"""

import glob
import os

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLABS = os.path.join(REPO, "colabs")
NOTEBOOKS = sorted(os.path.basename(p)[:-len(".ipynb")]
                   for p in glob.glob(os.path.join(COLABS, "*.ipynb")))
EXPECTED = {"quickstart", "augmentations", "pseudo_labelling_qda", "self_training",
            "own_dataset", "own_algorithm"}


def test_every_notebook_is_there_with_its_py_twin():
  assert set(NOTEBOOKS) == EXPECTED
  pairs = {os.path.basename(p)[:-len(".py")] for p in glob.glob(os.path.join(COLABS, "*.py"))}
  assert pairs == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_is_in_sync_and_stored_without_outputs(name):
  stored = nbformat.read(os.path.join(COLABS, f"{name}.ipynb"), as_version=4)
  for cell in stored.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, (
          f"{name}.ipynb holds outputs; clear them (jupytext --to ipynb colabs/{name}.py).")
  twin = jupytext.read(os.path.join(COLABS, f"{name}.py"))
  as_cells = lambda notebook: [(c.cell_type, c.source.strip()) for c in notebook.cells]
  assert as_cells(stored) == as_cells(twin), (
      f"colabs/{name}.ipynb and colabs/{name}.py differ; run jupytext --sync colabs/{name}.py")
  # The first cell is the title, the next ones how to install in Colab.
  assert stored.cells[0].source.startswith("# ")
  assert "pip install -e ." in stored.cells[1].source


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_on_the_tiny_setting(name, tmp_path, monkeypatch):
  monkeypatch.setenv("FIXMATCH_COLAB_TINY", "1")
  monkeypatch.setenv("FIXMATCH_COLAB_WORKDIR", str(tmp_path))
  monkeypatch.setenv("MPLBACKEND", "Agg")
  # The kernel inherits this environment: conftest's fake CPU devices and offline TFDS, and the
  # repository on the path (the notebooks import fixmatch_jax and read experiments/ from it).
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  notebook = nbformat.read(os.path.join(COLABS, f"{name}.ipynb"), as_version=4)
  client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                          resources={"metadata": {"path": REPO}})
  client.execute()
  errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "error"]
  assert not errors
