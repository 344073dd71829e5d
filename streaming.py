"""Prediction into a float32 TIFF stack in bounded memory, from a TIFF stack or a folder.

Pages are read one at a time (memory-mapped when the input stack is uncompressed); in
overlap-tile mode only one batch of tiles is cut from a page at a time and each tile's
core is written straight into the output page's memory map, so memory stays at about
one input page plus one output page, whatever the size of the stack or of a section.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from errors import UserError
from inference_memory import TILE_MEMORY_BYTES, choose_mode, choose_tile_size, whole_image_bytes
from predict import (MODES, PredictFn, default_tiling, fixed_input_size, model_predict_fn, predict_image,
                     predict_overlap_tile, predict_whole_batch, with_tta)
from stacks import StackWriter, check_isbi_submission, is_tiff_file, open_stack


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


def stack_source(path: str | Path, channels: int) -> PageSource:
    """The pages of a TIFF stack, for a network with ``channels`` input channels (an RGB
    stack is converted to gray for a one-channel network)."""
    from skimage.color import rgb2gray

    stack = open_stack(path)
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

    from data import read_image

    try:
        with Image.open(path) as image:
            return image.size[::-1]
    except (OSError, ValueError):
        return read_image(path).shape[:2]


def folder_source(folder: str | Path, channels: int) -> PageSource:
    """The images of a folder (natural order) as the pages of one stack; they must all
    have one size. Each image is read when its page is predicted."""
    from data import list_images, read_image

    paths = list_images(folder)
    sizes = {image_size(path) for path in paths}
    if len(sizes) > 1:
        raise UserError(f"{folder}: images of {len(sizes)} sizes cannot form one stack; write PNGs to a folder instead")
    height, width = sizes.pop()

    def read(index: int) -> np.ndarray:
        image = read_image(paths[index], as_gray=channels == 1)
        if image.shape[-1] != channels:
            raise UserError(f"{paths[index]}: has {image.shape[-1]} channels but the model expects {channels}")
        return image

    return PageSource(Path(folder), [path.stem for path in paths], (height, width, channels), read,
                      lambda raw: raw / np.float32(255.0))


def open_source(input_path: str | Path, channels: int) -> PageSource:
    """A TIFF stack file or a folder of images as pages."""
    return stack_source(input_path, channels) if is_tiff_file(input_path) else folder_source(input_path, channels)


def predict_to_stack(
    model: keras.Model,
    input_path: str | Path,
    output_path: str | Path,
    mode: str = "auto",
    tta: bool = False,
    progress: bool = True,
    isbi_submission: bool = False,
    batch_size: int = 4,
    tile_size: int | None = None,
    predict_fn: PredictFn | None = None,
) -> Path:
    """Predict every page of ``input_path`` (TIFF stack or folder) into one float32 TIFF
    stack (N, H, W) (or (N, H, W, K) for K classes) at ``output_path``, same page order.

    mode: as predict.predict_image; "auto" resizes for a fixed-size model, else picks
    whole-image or overlap-tile prediction by page size and free memory
    (inference_memory.choose_mode). Overlap tiles are ``tile_size`` pixels square
    (default: inference_memory.choose_tile_size), as many at once as the same memory
    bound allows, at most ``batch_size``. With ``isbi_submission`` the stack must be the
    challenge's 30 slices of 512x512 and the model binary. The output file appears only
    when complete (written beside it, then renamed). ``predict_fn``: the engine, batch
    (B, h, w, C) -> (B, h, w, K) (default: the Keras model's); not used by "resize".
    Returns output_path.
    """
    from model import downsampling_factor

    if mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    output_path = Path(output_path)
    if output_path.is_dir():
        raise UserError(f"{output_path}: is a folder; give a .tif file name for the stack")
    if output_path.exists() and Path(input_path).exists() and output_path.resolve() == Path(input_path).resolve():
        raise UserError(f"{output_path}: writing the predictions would replace the input; choose another output")
    source = open_source(input_path, model.input_shape[-1])
    height, width, _ = source.shape
    classes = model.output_shape[-1]
    if isbi_submission:
        check_isbi_submission(len(source.names), height, width, classes)
    factor = downsampling_factor(model)
    fixed = fixed_input_size(model)
    if mode == "auto":
        mode = "resize" if fixed else choose_mode(model, height, width, batch=batch_size)
    if fixed and mode != "resize" and (height, width) != fixed:
        raise UserError(f"this model only accepts {fixed[0]}x{fixed[1]} inputs; use --mode resize")
    predict_fn = predict_fn or model_predict_fn(model)
    if tta:
        predict_fn = with_tta(predict_fn)
    tile, margin = default_tiling(int(math.log2(factor)))
    views = 8 if tta else 1
    if mode == "tile":
        tile = tile_size or choose_tile_size(model, height, width, margin, views=views)
        tiles_at_once = TILE_MEMORY_BYTES // max(1, whole_image_bytes(model, tile, tile, views))
        batch_size = int(min(batch_size, max(1, tiles_at_once)))
    per_page = math.ceil(height / (tile - 2 * margin)) * math.ceil(width / (tile - 2 * margin)) if mode == "tile" else 1
    bar = keras.utils.Progbar(len(source.names) * per_page, unit_name="tile" if mode == "tile" else "page") if progress else None
    writer = StackWriter(output_path, len(source.names), height, width, classes)
    try:
        group = batch_size if mode == "whole" else 1
        for start in range(0, len(source.names), group):
            indices = range(start, min(start + group, len(source.names)))
            if mode == "tile":
                page = writer.page(start)
                predict_overlap_tile(source.read(start), predict_fn, tile, margin, batch_size,
                                     out=page.reshape(height, width, classes), prepare=source.prepare,
                                     progress=bar.add if bar else None)
                page.flush()
                del page
                continue
            pages = np.stack([source.prepare(np.asarray(source.read(index))) for index in indices])
            if mode == "whole":
                predictions = predict_whole_batch(pages, predict_fn, factor)
            else:
                predictions = [predict_image(model, page, mode=mode, tta=tta) for page in pages]
            for index, prediction in zip(indices, predictions):
                page = writer.page(index)
                page[...] = prediction.reshape(page.shape)
                page.flush()
            if bar is not None:
                bar.add(len(indices))
    except BaseException:
        writer.abort()
        raise
    if progress:
        sys.stdout.flush()
    return writer.close()
