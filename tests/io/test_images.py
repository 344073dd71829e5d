"""images.py: listing order, reading, RGB -> gray, bad files, atomic writes."""

import numpy as np
import pytest
import tifffile
from skimage import io

from isbi_unet.errors import UserError
from isbi_unet.io import images, input_scale


def test_natural_order_and_filters(tmp_path):
    for name in ["10.png", "2.png", "a10.tif", "a9.tif", "2_predict.png", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in images.list_images(tmp_path)] == ["2.png", "10.png", "a9.tif", "a10.tif"]
    kept = [p.name for p in images.list_images(tmp_path, exclude_suffix=None)]
    assert kept == ["2.png", "2_predict.png", "10.png", "a9.tif", "a10.tif"]
    with pytest.raises(UserError, match="missing: label folder not found"):
        images.list_images(tmp_path / "missing", what="label")
    with pytest.raises(UserError, match="is a file"):
        images.list_images(tmp_path / "10.png")


@pytest.mark.parametrize("content, reason", [(b"", "empty file"), (b"this is text, not pixels", "cannot read"),
                                             (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "cannot read")])
@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
def test_a_file_that_is_no_image_is_one_plain_user_error(tmp_path, content, reason, suffix):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    for read in (images.read_image, images.read_gray):
        with pytest.raises(UserError) as caught:
            read(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and reason in message
        assert "\n" not in message and "pip install" not in message and "plugin" not in message


def test_rgb_gives_the_same_gray_to_training_and_evaluation(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    io.imsave(tmp_path / "rgb.png", rgb, check_contrast=False)
    luminance = rgb @ np.array([0.2125, 0.7154, 0.0721])
    for_training = images.read_image(tmp_path / "rgb.png")[..., 0]
    for_evaluation = images.read_gray(tmp_path / "rgb.png")  # what evaluation reads
    assert for_evaluation.dtype == np.uint8
    np.testing.assert_array_equal(for_training, for_evaluation)
    np.testing.assert_allclose(for_training, luminance, atol=0.5)
    assert np.abs(for_training - rgb[..., 0]).max() > 20  # not the first channel


def test_gray_stored_as_rgb_or_rgba_keeps_its_values(tmp_path):
    gray = np.random.default_rng(1).integers(0, 256, (5, 5), dtype=np.uint8)
    io.imsave(tmp_path / "rgb.png", np.stack([gray] * 3, -1), check_contrast=False)
    np.testing.assert_array_equal(images.read_gray(tmp_path / "rgb.png"), gray)
    rgba = np.stack([gray] * 3 + [np.full_like(gray, 255)], -1)
    rgba[0, 0, 3] = 0  # fully transparent: white
    io.imsave(tmp_path / "rgba.png", rgba, check_contrast=False)
    expected = gray.copy()
    expected[0, 0] = 255
    np.testing.assert_array_equal(images.read_gray(tmp_path / "rgba.png"), expected)
    np.testing.assert_array_equal(images.read_image(tmp_path / "rgba.png")[..., 0], expected)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused_as_network_input(tmp_path, bad):
    image = np.full((8, 8), 0.5, np.float32)
    image[3, 4] = bad
    tifffile.imwrite(tmp_path / "f.tif", image)
    with pytest.raises(UserError, match="f.tif: 1 pixel"):
        images.read_image(tmp_path / "f.tif")
    assert np.isnan(images.read_gray(tmp_path / "f.tif")[3, 4]) == np.isnan(bad)  # maps keep NaN (metric's rule)


def test_sixteen_bit_and_float_scales(tmp_path):
    tifffile.imwrite(tmp_path / "u16.tif", np.array([[0, 65535]], np.uint16))
    tifffile.imwrite(tmp_path / "f.tif", np.array([[0.0, 1.0]], np.float32))
    for name in ("u16.tif", "f.tif"):
        np.testing.assert_allclose(images.read_image(tmp_path / name)[..., 0], [[0, 255]])


def test_atomic_write_replaces_whole_files_only(tmp_path):
    target = tmp_path / "out" / "a.png"
    images.write_image(target, np.full((4, 4), 7, np.uint8))
    assert io.imread(target).tolist() == np.full((4, 4), 7).tolist()
    with pytest.raises(RuntimeError):
        with images.atomic_path(target) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("killed")
    assert io.imread(target).tolist() == np.full((4, 4), 7).tolist()
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.png"]


def test_colour_coded_labels_get_one_id_per_colour(tmp_path):
    ids = np.array([[0, 1, 1, 2], [0, 3, 3, 2], [4, 4, 0, 2]])
    # colours 1 and 2 have the same luminance: as gray they would be one cell
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 64, 115], [255, 255, 0], [0, 0, 255]], np.uint8)
    luminance = images.to_gray(palette[None, 1:3])[0]
    assert luminance[0] == luminance[1]
    io.imsave(tmp_path / "rgb.png", palette[ids], check_contrast=False)
    read = images.read_label_ids(tmp_path / "rgb.png")
    assert read.shape == ids.shape and read.dtype == np.int32
    np.testing.assert_array_equal(read, ids)  # ids in order of first appearance; black = 0
    rgba = np.concatenate([palette[ids], np.full(ids.shape + (1,), 255, np.uint8)], -1)
    rgba[2, 0, 3] = 0  # transparent: 0, like black
    io.imsave(tmp_path / "rgba.png", rgba, check_contrast=False)
    expected = ids.copy()
    expected[2, 0] = 0
    assert (images.read_label_ids(tmp_path / "rgba.png") == 0).tolist() == (expected == 0).tolist()
    gray = np.array([[0, 7, 7], [300, 300, 0]], np.uint16)  # integer ids keep their values
    tifffile.imwrite(tmp_path / "ids.tif", gray)
    np.testing.assert_array_equal(images.read_label_ids(tmp_path / "ids.tif"), gray)
    io.imsave(tmp_path / "gray_rgb.png", np.stack([gray.astype(np.uint8)] * 3, -1), check_contrast=False)
    np.testing.assert_array_equal(images.read_label_ids(tmp_path / "gray_rgb.png"), gray.astype(np.uint8))


@pytest.mark.parametrize("array, kind", [
    (np.array([[0, 3000]], np.uint16), "16-bit images whose brightest pixel is 3000"),
    (np.array([[0, 65535]], np.uint16), None),
    (np.array([[0, 1]], np.uint16), "16-bit"),
    (np.array([[0.0, 1.0]], np.float32), None),
    (np.array([[0.0, 200.0]], np.float32), None),
    (np.array([[0.0, 1000.0]], np.float32), "float images with values from 0 to 1000"),
    (np.array([[-0.5, 0.5]], np.float32), "float images"),
    (np.array([[0, 255]], np.uint8), None),
])
def test_images_far_from_the_scale_the_network_reads_are_named(array, kind):
    found = input_scale.scale_warning(array)
    assert found is None if kind is None else kind in found


def test_a_dim_16_bit_folder_is_one_warning_line_and_masks_none(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(input_scale, "_warned", set())
    for index in range(3):
        tifffile.imwrite(tmp_path / f"{index}.tif", np.full((4, 4), 1000 + index, np.uint16))
    for index in range(3):
        images.read_image(tmp_path / f"{index}.tif", network_input=True)
        images.read_image(tmp_path / f"{index}.tif")  # a mask or a map: its values are its own
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "0.tif" in lines[0] and "brightest pixel is 1000" in lines[0]
