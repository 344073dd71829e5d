"""The training loop: the model of a recipe, fitted with the run's callbacks, resumable.

``python main.py train``/``all``/``crossval`` and the notebook reach it through
:func:`isbi_unet.pipeline.run.train_run`. A run writes everything under ``logs/<run>/``:
TensorBoard event files, ``history.csv``, ``curves.png`` (the seed's plot_performance), a
``backup/`` folder for resuming (see :mod:`isbi_unet.training.resume`), and, unless told otherwise, the best model ``unet_membrane.keras`` (by the
selection slices' val_loss), saved in float32.

The training folder's slices have three disjoint roles (``Split``): training slices;
selection slices, which choose everything that is chosen (checkpoint, early stopping,
the learning-rate plateau, and later TTA and thresholds); and test slices, which training
never reads and which are scored once at the end.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from isbi_unet.errors import UserError
from isbi_unet.evaluation.plots import plot_performance, plot_time_to_quality
from isbi_unet.evaluation.runs import read_history
from isbi_unet.protocol import Split
from isbi_unet.training.callback_set import make_callbacks
from isbi_unet.training.callbacks import ConstantOutputStop
from isbi_unet.training.dataset import (
    DEFAULT_WORKERS,
    TrainingData,
    load_training_data,
    make_datasets,
)
from isbi_unet.training.distribute import distribution_scope
from isbi_unet.training.losses import PixelBinaryCrossentropy
from isbi_unet.training.recipes import Recipe, set_precision
from isbi_unet.training.resume import (
    BACKUP_FOLDER,
    check_configuration,
    check_finished,
    committed_epochs,
    record_finished,
    trim_history,
)
from model import unet


def build_model(recipe: Recipe, num_class: int = 1, pretrained_weights: str | Path | None = None) -> keras.Model:
    """The compiled U-Net of a recipe: fixed input in the seed's resize mode, any size otherwise."""
    input_size = (*recipe.target_size, 1) if recipe.target_size else (None, None, 1)
    if recipe.target == "affinities":
        from isbi_unet.training.affinities import (
            DEFAULT_OFFSETS,
            MaskedAffinityCrossentropy,
        )

        return unet(pretrained_weights, input_size=input_size, width=recipe.width, depth=recipe.depth,
                    learning_rate=recipe.learning_rate, jit_compile=recipe.jit_compile,
                    head_activation=recipe.head_activation, ema_momentum=recipe.ema_momentum or None,
                    sigmoid_outputs=len(DEFAULT_OFFSETS), loss=MaskedAffinityCrossentropy())
    return unet(pretrained_weights, input_size=input_size, width=recipe.width, depth=recipe.depth,
                num_class=num_class,
                learning_rate=recipe.learning_rate, jit_compile=recipe.jit_compile,
                head_activation=recipe.head_activation, ema_momentum=recipe.ema_momentum or None,
                loss=PixelBinaryCrossentropy() if recipe.weighted_loss else None)


@dataclass
class TrainResult:
    model_path: Path
    run_dir: Path
    history: dict
    seconds: float
    split: Split


def train(
    data_dir: str | Path,
    recipe: Recipe,
    run_dir: str | Path,
    model_path: str | Path | None = None,
    select_ids: Sequence[str] | None = None,
    test_ids: Sequence[str] | None = None,
    seed: int = 1,
    workers: int = DEFAULT_WORKERS,
    verbose: int = 1,
    num_class: int = 1,
    pretrained_weights: str | Path | None = None,
    distribute: str = "none",
    seed_callbacks: Sequence[keras.callbacks.Callback] | None = None,
    reuse_finished: bool = False,
    mask_foreground: str = "cell",
) -> TrainResult:
    """Train a U-Net with ``recipe`` on ``data_dir`` (train/image, train/label).

    Trains on the training slices, and chooses the checkpoint, early stopping and the
    learning-rate plateau on the selection slices; the test slices are left alone (see
    ``split_slices``). Writes the best model (float32) to model_path (default
    run_dir/unet_membrane.keras), and history.csv, curves.png and TensorBoard logs to
    run_dir. Re-running with the same run_dir after an interruption continues exactly
    from the last completed epoch (isbi_unet/training/resume.py). ``distribute``: "none", or data
    parallelism over several devices (see isbi_unet/training/distribute.py); the recipe's batch size is then
    the global batch, split evenly across the replicas. ``seed_callbacks``: the seed's
    four callbacks made by the caller (the notebook writes them out), default
    ``callback_set.seed_callbacks``. A run_dir that holds a finished run is refused,
    unless ``reuse_finished`` (``all`` and ``crossval`` continuing after a kill) and the
    run was made with these very settings: its model and history are then returned as
    they are. ``mask_foreground``: what the masks' non-zero pixels are, "cell" (ISBI's
    labels) or "membrane". The global dtype policy is back to float32 when this returns or raises.
    """
    run_dir = Path(run_dir)
    for folder in (run_dir, *run_dir.parents):
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder}: is a file, not a folder for the run's logs; choose another --logs or --run")
    model_path = Path(model_path) if model_path else run_dir / "unet_membrane.keras"
    unfinished = (run_dir / BACKUP_FOLDER).is_dir()
    finished = not unfinished and bool(read_history(run_dir / "history.csv"))
    if model_path.exists() and not unfinished and not (finished and reuse_finished):
        raise UserError(f"{model_path}: already exists; choose another --out or remove it")
    if finished and not reuse_finished:
        raise UserError(f"{run_dir}: holds a finished run; choose another --run (a new run gets a new folder)")
    if model_path.suffix != ".keras":
        raise UserError(f"{model_path}: the model is saved in the .keras format; use a .keras name")
    data = load_training_data(data_dir, recipe, select_ids, test_ids, num_class=num_class,
                              mask_foreground=mask_foreground)
    config = {"recipe": dataclasses.asdict(recipe), "seed": seed, "data": str(Path(data_dir).resolve()),
              "model": str(model_path.resolve()), "split": dataclasses.asdict(data.split), "num_class": num_class,
              "pretrained_weights": pretrained_weights and str(pretrained_weights), "distribute": distribute}
    if mask_foreground != "cell":  # recorded only when set, so that runs from before the option still resume
        config["mask_foreground"] = mask_foreground
    if finished:
        seconds = check_finished(run_dir, config)
        print(f"{run_dir} holds a finished run with these settings: its model is used as it is")
        return TrainResult(model_path, run_dir, read_history(run_dir / "history.csv"), seconds, data.split)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    check_configuration(run_dir, config)
    keras.utils.set_random_seed(seed)
    try:
        set_precision(recipe.precision)
        history, callbacks, seconds = _fit(data, recipe, run_dir, model_path, seed, workers, verbose,
                                           pretrained_weights, distribute, seed_callbacks)
    except UserError:
        if created and not committed_epochs(run_dir):  # refused before training (e.g. --pretrained): leave no folder
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        keras.mixed_precision.set_global_policy("float32")
    full_history = read_history(run_dir / "history.csv") or dict(history.history)
    losses = history.history.get("loss", [])
    if losses and not np.isfinite(losses[-1]):
        raise UserError(f"training stopped at epoch {len(full_history.get('loss', losses))}: the loss "
                        f"became {losses[-1]} (NaN or infinite); try a lower --lr. Best model so far: {model_path}")
    collapsed_at = next((c.collapsed_at for c in callbacks if isinstance(c, ConstantOutputStop)), None)
    if collapsed_at:
        raise UserError(f"training stopped at epoch {collapsed_at}: the network's output has been the same "
                        f"value on every pixel for several epochs, and it does not recover from that. Start "
                        f"again with another --seed (or a lower --lr) and a new --run; this run's logs are in {run_dir}")
    record_finished(run_dir, config, seconds)
    plot_performance(full_history, run_dir / "curves.png")
    if full_history.get("val_v_rand"):
        plot_time_to_quality(full_history, run_dir / "time_to_quality.png")
    return TrainResult(model_path, run_dir, full_history, seconds, data.split)


def _fit(data: TrainingData, recipe: Recipe, run_dir: Path, model_path: Path, seed: int, workers: int,
         verbose: int, pretrained_weights, distribute: str, seed_callbacks=None):
    """Build the model and fit it, continuing an interrupted run: (history, callbacks, seconds)."""
    with distribution_scope(distribute) as replicas:
        if recipe.batch_size % replicas:
            raise UserError(f"the batch size {recipe.batch_size} does not split evenly across {replicas} replicas")
        if replicas > 1:
            print(f"Data-parallel training over {replicas} replicas, {recipe.batch_size // replicas} crops each per step")
        train_batches, val_batches = make_datasets(data, recipe, seed=seed, workers=workers, replicas=replicas)
        network = build_model(recipe, data.num_class, pretrained_weights)
        # Created here rather than inside the first traced step, which TensorFlow then
        # traces a second time; a resumed run needs them before loading its backup anyway.
        network.optimizer.build(network.trainable_variables)
        done = committed_epochs(run_dir)
        trim_history(run_dir, done)
        if done:  # the backup restores the state; the augmentation follows the epoch
            train_batches.epoch = done
            print(f"Resuming the interrupted run in {run_dir} after epoch {done}")
        callbacks = make_callbacks(run_dir, model_path, recipe, verbose,
                                   validation=(data.val_images, data.val_masks), resuming=done > 0,
                                   isbi_score=data.num_class == 1 and recipe.target == "membrane",
                                   replicas=replicas, seed_four=seed_callbacks)
        start = time.monotonic()
        # shuffle=False: the dataset already orders an epoch's crops from (seed, epoch);
        # Keras's shuffle would draw the batch order from Python's global generator, a
        # state that a resumed process does not have.
        history = network.fit(train_batches, epochs=recipe.epochs, initial_epoch=done, shuffle=False,
                              validation_data=val_batches, callbacks=callbacks, verbose=verbose)
    return history, callbacks, time.monotonic() - start
