"""Cells from predicted affinities: the mutex watershed (Wolf et al. 2020, the ``mwatershed`` package).

Short-range channels pull neighbouring pixels together, long-range channels keep pixels
of different cells apart (see :mod:`isbi_unet.training.affinities` for the offsets).
Input affinities (H, W, K) float32 in [0, 1]; output labels (H, W) uint32, 0 = boundary.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from skimage.segmentation import relabel_sequential

from isbi_unet.training.affinities import DEFAULT_OFFSETS


def mws_segmentation(
    affinities: np.ndarray,
    offsets: Sequence[Sequence[int]] = DEFAULT_OFFSETS,
    short_bias: float = 0.5,
    long_bias: float = 0.5,
    long_stride: int = 1,
    min_size: int = 0,
    boundaries: bool = True,
) -> np.ndarray:
    """Mutex-watershed segmentation of predicted affinities: (H, W, K) -> (H, W) uint32.

    Each edge's weight is its affinity minus a bias: ``short_bias`` for the 1-pixel
    offsets, ``long_bias`` for the others. ``mwatershed.agglom`` takes edges in order of
    decreasing |weight|: a positive edge merges its two pixels unless they are already
    kept apart, a negative one keeps them apart. short_bias 0 and long_bias 1 give
    Wolf et al.'s original split (short always attractive, long always repulsive).
    ``long_stride``: use long-range edges only every long_stride pixels in y and x.

    Returns segment ids 1..N, and 0 for: the pixels that no edge merged (membrane,
    where every affinity is low); with ``boundaries``, the upper/left pixel of every
    4-neighbour pair in two different segments (a 1-pixel line, so that segments stay
    4-disconnected and the map reads as a membrane mask); segments of fewer than
    ``min_size`` pixels.
    """
    import mwatershed

    affinities = np.asarray(affinities, np.float64)
    if affinities.ndim != 3 or affinities.shape[-1] != len(offsets):
        raise ValueError(f"expected (H, W, {len(offsets)}) affinities, got shape {affinities.shape}")
    if long_stride < 1:
        raise ValueError(f"long_stride must be >= 1, not {long_stride}")
    short = np.array([max(abs(int(v)) for v in o) <= 1 for o in offsets])
    weights = affinities - np.where(short, short_bias, long_bias)
    strides = [[1, 1] if is_short else [long_stride, long_stride] for is_short in short]
    raw = mwatershed.agglom(np.ascontiguousarray(np.moveaxis(weights, -1, 0)),
                            [[int(v) for v in o] for o in offsets], strides=strides)
    segments = raw.astype(np.int64)  # agglom labels the pixels it never merged 0
    if boundaries:
        def touching(a, b):
            return (a != b) & (a != 0) & (b != 0)

        edge = np.zeros(segments.shape, bool)
        edge[:-1] |= touching(segments[:-1], segments[1:])
        edge[:, :-1] |= touching(segments[:, :-1], segments[:, 1:])
        segments[edge] = 0
    if min_size > 1:
        sizes = np.bincount(segments.ravel())
        small = sizes < min_size
        small[0] = True
        segments[small[segments]] = 0
    return relabel_sequential(segments)[0].astype(np.uint32)


def segments_mask(affinities: np.ndarray, offsets: Sequence[Sequence[int]], **parameters) -> np.ndarray:
    """(H, W) uint8: 255 in the mutex watershed's segments, 0 on their boundaries
    (``parameters``: those of :func:`mws_segmentation`)."""
    return np.where(mws_segmentation(affinities, offsets, **parameters) > 0, 255, 0).astype(np.uint8)
