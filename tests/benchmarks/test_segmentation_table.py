"""benchmarks/segmentation_table.py: selection on some slices, scores on others, on tiny synthetic maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage import io

from conftest import load_benchmark, synthetic_slice


def test_table_selects_on_selection_slices_only(tmp_path: Path, capsys):
    table = load_benchmark("segmentation_table")
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


def _write_map(folder: Path, name: str, label: np.ndarray, inside: float, outside: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    prob = np.where(label > 0, inside, outside)
    io.imsave(folder / f"{name}_predict.png", (prob * 255).astype(np.uint8), check_contrast=False)


def test_crossval_table_uses_each_folds_own_maps_and_choices(tmp_path: Path, capsys):
    """Two folds of a crossval run folder: each chooses on its selection block's maps (in the
    folder of its TTA choice) and is scored on its test block; the summary is mean and sd."""
    table = load_benchmark("segmentation_table")
    labels, run = tmp_path / "labels", tmp_path / "cv"
    labels.mkdir()
    truth = {}
    for index in range(4):
        _, truth[str(index)] = synthetic_slice((48, 48), seed=40 + index, cells=5)
        io.imsave(labels / f"{index}.png", truth[str(index)], check_contrast=False)
    folds = [{"selection_names": ["1"], "test_names": ["0"], "selection": {"tta": True}},
             {"selection_names": ["3"], "test_names": ["2"], "selection": {"tta": False}}]
    # fold 1 selects on TTA maps where only 0.5 separates the cells; its plain selection maps
    # (the choice it did not make) would prefer 0.2. Fold 2's test map is blurred into one cell.
    _write_map(run / "fold1" / "selection_predictions_tta", "1", truth["1"], 0.55, 0.45)
    _write_map(run / "fold1" / "selection_predictions", "1", truth["1"], 0.3, 0.1)
    _write_map(run / "fold1" / "test_slice_predictions", "0", truth["0"], 0.55, 0.45)
    _write_map(run / "fold2" / "selection_predictions", "3", truth["3"], 0.55, 0.45)
    _write_map(run / "fold2" / "test_slice_predictions", "2", truth["2"], 0.9, 0.8)
    (run / "crossval.json").write_text(json.dumps({"folds": folds}))
    out = tmp_path / "out"
    assert table.main(["--crossval", str(run), "--labels", str(labels), "--methods", "threshold",
                       "--out", str(out), "--repeats", "1"]) == 0
    report = json.loads((out / "crossval_table.json").read_text())
    threshold = report["methods"][0]
    assert threshold["method"] == "threshold"
    assert threshold["parameters"] == [{"threshold": 0.5}, {"threshold": 0.5}]
    good, merged = threshold["v_rand"]["values"]
    assert good > 0.99 and merged < 0.5
    assert threshold["v_rand"]["mean"] == pytest.approx((good + merged) / 2)
    assert threshold["v_rand"]["sd"] == pytest.approx(np.std([good, merged], ddof=1))
    assert report["methods"][1]["seconds_per_slice"] is None  # the official row is not timed
    assert (out / "fold2" / "params_threshold.json").is_file()
    assert "| threshold | " in capsys.readouterr().out


def test_crossval_table_refuses_a_folder_without_a_finished_run(tmp_path: Path):
    table = load_benchmark("segmentation_table")
    with pytest.raises(SystemExit):
        table.main(["--crossval", str(tmp_path), "--labels", str(tmp_path)])
    with pytest.raises(SystemExit):
        table.main(["--crossval", str(tmp_path), "--labels", str(tmp_path), "--maps", str(tmp_path)])


def test_cells_time_to_quality_scores_each_run_on_its_own_choice(tmp_path: Path, capsys):
    """Two runs (2 and 5 minutes of training): each chooses on the selection maps of its TTA
    choice; the longer one's test map is the clean one, so its point is the higher."""
    script = load_benchmark("cells_time_to_quality")
    labels = tmp_path / "labels"
    labels.mkdir()
    truth = {}
    for index in range(2):
        _, truth[str(index)] = synthetic_slice((48, 48), seed=70 + index, cells=5)
        io.imsave(labels / f"{index}.png", truth[str(index)], check_contrast=False)
    runs = []
    for minutes, tta, test_map in ((2, True, (0.9, 0.8)), (5, False, (0.55, 0.45))):
        run = tmp_path / f"run{minutes}"
        _write_map(run / ("selection_predictions_tta" if tta else "selection_predictions"), "0", truth["0"], 0.55, 0.45)
        _write_map(run / ("selection_predictions" if tta else "selection_predictions_tta"), "0", truth["0"], 0.3, 0.1)
        _write_map(run / "test_slice_predictions", "1", truth["1"], *test_map)
        (run / "summary.json").write_text(json.dumps({"train_seconds": 60 * minutes, "epochs": minutes,
                                                      "selection_names": ["0"], "test_names": ["1"],
                                                      "selection": {"tta": tta}}))
        runs.append(str(run))
    out, table = tmp_path / "ttq.png", tmp_path / "ttq.json"
    assert script.main([*runs, "--labels", str(labels), "--methods", "threshold", "--out", str(out),
                        "--json", str(table), "--target", "0.99"]) == 0
    points = json.loads(table.read_text())
    assert [point["minutes"] for point in points] == [2, 5]
    assert all(point["rows"][0]["parameters"] == {"threshold": 0.5} for point in points)
    assert points[0]["rows"][0]["v_rand"] < 0.5 < 0.99 < points[1]["rows"][0]["v_rand"]
    assert out.stat().st_size > 0 and "| 5.0 | 5 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        script.main([str(tmp_path), "--labels", str(labels)])


def test_edge_fit_slices_fits_on_each_folds_own_maps_and_scores_its_test_block(tmp_path: Path, capsys):
    """One fold that chose TTA: the selection and training-slice maps are read from its TTA
    folders (the plain folders hold maps that would fit nothing), and each way of fitting
    scores the test block as a direct fit and segmentation does."""
    from conftest import false_boundary_map
    from isbi_unet.cells import parameters as cell_parameters
    from isbi_unet.evaluation.metric import segmentation_scores

    script = load_benchmark("edge_fit_slices")
    labels, run = tmp_path / "labels", tmp_path / "cv"
    labels.mkdir()
    fold = run / "fold1"
    maps = {}
    for name, seed, folder in (("0", 3, "test_slice_predictions"), ("1", 1, "selection_predictions_tta"),
                               ("2", 2, "train_slice_predictions_tta"), ("3", 4, "train_slice_predictions_tta")):
        prob, label = false_boundary_map(seed)
        (fold / folder).mkdir(parents=True, exist_ok=True)
        io.imsave(fold / folder / f"{name}_predict.png", np.round(prob * 255).astype(np.uint8), check_contrast=False)
        io.imsave(labels / f"{name}.png", label, check_contrast=False)
        maps[name] = np.round(prob * 255).astype(np.float32) / 255.0
    _write_map(fold / "selection_predictions", "1", np.ones((128, 128)), 0.5, 0.5)  # the choice not made
    (run / "crossval.json").write_text(json.dumps({"folds": [
        {"train_names": ["2", "3"], "selection_names": ["1"], "test_names": ["0"], "selection": {"tta": True}}]}))
    out = tmp_path / "fits.json"
    assert script.main(["--crossval", str(run), "--data", str(tmp_path / "data"), "--json", str(out)]) == 2
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "train" / "label").symlink_to(labels)
    assert script.main(["--crossval", str(run), "--data", str(tmp_path / "data"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    truth = {name: io.imread(labels / f"{name}.png") for name in maps}
    fixed = {k: v for k, v in cell_parameters.DEFAULT_PARAMETERS["learned-multicut"].items() if k != "edge_model"}
    for fit, names in (("selection", ["1"]), ("selection+training", ["1", "2", "3"]), ("training", ["2", "3"])):
        model = cell_parameters.fit_edge_model([maps[n] for n in names], [truth[n] for n in names])
        cells = cell_parameters.segment(maps["0"], "learned-multicut", {**fixed, "edge_model": model})
        expected = segmentation_scores([cells], [truth["0"]])["v_rand"]
        assert report["folds"][0][fit]["v_rand"] == pytest.approx(expected)
        assert report["means"][fit]["v_rand"] > 0.99  # learned costs merge the false boundaries
    assert "| selection+training |" in capsys.readouterr().out
