"""How much memory whole-image prediction needs, and the choice of ``--mode auto``.

Whole-image prediction holds the network's activations for the whole image: on an
8192x8192 section a width-16 U-Net ran for over 14 minutes at 15 GB RSS, where
overlap-tile prediction took 90 s at 1.9 GiB. ``choose_mode`` therefore predicts whole
images only when their activations fit comfortably in the memory available now.
"""

from __future__ import annotations

import math
import os
import weakref

import keras
import numpy as np

# Whole-image prediction is chosen when its activations' bound is at most this share of
# the memory available (the rest: the framework, the image, its output, other programs).
WHOLE_IMAGE_MEMORY_SHARE = 0.5
# Bound (see whole_image_bytes) on the activations of the tiles predicted at once when
# streaming overlap tiles: larger tiles waste less of each tile on its margins.
TILE_MEMORY_BYTES = 2**30
_VALUES_PER_PIXEL: "weakref.WeakKeyDictionary[keras.Model, float]" = weakref.WeakKeyDictionary()


def activation_values_per_pixel(model: keras.Model) -> float:
    """Values of all layer outputs together per input pixel, for one image (from the
    layers' output shapes at a probe size that every level divides)."""
    if model in _VALUES_PER_PIXEL:
        return _VALUES_PER_PIXEL[model]
    probe = 2 ** 8
    channels = model.input_shape[-1]
    outputs = [layer.output for layer in model.layers[1:]]
    shapes = keras.Model(model.inputs, outputs).compute_output_shape((1, probe, probe, channels))
    _VALUES_PER_PIXEL[model] = float(sum(np.prod(shape[1:]) for shape in shapes)) / probe**2
    return _VALUES_PER_PIXEL[model]


def whole_image_bytes(model: keras.Model, height: int, width: int, batch: int = 1) -> int:
    """Upper bound, in bytes, of the activations of predicting ``batch`` (H, W) images in
    one call: every layer's output held at once, in the model's compute dtype.

    (Measured on TensorFlow/CPU with a width-16 model at 1024x1024: the peak RSS grew by
    382 B/pixel, a third of this bound's 1146 B/pixel.)
    """
    itemsize = np.dtype(model.dtype_policy.compute_dtype).itemsize
    return int(activation_values_per_pixel(model) * itemsize * height * width * batch)


def available_memory_bytes() -> int:
    """Memory available to a new allocation now (Linux MemAvailable, else free pages)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def choose_mode(model: keras.Model, height: int, width: int, batch: int = 1,
                available: int | None = None) -> str:
    """"whole" when predicting (H, W) images ``batch`` at a time fits in
    WHOLE_IMAGE_MEMORY_SHARE of ``available`` bytes (default: available now), else "tile"."""
    available = available_memory_bytes() if available is None else available
    fits = whole_image_bytes(model, height, width, batch) <= WHOLE_IMAGE_MEMORY_SHARE * available
    return "whole" if fits else "tile"


def choose_tile_size(model: keras.Model, height: int, width: int, margin: int, views: int = 1,
                     budget: int = TILE_MEMORY_BYTES) -> int:
    """Side of square overlap tiles for an (H, W) image: the largest multiple of 2**depth
    whose activations' bound for ``views`` tiles at once (8 with test-time augmentation)
    stays within ``budget`` bytes, no larger than the image needs, and at least
    4 * margin (predict.default_tiling's size)."""
    from isbi_unet.network import downsampling_factor

    step = downsampling_factor(model)
    per_pixel = whole_image_bytes(model, 1, 1) or 1
    side = int(math.sqrt(budget / (per_pixel * views))) // step * step
    needed = math.ceil(max(height, width) / step) * step + 2 * margin
    return max(4 * margin, min(side, needed))
