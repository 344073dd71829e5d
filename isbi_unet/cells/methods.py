"""Instance segmentation of membrane probability maps: one integer label per cell, 0 on boundaries.

Plain functions over numpy arrays, each feeding the next. Every method takes a
probability map ``prob`` (H, W) float32 in [0, 1], high = cell interior, and returns
a label image (H, W) uint32: segments 1..K, 0 on the boundary pixels.

* :func:`threshold`: 4-connected components of ``prob > threshold`` (what the ISBI
  metric does at one threshold; the baseline);
* :func:`watershed`: seeded watershed of the boundary map ``1 - prob``, seeds at the
  maxima of the smoothed distance transform of ``prob > threshold``, 1-pixel lines;
* :func:`multicut`: watershed superpixels -> region adjacency graph -> multicut
  (greedy additive edge contraction, then Kernighan-Lin) with costs from each edge's
  mean boundary probability, weighted by edge length;
* :func:`gasp`: the same graph, GASP average-linkage agglomeration of signed edge
  weights ``bias - mean boundary probability``, weighted by edge length;
* :func:`learned_multicut`: the multicut with each edge's cut probability from an
  :class:`isbi_unet.cells.edge_costs.EdgeCostModel` (a logistic regression of boundary statistics along
  the edge) instead of its mean boundary probability. :func:`fit_edge_model` fits it on
  labelled slices; :func:`select_parameters` does so on the selection slices.

The graph methods merge every segment enclosed by a single other one into it
(:func:`merge_enclosed`: organelles are not cells); the learned multicut merges it only
across a faint boundary, and also lets segments under ``min_size`` px join a neighbour
across a faint boundary (:func:`absorb_small`). The graph methods use ``bioimage_cpp`` (the C++ back end of
python-elf, installed on its own from its pip wheel). Each method has defaults in :data:`DEFAULT_PARAMETERS`
and a search grid in :data:`DEFAULT_GRIDS`; :func:`select_parameters` picks them by
V_rand on selection slices, so that test slices choose nothing. The learned multicut's
grid holds one beta, 0.5: its cut probabilities are fitted to the selection slices, so
even odds (cost 0) is where it cuts, and nothing is chosen beyond the fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from isbi_unet.cells.segments import absorb_small, merge_enclosed, relabel, with_boundaries

_FOUR = ndimage.generate_binary_structure(2, 1)


LEARNED_METHODS: tuple[str, ...] = ("learned-multicut",)  # their "edge_model" is fitted, not searched


def require_edge_model(method: str, parameters: Mapping[str, Any]) -> None:
    """ValueError when ``method`` is learned and ``parameters`` hold no edge model."""
    if method in LEARNED_METHODS and parameters.get("edge_model") is None:
        raise ValueError(f"{method} needs an edge model fitted on labelled slices: give --params with a run's "
                         "instance_parameters.json, or fit one with segment --fit-maps DIR --fit-labels DIR")


def as_map(prob: np.ndarray) -> np.ndarray:
    arr = np.asarray(prob, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D probability map, got shape {arr.shape}")
    return arr


def _above(prob: np.ndarray, threshold: float) -> np.ndarray:
    """``prob > threshold`` as Fiji compares: each float32 pixel against the threshold as a
    double (NumPy would compare in float32, and the 8-bit level 204, float32(204/255) =
    0.80000001, would not exceed 0.8). Boolean (H, W)."""
    return np.asarray(prob).astype(np.float64) > float(threshold)


def threshold(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """4-connected components of ``prob > threshold`` (compared as the official metric
    does): uint32 (H, W), 0 elsewhere."""
    labels, _ = ndimage.label(_above(as_map(prob), threshold), structure=_FOUR)
    return labels.astype(np.uint32)


def _seeds(prob: np.ndarray, threshold: float, sigma: float, min_distance: int) -> np.ndarray:
    """Seed markers (H, W) int32: maxima of the Gaussian-smoothed (``sigma`` px) distance
    transform of ``prob > threshold`` over a (2 ``min_distance`` + 1)-px square window,
    one marker per connected plateau of maxima, and the deepest pixel of every
    4-connected component of the mask that has no such maximum."""
    mask = _above(prob, threshold)
    distance = ndimage.distance_transform_edt(mask).astype(np.float32)
    if sigma > 0:
        distance = ndimage.gaussian_filter(distance, sigma)
    size = 2 * int(min_distance) + 1
    peaks = mask & (distance >= ndimage.maximum_filter(distance, size=size, mode="nearest"))
    markers, count = ndimage.label(peaks, structure=np.ones((3, 3), bool))
    components, n_components = ndimage.label(mask, structure=_FOUR)
    seeded = np.zeros(n_components + 1, dtype=bool)
    seeded[components[peaks]] = True
    unseeded = np.flatnonzero(~seeded[1:]) + 1
    if unseeded.size:
        positions = ndimage.maximum_position(distance, components, unseeded)
        rows, cols = np.array(positions, dtype=np.int64).reshape(-1, 2).T
        markers[rows, cols] = count + np.arange(1, unseeded.size + 1)
    return markers.astype(np.int32, copy=False)


def superpixels(prob: np.ndarray, threshold: float = 0.5, sigma: float = 1.0, min_distance: int = 2) -> np.ndarray:
    """Seeded watershed (scikit-image, 4-connected) of ``1 - prob`` from :func:`_seeds`:
    uint32 (H, W), every pixel in a region 1..K, no boundary pixels."""
    from skimage.segmentation import watershed as skimage_watershed

    p = as_map(prob)
    markers = _seeds(p, threshold, sigma, min_distance)
    if not markers.any():  # no cell interior at all: one region
        return np.ones(p.shape, dtype=np.uint32)
    return skimage_watershed(1.0 - p, markers, connectivity=1).astype(np.uint32)


def watershed(prob: np.ndarray, threshold: float = 0.5, sigma: float = 2.0, min_distance: int = 5) -> np.ndarray:
    """Seeded watershed of the boundary map ``1 - prob``: uint32 (H, W), 0 on 1-pixel boundaries.

    Seeds are the maxima of the distance transform of ``prob > threshold`` smoothed by
    a Gaussian of ``sigma`` px, at least ``min_distance`` px apart (see :func:`superpixels`).
    """
    return with_boundaries(superpixels(prob, threshold, sigma, min_distance))


def superpixel_graph(prob: np.ndarray, threshold: float, sigma: float, min_distance: int):
    """Superpixels (H, W) uint32 with node ids 0..N-1 and their region adjacency graph (bioimage_cpp)."""
    import bioimage_cpp as bic

    regions = superpixels(prob, threshold, sigma, min_distance) - 1
    return regions, bic.graph.region_adjacency_graph(regions, number_of_threads=1)


def region_graph(prob: np.ndarray, threshold: float, sigma: float, min_distance: int,
                 costs_from: np.ndarray | None = None):
    """Superpixels (H, W) uint32 of ``prob``, their region adjacency graph (bioimage_cpp), each
    edge's mean boundary probability ``1 - prob`` (``1 - costs_from`` where given, a map (H, W)
    of the same pixels read otherwise) and its length in pixel pairs (float64 (E,))."""
    import bioimage_cpp as bic

    regions, rag = superpixel_graph(prob, threshold, sigma, min_distance)
    boundary = 1.0 - as_map(prob if costs_from is None else costs_from)
    features = bic.graph.features.edge_map_features(rag, regions, boundary.astype(np.float32),
                                                    number_of_threads=1)
    return regions, rag, np.asarray(features[:, 0], np.float64), np.asarray(features[:, 1], np.float64)


def _graph_labels(regions: np.ndarray, rag, node_labels: np.ndarray, min_size: int = 0,
                  prob: np.ndarray | None = None, least_boundary: float = 0.0,
                  least_enclosed_boundary: float = 0.0) -> np.ndarray:
    """Project node labels onto the superpixels, let segments under ``min_size`` px join a
    neighbour (:func:`absorb_small`; with ``prob``, across a boundary averaging at least
    ``least_boundary`` in it), merge enclosed segments (:func:`merge_enclosed`; with
    ``prob``, across a boundary averaging at least ``least_enclosed_boundary``) and draw
    1-pixel boundaries: uint32 (H, W)."""
    dense = np.asarray(node_labels, dtype=np.int64)[regions] + 1
    merged = absorb_small(dense, min_size, prob, least_boundary)
    return with_boundaries(merge_enclosed(merged, prob if least_enclosed_boundary > 0 else None, least_enclosed_boundary))


def multicut(prob: np.ndarray, threshold: float = 0.5, sigma: float = 1.0, min_distance: int = 2,
             beta: float = 0.5) -> np.ndarray:
    """Multicut of watershed superpixels: uint32 (H, W), 0 on 1-pixel boundaries.

    Edge costs are python-elf's: ``log((1 - q) / q) + log((1 - beta) / beta)`` with q the
    edge's mean boundary probability squeezed into [0.001, 0.999], times the edge's
    length over the longest edge's; higher ``beta`` cuts more. Solved by greedy
    additive edge contraction followed by Kernighan-Lin.
    """
    regions, rag, mean, size = region_graph(prob, threshold, sigma, min_distance)
    return _solve_multicut(regions, rag, mean, size, beta)


def learned_multicut(prob: np.ndarray, threshold: float = 0.5, sigma: float = 1.0, min_distance: int = 2,
                     beta: float = 0.5, edge_model: Mapping[str, Any] | None = None, min_size: int = 300,
                     faint_boundary: float = 0.25, enclosed_boundary: float = 0.25) -> np.ndarray:
    """:func:`multicut` with q = each edge's cut probability from ``edge_model`` (an
    :class:`isbi_unet.cells.edge_costs.EdgeCostModel` as its ``to_dict``, from :func:`fit_edge_model`),
    segments under ``min_size`` px joined to a neighbour across a boundary along which
    ``prob`` averages at least ``faint_boundary`` times ``threshold`` (:func:`absorb_small`),
    and enclosed segments the one around them across a boundary along which it averages at
    least ``enclosed_boundary`` times ``threshold`` (:func:`merge_enclosed`; 0: any boundary):
    uint32 (H, W), 0 on 1-pixel boundaries. ValueError without a model."""
    from isbi_unet.cells.edge_costs import EdgeCostModel, edge_features

    require_edge_model("learned-multicut", {"edge_model": edge_model})
    model = EdgeCostModel.from_dict(edge_model)
    p = as_map(prob)
    regions, rag, _, size = region_graph(p, threshold, sigma, min_distance)
    if rag.number_of_edges == 0:
        return relabel(regions + 1)
    return _solve_multicut(regions, rag, model.cut_probability(edge_features(p, regions, rag)), size, beta,
                           min_size, p, faint_boundary * threshold, enclosed_boundary * threshold)


def _solve_multicut(regions: np.ndarray, rag, cut_probability: np.ndarray, size: np.ndarray,
                    beta: float, min_size: int = 0, prob: np.ndarray | None = None,
                    least_boundary: float = 0.0, least_enclosed_boundary: float = 0.0) -> np.ndarray:
    """Greedy additive contraction then Kernighan-Lin on costs from ``cut_probability``
    (E,) and edge ``size`` (E,) pixel pairs (see :func:`multicut`): uint32 (H, W), through
    :func:`_graph_labels` with ``min_size``, ``prob``, ``least_boundary`` and
    ``least_enclosed_boundary``."""
    if rag.number_of_edges == 0:
        return relabel(regions + 1)
    return _graph_labels(regions, rag, multicut_nodes(rag, cut_probability, size, beta), min_size, prob,
                         least_boundary, least_enclosed_boundary)


def multicut_nodes(rag, cut_probability: np.ndarray, size: np.ndarray, beta: float) -> np.ndarray:
    """Segment id (N,) int64 of each of the ``rag``'s N nodes: greedy additive contraction
    then Kernighan-Lin on the costs of :func:`multicut` from each edge's ``cut_probability``
    (E,) and ``size`` (E,) in pixel pairs. The graph needs at least one edge."""
    import bioimage_cpp as bic

    q = 0.998 * np.asarray(cut_probability, dtype=np.float64) + 0.001
    costs = (np.log((1.0 - q) / q) + np.log((1.0 - beta) / beta)) * (size / size.max())
    graph = bic.graph.UndirectedGraph.from_edges(rag.number_of_nodes, np.asarray(rag.uv_ids(), dtype=np.uint64))
    objective = bic.graph.multicut.MulticutObjective(graph, costs)
    solver = bic.graph.multicut.ChainedMulticutSolvers(
        [bic.graph.multicut.GreedyAdditiveMulticut(), bic.graph.multicut.KernighanLinMulticut()])
    return np.asarray(solver.optimize(objective), dtype=np.int64)


def gasp(prob: np.ndarray, threshold: float = 0.5, sigma: float = 1.0, min_distance: int = 2,
         bias: float = 0.5) -> np.ndarray:
    """GASP average-linkage agglomeration of watershed superpixels: uint32 (H, W), 0 on boundaries.

    Each edge's signed weight is ``bias - mean boundary probability`` (positive: merge),
    averaged over merged edges weighted by their length; agglomeration stops when the
    strongest remaining weight is repulsive. Higher ``bias`` merges more.
    """
    import bioimage_cpp as bic

    regions, rag, mean, size = region_graph(prob, threshold, sigma, min_distance)
    if rag.number_of_edges == 0:
        return relabel(regions + 1)
    policy = bic.graph.agglomeration.GaspClusterPolicy(num_clusters_stop=1, linkage="mean")
    return _graph_labels(regions, rag, policy.optimize(rag, bias - mean, edge_sizes=size))
