"""Fetch the ISBI 2012 EM membrane data set into ``data/membrane`` and verify it.

Three kinds of source are accepted (see :func:`fetch_isbi`):

1. a local folder in the PNG layout ``train/image/N.png``, ``train/label/N.png``,
   ``test/N.png`` (N = 0..29), e.g. ``../shared/data/isbi2012``;
2. a local folder holding the original challenge TIFF stacks ``train-volume.tif``,
   ``train-labels.tif`` and ``test-volume.tif``; page N of each stack becomes
   ``N.png`` in the matching sub-folder;
3. an ``http://`` or ``https://`` base URL in the PNG layout (default
   :data:`ISBI_PNG_URL`, the copy in the public zhixuhao/unet repository).

Every file is checked against the manifest ``data/isbi2012.manifest.tsv`` (its format,
hashes and checks are in :mod:`isbi_unet.io.manifest`; downloads, copies and TIFF pages in
:mod:`isbi_unet.io.sources`).

Everything is staged in a hidden sibling folder of the destination
(``data/.membrane.partial-XXXX``), verified, and only then moved into place, so a
failure never leaves a half-filled data set behind. Files already in the
destination are never overwritten, and extra files there (predictions such as
``test/0_predict.png``) are left alone.

Command line: ``python main.py fetch [--source S] [--dest D] [--no-verify] [--quiet]``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from isbi_unet.errors import UserError
from isbi_unet.io.images import natural_key, write_image
from isbi_unet.io.manifest import (
    PAGE_NAME,
    REPO_ROOT,
    TIFF_STACKS,
    Manifest,
    PathLike,
    file_matches,
    read_gray_png,
    resolve_manifest,
    verify_file,
)
from isbi_unet.io.sources import copy_file, download, tiff_page_count, tiff_pages

ISBI_PNG_URL: str = "https://raw.githubusercontent.com/zhixuhao/unet/master/data/membrane/"
"""Base URL of the public PNG copy of the data set (ends with ``/``)."""

SHARED_DATA_DIR: Path = REPO_ROOT / ".." / "shared" / "data" / "isbi2012"
SOURCE_ENV_VAR = "UNET_DATA_SOURCE"


# -------------------------------------------------------------------------- sources


def default_source() -> str:
    """Return the source :func:`fetch_isbi` uses when none is given.

    ``$UNET_DATA_SOURCE`` if set and non-empty, else ``<repo>/../shared/data/isbi2012``
    if that folder exists, else :data:`ISBI_PNG_URL`.
    """
    env = os.environ.get(SOURCE_ENV_VAR, "").strip()
    if env:
        return env
    if SHARED_DATA_DIR.is_dir():
        return str(SHARED_DATA_DIR.resolve())
    return ISBI_PNG_URL


def _is_url(source: str) -> bool:
    return "://" in source


def _source_kind(source: str, manifest: Manifest) -> str:
    """Classify ``source`` as "url", "png" (folder) or "tiff" (folder), or raise UserError."""
    if _is_url(source):
        scheme = urllib.parse.urlsplit(source).scheme.lower()
        if scheme not in ("http", "https"):
            raise UserError(f"source {source}: only http:// and https:// URLs are supported; give a local folder instead")
        return "url"
    folder = Path(source)
    if not folder.exists():
        raise UserError(f"source folder {folder} does not exist: pass an existing folder or a URL (default {ISBI_PNG_URL})")
    if not folder.is_dir():
        raise UserError(f"source {folder} is not a folder: pass the folder holding the PNGs or the TIFF stacks")
    if any((folder / rel).is_file() for rel in manifest):
        return "png"
    if any((folder / name).is_file() for name in TIFF_STACKS):
        return "tiff"
    raise UserError(
        f"source folder {folder} holds neither the PNG layout (train/image/N.png, train/label/N.png, test/N.png) "
        f"nor the TIFF stacks ({', '.join(TIFF_STACKS)})"
    )


def _tiff_location(rel: str) -> tuple[str, int]:
    """Map ``train/image/7.png`` to ``("train-volume.tif", 7)``."""
    folder, _, name = rel.rpartition("/")
    match = PAGE_NAME.fullmatch(name)
    for stack, sub in TIFF_STACKS.items():
        if folder == sub and match:
            return stack, int(match.group(1))
    raise UserError(f"manifest entry {rel} has no TIFF stack page: TIFF sources only provide {', '.join(v + '/N.png' for v in TIFF_STACKS.values())}")


# --------------------------------------------------------------------------- fetch


def _make_progbar(total: int, progress: bool) -> Any:
    if not progress or total == 0:
        return None
    from isbi_unet.progress import progress_bar

    return progress_bar(total, "file")


def fetch_isbi(
    source: str | os.PathLike | None = None,
    dest: str | os.PathLike = "data/membrane",
    *,
    verify: bool = True,
    manifest: PathLike | Mapping[str, tuple[str, str]] | None = None,
    progress: bool = True,
) -> Path:
    """Fill ``dest`` with every file of the manifest from ``source``; return ``dest``.

    ``source``: a PNG-layout folder, a folder with the three TIFF stacks, or an
    http(s) base URL in the PNG layout; ``None`` means :func:`default_source`.
    ``dest`` is relative to the current directory. ``manifest``: a manifest path or a
    ``{relpath: (file_sha256, pixel_sha256)}`` mapping (default :data:`isbi_unet.io.manifest.MANIFEST_PATH`).
    PNG sources are checked by file SHA-256, TIFF sources by pixel hash;
    ``verify=False`` skips both (a warning is printed; files must still decode as
    8-bit grayscale) -- meant for TIFF stacks whose pixels legitimately differ.

    Files already in ``dest`` with the right hash are kept untouched; if all are
    there, nothing is written. Missing files are staged in a hidden sibling folder,
    verified, then moved in. Extra files in ``dest`` are ignored. Raises
    :class:`UserError` (naming the file) on a missing/corrupt source file, a hash
    mismatch, a network/HTTP error or a short download, leaving ``dest`` as it was,
    or if a file already in ``dest`` has the wrong hash.
    """
    entries = resolve_manifest(manifest)
    source = os.fspath(default_source() if source is None else source)
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"destination {dest} exists and is not a folder: remove it or choose another dest")

    missing: list[str] = []
    wrong: list[str] = []
    for rel in sorted(entries, key=natural_key):
        target = dest / rel
        if target.is_file():
            if verify and not file_matches(target, entries[rel]):
                wrong.append(rel)
        elif target.exists() or target.is_symlink():
            raise UserError(f"{target} is not a regular file: remove it and fetch again")
        else:
            missing.append(rel)
    if wrong:
        more = f" (and {len(wrong) - 1} more: {', '.join(wrong[1:4])}{', ...' if len(wrong) > 4 else ''})" if len(wrong) > 1 else ""
        raise UserError(
            f"{dest / wrong[0]} does not match the ISBI 2012 manifest{more}: it is not the expected file; "
            "remove it (or the whole folder) and fetch again"
        )
    if not verify:
        print(
            f"warning: verify=False: files from {source} are not checked against the manifest; "
            "make sure they really are the ISBI 2012 data",
            file=sys.stderr,
        )
    if not missing:
        print(f"{dest}: up to date ({len(entries)} files verified)" if verify else f"{dest}: up to date ({len(entries)} files present)")
        return dest

    kind = _source_kind(source, entries)
    if kind == "tiff":
        for stack in sorted({_tiff_location(rel)[0] for rel in missing}):
            if not (Path(source) / stack).is_file():
                raise UserError(f"TIFF stack {Path(source) / stack} not found: put all of {', '.join(TIFF_STACKS)} in {source}")

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        bar = _make_progbar(len(missing), progress)
        done = 0

        def stage_one(rel: str, fill: Any) -> None:
            nonlocal done
            out = staging / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            fill(out)
            if verify:
                verify_file(out, rel, entries[rel], by_pixels=kind == "tiff", source=source)
            else:
                read_gray_png(out, rel)
            done += 1
            if bar is not None:
                bar.update(done)

        if kind == "url":
            base = source if source.endswith("/") else source + "/"
            for rel in missing:
                url = base + urllib.parse.quote(rel)
                stage_one(rel, lambda out, url=url, rel=rel: download(url, out, rel))
        elif kind == "png":
            for rel in missing:
                stage_one(rel, lambda out, rel=rel: copy_file(Path(source) / rel, out, rel))
        else:
            _stage_from_tiffs(Path(source), entries, missing, stage_one)

        _move_into_place(staging, dest, missing)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    print(f"{dest}: fetched {len(missing)} of {len(entries)} files from {source}")
    return dest


def _stage_from_tiffs(folder: Path, entries: Manifest, missing: list[str], stage_one: Any) -> None:
    """Split the needed TIFF stacks page by page into the staging folder."""
    wanted: dict[str, dict[int, str]] = {}
    expected_pages: dict[str, int] = {}
    for rel in entries:
        stack, index = _tiff_location(rel)
        expected_pages[stack] = expected_pages.get(stack, 0) + 1
    for rel in missing:
        stack, index = _tiff_location(rel)
        wanted.setdefault(stack, {})[index] = rel
    for stack, pages in sorted(wanted.items()):
        tif_path = folder / stack
        count = tiff_page_count(tif_path)
        if count != expected_pages[stack]:
            raise UserError(
                f"TIFF stack {tif_path} has {count} pages but the manifest expects {expected_pages[stack]}: "
                "use the original ISBI 2012 stack"
            )
        for index, page in tiff_pages(tif_path):
            rel = pages.get(index)
            if rel is not None:
                stage_one(rel, lambda out, page=page: write_image(out, page))
        absent = sorted(set(pages) - set(range(count)))
        if absent:
            raise UserError(f"{pages[absent[0]]}: page {absent[0]} is missing from {tif_path}; use the original stack")


def _move_into_place(staging: Path, dest: Path, rels: list[str]) -> None:
    """Move the verified staged files into ``dest`` without overwriting anything."""
    if not dest.exists():
        try:
            os.rename(staging, dest)  # one atomic step when dest is new
            return
        except OSError:
            pass  # dest appeared meanwhile: merge file by file below
    for rel in rels:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise UserError(f"{target} appeared while fetching: remove it and fetch again")
        os.replace(staging / rel, target)
