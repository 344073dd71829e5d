"""Parameters of the cell methods: defaults, search grids, checks, choice on selection slices, JSON files.

:data:`DEFAULT_PARAMETERS` and :data:`DEFAULT_GRIDS` hold each method's defaults and
search grid; :func:`select_parameters` picks them by V_rand on selection slices (so that
test slices choose nothing) and fits the learned multicut's edge model there;
:func:`segment` runs a method by name. Maps are (H, W) float32 in [0, 1], high = cell.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from isbi_unet.cells.calibration import (
    MEMBRANE_SHARE,
    label_free_threshold,
    map_quantiles,
    unlike_reason,
)
from isbi_unet.cells.methods import (
    LEARNED_METHODS,
    as_map,
    gasp,
    learned_multicut,
    multicut,
    superpixel_graph,
    threshold,
    watershed,
)
from isbi_unet.cells.segments import with_boundaries
from isbi_unet.cells.split_components import split_components
from isbi_unet.io.images import write_text
from isbi_unet.prediction.pixel_size import ISBI_PIXEL_SIZE_NM

DEFAULT_PARAMETERS: dict[str, dict[str, Any]] = {
    "threshold": {"threshold": 0.5},
    "watershed": {"threshold": 0.5, "sigma": 2.0, "min_distance": 5},
    "multicut": {"threshold": 0.5, "sigma": 1.0, "min_distance": 2, "beta": 0.5},
    "gasp": {"threshold": 0.5, "sigma": 1.0, "min_distance": 2, "bias": 0.5},
    "learned-multicut": {"threshold": 0.5, "sigma": 1.0, "min_distance": 2, "beta": 0.5, "edge_model": None,
                         "min_size": 300, "faint_boundary": 0.25, "enclosed_boundary": 0.25},
    # threshold None: read from the maps at hand (resolve_threshold)
    "split-components": {"threshold": None, "sigma": 1.0, "min_distance": 2, "beta": 0.15,
                         "membrane_fraction": 0.95, "membrane_area": 1000, "min_size": 300, "faint_boundary": 0.25,
                         "enclosed_boundary": 0.5},
}

METHOD_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "threshold": threshold, "watershed": watershed, "multicut": multicut, "gasp": gasp,
    "learned-multicut": learned_multicut, "split-components": split_components,
}


METHODS: tuple[str, ...] = tuple(DEFAULT_PARAMETERS)


DEFAULT_GRIDS: dict[str, dict[str, list[float]]] = {
    "threshold": {"threshold": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]},
    "watershed": {"threshold": [0.2, 0.4, 0.6], "sigma": [2.0, 4.0, 8.0], "min_distance": [5, 10, 20]},
    "multicut": {"beta": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]},
    "gasp": {"bias": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]},
    "learned-multicut": {"beta": [0.5]},
    "split-components": {"membrane_fraction": [0.8, 0.9, 0.95], "min_size": [0, 300]},
}


# parameter -> (lowest, highest, integer?) allowed
_RANGES: dict[str, tuple[float, float, bool]] = {
    "threshold": (0.0, 1.0, False),
    "sigma": (0.0, 100.0, False),
    "min_distance": (1, 1000, True),
    "beta": (1e-6, 1.0 - 1e-6, False),
    "bias": (0.0, 1.0, False),
    "membrane_fraction": (0.0, 1.0, False),
    "membrane_area": (0, 10**9, True),
    "min_size": (0, 10**9, True),
    "faint_boundary": (0.0, 1.0, False),
    "enclosed_boundary": (0.0, 1.0, False),
}


def fit_edge_model(maps: Sequence[np.ndarray], labels: Sequence[np.ndarray], threshold: float = 0.5,
                   sigma: float = 1.0, min_distance: int = 2) -> dict[str, Any]:
    """An edge model (``EdgeCostModel.to_dict``) fitted on the superpixel graphs of ``maps``
    (H, W) float32 in [0, 1] against their ``labels`` (H, W), 0 = membrane. The maps should
    come from a network that did not train on these slices. ValueError when the slices
    give no edge between two cells and none inside one."""
    from isbi_unet.cells.edge_costs import EdgeCostModel, edge_features, edge_targets

    features, cuts = [], []
    for prob, label in zip(maps, labels):
        p = as_map(prob)
        regions, rag = superpixel_graph(p, threshold, sigma, min_distance)
        if rag.number_of_edges == 0:
            continue
        cut, known = edge_targets(regions, rag, label)
        features.append(edge_features(p, regions, rag)[known])
        cuts.append(cut[known])
    if not features:
        raise ValueError("no superpixel edges to fit the edge model on")
    model = EdgeCostModel.fit(np.concatenate(features), np.concatenate(cuts))
    return dataclasses.replace(model, map_quantiles=tuple(map_quantiles(maps))).to_dict()


# What a fitted edge model gives way to on maps unlike its own: split-components with its
# defaults, at the maps' label-free threshold (chosen on the selection slices of ISBI under
# the shifts of benchmarks/shifts.py, against components at that threshold; see docs/shifts.md).
FALLBACK_METHOD = "split-components"
# Methods whose threshold None means: read it from the maps at hand (resolve_threshold).
LABEL_FREE_THRESHOLD_METHODS: tuple[str, ...] = ("threshold", "split-components")


def resolve_threshold(method: str, parameters: Mapping[str, Any], maps: Sequence[np.ndarray],
                      membrane_share: float | tuple[float, float] = MEMBRANE_SHARE) -> dict[str, Any]:
    """``parameters`` with a threshold of None replaced by the label-free threshold of ``maps``
    (H, W) in [0, 1] (:func:`isbi_unet.cells.calibration.label_free_threshold` with
    ``membrane_share``), for the methods of :data:`LABEL_FREE_THRESHOLD_METHODS`;
    otherwise unchanged."""
    params = dict(parameters)
    if method in LABEL_FREE_THRESHOLD_METHODS and params.get("threshold") is None and len(maps):
        params["threshold"] = label_free_threshold(maps, membrane_share)
    return params


def method_for_maps(method: str, parameters: Mapping[str, Any], maps: Sequence[np.ndarray],
                    membrane_share: float | tuple[float, float] = MEMBRANE_SHARE
                    ) -> tuple[str, dict[str, Any], str | None]:
    """(method, parameters, reason) to run on ``maps`` (H, W) in [0, 1]: ``method`` with its
    checked ``parameters``, a threshold of None read from the maps (:func:`resolve_threshold`);
    or, for a learned method whose edge model recorded its maps' quantiles and ``maps`` are
    unlike them (:func:`isbi_unet.cells.calibration.unlike_reason`), :data:`FALLBACK_METHOD`
    with its defaults at the maps' label-free threshold, and the reason. ``membrane_share``: as in
    :func:`resolve_threshold`."""
    params = check_parameters(method, parameters)
    fitted = (params.get("edge_model") or {}).get("map_quantiles")
    reason = unlike_reason(fitted, maps) if method in LEARNED_METHODS and fitted else None
    if reason is not None:
        method, params = FALLBACK_METHOD, check_parameters(FALLBACK_METHOD, {"threshold": None})
    return method, resolve_threshold(method, params, maps, membrane_share), reason


def describe_parameters(parameters: Mapping[str, Any]) -> str:
    """``name=value, ...`` of a method's parameters; an edge model is named, not listed."""
    parts = []
    for key, value in parameters.items():
        if key == "edge_model":
            parts.append("edge_model=" + ("none" if value is None else
                                          f"logistic regression of {len(value['weights'])} edge features"))
        elif value is None:
            parts.append(f"{key}=from the maps")
        else:
            parts.append(f"{key}={value:g}")
    return ", ".join(parts)


def check_parameters(method: str, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The method's defaults updated with ``parameters``, checked; ValueError for an
    unknown method, an unknown parameter or a value out of its range."""
    if method not in METHOD_FUNCTIONS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    merged: dict[str, Any] = dict(DEFAULT_PARAMETERS[method])
    for key, value in (parameters or {}).items():
        if key not in merged:
            raise ValueError(f"method {method!r} has no parameter {key!r} (it has {', '.join(merged)})")
        if key == "edge_model":
            from isbi_unet.cells.edge_costs import EdgeCostModel

            merged[key] = None if value is None else EdgeCostModel.from_dict(value).to_dict()
            continue
        if value is None and key == "threshold" and method in LABEL_FREE_THRESHOLD_METHODS:
            merged[key] = None
            continue
        low, high, integer = _RANGES[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{method} parameter {key}={value!r} must be a number in [{low:g}, {high:g}]")
        if integer and value != int(value):
            raise ValueError(f"{method} parameter {key}={value!r} must be a whole number")
        merged[key] = int(value) if integer else float(value)
    return merged


def segment(prob: np.ndarray, method: str = "watershed", parameters: Mapping[str, Any] | None = None,
            pixel_size_nm: float | None = None) -> np.ndarray:
    """Label image (H, W) uint32 of ``prob`` (H, W) by ``method`` with ``parameters``
    (missing ones take the defaults of :data:`DEFAULT_PARAMETERS`; a threshold of None is
    this map's own, :func:`resolve_threshold`).

    ``pixel_size_nm``: the map's pixel size. Every parameter in pixels (and a fitted edge
    model's lengths and areas) holds at ISBI's 4 nm, so the map is resampled to 4 nm,
    segmented there, and its cells brought back to (H, W) by nearest neighbour with
    1-pixel boundaries drawn again. Components (``threshold``) have no length and ignore it.
    """
    params = resolve_threshold(method, check_parameters(method, parameters), [prob])
    scale = 1.0 if pixel_size_nm is None else pixel_size_nm / ISBI_PIXEL_SIZE_NM
    if method == "threshold" or abs(scale - 1.0) < 1e-9:
        return METHOD_FUNCTIONS[method](prob, **params)
    from skimage.segmentation import expand_labels
    from skimage.transform import resize

    height, width = np.shape(prob)
    inner = (max(1, round(height * scale)), max(1, round(width * scale)))
    fine = resize(as_map(prob), inner, order=1, mode="reflect", anti_aliasing=scale < 1, preserve_range=True)
    labels = METHOD_FUNCTIONS[method](fine.astype(np.float32), **params)
    back = resize(labels, (height, width), order=0, mode="edge", anti_aliasing=False, preserve_range=True)
    dense = expand_labels(back.astype(np.int64), distance=max(height, width))  # the boundaries, filled
    return with_boundaries(dense) if dense.max() > 0 else np.zeros((height, width), np.uint32)


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
    from isbi_unet.evaluation.metric import segmentation_scores

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
        resolved = resolve_threshold(method, params, maps)  # the record keeps None: read on each folder
        scores = segmentation_scores([segment(p, method, resolved) for p in maps], labels)
        trials.append({"parameters": {k: v for k, v in params.items() if k != "edge_model"}, "v_rand": scores["v_rand"], "v_info": scores["v_info"]})
        if best is None or (scores["v_rand"] or 0.0) > (best["v_rand"] or 0.0):
            best = trials[-1]
        if progress is not None:
            progress(done, len(combos))
    return {"method": method, "parameters": {**best["parameters"], **fitted}, "v_rand": best["v_rand"],
            "v_info": best["v_info"], "n_slices": len(maps), "trials": trials}


def save_parameters(selection: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write a selection (or ``{"method": ..., "parameters": ...}``) as JSON to ``path``."""
    write_text(path, json.dumps(dict(selection), indent=2) + "\n")


def load_parameters(path: str | os.PathLike, method: str) -> dict[str, Any]:
    """Parameters for ``method`` from a JSON file written by :func:`save_parameters`
    (its ``method`` must match) or holding a plain ``{"name": value}`` dict. ValueError
    for a file of another method or bad values; OSError when it cannot be read."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:  # not UTF-8, or not JSON
        raise ValueError("not a JSON file of cell parameters, such as a run's "
                         f"instance_parameters.json ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    if "parameters" in data:
        if data.get("method", method) != method:
            raise ValueError(f"the parameters are for method {data['method']!r}, not {method!r}")
        data = data["parameters"]
    return check_parameters(method, data)
