"""Multi-page TIFF stacks (like ISBI 2012's train-volume.tif): read a page at a time, write float32.

Pages of an uncompressed stack are memory-mapped (``np.memmap`` at the series' data
offset), so a page is read only where it is used; compressed stacks are decoded one
page at a time. The output stack is created with ``tifffile.memmap`` and each page is
written through its own short-lived memory map, so memory stays at about one page.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile

from errors import UserError

TIFF_SUFFIXES = (".tif", ".tiff")
ISBI_SUBMISSION_SHAPE = (30, 512, 512)  # slices, height, width of the challenge's test volume


def is_tiff_file(path: str | Path) -> bool:
    """True for an existing .tif/.tiff file, or a path that would name one (not a folder)."""
    path = Path(path)
    return path.suffix.lower() in TIFF_SUFFIXES and not path.is_dir()


@dataclass(frozen=True)
class TiffStack:
    """A TIFF file as pages (N, H, W, C) of ``dtype``; ``offset`` is the byte offset of
    its uncompressed contiguous data (memory-mappable), None otherwise."""

    path: Path
    count: int
    height: int
    width: int
    channels: int
    dtype: np.dtype
    offset: int | None

    @property
    def page_shape(self) -> tuple[int, int, int]:
        return self.height, self.width, self.channels

    def page(self, index: int) -> np.ndarray:
        """Page ``index`` as (H, W, C) of the file's dtype: a read-only memory map when
        the data are uncompressed, else the decoded page."""
        if not 0 <= index < self.count:
            raise IndexError(f"page {index} of a {self.count}-page stack")
        if self.offset is not None:
            page_bytes = self.height * self.width * self.channels * self.dtype.itemsize
            return np.memmap(self.path, dtype=self.dtype, mode="r", shape=self.page_shape,
                             offset=self.offset + index * page_bytes)
        with tifffile.TiffFile(self.path) as tif:
            series = tif.series[0]
            if self.count > 1 and len(series.pages) == self.count:
                page = tif.asarray(series=0, key=index)
            else:  # one TIFF page holds every slice (e.g. planar samples): decode it
                page = series.asarray().reshape(self.count, *self.page_shape)[index]
        return page.reshape(self.page_shape)


def open_stack(path: str | Path) -> TiffStack:
    """Describe the first series of a TIFF file as (N, H, W, C) pages.

    Accepted shapes: (H, W), (H, W, S) with S samples (RGB), (N, H, W) and (N, H, W, S);
    a (S, H, W) planar image (tifffile's default for a 3-slice array) is taken as S slices.
    Raises UserError for a missing, unreadable or otherwise shaped file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: TIFF file not found")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes, dtype = tuple(series.shape), series.axes, np.dtype(series.dtype)
            offset = series.dataoffset
            dtype = dtype.newbyteorder(tif.byteorder)
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as error:
        raise UserError(f"{path}: cannot read this TIFF ({error}); replace it") from error
    has_samples = axes.endswith("S")
    if len(shape) == 2:
        count, (height, width), channels = 1, shape, 1
    elif len(shape) == 3 and has_samples:
        count, (height, width, channels) = 1, shape
    elif len(shape) == 3:
        (count, height, width), channels = shape, 1
    elif len(shape) == 4 and has_samples:
        count, height, width, channels = shape
    else:
        raise UserError(f"{path}: a TIFF of shape {shape} (axes {axes}); expected pages of 2-D grayscale or RGB images")
    return TiffStack(path, count, height, width, channels, dtype, offset)


def page_to_unit(page: np.ndarray) -> np.ndarray:
    """(h, w, C) pixels of any dtype -> float32 in [0, 1] the way data.read_image scales
    a file (8-bit / 255, 16-bit / 65535, floats up to 1 kept, bools 0/1)."""
    if page.dtype == bool:
        return page.astype(np.float32)
    if page.dtype == np.uint16:
        return page.astype(np.float32) / 65535.0
    if np.issubdtype(page.dtype, np.floating) and page.max(initial=0) <= 1.0:
        return page.astype(np.float32)
    return page.astype(np.float32) / 255.0


class StackWriter:
    """A float32 TIFF stack (N, H, W) or (N, H, W, K) written one page at a time.

    The file is created as ``path``'s sibling ``.partial`` file and renamed onto ``path``
    by ``close()``, so an interrupted prediction never leaves a truncated stack.
    """

    def __init__(self, path: str | Path, count: int, height: int, width: int, channels: int = 1):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.page_shape = (height, width) if channels == 1 else (height, width, channels)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        whole = tifffile.memmap(self.partial, shape=(count, *self.page_shape), dtype=np.float32,
                                imagej=channels == 1, photometric="minisblack")
        self.offset, self.dtype = whole.offset, whole.dtype
        del whole

    def page(self, index: int) -> np.memmap:
        """Writable memory map of page ``index``, (H, W) or (H, W, K) float32; flush() it
        or let it go out of scope to write it."""
        page_bytes = int(np.prod(self.page_shape)) * 4
        return np.memmap(self.partial, dtype=self.dtype, mode="r+", shape=self.page_shape,
                         offset=self.offset + index * page_bytes)

    def close(self) -> Path:
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        self.partial.unlink(missing_ok=True)


def check_isbi_submission(count: int, height: int, width: int, classes: int) -> None:
    """Refuse what the ISBI 2012 challenge would not accept: it takes one 512x512x30
    float stack of one probability (0 = membrane, 1 = non-membrane) per pixel."""
    if classes != 1:
        raise UserError(f"--isbi-submission needs a binary model (one probability per pixel), not {classes} classes")
    if (count, height, width) != ISBI_SUBMISSION_SHAPE:
        raise UserError(f"--isbi-submission: the challenge takes 30 slices of 512x512 (test-volume.tif), "
                        f"not {count} of {width}x{height}")


def read_stack_slices(path: str | Path) -> list[np.ndarray]:
    """Every page of a TIFF stack as a 2-D array (H, W) of the file's dtype (first channel of RGB)."""
    stack = open_stack(path)
    return [np.asarray(stack.page(index)[..., 0]) for index in range(stack.count)]


def evaluate_stacks(
    pred_path: str | Path,
    label_path: str | Path,
    names: Sequence[str] | None = None,
    json_path: str | Path | None = None,
    progress: bool = False,
) -> dict:
    """ISBI 2012 scores of a probability stack (N, H, W) against a label stack (N, H, W).

    Pages are named by their index from 0 ("0", "1", ...); ``names`` restricts to those
    pages. Returns metrics.isbi_scores's dict with ``pred_dir``/``label_dir`` set to the
    two files, also written as JSON to ``json_path`` when given; ``progress`` shows a
    bar over slices.
    """
    from metrics import _write_json, as_probability, isbi_scores

    for path in (pred_path, label_path):
        if not is_tiff_file(path):
            raise UserError(f"{path}: a TIFF stack is scored against a TIFF stack; give --pred and --labels both as .tif files or both as folders")
    predictions, labels = read_stack_slices(pred_path), read_stack_slices(label_path)
    if len(predictions) != len(labels) or predictions[0].shape != labels[0].shape:
        raise UserError(f"{pred_path} has {len(predictions)} slices of {predictions[0].shape[1]}x{predictions[0].shape[0]} "
                        f"but {label_path} has {len(labels)} of {labels[0].shape[1]}x{labels[0].shape[0]}")
    all_names = [str(index) for index in range(len(labels))]
    wanted = [str(name) for name in names] if names is not None else all_names
    unknown = [name for name in wanted if name not in all_names]
    if unknown or not wanted:
        raise UserError(f"--names: the stacks have slices 0..{len(labels) - 1}, not {', '.join(unknown) or 'none'}")
    try:
        probabilities = [as_probability(predictions[int(name)]) for name in wanted]
    except ValueError as error:
        raise UserError(f"{pred_path} is not a probability stack ({error}): save values in [0, 1] or 0-255") from error
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(len(wanted), unit_name="slice")
    scores = isbi_scores(probabilities, [labels[int(name)] for name in wanted], names=wanted,
                         progress=(lambda done, total: bar.update(done)) if bar else None)
    scores["pred_dir"], scores["label_dir"] = str(pred_path), str(label_path)
    if json_path is not None:
        _write_json(scores, json_path)
    return scores
