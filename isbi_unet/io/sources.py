"""Where ``fetch`` reads from: HTTP downloads, local copies, and the pages of the
challenge's TIFF stacks as 8-bit slices. Every failure is a UserError naming the file."""

from __future__ import annotations

import http.client
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np

from isbi_unet.errors import UserError
from isbi_unet.io.images import atomic_path

DOWNLOAD_TIMEOUT_S = 60.0


_CHUNK = 1 << 16


def page_to_uint8(page: np.ndarray, where: str) -> np.ndarray:
    """Convert a TIFF page to a 2-D uint8 array (8-bit pages are kept as they are)."""
    page = np.asarray(page)
    if page.ndim == 3 and 1 in (page.shape[0], page.shape[-1]):
        page = page.reshape(page.shape[1:] if page.shape[0] == 1 else page.shape[:-1])
    if page.ndim != 2:
        raise UserError(f"{where}: page has shape {page.shape}, expected a 2-D grayscale page; convert the stack to grayscale")
    if page.dtype == np.uint8:
        return page
    if page.dtype == np.bool_:
        return page.astype(np.uint8) * 255
    from skimage.util import img_as_ubyte  # lazy import

    try:
        return img_as_ubyte(page)
    except ValueError as exc:
        raise UserError(f"{where}: cannot convert {page.dtype} page to 8-bit ({exc}); save the stack as 8-bit") from None


def tiff_pages(tif_path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(page_index, 2-D uint8 array)`` for every page of a TIFF file."""
    import tifffile  # lazy import

    try:
        with tifffile.TiffFile(tif_path) as tif:
            for index, page in enumerate(tif.pages):
                yield index, page_to_uint8(page.asarray(), f"{tif_path} page {index}")
    except FileNotFoundError:
        raise UserError(f"TIFF stack {tif_path} not found: put it next to the other stacks or use another source") from None
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise UserError(f"TIFF stack {tif_path} cannot be read ({exc}): download it again") from None


def tiff_page_count(tif_path: Path) -> int:
    import tifffile  # lazy import

    try:
        with tifffile.TiffFile(tif_path) as tif:
            return len(tif.pages)
    except FileNotFoundError:
        raise UserError(f"TIFF stack {tif_path} not found: put it next to the other stacks or use another source") from None
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise UserError(f"TIFF stack {tif_path} cannot be read ({exc}): download it again") from None


def download(url: str, out: Path, rel: str) -> None:
    """Download ``url`` to ``out`` atomically; any failure is a UserError naming ``rel``."""
    request = urllib.request.Request(url, headers={"User-Agent": "unet-isbi-fetch/1.0"})
    try:
        with atomic_path(out) as part, urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response, \
                open(part, "wb") as fh:
            length = response.headers.get("Content-Length")
            received = 0
            while chunk := response.read(_CHUNK):
                fh.write(chunk)
                received += len(chunk)
            if length is not None and length.strip().isdigit() and received != int(length):
                raise UserError(
                    f"{rel}: download from {url} was cut short ({received} of {length} bytes); "
                    "check the connection and fetch again"
                )
    except urllib.error.HTTPError as exc:
        raise UserError(f"{rel}: HTTP {exc.code} {exc.reason} for {url}; check the source URL or use a local folder") from None
    except urllib.error.URLError as exc:
        raise UserError(f"{rel}: cannot reach {url} ({exc.reason}); check the network or use a local folder") from None
    except (http.client.HTTPException, OSError, ValueError) as exc:
        raise UserError(f"{rel}: download from {url} failed ({type(exc).__name__}: {exc}); fetch again") from None


def copy_file(src: Path, out: Path, rel: str) -> None:
    try:
        with atomic_path(out) as part:
            shutil.copyfile(src, part)
    except FileNotFoundError:
        raise UserError(f"{rel}: {src} not found in the source folder; the source is incomplete, use another source") from None
    except OSError as exc:
        raise UserError(f"{rel}: cannot copy {src} ({exc}); check the source folder") from None
