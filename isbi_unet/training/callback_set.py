"""The callbacks of a training run: the seed's four, and the project's extras around them.

The blog's four are :func:`seed_callbacks`: the best checkpoint, EarlyStopping and
ReduceLROnPlateau on the selection slices' ``val_loss``, and TensorBoard. The notebook
writes them out by name and hands them to the training loop; the command line has
:func:`seed_callbacks` make the same four. :func:`make_callbacks` puts the extras in the
order they must run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import keras

from isbi_unet.training.callbacks import (
    AveragedWeightsAtEpochEnd,
    BestModelCheckpoint,
    ConstantOutputStop,
    ISBIScore,
    TimeLimit,
    ValidationImages,
)
from isbi_unet.training.resume import BACKUP_FOLDER, ResumableBackup


def checkpoint_mode(monitor: str) -> str:
    """"max" for the ISBI scores (``val_v_rand``, ``val_v_info``), "min" for losses."""
    return "max" if monitor.startswith("val_v_") else "min"


def tensorboard_available() -> bool:
    """Whether TensorFlow, which writes TensorBoard's event files, is installed."""
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def seed_callbacks(run_dir: Path, model_path: Path, recipe, verbose: int = 1) -> list[keras.callbacks.Callback]:
    """The blog's four callbacks, as a run uses them: [checkpoint, early stopping, plateau, TensorBoard].

    The checkpoint keeps the best model by ``recipe.monitor`` (atomic, float32); early
    stopping and the learning-rate plateau watch the selection slices' ``val_loss``.
    TensorBoard is left out where TensorFlow is not installed.
    """
    callbacks = [
        BestModelCheckpoint(model_path, monitor=recipe.monitor, mode=checkpoint_mode(recipe.monitor), verbose=verbose),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=recipe.early_stopping_patience,
                                      verbose=verbose, mode="min"),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                          patience=recipe.reduce_lr_patience, verbose=verbose, mode="min"),
    ]
    if tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir)))
    else:
        print("TensorFlow is not installed: no TensorBoard event files for this run.")
    return callbacks


def make_callbacks(run_dir: Path, model_path: Path, recipe, verbose: int = 1, validation=None,
                   resuming: bool = False, isbi_score: bool = True, replicas: int = 1,
                   seed_four: Sequence[keras.callbacks.Callback] | None = None) -> list:
    """The seed's callbacks (``seed_four``, default :func:`seed_callbacks`) with the extras.

    In order: the weight average's swap (with ``recipe.ema_momentum``, so that the others
    see the average), the stop for a constant output and the ISBI score of the selection
    slices (``validation``: their (images, masks); ``isbi_score`` for binary masks), then
    the seed's four, a CSV of the history, TerminateOnNaN, the time limit, TensorBoard
    images of two selection slices, and last the backup for exact resume (it restores the
    others' counters after their on_train_begin). ``resuming``: continue the history.csv
    of an interrupted run. ``replicas``: of data-parallel training, for the callbacks'
    own predictions.
    """
    if recipe.monitor.startswith("val_v_") and (validation is None or not isbi_score):
        raise ValueError(f"monitor {recipe.monitor!r} needs the validation slices")
    if seed_four is None:
        seed_four = seed_callbacks(run_dir, model_path, recipe, verbose)
    callbacks = [AveragedWeightsAtEpochEnd(resuming)] if recipe.ema_momentum else []
    if validation is not None:
        callbacks.append(ConstantOutputStop(validation[0][0], copies=replicas, verbose=verbose))
        if isbi_score:
            callbacks.append(ISBIScore(*validation, copies=replicas))
    callbacks += [
        *seed_four,
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resuming),
        keras.callbacks.TerminateOnNaN(),
    ]
    if recipe.time_limit_minutes:
        callbacks.append(TimeLimit(recipe.time_limit_minutes, verbose=verbose))
    if validation is not None and tensorboard_available():
        callbacks.append(ValidationImages(run_dir, *validation, copies=replicas))
    callbacks.append(ResumableBackup(run_dir / BACKUP_FOLDER, callbacks))
    return callbacks
