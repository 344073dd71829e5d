"""Folder evaluation with the ISBI 2012 metric: match predictions to labels by name and score them.

The metric itself (thinning, foreground-restricted V_rand / V_info, pixel error, Dice)
is :mod:`isbi_metric`.
:func:`evaluate_folders` scores probability maps (threshold sweep, the official
number); :func:`evaluate_segmentation_folders` scores finished label images as they
are.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from isbi_unet.errors import UserError
from isbi_unet.evaluation.metric import isbi_scores, segmentation_scores
from isbi_unet.evaluation.slice_scores import as_probability
from isbi_unet.io.images import list_images, natural_key, read_gray, read_label_ids, write_json
from isbi_unet.io.pairs import as_cell_mask
from isbi_unet.io.stacks import is_tiff_file, open_stack

__all__ = ["evaluate_folders", "evaluate_segmentation_folders"]


def _progress_reporter(enabled: bool) -> Callable[[int, int, str], None] | None:
    """A progress bar over slices (isbi_unet.progress, like the other commands), or None."""
    if not enabled:
        return None
    from isbi_unet.progress import progress_bar

    state: dict[str, Any] = {}

    def report(done: int, total: int, name: str) -> None:
        if "bar" not in state:
            state["bar"] = progress_bar(total, "slice")
        state["bar"].update(done)

    return report


def _strip(stem: str, suffix: str) -> str:
    return stem[: -len(suffix)] if stem.endswith(suffix) else stem


@dataclass(frozen=True)
class StackPage:
    """Page ``index`` of the TIFF stack ``path``, as a label image of :func:`_matched_pairs`."""

    path: Path
    index: int

    def __str__(self) -> str:
        return f"{self.path} page {self.index}"


def _matched_pairs(
    pred_root: Path, label_root: Path, names: Sequence[str] | None, suffix: str, what: str
) -> list[tuple[str, Path, Path | StackPage]]:
    """(name, prediction file, label file or stack page) for each label to score, in natural order.

    A label ``N.<ext>`` or ``N_mask.<ext>`` (or page N = 0, 1, ... of a label stack
    ``label_root``) is matched with ``N<suffix>.<ext>`` or ``N.<ext>`` in ``pred_root``;
    when ``suffix`` is ``"_labels"`` and the folder has such files, only they are used.
    ``what`` names the predictions in messages.
    """
    if is_tiff_file(label_root):
        label_files: dict[str, Path | StackPage] = {
            str(index): StackPage(label_root, index) for index in range(open_stack(label_root).count)}
    else:
        label_files = {_strip(p.stem, "_mask"): p for p in list_images(label_root, exclude_suffix=None, what="label")}
    candidates = list_images(pred_root, exclude_suffix=None, what=what)
    if suffix == "_labels" and any(p.stem.endswith(suffix) for p in candidates):
        candidates = [p for p in candidates if p.stem.endswith(suffix)]
    pred_files: dict[str, Path] = {}
    for p in candidates:
        stem = _strip(p.stem, suffix)
        if stem in pred_files:
            raise UserError(
                f"two {what}s for label {stem!r} in {pred_root}: {pred_files[stem].name} and {p.name}; keep only one"
            )
        pred_files[stem] = p
    if names is not None:
        wanted = [str(n) for n in names]
        if not wanted:
            raise UserError("the list of slice names is empty: name at least one slice")
        missing_labels = [n for n in wanted if n not in label_files]
        if missing_labels:
            raise UserError(
                f"no label image for {', '.join(missing_labels[:5])} in {label_root}: check the slice names"
            )
    else:
        wanted = sorted(label_files, key=natural_key)
    missing = [n for n in wanted if n not in pred_files]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise UserError(
            f"no {what} in {pred_root} for label(s) {shown} (expected N.png or N{suffix}.png/.tif): "
            f"write the {what}s for them or restrict the slice names"
        )
    return [(name, pred_files[name], label_files[name]) for name in wanted]


def _read_label(label: Path | StackPage) -> np.ndarray:
    if isinstance(label, StackPage):
        return np.asarray(open_stack(label.path).page(label.index)[..., 0])
    return read_gray(label)


def _read_pair(pred_path: Path, label_path: Path | StackPage, what: str,
               mask_foreground: str = "cell") -> tuple[np.ndarray, np.ndarray]:
    """The two images of a matched pair, the label in the cell convention (see
    :func:`isbi_unet.io.pairs.as_cell_mask`); a segmentation as ids
    (:func:`isbi_unet.io.images.read_label_ids`). UserError when their sizes differ."""
    read_pred = read_label_ids if what == "segmentation" else read_gray
    pred_img, label_img = read_pred(pred_path), _read_label(label_path)
    if pred_img.shape != label_img.shape:
        raise UserError(
            f"{what} {pred_path} is {pred_img.shape[1]}x{pred_img.shape[0]} but label "
            f"{label_path} is {label_img.shape[1]}x{label_img.shape[0]}: make it at the label's size"
        )
    return pred_img, as_cell_mask(label_img, mask_foreground)


def _score_and_save(score: Callable, images: list, labels: list, names: list[str], roots: tuple[Path, Path],
                    json_path: str | os.PathLike | None, progress: bool) -> dict:
    """Run ``score(images, labels, names=, progress=)`` with a progress bar, add the folders, save JSON."""
    report = _progress_reporter(progress)

    def callback(done: int, total: int) -> None:
        report(done, total, names[done - 1])

    result = score(images, labels, names=names, progress=callback if report is not None else None)
    result["pred_dir"] = str(roots[0])
    result["label_dir"] = str(roots[1])
    if json_path is not None:
        write_json(json_path, result)
    return result


def evaluate_folders(
    pred_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    names: Sequence[str] | None = None,
    json_path: str | os.PathLike | None = None,
    progress: bool = True,
    mask_foreground: str = "cell",
) -> dict:
    """Score the predictions in ``pred_dir`` against the labels in ``label_dir``.

    Images are .png/.tif/.tiff files, one 2-D slice each. A label ``N.png`` (or
    ``N_mask.png``; or page N = 0, 1, ... of a TIFF stack ``label_dir``) is matched with the
    prediction ``N.<ext>`` or ``N_predict.<ext>``; ``names`` (stems such as ["25", "26"]) restricts the evaluation to those labels; ``mask_foreground``
    "membrane" reads labels whose non-zero pixels are membrane. Returns the dict of
    :func:`isbi_scores` with ``per_slice`` names filled in, adds ``pred_dir`` and
    ``label_dir``, and writes it as JSON to ``json_path`` (atomically) when given.
    Raises UserError for a missing or empty folder, a label without prediction, an
    ambiguous prediction, an unreadable image or a size mismatch.
    """
    pred_root, label_root = Path(pred_dir), Path(label_dir)
    pairs = _matched_pairs(pred_root, label_root, names, "_predict", "prediction")
    probs, labs = [], []
    for _, pred_path, label_path in pairs:
        pred_img, label_img = _read_pair(pred_path, label_path, "prediction", mask_foreground)
        try:
            probs.append(as_probability(pred_img))
        except ValueError as exc:
            raise UserError(f"prediction {pred_path} is not a probability map ({exc}): save values in [0, 1] or 0-255") from exc
        labs.append(label_img)
    return _score_and_save(isbi_scores, probs, labs, [name for name, _, _ in pairs], (pred_root, label_root),
                           json_path, progress)


def evaluate_segmentation_folders(
    seg_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    names: Sequence[str] | None = None,
    json_path: str | os.PathLike | None = None,
    progress: bool = True,
    mask_foreground: str = "cell",
) -> dict:
    """Score the label images (segmentations) in ``seg_dir`` as they are, without thresholds.

    A ground-truth label ``N.png`` (or ``N_mask.png``, or page N of a TIFF stack
    ``label_dir``) is matched with ``N_labels.tif``
    (what ``main.py segment`` writes; when the folder has such files only they count)
    or ``N.png``/``N.tif``: integer images, one id per cell, 0 = boundary (or colour-coded
    RGB(A), one colour per cell, black = boundary);
    ``mask_foreground`` as for :func:`evaluate_folders`. Returns the
    dict of :func:`isbi_unet.evaluation.metric.segmentation_scores` (V_rand, V_info and their split and
    merge parts) with ``pred_dir`` and ``label_dir``, written as JSON to ``json_path``
    when given. Raises UserError as :func:`evaluate_folders` does, and for a
    segmentation that is not an integer image.
    """
    seg_root, label_root = Path(seg_dir), Path(label_dir)
    pairs = _matched_pairs(seg_root, label_root, names, "_labels", "segmentation")
    segs, labs = [], []
    for _, seg_path, label_path in pairs:
        seg_img, label_img = _read_pair(seg_path, label_path, "segmentation", mask_foreground)
        if not np.issubdtype(seg_img.dtype, np.integer) or seg_img.min() < 0:
            raise UserError(
                f"segmentation {seg_path} is not a label image (dtype {seg_img.dtype}): "
                "save one non-negative integer id per cell, 0 on boundaries"
            )
        segs.append(seg_img)
        labs.append(label_img)
    return _score_and_save(segmentation_scores, segs, labs, [name for name, _, _ in pairs], (seg_root, label_root),
                           json_path, progress)
