"""Prediction into a float32 TIFF stack in bounded memory, from a TIFF stack or a folder.

Pages are read one at a time (memory-mapped when the input stack is uncompressed); in
overlap-tile mode only one batch of tiles is cut from a page at a time and each tile's
core is written straight into the output page's memory map, so memory stays at about
one input page plus one output page, whatever the size of the stack or of a section.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import keras
import numpy as np

from isbi_unet.errors import UserError
from isbi_unet.evaluation.stacks import check_isbi_submission
from isbi_unet.io.stacks import StackWriter, open_source
from isbi_unet.prediction.memory import (
    TILE_MEMORY_BYTES,
    choose_mode,
    choose_tile_size,
    whole_image_bytes,
)
from isbi_unet.prediction.predict import (
    MODES,
    PredictFn,
    fixed_input_size,
    model_predict_fn,
    predict_image,
)
from isbi_unet.prediction.tiling import (
    default_tiling,
    predict_overlap_tile,
    predict_whole_batch,
)
from isbi_unet.prediction.tta import with_tta
from isbi_unet.progress import progress_bar


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
    from isbi_unet.network import downsampling_factor

    if mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    output_path = Path(output_path)
    if output_path.is_dir():
        raise UserError(f"{output_path}: is a folder; give a .tif file name for the stack")
    if output_path.exists() and Path(input_path).exists() and output_path.resolve() == Path(input_path).resolve():
        raise UserError(f"{output_path}: writing the predictions would replace the input; choose another output")
    source = open_source(input_path, model.input_shape[-1], network_input=True)
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
    bar = progress_bar(len(source.names) * per_page, "tile" if mode == "tile" else "page") if progress else None
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
