"""The seed's ``plot_performance``, reading "accuracy" and drawing the validation curves,
and time-to-quality plots of one run or several."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt


def _history_dict(history) -> Mapping[str, Sequence[float]]:
    """Accept a keras History, its .history dict, or a dict of lists (e.g. from CSV)."""
    return history.history if hasattr(history, "history") else history


def _finish(figure, figure_path: str | Path | None, show: bool):
    """Lay out, save (PNG) when a path is given, then show or close the figure."""
    figure.tight_layout()
    if figure_path is not None:
        figure.savefig(figure_path, dpi=80)
    if show:
        plt.show()
    else:
        plt.close(figure)
    return figure


def plot_performance(history=None, figure_path: str | Path | None = None,
                     ylim_pad: Sequence[float] = (0, 0), show: bool = False):
    """Accuracy and loss per epoch, training and validation side by side, and the selection
    slices' ISBI scores (val_v_rand, val_v_info) in a third panel when the history has them.

    Args:
      history: a keras History or a dict with "accuracy", "loss" and optionally
        "val_accuracy", "val_loss", "val_v_rand", "val_v_info" lists (one value per epoch).
      figure_path: save the figure there (PNG) when given.
      ylim_pad: padding of the y limits of the accuracy and loss panels.
      show: call plt.show() (the notebook does).
    Returns the matplotlib Figure.
    """
    values = _history_dict(history)
    has_isbi = len(values.get("val_v_rand", [])) > 0
    figure, axes = plt.subplots(1, 3 if has_isbi else 2, figsize=(30 if has_isbi else 20, 5))
    if has_isbi:
        epochs = range(1, len(values["val_v_rand"]) + 1)
        for key, label in (("val_v_rand", "V_rand"), ("val_v_info", "V_info")):
            axes[2].plot(epochs, values.get(key, []), marker="o", label=label)
        axes[2].set_title("Selection slices: ISBI 2012 scores\n", fontsize=17)
        axes[2].set_xlabel("Epoch", fontsize=15)
        axes[2].set_ylabel("Score", fontsize=15)
        axes[2].legend(loc="lower right")
        axes[2].grid(True)
    for axis, key, title, pad in zip(axes, ("accuracy", "loss"), ("Model Accuracy", "Model Loss"), ylim_pad):
        series = {"Training": values.get(key, []), "Validation": values.get(f"val_{key}", [])}
        series = {label: list(ys) for label, ys in series.items() if len(ys)}
        if not series:
            continue
        epochs = range(1, 1 + max(len(ys) for ys in series.values()))
        for label, ys in series.items():
            axis.plot(list(epochs)[: len(ys)], ys, marker="o", label=label)
        all_values = [y for ys in series.values() for y in ys]
        axis.set_ylim(min(all_values) - pad, max(all_values) + pad) if min(all_values) < max(all_values) else None
        axis.set_title(title + "\n", fontsize=17)
        axis.set_xlabel("Epoch", fontsize=15)
        axis.set_ylabel(key.capitalize(), fontsize=15)
        axis.legend(loc="upper left")
        axis.grid(True)
    return _finish(figure, figure_path, show)


def plot_time_to_quality(history, figure_path: str | Path | None = None, show: bool = False):
    """The selection slices' V_rand and V_info against minutes of training (history from history.csv)."""
    values = _history_dict(history)
    figure, axis = plt.subplots(figsize=(8, 5))
    for key, label in (("val_v_rand", "V_rand"), ("val_v_info", "V_info")):
        axis.plot(values["minutes"], values[key], marker="o", label=label)
    axis.set_xlabel("Minutes of training", fontsize=13)
    axis.set_ylabel("Selection slices, per epoch (ISBI 2012 metric)", fontsize=13)
    axis.set_title("Time to quality")
    axis.legend(loc="lower right")
    axis.grid(True)
    return _finish(figure, figure_path, show)


def plot_runs_time_to_quality(histories: Mapping[str, Mapping[str, Sequence[float]]],
                              figure_path: str | Path | None = None, key: str = "val_v_rand",
                              target: float | None = None, ymin: float | None = None, show: bool = False):
    """One score of the selection slices against minutes of training for several runs in one figure.

    Args:
      histories: run name -> history dict with "minutes" and ``key`` (one value per epoch).
      key: "val_v_rand" or "val_v_info".
      target: draw a dashed horizontal line at this score.
      ymin: lower end of the score axis, whose top is then 1 (None: matplotlib's
        choice), to zoom past the first epochs' low scores.
    Returns the matplotlib Figure.
    """
    figure, axis = plt.subplots(figsize=(8, 5))
    for name, history in histories.items():
        values = _history_dict(history)
        axis.plot(values["minutes"], values[key], marker="o", markersize=3, label=name)
    if target is not None:
        axis.axhline(target, color="gray", linestyle="--", linewidth=1, label=f"{target:g}")
    axis.set_xlabel("Minutes of training", fontsize=13)
    axis.set_ylabel(f"Selection slices: {key.removeprefix('val_').replace('v_', 'V_')} (ISBI 2012 metric)", fontsize=13)
    if ymin is not None:
        axis.set_ylim(ymin, 1.0)  # scores are at most 1
    axis.set_title("Time to quality, per run")
    axis.legend(loc="lower right")
    axis.grid(True)
    return _finish(figure, figure_path, show)
