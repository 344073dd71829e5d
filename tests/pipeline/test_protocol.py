"""The train/select/test split, and the precision of saved and loaded models."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from isbi_unet.errors import UserError
from isbi_unet.network import compute_policy, load_model, with_precision
from isbi_unet.protocol import split_slices
from isbi_unet.training import loop
from isbi_unet.training.recipes import RECIPES
from model import unet

ISBI_NAMES = [str(i) for i in range(30)]


def test_default_split_of_the_isbi_slices_is_three_disjoint_blocks():
    split = split_slices(ISBI_NAMES)
    assert split.train == [str(i) for i in range(20)]
    assert split.select == ["20", "21", "22", "23", "24"]
    assert split.test == ["25", "26", "27", "28", "29"]


@pytest.mark.parametrize("select, test, expected", [
    (["0", "1"], None, (ISBI_NAMES[2:25], ["0", "1"], ISBI_NAMES[25:])),
    (None, [], (ISBI_NAMES[:20] + ISBI_NAMES[25:], ISBI_NAMES[20:25], [])),
    (None, ["3"], ([n for n in ISBI_NAMES[:20] if n != "3"] + ISBI_NAMES[25:], ISBI_NAMES[20:25], ["3"])),
])
def test_split_options(select, test, expected):
    split = split_slices(ISBI_NAMES, select, test)
    assert (split.train, split.select, split.test) == expected


def test_other_names_get_no_test_slices_and_the_last_sixth_to_select():
    split = split_slices([f"a{i}" for i in range(12)])
    assert split.test == [] and split.select == ["a10", "a11"] and len(split.train) == 10


@pytest.mark.parametrize("select, test, message", [
    (["20"], ["20"], "one role"),
    (["x"], None, "--val-ids 'x'"),
    (None, ["y"], "--test-ids 'y'"),
    (ISBI_NAMES[:25], None, "at least one to train on"),
])
def test_impossible_splits_are_user_errors(select, test, message):
    with pytest.raises(UserError, match=message):
        split_slices(ISBI_NAMES, select, test)


def test_a_model_trained_in_bfloat16_is_saved_in_float32(tiny_dataset, tmp_path):
    recipe = RECIPES["cpu"].replace(epochs=1, steps_per_epoch=1, batch_size=2, width=4, patch_size=(64, 64),
                                    precision="bfloat16", time_limit_minutes=None)
    result = loop.train(tiny_dataset, recipe, tmp_path / "run", select_ids=["5"], test_ids=[], verbose=0)
    assert keras.mixed_precision.global_policy().name == "float32"
    raw = keras.models.load_model(result.model_path, compile=False)
    assert {layer.dtype_policy.name for layer in raw.layers if layer.weights} == {"float32"}
    image = np.random.default_rng(0).random((1, 64, 64, 1)).astype(np.float32)
    float32 = load_model(result.model_path, precision="float32")
    bfloat16 = load_model(result.model_path, precision="bfloat16")
    assert compute_policy(bfloat16) == "mixed_bfloat16"
    difference = np.abs(float32.predict(image, verbose=0) - bfloat16.predict(image, verbose=0))
    assert 0 < difference.max() < 0.1  # bfloat16 computes differently, but close


def test_with_precision_keeps_the_weights_and_the_float32_output():
    model = unet(input_size=(None, None, 1), width=2, depth=2, compile=False)
    copy = with_precision(model, "mixed_bfloat16")
    assert copy is not model and with_precision(model, "float32") is model
    for a, b in zip(model.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert copy.get_layer("probability").dtype_policy.name == "float32"
    assert copy.get_layer("head_conv").dtype_policy.name == "mixed_bfloat16"


def test_a_failed_training_leaves_the_global_policy_at_float32(tiny_dataset, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        raise RuntimeError("interrupted")

    monkeypatch.setattr(loop, "build_model", fail)
    recipe = RECIPES["cpu"].replace(epochs=1, steps_per_epoch=1, batch_size=2, width=4, patch_size=(64, 64),
                                    precision="bfloat16")
    with pytest.raises(RuntimeError, match="interrupted"):
        loop.train(tiny_dataset, recipe, tmp_path / "run", select_ids=["5"], test_ids=[], verbose=0)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_mixed_precision_is_bfloat16_only_on_cpus_that_compute_it(monkeypatch):
    from isbi_unet import hardware
    from isbi_unet.training import recipes

    assert hardware.cpu_has_bfloat16("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert not hardware.cpu_has_bfloat16("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    monkeypatch.setattr(recipes, "has_gpu", lambda: False)
    try:
        monkeypatch.setattr(recipes, "cpu_has_bfloat16", lambda: False)
        assert recipes.set_precision("mixed") == "float32"
        monkeypatch.setattr(recipes, "cpu_has_bfloat16", lambda: True)
        assert recipes.set_precision("mixed") == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _clean_cell_folders(tmp_path, test_levels=(0.55, 0.45)):
    """Selection maps of slices 0, 1 and a test map of slice 2, with images and labels.
    ``test_levels``: (cell, membrane) values of the test map."""
    from skimage import io

    from conftest import synthetic_slice

    folders = {name: tmp_path / name for name in ("select", "test", "images", "labels")}
    for folder in folders.values():
        folder.mkdir()
    for index, role in ((0, "select"), (1, "select"), (2, "test")):
        image, label = synthetic_slice((48, 48), seed=60 + index, cells=5)
        # selection maps: cells 0.55, membranes 0.45, so only threshold 0.5 separates them
        cell, membrane = test_levels if role == "test" else (0.55, 0.45)
        prob = np.where(label > 0, cell, membrane)
        io.imsave(folders[role] / f"{index}_predict.png", (prob * 255).astype(np.uint8), check_contrast=False)
        io.imsave(folders["images"] / f"{index}.png", image, check_contrast=False)
        io.imsave(folders["labels"] / f"{index}.png", label, check_contrast=False)
    return folders


def test_cells_choose_method_and_parameters_on_the_selection_slices_only(tmp_path):
    """choose_and_score_instances keeps the method that scores best on the selection maps,
    with the parameters chosen there, and segments the test maps once with that choice.
    The test map would prefer another threshold (its cells are 0.25, its membranes 0.15):
    had it chosen, the threshold would be 0.2 and its score far higher."""
    from skimage import io

    from isbi_unet.cells.methods import threshold
    from isbi_unet.evaluation.metric import segmentation_scores
    from isbi_unet.pipeline.choose import choose_and_score_instances

    folders = _clean_cell_folders(tmp_path, test_levels=(0.25, 0.15))
    report = choose_and_score_instances(folders["select"], folders["test"], folders["images"], folders["labels"],
                                        ["0", "1"], ["2"], tmp_path / "out", methods=("watershed", "threshold"),
                                        progress=False)
    assert set(report["candidates"]) == {"watershed", "threshold"}
    best = max(report["candidates"], key=lambda method: report["candidates"][method]["v_rand"])
    assert report["method"] == best and report["selection"]["v_rand"] == report["candidates"][best]["v_rand"]
    assert best == "threshold" and report["parameters"] == {"threshold": 0.5}
    assert report["candidates"]["threshold"]["v_rand"] > report["candidates"]["watershed"]["v_rand"]
    assert report["test"]["n_slices"] == 1
    test_map = io.imread(folders["test"] / "2_predict.png") / 255.0
    label = io.imread(folders["labels"] / "2.png")
    if_the_test_slice_chose = segmentation_scores([threshold(test_map, 0.2)], [label])["v_rand"]
    assert report["test"]["v_rand"] < if_the_test_slice_chose - 0.2
    assert (tmp_path / "out" / "test_slice_instances" / "2_labels.tif").is_file()


def test_a_learned_method_that_cannot_be_fitted_gives_way_to_the_default(tmp_path, capsys):
    """Maps so clean that every superpixel is a cell give no edge inside a cell to learn from."""
    from isbi_unet.pipeline.choose import (
        DEFAULT_INSTANCE_METHOD,
        choose_and_score_instances,
    )

    folders = _clean_cell_folders(tmp_path)
    report = choose_and_score_instances(folders["select"], folders["test"], folders["images"], folders["labels"],
                                        ["0", "1"], ["2"], tmp_path / "out", methods=("learned-multicut",),
                                        progress=False)
    assert report["method"] == DEFAULT_INSTANCE_METHOD and set(report["candidates"]) == {DEFAULT_INSTANCE_METHOD}
    assert "learned-multicut left out: the edges to fit on are all cut or all merged" in capsys.readouterr().out


def test_a_nan_score_is_reported_as_n_a_and_left_out_of_the_fold_mean():
    """V_info divides 0 by 0 on some slices: the JSON holds None there, and the report and
    the cross-validation's mean and sd go on without it."""
    from isbi_unet.pipeline.choose import describe_scores, read_at_thresholds
    from isbi_unet.pipeline.run import over_folds

    scores = {"thresholds": [0.0, 0.5], "v_rand_curve": [0.5, 0.9], "v_info_curve": [None, None], "v_rand": 0.9,
              "v_info": 0.0, "pixel_error": 0.1, "dice": 0.8}
    test = read_at_thresholds(scores, 0.5, 0.0)
    assert test["v_info"] is None and test["v_rand"] == 0.9
    text = describe_scores({"selection": dict(test, tta=False), "test": test})
    assert "V_info n/a" in text and "V_rand 0.9000" in text
    summary = over_folds([0.9, None, 0.8])
    assert summary["mean"] == pytest.approx(0.85) and summary["sd"] == pytest.approx(0.0707107, abs=1e-6)
    assert summary["values"] == [0.9, None, 0.8]


def test_the_test_slices_labels_choose_nothing(tiny_dataset, tmp_path):
    """Invert only the test slices' labels: every choice stays what it was (the training
    history and so the checkpoint and early stop, the weights, TTA, the thresholds, the
    cell method and its parameters); only the test scores change."""
    import json
    import shutil

    from skimage import io

    from isbi_unet.evaluation.runs import read_history
    from isbi_unet.pipeline.run import TrainingRun, train_and_score
    from isbi_unet.training.recipes import RECIPES

    recipe = RECIPES["cpu"].replace(epochs=3, steps_per_epoch=2, batch_size=2, width=4, patch_size=(64, 64),
                                    precision="float32", time_limit_minutes=None)
    flipped = tmp_path / "flipped"
    shutil.copytree(tiny_dataset, flipped)
    for name in ("4", "5"):
        label = io.imread(flipped / "train" / "label" / f"{name}.png")
        io.imsave(flipped / "train" / "label" / f"{name}.png", (255 - label).astype(np.uint8), check_contrast=False)
    runs = {}
    for key, data in (("original", tiny_dataset), ("flipped", flipped)):
        run = TrainingRun(data, tmp_path / key, select_ids=["2", "3"], test_ids=["4", "5"], seed=3, workers=1,
                          verbose=0)
        summary, network = train_and_score(recipe, run, progress=False)
        history = read_history(tmp_path / key / "history.csv")
        runs[key] = summary, network.get_weights(), {column: values for column, values in history.items()
                                                     if column != "minutes"}  # wall-clock time differs
    (original, weights, history), (changed, changed_weights, changed_history) = runs["original"], runs["flipped"]
    assert changed_history == history
    for mine, theirs in zip(weights, changed_weights, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert changed["selection"] == original["selection"]  # TTA and the thresholds
    for key in ("tta", "v_rand_threshold", "v_info_threshold"):
        assert changed["test"][key] == original["test"][key]
    assert changed["instances"]["method"] == original["instances"]["method"]
    assert json.dumps(changed["instances"]["parameters"]) == json.dumps(original["instances"]["parameters"])
    assert changed["instances"]["selection"] == original["instances"]["selection"]
    assert changed["test"]["v_rand"] != original["test"]["v_rand"]  # the test labels were read, and scored


def test_the_report_says_when_the_learned_method_gave_way_on_the_test_maps(tmp_path):
    """A learned multicut fitted on the selection maps meets test maps raised to the fourth
    power (another calibration): the test cells are split-components, and the report says so."""
    from skimage import io

    from conftest import false_boundary_map
    from isbi_unet.cells.parameters import FALLBACK_METHOD
    from isbi_unet.pipeline.choose import choose_and_score_instances

    folders = {name: tmp_path / name for name in ("select", "test", "images", "labels")}
    for folder in folders.values():
        folder.mkdir()
    for name, power in (("0", 1), ("1", 1), ("2", 1), ("3", 4)):
        prob, label = false_boundary_map(int(name) + 5, size=96)
        role = "test" if name in ("2", "3") else "select"
        io.imsave(folders[role] / f"{name}_predict.png", np.round(prob ** power * 255).astype(np.uint8),
                  check_contrast=False)
        io.imsave(folders["images"] / f"{name}.png", np.round(prob * 255).astype(np.uint8), check_contrast=False)
        io.imsave(folders["labels"] / f"{name}.png", label, check_contrast=False)
    like = choose_and_score_instances(folders["select"], folders["test"], folders["images"], folders["labels"],
                                      ["0", "1"], ["2"], tmp_path / "like", methods=("learned-multicut",),
                                      progress=False)
    assert like["applied"] == {"method": "learned-multicut", "reason": None}
    unlike = choose_and_score_instances(folders["select"], folders["test"], folders["images"], folders["labels"],
                                        ["0", "1"], ["3"], tmp_path / "unlike", methods=("learned-multicut",),
                                        progress=False)
    assert unlike["method"] == "learned-multicut" and unlike["applied"]["method"] == FALLBACK_METHOD
    assert "unlike those the edge model was fitted on" in unlike["applied"]["reason"]
