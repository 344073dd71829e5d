"""benchmarks/shifts.py: the shifts themselves, and a whole run on a tiny model and synthetic slices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage import io

from conftest import load_benchmark, synthetic_slice


shifts = load_benchmark("shifts")


@pytest.mark.parametrize("name", list(shifts.SHIFTS))
def test_each_shift_gives_an_8_bit_image_and_a_binary_label_of_one_size(name):
    image, label = synthetic_slice((80, 80), seed=3)
    out, out_label = shifts.shifted_slice(name, image / 255.0, (label > 0).astype(float), seed=0)
    factor = float(name.split()[1]) if name.startswith("scale") else 1.0
    assert out.dtype == np.uint8 and out.shape == out_label.shape == (round(80 * factor),) * 2
    assert set(np.unique(out_label)) <= {0, 255}
    if name == "none":
        np.testing.assert_array_equal(out, image)
    else:
        assert not np.array_equal(out, image)
    again, _ = shifts.shifted_slice(name, image / 255.0, (label > 0).astype(float), seed=0)
    np.testing.assert_array_equal(out, again)  # seeded: the benchmark can be repeated


def test_contrast_and_gamma_move_the_grey_levels_the_way_they_say():
    image = np.linspace(0.1, 0.9, 100).reshape(10, 10)
    half, _ = shifts.shifted_slice("contrast 0.5", image, image > 0.5, seed=0)
    assert np.ptp(half.astype(float)) == pytest.approx(0.5 * 0.8 * 255, abs=1.0)
    darker, _ = shifts.shifted_slice("gamma 1.4", image, image > 0.5, seed=0)
    assert (darker.astype(int) <= np.round(image * 255)).all()


@pytest.mark.parametrize("exponent", [0.2, 5.0])
def test_a_recalibrated_map_keeps_the_ranking_of_its_pixels(exponent):
    png = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = shifts.recalibrated(png, exponent)
    assert out.dtype == np.uint8 and out[0, 0] == 0 and out[-1, -1] == 255
    assert (np.diff(out.ravel().astype(int)) >= 0).all()  # ties from 8 bits, never a reversal
    assert (out[8, 0] > 128) == (exponent < 1)


def test_a_run_on_a_tiny_model_scores_every_method_on_every_condition(tmp_path: Path, monkeypatch):
    import keras
    import model

    data = tmp_path / "data"
    for folder in ("train/image", "train/label"):
        (data / folder).mkdir(parents=True)
    for index in range(2):
        image, label = synthetic_slice((64, 64), seed=index)
        io.imsave(data / "train/image" / f"{index}.png", image, check_contrast=False)
        io.imsave(data / "train/label" / f"{index}.png", label, check_contrast=False)
    keras.utils.set_random_seed(0)  # the same untrained networks, hence maps, on every run
    for width, name in ((4, "a.keras"), (8, "b.keras")):
        model.unet(input_size=(None, None, 1), width=width).save(tmp_path / name)
    out = tmp_path / "out"
    conditions = "scale 1.3,noise 0.05,second model,map^0.2,scale 1.3 at 3.08 nm"  # map^0.2 makes none's maps first
    assert shifts.main(["--model", str(tmp_path / "a.keras"), "--second-model", str(tmp_path / "b.keras"),
                        "--data", str(data), "--names", "0,1", "--conditions", conditions,
                        "--out", str(out)]) == 0
    report = json.loads((out / "shifts.json").read_text())["conditions"]
    assert list(report) == conditions.split(",")
    assert io.imread(out / "maps" / "scale 1.3" / "0_predict.png").shape == (83, 83)
    pixel_sized = io.imread(out / "maps" / "scale 1.3 at 3.08 nm" / "0_predict.png")  # predicted at 4 nm, back at 3.08
    assert pixel_sized.shape == (83, 83)
    assert (out / "images" / "scale 1.3 at 3.08 nm" / "0.png").read_bytes() == (out / "images" / "scale 1.3" / "0.png").read_bytes()
    from isbi_unet.evaluation.metric import segmentation_scores
    from isbi_unet.evaluation.slice_scores import as_probability

    for condition, rows in report.items():
        assert {"components at 0.5", "components, label-free threshold", "multicut, defaults",
                "split-components, defaults"} <= set(rows)
        maps = [as_probability(io.imread(out / "maps" / condition / f"{n}_predict.png")) for n in "01"]
        labels = [io.imread(out / "labels" / condition / f"{n}.png") for n in "01"]
        components = [ndimage.label(prob > 0.5)[0] for prob in maps]
        assert rows["components at 0.5"]["v_rand"] == pytest.approx(
            segmentation_scores(components, labels)["v_rand"], nan_ok=True)
    unshifted = io.imread(out / "maps" / "none" / "0_predict.png")
    np.testing.assert_array_equal(io.imread(out / "maps" / "map^0.2" / "0_predict.png"),
                                  shifts.recalibrated(unshifted, 0.2))
    assert (out / "labels" / "map^0.2" / "0.png").read_bytes() == (out / "labels" / "none" / "0.png").read_bytes()
    first = (out / "maps" / "none" / "0_predict.png").read_bytes()
    assert first != (out / "maps" / "second model" / "0_predict.png").read_bytes()
    # --rescore: the chosen method's rows are scored again with other parameters, the rest kept
    monkeypatch.setitem(shifts.cell_parameters.DEFAULT_PARAMETERS["split-components"], "membrane_fraction", 0.0)
    monkeypatch.setitem(shifts.cell_parameters.DEFAULT_PARAMETERS["split-components"], "min_size", 0)
    assert shifts.main(["--model", str(tmp_path / "a.keras"), "--second-model", str(tmp_path / "b.keras"),
                        "--data", str(data), "--names", "0,1", "--conditions", "noise 0.05",
                        "--out", str(out), "--rescore", "split-components"]) == 0
    again = json.loads((out / "shifts.json").read_text())["conditions"]
    maps = [as_probability(io.imread(out / "maps" / "noise 0.05" / f"{n}_predict.png")) for n in "01"]
    labels = [io.imread(out / "labels" / "noise 0.05" / f"{n}.png") for n in "01"]
    method, params, _ = shifts.cell_parameters.method_for_maps("split-components", {}, maps)
    expected = segmentation_scores([shifts.cell_parameters.segment(p, method, params) for p in maps], labels)
    assert again["noise 0.05"]["split-components, defaults"]["segments"] != report["noise 0.05"]["split-components, defaults"]["segments"]
    assert again["noise 0.05"]["split-components, defaults"]["v_rand"] == pytest.approx(expected["v_rand"], nan_ok=True)
    assert again["noise 0.05"]["multicut, defaults"] == report["noise 0.05"]["multicut, defaults"]


def test_second_maps_stand_in_for_the_second_model(tmp_path: Path):
    """--second-maps DIR: another network's maps, copied as they are and scored like any condition."""
    data = tmp_path / "data"
    for folder in ("train/image", "train/label"):
        (data / folder).mkdir(parents=True)
    given = tmp_path / "given"
    given.mkdir()
    for index in range(2):
        image, label = synthetic_slice((64, 64), seed=index)
        io.imsave(data / "train/image" / f"{index}.png", image, check_contrast=False)
        io.imsave(data / "train/label" / f"{index}.png", label, check_contrast=False)
        io.imsave(given / f"{index}_predict.png", np.where(label > 0, 230, 20).astype(np.uint8), check_contrast=False)
    out = tmp_path / "out"
    common = ["--model", str(tmp_path / "never-loaded.keras"), "--data", str(data), "--names", "0,1",
              "--conditions", "second model", "--out", str(out)]
    assert shifts.main([*common, "--second-maps", str(given)]) == 0
    for index in range(2):
        assert (out / "maps" / "second model" / f"{index}_predict.png").read_bytes() == \
            (given / f"{index}_predict.png").read_bytes()
    rows = json.loads((out / "shifts.json").read_text())["conditions"]["second model"]
    assert rows["components at 0.5"]["v_rand"] == pytest.approx(1.0)  # the maps are the labels, drawn as a network would
    (given / "1_predict.png").unlink()
    with pytest.raises(SystemExit):
        shifts.main([*common, "--second-maps", str(given), "--out", str(tmp_path / "other")])


def test_unknown_conditions_are_refused(tmp_path: Path):
    with pytest.raises(SystemExit):
        shifts.main(["--model", str(tmp_path / "a.keras"), "--conditions", "scale 2"])
    with pytest.raises(SystemExit):
        shifts.main(["--model", str(tmp_path / "a.keras"), "--conditions", "second model"])


def test_combine_averages_the_folds_shared_conditions(tmp_path: Path, capsys):
    paths = []
    for index, value in enumerate((0.9, 0.7)):
        rows = {"none": {"components at 0.5": {"v_rand": value, "v_info": 1.0}},
                "blur 1 px": {"components at 0.5": {"v_rand": value / 2, "v_info": None}}}
        if index == 0:
            rows["scale 0.8"] = {"components at 0.5": {"v_rand": 0.1, "v_info": 0.1}}
        paths.append(tmp_path / f"fold{index}.json")
        paths[-1].write_text(json.dumps({"conditions": rows}))
    combined = shifts.combine(paths)
    assert list(combined) == ["none", "blur 1 px"]
    assert combined["none"]["components at 0.5"] == {"v_rand": pytest.approx(0.8), "v_info": 1.0}
    assert combined["blur 1 px"]["components at 0.5"] == {"v_rand": pytest.approx(0.4)}
    assert shifts.main(["--combine", *map(str, paths)]) == 0
    assert "| components at 0.5 | 0.8000 | 0.4000 | 0.6000 |" in capsys.readouterr().out
