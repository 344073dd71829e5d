"""Whole-image, overlap-tile and resized prediction of one image with any ``predict_fn``.

A ``predict_fn`` (:data:`PredictFn`) maps a batch (B, h, w, C) float32 in [0, 1] to
(B, h, w, K); h and w must be multiples of the network's 2**depth. Images are (H, W, C)
float32 in [0, 1], outputs (H, W, K). Overlap-tile prediction mirrors the image at its
borders (the U-Net paper's strategy), so any H and W work.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from isbi_unet.io.images import resize_image, resize_to

PredictFn = Callable[[np.ndarray], np.ndarray]


def receptive_field(depth: int = 4) -> int:
    """Receptive field in pixels of unet(depth=depth): 217 for the seed's depth 4.

    Each 3x3 conv adds 2 * jump, each 2x2 pool or 2x2 up-conv adds 1 * jump, where jump is
    the pixel stride of that level (2**level).
    """
    field, jump = 1, 1
    for _ in range(depth):  # encoder: two 3x3 convs, then pool
        field += 4 * jump + jump
        jump *= 2
    field += 4 * jump  # bottleneck
    for _ in range(depth):  # decoder: upsample, 2x2 conv, two 3x3 convs
        jump //= 2
        field += jump + 4 * jump
    return field + 2  # the seed's Conv2D(2, 3) head


def default_tiling(depth: int = 4) -> tuple[int, int]:
    """(tile, margin): margin is half the receptive field rounded up to a multiple of
    2**depth (112 for depth 4); the tile is the smallest multiple of 2**depth with a core
    (tile - 2 * margin) at least as wide as 2 * margin (448 for depth 4)."""
    step = 2**depth
    margin = math.ceil(receptive_field(depth) / 2 / step) * step
    return 4 * margin, margin


def predict_whole(image: np.ndarray, predict_fn: PredictFn, multiple: int = 16) -> np.ndarray:
    """Predict (H, W, C) in one piece, mirror-padded to a multiple: returns (H, W, K)."""
    return predict_whole_batch(image[None], predict_fn, multiple)[0]


def predict_whole_batch(images: np.ndarray, predict_fn: PredictFn, multiple: int = 16) -> np.ndarray:
    """Predict (B, H, W, C) images of one size in one call: returns (B, H, W, K)."""
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (0, (-height) % multiple), (0, (-width) % multiple), (0, 0)), mode="symmetric")
    return predict_fn(padded)[:, :height, :width]


def mirrored_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices into 0..size-1 of positions start..stop-1 of a line extended by mirroring,
    as numpy.pad mode "symmetric" extends it (... 1 0 | 0 1 ... size-1 | size-1 ...)."""
    positions = np.arange(start, stop) % (2 * size)
    return np.where(positions < size, positions, 2 * size - 1 - positions)


def mirrored_window(image: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """The (height, width, C) window at (top, left) of (H, W, C) ``image`` mirror-extended
    beyond its borders; reads only the window's pixels (``image`` may be a memory map)."""
    rows = mirrored_indices(top, top + height, image.shape[0])
    cols = mirrored_indices(left, left + width, image.shape[1])
    if 0 <= top and top + height <= image.shape[0] and 0 <= left and left + width <= image.shape[1]:
        return np.asarray(image[top:top + height, left:left + width])
    return np.asarray(image[np.ix_(rows, cols)])


def predict_overlap_tile(
    image: np.ndarray,
    predict_fn: PredictFn,
    tile_size: int = 448,
    margin: int = 112,
    batch_size: int = 4,
    out: np.ndarray | None = None,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The paper's overlap-tile strategy for an image of any size.

    The image (H, W, C) is seen mirror-extended by ``margin`` (more at the bottom/right to
    fit whole tiles), as numpy.pad mode "symmetric" would pad it, but only one batch of
    tiles is ever cut out, so ``image`` may be a memory map larger than memory. Tiles of
    ``tile_size`` x ``tile_size`` are taken with stride ``core = tile_size - 2 * margin``;
    of each tile's prediction only the central core is kept, so every kept pixel saw
    ``margin`` pixels of real or mirrored context on each side. ``prepare`` maps a raw
    tile to the network's input (default: as it is); ``out`` (H, W, K) receives the
    prediction (default: a new float32 array); ``progress(n)`` is called after each batch
    of n tiles. Returns ``out``, (H, W, K).
    """
    core = tile_size - 2 * margin
    if core <= 0:
        raise ValueError(f"tile_size {tile_size} must exceed 2 * margin ({2 * margin})")
    height, width = image.shape[:2]
    origins = [(r, c) for r in range(0, height, core) for c in range(0, width, core)]
    for start in range(0, len(origins), batch_size):
        chunk = origins[start:start + batch_size]
        tiles = [mirrored_window(image, r - margin, c - margin, tile_size, tile_size) for r, c in chunk]
        predictions = predict_fn(np.stack([prepare(tile) for tile in tiles] if prepare else tiles))
        if out is None:
            out = np.zeros((height, width, predictions.shape[-1]), np.float32)
        for (r, c), prediction in zip(chunk, predictions):
            rows, cols = min(core, height - r), min(core, width - c)
            out[r:r + rows, c:c + cols] = prediction[margin:margin + rows, margin:margin + cols]
        if progress is not None:
            progress(len(chunk))
    return out


def predict_resized(image: np.ndarray, predict_fn: PredictFn, target_size: Sequence[int]) -> np.ndarray:
    """The seed's way: resize (H, W, C) to target_size, predict, resize back to (H, W, K).

    The image is resized with ``data.resize_image``, as training's resize mode does.
    """
    small = resize_image(image, target_size)
    prediction = predict_fn(small[None])[0]
    return resize_to(prediction, image.shape[:2], order=1)
