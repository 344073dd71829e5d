"""The U-Net paper's border-weighted loss: the weight map and the per-pixel loss.

The weight map (Ronneberger et al. 2015, eq. 2) is

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

with w_c balancing the class frequencies of the slice, and d1, d2 the distances (pixels)
to the nearest and second-nearest cell. It is computed once per slice with numpy/scipy
and travels through augmentation with the mask; Keras applies it as a per-pixel
``sample_weight`` to the loss below, whose output keeps the pixel axes.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops
from scipy import ndimage
from skimage.measure import label as label_components


def class_balance_weights(mask: np.ndarray) -> np.ndarray:
    """w_c: each class weighted by total / (2 * its pixel count); mask (H, W) binary."""
    mask = mask > 0
    total, cells = mask.size, int(mask.sum())
    weights = np.ones(mask.shape, np.float32)
    if 0 < cells < total:
        weights[mask] = total / (2.0 * cells)
        weights[~mask] = total / (2.0 * (total - cells))
    return weights


def unet_weight_map(mask: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """The paper's weight map of one binary mask.

    Args:
      mask: (H, W) or (H, W, 1), nonzero = cell interior, 0 = membrane.
      w0, sigma: border weight and its width in pixels (the paper: 10 and 5).
    Returns:
      (H, W, 1) float32 weights, >= the class-balance weights.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    cells = label_components(mask > 0, connectivity=1)
    weights = class_balance_weights(mask)
    if cells.max() >= 2:
        # Beyond reach = 5 sigma the border term is below w0 * exp(-12.5) < 4e-5 * w0, so
        # each cell's distance transform is computed only in its box grown by the reach.
        reach = int(np.ceil(5 * sigma))
        nearest = np.full(mask.shape, np.inf, np.float32)
        second = np.full(mask.shape, np.inf, np.float32)
        for index, box in enumerate(ndimage.find_objects(cells), start=1):
            window = tuple(slice(max(0, s.start - reach), s.stop + reach) for s in box)
            distance = ndimage.distance_transform_edt(cells[window] != index).astype(np.float32)
            second[window] = np.minimum(second[window], np.maximum(nearest[window], distance))
            nearest[window] = np.minimum(nearest[window], distance)
        weights = weights + w0 * np.exp(-((nearest + second) ** 2) / (2.0 * sigma**2))
    return weights[..., None].astype(np.float32)


@keras.saving.register_keras_serializable(package="unet")
class PixelBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy per pixel, in float32: (B, H, W, 1) -> (B, H, W).

    Keeping the pixel axes lets Keras multiply by a (B, H, W, 1) sample_weight map (the
    paper's weights) before averaging. Under mixed precision the prediction is cast to
    float32 first, so the loss is always computed in float32.
    """

    def __init__(self, epsilon: float = 1e-7, name: str = "pixel_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.epsilon = epsilon

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.clip(ops.cast(y_pred, "float32"), self.epsilon, 1.0 - self.epsilon)
        loss = -(y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred))
        return ops.mean(loss, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}
