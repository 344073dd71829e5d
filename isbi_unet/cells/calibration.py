"""Reading a membrane map's own calibration, without labels.

Maps of a network on data it was not trained on, or of another network, keep their
ranking of pixels but not their scale: one network's 0.5 is another's 0.9. Functions
here look at the maps alone.

* :func:`label_free_threshold`: a threshold of a folder's maps chosen without labels
  (:func:`otsu_threshold`, kept within shares of the pixels);
* :func:`map_quantiles` and :func:`unlike_reason`: the distribution of a folder's map
  values, which a fitted edge model keeps, and whether other maps are unlike it;
* :func:`map_ranks`: each pixel's rank in its map, which no change of scale moves;
* :func:`inverted_reason`: whether maps look like membrane probabilities (high = membrane);
* :func:`relative_map`: a map rescaled so that its threshold falls at 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

QUANTILE_LEVELS = np.linspace(0.0, 1.0, 21)  # every 5 % of the pixels
# The label-free threshold: Otsu's, kept between the values at or below which 25 % and 45 %
# of the maps' pixels lie (chosen on the selection slices of ISBI under the shifts of
# benchmarks/shifts.py, by benchmarks/threshold_choice.py; see docs/shifts.md). Labelled
# membrane is about 20-24 % of an ISBI slice; Otsu's threshold alone calls as little as 14 %
# of the pixels membrane on maps of low contrast, where cells merge through the gaps.
MEMBRANE_SHARE = (0.25, 0.45)
# A fitted edge model is not used on maps one of whose quantiles moved further than this
# from those of the maps it was fitted on (chosen on the selection slices 20-24 of ISBI
# under the shifts of benchmarks/shifts.py; see docs/shifts.md).
MAX_QUANTILE_SHIFT = 0.15
# Beyond this many pixels in all, a folder's shares and quantiles are read on every k-th
# pixel of each map, so that memory holds about one map at a time (2**26: 256 slices of
# 512x512, 16 of 2048x2048).
MAX_EXACT_PIXELS = 1 << 26


def pixel_values(maps: Sequence[np.ndarray]) -> np.ndarray:
    """The pixels of ``maps`` (H, W) as one float32 array (N,): all of them, or beyond
    :data:`MAX_EXACT_PIXELS` in all (estimated from the first map) every k-th pixel of each."""
    if not len(maps):
        return np.empty(0, np.float32)
    step = max(1, -(-len(maps) * int(np.size(maps[0])) // MAX_EXACT_PIXELS))
    return np.concatenate([np.asarray(prob, np.float32).ravel()[::step] for prob in maps])


def otsu_threshold(maps: Sequence[np.ndarray]) -> float:
    """The median over ``maps`` (H, W) in [0, 1] of each map's Otsu threshold."""
    from skimage.filters import threshold_otsu

    return float(np.median([threshold_otsu(np.asarray(prob, np.float32)) for prob in maps]))


def _share_threshold(values: np.ndarray, membrane_share: float) -> float:
    """A value of ``values`` (N,) with about ``membrane_share`` of them at or below it; ties
    fall on the side nearer the share."""
    if not 0.0 < membrane_share < 1.0:
        raise ValueError(f"membrane_share={membrane_share!r} must lie strictly between 0 and 1")
    value = np.quantile(values, membrane_share, method="lower")
    below = values[values < value]
    share_below, share_at_or_below = below.size / values.size, np.count_nonzero(values <= value) / values.size
    if below.size and membrane_share - share_below < share_at_or_below - membrane_share:
        return float(below.max())  # the pixels at ``value`` count as cell
    return float(value)


def label_free_threshold(maps: Sequence[np.ndarray],
                         membrane_share: float | tuple[float, float] = MEMBRANE_SHARE) -> float:
    """A threshold for maps (H, W) float32 in [0, 1] (high = cell), chosen without labels.

    ``membrane_share`` S: a value of the maps' pixels such that about a share S of them are
    at or below it. Where many pixels share one value (8-bit maps; cells saturated at 1),
    the threshold falls on the side of those pixels that comes nearer the share. It moves
    with any increasing change of the maps' scale, so the components of ``prob > threshold``
    do not depend on the calibration. ``membrane_share`` (L, H): :func:`otsu_threshold`,
    kept between the thresholds of shares L and H.
    """
    values = pixel_values(maps)
    if isinstance(membrane_share, tuple):
        low, high = (_share_threshold(values, share) for share in membrane_share)
        return min(max(otsu_threshold(maps), low), high)
    return _share_threshold(values, membrane_share)


def map_ranks(prob: np.ndarray) -> np.ndarray:
    """Each pixel's rank in ``prob`` (H, W) as a share of its pixels: float64 (H, W) in
    (0, 1]; pixels of one value share the middle rank of their group (8-bit maps of a steep
    calibration hold many pixels at 0). Any increasing change of the map's scale (another
    network's calibration, ``prob ** 5``) leaves it unchanged."""
    from scipy.stats import rankdata

    values = np.asarray(prob)
    return (rankdata(values, method="average") / values.size).reshape(values.shape)


RELATIVE_READINGS: tuple[str, ...] = ("map", "ranks", "power")


def relative_map(prob: np.ndarray, threshold: float, reading: str = "ranks") -> np.ndarray:
    """``prob`` (H, W) in [0, 1] rescaled so that ``threshold`` falls at 0.5: float32 (H, W).

    ``reading`` "ranks": :func:`map_ranks`, linear from 0 to 0.5 over the pixels at or
    below the threshold and from 0.5 to 1 over those above it (no increasing change of the
    map's scale moves it, given a threshold at the same rank); "power": ``prob ** k`` with
    ``threshold ** k`` = 0.5 (no power of the map moves it); "map": ``prob`` itself.
    """
    values = np.asarray(prob, dtype=np.float64)
    if reading == "map":
        return values.astype(np.float32)
    if reading == "power":
        if not 0.0 < threshold < 1.0:
            return values.astype(np.float32)
        return (values ** (np.log(0.5) / np.log(threshold))).astype(np.float32)
    if reading != "ranks":
        raise ValueError(f"reading={reading!r}: choose one of {', '.join(RELATIVE_READINGS)}")
    ranks = map_ranks(values)
    at_or_below = float(np.count_nonzero(values <= threshold)) / values.size
    low = 0.5 * ranks / max(at_or_below, 1e-12)
    high = 0.5 + 0.5 * (ranks - at_or_below) / max(1.0 - at_or_below, 1e-12)
    return np.clip(np.where(values <= threshold, low, high), 0.0, 1.0).astype(np.float32)


def map_quantiles(maps: Sequence[np.ndarray]) -> list[float]:
    """The :data:`QUANTILE_LEVELS` quantiles (21,) of the pixels of ``maps`` (H, W) in [0, 1]
    (:func:`pixel_values`)."""
    values = pixel_values(maps)
    return [float(v) for v in np.quantile(values, QUANTILE_LEVELS)]


def unlike_reason(fitted: Sequence[float], maps: Sequence[np.ndarray]) -> str | None:
    """Why ``maps`` are unlike the maps whose :func:`map_quantiles` are ``fitted``, or None
    when no quantile moved more than :data:`MAX_QUANTILE_SHIFT`."""
    here = np.asarray(map_quantiles(maps))
    shift = np.abs(here - np.asarray(fitted, dtype=np.float64))
    worst = int(np.argmax(shift))
    if shift[worst] <= MAX_QUANTILE_SHIFT:
        return None
    return (f"these maps are unlike those the edge model was fitted on (their {QUANTILE_LEVELS[worst]:.0%} "
            f"quantile is {here[worst]:.2f}, there {fitted[worst]:.2f}): another network, images "
            "unlike its training data, or slices unlike those of the same stack it was fitted on")


# Maps are said to look inverted (membrane probabilities, high = membrane) when their dark
# side lies this many times deeper inside itself than their bright side (the median distance
# of a side's pixels to the other side). About twice the largest ratio of the maps of any
# selection condition of the shift benchmark (1.10; docs/shifts.md); on its test conditions
# and the runs' training blocks the largest is 1.42.
INVERTED_DEPTH_RATIO = 2.0


def inverted_reason(maps: Sequence[np.ndarray], look_at: int = 3, crop: int = 1024) -> str | None:
    """Why ``maps`` (H, W) in [0, 1] look like membrane probabilities (high = membrane)
    rather than cell probabilities, judged on the central ``crop`` x ``crop`` px of the
    first ``look_at`` maps, or None.

    At each map's Otsu threshold, membranes are thin lines and cells wide regions: the
    pixels on the membrane side lie near the other side, the cell side's deep inside.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    depth = {True: [], False: []}
    for index in range(min(len(maps), look_at)):
        prob = np.asarray(maps[index], np.float32)
        top, left = max(0, (prob.shape[0] - crop) // 2), max(0, (prob.shape[1] - crop) // 2)
        prob = prob[top:top + crop, left:left + crop]
        if prob.min() == prob.max():
            continue
        low = prob <= threshold_otsu(prob)
        for side in (True, False):
            mask = low if side else ~low
            depth[side].append(ndimage.distance_transform_edt(mask)[mask])
    if not depth[True] or not depth[False]:
        return None
    dark, bright = (float(np.median(np.concatenate(depth[side]))) for side in (True, False))
    if dark <= INVERTED_DEPTH_RATIO * bright:
        return None
    return (f"these maps look inverted: their dark pixels form wide regions ({dark:.1f} px deep) and their bright "
            f"pixels thin lines ({bright:.1f} px), as membrane probabilities would; the maps here are cell "
            "probabilities (high = cell): if yours are membrane probabilities, save 1 - map")
