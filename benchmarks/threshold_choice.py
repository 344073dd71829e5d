"""How the label-free threshold was chosen: components at each candidate, condition by condition.

    python benchmarks/threshold_choice.py --set logs/shifts_dev --set logs/shifts_cv6_sel/fold1 ... \\
        --out logs/threshold_choice.json

Each ``--set DIR`` is the output folder of ``benchmarks/shifts.py`` on a run's *selection*
slices (``DIR/maps/CONDITION/N_predict.png`` and ``DIR/labels/CONDITION/N.png``). On every
condition of every set, connected components of ``prob > threshold`` are scored (V_rand)
for each candidate way of reading the threshold from the maps alone:

* ``otsu``: the median over the maps of each map's Otsu threshold (the rule before);
* ``share S``: :func:`isbi_unet.cells.calibration.label_free_threshold` with
  ``membrane_share`` S: the value below which a share S of the maps' pixels lie;
* ``otsu within L-H``: Otsu's threshold, kept between the thresholds of shares L and H
  (``label_free_threshold`` with ``membrane_share=(L, H)``).

The rule: the most (set, condition) pairs at least as good as ``otsu``, then the highest
mean V_rand. Prints one line per candidate and writes every score to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cell_choice import by_the_rule, print_and_save, read_condition
from isbi_unet.cells import methods as cell_methods
from isbi_unet.cells.calibration import label_free_threshold, otsu_threshold
from isbi_unet.evaluation.metric import segmentation_scores

SHARES = [round(share, 3) for share in np.arange(0.2, 0.501, 0.025)]
BOUNDS = [(low, high) for low in (0.25, 0.275, 0.3, 0.325) for high in (0.375, 0.4, 0.45)]
BASELINE = "otsu"


def candidate_thresholds(maps: list[np.ndarray]) -> dict[str, float]:
    """Every candidate's threshold of one condition's maps."""
    return {BASELINE: otsu_threshold(maps), **{f"share {share:g}": label_free_threshold(maps, share) for share in SHARES},
            **{f"otsu within {low:g}-{high:g}": label_free_threshold(maps, (low, high)) for low, high in BOUNDS}}


def score_condition(maps: list[np.ndarray], labels: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """{candidate: {threshold, v_rand}} of components on one condition."""
    v_rand: dict[float, float] = {}  # candidates often share a threshold
    for threshold in candidate_thresholds(maps).values():
        if threshold not in v_rand:
            v_rand[threshold] = segmentation_scores([cell_methods.threshold(prob, threshold) for prob in maps],
                                                    labels)["v_rand"]
    return {candidate: {"threshold": threshold, "v_rand": v_rand[threshold]}
            for candidate, threshold in candidate_thresholds(maps).items()}


def summary(report: dict[str, dict[str, dict[str, dict[str, float]]]]) -> list[tuple[str, int, int, float, float]]:
    """(candidate, conditions at least as good as otsu, conditions, mean difference, mean V_rand) by the rule."""
    rows = [{candidate: scores["v_rand"] for candidate, scores in row.items()}
            for conditions in report.values() for row in conditions.values()]
    return by_the_rule(rows, BASELINE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", required=True, type=Path, metavar="DIR",
                        help="a shifts.py output folder of selection slices")
    parser.add_argument("--out", type=Path, help="JSON of every score")
    args = parser.parse_args(argv)
    report: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for folder in args.set:
        report[str(folder)] = {}
        for condition in sorted(path.name for path in (folder / "maps").iterdir()):
            scores = score_condition(*read_condition(folder, condition))
            report[str(folder)][condition] = scores
            print(f"{folder} {condition}: otsu {scores[BASELINE]['v_rand']:.4f}", flush=True)
    print_and_save(summary(report), BASELINE, args.out, "scores", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
