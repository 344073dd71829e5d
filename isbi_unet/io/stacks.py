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
from typing import Callable

import numpy as np
import tifffile

from isbi_unet.errors import UserError

TIFF_SUFFIXES = (".tif", ".tiff")


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
        try:
            with tifffile.TiffFile(self.path) as tif:
                series = tif.series[0]
                if self.count > 1 and len(series.pages) == self.count:
                    page = tif.asarray(series=0, key=index)
                else:  # one TIFF page holds every slice (e.g. planar samples): decode it
                    page = series.asarray().reshape(self.count, *self.page_shape)[index]
        except (OSError, ValueError, IndexError, RuntimeError, tifffile.TiffFileError) as error:
            raise UserError(f"{self.path}: page {index} cannot be read ({error}); the file is damaged, replace it") from error
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
    except (OSError, ValueError, IndexError, RuntimeError, tifffile.TiffFileError) as error:
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
    if offset is not None:
        needed = offset + count * height * width * channels * dtype.itemsize
        if path.stat().st_size < needed:
            raise UserError(f"{path}: truncated: {path.stat().st_size} bytes where its {count} pages need {needed}; "
                            "copy or save it again")
    return TiffStack(path, count, height, width, channels, dtype, offset)


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


def read_stack_slices(path: str | Path) -> list[np.ndarray]:
    """Every page of a TIFF stack as a 2-D array (H, W) of the file's dtype (first channel of RGB)."""
    stack = open_stack(path)
    return [np.asarray(stack.page(index)[..., 0]) for index in range(stack.count)]


@dataclass
class PageSource:
    """N same-sized input pages: ``read(i)`` gives page i raw, (H, W, C), possibly a
    memory map; ``prepare(raw)`` turns a page or a window of it into the network's
    float32 input in [0, 1]."""

    path: Path
    names: list[str]
    shape: tuple[int, int, int]
    read: Callable[[int], np.ndarray]
    prepare: Callable[[np.ndarray], np.ndarray]


def divisor_for(page: np.ndarray) -> float:
    """What a raw page's pixels are divided by to lie in [0, 1] (as data.read_image scales):
    255 for 8-bit, 65535 for 16-bit, 1 for booleans and floats up to 1, else 255."""
    if page.dtype == np.uint16:
        return 65535.0
    if page.dtype == bool or (np.issubdtype(page.dtype, np.floating) and page.max(initial=0) <= 1.0):
        return 1.0
    return 255.0


def stack_source(path: str | Path, channels: int, network_input: bool = False) -> PageSource:
    """The pages of a TIFF stack, for a network with ``channels`` input channels (an RGB
    stack is converted to gray for a one-channel network); ``network_input``: as for
    :func:`isbi_unet.io.images.read_image`, judged on page 0."""
    from skimage.color import rgb2gray

    from isbi_unet.io.input_scale import warn_once_about_scale

    stack = open_stack(path)
    if network_input:
        warn_once_about_scale(np.asarray(stack.page(0)), f"{path} page 0")
    divisor = divisor_for(stack.page(0))
    if stack.channels == channels:
        def prepare(raw: np.ndarray) -> np.ndarray:
            return raw.astype(np.float32) / divisor
    elif stack.channels in (3, 4) and channels == 1:
        def prepare(raw: np.ndarray) -> np.ndarray:
            return rgb2gray(raw[..., :3].astype(np.float32) / divisor).astype(np.float32)[..., None]
    else:
        raise UserError(f"{path}: pages have {stack.channels} channels but the model expects {channels}")
    return PageSource(stack.path, [str(index) for index in range(stack.count)],
                      (stack.height, stack.width, channels), stack.page, prepare)


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file, from its header when PIL reads it, else from its pixels."""
    from PIL import Image

    from isbi_unet.io.images import read_image

    try:
        with Image.open(path) as image:
            return image.size[::-1]
    except (OSError, ValueError):
        return read_image(path).shape[:2]


def folder_source(folder: str | Path, channels: int, network_input: bool = False) -> PageSource:
    """The images of a folder (natural order) as the pages of one stack; they must all
    have one size. Each image is read when its page is predicted."""
    from isbi_unet.io.images import list_images, read_image

    paths = list_images(folder)
    sizes = {image_size(path) for path in paths}
    if len(sizes) > 1:
        raise UserError(f"{folder}: images of {len(sizes)} sizes cannot form one stack; write PNGs to a folder instead")
    height, width = sizes.pop()

    def read(index: int) -> np.ndarray:
        image = read_image(paths[index], as_gray=channels == 1, network_input=network_input)
        if image.shape[-1] != channels:
            raise UserError(f"{paths[index]}: has {image.shape[-1]} channels but the model expects {channels}")
        return image

    return PageSource(Path(folder), [path.stem for path in paths], (height, width, channels), read,
                      lambda raw: raw / np.float32(255.0))


def open_source(input_path: str | Path, channels: int, network_input: bool = False) -> PageSource:
    """A TIFF stack file or a folder of images as pages (``network_input`` as for :func:`stack_source`)."""
    source = stack_source if is_tiff_file(input_path) else folder_source
    return source(input_path, channels, network_input)
