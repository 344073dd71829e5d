"""Learned edge costs for the superpixel graph: how likely each edge is a true cell boundary.

Plain functions over numpy arrays, the way :mod:`segment` builds its graph:

* :func:`edge_features`: per edge of the region adjacency graph, statistics of the
  boundary map ``1 - prob`` along it (raw and smoothed) and of the two regions it joins;
* :func:`edge_targets`: per edge, whether the ground truth puts its two regions in
  different cells (1 = cut) and whether it can tell (both regions inside some cell);
* :class:`EdgeCostModel`: a logistic regression of the cut probability on the
  standardised features, fitted with SciPy's L-BFGS and kept as plain numbers (JSON,
  no pickle), so a parameters file can be read and trusted.

The model is meant to be fitted on slices whose maps come from a network that did not
train on them (the selection slices): maps of training slices are cleaner than those
the model will meet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["FEATURE_NAMES", "SMOOTHING_SIGMA", "edge_features", "edge_targets", "EdgeCostModel"]

SMOOTHING_SIGMA = 2.0  # px, the Gaussian of the smoothed boundary map's features
_STATISTICS = ("mean", "median", "std", "min", "max", "p5", "p10", "p25", "p75", "p90", "p95")
FEATURE_NAMES: tuple[str, ...] = (
    tuple(f"boundary_{name}" for name in _STATISTICS) + ("log_length",)
    + tuple(f"smoothed_boundary_{name}" for name in _STATISTICS)
    + ("log_smaller_area", "log_larger_area", "lower_region_mean_prob", "higher_region_mean_prob",
       "log_length_over_sqrt_smaller_area")
)


def edge_features(prob: np.ndarray, regions: np.ndarray, rag) -> np.ndarray:
    """Features (E, len(FEATURE_NAMES)) float64 of the ``rag`` edges.

    ``prob``: probability map (H, W) float32, high = cell; ``regions``: superpixels
    (H, W) uint32 with ids 0..N-1, the ones ``rag`` (bioimage_cpp region adjacency
    graph, N nodes, E edges) was built from. Lengths are in pixel pairs, areas in pixels.
    """
    import bioimage_cpp as bic

    boundary = (1.0 - np.asarray(prob, dtype=np.float32)).astype(np.float32)
    smoothed = ndimage.gaussian_filter(boundary, SMOOTHING_SIGMA).astype(np.float32)
    raw = np.asarray(bic.graph.features.edge_map_features_complex(rag, regions, boundary, number_of_threads=1),
                     dtype=np.float64)
    smooth = np.asarray(bic.graph.features.edge_map_features_complex(rag, regions, smoothed, number_of_threads=1),
                        dtype=np.float64)[:, :-1]  # its length column repeats raw's
    nodes = np.arange(rag.number_of_nodes)
    area = np.bincount(regions.ravel(), minlength=rag.number_of_nodes).astype(np.float64)
    mean_prob = np.asarray(ndimage.mean(prob, regions, nodes), dtype=np.float64)
    uv = np.asarray(rag.uv_ids(), dtype=np.int64).reshape(-1, 2)
    smaller, larger = np.minimum(area[uv[:, 0]], area[uv[:, 1]]), np.maximum(area[uv[:, 0]], area[uv[:, 1]])
    lower = np.minimum(mean_prob[uv[:, 0]], mean_prob[uv[:, 1]])
    higher = np.maximum(mean_prob[uv[:, 0]], mean_prob[uv[:, 1]])
    length = raw[:, -1]
    regions_part = np.stack([np.log(smaller), np.log(larger), lower, higher, np.log(length / np.sqrt(smaller))], 1)
    return np.concatenate([raw[:, :-1], np.log(length)[:, None], smooth, regions_part], axis=1)


def edge_targets(regions: np.ndarray, rag, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cut (E,) bool, known (E,) bool) for the ``rag`` edges against ground truth ``labels``
    (H, W), 0 = membrane, cells = 4-connected non-zero components. Each region takes the
    cell most of its non-membrane pixels lie in; an edge is known when both its regions
    have one, and cut when they differ."""
    import bioimage_cpp as bic

    cells, _ = ndimage.label(np.asarray(labels) > 0, structure=ndimage.generate_binary_structure(2, 1))
    node_cell = np.asarray(bic.graph.features.accumulate_labels(
        rag, regions.astype(np.uint32, copy=False), cells.astype(np.uint32), ignore_value=0, number_of_threads=1),
        dtype=np.int64)
    uv = np.asarray(rag.uv_ids(), dtype=np.int64).reshape(-1, 2)
    u, v = node_cell[uv[:, 0]], node_cell[uv[:, 1]]
    return u != v, (u != 0) & (v != 0)


@dataclass(frozen=True)
class EdgeCostModel:
    """Logistic regression P(cut | features) = sigmoid(((x - mean) / scale) . weights + bias).

    ``mean``, ``scale`` and ``weights`` have one entry per name in ``features``.
    ``map_quantiles``: the quantiles of the maps it was fitted on
    (:func:`isbi_unet.cells.calibration.map_quantiles`), None when not recorded.
    """

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    map_quantiles: tuple[float, ...] | None = None

    @classmethod
    def fit(cls, features: np.ndarray, cut: np.ndarray, l2: float = 1.0,
            names: Sequence[str] = FEATURE_NAMES) -> EdgeCostModel:
        """Fit on ``features`` (E, F) and ``cut`` (E,) bool, minimising the summed log loss
        plus ``l2`` / 2 times the squared weights (the bias is not penalised; scikit-learn's
        ``LogisticRegression(C=1 / l2)`` objective). ValueError when both classes are not present."""
        from scipy.optimize import minimize
        from scipy.special import expit, log_expit

        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(cut, dtype=bool)
        if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != len(names):
            raise ValueError(f"expected features (E, {len(names)}) and cut (E,), got {x.shape} and {y.shape}")
        if y.all() or not y.any():
            raise ValueError("the edges to fit on are all cut or all merged: give slices with several cells")
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale == 0] = 1.0
        z = (x - mean) / scale
        sign = np.where(y, 1.0, -1.0)

        def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:-1], theta[-1]
            margin = sign * (z @ w + b)
            loss = -log_expit(margin).sum() + 0.5 * l2 * w @ w
            residual = -sign * expit(-margin)
            return loss, np.append(z.T @ residual + l2 * w, residual.sum())

        result = minimize(loss_and_gradient, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B",
                          options={"maxiter": 1000})
        return cls(tuple(names), tuple(mean.tolist()), tuple(scale.tolist()), tuple(result.x[:-1].tolist()),
                   float(result.x[-1]))

    def cut_probability(self, features: np.ndarray) -> np.ndarray:
        """P(cut) (E,) float64 of ``features`` (E, F)."""
        from scipy.special import expit

        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.weights):
            raise ValueError(f"expected features (E, {len(self.weights)}), got {x.shape}")
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return expit(z @ np.asarray(self.weights) + self.bias)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {"features", "mean", "scale", "weights", "bias"} and "map_quantiles" when recorded."""
        data = {"features": list(self.features), "mean": list(self.mean), "scale": list(self.scale),
                "weights": list(self.weights), "bias": self.bias}
        if self.map_quantiles is not None:
            data["map_quantiles"] = list(self.map_quantiles)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EdgeCostModel:
        """The model of :meth:`to_dict`; ValueError when it is malformed or its features are
        not this version's :data:`FEATURE_NAMES`."""
        if not isinstance(data, Mapping):
            raise ValueError("the edge model must be a JSON object")
        try:
            quantiles = data.get("map_quantiles")
            model = cls(tuple(data["features"]), tuple(float(v) for v in data["mean"]),
                        tuple(float(v) for v in data["scale"]), tuple(float(v) for v in data["weights"]),
                        float(data["bias"]), None if quantiles is None else tuple(float(v) for v in quantiles))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed edge model: {exc}") from exc
        if model.features != FEATURE_NAMES:
            raise ValueError("the edge model was fitted on other features than this version computes; fit it again")
        values = np.array(model.mean + model.scale + model.weights + (model.bias,))
        if not (len(model.mean) == len(model.scale) == len(model.weights) == len(FEATURE_NAMES)
                and np.isfinite(values).all() and min(model.scale) > 0):
            raise ValueError("malformed edge model: lengths differ, or a value is not finite, or a scale is not positive")
        quantiles = np.asarray(model.map_quantiles or (0.0, 1.0))
        if not (np.isfinite(quantiles).all() and quantiles.min() >= 0 and quantiles.max() <= 1
                and (np.diff(quantiles) >= 0).all()):
            raise ValueError("malformed edge model: its map quantiles must rise within [0, 1]")
        return model
