"""trainUnet.ipynb runs headless under papermill's command line with tiny parameters."""

import subprocess
import sys

import nbformat
import pytest

from conftest import ROOT

pytest.importorskip("papermill")


def test_notebook_runs_under_papermill_with_tiny_parameters(tiny_dataset, tmp_path):
    source = nbformat.read(ROOT / "trainUnet.ipynb", as_version=4)
    tagged = [cell for cell in source.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    (tmp_path / "tiny.yaml").write_text(
        f"DATA_DIR: {tiny_dataset}\nFETCH: false\nEPOCHS: 1\nSTEPS_PER_EPOCH: 2\nBATCH_SIZE: 2\nWIDTH: 4\n"
        f"PATCH_SIZE: 64\nVALIDATION_IDS: ['4', '5']\nTEST_IDS: ['3']\nRUN_NAME: {tmp_path / 'run'}\nSHOW: 1\n")
    out = tmp_path / "out.ipynb"
    # the convention the parameters cell promises: papermill IN OUT -p NAME VALUE
    done = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "trainUnet.ipynb"), str(out),
                           "-f", str(tmp_path / "tiny.yaml"), "-p", "TIME_LIMIT_MINUTES", "1",
                           "--cwd", str(ROOT), "--no-progress-bar"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    notebook = nbformat.read(out, as_version=4)
    injected = [cell for cell in notebook.cells if "injected-parameters" in cell.metadata.get("tags", [])]
    assert len(injected) == 1 and "TIME_LIMIT_MINUTES = 1" in injected[0].source
    assert (tmp_path / "run" / "unet_membrane.keras").is_file()
    assert len(list((tmp_path / "run" / "test_predictions").iterdir())) == 2
    assert (tmp_path / "run" / "test_scores.json").is_file()  # the test slice, scored once
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert any("image/png" in output.get("data", {}) for output in outputs), "no figure was drawn"
    assert not [output for output in outputs if output.get("output_type") == "error"]
