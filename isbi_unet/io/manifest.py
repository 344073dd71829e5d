"""The ISBI 2012 data set's manifest: its layout, file and pixel hashes, reading, checking files.

The manifest :data:`MANIFEST_PATH` (``data/isbi2012.manifest.tsv``) is a tab-separated
file with one header line ``path<TAB>file_sha256<TAB>pixel_sha256`` and then one row
per file:

* ``path``: the path relative to the data set root, with ``/`` separators;
* ``file_sha256``: SHA-256 of the PNG file's bytes (checked for PNG sources);
* ``pixel_sha256``: SHA-256 of the decoded image, see :func:`pixel_sha256`: the
  ASCII shape header ``b"<height>x<width>\\n"`` followed by the row-major bytes of
  the 2-D uint8 array (checked for TIFF sources, whose re-encoded PNGs cannot be
  byte-identical to the published ones).

Fetching the files from a source is :mod:`isbi_unet.io.fetch`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import numpy as np

from isbi_unet.errors import UserError
from isbi_unet.io.images import read_array

REPO_ROOT: Path = Path(__file__).resolve().parents[2]  # the checkout: data/, logs/, data.py, model.py
MANIFEST_PATH: Path = REPO_ROOT / "data" / "isbi2012.manifest.tsv"
"""The manifest kept in the repository (see the module docstring for its format)."""

MANIFEST_HEADER = ("path", "file_sha256", "pixel_sha256")

#: Stack file name -> folder (relative to the data set root) its pages go to.
TIFF_STACKS: dict[str, str] = {
    "train-volume.tif": "train/image",
    "train-labels.tif": "train/label",
    "test-volume.tif": "test",
}

_HEX64 = re.compile(r"[0-9a-f]{64}")
PAGE_NAME = re.compile(r"(0|[1-9][0-9]*)\.png")

PathLike = Union[str, "os.PathLike[str]"]
Manifest = dict[str, tuple[str, str]]


# --------------------------------------------------------------------------- hashes


def file_sha256(path: PathLike) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pixel_sha256(image: np.ndarray) -> str:
    """Return the manifest's pixel hash of a 2-D uint8 image.

    SHA-256 over ``f"{height}x{width}\\n"`` (ASCII) followed by the C-order bytes of
    the array, so two images only match when both shape and pixels match.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 image, got {image.dtype} with shape {image.shape}")
    digest = hashlib.sha256(f"{image.shape[0]}x{image.shape[1]}\n".encode("ascii"))
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def read_gray_png(path: Path, name: str) -> np.ndarray:
    """Decode ``path`` as a 2-D 8-bit image or raise UserError naming ``name``."""
    try:
        image = read_array(path)
    except UserError as exc:
        raise UserError(f"{name}: {exc}; delete it and fetch again") from None
    if image.ndim != 2 or image.dtype != np.uint8:
        raise UserError(
            f"{name}: {path} is not an 8-bit grayscale image ({image.dtype}, shape {image.shape}); "
            "delete it and fetch again"
        )
    return image


# ------------------------------------------------------------------------ manifest


def _check_relpath(rel: str, where: str) -> str:
    """Validate a manifest path: relative, ``/``-separated, no ``..``, ends in .png."""
    parts = rel.split("/")
    if (
        not rel
        or rel.startswith("/")
        or "\\" in rel
        or any(p in ("", ".", "..") for p in parts)
        or not rel.endswith(".png")
    ):
        raise UserError(f"{where}: bad path {rel!r} (expected a relative path like train/image/0.png)")
    return rel


def load_manifest(path: PathLike = MANIFEST_PATH) -> Manifest:
    """Read a manifest TSV into ``{relpath: (file_sha256, pixel_sha256)}``.

    Raises UserError if the file is missing or malformed.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"manifest {path} not found: restore it (git checkout -- {path.name}) or pass manifest=") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"manifest {path} cannot be read ({exc}): restore it from git") from None
    if not lines or tuple(lines[0].split("\t")) != MANIFEST_HEADER:
        header = "<TAB>".join(MANIFEST_HEADER)
        raise UserError(f"manifest {path}: first line must be the header {header}; restore the file from git")
    manifest: Manifest = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        where = f"manifest {path} line {number}"
        if len(fields) != 3:
            raise UserError(f"{where}: expected 3 tab-separated fields, got {len(fields)}; restore the file from git")
        rel, fsha, psha = fields
        manifest[_check_relpath(rel, where)] = _check_hashes(fsha, psha, where)
    if not manifest:
        raise UserError(f"manifest {path} lists no files: restore it from git")
    return manifest


def _check_hashes(fsha: Any, psha: Any, where: str) -> tuple[str, str]:
    for value in (fsha, psha):
        if not isinstance(value, str) or not _HEX64.fullmatch(value):
            raise UserError(f"{where}: {value!r} is not a lowercase hex SHA-256")
    return fsha, psha


def resolve_manifest(manifest: PathLike | Mapping[str, tuple[str, str]] | None) -> Manifest:
    if manifest is None:
        return load_manifest(MANIFEST_PATH)
    if isinstance(manifest, Mapping):
        resolved: Manifest = {}
        for rel, value in manifest.items():
            where = f"manifest entry {rel!r}"
            if not isinstance(rel, str) or not isinstance(value, (tuple, list)) or len(value) != 2:
                raise UserError(f"{where}: expected relpath -> (file_sha256, pixel_sha256)")
            resolved[_check_relpath(rel, where)] = _check_hashes(value[0], value[1], where)
        if not resolved:
            raise UserError("the manifest mapping passed to fetch_isbi is empty")
        return resolved
    return load_manifest(manifest)


# --------------------------------------------------------------------------- checks


def file_matches(path: Path, expected: tuple[str, str]) -> bool:
    """True if an existing destination file matches the manifest (file or pixel hash)."""
    if file_sha256(path) == expected[0]:
        return True
    try:
        image = read_array(path)
    except UserError:
        return False
    return image.ndim == 2 and image.dtype == np.uint8 and pixel_sha256(image) == expected[1]


def verify_file(path: Path, rel: str, expected: tuple[str, str], by_pixels: bool, source: str) -> None:
    """Raise UserError naming ``rel`` unless a fetched file matches the manifest (pixel or file hash)."""
    if by_pixels:
        got = pixel_sha256(read_gray_png(path, rel))
        if got != expected[1]:
            raise UserError(
                f"{rel}: pixels from {source} do not match the manifest (pixel sha256 {got[:12]}..., "
                f"expected {expected[1][:12]}...); use the genuine ISBI 2012 stacks, or verify=False / --no-verify "
                "if they legitimately differ"
            )
    else:
        got = file_sha256(path)
        if got != expected[0]:
            raise UserError(
                f"{rel}: checksum mismatch for the copy from {source} (sha256 {got[:12]}..., expected "
                f"{expected[0][:12]}...); the source file is corrupt or different, use another source"
            )
