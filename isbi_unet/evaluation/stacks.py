"""Scoring multi-page TIFF stacks with the ISBI 2012 metric, and the challenge's submission shape."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from isbi_unet.errors import UserError
from isbi_unet.io.stacks import is_tiff_file, read_stack_slices

ISBI_SUBMISSION_SHAPE = (30, 512, 512)  # slices, height, width of the challenge's test volume


def check_isbi_submission(count: int, height: int, width: int, classes: int) -> None:
    """Refuse what the ISBI 2012 challenge would not accept: it takes one 512x512x30
    float stack of one probability (0 = membrane, 1 = non-membrane) per pixel."""
    if classes != 1:
        raise UserError(f"--isbi-submission needs a binary model (one probability per pixel), not {classes} classes")
    if (count, height, width) != ISBI_SUBMISSION_SHAPE:
        raise UserError(f"--isbi-submission: the challenge takes 30 slices of 512x512 (test-volume.tif), "
                        f"not {count} of {width}x{height}")


def evaluate_stacks(
    pred_path: str | Path,
    label_path: str | Path,
    names: Sequence[str] | None = None,
    json_path: str | Path | None = None,
    progress: bool = False,
    mask_foreground: str = "cell",
) -> dict:
    """ISBI 2012 scores of a probability stack (N, H, W) against a label stack (N, H, W).

    Pages are named by their index from 0 ("0", "1", ...); ``names`` restricts to those
    pages. Returns metrics.isbi_scores's dict with ``pred_dir``/``label_dir`` set to the
    two files, also written as JSON to ``json_path`` when given; ``progress`` shows a
    bar over slices; ``mask_foreground`` "membrane" reads labels whose non-zero pixels
    are membrane.
    """
    from isbi_unet.evaluation.metric import isbi_scores
    from isbi_unet.evaluation.slice_scores import as_probability
    from isbi_unet.io.images import write_json
    from isbi_unet.io.pairs import as_cell_mask

    for path in (pred_path, label_path):
        if not is_tiff_file(path):
            raise UserError(f"{path}: a stack of maps is scored against a TIFF stack of labels; give --labels as a .tif file")
    predictions, labels = read_stack_slices(pred_path), read_stack_slices(label_path)
    if len(predictions) != len(labels) or predictions[0].shape != labels[0].shape:
        raise UserError(f"{pred_path} has {len(predictions)} slices of {predictions[0].shape[1]}x{predictions[0].shape[0]} "
                        f"but {label_path} has {len(labels)} of {labels[0].shape[1]}x{labels[0].shape[0]}")
    all_names = [str(index) for index in range(len(labels))]
    wanted = [str(name) for name in names] if names is not None else all_names
    unknown = [name for name in wanted if name not in all_names]
    if unknown or not wanted:
        raise UserError(f"--names: the stacks have slices 0..{len(labels) - 1}, not {', '.join(unknown) or 'none'}")
    try:
        probabilities = [as_probability(predictions[int(name)]) for name in wanted]
    except ValueError as error:
        raise UserError(f"{pred_path} is not a probability stack ({error}): save values in [0, 1] or 0-255") from error
    bar = None
    if progress:
        from isbi_unet.progress import progress_bar

        bar = progress_bar(len(wanted), "slice")
    scores = isbi_scores(probabilities, [as_cell_mask(labels[int(name)], mask_foreground) for name in wanted], names=wanted,
                         progress=(lambda done, total: bar.update(done)) if bar else None)
    scores["pred_dir"], scores["label_dir"] = str(pred_path), str(label_path)
    if json_path is not None:
        write_json(json_path, scores)
    return scores
