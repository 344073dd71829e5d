"""stack_pairs.py: a folder of image.tif + label.tif as training pairs, and the main job on it."""

import json

import numpy as np
import pytest
import tifffile
from skimage import io

from conftest import TINY, run_cli, synthetic_slice
from isbi_unet.errors import UserError
from isbi_unet.io import stack_pairs


def _stack_folder(folder, count=6, size=(64, 64), label_dtype=np.uint8, test=0):
    """folder/image.tif and folder/labels.tif (0/255 or 0/1 masks), and test.tif of ``test`` pages."""
    folder.mkdir(parents=True)
    slices = [synthetic_slice(size, seed=seed) for seed in range(count + test)]
    images = np.stack([image for image, _ in slices])
    labels = np.stack([label for _, label in slices[:count]])
    tifffile.imwrite(folder / "image.tif", images[:count], photometric="minisblack")
    tifffile.imwrite(folder / "labels.tif", (labels > 0).astype(label_dtype) * (255 if label_dtype == np.uint8 else 1),
                     photometric="minisblack")
    if test:
        tifffile.imwrite(folder / "test.tif", images[count:], photometric="minisblack")
    return images, labels


def test_the_pages_become_pairs_once_and_the_folder_is_only_read(tmp_path, capsys):
    images, labels = _stack_folder(tmp_path / "mine", test=2)
    before = {path.name: path.read_bytes() for path in (tmp_path / "mine").iterdir()}
    pages = stack_pairs.pages_of_stacks(tmp_path / "mine", tmp_path / "logs")
    assert pages.parent == tmp_path / "logs" / "stack-pages" and "6 pages" in capsys.readouterr().out
    assert sorted(p.name for p in pages.iterdir()) == ["image", "label", "test"]
    for index in range(6):
        np.testing.assert_array_equal(io.imread(pages / "image" / f"{index}.png"), images[index])
        np.testing.assert_array_equal(io.imread(pages / "label" / f"{index}.png") > 0, labels[index] > 0)
    np.testing.assert_array_equal(io.imread(pages / "test" / "1.png"), images[7])
    stamp = (pages / "image" / "0.png").stat().st_mtime_ns
    assert stack_pairs.pages_of_stacks(tmp_path / "mine", tmp_path / "logs") == pages  # reused, not written again
    assert (pages / "image" / "0.png").stat().st_mtime_ns == stamp and capsys.readouterr().out == ""
    assert {path.name: path.read_bytes() for path in (tmp_path / "mine").iterdir()} == before
    # a folder of pairs is itself
    (tmp_path / "pairs" / "image").mkdir(parents=True)
    (tmp_path / "pairs" / "label").mkdir()
    assert stack_pairs.pages_of_stacks(tmp_path / "pairs", tmp_path / "logs") == tmp_path / "pairs"


def test_label_pages_keep_their_values():
    assert stack_pairs.label_page_to_uint8(np.array([[0, 1, 2]], np.uint16), "p").tolist() == [[0, 1, 2]]
    assert stack_pairs.label_page_to_uint8(np.array([[False, True]]), "p").tolist() == [[0, 255]]
    assert stack_pairs.label_page_to_uint8(np.array([[0.0, 1.0]], np.float32), "p").tolist() == [[0, 255]]
    for bad in (np.array([[0, 300]], np.uint16), np.array([[0.0, 2.0]], np.float32), np.array([[-1, 0]], np.int16)):
        with pytest.raises(UserError, match="labels|label values"):
            stack_pairs.label_page_to_uint8(bad, "p")


def test_stacks_that_do_not_pair_are_refused(tmp_path):
    _stack_folder(tmp_path / "mine")
    tifffile.imwrite(tmp_path / "mine" / "labels.tif", np.zeros((5, 64, 64), np.uint8), photometric="minisblack")
    with pytest.raises(UserError, match="one label page per image page"):
        stack_pairs.pages_of_stacks(tmp_path / "mine", tmp_path / "logs")
    assert not (tmp_path / "logs").exists()


def test_the_main_job_on_a_folder_of_stacks(tmp_path):
    """`all --data DIR` with DIR/image.tif, DIR/labels.tif (0/1) and DIR/test.tif: trained on
    the pages by the own-data rules, test.tif's pages predicted, DIR as it was."""
    _stack_folder(tmp_path / "mine", label_dtype=np.uint16, test=1)
    before = {path.name: path.read_bytes() for path in (tmp_path / "mine").iterdir()}
    code, _, stderr = run_cli("all", "--data", tmp_path / "mine", "--run", "stacked", "--logs", tmp_path / "logs", *TINY)
    assert code == 0, stderr[-2000:]
    assert {path.name: path.read_bytes() for path in (tmp_path / "mine").iterdir()} == before
    summary = json.loads((tmp_path / "logs" / "stacked" / "summary.json").read_text())
    assert summary["train_names"] == ["0", "1", "2", "3", "4"] and summary["selection_names"] == ["5"]
    assert [p.name for p in (tmp_path / "logs" / "stacked" / "test_predictions").iterdir()] == ["0_predict.png"]


def test_a_folder_of_images_alone_is_told_its_layouts_and_how_to_predict(tmp_path):
    (tmp_path / "mine").mkdir()
    io.imsave(tmp_path / "mine" / "a.png", synthetic_slice((32, 32), seed=1)[0], check_contrast=False)
    code, _, stderr = run_cli("check", "--data", tmp_path / "mine")
    assert code == 2 and "image.tif and label.tif" in stderr and "main.py predict --model" in stderr


def test_a_dim_16_bit_image_stack_is_named_before_it_becomes_8_bits(tmp_path, capsys, monkeypatch):
    from isbi_unet.io import input_scale

    monkeypatch.setattr(input_scale, "_warned", set())
    _stack_folder(tmp_path / "mine", count=2)
    images = tifffile.imread(tmp_path / "mine" / "image.tif").astype(np.uint16) * 4  # at most 1020 of 65535
    tifffile.imwrite(tmp_path / "mine" / "image.tif", images, photometric="minisblack")
    stack_pairs.pages_of_stacks(tmp_path / "mine", tmp_path / "logs")
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "image.tif page 0" in warnings[0] and "16-bit" in warnings[0]
