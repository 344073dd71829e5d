"""`--mask-foreground membrane`: masks drawn the other way round (non-zero = membrane) are
read as ISBI's (non-zero = cell) by check, train, evaluate and all."""

import json

import numpy as np
import pytest
from skimage import io

from conftest import TINY, run_cli, synthetic_slice
from isbi_unet.cli import main as cli_main
from isbi_unet.cli.parser import MASK_FOREGROUNDS
from isbi_unet.io import pairs
from isbi_unet.io.check import check_dataset
from isbi_unet.training.dataset import load_training_data
from isbi_unet.training.recipes import resolve_recipe


def write_pairs(root, inverted: bool, count: int = 6, size: int = 64, suffix: str = ""):
    """``count`` synthetic pairs in root/image and root/label; with ``inverted`` the masks
    are 255 on membrane and 0 in cells, saved as ``N<suffix>.png``."""
    for folder in ("image", "label"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, label = synthetic_slice((size, size), seed=index)
        io.imsave(root / "image" / f"{index}.png", image, check_contrast=False)
        io.imsave(root / "label" / f"{index}{suffix}.png", 255 - label if inverted else label, check_contrast=False)
    return root


def test_the_parser_offers_what_the_reader_knows():
    assert MASK_FOREGROUNDS == pairs.MASK_FOREGROUNDS


@pytest.mark.parametrize("top", [1, 255])
def test_a_membrane_mask_is_turned_into_the_cell_convention(top):
    cell = np.array([[255, 0], [0, 255]], np.float32)
    membrane = np.where(cell > 0, 0, top).astype(np.float32)
    np.testing.assert_array_equal(pairs.as_cell_mask(membrane, "membrane"), cell)
    assert pairs.as_cell_mask(cell, "cell") is cell
    with pytest.raises(ValueError):
        pairs.as_cell_mask(cell, "nucleus")


def test_training_reads_inverted_masks_as_the_original_ones(tmp_path):
    plain, inverted = write_pairs(tmp_path / "plain", False), write_pairs(tmp_path / "inverted", True, suffix="_mask")
    recipe = resolve_recipe("cpu")  # its weighted loss: the weight maps follow the masks
    expected = load_training_data(plain, recipe, select_ids=["5"], test_ids=[])
    turned = load_training_data(inverted, recipe, select_ids=["5"], test_ids=[], mask_foreground="membrane")
    misread = load_training_data(inverted, recipe, select_ids=["5"], test_ids=[])
    for got, want in zip(turned.train_masks + turned.val_masks, expected.train_masks + expected.val_masks):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(turned.train_weights, expected.train_weights):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(misread.train_masks[0], expected.train_masks[0])


def test_check_warns_of_inverted_masks_and_names_the_option(tmp_path, capsys):
    inverted = write_pairs(tmp_path / "inverted", True)
    report = check_dataset(inverted)
    assert "--mask-foreground membrane" in report.warnings[0]
    turned = check_dataset(inverted, mask_foreground="membrane")
    assert turned.warnings == [] and turned.problems == []
    labels = np.stack([io.imread(inverted / "label" / f"{index}.png") for index in range(6)])
    assert turned.foreground_fraction == pytest.approx(np.mean(labels == 0))
    assert cli_main.main(["check", "--data", str(inverted), "--mask-foreground", "membrane", "--quiet"]) == 0
    assert "look inverted" not in capsys.readouterr().out
    assert cli_main.main(["check", "--data", str(inverted), "--num-class", "3", "--mask-foreground", "membrane",
                          "--quiet"]) == 2


def test_evaluate_scores_inverted_labels_as_the_original_ones(tmp_path):
    plain, inverted = write_pairs(tmp_path / "plain", False), write_pairs(tmp_path / "inverted", True)
    maps = tmp_path / "maps"
    maps.mkdir()
    for index in range(6):
        label = io.imread(plain / "label" / f"{index}.png")
        noisy = np.clip(label / 255.0 + np.random.default_rng(index).normal(0, 0.3, label.shape), 0, 1)
        io.imsave(maps / f"{index}_predict.png", (noisy * 255).astype(np.uint8), check_contrast=False)
    scores = {}
    for name, labels, extra in [("plain", plain, []), ("turned", inverted, ["--mask-foreground", "membrane"]),
                                ("misread", inverted, [])]:
        json_path = tmp_path / f"{name}.json"
        assert cli_main.main(["evaluate", "--pred", str(maps), "--labels", str(labels / "label"),
                              "--json", str(json_path), "--quiet", *extra]) == 0
        scores[name] = json.loads(json_path.read_text())
    assert scores["turned"]["v_rand_curve"] == scores["plain"]["v_rand_curve"]
    assert scores["misread"]["dice"] < scores["plain"]["dice"] - 0.5  # membranes scored as cells


def test_the_main_job_on_inverted_masks_trains_and_scores_as_on_the_original_ones(tmp_path):
    """`all --mask-foreground membrane` on inverted `_mask` labels gives the same weights,
    choices and test scores (maps and cells) as `all` on the original labels."""
    plain, inverted = write_pairs(tmp_path / "plain", False), write_pairs(tmp_path / "inverted", True, suffix="_mask")
    summaries = {}
    for name, folder, extra in [("plain", plain, []), ("turned", inverted, ["--mask-foreground", "membrane"])]:
        code, _, stderr = run_cli("all", "--data", folder, "--run", name, "--logs", tmp_path / "logs",
                                  "--val-ids", "4", "--test-ids", "5", "--no-tta", *TINY, *extra)
        assert code == 0, stderr[-2000:]
        summaries[name] = json.loads((tmp_path / "logs" / name / "summary.json").read_text())
    for key in ("selection", "test"):
        assert summaries["turned"][key] == summaries["plain"][key]
    assert summaries["turned"]["instances"]["test"] == summaries["plain"]["instances"]["test"]
    from isbi_unet.network import load_model

    first, second = (load_model(tmp_path / "logs" / name / "unet_membrane.keras") for name in ("plain", "turned"))
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
