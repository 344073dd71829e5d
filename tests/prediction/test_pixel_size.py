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
    model.unet(input_size=(None, None, 1), width=4, depth=2).save(tmp_path / "m.keras")
    (tmp_path / "in").mkdir()
    io.imsave(tmp_path / "in" / "0.png", synthetic_slice((60, 90), 0)[0], check_contrast=False)
    outputs = {}
    for name, extra in (("plain", []), ("coarse", ["--pixel-size", "8"])):
        code, _, err = run_cli("predict", "--model", tmp_path / "m.keras", "--input", tmp_path / "in",
                               "--output", tmp_path / name, "--quiet", *extra)
        assert code == 0, err
        outputs[name] = io.imread(tmp_path / name / "0_predict.png")
    assert outputs["coarse"].shape == outputs["plain"].shape == (60, 90)
    assert not np.array_equal(outputs["coarse"], outputs["plain"])


@pytest.mark.parametrize("value", ["0", "-4", "x"])
def test_predict_refuses_a_pixel_size_that_is_not_positive(tmp_path, value):
    code, _, err = run_cli("predict", "--model", tmp_path / "m.keras", "--input", tmp_path, "--pixel-size", value)
    assert code == 2 and "--pixel-size" in err and "Traceback" not in err


def test_predict_refuses_a_pixel_size_with_a_fixed_size_model(tmp_path):
    model.unet(input_size=(32, 32, 1), width=4, depth=2).save(tmp_path / "fixed.keras")
    (tmp_path / "in").mkdir()
    io.imsave(tmp_path / "in" / "0.png", synthetic_slice((32, 32), 0)[0], check_contrast=False)
    code, _, err = run_cli("predict", "--model", tmp_path / "fixed.keras", "--input", tmp_path / "in",
                           "--output", tmp_path / "out", "--pixel-size", "5")
    assert code == 2 and err.startswith("error: --pixel-size") and not (tmp_path / "out").exists()
