"""Per-slice scores of the ISBI 2012 metric: V_rand and V_info of one slice with their split/merge parts.

Holds the pieces that score one (H, W) slice the way Fiji's RandError and
VariationOfInformation do (see :mod:`isbi_metric` for the whole metric and its
conventions): probability-map conversion (:func:`as_probability`), the ground-truth
segments (4-connected components of the cell interior), the thinned segmentation at
one threshold, and the foreground-restricted Rand and information scores with their
split and merge parts. The threshold sweep and the aggregation over slices are in
:mod:`isbi_metric`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from isbi_unet.evaluation.thinning import thin_mask

_FOUR = ndimage.generate_binary_structure(2, 1)
_DENSE_TABLE_LIMIT = 8_000_000  # contingency cells counted with bincount instead of sorting


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


def above_threshold(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Fiji's ``pixel > threshold``: bool (H, W), True where the float32 pixel of ``prob``
    (H, W) (see :func:`as_probability`) exceeds the double ``threshold``.

    Compared in double precision: NumPy 2 compares a float32 array with a Python float
    in float32, where e.g. the 8-bit level 204 (204/255 = 0.800000011920929 as float32)
    does not exceed 0.8, while in Fiji it does.
    """
    return as_probability(prob).astype(np.float64) > float(threshold)


def thin_segmentation(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Segment a probability map at one threshold the way the official script does.

    ``prob`` is a probability map (H, W) (see :func:`as_probability`); the pixels of
    :func:`above_threshold` are the cell seeds. Returns int32 segment ids (H, W), 0 on
    the 1-pixel-wide boundaries.
    """
    return thin_mask(above_threshold(prob, threshold))


def _seqsum(values: np.ndarray) -> float:
    """Left-to-right sum, as Java's ``for`` loops accumulate."""
    return float(np.cumsum(values)[-1]) if values.size else 0.0


SCORE_PARTS = ("v_rand_split", "v_rand_merge", "v_info_split", "v_info_merge", "h_seg_given_gt", "h_gt_given_seg")


def foreground_restricted_parts(gt: np.ndarray, seg: np.ndarray) -> dict[str, float]:
    """V_rand and V_info of one slice with their split and merge parts, as Fiji computes them.

    ``gt`` is an integer array (H, W) of ground-truth segment ids T, 0 = membrane
    (excluded); ``seg`` an integer array (H, W) of proposed segment ids S, 0 = boundary
    pixels, each of which counts as its own singleton segment. Only pixels with
    ``gt != 0`` enter the sums. The values do not depend on how the ids are numbered.

    Returns a dict of floats:

    * ``v_rand``: F-score of the two Rand parts below (Fiji's precision and recall);
    * ``v_rand_split`` = sum p_ij^2 / sum_i t_i^2 (Fiji's recall): 1 when no true cell
      is split over several segments, lower the more cells are split;
    * ``v_rand_merge`` = sum p_ij^2 / sum_j s_j^2 (Fiji's precision): 1 when no segment
      merges several true cells, lower the more cells are merged;
    * ``v_info`` and its parts ``v_info_split`` = I(S;T) / H(S) (Fiji's recall) and
      ``v_info_merge`` = I(S;T) / H(T) (Fiji's precision), with Fiji's conventions for
      degenerate cases (one true segment: merge 0, split 1; one proposed: 1, 0);
    * ``h_seg_given_gt`` = H(S|T) in nats: 0 without splits, grows with them;
    * ``h_gt_given_seg`` = H(T|S) in nats: 0 without merges, grows with them.

    V_info (and its parts) may be NaN where Fiji's formula divides 0 by 0.
    """
    g_img = np.asarray(gt)
    s_img = np.asarray(seg)
    if g_img.shape != s_img.shape:
        raise ValueError(f"ground truth {g_img.shape} and segmentation {s_img.shape} differ in shape")
    inside = g_img != 0
    n = int(np.count_nonzero(inside))
    if n == 0:
        # what Fiji's formulas give for an all-membrane ground truth (parts: 0 as well)
        return dict.fromkeys(("v_rand", "v_info") + SCORE_PARTS, 0.0)
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
    return {
        "v_rand": float(v_rand), "v_info": v_info,
        "v_rand_split": float(recall), "v_rand_merge": float(precision),
        "v_info_split": float(rec), "v_info_merge": float(prec),
        "h_seg_given_gt": float(hba), "h_gt_given_seg": float(hab),
    }


def foreground_restricted_scores(gt: np.ndarray, seg: np.ndarray) -> tuple[float, float]:
    """(V_rand, V_info) of one slice, exactly as Fiji's N^2-normalised formulas; see
    :func:`foreground_restricted_parts` for the label conventions and the parts."""
    parts = foreground_restricted_parts(gt, seg)
    return parts["v_rand"], parts["v_info"]


