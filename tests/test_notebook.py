"""trainUnet.ipynb runs headless with tiny parameters (nbclient)."""

import json

import nbformat
import pytest

from conftest import ROOT

nbclient = pytest.importorskip("nbclient")


def test_notebook_executes_with_tiny_parameters(tiny_dataset, tmp_path):
    notebook = nbformat.read(ROOT / "trainUnet.ipynb", as_version=4)
    notebook.cells = [cell for cell in notebook.cells if "injected-parameters" not in cell.metadata.get("tags", [])]
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    overrides = dict(DATA_DIR=str(tiny_dataset), FETCH=False, EPOCHS=1, STEPS_PER_EPOCH=2, BATCH_SIZE=2,
                     WIDTH=4, PATCH_SIZE=64, VALIDATION_IDS=["4", "5"], RUN_NAME=str(tmp_path / "run"), SHOW=1)
    source = "\n".join(f"{key} = {json.dumps(value) if not isinstance(value, bool) else value}"
                       for key, value in overrides.items())
    notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    assert (tmp_path / "run" / "unet_membrane.keras").is_file()
    assert len(list((tmp_path / "run" / "test_predictions").iterdir())) == 2
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert any("image/png" in output.get("data", {}) for output in outputs), "no figure was drawn"
    assert not [output for output in outputs if output.get("output_type") == "error"]
