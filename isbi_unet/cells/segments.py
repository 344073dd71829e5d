"""Dense label images (H, W), every pixel a segment id >= 1, and what the cell methods do
with them after the graph: join small segments to a neighbour (:func:`absorb_small`), merge
segments enclosed by a single other one (:func:`merge_enclosed`), and draw 1-pixel
boundaries (:func:`with_boundaries`)."""

from __future__ import annotations

import numpy as np

__all__ = ["relabel", "with_boundaries", "merge_enclosed", "absorb_small"]


def relabel(labels: np.ndarray) -> np.ndarray:
    """Ids made consecutive 1..K (0 stays 0), as uint32 (H, W)."""
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels.astype(np.uint32, copy=False))[0]


def with_boundaries(labels: np.ndarray) -> np.ndarray:
    """A dense label image (H, W) with 1-pixel boundaries set to 0: a pixel whose right or
    lower neighbour has another label becomes 0. Returns uint32, ids 1..K."""
    out = labels.astype(np.uint32, copy=True)
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    out[edge] = 0
    return relabel(out)


def merge_enclosed(dense: np.ndarray, boundary_map: np.ndarray | None = None,
                   least_boundary: float = 0.0) -> np.ndarray:
    """A dense label image (H, W) (every pixel a segment id >= 1) in which every segment
    that touches exactly one other segment and not the image's edge has taken that
    segment's id, repeated until none is left (a hole in a hole ends in the outer cell):
    a dark organelle, which the graph cuts out all round, is part of the cell around it
    (the ground truth draws membranes only). With ``boundary_map`` (H, W), e.g. the membrane
    map, only a segment whose boundary with the one around it averages at least
    ``least_boundary`` in it (as in :func:`absorb_small`) merges: a cell walled off by deep
    membrane stays. Same dtype; ids not renumbered."""
    dense = np.asarray(dense)
    pair_means = None if boundary_map is None else _pair_means(np.asarray(boundary_map, dtype=np.float64))
    for _ in range(16):
        merged = _merge_enclosed_once(dense, pair_means, least_boundary)
        if np.array_equal(merged, dense):
            break
        dense = merged
    return dense


def _merge_enclosed_once(dense: np.ndarray, pair_means: np.ndarray | None, least_boundary: float) -> np.ndarray:
    first, second = _neighbour_pairs(dense)
    differ = first != second
    pairs, index = np.unique(np.stack([np.minimum(first[differ], second[differ]),
                                       np.maximum(first[differ], second[differ])], axis=1), axis=0,
                             return_inverse=True)
    if not len(pairs):
        return dense
    size = int(dense.max()) + 1
    neighbours = np.bincount(pairs.ravel(), minlength=size)
    on_edge = np.zeros(size, dtype=bool)
    on_edge[np.concatenate([dense[0], dense[-1], dense[:, 0], dense[:, -1]])] = True
    faint = np.ones(len(pairs), dtype=bool)
    if pair_means is not None:
        index = index.ravel()
        faint = np.bincount(index, weights=pair_means[differ], minlength=len(pairs)) \
            / np.bincount(index, minlength=len(pairs)) >= least_boundary
    target = np.arange(size)
    for (u, v), joins in zip(pairs, faint):
        for inner, outer in ((u, v), (v, u)):
            if joins and neighbours[inner] == 1 and not on_edge[inner] and target[outer] == outer:
                target[inner] = outer
    return target[dense].astype(dense.dtype, copy=False)


def absorb_small(dense: np.ndarray, min_size: int, boundary_map: np.ndarray | None = None,
                 least_boundary: float = 0.0) -> np.ndarray:
    """A dense label image (H, W) (every pixel a segment id >= 1) in which every segment of
    fewer than ``min_size`` pixels has taken the id of the neighbour of at least ``min_size``
    pixels it shares the longest boundary with (4-connected pixel pairs); one without such
    a neighbour stays. With ``boundary_map`` (H, W), e.g. the membrane map, only neighbours
    whose shared boundary averages at least ``least_boundary`` in it count (the mean over
    the boundary's pixel pairs of the two pixels' mean): a small segment joins across a
    faint boundary, not across a deep one. Same dtype; ids not renumbered."""
    dense = np.asarray(dense)
    area = np.bincount(dense.ravel())
    first, second = _neighbour_pairs(dense)
    small, large = np.concatenate([first, second]), np.concatenate([second, first])
    keep = (area[small] < min_size) & (area[large] >= min_size)
    pairs, index, shared = np.unique(np.stack([small[keep], large[keep]], axis=1), axis=0, return_inverse=True,
                                     return_counts=True)
    if boundary_map is not None and len(pairs):
        value = np.tile(_pair_means(np.asarray(boundary_map, dtype=np.float64)), 2)[keep]
        faint = np.bincount(index.ravel(), weights=value, minlength=len(pairs)) / shared >= least_boundary
        pairs, shared = pairs[faint], shared[faint]
    if not len(pairs):
        return dense
    order = np.lexsort((pairs[:, 1], -shared, pairs[:, 0]))  # per small segment: longest boundary first
    pairs = pairs[order]
    first_of_each = np.r_[True, pairs[1:, 0] != pairs[:-1, 0]]
    target = np.arange(area.size)
    target[pairs[first_of_each, 0]] = pairs[first_of_each, 1]
    return target[dense].astype(dense.dtype, copy=False)


def _neighbour_pairs(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ids of every horizontally and vertically adjacent pixel pair of ``dense`` (H, W):
    (first (P,), second (P,)), equal where the two pixels share a segment."""
    return (np.concatenate([dense[:, :-1].ravel(), dense[:-1, :].ravel()]),
            np.concatenate([dense[:, 1:].ravel(), dense[1:, :].ravel()]))


def _pair_means(image: np.ndarray) -> np.ndarray:
    """The mean of the two pixels of every pair of :func:`_neighbour_pairs`, in its order: (P,)."""
    return np.concatenate([(image[:, :-1] + image[:, 1:]).ravel(), (image[:-1, :] + image[1:, :]).ravel()]) / 2
