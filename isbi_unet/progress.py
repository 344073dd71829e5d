"""Progress of long work: Keras's bar on a terminal, plain lines in logs and pipes.

Keras's ``Progbar`` redraws itself with carriage returns, backspaces and colour codes
wherever it runs; in a log file or a pipe those are noise. :func:`progress_bar` gives it
only when standard output is a terminal (or a notebook), and otherwise a bar that
writes one plain line at each tenth of the work.
"""

from __future__ import annotations

import sys


class PlainProgress:
    """``update(done)`` / ``add(count)`` like Keras's Progbar, as lines "  done/total unit"."""

    def __init__(self, total: int, unit: str):
        self.total, self.unit, self.done, self.shown = total, unit, 0, -1

    def update(self, done: int) -> None:
        self.done = done
        tenth = 10 * done // max(self.total, 1)
        if tenth > self.shown or done >= self.total:
            self.shown = tenth
            print(f"  {done}/{self.total} {self.unit}{'s' if self.total != 1 else ''}", flush=True)

    def add(self, count: int) -> None:
        self.update(self.done + count)


def interactive() -> bool:
    """Whether standard output is a terminal or a notebook (where a redrawn bar belongs)."""
    return sys.stdout.isatty() or "ipykernel" in sys.modules


def progress_bar(total: int, unit: str):
    """A progress bar over ``total`` items named ``unit``: Keras's where output is
    :func:`interactive`, else :class:`PlainProgress`."""
    if interactive():
        from keras.utils import Progbar

        return Progbar(total, unit_name=unit)
    return PlainProgress(total, unit)
