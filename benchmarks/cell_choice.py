"""How the cell defaults were chosen: candidates against components, condition by condition.

    python benchmarks/cell_choice.py --set logs/shifts_dev logs/RUN/instance_parameters.json \\
        --set logs/shifts_cv6_sel/fold1 logs/cv6-shifts/fold1/instance_parameters.json ... \\
        --out logs/cell_choice.json

Each ``--set DIR PARAMS`` is the output folder of ``benchmarks/shifts.py`` on a run's
*selection* slices (``DIR/maps/CONDITION/N_predict.png`` and ``DIR/labels/CONDITION/N.png``)
and that run's fitted ``instance_parameters.json``. On every condition of every set, each
candidate is scored against connected components at the maps' label-free threshold
(:func:`isbi_unet.cells.calibration.label_free_threshold`), the baseline issue 18 sets:

* ``split-components`` over a grid of ``membrane_fraction``, ``membrane_area``, ``min_size``,
  ``faint_boundary`` and ``enclosed_boundary``; the candidates without ``boundary_levels``
  read how faint a boundary is on the map, times the threshold, as ``split-components`` did
  before it read the map's ranks (:func:`isbi_unet.cells.split_components.split`); those
  with ``cost_map`` and ``beta`` run the multicut under the split on those readings of the map
  (:func:`isbi_unet.cells.calibration.relative_map`), the rest on the map itself at beta 0.5;
* the learned multicut with the set's edge model, with and without merging enclosed segments,
  over ``min_size``, ``faint_boundary`` and ``enclosed_boundary``; on maps unlike its own
  (:func:`isbi_unet.cells.parameters.method_for_maps`) it gives way to components at the
  label-free threshold, or, where the candidate's ``fallback`` says so, to ``split-components``
  with its defaults, as ``segment`` uses it now.

The rule: the most (set, condition) pairs at least as good as components, then the highest
mean V_rand. Prints one line per candidate and writes every score to ``--out``.

``--reuse JSON`` takes a set's scores from an earlier ``--out`` of this script instead of
scoring them again, and scores only the candidates that file lacks; scores depend only on
the maps, the labels, the edge model and the cell code, so reuse them only when none of
those changed since.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isbi_unet.cells import methods as cell_methods
from isbi_unet.cells import parameters as cell_parameters
from isbi_unet.cells import segments
from isbi_unet.cells.calibration import label_free_threshold
from isbi_unet.cells.edge_costs import EdgeCostModel, edge_features
from isbi_unet.cells.split_components import component_graph, split
from isbi_unet.evaluation.metric import segmentation_scores
from isbi_unet.evaluation.slice_scores import as_probability


def grid(values: dict[str, list]) -> list[dict]:
    """Every combination of ``values`` {parameter: [value, ...]}, in order."""
    return [dict(zip(values, combination)) for combination in itertools.product(*values.values())]


# small and enclosed segments join across any boundary (faint_boundary and enclosed_boundary
# 0) over the first grid; small ones only across faint ones around the first grid's choice;
# then enclosed ones too around the second grid's; then how faint, read on the map's ranks;
# then the multicut's costs read relative to the threshold
SPLIT_GRID = grid({"membrane_fraction": [0.6, 0.8, 0.9, 0.95], "membrane_area": [0, 1000], "min_size": [0, 300, 600],
                   "faint_boundary": [0.0], "enclosed_boundary": [0.0]}) + \
    grid({"membrane_fraction": [0.9, 0.95], "membrane_area": [1000], "min_size": [300, 600], "faint_boundary": [0.25, 0.5],
          "enclosed_boundary": [0.0]}) + \
    grid({"membrane_fraction": [0.9, 0.95], "membrane_area": [1000], "min_size": [300], "faint_boundary": [0.25, 0.5],
          "enclosed_boundary": [0.25, 0.5]}) + \
    grid({"membrane_fraction": [0.95], "membrane_area": [1000], "min_size": [300], "faint_boundary": [0.25, 0.5, 0.75],
          "enclosed_boundary": [0.25, 0.5, 0.75], "boundary_levels": ["ranks"]}) + \
    grid({"membrane_fraction": [0.95], "membrane_area": [1000], "min_size": [300], "faint_boundary": [0.25],
          "enclosed_boundary": [0.5], "boundary_levels": ["ranks"], "cost_map": ["ranks", "power"],
          "beta": [0.2, 0.3, 0.4, 0.5]}) + \
    grid({"membrane_fraction": [0.95], "membrane_area": [1000], "min_size": [300], "faint_boundary": [0.25],
          "enclosed_boundary": [0.5], "boundary_levels": ["ranks"], "cost_map": ["map"], "beta": [0.3, 0.4, 0.6]}) + \
    grid({"membrane_fraction": [0.95], "membrane_area": [1000], "min_size": [300], "faint_boundary": [0.25],
          "enclosed_boundary": [0.5], "boundary_levels": ["ranks"], "cost_map": ["ranks"], "beta": [0.1, 0.15, 0.25]})
# the multicut under the split: its costs read on the map itself, at beta 0.5, unless a candidate says
GRAPH_DEFAULTS = {"cost_map": "map", "beta": 0.5}
# on maps unlike its own the learned multicut gives way to components at the label-free
# threshold, unless a candidate's "fallback" names split-components with its defaults
LEARNED_GRID = grid({"enclosed": [False, True], "min_size": [0, 300, 600], "faint_boundary": [0.0]}) + \
    grid({"enclosed": [True], "min_size": [300, 600], "faint_boundary": [0.25, 0.5]}) + \
    grid({"enclosed": [True], "min_size": [300], "faint_boundary": [0.25], "enclosed_boundary": [0.25, 0.5]}) + \
    grid({"enclosed": [True], "min_size": [300], "faint_boundary": [0.25], "fallback": ["split-components"]}) + \
    grid({"enclosed": [True], "min_size": [300], "faint_boundary": [0.25], "enclosed_boundary": [0.25, 0.5],
          "fallback": ["split-components"]})


def default_split_key() -> str:
    """The score key of the grid's candidate that is ``split-components`` as ``segment`` runs it."""
    defaults = cell_parameters.DEFAULT_PARAMETERS["split-components"]
    params = {key: defaults[key] for key in ("membrane_fraction", "membrane_area", "min_size", "faint_boundary",
                                            "enclosed_boundary")}
    key = "split-components " + json.dumps({**params, "boundary_levels": "ranks", "cost_map": "ranks",
                                            "beta": defaults["beta"]})
    assert key in candidates(), f"the defaults of split-components are not a candidate of the grid: {key}"
    return key


def read_condition(folder: Path, condition: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(maps, labels) of one condition of a shifts.py output folder, in name order."""
    from skimage import io

    names = sorted((path.name.removesuffix("_predict.png") for path in (folder / "maps" / condition).glob("*_predict.png")),
                   key=lambda name: (len(name), name))
    return ([as_probability(io.imread(folder / "maps" / condition / f"{name}_predict.png")) for name in names],
            [io.imread(folder / "labels" / condition / f"{name}.png") for name in names])


def learned_dense(prob: np.ndarray, model: EdgeCostModel) -> np.ndarray:
    """The learned multicut's segments (H, W) int64 >= 1 before any merging, on the default superpixels."""
    regions, rag, _, size = cell_methods.region_graph(prob, 0.5, 1.0, 2)
    if rag.number_of_edges == 0:
        return regions.astype(np.int64) + 1
    nodes = cell_methods.multicut_nodes(rag, model.cut_probability(edge_features(prob, regions, rag)), size, 0.5)
    return nodes[regions] + 1


def score_condition(maps: list[np.ndarray], labels: list[np.ndarray], edge_model: dict,
                    known: dict[str, float] | None = None) -> dict[str, float]:
    """V_rand of components (label-free threshold) and of every candidate on one condition;
    those in ``known`` (an earlier run's scores of the same maps) are taken, not scored."""
    v_rand = dict(known or {})
    threshold = label_free_threshold(maps)
    if "components" not in v_rand:
        v_rand["components"] = segmentation_scores([cell_methods.threshold(p, threshold) for p in maps],
                                                   labels)["v_rand"]
    missing = [params for params in SPLIT_GRID if "split-components " + json.dumps(params) not in v_rand]
    graphs: dict[tuple, list] = {}
    for params in missing:
        graph_key = tuple(params.get(key, GRAPH_DEFAULTS[key]) for key in GRAPH_DEFAULTS)
        if graph_key not in graphs:
            graphs[graph_key] = [component_graph(p, threshold, **dict(zip(GRAPH_DEFAULTS, graph_key))) for p in maps]
        split_params = {key: value for key, value in params.items() if key not in GRAPH_DEFAULTS}
        segs = [split(graph, **{"boundary_levels": "threshold", **split_params}) if graph is not None
                else cell_methods.threshold(p, threshold) for graph, p in zip(graphs[graph_key], maps)]
        v_rand["split-components " + json.dumps(params)] = segmentation_scores(segs, labels)["v_rand"]
    if all("learned-multicut " + json.dumps(params) in v_rand for params in LEARNED_GRID):
        return v_rand
    unlike = cell_parameters.method_for_maps("learned-multicut", {"edge_model": edge_model}, maps)[2] is not None
    model = EdgeCostModel.from_dict(edge_model)
    dense = [] if unlike else [learned_dense(p, model) for p in maps]
    for params in LEARNED_GRID:
        key = "learned-multicut " + json.dumps(params)
        if unlike:  # as segment uses it: the fallback at the label-free threshold instead
            v_rand[key] = v_rand[default_split_key() if params.get("fallback") == "split-components" else "components"]
            continue
        segs = []
        for d, p in zip(dense, maps):  # faint and enclosed boundary: times its superpixels' threshold, 0.5
            merged = segments.absorb_small(d, params["min_size"], p, params["faint_boundary"] * 0.5)
            if params["enclosed"]:
                merged = segments.merge_enclosed(merged, p, params.get("enclosed_boundary", 0.0) * 0.5)
            segs.append(segments.with_boundaries(merged))
        v_rand[key] = segmentation_scores(segs, labels)["v_rand"]
    return v_rand


def by_the_rule(rows: list[dict[str, float]], baseline: str) -> list[tuple[str, int, int, float, float]]:
    """Rows {candidate: V_rand}, one per (set, condition), ranked by the rule: (candidate,
    conditions at least as good as ``baseline``, conditions, mean difference, mean V_rand),
    most conditions first, then the highest mean; the baseline last."""
    out = []
    for candidate in rows[0]:
        differences = [row[candidate] - row[baseline] for row in rows]
        out.append((candidate, sum(d >= 0 for d in differences), len(rows), statistics.mean(differences),
                    statistics.mean(row[candidate] for row in rows)))
    return sorted(out, key=lambda row: (row[0] == baseline, -row[1], -row[4]))


def print_and_save(ranked: list[tuple[str, int, int, float, float]], baseline: str, out: Path | None,
                   scores_key: str, scores: dict) -> None:
    """Print one line per ranked candidate; write the rule, the ranking and every score to ``out``."""
    for candidate, at_least, total, difference, mean in ranked:
        print(f"{candidate}: at least as good as {baseline} on {at_least} of {total}, "
              f"mean difference {difference:+.4f}, mean V_rand {mean:.4f}")
    if out:
        out.write_text(json.dumps({"rule": f"most conditions >= {baseline}, then mean V_rand",
                                   "summary": ranked, scores_key: scores}, indent=1) + "\n")


def summary(report: dict[str, dict[str, dict[str, float]]]) -> list[tuple[str, int, int, float, float]]:
    """(candidate, conditions at least as good as components, conditions, mean difference, mean) by the rule."""
    rows = [scores for conditions in report.values() for scores in conditions.values()]
    return [row for row in by_the_rule(rows, "components") if row[0] != "components"]


def candidates() -> list[str]:
    """Every score key of a condition: components and each candidate of the grids."""
    return (["components"] + ["split-components " + json.dumps(params) for params in SPLIT_GRID]
            + ["learned-multicut " + json.dumps(params) for params in LEARNED_GRID])


def reusable(previous: list[Path], folder: str) -> dict[str, dict[str, float]]:
    """The scores of set ``folder`` that earlier reports hold, {condition: {candidate: V_rand}}
    (candidates of the grids only; the first report holding a score wins)."""
    wanted, found = set(candidates()), {}
    for path in previous:
        for condition, row in json.loads(path.read_text())["v_rand"].get(folder, {}).items():
            scores = found.setdefault(condition, {})
            scores.update({key: value for key, value in row.items() if key in wanted and key not in scores})
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", nargs=2, action="append", required=True, metavar=("DIR", "PARAMS"),
                        help="a shifts.py output folder of selection slices and its run's instance_parameters.json")
    parser.add_argument("--out", type=Path, help="JSON of every score")
    parser.add_argument("--reuse", type=Path, action="append", default=[], metavar="JSON",
                        help="an earlier --out: its sets' scores are taken instead of scored again")
    args = parser.parse_args(argv)
    report: dict[str, dict[str, dict[str, float]]] = {}
    for folder, params in args.set:
        previous = reusable(args.reuse, folder)
        if previous and all(set(candidates()) <= set(row) for row in previous.values()):
            report[folder] = previous
            print(f"{folder}: {len(previous)} conditions' scores reused", flush=True)
            continue
        edge_model = json.loads(Path(params).read_text())["parameters"]["edge_model"]
        report[folder] = {}
        for condition in sorted(path.name for path in (Path(folder) / "maps").iterdir()):
            report[folder][condition] = score_condition(*read_condition(Path(folder), condition), edge_model,
                                                        previous.get(condition))
            print(f"{folder} {condition}: components {report[folder][condition]['components']:.4f}", flush=True)
    print_and_save(summary(report), "components", args.out, "v_rand", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
