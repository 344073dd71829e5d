"""benchmarks/segmentation_table.py: selection on some slices, scores on others, on tiny synthetic maps."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from skimage import io

from conftest import ROOT, synthetic_slice


def _load_script():
    spec = importlib.util.spec_from_file_location("segmentation_table", ROOT / "benchmarks" / "segmentation_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_selects_on_selection_slices_only(tmp_path: Path, capsys):
    table = _load_script()
    maps, labels = tmp_path / "maps", tmp_path / "labels"
    maps.mkdir()
    labels.mkdir()
    for index in range(4):
        _, label = synthetic_slice((48, 48), seed=20 + index, cells=5)
        # selection slices 0, 1: only threshold 0.5 separates the cells; test slices 2, 3 would prefer 0.2
        inside, outside = (0.55, 0.45) if index < 2 else (0.3, 0.1)
        prob = np.where(label > 0, inside, outside)
        io.imsave(maps / f"{index}_predict.png", (prob * 255).astype(np.uint8), check_contrast=False)
        io.imsave(labels / f"{index}.png", label, check_contrast=False)
    assert table.main(["--maps", str(maps), "--labels", str(labels), "--select", "0,1", "--test", "2,3",
                       "--methods", "threshold", "--out", str(tmp_path / "out"), "--repeats", "1"]) == 0
    rows = json.loads((tmp_path / "out" / "segmentation_table.json").read_text())
    assert rows[0]["parameters"] == {"threshold": 0.5} and rows[0]["selection_v_rand"] > 0.99
    assert rows[0]["v_rand"] < 0.5  # 0.5 is wrong for the test slices, and they did not choose it
    assert rows[1]["v_rand"] > 0.99  # the sweep on the test slices finds their threshold
    assert json.loads((tmp_path / "out" / "params_threshold.json").read_text())["parameters"] == {"threshold": 0.5}
    assert "| threshold |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="overlap"):
        table.segmentation_table(maps, labels, ["0", "1"], ["1", "2"], ["threshold"])
