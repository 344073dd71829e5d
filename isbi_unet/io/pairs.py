"""Image/mask pairs of a training folder: matching masks to images, reading them, checking mask values.

Images are read as (H, W, C) and masks as (H, W, 1), float32 on the 0-255 scale
(see :mod:`images`). The checks raise :class:`errors.UserError` with one line naming
the file. :mod:`data` re-exports these names.

Binary masks here say 255 (or 1) = cell, 0 = membrane, as ISBI's labels do. Masks drawn
the other way round (non-zero = membrane) are read with ``mask_foreground="membrane"``:
:func:`as_cell_mask` turns them into the cell convention as they are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from isbi_unet.errors import UserError
from isbi_unet.io.images import IMAGE_SUFFIXES, list_images, read_gray, read_image


def find_mask(image_path: Path, mask_folder: Path) -> Path | None:
    """The mask of an image: the same stem, or the stem with a ``_mask`` suffix."""
    for stem in (image_path.stem, image_path.stem + "_mask"):
        for suffix in IMAGE_SUFFIXES:
            for candidate in (mask_folder / (stem + suffix), mask_folder / (stem + suffix.upper())):
                if candidate.is_file():
                    return candidate
    return None


MASK_FOREGROUNDS: tuple[str, ...] = ("cell", "membrane")  # what a binary mask's non-zero pixels are


def as_cell_mask(mask: np.ndarray, mask_foreground: str = "cell") -> np.ndarray:
    """A binary mask in the cell convention (non-zero = cell, 0 = membrane), any shape.

    ``mask_foreground``: what the mask's non-zero pixels are. "cell" returns ``mask``
    as it is; "membrane" returns 255 where it is 0 and 0 elsewhere (float32; 255 on the
    0-255 scale the readers use, whether the file was 0/1 or 0/255).
    """
    if mask_foreground not in MASK_FOREGROUNDS:
        raise ValueError(f"mask_foreground must be one of {MASK_FOREGROUNDS}, not {mask_foreground!r}")
    if mask_foreground == "cell":
        return mask
    return np.where(np.asarray(mask) == 0, np.float32(255.0), np.float32(0.0))


def read_label(label_folder: str | Path, name: str, mask_foreground: str = "cell") -> np.ndarray:
    """The label (H, W) of slice ``name``: ``name.<ext>`` or ``name_mask.<ext>`` in
    ``label_folder``, in the cell convention (:func:`as_cell_mask`). UserError when missing."""
    path = find_mask(Path(name), Path(label_folder))
    if path is None:
        raise UserError(f"no label image {name}.png (or {name}_mask.png) in {label_folder}")
    return as_cell_mask(read_gray(path), mask_foreground)


def load_pairs(
    image_folder: str | Path,
    mask_folder: str | Path,
    as_gray: bool = True,
    ids: Sequence[str] | None = None,
    check_mask: Callable[[np.ndarray, str], None] | None = None,
    mask_foreground: str = "cell",
) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Read matched image/mask pairs from two folders.

    Returns (names, images, masks): images (H, W, C) and masks (H, W, 1), float32 on the
    0-255 scale. ``ids`` restricts to those image stems; ``check_mask(mask, path)`` may
    raise UserError for unexpected mask values; binary masks of ``mask_foreground``
    "membrane" are turned round (:func:`as_cell_mask`) after that check. Raises
    UserError for an image without a mask, a mask without an image, or a size mismatch.
    """
    image_folder, mask_folder = Path(image_folder), Path(mask_folder)
    image_paths = list_images(image_folder)
    mask_paths = list_images(mask_folder)
    matched = {}
    for image_path in image_paths:
        mask_path = find_mask(image_path, mask_folder)
        if mask_path is None:
            raise UserError(
                f"{image_path}: no mask named {image_path.stem}.png (or {image_path.stem}_mask.png) "
                f"in {mask_folder}; add it or remove the image"
            )
        matched[image_path] = mask_path
    orphans = sorted(set(mask_paths) - set(matched.values()))
    if orphans:
        raise UserError(f"{orphans[0]}: mask without an image in {image_folder}; add the image or remove the mask")
    if ids is not None:
        wanted = {str(i) for i in ids}
        missing = wanted - {path.stem for path in matched}
        if missing:
            raise UserError(f"{image_folder}: no image named {sorted(missing)[0]} (asked for by the validation ids)")
        matched = {path: mask for path, mask in matched.items() if path.stem in wanted}
    names, images, masks = [], [], []
    for image_path, mask_path in matched.items():
        image = read_image(image_path, as_gray=as_gray, network_input=True)
        mask = read_image(mask_path, as_gray=True)
        if check_mask is not None:
            check_mask(mask, str(mask_path))
        mask = as_cell_mask(mask, mask_foreground)
        if image.shape[:2] != mask.shape[:2]:
            raise UserError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                f"{image.shape[1]}x{image.shape[0]}; they must be the same size"
            )
        names.append(image_path.stem)
        images.append(image)
        masks.append(mask)
    return names, images, masks


def check_label_mask(mask: np.ndarray, name: str, num_class: int) -> None:
    """Refuse a multi-class mask whose values are not integers 0 .. num_class - 1."""
    values = np.unique(mask)
    bad = values[(values != np.round(values)) | (values < 0) | (values >= num_class)]
    if bad.size:
        raise UserError(
            f"{name}: mask has value {bad[0]:g}; with --num-class {num_class} masks must hold "
            f"integer labels 0..{num_class - 1}"
        )


def check_binary_mask(mask: np.ndarray, name: str) -> None:
    """Refuse a mask that is neither 0/255 nor 0/1 (e.g. a multi-class mask used as binary)."""
    values = np.unique(mask)
    if not (set(values.tolist()) <= {0.0, 255.0} or set(values.tolist()) <= {0.0, 1.0}):
        shown = ", ".join(f"{v:g}" for v in values[:6])
        raise UserError(
            f"{name}: mask has values {{{shown}{', ...' if len(values) > 6 else ''}}}; "
            "a binary mask must be 0/255 or 0/1 (use --num-class for integer class labels)"
        )
