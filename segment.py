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
  :class:`edge_costs.EdgeCostModel` (a logistic regression of boundary statistics along
  the edge) instead of its mean boundary probability. :func:`fit_edge_model` fits it on
  labelled slices; :func:`select_parameters` does so on the selection slices.

The graph methods use ``bioimage_cpp`` (the C++ back end of python-elf, installed on
its own from its pip wheel). Each method has defaults in :data:`DEFAULT_PARAMETERS`
and a search grid in :data:`DEFAULT_GRIDS`; :func:`select_parameters` picks them by
V_rand on selection slices, so that test slices choose nothing. The learned multicut's
grid holds one beta, 0.5: its cut probabilities are fitted to the selection slices, so
even odds (cost 0) is where it cuts, and nothing is chosen beyond the fit.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "METHODS",
    "DEFAULT_PARAMETERS",
    "DEFAULT_GRIDS",
    "threshold",
    "watershed",
    "superpixels",
    "multicut",
    "gasp",
    "learned_multicut",
    "fit_edge_model",
    "describe_parameters",
    "require_edge_model",
    "segment",
    "check_parameters",
    "select_parameters",
    "save_parameters",
    "load_parameters",
]

_FOUR = ndimage.generate_binary_structure(2, 1)

DEFAULT_PARAMETERS: dict[str, dict[str, Any]] = {
    "threshold": {"threshold": 0.5},
    "watershed": {"threshold": 0.5, "sigma": 2.0, "min_distance": 5},
    "multicut": {"threshold": 0.5, "sigma": 1.0, "min_distance": 2, "beta": 0.5},
    "gasp": {"threshold": 0.5, "sigma": 1.0, "min_distance": 2, "bias": 0.5},
    "learned-multicut": {"threshold": 0.5, "sigma": 1.0, "min_distance": 2, "beta": 0.5, "edge_model": None},
}
LEARNED_METHODS: tuple[str, ...] = ("learned-multicut",)  # their "edge_model" is fitted, not searched
METHODS: tuple[str, ...] = tuple(DEFAULT_PARAMETERS)

DEFAULT_GRIDS: dict[str, dict[str, list[float]]] = {
    "threshold": {"threshold": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]},
    "watershed": {"threshold": [0.2, 0.4, 0.6], "sigma": [2.0, 4.0, 8.0], "min_distance": [5, 10, 20]},
    "multicut": {"beta": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]},
    "gasp": {"bias": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]},
    "learned-multicut": {"beta": [0.5]},
}

# parameter -> (lowest, highest, integer?) allowed
_RANGES: dict[str, tuple[float, float, bool]] = {
    "threshold": (0.0, 1.0, False),
    "sigma": (0.0, 100.0, False),
    "min_distance": (1, 1000, True),
    "beta": (1e-6, 1.0 - 1e-6, False),
    "bias": (0.0, 1.0, False),
}


def _as_map(prob: np.ndarray) -> np.ndarray:
    arr = np.asarray(prob, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D probability map, got shape {arr.shape}")
    return arr


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Ids made consecutive 1..K (0 stays 0), as uint32 (H, W)."""
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels.astype(np.uint32, copy=False))[0]


def _above(prob: np.ndarray, threshold: float) -> np.ndarray:
    """``prob > threshold`` as Fiji compares: each float32 pixel against the threshold as a
    double (NumPy would compare in float32, and the 8-bit level 204, float32(204/255) =
    0.80000001, would not exceed 0.8). Boolean (H, W)."""
    return np.asarray(prob).astype(np.float64) > float(threshold)


def threshold(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """4-connected components of ``prob > threshold`` (compared as the official metric
    does): uint32 (H, W), 0 elsewhere."""
    labels, _ = ndimage.label(_above(_as_map(prob), threshold), structure=_FOUR)
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

    p = _as_map(prob)
    markers = _seeds(p, threshold, sigma, min_distance)
    if not markers.any():  # no cell interior at all: one region
        return np.ones(p.shape, dtype=np.uint32)
    return skimage_watershed(1.0 - p, markers, connectivity=1).astype(np.uint32)


def watershed(prob: np.ndarray, threshold: float = 0.5, sigma: float = 2.0, min_distance: int = 5) -> np.ndarray:
    """Seeded watershed of the boundary map ``1 - prob``: uint32 (H, W), 0 on 1-pixel boundaries.

    Seeds are the maxima of the distance transform of ``prob > threshold`` smoothed by
    a Gaussian of ``sigma`` px, at least ``min_distance`` px apart (see :func:`superpixels`).
    """
    return _with_boundaries(superpixels(prob, threshold, sigma, min_distance))


def _with_boundaries(labels: np.ndarray) -> np.ndarray:
    """A dense label image (H, W) with 1-pixel boundaries set to 0: a pixel whose right or
    lower neighbour has another label becomes 0. Returns uint32, ids 1..K."""
    out = labels.astype(np.uint32, copy=True)
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    out[edge] = 0
    return _relabel(out)


def _superpixel_graph(prob: np.ndarray, threshold: float, sigma: float, min_distance: int):
    """Superpixels (H, W) uint32 with node ids 0..N-1 and their region adjacency graph (bioimage_cpp)."""
    import bioimage_cpp as bic

    regions = superpixels(prob, threshold, sigma, min_distance) - 1
    return regions, bic.graph.region_adjacency_graph(regions, number_of_threads=1)


def _region_graph(prob: np.ndarray, threshold: float, sigma: float, min_distance: int):
    """Superpixels (H, W) uint32, their region adjacency graph (bioimage_cpp), each edge's
    mean boundary probability ``1 - prob`` and its length in pixel pairs (float64 (E,))."""
    import bioimage_cpp as bic

    regions, rag = _superpixel_graph(prob, threshold, sigma, min_distance)
    features = bic.graph.features.edge_map_features(rag, regions, (1.0 - _as_map(prob)).astype(np.float32),
                                                    number_of_threads=1)
    return regions, rag, np.asarray(features[:, 0], np.float64), np.asarray(features[:, 1], np.float64)


def _graph_labels(regions: np.ndarray, rag, node_labels: np.ndarray) -> np.ndarray:
    """Project node labels onto the superpixels and draw 1-pixel boundaries: uint32 (H, W)."""
    return _with_boundaries(np.asarray(node_labels, dtype=np.int64)[regions] + 1)


def multicut(prob: np.ndarray, threshold: float = 0.5, sigma: float = 1.0, min_distance: int = 2,
             beta: float = 0.5) -> np.ndarray:
    """Multicut of watershed superpixels: uint32 (H, W), 0 on 1-pixel boundaries.

    Edge costs are python-elf's: ``log((1 - q) / q) + log((1 - beta) / beta)`` with q the
    edge's mean boundary probability squeezed into [0.001, 0.999], times the edge's
    length over the longest edge's; higher ``beta`` cuts more. Solved by greedy
    additive edge contraction followed by Kernighan-Lin.
    """
    regions, rag, mean, size = _region_graph(prob, threshold, sigma, min_distance)
    return _solve_multicut(regions, rag, mean, size, beta)


def learned_multicut(prob: np.ndarray, threshold: float = 0.5, sigma: float = 1.0, min_distance: int = 2,
                     beta: float = 0.5, edge_model: Mapping[str, Any] | None = None) -> np.ndarray:
    """:func:`multicut` with q = each edge's cut probability from ``edge_model`` (an
    :class:`edge_costs.EdgeCostModel` as its ``to_dict``, from :func:`fit_edge_model`):
    uint32 (H, W), 0 on 1-pixel boundaries. ValueError without a model."""
    from edge_costs import EdgeCostModel, edge_features

    require_edge_model("learned-multicut", {"edge_model": edge_model})
    model = EdgeCostModel.from_dict(edge_model)
    p = _as_map(prob)
    regions, rag, _, size = _region_graph(p, threshold, sigma, min_distance)
    if rag.number_of_edges == 0:
        return _relabel(regions + 1)
    return _solve_multicut(regions, rag, model.cut_probability(edge_features(p, regions, rag)), size, beta)


def _solve_multicut(regions: np.ndarray, rag, cut_probability: np.ndarray, size: np.ndarray,
                    beta: float) -> np.ndarray:
    """Greedy additive contraction then Kernighan-Lin on costs from ``cut_probability``
    (E,) and edge ``size`` (E,) pixel pairs (see :func:`multicut`): uint32 (H, W)."""
    import bioimage_cpp as bic

    if rag.number_of_edges == 0:
        return _relabel(regions + 1)
    q = 0.998 * np.asarray(cut_probability, dtype=np.float64) + 0.001
    costs = (np.log((1.0 - q) / q) + np.log((1.0 - beta) / beta)) * (size / size.max())
    graph = bic.graph.UndirectedGraph.from_edges(rag.number_of_nodes, np.asarray(rag.uv_ids(), dtype=np.uint64))
    objective = bic.graph.multicut.MulticutObjective(graph, costs)
    solver = bic.graph.multicut.ChainedMulticutSolvers(
        [bic.graph.multicut.GreedyAdditiveMulticut(), bic.graph.multicut.KernighanLinMulticut()])
    return _graph_labels(regions, rag, solver.optimize(objective))


def gasp(prob: np.ndarray, threshold: float = 0.5, sigma: float = 1.0, min_distance: int = 2,
         bias: float = 0.5) -> np.ndarray:
    """GASP average-linkage agglomeration of watershed superpixels: uint32 (H, W), 0 on boundaries.

    Each edge's signed weight is ``bias - mean boundary probability`` (positive: merge),
    averaged over merged edges weighted by their length; agglomeration stops when the
    strongest remaining weight is repulsive. Higher ``bias`` merges more.
    """
    import bioimage_cpp as bic

    regions, rag, mean, size = _region_graph(prob, threshold, sigma, min_distance)
    if rag.number_of_edges == 0:
        return _relabel(regions + 1)
    policy = bic.graph.agglomeration.GaspClusterPolicy(num_clusters_stop=1, linkage="mean")
    return _graph_labels(regions, rag, policy.optimize(rag, bias - mean, edge_sizes=size))


def fit_edge_model(maps: Sequence[np.ndarray], labels: Sequence[np.ndarray], threshold: float = 0.5,
                   sigma: float = 1.0, min_distance: int = 2) -> dict[str, Any]:
    """An edge model (``EdgeCostModel.to_dict``) fitted on the superpixel graphs of ``maps``
    (H, W) float32 in [0, 1] against their ``labels`` (H, W), 0 = membrane. The maps should
    come from a network that did not train on these slices. ValueError when the slices
    give no edge between two cells and none inside one."""
    from edge_costs import EdgeCostModel, edge_features, edge_targets

    features, cuts = [], []
    for prob, label in zip(maps, labels):
        p = _as_map(prob)
        regions, rag = _superpixel_graph(p, threshold, sigma, min_distance)
        if rag.number_of_edges == 0:
            continue
        cut, known = edge_targets(regions, rag, label)
        features.append(edge_features(p, regions, rag)[known])
        cuts.append(cut[known])
    if not features:
        raise ValueError("no superpixel edges to fit the edge model on")
    return EdgeCostModel.fit(np.concatenate(features), np.concatenate(cuts)).to_dict()


def describe_parameters(parameters: Mapping[str, Any]) -> str:
    """``name=value, ...`` of a method's parameters; an edge model is named, not listed."""
    parts = []
    for key, value in parameters.items():
        if key == "edge_model":
            parts.append("edge_model=" + ("none" if value is None else
                                          f"logistic regression of {len(value['weights'])} edge features"))
        else:
            parts.append(f"{key}={value:g}")
    return ", ".join(parts)


_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "threshold": threshold, "watershed": watershed, "multicut": multicut, "gasp": gasp,
    "learned-multicut": learned_multicut,
}


def check_parameters(method: str, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The method's defaults updated with ``parameters``, checked; ValueError for an
    unknown method, an unknown parameter or a value out of its range."""
    if method not in _FUNCTIONS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    merged: dict[str, Any] = dict(DEFAULT_PARAMETERS[method])
    for key, value in (parameters or {}).items():
        if key not in merged:
            raise ValueError(f"method {method!r} has no parameter {key!r} (it has {', '.join(merged)})")
        if key == "edge_model":
            from edge_costs import EdgeCostModel

            merged[key] = None if value is None else EdgeCostModel.from_dict(value).to_dict()
            continue
        low, high, integer = _RANGES[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{method} parameter {key}={value!r} must be a number in [{low:g}, {high:g}]")
        if integer and value != int(value):
            raise ValueError(f"{method} parameter {key}={value!r} must be a whole number")
        merged[key] = int(value) if integer else float(value)
    return merged


def require_edge_model(method: str, parameters: Mapping[str, Any]) -> None:
    """ValueError when ``method`` is learned and ``parameters`` hold no edge model."""
    if method in LEARNED_METHODS and parameters.get("edge_model") is None:
        raise ValueError(f"{method} needs an edge model fitted on labelled slices: give --params with a run's "
                         "instance_parameters.json, or fit one with segment --fit-maps DIR --fit-labels DIR")


def segment(prob: np.ndarray, method: str = "watershed", parameters: Mapping[str, Any] | None = None) -> np.ndarray:
    """Label image (H, W) uint32 of ``prob`` (H, W) by ``method`` with ``parameters``
    (missing ones take the defaults of :data:`DEFAULT_PARAMETERS`)."""
    return _FUNCTIONS[method](prob, **check_parameters(method, parameters))


def select_parameters(
    method: str,
    maps: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    grid: Mapping[str, Sequence[float]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Choose ``method``'s parameters by the mean V_rand on *selection* slices.

    ``maps``: probability maps (H, W) float32 in [0, 1]; ``labels``: their ground
    truth (H, W), 0 = membrane. ``grid`` maps parameter names to candidate values
    (default :data:`DEFAULT_GRIDS`); every combination is tried, the first best wins.
    ``progress(done, total)`` is called after each combination. Returns a JSON-ready
    dict: ``method``, ``parameters`` (the chosen ones), ``v_rand``/``v_info`` of that
    choice on these slices, ``n_slices`` and ``trials`` (every combination's scores).
    A learned method first fits its edge model on the same slices (:func:`fit_edge_model`,
    with the default superpixel parameters); the trials do not repeat the model.
    """
    from isbi_metric import segmentation_scores

    grid = dict(DEFAULT_GRIDS[method] if grid is None else grid)
    keys = list(grid)
    combos = list(itertools.product(*(grid[key] for key in keys)))
    maps, labels = list(maps), list(labels)
    if not maps or not combos:
        raise ValueError("nothing to select from: no slices or an empty grid")
    fitted: dict[str, Any] = {}
    if method in LEARNED_METHODS:
        superpixel_keys = ("threshold", "sigma", "min_distance")
        if set(keys) & set(superpixel_keys):
            raise ValueError(f"{method}: the grid may not vary the superpixels its edge model is fitted on")
        fitted["edge_model"] = fit_edge_model(maps, labels, **{k: DEFAULT_PARAMETERS[method][k] for k in superpixel_keys})
    trials, best = [], None
    for done, values in enumerate(combos, start=1):
        params = check_parameters(method, {**fitted, **dict(zip(keys, values))})
        scores = segmentation_scores([segment(p, method, params) for p in maps], labels)
        trials.append({"parameters": {k: v for k, v in params.items() if k != "edge_model"}, "v_rand": scores["v_rand"], "v_info": scores["v_info"]})
        if best is None or (scores["v_rand"] or 0.0) > (best["v_rand"] or 0.0):
            best = trials[-1]
        if progress is not None:
            progress(done, len(combos))
    return {"method": method, "parameters": {**best["parameters"], **fitted}, "v_rand": best["v_rand"],
            "v_info": best["v_info"], "n_slices": len(maps), "trials": trials}


def save_parameters(selection: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write a selection (or ``{"method": ..., "parameters": ...}``) as JSON to ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(dict(selection), indent=2) + "\n", encoding="utf-8")


def load_parameters(path: str | os.PathLike, method: str) -> dict[str, Any]:
    """Parameters for ``method`` from a JSON file written by :func:`save_parameters`
    (its ``method`` must match) or holding a plain ``{"name": value}`` dict. ValueError
    for a file of another method or bad values; OSError when it cannot be read."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    if "parameters" in data:
        if data.get("method", method) != method:
            raise ValueError(f"the parameters are for method {data['method']!r}, not {method!r}")
        data = data["parameters"]
    return check_parameters(method, data)
