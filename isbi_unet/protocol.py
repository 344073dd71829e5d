"""The protocol: the training folder's slices in three disjoint roles, and the k-fold blocks.

Training slices train; selection slices choose everything that is chosen (checkpoint,
early stopping, the learning-rate plateau, TTA, thresholds, cell parameters); test slices
are never read in training and are scored once at the end. ``main.py train``/``all``,
``crossval`` and the notebook all split with :func:`split_slices`; ``crossval`` draws its
blocks with :func:`consecutive_folds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from isbi_unet.errors import UserError

# The default split of the 30 ISBI training slices: 0-19 train, 20-24 select, 25-29 test.
# Blocks of consecutive slices, because neighbouring slices of the stack are nearly alike
# (a random split would put near-copies of the test slices into training); the test block
# is the one that earlier figures held out.
DEFAULT_SELECTION_IDS = ("20", "21", "22", "23", "24")


DEFAULT_TEST_IDS = ("25", "26", "27", "28", "29")


def find_training_folders(data_dir: str | Path) -> tuple[Path, Path]:
    """(image folder, mask folder) of a dataset: ``train/image`` + ``train/label``, or
    ``image(s)`` + ``label(s)``/``mask(s)`` directly under data_dir."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: data folder not found; run `python main.py fetch` first")
    for base in (data_dir / "train", data_dir):
        for image_name in ("image", "images"):
            for mask_name in ("label", "labels", "mask", "masks"):
                if (base / image_name).is_dir() and (base / mask_name).is_dir():
                    return base / image_name, base / mask_name
    raise UserError(f"{data_dir}: expected train/image and train/label folders (or image/ and label/, or the "
                    "stacks image.tif and label.tif); images without labels are predicted by a trained model: "
                    "python main.py predict --model logs/RUN/unet_membrane.keras --input DIR")


@dataclass(frozen=True)
class Split:
    """Names of the training folder's slices in their three disjoint roles."""

    train: list[str]
    select: list[str]
    test: list[str]


def _named(names: Sequence[str], wanted: Sequence[str], option: str) -> list[str]:
    missing = [name for name in wanted if name not in names]
    if missing:
        raise UserError(f"{option} {missing[0]!r} is not an image name of the training folder")
    return list(wanted)


def split_slices(names: Sequence[str], select_ids: Sequence[str] | None = None,
                 test_ids: Sequence[str] | None = None) -> Split:
    """Split slice names into training, selection and test slices.

    ``select_ids`` / ``test_ids``: names that must exist; None takes the defaults (20-24
    and 25-29) where all of them exist, else no test slices and the last sixth (>= 1) of
    the rest for selection. An empty ``test_ids`` means no test slices.
    """
    names = [str(name) for name in names]
    if test_ids is None:
        test = list(DEFAULT_TEST_IDS) if set(DEFAULT_TEST_IDS) <= set(names) else []
    else:
        test = _named(names, [str(i) for i in test_ids], "--test-ids")
    rest = [name for name in names if name not in test]
    if select_ids:
        select = _named(names, [str(i) for i in select_ids], "--val-ids")
    elif set(DEFAULT_SELECTION_IDS) <= set(rest):
        select = list(DEFAULT_SELECTION_IDS)
    else:
        select = rest[-max(1, len(rest) // 6):] if len(rest) >= 2 else []
    if set(select) & set(test):
        raise UserError(f"slice {sorted(set(select) & set(test))[0]!r} is both a selection (--val-ids) and a "
                        "test slice (--test-ids); a slice has one role")
    train = [name for name in rest if name not in select]
    if not select or not train:
        raise UserError(f"{len(names)} training images split into {len(train)} to train on, {len(select)} to "
                        f"select with and {len(test)} to test: need at least one to train on and one to select "
                        "with; change --val-ids / --test-ids")
    return Split(train, select, test)


def consecutive_folds(names: Sequence[str], folds: int) -> list[list[str]]:
    """``folds`` blocks of consecutive names (sizes differ by at most one)."""
    if not 3 <= folds <= len(names):
        raise UserError(f"--folds must be between 3 (train, select, test) and the number of training images "
                        f"({len(names)}), not {folds}")
    return [list(chunk) for chunk in np.array_split(list(names), folds)]
