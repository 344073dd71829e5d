"""Time to quality of the cells: test V_rand of each cell method against minutes of training.

    python benchmarks/cells_time_to_quality.py logs/RUN_A logs/RUN_B ... --labels DIR \\
        [--methods threshold,multicut,learned-multicut] [--out docs/ttq_cells.png] [--json FILE]

Each RUN is a finished `main.py all` run (its ``summary.json``): the same recipe and seed
with different ``--time-limit``, say, so that each run is the start of the longest one.
For every run and method, ``segmentation_table.segmentation_table`` chooses (or fits) the
method's parameters on the run's selection slices, from the maps with the TTA choice the
run made there, and scores its test slices once. The plot puts each method's test V_rand
at the run's training minutes; the JSON has every row.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from segmentation_table import segmentation_table  # noqa: E402

DEFAULT_METHODS = ("threshold", "multicut", "learned-multicut")


def run_points(run_dir: Path, labels_dir: Path, methods: Sequence[str]) -> dict[str, Any]:
    """{"run", "minutes" (training), "epochs", "rows" (segmentation_table's, one per method)}
    of one finished run. ValueError when the run has no test slices or no summary."""
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise ValueError(f"{run_dir}: no summary.json (give the folder of a finished `main.py all` run)")
    summary = json.loads(summary_path.read_text())
    if not summary.get("test_names"):
        raise ValueError(f"{run_dir}: the run has no test slices")
    tta = summary["selection"]["tta"]
    rows = segmentation_table(run_dir / ("selection_predictions_tta" if tta else "selection_predictions"), labels_dir,
                              summary["selection_names"], summary["test_names"], methods, repeats=1,
                              test_maps_dir=run_dir / "test_slice_predictions")
    return {"run": str(run_dir), "minutes": summary["train_seconds"] / 60.0, "epochs": summary["epochs"],
            "rows": [row for row in rows if row["method"] in methods]}


def plot(points: Sequence[dict[str, Any]], methods: Sequence[str], figure_path: Path, target: float | None) -> None:
    """Test V_rand against training minutes, one line per method (PNG at ``figure_path``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(points, key=lambda point: point["minutes"])
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for method in methods:
        values = [next(row["v_rand"] for row in point["rows"] if row["method"] == method) for point in ordered]
        axis.plot([point["minutes"] for point in ordered], values, marker="o", label=method)
    if target is not None:
        axis.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    axis.set_xlabel("minutes of training")
    axis.set_ylabel("test V_rand (chosen on the selection slices)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(figure_path, dpi=80)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="folders of finished `main.py all` runs")
    parser.add_argument("--labels", required=True, type=Path, help="folder of N.png ground-truth labels")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("logs/cells_time_to_quality.png"), help="the plot (PNG)")
    parser.add_argument("--json", type=Path, help="also write every run's rows here")
    parser.add_argument("--target", type=float, help="draw this V_rand as a line")
    args = parser.parse_args(argv)
    methods = [method for method in args.methods.split(",") if method]
    try:
        points = [run_points(run, args.labels, methods) for run in args.runs]
    except (ValueError, OSError, KeyError) as error:
        parser.error(str(error))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(points, methods, args.out, args.target)
    if args.json is not None:
        args.json.write_text(json.dumps(points, indent=2) + "\n")
    print("| minutes | epochs | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for point in sorted(points, key=lambda p: p["minutes"]):
        scores = {row["method"]: row["v_rand"] for row in point["rows"]}
        print(f"| {point['minutes']:.1f} | {point['epochs']} | " + " | ".join(f"{scores[m]:.4f}" for m in methods) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
