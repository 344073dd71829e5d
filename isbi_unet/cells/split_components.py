"""Components of a membrane map, split only where a multicut cuts along membrane.

Connected components of ``prob > threshold`` (the ISBI metric's own reading of a map)
merge two cells wherever their membrane has a gap. Multicut closes such gaps, but where
maps are clean it also cuts cells along faint structure inside them. :func:`split_components`
keeps the components and splits one only along those of the multicut's cuts that lie on
the map's membrane for at least ``membrane_fraction`` of their length: a gap closed, not a
cell cut. Membrane is ``prob <= threshold`` in 8-connected pieces of at least
``membrane_area`` pixels: the membranes' network, not the dark specks inside cells that
weak maps have. Two components are never joined, except a segment smaller than
``min_size`` pixels, which joins a neighbour across a faint boundary, and a segment
enclosed by a single other one, across a faint boundary too
(:func:`isbi_unet.cells.segments.absorb_small`, :func:`isbi_unet.cells.segments.merge_enclosed`).
How faint is read on the map's ranks (:func:`isbi_unet.cells.calibration.map_ranks`): the
pixels along the boundary rank, on average, at least ``faint_boundary`` (``enclosed_boundary``)
times as high as the threshold does, i.e. as the share of the pixels at or below it; like
the components, this does not depend on the map's calibration. Neither do the multicut's
costs, read on the map's ranks with the threshold at 0.5
(:func:`isbi_unet.cells.calibration.relative_map`).
On weak maps small segments are mostly pieces of a cell cut off by faint false membrane,
and enclosed ones organelles; on clean maps they are cells, bounded by membrane as deep as
any.

The threshold is read from the maps themselves when not given
(:func:`isbi_unet.cells.calibration.label_free_threshold`: Otsu's, kept where a share of
25-45 % of the pixels lies at or below it), so that a map's calibration can move it only
within those bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from isbi_unet.cells.calibration import label_free_threshold, map_ranks, relative_map
from isbi_unet.cells.methods import as_map, multicut_nodes, region_graph
from isbi_unet.cells.methods import threshold as components
from isbi_unet.cells.segments import absorb_small, merge_enclosed, with_boundaries

__all__ = ["split_components", "map_threshold", "membrane", "ComponentGraph", "component_graph", "split"]


def map_threshold(prob: np.ndarray) -> float:
    """The label-free threshold of one map (H, W) in [0, 1], as of a folder of one."""
    return label_free_threshold([prob])


def membrane(prob: np.ndarray, threshold: float, min_area: int) -> np.ndarray:
    """Pixels of ``prob`` (H, W) ``<= threshold`` (as the metric compares) in 8-connected
    pieces of at least ``min_area`` pixels: bool (H, W)."""
    from scipy import ndimage

    pieces, _ = ndimage.label(~components(prob, threshold).astype(bool), structure=np.ones((3, 3), bool))
    area = np.bincount(pieces.ravel())
    area[0] = 0
    return (area >= min_area)[pieces]


@dataclass(frozen=True)
class ComponentGraph:
    """The superpixel graph of one map at one threshold, with what :func:`split` needs.

    ``prob`` (H, W) float32 and ``threshold``; ``regions`` (H, W) superpixel ids 0..N-1
    and their region adjacency graph ``rag`` (bioimage_cpp); ``uv`` (E, 2) its edges;
    ``size`` (E,) their lengths in pixel pairs; ``component`` (N,) each superpixel's
    component of ``prob > threshold`` (0: none); ``segment`` (N,) its multicut segment.
    """

    prob: np.ndarray
    threshold: float
    regions: np.ndarray
    rag: Any
    uv: np.ndarray
    size: np.ndarray
    component: np.ndarray
    segment: np.ndarray


def component_graph(prob: np.ndarray, threshold: float | None = None, sigma: float = 1.0, min_distance: int = 2,
                    beta: float = 0.15, cost_map: str = "ranks") -> ComponentGraph | None:
    """Steps 1-3 of :func:`split_components` on ``prob`` (H, W) in [0, 1]; None when the
    superpixels have no edge (one region). The multicut's costs come from
    :func:`isbi_unet.cells.calibration.relative_map` of ``prob`` read as ``cost_map``."""
    import bioimage_cpp as bic

    p = as_map(prob)
    t = map_threshold(p) if threshold is None else float(threshold)
    regions, rag, mean_boundary, size = region_graph(p, t, sigma, min_distance, relative_map(p, t, cost_map))
    if rag.number_of_edges == 0:
        return None
    component = np.asarray(bic.graph.features.accumulate_labels(
        rag, regions, components(p, t), ignore_value=0, number_of_threads=1), dtype=np.int64)
    return ComponentGraph(p, t, regions, rag, np.asarray(rag.uv_ids(), dtype=np.int64).reshape(-1, 2), size,
                          component, multicut_nodes(rag, mean_boundary, size, beta))


def split(graph: ComponentGraph, membrane_fraction: float = 0.95, membrane_area: int = 1000,
          min_size: int = 300, faint_boundary: float = 0.25, enclosed_boundary: float = 0.5,
          boundary_levels: str = "ranks") -> np.ndarray:
    """Steps 4-5 of :func:`split_components` on a :func:`component_graph`: uint32 (H, W).
    ``boundary_levels`` "threshold" reads how faint a boundary is on the map itself, as
    ``faint_boundary`` (``enclosed_boundary``) times the threshold, as ``split-components``
    did before it read ranks (the earlier candidates of ``benchmarks/cell_choice.py``)."""
    import bioimage_cpp as bic
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    uv, component, segment, size = graph.uv, graph.component, graph.segment, graph.size
    on_membrane = np.asarray(bic.graph.features.edge_map_features(
        graph.rag, graph.regions, membrane(graph.prob, graph.threshold, membrane_area).astype(np.float32),
        number_of_threads=1), dtype=np.float64)[:, 0]
    inside = (component[uv[:, 0]] == component[uv[:, 1]]) & (component[uv[:, 0]] != 0)
    a, b = segment[uv[:, 0]], segment[uv[:, 1]]
    join = inside & (a == b)
    cut = np.flatnonzero(inside & (a != b))
    if cut.size:  # the boundary between two multicut segments within one component, as a whole
        pair = np.unique(np.stack([component[uv[cut, 0]], np.minimum(a[cut], b[cut]), np.maximum(a[cut], b[cut])],
                                  axis=1), axis=0, return_inverse=True)[1].ravel()
        length = np.bincount(pair, weights=size[cut])
        share = np.bincount(pair, weights=on_membrane[cut] * size[cut]) / length
        join[cut] = share[pair] < membrane_fraction
    n = graph.rag.number_of_nodes
    joined = coo_matrix((np.ones(int(join.sum())), (uv[join, 0], uv[join, 1])), shape=(n, n))
    nodes = connected_components(joined, directed=False)[1]
    if boundary_levels == "ranks":
        levels, unit = map_ranks(graph.prob), float(np.count_nonzero(graph.prob <= graph.threshold)) / graph.prob.size
    elif boundary_levels == "threshold":
        levels, unit = graph.prob, graph.threshold
    else:
        raise ValueError(f"boundary_levels={boundary_levels!r}: choose 'ranks' or 'threshold'")
    dense = absorb_small(nodes[graph.regions].astype(np.int64) + 1, min_size, levels, faint_boundary * unit)
    return with_boundaries(merge_enclosed(dense, levels, enclosed_boundary * unit))


def split_components(prob: np.ndarray, threshold: float | None = None, sigma: float = 1.0, min_distance: int = 2,
                     beta: float = 0.15, membrane_fraction: float = 0.95, membrane_area: int = 1000,
                     min_size: int = 300, faint_boundary: float = 0.25, enclosed_boundary: float = 0.5,
                     cost_map: str = "ranks") -> np.ndarray:
    """Cells of ``prob`` (H, W) float32 in [0, 1], high = cell: uint32 (H, W), 0 on 1-pixel boundaries.

    1. components: 4-connected components of ``prob > threshold`` (None: :func:`map_threshold`);
    2. superpixels: the seeded watershed of :func:`isbi_unet.cells.methods.superpixels` at
       the same threshold (``sigma``, ``min_distance`` in px), each assigned to the
       component most of its pixels above the threshold lie in;
    3. the multicut of :func:`isbi_unet.cells.methods.multicut` (``beta``) on them, its
       costs read on :func:`isbi_unet.cells.calibration.relative_map` (``cost_map``; "ranks":
       the map's ranks with the threshold at 0.5, so that no calibration moves them);
    4. two superpixels of one component stay apart where the multicut separates them and the
       boundary between their two multicut segments inside that component lies on membrane
       (pixels ``<= threshold`` in 8-connected pieces of ``membrane_area`` px or more) for at
       least ``membrane_fraction`` of its length (in pixel pairs);
       superpixels of different components stay apart; the rest are joined;
    5. segments under ``min_size`` px join a neighbour across a boundary whose pixels' ranks
       in ``prob`` (:func:`isbi_unet.cells.calibration.map_ranks`) average at least
       ``faint_boundary`` times the threshold's (the share of pixels at or below it; 0: any
       boundary; :func:`isbi_unet.cells.segments.absorb_small`), and enclosed segments the one
       around them across a boundary whose ranks average at least ``enclosed_boundary`` times
       the threshold's (0: any boundary; :func:`isbi_unet.cells.segments.merge_enclosed`).
    """
    graph = component_graph(prob, threshold, sigma, min_distance, beta, cost_map)
    if graph is None:
        return with_boundaries(np.ones(np.shape(prob), dtype=np.int64))
    return split(graph, membrane_fraction, membrane_area, min_size, faint_boundary, enclosed_boundary)
