"""trainUnet.ipynb runs headless under papermill's command line with tiny parameters, and its
training is the command line's: the same settings give the same weights."""

import subprocess
import sys

import keras
import nbformat
import numpy as np
import pytest

from conftest import ROOT

pytest.importorskip("papermill")


def test_notebook_runs_under_papermill_and_trains_as_main_py_train(tiny_dataset, tmp_path):
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
    assert (tmp_path / "run" / "test_slice_instances" / "cells.csv").is_file()  # cells of the test slice

    # the same settings on the command line: the same weights, to the last bit
    done = subprocess.run([sys.executable, "main.py", "train", "--data", str(tiny_dataset), "--epochs", "1",
                           "--steps-per-epoch", "2", "--batch-size", "2", "--width", "4", "--patch-size", "64",
                           "--val-ids", "4,5", "--test-ids", "3", "--time-limit", "1", "--seed", "1",
                           "--logs", str(tmp_path), "--run", "cli", "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    from_notebook = keras.models.load_model(tmp_path / "run" / "unet_membrane.keras", compile=False)
    from_cli = keras.models.load_model(tmp_path / "cli" / "unet_membrane.keras", compile=False)
    for mine, theirs in zip(from_notebook.get_weights(), from_cli.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert (tmp_path / "run" / "history.csv").read_text().splitlines()[0] == \
        (tmp_path / "cli" / "history.csv").read_text().splitlines()[0]


