"""The seed's ``plot_performance``, reading "accuracy" and drawing the validation curves."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt


def _history_dict(history) -> Mapping[str, Sequence[float]]:
    """Accept a keras History, its .history dict, or a dict of lists (e.g. from CSV)."""
    return history.history if hasattr(history, "history") else history


def plot_performance(history=None, figure_path: str | Path | None = None,
                     ylim_pad: Sequence[float] = (0, 0), show: bool = False):
    """Accuracy and loss per epoch, training and validation side by side.

    Args:
      history: a keras History or a dict with "accuracy", "loss" and optionally
        "val_accuracy", "val_loss" lists (one value per epoch).
      figure_path: save the figure there (PNG) when given.
      ylim_pad: padding of the y limits of the accuracy and loss panels.
      show: call plt.show() (the notebook does).
    Returns the matplotlib Figure.
    """
    values = _history_dict(history)
    figure, axes = plt.subplots(1, 2, figsize=(20, 5))
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
    figure.tight_layout()
    if figure_path is not None:
        figure.savefig(figure_path, dpi=80)
    if show:
        plt.show()
    else:
        plt.close(figure)
    return figure
