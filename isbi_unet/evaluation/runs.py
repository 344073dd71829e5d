"""Compare finished training runs: test scores, time to quality on the selection slices, mean +- sd.

A run folder (``logs/<run>/``) holds ``history.csv`` (per-epoch ``val_v_rand``,
``val_v_info`` and ``minutes`` of training) and, when it was scored after training
(``main.py all`` or ``crossval``), ``test_scores.json``: the ISBI scores of the saved model
on the test slices, which chose nothing (``chosen``: read at the thresholds that the
selection slices chose). ``main.py compare`` prints one row per run and, for two or
more runs, their mean and standard deviation; ``isbi_unet.evaluation.plots.plot_runs_time_to_quality`` draws
the curves together.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from isbi_unet.errors import UserError

SCORED_KEYS = ("v_rand", "v_info", "pixel_error")


def read_history(csv_path: str | Path) -> dict[str, list[float]]:
    """The per-epoch history that CSVLogger wrote: column -> values ({} if no file)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        return {}
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {}) if key != "epoch"}


@dataclass
class RunSummary:
    """One run's figures; None where the run's files do not say.

    epochs: completed epochs; minutes: of training (the last epoch's ``minutes``);
    best_epoch_v_rand: the highest per-epoch V_rand of the selection slices (the weights at that epoch's
    end, without test-time augmentation); minutes_to_target: training minutes until the
    per-epoch V_rand first reached ``target``; scores: ``SCORED_KEYS`` of the saved model
    on the test slices (test_scores.json); history: the per-epoch columns of history.csv.
    """

    name: str
    epochs: int
    minutes: float | None
    best_epoch_v_rand: float | None
    minutes_to_target: float | None
    scores: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)


def summarize_run(run_dir: str | Path, target: float = 0.98) -> RunSummary:
    """Read a run folder's history.csv (and test_scores.json when present).

    Raises UserError when the folder or its history.csv is missing or empty.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run folder not found")
    history = read_history(run_dir / "history.csv")
    if not history.get("loss"):
        raise UserError(f"{run_dir}: no completed epoch in history.csv; is this a training run's folder?")
    v_rand = history.get("val_v_rand", [])
    minutes = history.get("minutes", [])
    reached = [m for v, m in zip(v_rand, minutes) if v >= target]
    scores_path = run_dir / "test_scores.json"
    scores = {}
    if scores_path.is_file():
        stored = json.loads(scores_path.read_text())["chosen"]
        scores = {key: float(stored[key]) for key in SCORED_KEYS if stored.get(key) is not None}
    return RunSummary(
        name=run_dir.name,
        epochs=len(history["loss"]),
        minutes=minutes[-1] if minutes else None,
        best_epoch_v_rand=max(v_rand) if v_rand else None,
        minutes_to_target=reached[0] if reached else None,
        scores=scores,
        history=history,
    )


def mean_and_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values that are not None (None, None
    when there are none; sd None for a single value)."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None
    mean = sum(present) / len(present)
    if len(present) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in present) / (len(present) - 1))


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mean_cell(values: Sequence[float | None], digits: int) -> str:
    mean, sd = mean_and_sd(values)
    if mean is None:
        return "-"
    return _number(mean, digits) + ("" if sd is None else f" +- {_number(sd, digits)}")


def comparison_table(summaries: Sequence[RunSummary], target: float = 0.98) -> str:
    """A plain-text table: one row per run, then mean +- sd over the runs when there are
    two or more. A run whose per-epoch V_rand never reached ``target`` shows "never";
    the mean row then counts the runs that did (a mean over those alone would flatter)."""
    headers = ["run", "epochs", "minutes", "selection: best epoch V_rand", f"selection: min to {target:g}",
               "test: V_rand", "test: V_info", "test: pixel error"]
    never = [run.best_epoch_v_rand is not None and run.minutes_to_target is None for run in summaries]
    rows = [[run.name, str(run.epochs), _number(run.minutes, 1), _number(run.best_epoch_v_rand),
             "never" if missed else _number(run.minutes_to_target, 1),
             *(_number(run.scores.get(key)) for key in SCORED_KEYS)]
            for run, missed in zip(summaries, never)]
    if len(summaries) > 1:
        count = len(summaries)
        rows.append([
            f"mean +- sd ({count} runs)",
            _mean_cell([run.epochs for run in summaries], 1),
            _mean_cell([run.minutes for run in summaries], 1),
            _mean_cell([run.best_epoch_v_rand for run in summaries], 4),
            f"{count - sum(never)} of {count} runs" if any(never)
            else _mean_cell([run.minutes_to_target for run in summaries], 1),
            *(_mean_cell([run.scores.get(key) for run in summaries], 4) for key in SCORED_KEYS),
        ])
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(row, widths))) for row in [headers, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
