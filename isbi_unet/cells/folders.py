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

from isbi_unet.cells.calibration import MEMBRANE_SHARE
from isbi_unet.errors import UserError

__all__ = ["CELL_COLUMNS", "label_image_dtype", "overlay", "cell_rows", "segment_folder"]

CELL_COLUMNS = ("image", "label", "area", "centroid_row", "centroid_col", "bbox_min_row", "bbox_min_col",
                "bbox_max_row", "bbox_max_col", "perimeter", "eccentricity", "mean_intensity")
_MAP_SUFFIX = "_predict"
_OUTPUT_SUFFIXES = ("_labels", "_overlay")


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


def _map_files(pred_root: Path, names: Sequence[str] | None) -> dict[str, Path]:
    """{name: map file} in natural order: ``N_predict.*`` files, or every image when none."""
    from isbi_unet.io.images import list_images

    files = [p for p in list_images(pred_root, exclude_suffix=_OUTPUT_SUFFIXES[0])
             if not p.stem.endswith(_OUTPUT_SUFFIXES)]
    maps = [p for p in files if p.stem.endswith(_MAP_SUFFIX)] or files
    found: dict[str, Path] = {}
    for path in maps:
        name = path.stem[: -len(_MAP_SUFFIX)] if path.stem.endswith(_MAP_SUFFIX) else path.stem
        if name in found:
            raise UserError(f"two probability maps for {name!r} in {pred_root}: {found[name].name} and {path.name}; keep one")
        found[name] = path
    if names is not None:
        missing = [str(n) for n in names if str(n) not in found]
        if missing:
            raise UserError(f"no probability map for {', '.join(missing[:5])} in {pred_root}: check the names")
        found = {str(n): found[str(n)] for n in names}
    if not found:
        raise UserError(f"{pred_root}: no probability maps (N_predict.png) in this folder")
    return found


def _image_for(name: str, images_root: Path, what: str = "image") -> Path:
    matches = [p for p in sorted(images_root.glob(f"{name}.*")) if p.suffix.lower() in (".png", ".tif", ".tiff", ".jpg", ".jpeg")]
    if not matches:
        raise UserError(f"no {what} {name}.png/.tif in {images_root} for the map of {name}: pass the folder of the {what}s "
                        "of the maps' slices")
    return matches[0]


def _read_inputs(pred_root: Path, images_root: Path | None, names: Sequence[str] | None,
                 what: str = "image") -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(name, map (H, W) float32 in [0, 1], image (H, W) float32 0-255)] of a folder of maps
    and its folder of images, or of a TIFF stack of maps (pages named 0, 1, ...) and its
    stack of images, or its folder of images in natural order (the pages then take the
    images' names); without images, the image is the map.
    ``what`` names the images in messages ("label" for labels read the same way).
    UserError for a missing folder, file or image, an unreadable file, or a size mismatch."""
    from isbi_unet.io.images import read_image
    from isbi_unet.io.stacks import is_tiff_file, open_source, stack_source

    if images_root is not None and not images_root.exists():
        raise UserError(f"{images_root}: {what}s not found")
    if not is_tiff_file(pred_root):
        if images_root is not None and not images_root.is_dir():
            raise UserError(f"{images_root}: the maps are a folder; give the folder of the {what}s of their slices")
        loaded = {name: (path, read_image(path)[..., 0]) for name, path in _map_files(pred_root, names).items()}
        images = {name: grey if images_root is None else read_image(_image_for(name, images_root, what))[..., 0]
                  for name, (_, grey) in loaded.items()}
        maps = {name: (path, grey / np.float32(255.0)) for name, (path, grey) in loaded.items()}
    else:
        source = stack_source(pred_root, 1)
        wanted = source.names if names is None else [str(name) for name in names]
        missing = [name for name in wanted if name not in source.names]
        if missing:
            raise UserError(f"{pred_root}: has pages 0-{len(source.names) - 1}, not {', '.join(missing[:5])}")
        maps = {name: (f"{pred_root} page {name}", source.prepare(source.read(int(name)))[..., 0]) for name in wanted}
        image_source = (None if images_root is None  # a stack, or a folder in natural order
                        else open_source(images_root, 1, network_input=what == "image"))
        if image_source is not None and len(image_source.names) != len(source.names):
            raise UserError(f"{images_root} has {len(image_source.names)} {what}s but the maps {pred_root} "
                            f"{len(source.names)} pages: pass the {what}s of the maps' slices")
        images = {name: prob * np.float32(255.0) if image_source is None
                  else image_source.prepare(image_source.read(int(name)))[..., 0] * np.float32(255.0)
                  for name, (_, prob) in maps.items()}
        if image_source is not None and not is_tiff_file(images_root):  # the pages keep their images' names
            maps = {image_source.names[int(name)]: entry for name, entry in maps.items()}
            images = {image_source.names[int(name)]: image for name, image in images.items()}
    inputs = []
    for name, (where, prob) in maps.items():
        image = images[name]
        if image.shape != prob.shape:
            raise UserError(f"{what} of {name} is {image.shape[1]}x{image.shape[0]} but its map {where} is "
                            f"{prob.shape[1]}x{prob.shape[0]}: pass the {what}s of the maps' slices")
        inputs.append((name, prob, image))
    return inputs


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

    inputs = _read_inputs(Path(pred_dir), Path(labels_dir), None, what="label")
    maps, labels = [prob for _, prob, _ in inputs], [label for _, _, label in inputs]
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
    ``cell_parameters.method_for_maps``). Every input is read and checked before anything
    is written; raises UserError for
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
    inputs = _read_inputs(Path(pred_dir), None if images_dir is None else Path(images_dir), names)
    threshold_from_maps = params.get("threshold", 0.5) is None
    try:
        method, params, unlike = cell_parameters.method_for_maps(method, params, [prob for _, prob, _ in inputs],
                                                                 membrane_share)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
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
    out_root.mkdir(parents=True, exist_ok=True)
    update = _progress(len(inputs), progress)
    written, rows = [], []
    for done, (name, prob, image) in enumerate(inputs, start=1):
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
