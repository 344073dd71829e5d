"""Images far from the scale the network reads (the seed's: 8-bit / 255).

16-bit images are read divided by 257 and float images as 0-1 or 0-255 (see
:func:`isbi_unet.io.images.read_image`); an image that uses a small part of that scale
reaches the network nearly black. :func:`scale_warning` says so, and
:func:`warn_once_about_scale` prints it once per kind per process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# A 16-bit image whose brightest pixel is below this reaches the network at under 1/16 of
# its range (16-bit images are read divided by 257): nearly black.
DIM_16BIT_MAX = 4096
SCALE_KINDS = ("16-bit images", "float images")  # how each reason of scale_warning begins
_warned: set[str] = set()


def scale_warning(array: np.ndarray) -> str | None:
    """Why the network would see ``array`` (an image as stored) far from the 0-255 range it
    reads, or None: a 16-bit image that uses a small part of its range, or a float image
    with values outside [0, 255]."""
    if array.dtype == np.uint16 and 0 < int(array.max(initial=0)) < DIM_16BIT_MAX:
        return (f"16-bit images whose brightest pixel is {int(array.max())} of 65535 reach the network nearly black "
                "(16-bit images are read divided by 257): convert them to 8 bits with their contrast stretched "
                "(e.g. Fiji: Image > Type > 8-bit after Process > Enhance Contrast)")
    if np.issubdtype(array.dtype, np.floating) and np.isfinite(array).all() and (
            array.min(initial=0) < 0 or array.max(initial=0) > 255):
        return (f"float images with values from {float(array.min()):g} to {float(array.max()):g}: the network reads "
                "float images as 0-1 or 0-255: rescale them to one of those, or save them as 8 bits")
    return None


def scale_kind(reason: str) -> str:
    """Which of :data:`SCALE_KINDS` a reason of :func:`scale_warning` is."""
    return next(kind for kind in SCALE_KINDS if reason.startswith(kind))


def warn_once_about_scale(array: np.ndarray, path: str | Path) -> None:
    """Print one ``warning:`` line per kind of :func:`scale_warning` in this process, naming
    the first file it concerns."""
    reason = scale_warning(array)
    if reason is not None and scale_kind(reason) not in _warned:
        _warned.add(scale_kind(reason))
        print(f"warning: {path}: {reason}", flush=True)
