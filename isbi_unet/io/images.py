"""Image files: listing in natural order, reading, RGB -> gray, atomic writes.

The one place where the project touches image files, so that training, prediction,
evaluation and fetching agree on which files a folder holds, in which order, and what
gray value an RGB pixel has. A file that cannot be read (not an image, empty,
truncated) is a :class:`errors.UserError` naming the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from isbi_unet.errors import UserError
from isbi_unet.io.input_scale import warn_once_about_scale

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
# ITU-R BT.709 luma, the weights of skimage.color.rgb2gray (they sum to 1).
LUMINANCE = np.array([0.2125, 0.7154, 0.0721])


def natural_key(name: str | Path) -> tuple:
    """Sort key of a file name or stem in natural order: ``2.png`` before ``10.png``."""
    stem = Path(name).stem if isinstance(name, Path) else str(name)
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", stem))


def list_images(folder: str | Path, exclude_suffix: str | None = "_predict", what: str = "image") -> list[Path]:
    """Image files (IMAGE_SUFFIXES) of a folder in natural order.

    Files whose stem ends with ``exclude_suffix`` (earlier predictions) are left out;
    None keeps them. ``what`` names the folder in messages. Raises UserError when the
    folder is missing, is a file, or holds no images.
    """
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{folder}: {what} folder not found; check the path")
    if not folder.is_dir():
        raise UserError(f"{folder}: {what} path is a file, not a folder; give the folder that holds the images")
    files = [
        path for path in folder.iterdir()
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
        and not (exclude_suffix and path.stem.endswith(exclude_suffix))
    ]
    if not files:
        raise UserError(f"{folder}: no {what}s ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return sorted(files, key=lambda path: natural_key(path.name))


def _reason(error: Exception) -> str:
    """The first line of a decoder's message, without imageio's plugin advice."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if text.startswith("Could not find a backend"):
        return "not an image in a known format, or a corrupt one"
    return text


def read_array(path: str | Path) -> np.ndarray:
    """Decode one image file as it is stored: (H, W) or (H, W, C), its own dtype.

    Raises UserError naming the file when it is missing, empty, not an image or corrupt.
    """
    import skimage.io  # lazy: skimage.io costs ~0.3 s to import

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file, not an image; replace or remove it")
    try:
        with warnings.catch_warnings():  # imageio's deprecation notes about plugins it tried
            warnings.simplefilter("ignore", DeprecationWarning)
            array = np.asarray(skimage.io.imread(path))
    except (OSError, ValueError, SyntaxError, RuntimeError, TypeError, IndexError) as error:
        raise UserError(f"{path}: cannot read this image ({_reason(error)}); replace or remove it") from None
    if array.dtype == object or array.size == 0:
        raise UserError(f"{path}: cannot read this image (no pixel data); replace or remove it")
    return array


def to_gray(array: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), RGB or RGBA -> (H, W) luminance (BT.709), same dtype.

    RGBA is composited on white first. Integer images are rounded back to their integer
    type, so an 8-bit RGB file gives the same 8-bit gray map to training, prediction and
    evaluation; a gray image stored as RGB (R = G = B) keeps its values exactly.
    """
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        return array[..., 0]
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        if array.ndim == 2:
            return array
        raise ValueError(f"expected (H, W), (H, W, 1), RGB or RGBA, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    values = array.astype(np.float64)
    if array.shape[-1] == 4:
        full = float(np.iinfo(array.dtype).max) if np.issubdtype(array.dtype, np.integer) else 1.0
        alpha = values[..., 3:] / full
        values = values[..., :3] * alpha + full * (1.0 - alpha)
    gray = values @ LUMINANCE
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        return np.clip(np.rint(gray), info.min, info.max).astype(array.dtype)
    return gray.astype(array.dtype)


def read_gray(path: str | Path) -> np.ndarray:
    """One image file as a 2-D (H, W) map in its stored dtype, RGB(A) converted by to_gray.

    A single-page (1, H, W) stack is taken as its page. For label and probability maps,
    whose values keep their meaning (NaN included). Raises UserError for other shapes.
    """
    array = read_array(path)
    if array.ndim == 3 and array.shape[0] == 1 and array.shape[-1] not in (1, 3, 4):
        array = array[0]
    try:
        return to_gray(array)
    except ValueError:
        raise UserError(f"{path}: image has shape {array.shape}, expected one 2-D gray or RGB slice") from None


def read_label_ids(path: str | Path) -> np.ndarray:
    """A label image as (H, W) ids, one per cell: its values as :func:`read_gray` reads
    them, or for a colour-coded RGB(A) image (cells drawn in distinct colours) one id per
    colour, 1, 2, ... in order of first appearance, black (and transparent) = 0.
    """
    array = read_array(path)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        colours = array[..., :3]
        if array.shape[-1] == 4:
            colours = np.where(array[..., 3:] > 0, colours, 0)
        flat = colours.reshape(-1, 3)
        if (flat != flat[:, :1]).any():  # not a gray image stored as RGB
            coloured = flat.any(axis=1)
            _, first, inverse = np.unique(flat[coloured], axis=0, return_index=True, return_inverse=True)
            rank = np.empty(len(first), np.int32)
            rank[np.argsort(first, kind="stable")] = np.arange(1, len(first) + 1)
            labels = np.zeros(len(flat), np.int32)
            labels[coloured] = rank[inverse.ravel()]
            return labels.reshape(colours.shape[:2])
    return read_gray(path)


def read_image(path: str | Path, as_gray: bool = True, network_input: bool = False) -> np.ndarray:
    """Read one network input as float32 (H, W, C) on the 0-255 scale (C = 1 when as_gray).

    16-bit images are divided by 257, booleans and float images in [0, 1] scaled to 255;
    RGB(A) becomes gray with to_gray (RGBA composited on white also when not as_gray).
    ``network_input``: the image is one the network will see (not a mask or a map): say so
    in a ``warning:`` line, once per kind, when it lies far from that scale
    (:func:`isbi_unet.io.input_scale.scale_warning`).
    Raises UserError for an unreadable file, another shape, or a NaN/inf pixel.
    """
    array = read_array(path)
    if network_input:  # not for masks and maps, whose values mean classes and probabilities
        warn_once_about_scale(array, path)
    return image_from_array(array, path, as_gray)


def image_from_array(array: np.ndarray, path: str | Path, as_gray: bool = True) -> np.ndarray:
    """:func:`read_image` of pixels already read from ``path`` (named in errors)."""
    if array.ndim == 3 and array.shape[-1] == 4:
        array = to_gray(array) if as_gray else _composite_on_white(array)
    elif as_gray or (array.ndim == 3 and array.shape[-1] == 1):
        try:
            array = to_gray(array)
        except ValueError:
            raise UserError(f"{path}: image has shape {array.shape}, expected a 2-D gray or RGB image") from None
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise UserError(f"{path}: image has shape {array.shape}, expected a 2-D gray or RGB image")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise UserError(f"{path}: {bad} pixel(s) are NaN or infinite; the network needs finite values")
    if array.dtype == np.uint16:
        return (array / 257.0).astype(np.float32)
    if array.dtype == bool:
        return array.astype(np.float32) * 255.0
    if np.issubdtype(array.dtype, np.floating) and array.max(initial=0) <= 1.0:
        return array.astype(np.float32) * 255.0
    return array.astype(np.float32)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) -> (H, W, 3) in the same dtype, transparent parts white."""
    full = float(np.iinfo(rgba.dtype).max) if np.issubdtype(rgba.dtype, np.integer) else 1.0
    alpha = rgba[..., 3:].astype(np.float64) / full
    rgb = rgba[..., :3] * alpha + full * (1.0 - alpha)
    return np.rint(rgb).astype(rgba.dtype) if np.issubdtype(rgba.dtype, np.integer) else rgb.astype(rgba.dtype)


def writable_path(path: str | Path, option: str, kind: str) -> Path:
    """``path`` when a command can write it; UserError otherwise, before anything is written.

    ``kind``: "file" (must not be an existing folder), "folder" (must not be an existing
    file) or "any". In every kind, no parent of ``path`` may be an existing file.
    """
    path = Path(path)
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{option} {path}: {parent} is a file, not a folder; choose another {option}")
    if kind == "file" and path.is_dir():
        raise UserError(f"{option} {path}: is a folder; give a file name")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise UserError(f"{option} {path}: is a file; give a folder")
    return path

@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    The temporary file is hidden (``.NAME.partial-XXXX.SUFFIX``, keeping the suffix so
    that writers can infer the format) and removed when the body raises, so a crash
    never leaves a half-written ``path``. The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.partial-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write (H, W) or (H, W, 3) uint8 (or uint16) pixels atomically; the suffix picks the format."""
    import imageio.v3 as iio  # lazy; comes with scikit-image

    path = Path(path)
    with atomic_path(path) as temporary:
        iio.imwrite(temporary, np.asarray(image), extension=path.suffix.lower())
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write a UTF-8 text file (JSON, TSV) atomically."""
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path


def write_json(path: str | Path, data: dict) -> Path:
    """Write ``data`` as indented JSON atomically; NaN or infinity is a ValueError (not JSON)."""
    return write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def resize_to(array: np.ndarray, target_size: Sequence[int], order: int) -> np.ndarray:
    """Resize (H, W, C) to target_size=(h, w), keeping the value range."""
    if tuple(array.shape[:2]) == tuple(target_size):
        return array
    import skimage.transform as trans  # lazy: the command line imports this module for its paths

    return trans.resize(
        array, tuple(target_size) + array.shape[2:], order=order,
        preserve_range=True, anti_aliasing=order > 0,
    ).astype(np.float32)


def resize_image(image: np.ndarray, target_size: Sequence[int]) -> np.ndarray:
    """Resize a network input (H, W, C) to (h, w, C): bilinear with anti-aliasing.

    The one interpolation of images in the seed's resize mode, in training
    (``load_training_data``, ``trainGenerator``, ``testGenerator``) and in prediction
    (``isbi_unet.prediction.tiling.predict_resized``), so the network sees the same kind of pixels in both.
    Masks are resized with ``resize_to(mask, size, order=0)`` to keep their labels.
    """
    return resize_to(image, target_size, order=1)


def to_uint8(probability: np.ndarray) -> np.ndarray:
    """(H, W[, 1]) values in [0, 1] -> (H, W) uint8 in 0..255."""
    probability = np.asarray(probability, dtype=np.float32)
    if probability.ndim == 3:
        probability = probability[..., 0]
    return np.clip(np.rint(probability * 255.0), 0, 255).astype(np.uint8)
