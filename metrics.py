"""The ISBI 2012 challenge's official segmentation metric: V_rand and V_info after border thinning.

This module computes the numbers the challenge's official Fiji script reports
(Arganda-Carreras et al. 2015, "Crowdsourcing the creation of image segmentation
algorithms for connectomics", Frontiers in Neuroanatomy 9:142), the way the Fiji
classes ``trainableSegmentation.metrics.RandError`` (``getMaximalVRandAfterThinning``),
``VariationOfInformation`` (``getMaximalVInfoAfterThinning``) and
``trainableSegmentation.utils.WatershedTransform2D`` compute them:

* The prediction is a probability map in [0, 1], high = cell interior. Integer maps
  (8-bit 0-255, 16-bit) are rescaled to [0, 1] first, otherwise every threshold
  below 1 would see the same binary image and the sweep would collapse. Pixels are
  float32 (Fiji converts every slice to 32-bit) and compared as ``pixel > threshold``
  against a double-precision threshold.
* Thresholds are 0.0, 0.1, ... added up in double precision exactly like the Java
  ``for (th = 0.0; th <= 1.0; th += 0.1)`` loop: 0.0, 0.1, 0.2, 0.30000000000000004,
  ..., 0.9999999999999999 (11 values).
* At each threshold the pixels above it are the cell seeds; a Vincent-Soille
  watershed (FIFO flooding, 4-connectivity) grows them into the rest of the image and
  leaves 1-pixel wide watershed lines (label 0). This module re-implements that Java
  flooding exactly, including its queue order (column-major pixel order, neighbours
  visited left, up, right, down) and its rule for ties: a pixel that sees two different
  basins when it is dequeued becomes a watershed pixel. Each label-0 pixel counts as a
  segment of its own (a singleton).
* The ground truth is the set of 4-connected components of the label's non-zero
  pixels; membrane pixels (value 0) are left out of every sum (foreground restriction).
* V_rand is the F-score of the Rand split and merge scores normalised by N^2;
  V_info is 2 I(S;T) / (H(S) + H(T)), with Fiji's conventions for degenerate cases
  (a ground truth or a segmentation of one segment scores V_info = 0).
* The score of a threshold is the mean of the per-slice scores; the reported number
  is the maximum of that mean over thresholds (not the mean of per-slice maxima).

It also reports the 2012 pixel error, 1 - the maximal pixel F-score over the same
thresholds, with cell interior as the positive class and true/false positives pooled
over all slices (Fiji's ``PixelError.getPixelErrorMaximalFScore``), and the Dice
coefficient of cell interior at threshold 0.5 (``prob > 0.5``), pooled over all slices.

Not the same as ``skimage.metrics.adapted_rand_error``: scikit-image does no border
thinning, has no singleton treatment of boundary pixels (a segmentation's label 0 is
just one more, usually huge, segment) and normalises by n^2 - n (pairs of distinct
pixels) instead of N^2, so its numbers differ from the challenge's and must not be
compared with the leaderboard.

Checked against the Fiji code (fiji/Trainable_Segmentation at commit 0c1783d8,
compiled with ImageJ 1.53t): the thinned segmentations are identical pixel for pixel
and the scores agree to about 1e-16 on random, blurred-noise, plateau, checkerboard
and label-derived maps. Known deviations: Fiji's 16-bit conversion clamps watershed
labels above 65535, which is reproduced for the proposal but not for the ground truth
(which never has that many cells); Fiji labels the ground truth with
FindConnectedRegions, here scipy's 4-connected labelling (same partition). Scores
change, as in Fiji, when a pixel value sits exactly on a threshold.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from errors import UserError

__all__ = [
    "OFFICIAL_THRESHOLDS",
    "official_thresholds",
    "as_probability",
    "ground_truth_segments",
    "thin_segmentation",
    "thin_mask",
    "foreground_restricted_rand",
    "foreground_restricted_info",
    "foreground_restricted_scores",
    "pixel_error",
    "dice_score",
    "isbi_scores",
    "evaluate_folders",
]

_FOUR = ndimage.generate_binary_structure(2, 1)
_MAX_SHORT = 65535  # Fiji converts watershed labels to a 16-bit image
_IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
_DENSE_TABLE_LIMIT = 8_000_000  # contingency cells counted with bincount instead of sorting


def official_thresholds(start: float = 0.0, stop: float = 1.0, step: float = 0.1) -> list[float]:
    """Thresholds of Fiji's ``for (th = start; th <= stop; th += step)`` loop, in double precision.

    The default gives the official 11 thresholds 0.0, 0.1, 0.2, 0.30000000000000004, ...,
    0.9999999999999999.
    """
    if step <= 0:
        raise ValueError(f"threshold step must be positive, got {step}")
    values = []
    th = float(start)
    while th <= stop:
        values.append(th)
        th += step
    return values


OFFICIAL_THRESHOLDS: tuple[float, ...] = tuple(official_thresholds())


def as_probability(image: np.ndarray) -> np.ndarray:
    """Return a 2-D float32 probability map in [0, 1] (high = cell interior).

    ``image`` has shape (H, W). Booleans become 0/1; unsigned 8-bit maps are divided
    by 255 and 16-bit maps by 65535; other integer maps by 255 when their maximum is
    at most 255 (else by 65535). Float maps are cast to float32 as they are, except
    that a float map of whole numbers with maximum in (1, 255] is taken to be an 8-bit
    map saved as float and divided by 255. NaN pixels are kept: like Fiji's
    ``pixel > threshold`` they fall below every threshold. Raises ValueError for
    anything else (negative values, other values above 1, non-2-D arrays).
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D probability map, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and arr.min() < 0:
            raise ValueError("probability map has negative values")
        if arr.dtype == np.uint16 or (arr.size and arr.max() > 255):
            if arr.size and arr.max() > 65535:
                raise ValueError("integer probability map has values above 65535")
            scale = np.float32(65535)
        else:
            scale = np.float32(255)
        return arr.astype(np.float32) / scale
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if out.size:
            finite = out[np.isfinite(out)] if not np.isfinite(out).all() else out
            lo = float(finite.min()) if finite.size else 0.0
            hi = float(finite.max()) if finite.size else 0.0
            if lo < 0.0:
                raise ValueError(f"probability map has negative values (min {lo})")
            if hi > 1.0:
                if hi <= 255.0 and np.array_equal(out, np.round(out)):
                    return out / np.float32(255)  # an 8-bit map stored as float
                raise ValueError(
                    f"float probability map has values above 1 (max {hi}) that are not 8-bit grey levels"
                )
        return out
    raise ValueError(f"unsupported probability map dtype {arr.dtype}")


def ground_truth_segments(label: np.ndarray) -> np.ndarray:
    """Ground-truth segments of a label image: int32 array of the same shape (H, W).

    Each 4-connected component of the non-zero (cell interior) pixels gets its own
    id 1..K; membrane pixels (value 0) get 0 and are excluded from every score.
    """
    arr = np.asarray(label)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D label image, got shape {arr.shape}")
    segments, _ = ndimage.label(arr > 0, structure=_FOUR)
    return segments.astype(np.int32, copy=False)


def _combine(candidates: np.ndarray) -> np.ndarray:
    """Fiji's watershed decision for each column of neighbour labels (shape (4, n)).

    Entries are basin labels (> 0) or 0 (nothing flooded there). A pixel takes a
    basin's label when exactly one distinct label is among its flooded neighbours and
    becomes a watershed pixel (0) otherwise.
    """
    c = candidates
    largest = np.maximum(np.maximum(c[0], c[1]), np.maximum(c[2], c[3]))
    m = np.where(c > 0, c, np.iinfo(np.int32).max)
    smallest = np.minimum(np.minimum(m[0], m[1]), np.minimum(m[2], m[3]))
    return np.where(smallest == largest, largest, 0).astype(np.int32, copy=False)


def _resolve_layer(prev: np.ndarray, npos: np.ndarray) -> np.ndarray:
    """Labels of one flooding layer of n pixels, processed in queue order.

    ``prev`` (4, n) holds the labels of neighbours flooded in earlier layers (0 when
    none); ``npos`` (4, n) the queue position inside this layer of same-layer
    neighbours (-1 otherwise). A same-layer neighbour counts only when it was dequeued
    earlier. The dependency is a DAG over the queue order, so a Jacobi iteration
    started from the earlier-layer answer converges to the sequential result.
    """
    n = prev.shape[1]
    est = _combine(prev)
    earlier = (npos >= 0) & (npos < np.arange(n)[None, :])
    cols = np.flatnonzero(earlier[0] | earlier[1] | earlier[2] | earlier[3])
    if cols.size == 0:
        return est
    sub_prev = prev[:, cols]
    sub_earlier = earlier[:, cols]
    k_idx, c_idx = np.nonzero(sub_earlier)
    src = npos[:, cols][k_idx, c_idx]
    for _ in range(64):
        cand = sub_prev.copy()
        cand[k_idx, c_idx] = est[src]
        new = _combine(cand)
        if np.array_equal(new, est[cols]):
            return est
        est[cols] = new
    # Long dependency chain: finish with the plain sequential rule (exact, slower).
    big = np.iinfo(np.int32).max
    for j, pixel in enumerate(cols):
        labels = [int(v) for v in sub_prev[:, j] if v > 0]
        labels += [int(est[s]) for s, e in zip(npos[:, pixel], sub_earlier[:, j]) if e and est[s] > 0]
        lo = min(labels, default=big)
        hi = max(labels, default=0)
        est[pixel] = hi if (hi > 0 and lo == hi) else 0
    return est


def thin_mask(foreground: np.ndarray) -> np.ndarray:
    """Fiji's border thinning of a binary cell-interior mask.

    ``foreground`` is a bool array (H, W), True = above threshold. Returns an int32
    array (H, W): the 4-connected components of ``foreground`` numbered 1..K (in
    Fiji's column-major order), grown over the background by the Vincent-Soille
    flooding of ``WatershedTransform2D`` with 4-connectivity; 0 marks the 1-pixel
    watershed lines, which the scores treat as singletons. An empty or full mask
    gives a single segment (all ones), as in Fiji.
    """
    fg = np.asarray(foreground, dtype=bool)
    if fg.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {fg.shape}")
    h, w = fg.shape
    if fg.all() or not fg.any():
        return np.ones((h, w), dtype=np.int32)
    # Label in column-major order (Fiji numbers basins in its x-outer pixel order).
    comp_t, n_comp = ndimage.label(fg.T, structure=_FOUR)
    comp = comp_t.T
    hp, wp = h + 2, w + 2
    lab2 = np.full((hp, wp), -4, dtype=np.int32)  # -4: outside the image
    lab2[1:-1, 1:-1] = np.where(fg, comp, -1)  # -1: background not flooded yet
    lab = lab2.ravel()
    offsets = np.array([-1, -wp, 1, wp], dtype=np.int64)  # left, up, right, down
    # First layer: background pixels touching a basin, in column-major order.
    touching = ~fg & ndimage.binary_dilation(fg, structure=_FOUR)
    xs, ys = np.nonzero(touching.T)
    cur = (ys.astype(np.int64) + 1) * wp + (xs.astype(np.int64) + 1)
    pos = np.full(hp * wp, -1, dtype=np.int64)
    unseen = np.iinfo(np.int64).max
    first_seen = np.full(hp * wp, unseen, dtype=np.int64)
    while cur.size:
        nb = offsets[:, None] + cur[None, :]  # (4, n): neighbours in Fiji's order
        prev = np.maximum(lab[nb], 0)  # basin labels flooded so far, else 0
        pos[cur] = np.arange(cur.size)
        npos = pos[nb]
        lab[cur] = _resolve_layer(prev, npos)
        pos[cur] = -1
        flat = nb.T.ravel()  # (queue position, neighbour order)
        cand = flat[lab[flat] == -1]
        if cand.size == 0:
            break
        # Keep each pixel's first discovery: (queue position, neighbour order) is
        # exactly the order in which Fiji appends it to its FIFO queue.
        order = np.arange(cand.size, dtype=np.int64)
        np.minimum.at(first_seen, cand, order)
        cur = cand[first_seen[cand] == order]
        first_seen[cand] = unseen
    out = lab2[1:-1, 1:-1].copy()
    if n_comp >= _MAX_SHORT:
        np.minimum(out, _MAX_SHORT, out=out)
    return out


def thin_segmentation(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Segment a probability map at one threshold the way the official script does.

    ``prob`` is a probability map (H, W) (see :func:`as_probability`); pixels with
    ``prob > threshold`` (float32 pixel against a double threshold) are cell seeds.
    Returns int32 segment ids (H, W), 0 on the 1-pixel-wide boundaries.
    """
    p = as_probability(prob).astype(np.float64)
    return thin_mask(p > float(threshold))


def _seqsum(values: np.ndarray) -> float:
    """Left-to-right sum, as Java's ``for`` loops accumulate."""
    return float(np.cumsum(values)[-1]) if values.size else 0.0


def foreground_restricted_scores(gt: np.ndarray, seg: np.ndarray) -> tuple[float, float]:
    """(V_rand, V_info) of one slice, exactly as Fiji's N^2-normalised formulas.

    ``gt`` is an integer array (H, W) of ground-truth segment ids, 0 = membrane
    (excluded); ``seg`` an integer array (H, W) of proposed segment ids, 0 = boundary
    pixels, each of which counts as its own singleton segment. Only pixels with
    ``gt != 0`` enter the sums. The values do not depend on how the ids are numbered.
    V_info may be NaN where Fiji's formula divides 0 by 0 (no mutual information).
    """
    g_img = np.asarray(gt)
    s_img = np.asarray(seg)
    if g_img.shape != s_img.shape:
        raise ValueError(f"ground truth {g_img.shape} and segmentation {s_img.shape} differ in shape")
    inside = g_img != 0
    n = int(np.count_nonzero(inside))
    if n == 0:
        return 0.0, 0.0  # what Fiji's formulas give for an all-membrane ground truth
    g = g_img[inside].astype(np.int64, copy=False)
    s = s_img[inside].astype(np.int64, copy=False)
    if g.min() < 0 or s.min() < 0:
        raise ValueError("segment ids must be non-negative (0 = membrane / boundary pixel)")
    width = int(s.max()) + 1
    keys = g * width + s
    if (int(g.max()) + 1) * width <= _DENSE_TABLE_LIMIT:
        table = np.bincount(keys)
        keys = np.flatnonzero(table)
        counts = table[keys]
    else:
        keys, counts = np.unique(keys, return_counts=True)
    pi = keys // width  # contingency entries sorted by (i, j), like Java's loops
    pj = keys % width
    p = counts.astype(np.float64) / n  # p_ij, sorted by (i, j) as Java's loops
    a = np.bincount(pi, weights=p)  # a_i = p_i0 + sum_j p_ij
    joint = pj > 0
    b = np.bincount(pj[joint], weights=p[joint])  # b_j, j >= 1
    aux = _seqsum(p[~joint])  # sum_i p_i0: fraction of singleton pixels
    pj_joint = p[joint]

    # Rand (RandError.getForegroundRestrictedRandIndexStatsN2 + ClassificationStatistics)
    sum_a2 = _seqsum(a * a)
    sum_b2 = _seqsum(b * b) + aux / n
    sum_ab2 = _seqsum(pj_joint * pj_joint) + aux / n
    n2 = float(n) * float(n)
    tp = n2 * sum_ab2
    fp = n2 * sum_b2 - tp
    fn = n2 * sum_a2 - tp
    precision = 1.0 if fp == 0 else tp / (tp + fp)
    recall = 1.0 if fn == 0 else tp / (tp + fn)
    v_rand = 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0

    # Information (VariationOfInformation.foregroundRestrictedFscore)
    log_n = float(np.log(n))
    a_pos = a[a != 0]
    b_pos = b[b != 0]
    p_pos = pj_joint[pj_joint != 0]
    sum_a = _seqsum(a_pos * np.log(a_pos))
    sum_b = _seqsum(b_pos * np.log(b_pos)) - aux * log_n
    sum_ab = _seqsum(p_pos * np.log(p_pos)) - aux * log_n
    with np.errstate(divide="ignore", invalid="ignore"):
        ha = np.float64(-sum_a)
        hb = np.float64(-sum_b)
        hab = np.float64(sum_b - sum_ab)
        hba = np.float64(sum_a - sum_ab)
        prec = (ha - hab) / ha
        rec = (hb - hba) / hb
        if ha == 0:
            prec, rec = np.float64(0.0), np.float64(1.0)
        if hb == 0:
            prec, rec = np.float64(1.0), np.float64(0.0)
        v_info = float(2.0 * prec * rec / (prec + rec))
    return float(v_rand), v_info


def foreground_restricted_rand(gt: np.ndarray, seg: np.ndarray) -> float:
    """Foreground-restricted Rand score V_rand of one slice (shapes (H, W)); see
    :func:`foreground_restricted_scores` for the label conventions."""
    return foreground_restricted_scores(gt, seg)[0]


def foreground_restricted_info(gt: np.ndarray, seg: np.ndarray) -> float:
    """Foreground-restricted information-theoretic score V_info of one slice (shapes
    (H, W)); see :func:`foreground_restricted_scores` for the label conventions."""
    return foreground_restricted_scores(gt, seg)[1]


def _fscore(tp: float, fp: float, fn: float) -> float:
    """F-score as Fiji's ClassificationStatistics computes it."""
    precision = 1.0 if fp == 0 else tp / (tp + fp)
    recall = 1.0 if fn == 0 else tp / (tp + fn)
    return 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _best(curve: Sequence[float], thresholds: Sequence[float]) -> tuple[float, float]:
    """Fiji's maximum: starts at 0 and the first threshold, keeps strict improvements (NaN never wins)."""
    best, best_th = 0.0, float(thresholds[0])
    for value, th in zip(curve, thresholds):
        if value > best:
            best, best_th = float(value), float(th)
    return best, best_th


def _pixel_counts(prob: np.ndarray, label: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """(tp, fp, fn) of cell interior (label > 0) against ``prob > threshold``."""
    truth = np.asarray(label) > 0
    pred = prob.astype(np.float64) > float(threshold)
    tp = int(np.count_nonzero(truth & pred))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(truth & ~pred))
    return tp, fp, fn


def _as_stack(images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    arr_list = [images] if isinstance(images, np.ndarray) and images.ndim == 2 else list(images)
    return [np.asarray(a) for a in arr_list]


def pixel_error(
    probabilities: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray | Sequence[np.ndarray],
    thresholds: Sequence[float] | None = None,
) -> float:
    """2012 pixel error: 1 - maximal pixel F-score over the thresholds.

    ``probabilities`` and ``labels`` are one (H, W) array or a sequence of them.
    Cell interior (label > 0, ``prob > threshold``) is the positive class; counts are
    pooled over all slices before the F-score, as Fiji's PixelError does.
    """
    probs = [as_probability(p) for p in _as_stack(probabilities)]
    labs = _as_stack(labels)
    ths = list(OFFICIAL_THRESHOLDS if thresholds is None else thresholds)
    curve = []
    for th in ths:
        tp = fp = fn = 0
        for p, lab in zip(probs, labs, strict=True):
            a, b, c = _pixel_counts(p, lab, th)
            tp, fp, fn = tp + a, fp + b, fn + c
        curve.append(_fscore(tp, fp, fn))
    return 1.0 - _best(curve, ths)[0]


def dice_score(
    probabilities: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray | Sequence[np.ndarray],
    threshold: float = 0.5,
) -> float:
    """Dice coefficient of cell interior at ``prob > threshold`` against ``label > 0``.

    One (H, W) array or a sequence of them; counts are pooled over slices. Two empty
    masks score 1.0.
    """
    tp = fp = fn = 0
    for p, lab in zip(_as_stack(probabilities), _as_stack(labels), strict=True):
        a, b, c = _pixel_counts(as_probability(p), lab, threshold)
        tp, fp, fn = tp + a, fp + b, fn + c
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2.0 * tp / denom


def _json_float(value: float) -> float | None:
    return None if value != value else float(value)  # NaN -> None (valid JSON)


def isbi_scores(
    probabilities: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    thresholds: Sequence[float] | None = None,
    *,
    names: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Official ISBI 2012 scores of a stack of probability maps.

    ``probabilities``: sequence of N maps (H, W) each, high = cell interior (uint8 maps
    are rescaled, see :func:`as_probability`); ``labels``: N label images of the same
    shapes, 0 = membrane. ``thresholds`` defaults to :data:`OFFICIAL_THRESHOLDS`.
    ``names`` (optional, N strings) are copied into ``per_slice``; ``progress(done,
    total)`` is called after each slice.

    Returns a JSON-serialisable dict: ``v_rand``/``v_info`` (maximum over thresholds of
    the slice mean) with ``v_rand_threshold``/``v_info_threshold``; ``pixel_error``
    (with ``pixel_error_threshold``); ``dice`` at 0.5; ``thresholds``,
    ``v_rand_curve``/``v_info_curve`` (mean over slices per threshold, None where a
    slice's V_info is undefined); ``per_slice``: one dict per slice with its scores at
    the chosen thresholds, its own best values and thresholds, its curves, its Dice
    and its pixel error at the chosen pixel threshold.
    """
    probs = list(probabilities)
    labs = list(labels)
    if not probs:
        raise ValueError("no slices to evaluate")
    if len(probs) != len(labs):
        raise ValueError(f"{len(probs)} probability maps but {len(labs)} label images")
    if names is not None and len(names) != len(probs):
        raise ValueError(f"{len(names)} names for {len(probs)} slices")
    ths = [float(t) for t in (OFFICIAL_THRESHOLDS if thresholds is None else thresholds)]
    if not ths:
        raise ValueError("no thresholds")
    n_slices, n_th = len(probs), len(ths)
    v_rand = np.zeros((n_slices, n_th))
    v_info = np.zeros((n_slices, n_th))
    pix = np.zeros((n_slices, n_th, 3), dtype=np.int64)
    dice_counts = np.zeros((n_slices, 3), dtype=np.int64)
    for k, (raw_prob, raw_label) in enumerate(zip(probs, labs)):
        prob = as_probability(raw_prob)
        label = np.asarray(raw_label)
        if label.shape != prob.shape:
            raise ValueError(f"slice {k}: probability map {prob.shape} and label {label.shape} differ in shape")
        gt = ground_truth_segments(label)
        prob64 = prob.astype(np.float64)
        truth = label > 0
        for t, th in enumerate(ths):
            pred = prob64 > th
            v_rand[k, t], v_info[k, t] = foreground_restricted_scores(gt, thin_mask(pred))
            pix[k, t] = (
                np.count_nonzero(truth & pred),
                np.count_nonzero(pred & ~truth),
                np.count_nonzero(truth & ~pred),
            )
        dice_counts[k] = _pixel_counts(prob, label, 0.5)
        if progress is not None:
            progress(k + 1, n_slices)

    rand_curve = v_rand.mean(axis=0)
    info_curve = v_info.mean(axis=0)
    best_rand, rand_th = _best(rand_curve, ths)
    best_info, info_th = _best(info_curve, ths)
    pix_total = pix.sum(axis=0)
    pix_curve = [_fscore(*map(int, pix_total[t])) for t in range(n_th)]
    best_pix, pix_th = _best(pix_curve, ths)
    tp, fp, fn = (int(v) for v in dice_counts.sum(axis=0))
    dice = 1.0 if 2 * tp + fp + fn == 0 else 2.0 * tp / (2 * tp + fp + fn)
    rand_idx, info_idx, pix_idx = ths.index(rand_th), ths.index(info_th), ths.index(pix_th)

    per_slice = []
    for k in range(n_slices):
        s_rand, s_rand_th = _best(v_rand[k], ths)
        s_info, s_info_th = _best(v_info[k], ths)
        s_tp, s_fp, s_fn = (int(v) for v in dice_counts[k])
        s_denom = 2 * s_tp + s_fp + s_fn
        entry: dict[str, Any] = {}
        if names is not None:
            entry["name"] = str(names[k])
        entry.update(
            {
                "v_rand": _json_float(v_rand[k, rand_idx]),
                "v_info": _json_float(v_info[k, info_idx]),
                "v_rand_best": s_rand,
                "v_rand_best_threshold": s_rand_th,
                "v_info_best": s_info,
                "v_info_best_threshold": s_info_th,
                "pixel_error": 1.0 - _fscore(*map(int, pix[k, pix_idx])),
                "dice": 1.0 if s_denom == 0 else 2.0 * s_tp / s_denom,
                "v_rand_curve": [_json_float(v) for v in v_rand[k]],
                "v_info_curve": [_json_float(v) for v in v_info[k]],
            }
        )
        per_slice.append(entry)

    return {
        "v_rand": best_rand,
        "v_info": best_info,
        "v_rand_threshold": rand_th,
        "v_info_threshold": info_th,
        "pixel_error": 1.0 - best_pix,
        "pixel_error_threshold": pix_th,
        "dice": float(dice),
        "n_slices": n_slices,
        "thresholds": ths,
        "v_rand_curve": [_json_float(v) for v in rand_curve],
        "v_info_curve": [_json_float(v) for v in info_curve],
        "per_slice": per_slice,
    }


# ----------------------------------------------------------------------------- folders


def _natural_key(stem: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", stem))


def _image_files(folder: Path, what: str) -> list[Path]:
    from images import list_images

    return list_images(folder, exclude_suffix=None, what=what)


def _read_image(path: Path) -> np.ndarray:
    """Read one 2-D image in its stored dtype; RGB(A) becomes gray as everywhere (images.to_gray)."""
    from images import read_gray

    return read_gray(path)


def _progress_reporter(enabled: bool) -> Callable[[int, int, str], None] | None:
    """A progress bar over slices (keras.utils.Progbar, like the other commands), or None."""
    if not enabled:
        return None
    from keras.utils import Progbar

    state: dict[str, Any] = {}

    def report(done: int, total: int, name: str) -> None:
        if "bar" not in state:
            state["bar"] = Progbar(total, unit_name="slice")
        state["bar"].update(done)

    return report


def _write_json(data: dict, json_path: str | os.PathLike) -> None:
    target = Path(json_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=str(target.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, allow_nan=False)
            handle.write("\n")
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def evaluate_folders(
    pred_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    names: Sequence[str] | None = None,
    json_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Score the predictions in ``pred_dir`` against the labels in ``label_dir``.

    Images are .png/.tif/.tiff files, one 2-D slice each. A label ``N.png`` (or
    ``N_mask.png``) is matched with the prediction ``N.<ext>`` or ``N_predict.<ext>``; ``names`` (stems such as
    ["25", "26"]) restricts the evaluation to those labels. Returns the dict of
    :func:`isbi_scores` with ``per_slice`` names filled in, adds ``pred_dir`` and
    ``label_dir``, and writes it as JSON to ``json_path`` (atomically) when given.
    Raises UserError for a missing or empty folder, a label without prediction, an
    ambiguous prediction, an unreadable image or a size mismatch.
    """
    pred_root, label_root = Path(pred_dir), Path(label_dir)
    label_files = {p.stem[: -len("_mask")] if p.stem.endswith("_mask") else p.stem: p
                   for p in _image_files(label_root, "label")}
    pred_files: dict[str, Path] = {}
    for p in _image_files(pred_root, "prediction"):
        stem = p.stem[: -len("_predict")] if p.stem.endswith("_predict") else p.stem
        if stem in pred_files:
            raise UserError(
                f"two predictions for label {stem!r} in {pred_root}: {pred_files[stem].name} and {p.name}; keep only one"
            )
        pred_files[stem] = p
    if names is not None:
        wanted = [str(n) for n in names]
        if not wanted:
            raise UserError("the list of slice names is empty: name at least one slice")
        missing_labels = [n for n in wanted if n not in label_files]
        if missing_labels:
            raise UserError(
                f"no label image for {', '.join(missing_labels[:5])} in {label_root}: check the slice names"
            )
    else:
        wanted = sorted(label_files, key=_natural_key)
    missing = [n for n in wanted if n not in pred_files]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise UserError(
            f"no prediction in {pred_root} for label(s) {shown} (expected N.png or N_predict.png): "
            "run prediction for them or restrict the slice names"
        )
    probs, labs = [], []
    for name in wanted:
        pred_img = _read_image(pred_files[name])
        label_img = _read_image(label_files[name])
        if pred_img.shape != label_img.shape:
            raise UserError(
                f"prediction {pred_files[name]} is {pred_img.shape[1]}x{pred_img.shape[0]} but label "
                f"{label_files[name]} is {label_img.shape[1]}x{label_img.shape[0]}: predict at the label's size"
            )
        try:
            probs.append(as_probability(pred_img))
        except ValueError as exc:
            raise UserError(f"prediction {pred_files[name]} is not a probability map ({exc}): save values in [0, 1] or 0-255") from exc
        labs.append(label_img)

    report = _progress_reporter(progress)

    def callback(done: int, total: int) -> None:
        report(done, total, wanted[done - 1])

    result = isbi_scores(probs, labs, names=wanted, progress=callback if report is not None else None)
    result["pred_dir"] = str(pred_root)
    result["label_dir"] = str(label_root)
    if json_path is not None:
        _write_json(result, json_path)
    return result
