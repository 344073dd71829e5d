"""Instance segmentation methods side by side on one fold: select on some slices, score on others.

    python benchmarks/segmentation_table.py --maps DIR --labels DIR --select 20,21,22,23,24 \\
        --test 25,26,27,28,29 [--test-maps DIR] [--methods threshold,...] [--out DIR] [--repeats 3]
    python benchmarks/segmentation_table.py --crossval logs/RUN --labels DIR [--methods ...] [--out DIR]

``--maps`` holds the probability maps ``N_predict.png`` (8-bit, high = cell) of a model
that saw neither the selection nor the test slices in training; ``--labels`` the
ground truth ``N.png``. Each method's parameters are chosen by V_rand on the
``--select`` slices only (``isbi_unet.cells.parameters.select_parameters`` over ``isbi_unet.cells.parameters.DEFAULT_GRIDS``,
saved to ``OUT/params_METHOD.json``); the ``--test`` slices are then scored once
(V_rand, V_info and their split / merge parts) and timed (median seconds per slice of
the segmentation alone, over ``--repeats`` runs of every test slice). One more row
gives the official ISBI number of the maps themselves, the maximum over the 11
thresholds, which is chosen on the test slices and so is not a held-out figure.
Writes ``OUT/segmentation_table.json`` and prints a Markdown table.

``--crossval`` takes the folder of a ``main.py crossval`` run instead: every fold's table
from its own maps (the selection block's maps with the TTA choice that block made, and
the test block's maps), then each method's mean and sample sd over the folds
(``OUT/crossval_table.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isbi_unet.cells import parameters as cell_parameters
from isbi_unet.evaluation.metric import isbi_scores, segmentation_scores
from isbi_unet.evaluation.slice_scores import SCORE_PARTS, as_probability


def read_fold(maps_dir: Path, labels_dir: Path, names: Sequence[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Probability maps (H, W) float32 in [0, 1] and labels (H, W) of ``names``."""
    from skimage import io

    maps = [as_probability(io.imread(maps_dir / f"{name}_predict.png")) for name in names]
    labels = [io.imread(labels_dir / f"{name}.png") for name in names]
    return maps, labels


def time_method(method: str, params: Mapping[str, Any], maps: Sequence[np.ndarray], repeats: int) -> tuple[list[np.ndarray], float]:
    """(label images of ``maps``, median seconds per map over ``repeats`` runs of each)."""
    seconds, labels = [], []
    for prob in maps:
        for _ in range(repeats):
            start = time.perf_counter()
            out = cell_parameters.segment(prob, method, params)
            seconds.append(time.perf_counter() - start)
        labels.append(out)
    return labels, statistics.median(seconds)


def segmentation_table(
    maps_dir: Path, labels_dir: Path, select: Sequence[str], test: Sequence[str],
    methods: Sequence[str] = cell_parameters.METHODS, out_dir: Path | None = None, repeats: int = 3,
    grids: Mapping[str, Mapping[str, Sequence[float]]] | None = None, test_maps_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """One row per method (and one for the official threshold sweep); see the module docstring.

    ``test_maps_dir``: where the test slices' maps are, when not in ``maps_dir``.
    """
    if set(select) & set(test):
        raise ValueError(f"selection and test slices overlap: {sorted(set(select) & set(test))}")
    sel_maps, sel_labels = read_fold(maps_dir, labels_dir, select)
    test_maps, test_labels = read_fold(test_maps_dir or maps_dir, labels_dir, test)
    rows = []
    for method in methods:
        start = time.perf_counter()
        chosen = cell_parameters.select_parameters(method, sel_maps, sel_labels, grid=(grids or {}).get(method))
        select_seconds = time.perf_counter() - start
        if out_dir is not None:
            cell_parameters.save_parameters(chosen, out_dir / f"params_{method}.json")
        labels, seconds = time_method(method, chosen["parameters"], test_maps, repeats)
        scores = segmentation_scores(labels, test_labels, names=list(test))
        rows.append({"method": method, "parameters": chosen["parameters"], "selection_v_rand": chosen["v_rand"],
                     "selection_seconds": select_seconds, "seconds_per_slice": seconds,
                     **{key: scores[key] for key in ("v_rand", "v_info") + SCORE_PARTS},
                     "per_slice": scores["per_slice"]})
        print(f"{method}: {cell_parameters.describe_parameters(chosen['parameters'])} -> test V_rand {scores['v_rand']:.4f}", flush=True)
    official = isbi_scores(test_maps, test_labels, names=list(test))
    rows.append({"method": "threshold chosen on the test slices (official ISBI number)",
                 "parameters": {"v_rand_threshold": official["v_rand_threshold"],
                                "v_info_threshold": official["v_info_threshold"]},
                 **{key: official[key] for key in ("v_rand", "v_info") + SCORE_PARTS},
                 "seconds_per_slice": None})
    return rows


AGGREGATED_KEYS = ("v_rand", "v_info", "v_rand_split", "v_rand_merge", "v_info_split", "v_info_merge",
                   "seconds_per_slice")


def crossval_folds(crossval_dir: Path) -> list[dict[str, Any]]:
    """The folds of a ``main.py crossval`` run folder (its ``crossval.json``): per fold the
    selection and test names and the folders of their maps."""
    report_path = crossval_dir / "crossval.json"
    if not report_path.is_file():
        raise ValueError(f"{crossval_dir}: no crossval.json (give the folder of a finished `main.py crossval` run)")
    folds = []
    for index, fold in enumerate(json.loads(report_path.read_text())["folds"], start=1):
        fold_dir = crossval_dir / f"fold{index}"
        tta = fold["selection"]["tta"]
        folds.append({"fold": index, "selection_names": fold["selection_names"], "test_names": fold["test_names"],
                      "selection_maps": fold_dir / ("selection_predictions_tta" if tta else "selection_predictions"),
                      "test_maps": fold_dir / "test_slice_predictions"})
    return folds


def crossval_table(
    crossval_dir: Path, labels_dir: Path, methods: Sequence[str] = cell_parameters.METHODS, out_dir: Path | None = None,
    repeats: int = 3, grids: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> dict[str, Any]:
    """Every fold's ``segmentation_table``, then per method the mean, sample sd and per-fold
    values of AGGREGATED_KEYS over the folds (the official row's seconds stay None)."""
    per_fold = []
    for fold in crossval_folds(crossval_dir):
        print(f"fold {fold['fold']}: select {','.join(fold['selection_names'])}, "
              f"test {','.join(fold['test_names'])}", flush=True)
        fold_out = None if out_dir is None else out_dir / f"fold{fold['fold']}"
        if fold_out is not None:
            fold_out.mkdir(parents=True, exist_ok=True)
        rows = segmentation_table(fold["selection_maps"], labels_dir, fold["selection_names"], fold["test_names"],
                                  methods, fold_out, repeats, grids, test_maps_dir=fold["test_maps"])
        per_fold.append({"fold": fold["fold"], "rows": rows})
    summary = []
    for position, first in enumerate(per_fold[0]["rows"]):
        row: dict[str, Any] = {"method": first["method"],
                               "parameters": [fold["rows"][position]["parameters"] for fold in per_fold]}
        for key in AGGREGATED_KEYS:
            values = [fold["rows"][position][key] for fold in per_fold]
            if any(value is None for value in values):
                row[key] = None
                continue
            array = np.array(values, dtype=float)
            row[key] = {"mean": float(array.mean()), "sd": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
                        "values": array.tolist()}
        summary.append(row)
    return {"folds": per_fold, "methods": summary}


SCORE_TITLES = ("V_rand", "V_info", "V_rand split", "V_rand merge", "V_info split", "V_info merge", "s / slice")


def _markdown_table(rows: Sequence[Mapping[str, Any]], cell: Callable[[Any, int], str], parameters: bool) -> str:
    """Rows of AGGREGATED_KEYS (with a parameters column when ``parameters``) as Markdown;
    ``cell(value, digits)`` formats one value (4 digits, 3 for seconds)."""
    titles = ("method",) + (("parameters",) if parameters else ()) + SCORE_TITLES
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in rows:
        cells = [row["method"]]
        if parameters:
            cells.append(cell_parameters.describe_parameters(row["parameters"]))
        cells += [cell(row[key], 3 if key == "seconds_per_slice" else 4) for key in AGGREGATED_KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def crossval_markdown(summary: Sequence[Mapping[str, Any]]) -> str:
    """Mean +- sd over the folds: method, V_rand, V_info, split and merge parts, s / slice."""
    return _markdown_table(summary, lambda value, digits: "-" if value is None else
                           f"{value['mean']:.{digits}f} +- {value['sd']:.{digits}f}", parameters=False)


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table: method, parameters, V_rand, V_info, split and merge parts, seconds per slice."""
    return _markdown_table(rows, lambda value, digits: "-" if value is None else f"{value:.{digits}f}",
                           parameters=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--maps", type=Path, help="folder of N_predict.png probability maps")
    parser.add_argument("--test-maps", type=Path, help="folder of the --test slices' maps, when not in --maps "
                                                       "(a run's test_slice_predictions)")
    parser.add_argument("--crossval", type=Path, help="folder of a `main.py crossval` run (instead of --maps, --select, --test)")
    parser.add_argument("--labels", required=True, type=Path, help="folder of N.png ground-truth labels")
    parser.add_argument("--select", help="slices that choose the parameters, e.g. 20,21,22,23,24")
    parser.add_argument("--test", help="slices that are scored, e.g. 25,26,27,28,29")
    parser.add_argument("--methods", default=",".join(cell_parameters.METHODS), help="comma-separated (default: all)")
    parser.add_argument("--out", type=Path, default=Path("logs/segmentation_table"), help="where the JSON files go")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per test slice (default: 3)")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in cell_parameters.METHODS]
    if unknown or args.repeats < 1:
        parser.error(f"unknown methods {unknown}" if unknown else "--repeats must be at least 1")
    if args.crossval is not None:
        if args.maps or args.test_maps or args.select or args.test:
            parser.error("--crossval takes the folds' own maps and slices: leave out --maps, --test-maps, --select and --test")
        try:
            report = crossval_table(args.crossval, args.labels, methods, args.out, args.repeats)
        except (ValueError, OSError, KeyError) as error:
            parser.error(str(error))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "crossval_table.json").write_text(json.dumps(report, indent=2) + "\n")
        print(crossval_markdown(report["methods"]))
        return 0
    if not (args.maps and args.select and args.test):
        parser.error("give --maps, --select and --test (or --crossval)")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = segmentation_table(args.maps, args.labels, args.select.split(","), args.test.split(","),
                              methods, args.out, args.repeats, test_maps_dir=args.test_maps)
    (args.out / "segmentation_table.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
