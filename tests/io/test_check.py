"""`main.py check`: one tiny synthetic folder per kind of problem, and a clean one."""

import numpy as np
import pytest
from PIL import Image
from skimage import io

from conftest import synthetic_slice, write_dataset
from isbi_unet.cli import main as cli_main
from isbi_unet.io.check import check_dataset


@pytest.fixture
def folder(tmp_path):
    """Four 48x48 pairs, no test images."""
    return write_dataset(tmp_path / "d", count=4, size=(48, 48), test_count=0)


def save(path, array):
    io.imsave(path, array, check_contrast=False)


def test_a_clean_folder_has_no_problems_and_a_summary(folder, capsys):
    report = check_dataset(folder)
    assert report.problems == [] and report.warnings == []
    assert report.pairs == ["0", "1", "2", "3"]
    assert report.image_kinds == {"48x48 uint8, 1 channel": 4}
    assert report.conventions == {"0/255": 4}
    labels = np.stack([io.imread(folder / "train/label" / f"{i}.png") for i in range(4)])
    assert report.foreground_fraction == pytest.approx(np.mean(labels == 255))
    assert cli_main.main(["check", "--data", str(folder), "--quiet"]) == 0
    assert "4 image/mask pairs" in capsys.readouterr().out


def damage_jpeg_mask(folder):
    (folder / "train/label/1.png").unlink()
    Image.fromarray(synthetic_slice((48, 48), 1)[1]).save(folder / "train/label/1.jpg", quality=50)


def damage_mixed_conventions(folder):
    save(folder / "train/label/2.png", (synthetic_slice((48, 48), 2)[1] // 255).astype(np.uint8))


def damage_all_zero_mask(folder):
    save(folder / "train/label/0.png", np.zeros((48, 48), np.uint8))


def damage_all_one_mask(folder):
    save(folder / "train/label/0.png", np.full((48, 48), 255, np.uint8))


def damage_constant_image(folder):
    save(folder / "train/image/3.png", np.full((48, 48), 7, np.uint8))


def damage_duplicate_image(folder):
    save(folder / "train/image/3.png", io.imread(folder / "train/image/0.png"))


def damage_unpaired(folder):
    save(folder / "train/image/extra.png", synthetic_slice((48, 48), 9)[0])
    save(folder / "train/label/lonely.png", synthetic_slice((48, 48), 9)[1])


def damage_grey_mask(folder):
    mask = io.imread(folder / "train/label/0.png")
    mask[mask == 0] = 3  # resampled or compressed: near 0, not 0
    save(folder / "train/label/0.png", mask)


@pytest.mark.parametrize("damage, expected", [
    (damage_jpeg_mask, ["1.jpg: mask saved as lossy JPEG"]),
    (damage_mixed_conventions, ["mix the 0/1 and 0/255 conventions"]),
    (damage_all_zero_mask, ["0.png: mask is all zero"]),
    (damage_all_one_mask, ["0.png: mask is all 255"]),
    (damage_constant_image, ["3.png: image is constant"]),
    (damage_duplicate_image, ["3.png: same pixels as", "0.png"]),
    (damage_unpaired, ["extra.png: no mask", "lonely.png: mask without an image"]),
    (damage_grey_mask, ["0.png: mask has values {3, 255}", "JPEG-compressed or resampled"]),
])
def test_each_kind_of_problem_is_listed_and_exits_2(folder, capsys, damage, expected):
    damage(folder)
    problems = "\n".join(check_dataset(folder).problems)
    for text in expected:
        assert text in problems
    assert cli_main.main(["check", "--data", str(folder), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "problem: " in captured.out and captured.err.count("error:") == 1


def test_inverted_masks_are_a_warning_only(folder):
    for index in range(4):
        save(folder / "train/label" / f"{index}.png", 255 - synthetic_slice((48, 48), index)[1])
    report = check_dataset(folder)
    assert report.problems == [] and "inverted" in report.warnings[0]


def test_dim_16_bit_images_are_one_warning(folder):
    import tifffile

    for index in range(4):
        image = io.imread(folder / "train/image" / f"{index}.png")
        (folder / "train/image" / f"{index}.png").unlink()
        tifffile.imwrite(folder / "train/image" / f"{index}.tif", image.astype(np.uint16) * 8)  # at most 2040 of 65535
    report = check_dataset(folder)
    assert report.problems == [] and len(report.warnings) == 1 and "16-bit images" in report.warnings[0]


def test_train_refuses_a_folder_with_problems_before_building_anything(folder, tmp_path, capsys):
    damage_all_zero_mask(folder)
    code = cli_main.main(["train", "--data", str(folder), "--logs", str(tmp_path / "logs"), "--run", "r",
                      "--epochs", "1", "--steps-per-epoch", "1", "--quiet"])
    assert code == 2 and "mask is all zero" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()
