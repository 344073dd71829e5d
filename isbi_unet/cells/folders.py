"""Instance segmentation of a folder of probability maps: label images, overlays and a cell table.

For each map ``N_predict.png`` (or ``N.png``/``N.tif`` in a folder without
``*_predict`` files; or each page N = 0, 1, ... of a TIFF stack of maps) :func:`segment_folder` writes ``N_labels.tif`` (one id per cell,
0 on boundaries; uint16 when the ids fit, else uint32), ``N_overlay.png`` (cells
coloured over the image, or over the map without ``images_dir``) and, per folder,
``cells.csv`` with one row per cell (scikit-image ``regionprops_table``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from isbi_unet.cells.calibration import MEMBRANE_SHARE, inverted_reason
from isbi_unet.cells.map_slices import LazyMaps, map_slices
from isbi_unet.errors import UserError

__all__ = ["CELL_COLUMNS", "label_image_dtype", "overlay", "cell_rows", "segment_folder"]

CELL_COLUMNS = ("image", "label", "area", "centroid_row", "centroid_col", "bbox_min_row", "bbox_min_col",
                "bbox_max_row", "bbox_max_col", "perimeter", "eccentricity", "mean_intensity")


def label_image_dtype(labels: np.ndarray) -> np.dtype:
    """uint16 when every id of ``labels`` fits in 16 bits, else uint32."""
    return np.dtype(np.uint16) if int(labels.max(initial=0)) <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


def overlay(labels: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Cells of ``labels`` (H, W) coloured over the grey ``image`` (H, W, 0-255):
    uint8 (H, W, 3); boundaries (0) show the image."""
    from skimage.color import label2rgb

    grey = np.clip(np.asarray(image, np.float64) / 255.0, 0.0, 1.0)
    rgb = label2rgb(labels, image=grey, bg_label=0, alpha=0.35, image_alpha=1.0, kind="overlay")
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def cell_rows(labels: np.ndarray, image: np.ndarray, name: str) -> Iterator[dict[str, Any]]:
    """One dict per cell of ``labels`` (H, W): the :data:`CELL_COLUMNS`, in pixels;
    ``mean_intensity`` is the mean of ``image`` (H, W, 0-255) over the cell."""
    from skimage.measure import regionprops_table

    props = regionprops_table(
        labels.astype(np.int64), intensity_image=np.asarray(image, np.float64),
        properties=("label", "area", "centroid", "bbox", "perimeter", "eccentricity", "intensity_mean"))
    columns = {"label": "label", "area": "area", "centroid_row": "centroid-0", "centroid_col": "centroid-1",
               "bbox_min_row": "bbox-0", "bbox_min_col": "bbox-1", "bbox_max_row": "bbox-2",
               "bbox_max_col": "bbox-3", "perimeter": "perimeter", "eccentricity": "eccentricity",
               "mean_intensity": "intensity_mean"}
    for index in range(len(props["label"])):
        row: dict[str, Any] = {"image": name}
        for column, key in columns.items():
            value = props[key][index]
            row[column] = int(value) if column in ("label", "area") or column.startswith("bbox") else round(float(value), 4)
        yield row


def _progress(total: int, enabled: bool) -> Callable[[int], None]:
    if not enabled:
        return lambda done: None
    from isbi_unet.progress import progress_bar

    bar = progress_bar(total, "image")
    return bar.update


def fit_edge_model_on_folders(pred_dir: str | os.PathLike, labels_dir: str | os.PathLike,
                              superpixel_parameters: Mapping[str, Any], progress: bool = True) -> dict[str, Any]:
    """An edge model (segment.fit_edge_model, as ``EdgeCostModel.to_dict``) fitted on the maps
    ``N_predict.png`` of ``pred_dir`` against the labels ``N.<ext>`` of ``labels_dir``
    (0 = membrane), or the pages of a stack of maps against a label stack, on superpixels of ``superpixel_parameters`` (threshold, sigma,
    min_distance: those the model will be used with). The maps should be of slices the
    network did not train on. UserError for a missing folder, label or size mismatch, or
    edges of one kind only."""
    from isbi_unet.cells import parameters as cell_parameters

    slices = map_slices(Path(pred_dir), Path(labels_dir), None, what="label")
    maps, labels = zip(*(piece.read() for piece in slices))
    if progress:
        print(f"Fitting the edge model on {len(maps)} labelled maps of {pred_dir}", flush=True)
    try:
        return cell_parameters.fit_edge_model(maps, labels, **{key: superpixel_parameters[key]
                                                       for key in ("threshold", "sigma", "min_distance")})
    except ValueError as exc:
        raise UserError(f"--fit-maps {pred_dir}: {exc}") from exc


@dataclass(frozen=True)
class SegmentedFolder:
    """What :func:`segment_folder` wrote: the label images' ``paths``, and the ``method`` and
    ``parameters`` that made them (a threshold read from the maps as its value); where a
    learned method gave way on maps unlike its own, its fallback, and why (``gave_way``)."""

    paths: list[Path]
    method: str
    parameters: dict[str, Any]
    gave_way: str | None


def segment_folder(
    pred_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    method: str = "watershed",
    parameters: Mapping[str, Any] | None = None,
    images_dir: str | os.PathLike | None = None,
    names: Sequence[str] | None = None,
    progress: bool = True,
    membrane_share: float | tuple[float, float] = MEMBRANE_SHARE,
    pixel_size_nm: float | None = None,
) -> SegmentedFolder:
    """Segment every probability map of ``pred_dir`` with ``isbi_unet.cells.parameters.segment`` and write the
    label images, overlays and ``cells.csv`` (see the module docstring) to ``output_dir``.

    ``images_dir`` holds the input images ``N.<ext>`` for the overlays and the cells'
    mean intensity (default: the maps themselves, 0-255). ``names`` restricts the maps.
    A threshold of None is read from the maps, calling ``membrane_share`` of their pixels
    membrane (``cell_parameters.resolve_threshold``). ``pixel_size_nm``: the maps' pixel
    size, for the parameters in pixels (``cell_parameters.segment``).
    A learned method whose edge model meets maps unlike those it was fitted on gives way
    to ``cell_parameters.FALLBACK_METHOD``, with a warning line (see
    ``cell_parameters.method_for_maps``). Every input's name, file and size is checked
    before anything is written; one map and its image at a time are held in memory.
    Raises UserError for
    a missing folder or image, an unreadable file, a size mismatch or bad parameters.
    Returns what was written and how (:class:`SegmentedFolder`).
    """
    import tifffile

    from isbi_unet.cells import parameters as cell_parameters
    from isbi_unet.cells.methods import require_edge_model
    from isbi_unet.io.images import atomic_path, write_image

    try:
        params = cell_parameters.check_parameters(method, parameters)
        require_edge_model(method, params)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    out_root = Path(output_dir)
    if out_root.exists() and not out_root.is_dir():
        raise UserError(f"{out_root}: exists and is not a folder; choose another --output")
    slices = map_slices(Path(pred_dir), None if images_dir is None else Path(images_dir), names)
    threshold_from_maps = params.get("threshold", 0.5) is None
    try:
        method, params, unlike = cell_parameters.method_for_maps(method, params, LazyMaps(slices), membrane_share)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    inverted = inverted_reason(LazyMaps(slices))
    if inverted:
        print(f"warning: {inverted}", flush=True)
    if unlike:
        print(f"warning: {unlike}; cells by {method} (the default of segment) at a threshold read from the maps "
              "instead (fit an edge model on labelled maps of this kind: segment --fit-maps DIR --fit-labels DIR)",
              flush=True)
    if unlike or threshold_from_maps:
        how = (f"{membrane_share:.1%} of their pixels at or below it" if not isinstance(membrane_share, tuple) else
               "the median of their Otsu thresholds, kept where {:.0%}-{:.0%} of their pixels are at or below it"
               .format(*membrane_share))
        print(f"{method}: threshold {params['threshold']:g}, read from the maps ({how})",
              flush=True)
    names_here = {piece.name for piece in slices}
    stale = sorted(path.name for path in out_root.glob("*_labels.tif") if path.name[: -len("_labels.tif")] not in names_here)
    if stale:
        print(f"warning: {out_root} also holds {len(stale)} label image(s) of other slices ({stale[0]}, ...) from an "
              "earlier run; cells.csv lists this run's only, but evaluate --segmentation would score them too: "
              "give a new --output", flush=True)
    out_root.mkdir(parents=True, exist_ok=True)
    update = _progress(len(slices), progress)
    written, rows = [], []
    for done, piece in enumerate(slices, start=1):
        name, (prob, image) = piece.name, piece.read()
        labels = cell_parameters.segment(prob, method, params, pixel_size_nm)
        target = out_root / f"{name}_labels.tif"
        with atomic_path(target) as temporary:
            tifffile.imwrite(temporary, labels.astype(label_image_dtype(labels)))
        write_image(out_root / f"{name}_overlay.png", overlay(labels, image))
        rows.extend(cell_rows(labels, image, name))
        written.append(target)
        update(done)

    with atomic_path(out_root / "cells.csv") as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CELL_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return SegmentedFolder(written, method, dict(params), unlike)
