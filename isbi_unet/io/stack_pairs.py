"""Training data as TIFF stacks: a folder with ``image.tif`` and ``label.tif`` (one slice per page).

Training, checking and the main job read a folder of image/label pairs. A folder that
holds two stacks instead (``image(s).tif`` + ``label(s).tif`` or ``mask(s).tif``, and
optionally an unlabelled ``test.tif``) is turned into that layout once: each page becomes
``image/N.png`` and ``label/N.png`` (``test/N.png``), N = 0, 1, ..., in a folder under the
logs named by the stacks' checksums, so the user's folder is only read and a second run
reuses the pages.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

from isbi_unet.errors import UserError

STACK_SUFFIXES = (".tif", ".tiff")
IMAGE_STEMS = ("image", "images")
LABEL_STEMS = ("label", "labels", "mask", "masks")
TEST_STEM = "test"


def _find(folder: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for suffix in STACK_SUFFIXES:
            if (folder / (stem + suffix)).is_file():
                return folder / (stem + suffix)
    return None


def find_stack_pair(data_dir: str | Path) -> tuple[Path, Path] | None:
    """(image stack, label stack) directly in ``data_dir``, or None when it has not both."""
    folder = Path(data_dir)
    image, label = _find(folder, IMAGE_STEMS), _find(folder, LABEL_STEMS)
    return (image, label) if image is not None and label is not None else None


def _has_pair_folders(data_dir: Path) -> bool:
    from isbi_unet.protocol import find_training_folders

    try:
        find_training_folders(data_dir)
    except UserError:
        return False
    return True


def _digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:12]


def label_page_to_uint8(page: np.ndarray, where: str) -> np.ndarray:
    """A label page (H, W) as uint8 with its values kept (0/255, 0/1, classes 0..N-1);
    booleans and floats in [0, 1] become 0-255. UserError for values that 8 bits cannot hold."""
    page = np.asarray(page)
    if page.dtype == bool:
        return page.astype(np.uint8) * 255
    if np.issubdtype(page.dtype, np.floating):
        if not np.isfinite(page).all() or page.min(initial=0) < 0 or page.max(initial=0) > 1:
            raise UserError(f"{where}: float labels must lie in [0, 1]; save the labels as 8-bit (0/255)")
        return np.rint(page * 255.0).astype(np.uint8)
    if page.min(initial=0) < 0 or page.max(initial=0) > 255:
        raise UserError(f"{where}: label values {page.min()}..{page.max()} do not fit in 8 bits; save 0/255 masks "
                        "or classes 0..N-1")
    return page.astype(np.uint8)


def _write_pages(stack: Path, out: Path, label: bool) -> None:
    from isbi_unet.io.images import write_image
    from isbi_unet.io.input_scale import warn_once_about_scale
    from isbi_unet.io.sources import page_to_uint8
    from isbi_unet.io.stacks import open_stack

    source = open_stack(stack)
    if source.channels != 1:
        raise UserError(f"{stack}: pages have {source.channels} channels; save the stack as grayscale")
    out.mkdir(parents=True)
    for index in range(source.count):
        where = f"{stack} page {index}"
        page = np.asarray(source.page(index))[..., 0]
        if not label:
            warn_once_about_scale(page, where)  # before 16 bits become 8
        write_image(out / f"{index}.png", label_page_to_uint8(page, where) if label else page_to_uint8(page, where))


def pages_of_stacks(data_dir: str | Path, logs: str | Path = "logs") -> Path:
    """``data_dir`` itself when it holds image/label folders (or no stack pair); for a folder
    of an image stack and a label stack, the folder under ``logs/stack-pages/`` that holds
    their pages as ``image/N.png`` and ``label/N.png`` (and ``test/N.png`` of ``test.tif``),
    written on first use. UserError for stacks of different page counts or sizes."""
    from isbi_unet.io.stacks import open_stack

    folder = Path(data_dir)
    pair = find_stack_pair(folder) if folder.is_dir() and not _has_pair_folders(folder) else None
    if pair is None:
        return folder
    test = _find(folder, (TEST_STEM,))
    stacks = [*pair, *([test] if test is not None else [])]
    images, labels = open_stack(pair[0]), open_stack(pair[1])
    if (images.count, images.height, images.width) != (labels.count, labels.height, labels.width):
        raise UserError(f"{pair[0]} has {images.count} pages of {images.width}x{images.height} but {pair[1]} has "
                        f"{labels.count} of {labels.width}x{labels.height}: one label page per image page")
    target = Path(logs) / "stack-pages" / f"{folder.resolve().name}-{_digest(stacks)}"
    if target.is_dir():
        return target
    print(f"{folder}: writing the {images.count} pages of {pair[0].name} and {pair[1].name}"
          f"{' and ' + test.name if test is not None else ''} as image/N.png, label/N.png to {target} (once)",
          flush=True)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_pages(pair[0], staging / "image", label=False)
        _write_pages(pair[1], staging / "label", label=True)
        if test is not None:
            _write_pages(test, staging / TEST_STEM, label=False)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
