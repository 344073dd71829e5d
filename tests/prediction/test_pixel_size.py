"""isbi_unet.prediction.pixel_size and predict --pixel-size: the network sees images at its own pixel size."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import io
from skimage.transform import resize

import model
from conftest import run_cli, synthetic_slice
from isbi_unet.prediction.pixel_size import ISBI_PIXEL_SIZE_NM, at_pixel_size


def _recording(seen: list):
    """A predict function that records the shapes it is given and returns the image's first channel."""
    def predict(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.shape)
        return batch[..., :1]
    return predict


@pytest.mark.parametrize("pixel_size, shape, network_shape", [
    (8.0, (50, 70), (112, 144)),  # 2x larger, then padded to multiples of 16: (100, 140) -> (112, 144)
    (2.0, (64, 96), (32, 48)),  # half
    (4.6, (100, 100), (128, 128)),  # 115 -> 128
])
def test_the_network_sees_the_images_at_its_own_pixel_size_and_maps_come_back_at_theirs(pixel_size, shape, network_shape):
    seen: list = []
    batch = np.random.default_rng(0).random((2, *shape, 1)).astype(np.float32)
    out = at_pixel_size(_recording(seen), pixel_size, 16)(batch)
    assert seen == [(2, *network_shape, 1)]
    assert out.shape == (2, *shape, 1) and out.dtype == np.float32


def test_a_smooth_image_survives_the_round_trip_and_its_own_pixel_size_changes_nothing():
    rows, cols = np.mgrid[0:64, 0:80] / 64.0
    smooth = (0.5 + 0.4 * np.sin(3 * rows) * np.cos(2 * cols)).astype(np.float32)[None, ..., None]
    out = at_pixel_size(_recording([]), 6.0, 16)(smooth)
    assert np.abs(out - smooth).max() < 0.02
    identity = _recording([])
    assert at_pixel_size(identity, ISBI_PIXEL_SIZE_NM, 16) is identity
    with pytest.raises(ValueError):
        at_pixel_size(identity, 0.0, 16)


def test_a_membrane_drawn_at_half_the_pixel_size_reaches_the_network_as_at_its_own():
    """An image upsampled 2x (pixels of 2 nm) is given to the network at its 4 nm size."""
    image = synthetic_slice((64, 64), seed=2)[0].astype(np.float32) / 255.0
    fine = resize(image, (128, 128), order=1, preserve_range=True).astype(np.float32)
    seen_inputs = []
    at_pixel_size(lambda batch: seen_inputs.append(batch) or batch[..., :1], 2.0, 16)(fine[None, ..., None])
    assert seen_inputs[0].shape == (1, 64, 64, 1)
    assert np.abs(seen_inputs[0][0, ..., 0] - image).mean() < 0.05


def test_predict_with_pixel_size_writes_maps_at_the_images_size(tmp_path):
    from isbi_unet.cli import main as cli_main

    model.unet(input_size=(None, None, 1), width=4, depth=2).save(tmp_path / "m.keras")
    (tmp_path / "in").mkdir()
    io.imsave(tmp_path / "in" / "0.png", synthetic_slice((60, 90), 0)[0], check_contrast=False)
    outputs = {}
    for name, extra in (("plain", []), ("coarse", ["--pixel-size", "8"])):
        assert cli_main.main(["predict", "--model", str(tmp_path / "m.keras"), "--input", str(tmp_path / "in"),
                              "--output", str(tmp_path / name), "--quiet", *extra]) == 0
        outputs[name] = io.imread(tmp_path / name / "0_predict.png")
    assert outputs["coarse"].shape == outputs["plain"].shape == (60, 90)
    assert not np.array_equal(outputs["coarse"], outputs["plain"])


@pytest.mark.parametrize("value", ["0", "-4", "x"])
def test_predict_refuses_a_pixel_size_that_is_not_positive(tmp_path, value):
    code, _, err = run_cli("predict", "--model", tmp_path / "m.keras", "--input", tmp_path, "--pixel-size", value)
    assert code == 2 and "--pixel-size" in err and "Traceback" not in err


def test_predict_refuses_a_pixel_size_with_a_fixed_size_model(tmp_path, capsys):
    from isbi_unet.cli import main as cli_main

    model.unet(input_size=(32, 32, 1), width=4, depth=2).save(tmp_path / "fixed.keras")
    (tmp_path / "in").mkdir()
    io.imsave(tmp_path / "in" / "0.png", synthetic_slice((32, 32), 0)[0], check_contrast=False)
    assert cli_main.main(["predict", "--model", str(tmp_path / "fixed.keras"), "--input", str(tmp_path / "in"),
                          "--output", str(tmp_path / "out"), "--pixel-size", "5"]) == 2
    assert capsys.readouterr().err.startswith("error: --pixel-size") and not (tmp_path / "out").exists()


def _corner_cell_map() -> np.ndarray:
    """A map (64, 64) float32: a 14x14 px cell in a corner (196 px: under the 300 px of
    min_size at 4 nm, 784 px at 4 nm if these pixels are 8 nm) and one large cell."""
    from scipy import ndimage

    prob = np.full((64, 64), 0.9, np.float32)
    prob[14:16, 0:16] = 0.1
    prob[0:16, 14:16] = 0.1
    return ndimage.gaussian_filter(prob, 0.7)


def test_cells_sizes_in_pixels_hold_at_4_nm():
    from isbi_unet.cells.parameters import segment

    prob = _corner_cell_map()
    as_given = segment(prob, "split-components", {"threshold": 0.5})
    at_8_nm = segment(prob, "split-components", {"threshold": 0.5}, pixel_size_nm=8.0)
    assert len(np.unique(as_given[as_given > 0])) == 1  # 196 px joins its neighbour
    assert at_8_nm.shape == prob.shape and len(np.unique(at_8_nm[at_8_nm > 0])) == 2  # 784 px at 4 nm: a cell
    assert (at_8_nm[2:12, 2:12] == at_8_nm[5, 5]).all() and at_8_nm[5, 5] != at_8_nm[40, 40]
    boundary = at_8_nm == 0
    assert 0 < boundary.mean() < 0.1  # 1-pixel boundaries drawn again
    np.testing.assert_array_equal(segment(prob, "threshold", {"threshold": 0.5}, pixel_size_nm=8.0),
                                  segment(prob, "threshold", {"threshold": 0.5}))  # components have no size


def test_segment_with_pixel_size_writes_cells_at_the_maps_size(tmp_path):
    import tifffile

    (tmp_path / "maps").mkdir()
    io.imsave(tmp_path / "maps" / "0_predict.png", np.round(_corner_cell_map() * 255).astype(np.uint8),
              check_contrast=False)
    counts = {}
    from isbi_unet.cli import main as cli_main

    for name, extra in (("plain", []), ("fine", ["--pixel-size", "8"])):
        assert cli_main.main(["segment", "--pred", str(tmp_path / "maps"), "--output", str(tmp_path / name),
                              "--threshold", "0.5", "--quiet", *extra]) == 0
        labels = tifffile.imread(tmp_path / name / "0_labels.tif")
        assert labels.shape == (64, 64)
        counts[name] = len(np.unique(labels[labels > 0]))
    assert counts == {"plain": 1, "fine": 2}


def test_a_tiff_stack_is_predicted_at_its_pixel_size_page_by_page(tmp_path):
    import tifffile

    model.unet(input_size=(None, None, 1), width=4, depth=2).save(tmp_path / "m.keras")
    pages = np.stack([synthetic_slice((48, 64), seed)[0] for seed in (0, 1)])
    tifffile.imwrite(tmp_path / "stack.tif", pages)
    out = {}
    from isbi_unet.cli import main as cli_main

    for name, extra in (("plain", []), ("coarse", ["--pixel-size", "8"])):
        assert cli_main.main(["predict", "--model", str(tmp_path / "m.keras"), "--input", str(tmp_path / "stack.tif"),
                              "--output", str(tmp_path / f"{name}.tif"), "--quiet", *extra]) == 0
        out[name] = tifffile.imread(tmp_path / f"{name}.tif")
    assert out["coarse"].shape == out["plain"].shape == (2, 48, 64)
    assert not np.allclose(out["coarse"], out["plain"])
