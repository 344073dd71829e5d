"""Prediction at each image's native size: whole-image, overlap-tile, or the seed's resize.

The pure functions take a ``predict_fn`` mapping a batch (B, h, w, C) to (B, h, w, K), so
they are tested without a network and work with any Keras backend.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np

from data import COLOR_DICT, labelVisualize
from isbi_unet.errors import UserError
from isbi_unet.io.images import list_images, read_image, to_uint8, write_image
from isbi_unet.prediction.tiling import (
    PredictFn,
    default_tiling,
    predict_overlap_tile,
    predict_resized,
    predict_whole,
    predict_whole_batch,
)
from isbi_unet.prediction.tta import with_tta
from isbi_unet.progress import progress_bar

MODES = ("auto", "whole", "tile", "resize")


def model_predict_fn(model: keras.Model, max_batch: int = 8) -> PredictFn:
    """Batch (B, h, w, C) -> numpy predictions (B, h, w, K), float32, for any backend.

    Batches larger than max_batch run in chunks, to bound memory (TTA multiplies by 8).
    """

    def predict_fn(batch: np.ndarray) -> np.ndarray:
        batch = batch.astype(np.float32)
        chunks = [np.asarray(model.predict_on_batch(batch[i:i + max_batch]), np.float32)
                  for i in range(0, len(batch), max_batch)]
        return np.concatenate(chunks)

    return predict_fn


def affinity_offsets(model: keras.Model) -> tuple | None:
    """The (dy, dx) offsets of an affinity model's channels (isbi_unet/training/affinities.py), None for others."""
    from isbi_unet.training.affinities import DEFAULT_OFFSETS, OUTPUT_LAYER

    if model.layers[-1].name != OUTPUT_LAYER:
        return None
    if model.output_shape[-1] != len(DEFAULT_OFFSETS):
        raise UserError(f"this affinity model has {model.output_shape[-1]} channels, but "
                        f"{len(DEFAULT_OFFSETS)} offsets are known (affinities.DEFAULT_OFFSETS)")
    return DEFAULT_OFFSETS


def fixed_input_size(model: keras.Model) -> tuple[int, int] | None:
    """(h, w) when the model only accepts one size (the seed's 256x256), else None."""
    height, width = model.input_shape[1:3]
    return (height, width) if height is not None and width is not None else None


def predict_image(
    model: keras.Model,
    image: np.ndarray,
    mode: str = "auto",
    tta: bool = False,
    tile_size: int | None = None,
    margin: int | None = None,
    predict_fn: PredictFn | None = None,
) -> np.ndarray:
    """Predict one (H, W, C) image in [0, 1] at its native size: returns (H, W, K).

    mode: "whole" (mirror-pad to a multiple of 2**depth), "tile" (overlap-tile),
    "resize" (the seed's: to the model's fixed input size and back), or "auto": resize
    for a fixed-size model, else whole or tile by image size and free memory
    (inference_memory.choose_mode). predict_fn: runs the network instead of
    ``model_predict_fn(model)`` (e.g. ``isbi_unet.prediction.engines.onnx_predict_fn``); model still gives the
    sizes.
    """
    from isbi_unet.network import downsampling_factor
    from isbi_unet.prediction.memory import choose_mode

    if mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    fixed = fixed_input_size(model)
    if mode == "auto":
        mode = "resize" if fixed else choose_mode(model, *image.shape[:2])
    if fixed and mode != "resize" and image.shape[:2] != fixed:
        raise UserError(f"this model only accepts {fixed[0]}x{fixed[1]} inputs; use --mode resize")
    predict_fn = predict_fn or model_predict_fn(model)
    if tta:
        predict_fn = with_tta(predict_fn, affinity_offsets(model))
    factor = downsampling_factor(model)
    if mode == "resize":
        return predict_resized(image, predict_fn, fixed or (256, 256))
    if mode == "tile":
        default_tile, default_margin = default_tiling(int(math.log2(factor)))
        return predict_overlap_tile(image, predict_fn, tile_size or default_tile, margin if margin is not None else default_margin)
    return predict_whole(image, predict_fn, factor)


def prediction_to_png(prediction: np.ndarray) -> np.ndarray:
    """(H, W, 1) probabilities -> (H, W) uint8; (H, W, K) scores -> (H, W, 3) colours."""
    if prediction.shape[-1] == 1:
        return to_uint8(prediction)
    colours = labelVisualize(prediction.shape[-1], COLOR_DICT, prediction)
    return (colours * 255).round().astype(np.uint8)


def check_output_folder(output_dir: Path, inputs: Sequence[Path]) -> None:
    """Refuse an output path that is a file, or whose files would replace an input."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"{output_dir}: output path is a file; give a folder with --output")
    input_set = {path.resolve() for path in inputs}
    for path in inputs:
        target = (output_dir / f"{path.stem}_predict.png").resolve()
        if target in input_set:
            raise UserError(f"{target}: writing the prediction would replace an input image; choose another --output")


def predict_folder(
    model: keras.Model,
    input_dir: str | Path,
    output_dir: str | Path,
    mode: str = "auto",
    tta: bool = False,
    names: Sequence[str] | None = None,
    progress: bool = True,
    batch_size: int = 4,
    picture: Callable[[np.ndarray], np.ndarray] | None = None,
    predict_fn: PredictFn | None = None,
) -> list[Path]:
    """Predict every image of input_dir; write ``{stem}_predict.png`` (8-bit) at native size.

    Every image is read and checked before anything is written; then one batch at a time
    is held in memory. Earlier ``*_predict.png`` (and ``*_labels``, ``*_overlay``) files in input_dir are not inputs. ``names`` restricts to
    those stems. In whole-image mode, consecutive images of one size are predicted
    ``batch_size`` at a time; "auto" predicts whole images when they fit in memory
    (inference_memory.choose_mode), else tiles. predict_fn: as for ``predict_image``.
    ``picture``: turns a prediction (H, W, K) into the PNG's (H, W) uint8 pixels; default
    :func:`prediction_to_png`. An affinity model needs one (the command line passes the
    mutex watershed's mask, :func:`isbi_unet.cells.mutex_watershed.segments_mask`).
    Returns the written paths.
    """
    from isbi_unet.network import downsampling_factor
    from isbi_unet.prediction.memory import choose_mode

    inputs = list_images(input_dir, exclude_suffix=("_predict", "_labels", "_overlay"))  # not earlier outputs
    if names is not None:
        wanted = {str(name) for name in names}
        inputs = [path for path in inputs if path.stem in wanted]
    output_dir = Path(output_dir)
    check_output_folder(output_dir, inputs)
    channels = model.input_shape[-1]

    def read(path: Path) -> np.ndarray:
        image = read_image(path, as_gray=channels == 1, network_input=True)
        if image.shape[-1] != channels:
            raise UserError(f"{path}: has {image.shape[-1]} channels but the model expects {channels}")
        return image

    shapes = [read(path).shape for path in inputs]  # every image is read and checked before anything is written
    output_dir.mkdir(parents=True, exist_ok=True)
    bar = progress_bar(len(inputs), "image") if progress else None
    offsets = affinity_offsets(model)
    if offsets is not None and picture is None:
        raise ValueError("an affinity model's prediction needs picture= (e.g. the mutex watershed's segments_mask)")
    written = []
    start = 0
    while start < len(inputs):
        whole = fixed_input_size(model) is None and (mode == "whole" or (
            mode == "auto" and choose_mode(model, *shapes[start][:2], batch=batch_size) == "whole"))
        stop = start + 1
        while whole and stop < len(inputs) and stop - start < batch_size and shapes[stop] == shapes[start]:
            stop += 1
        batch = [read(path) for path in inputs[start:stop]]  # one batch in memory at a time
        if whole:
            network_fn = predict_fn or model_predict_fn(model)
            predictions = predict_whole_batch(np.stack(batch) / 255.0,
                                              with_tta(network_fn, offsets) if tta else network_fn,
                                              downsampling_factor(model))
        else:
            predictions = [predict_image(model, batch[0] / 255.0, mode=mode, tta=tta, predict_fn=predict_fn)]
        for path, prediction in zip(inputs[start:stop], predictions):
            written.append(write_image(output_dir / f"{path.stem}_predict.png", (picture or prediction_to_png)(prediction)))
        if bar is not None:
            bar.add(stop - start)
        start = stop
    if progress:
        sys.stdout.flush()
    return written
