"""Short- and long-range affinities: training targets, their loss, TTA, mutex watershed.

An affinity of offset (dy, dx) at pixel (y, x) is 1 when (y, x) and (y + dy, x + dx)
lie in the same cell, 0 otherwise. The network predicts one sigmoid channel per offset;
the mutex watershed (Wolf et al. 2020, the ``mwatershed`` package) turns them into
segments: short-range channels pull neighbouring pixels together, long-range channels
keep pixels of different cells apart even where the 1-pixel boundary is faint, which is
where thresholding a membrane map cuts a thin neurite in two or merges two cells.

Arrays are channels-last: affinities (H, W, K) or (B, H, W, K), float32 in [0, 1].
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops
from skimage.measure import label as label_components

# Offsets (dy, dx) in pixels, all pointing up or left (the opposite direction is the same
# edge seen from the other pixel). 1 px: the attractive, nearest-neighbour edges. 3, 9 and
# 27 px (a factor 3 apart): repulsive edges that span an ISBI membrane (3-10 px thick at
# 4 nm/px) from the cell on one side to the cell on the other, up to 27 px, about the
# narrowest neurite cross-sections, so that a gap in one faint boundary is bridged by the
# longer edges around it. Axis-aligned offsets map onto each other under flips and
# quarter turns, which test-time augmentation needs (see ``tta_channel_sources``).
DEFAULT_OFFSETS: tuple[tuple[int, int], ...] = (
    (-1, 0), (0, -1), (-3, 0), (0, -3), (-9, 0), (0, -9), (-27, 0), (0, -27),
)
OUTPUT_LAYER = "affinities"  # name of the output layer of an affinity model


def cell_instances(mask: np.ndarray) -> np.ndarray:
    """Cells of a binary mask (H, W) (nonzero = cell): 4-connected components, int32, 0 = membrane."""
    return label_components(np.asarray(mask) > 0, connectivity=1).astype(np.int32)


def shifted_views(shape: tuple[int, int], offset: Sequence[int]) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(source, partner) index pairs: source pixels p whose p + offset is inside (H, W)."""
    source, partner = [], []
    for size, step in zip(shape, offset):
        step = int(step)
        if abs(step) >= size:
            return (slice(0, 0), slice(0, 0)), (slice(0, 0), slice(0, 0))
        source.append(slice(max(0, -step), size - max(0, step)))
        partner.append(slice(max(0, step), size - max(0, -step)))
    return tuple(source), tuple(partner)


def affinities_from_labels(cells: np.ndarray, offsets: Sequence[Sequence[int]] = DEFAULT_OFFSETS
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Affinity targets and their validity mask of an instance label image.

    Args:
      cells: (H, W) integer instance labels, 0 = membrane.
      offsets: K offsets (dy, dx) in pixels.
    Returns:
      (targets, valid), both (H, W, K) float32: targets[y, x, k] = 1 when pixel (y, x)
      and pixel (y, x) + offsets[k] carry the same nonzero label, else 0. A membrane pixel
      has affinity 0 to every pixel, membrane included: the affinities say "same cell",
      so the membrane is where short-range affinities are low. valid is 0 where
      (y, x) + offsets[k] falls outside the image, 1 elsewhere.
    """
    cells = np.asarray(cells)
    if cells.ndim != 2:
        raise ValueError(f"expected (H, W) labels, got shape {cells.shape}")
    shape = cells.shape
    targets = np.zeros(shape + (len(offsets),), np.float32)
    valid = np.zeros_like(targets)
    for channel, offset in enumerate(offsets):
        source, partner = shifted_views(shape, offset)
        here, there = cells[source], cells[partner]
        targets[source + (channel,)] = (here == there) & (here != 0)
        valid[source + (channel,)] = 1.0
    return targets, valid


def affinity_batch_targets(masks: np.ndarray, offsets: Sequence[Sequence[int]] = DEFAULT_OFFSETS) -> np.ndarray:
    """Binary masks (B, H, W, 1) (1 = cell) -> (B, H, W, 2K) float32: targets, then validity.

    The cells of each mask are its 4-connected components; this runs on the crop after
    augmentation, so flips and rotations of the image and of its targets agree. (A cell
    that leaves the crop and comes back counts as two cells.)
    """
    packed = [np.concatenate(affinities_from_labels(cell_instances(mask[..., 0]), offsets), axis=-1)
              for mask in np.asarray(masks)]
    return np.stack(packed).astype(np.float32)


@keras.saving.register_keras_serializable(package="unet")
class MaskedAffinityCrossentropy(keras.losses.Loss):
    """Binary cross-entropy of K affinity channels where the validity mask is 1.

    y_true: (B, H, W, 2K), the targets then the mask (``affinity_batch_targets``);
    y_pred: (B, H, W, K) sigmoid outputs. Returns (B, H, W) float32: the masked sum over
    the channels divided by K, so an offset that leaves the image adds nothing.
    """

    def __init__(self, epsilon: float = 1e-7, name: str = "masked_affinity_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.epsilon = epsilon

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.clip(ops.cast(y_pred, "float32"), self.epsilon, 1.0 - self.epsilon)
        channels = ops.shape(y_pred)[-1]
        targets, valid = y_true[..., :channels], y_true[..., channels:]
        loss = -(targets * ops.log(y_pred) + (1.0 - targets) * ops.log(1.0 - y_pred))
        return ops.mean(loss * valid, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


# ------------------------------------------------------------- test-time augmentation


# ------------------------------------------------------------------- mutex watershed


