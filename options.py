"""Command-line option types and the parser of the project's one-line errors.

Every numeric option of ``main.py`` (and ``benchmarks/bench.py``) is parsed by
:func:`in_range`, so that a value out of range (or NaN) is refused when the command line
is read, with one ``error:`` line and exit status 2, before anything is loaded or written.
"""

from __future__ import annotations

import argparse
import math

MAX_CLASSES = 12  # colours of data.COLOR_DICT, which draws multi-class predictions
MAX_SEED = 2**32 - 1  # numpy's seeds


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's one-line ``error:`` message (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def in_range(kind: type = float, low: float | None = None, high: float | None = None,
             low_open: bool = False, high_open: bool = False, multiple_of: int | None = None):
    """An argparse ``type`` parsing an int or a finite float within [low, high].

    ``low_open``/``high_open`` exclude the bound itself; ``multiple_of`` also asks for a
    multiple of it. The message of a refused value says the allowed range.
    """

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            left = "" if low is None else f"{'>' if low_open else '>='} {kind(low)}"
            right = "" if high is None else f"{'<' if high_open else '<='} {kind(high)}"
            raise argparse.ArgumentTypeError(f"must be {' and '.join(filter(None, (left, right)))}, not {text}")
        if multiple_of and value % multiple_of:
            raise argparse.ArgumentTypeError(f"must be a multiple of {multiple_of}, not {text}")
        return value

    return parse


positive_int = in_range(int, 1)
side_16 = in_range(int, 16, multiple_of=16)  # the U-Net's 4 poolings need multiples of 16


def id_list(text: str) -> list[str]:
    """Comma-separated names, e.g. "25,26": at least one, none twice."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names no image; give names such as 25,26")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{repeated[0]!r} is named twice")
    return names
