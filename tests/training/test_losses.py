"""The paper's weight map and the per-pixel float32 cross-entropy."""

import keras
import numpy as np
import pytest

from isbi_unet.training.losses import (
    PixelBinaryCrossentropy,
    class_balance_weights,
    unet_weight_map,
)


def two_cells(gap: int) -> np.ndarray:
    """Two 20x20 cells side by side, ``gap`` membrane pixels apart, in a 40x(40+gap) field."""
    mask = np.zeros((40, 40 + gap), np.uint8)
    mask[10:30, 0:20] = 255
    mask[10:30, 20 + gap:40 + gap] = 255
    return mask


def test_class_balance_gives_each_class_half_the_total_weight():
    mask = two_cells(2)
    weights = class_balance_weights(mask)
    assert weights[mask > 0].sum() == pytest.approx(mask.size / 2)
    assert weights[mask == 0].sum() == pytest.approx(mask.size / 2)


def test_border_weight_between_touching_cells_matches_the_formula():
    mask = two_cells(2)
    weights = unet_weight_map(mask)[..., 0]
    balance = class_balance_weights(mask)
    # A gap pixel, e.g. column 20: d1 = 1 (to the left cell), d2 = 2 (to the right cell).
    expected = balance[20, 20] + 10 * np.exp(-(1 + 2) ** 2 / (2 * 5**2))
    assert weights[20, 20] == pytest.approx(expected, rel=1e-5)
    # Far from a second cell the border term fades: the top-left corner of the field.
    far = balance[0, 0] + 10 * np.exp(-(np.hypot(10, 0) + np.hypot(10, 22)) ** 2 / 50)
    assert weights[0, 0] == pytest.approx(far, abs=1e-3)
    assert weights[20, 20] > 5 * weights[0, 0]


def test_a_single_cell_gets_only_class_balance():
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    np.testing.assert_allclose(unet_weight_map(mask)[..., 0], class_balance_weights(mask))


def test_windowed_distances_equal_the_full_computation():
    """The per-cell windows must not change the result (beyond 4e-5 * w0)."""
    from scipy import ndimage
    from skimage.measure import label

    rng = np.random.default_rng(0)
    mask = (ndimage.gaussian_filter(rng.random((96, 96)), 3) > 0.5).astype(np.uint8)
    cells = label(mask, connectivity=1)
    distances = np.sort(np.stack([ndimage.distance_transform_edt(cells != i) for i in range(1, cells.max() + 1)]), axis=0)
    expected = class_balance_weights(mask) + 10 * np.exp(-((distances[0] + distances[1]) ** 2) / 50)
    np.testing.assert_allclose(unet_weight_map(mask)[..., 0], expected, atol=5e-4)


def test_pixel_loss_is_binary_cross_entropy_per_pixel():
    y_true = np.array([[[[1.0], [0.0]], [[1.0], [0.0]]]], np.float32)
    y_pred = np.array([[[[0.9], [0.2]], [[0.5], [0.7]]]], np.float32)
    loss = keras.ops.convert_to_numpy(PixelBinaryCrossentropy().call(y_true, y_pred))
    expected = -np.log([[0.9, 0.8], [0.5, 0.3]])
    np.testing.assert_allclose(loss[0], expected, rtol=1e-5)


def test_the_weight_map_weighs_each_pixel():
    """Pixels of different losses, so that ignoring the weights gives another number."""
    y_true = np.ones((1, 2, 2, 1), np.float32)
    y_pred = np.array([[[[0.9], [0.2]], [[0.5], [0.7]]]], np.float32)
    weights = np.array([[[[1.0], [0.0]], [[0.0], [3.0]]]], np.float32)
    loss = float(PixelBinaryCrossentropy()(y_true, y_pred, sample_weight=weights))
    weighted = (1.0 * -np.log(0.9) + 3.0 * -np.log(0.7)) / 4  # weighted sum over the 4 pixels
    unweighted = -np.log([0.9, 0.2, 0.5, 0.7]).mean()
    assert loss == pytest.approx(weighted, rel=1e-5)
    assert abs(weighted - unweighted) > 0.1  # the weights matter here


def test_loss_config_round_trip():
    loss = PixelBinaryCrossentropy(epsilon=1e-5)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, PixelBinaryCrossentropy) and again.epsilon == 1e-5
