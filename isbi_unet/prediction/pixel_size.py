"""Images at another pixel size: the network sees them at the size it was trained on.

The ISBI 2012 stack has pixels of 4 nm (:data:`ISBI_PIXEL_SIZE_NM`); a membrane is some
10-20 px wide there. An image of 4.6 nm pixels shows the same membrane 13 % narrower. With
:func:`at_pixel_size`, every batch the network is given is first resampled to the
network's pixel size and its prediction resampled back, so maps keep the input's size
and everything after them (cells, scores) is unchanged.
"""

from __future__ import annotations

import numpy as np

from isbi_unet.prediction.tiling import PredictFn

ISBI_PIXEL_SIZE_NM = 4.0


def _resample(batch: np.ndarray, height: int, width: int) -> np.ndarray:
    """(B, h, w, C) float -> (B, height, width, C) by linear interpolation, smoothed first
    when it shrinks (anti-aliasing)."""
    from skimage.transform import resize

    if batch.shape[1:3] == (height, width):
        return batch
    shrinking = height < batch.shape[1] or width < batch.shape[2]
    return np.stack([resize(item, (height, width, batch.shape[-1]), order=1, mode="reflect",
                            anti_aliasing=shrinking, preserve_range=True) for item in batch]).astype(np.float32)


def at_pixel_size(predict_fn: PredictFn, pixel_size_nm: float, multiple: int,
                  network_pixel_size_nm: float = ISBI_PIXEL_SIZE_NM) -> PredictFn:
    """``predict_fn`` (a batch (B, h, w, C) in [0, 1] -> (B, h, w, K)) for images whose
    pixels are ``pixel_size_nm`` nm, run by a network trained at ``network_pixel_size_nm``.

    Each batch is resampled by ``pixel_size_nm / network_pixel_size_nm`` (to
    (round(h * s), round(w * s))), mirror-padded to a multiple of ``multiple`` (the
    network's downsampling factor), predicted, cropped, and resampled back to (h, w).
    """
    if not pixel_size_nm > 0:
        raise ValueError(f"pixel_size_nm={pixel_size_nm!r} must be positive")
    scale = pixel_size_nm / network_pixel_size_nm
    if abs(scale - 1.0) < 1e-9:
        return predict_fn

    def predict(batch: np.ndarray) -> np.ndarray:
        height, width = batch.shape[1:3]
        inner = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = _resample(np.asarray(batch, np.float32), *inner)
        pad = [(0, 0), (0, -inner[0] % multiple), (0, -inner[1] % multiple), (0, 0)]
        padded = np.pad(scaled, pad, mode="symmetric")
        prediction = np.asarray(predict_fn(padded))[:, :inner[0], :inner[1]]
        return np.clip(_resample(prediction, height, width), 0.0, 1.0)

    return predict
