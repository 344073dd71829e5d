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

from data import COLOR_DICT, labelVisualize, resize_image, resize_to, to_uint8
from errors import UserError
from images import list_images, read_image, write_image

PredictFn = Callable[[np.ndarray], np.ndarray]
MODES = ("auto", "whole", "tile", "resize")


def receptive_field(depth: int = 4) -> int:
    """Receptive field in pixels of unet(depth=depth): 217 for the seed's depth 4.

    Each 3x3 conv adds 2 * jump, each 2x2 pool or 2x2 up-conv adds 1 * jump, where jump is
    the pixel stride of that level (2**level).
    """
    field, jump = 1, 1
    for _ in range(depth):  # encoder: two 3x3 convs, then pool
        field += 4 * jump + jump
        jump *= 2
    field += 4 * jump  # bottleneck
    for _ in range(depth):  # decoder: upsample, 2x2 conv, two 3x3 convs
        jump //= 2
        field += jump + 4 * jump
    return field + 2  # the seed's Conv2D(2, 3) head


def default_tiling(depth: int = 4) -> tuple[int, int]:
    """(tile, margin): margin is half the receptive field rounded up to a multiple of
    2**depth (112 for depth 4); the tile is the smallest multiple of 2**depth with a core
    (tile - 2 * margin) at least as wide as 2 * margin (448 for depth 4)."""
    step = 2**depth
    margin = math.ceil(receptive_field(depth) / 2 / step) * step
    return 4 * margin, margin


def predict_whole(image: np.ndarray, predict_fn: PredictFn, multiple: int = 16) -> np.ndarray:
    """Predict (H, W, C) in one piece, mirror-padded to a multiple: returns (H, W, K)."""
    return predict_whole_batch(image[None], predict_fn, multiple)[0]


def predict_whole_batch(images: np.ndarray, predict_fn: PredictFn, multiple: int = 16) -> np.ndarray:
    """Predict (B, H, W, C) images of one size in one call: returns (B, H, W, K)."""
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (0, (-height) % multiple), (0, (-width) % multiple), (0, 0)), mode="symmetric")
    return predict_fn(padded)[:, :height, :width]


def mirrored_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices into 0..size-1 of positions start..stop-1 of a line extended by mirroring,
    as numpy.pad mode "symmetric" extends it (... 1 0 | 0 1 ... size-1 | size-1 ...)."""
    positions = np.arange(start, stop) % (2 * size)
    return np.where(positions < size, positions, 2 * size - 1 - positions)


def mirrored_window(image: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """The (height, width, C) window at (top, left) of (H, W, C) ``image`` mirror-extended
    beyond its borders; reads only the window's pixels (``image`` may be a memory map)."""
    rows = mirrored_indices(top, top + height, image.shape[0])
    cols = mirrored_indices(left, left + width, image.shape[1])
    if 0 <= top and top + height <= image.shape[0] and 0 <= left and left + width <= image.shape[1]:
        return np.asarray(image[top:top + height, left:left + width])
    return np.asarray(image[np.ix_(rows, cols)])


def predict_overlap_tile(
    image: np.ndarray,
    predict_fn: PredictFn,
    tile_size: int = 448,
    margin: int = 112,
    batch_size: int = 4,
    out: np.ndarray | None = None,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The paper's overlap-tile strategy for an image of any size.

    The image (H, W, C) is seen mirror-extended by ``margin`` (more at the bottom/right to
    fit whole tiles), as numpy.pad mode "symmetric" would pad it, but only one batch of
    tiles is ever cut out, so ``image`` may be a memory map larger than memory. Tiles of
    ``tile_size`` x ``tile_size`` are taken with stride ``core = tile_size - 2 * margin``;
    of each tile's prediction only the central core is kept, so every kept pixel saw
    ``margin`` pixels of real or mirrored context on each side. ``prepare`` maps a raw
    tile to the network's input (default: as it is); ``out`` (H, W, K) receives the
    prediction (default: a new float32 array); ``progress(n)`` is called after each batch
    of n tiles. Returns ``out``, (H, W, K).
    """
    core = tile_size - 2 * margin
    if core <= 0:
        raise ValueError(f"tile_size {tile_size} must exceed 2 * margin ({2 * margin})")
    height, width = image.shape[:2]
    origins = [(r, c) for r in range(0, height, core) for c in range(0, width, core)]
    for start in range(0, len(origins), batch_size):
        chunk = origins[start:start + batch_size]
        tiles = [mirrored_window(image, r - margin, c - margin, tile_size, tile_size) for r, c in chunk]
        predictions = predict_fn(np.stack([prepare(tile) for tile in tiles] if prepare else tiles))
        if out is None:
            out = np.zeros((height, width, predictions.shape[-1]), np.float32)
        for (r, c), prediction in zip(chunk, predictions):
            rows, cols = min(core, height - r), min(core, width - c)
            out[r:r + rows, c:c + cols] = prediction[margin:margin + rows, margin:margin + cols]
        if progress is not None:
            progress(len(chunk))
    return out


def predict_resized(image: np.ndarray, predict_fn: PredictFn, target_size: Sequence[int]) -> np.ndarray:
    """The seed's way: resize (H, W, C) to target_size, predict, resize back to (H, W, K).

    The image is resized with ``data.resize_image``, as training's resize mode does.
    """
    small = resize_image(image, target_size)
    prediction = predict_fn(small[None])[0]
    return resize_to(prediction, image.shape[:2], order=1)


def with_tta(predict_fn: PredictFn, offsets: Sequence[Sequence[int]] | None = None) -> PredictFn:
    """Wrap predict_fn to average over the 8 flips and quarter turns (square inputs).

    ``offsets``: the outputs are affinities of these (dy, dx) offsets (affinities.py);
    a flip or turn changes an offset's direction, so each view's channels are mapped
    back to the offsets they stand for (``affinities.restore_view``) before averaging.
    """

    def averaged(batch: np.ndarray) -> np.ndarray:
        views = []
        for flip in (False, True):
            flipped = batch[:, :, ::-1] if flip else batch
            views.extend(np.rot90(flipped, k, axes=(1, 2)) for k in range(4))
        same_shape = all(view.shape == batch.shape for view in views)
        if same_shape:
            outputs = np.split(predict_fn(np.concatenate(views)), 8)
        else:
            outputs = [predict_fn(np.ascontiguousarray(view)) for view in views]
        if offsets is not None:
            from affinities import restore_view

            total, count = 0.0, 0.0
            for index, output in enumerate(outputs):
                restored, known = restore_view(output, offsets, *divmod(index, 4))
                total, count = total + restored * known, count + known
            return total / np.maximum(count, 1.0)
        total = 0.0
        for index, output in enumerate(outputs):
            flip, k = divmod(index, 4)
            restored = np.rot90(output, -k, axes=(1, 2))
            total = total + (restored[:, :, ::-1] if flip else restored)
        return total / 8.0

    return averaged


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
    """The (dy, dx) offsets of an affinity model's channels (affinities.py), None for others."""
    from affinities import DEFAULT_OFFSETS, OUTPUT_LAYER

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
    ``model_predict_fn(model)`` (e.g. ``export.onnx_predict_fn``); model still gives the
    sizes.
    """
    from inference_memory import choose_mode
    from model import downsampling_factor

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
    mws: dict | None = None,
    predict_fn: PredictFn | None = None,
) -> list[Path]:
    """Predict every image of input_dir; write ``{stem}_predict.png`` (8-bit) at native size.

    Earlier ``*_predict.png`` (and ``*_labels``, ``*_overlay``) files in input_dir are not inputs. ``names`` restricts to
    those stems. In whole-image mode, consecutive images of one size are predicted
    ``batch_size`` at a time; "auto" predicts whole images when they fit in memory
    (inference_memory.choose_mode), else tiles. predict_fn: as for ``predict_image``. For
    an affinity model the PNG is its mutex-watershed segmentation as a mask, 255 in
    segments and 0 on their boundaries (``affinities.mws_segmentation`` with the keyword
    arguments ``mws``). Returns the written paths.
    """
    from inference_memory import choose_mode
    from model import downsampling_factor

    inputs = list_images(input_dir, exclude_suffix=("_predict", "_labels", "_overlay"))  # not earlier outputs
    if names is not None:
        wanted = {str(name) for name in names}
        inputs = [path for path in inputs if path.stem in wanted]
    output_dir = Path(output_dir)
    check_output_folder(output_dir, inputs)
    channels = model.input_shape[-1]
    images = [read_image(path, as_gray=channels == 1) for path in inputs]
    for path, image in zip(inputs, images):
        if image.shape[-1] != channels:
            raise UserError(f"{path}: has {image.shape[-1]} channels but the model expects {channels}")
    output_dir.mkdir(parents=True, exist_ok=True)
    bar = keras.utils.Progbar(len(inputs), unit_name="image") if progress else None
    offsets = affinity_offsets(model)
    written = []
    start = 0
    while start < len(inputs):
        whole = fixed_input_size(model) is None and (mode == "whole" or (
            mode == "auto" and choose_mode(model, *images[start].shape[:2], batch=batch_size) == "whole"))
        stop = start + 1
        while whole and stop < len(inputs) and stop - start < batch_size and images[stop].shape == images[start].shape:
            stop += 1
        if whole:
            network_fn = predict_fn or model_predict_fn(model)
            predictions = predict_whole_batch(np.stack(images[start:stop]) / 255.0,
                                              with_tta(network_fn, offsets) if tta else network_fn,
                                              downsampling_factor(model))
        else:
            predictions = [predict_image(model, images[start] / 255.0, mode=mode, tta=tta, predict_fn=predict_fn)]
        for path, prediction in zip(inputs[start:stop], predictions):
            if offsets is not None:
                from affinities import mws_segmentation

                picture = np.where(mws_segmentation(prediction, offsets, **(mws or {})) > 0, 255, 0).astype(np.uint8)
            else:
                picture = prediction_to_png(prediction)
            written.append(write_image(output_dir / f"{path.stem}_predict.png", picture))
        if bar is not None:
            bar.add(stop - start)
        start = stop
    if progress:
        sys.stdout.flush()
    return written
