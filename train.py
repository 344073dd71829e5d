"""The training loop shared by main.py, pipeline.py and the notebook.

A run writes everything under ``logs/<run>/``: TensorBoard event files, ``history.csv``,
``curves.png`` (the seed's plot_performance), a ``backup/`` folder for resuming (see
resume.py), and, unless told otherwise, the best model ``unet_membrane.keras`` (by the
selection slices' val_loss), saved in float32.

The training folder's slices have three disjoint roles (``Split``): training slices;
selection slices, which choose everything that is chosen (checkpoint, early stopping,
the learning-rate plateau, and later TTA and thresholds); and test slices, which training
never reads and which are scored once at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from callbacks import ConstantOutputStop, make_callbacks
from data import (
    SegmentationDataset,
    SliceBatches,
    check_binary_mask,
    check_label_mask,
    load_pairs,
    resize_image,
    resize_to,
)
from distribute import distribution_scope
from errors import UserError
from losses import PixelBinaryCrossentropy, unet_weight_map
from model import unet
from plots import plot_performance, plot_time_to_quality
from recipes import Recipe, set_precision
from resume import BACKUP_FOLDER, committed_epochs, trim_history
from runs import read_history

# Threads that prepare training batches ahead of the step. The augmentation's warps release
# the GIL, so 2 threads keep a 2-core CPU's training step fed (bench.py: the pipeline
# overhead fell from a few % to within noise against 1 thread).
DEFAULT_WORKERS = 2

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
    raise UserError(f"{data_dir}: expected train/image and train/label folders (or image/ and label/)")


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


@dataclass
class TrainingData:
    """Training and validation (= selection) slices (H, W, C) and masks (H, W, 1), 0-255
    floats; the test slices are only named."""

    train_images: list
    train_masks: list
    val_images: list
    val_masks: list
    split: Split
    train_weights: list | None = None
    val_weights: list | None = None
    num_class: int = 1

    @property
    def val_names(self) -> list[str]:
        return self.split.select


def load_training_data(data_dir: str | Path, recipe: Recipe, select_ids: Sequence[str] | None = None,
                       test_ids: Sequence[str] | None = None, num_class: int = 1) -> TrainingData:
    """Read the training folder and split it (see ``split_slices``); the test slices are
    left out of training and validation.

    Masks are binary (0/255 or 0/1) when num_class is 1, else integer labels below
    num_class. In the seed's mode (recipe.target_size) every slice is resized to it.
    Otherwise the validation slices are cropped to multiples of 2**recipe.depth (16 for
    the seed's depth 4) so that the whole slice fits the network.
    """
    if num_class > 1 and recipe.weighted_loss:
        raise UserError("the weighted loss is for binary masks; drop --weighted-loss or --num-class")
    if recipe.target == "affinities" and (recipe.weighted_loss or num_class > 1):
        raise UserError("--target affinities is for binary masks, without --weighted-loss or --num-class")
    image_dir, mask_dir = find_training_folders(data_dir)
    if num_class > 1:
        def check_mask(mask, path):
            check_label_mask(mask, path, num_class)
    else:
        check_mask = check_binary_mask
    names, images, masks = load_pairs(image_dir, mask_dir, as_gray=True, check_mask=check_mask)
    roles = split_slices(names, select_ids, test_ids)
    if recipe.target_size:
        images = [resize_image(image, recipe.target_size) for image in images]
        masks = [resize_to(mask, recipe.target_size, order=0) for mask in masks]
    train = [(i, m) for n, i, m in zip(names, images, masks) if n in roles.train]
    val = [(i, m) for n, i, m in zip(names, images, masks) if n in roles.select]
    step = 2**recipe.depth
    for name, (image, _) in zip(roles.select, val):
        if min(image.shape[:2]) < step:
            raise UserError(f"selection image {name} is {image.shape[1]}x{image.shape[0]} px; "
                            f"the network needs at least {step}x{step} (choose larger images with --val-ids)")

    def crop_to_step(array: np.ndarray) -> np.ndarray:
        height, width = array.shape[0] // step * step, array.shape[1] // step * step
        return array[:height, :width]

    split = TrainingData(
        train_images=[i for i, _ in train], train_masks=[m for _, m in train],
        val_images=[crop_to_step(i) for i, _ in val], val_masks=[crop_to_step(m) for _, m in val],
        split=roles, num_class=num_class,
    )
    if recipe.weighted_loss:
        split.train_weights = [unet_weight_map(mask) for mask in split.train_masks]
        split.val_weights = [unet_weight_map(mask) for mask in split.val_masks]
    return split


def make_datasets(data: TrainingData, recipe: Recipe, seed: int = 1, workers: int = DEFAULT_WORKERS,
                  replicas: int = 1):
    """(training batches, validation batches) of a split, as the recipe asks.

    ``replicas``: of data-parallel training; each validation slice is then repeated once
    per replica (see SliceBatches).
    """
    multi = dict(flag_multi_class=data.num_class > 1, num_class=max(2, data.num_class))
    if recipe.target == "affinities":
        from affinities import affinity_batch_targets

        multi["target_fn"] = affinity_batch_targets
    train_batches = SegmentationDataset(
        data.train_images, data.train_masks, batch_size=recipe.batch_size,
        steps_per_epoch=recipe.steps_per_epoch, aug_dict=recipe.aug_dict,
        patch_size=recipe.patch_size, weight_maps=data.train_weights, seed=seed, workers=workers,
        **multi,
    )
    val_batches = SliceBatches(data.val_images, data.val_masks, batch_size=1,
                               weight_maps=data.val_weights, copies=replicas, **multi)
    return train_batches, val_batches


def build_model(recipe: Recipe, num_class: int = 1, pretrained_weights: str | Path | None = None) -> keras.Model:
    """The compiled U-Net of a recipe: fixed input in the seed's resize mode, any size otherwise."""
    input_size = (*recipe.target_size, 1) if recipe.target_size else (None, None, 1)
    if recipe.target == "affinities":
        from affinities import DEFAULT_OFFSETS, MaskedAffinityCrossentropy

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
) -> TrainResult:
    """Train a U-Net with ``recipe`` on ``data_dir`` (train/image, train/label).

    Trains on the training slices, and chooses the checkpoint, early stopping and the
    learning-rate plateau on the selection slices; the test slices are left alone (see
    ``split_slices``). Writes the best model (float32) to model_path (default
    run_dir/unet_membrane.keras), and history.csv, curves.png and TensorBoard logs to
    run_dir. Re-running with the same run_dir after an interruption continues exactly
    from the last completed epoch (resume.py). ``distribute``: "none", or data
    parallelism over several devices (see distribute.py); the recipe's batch size is then
    the global batch, split evenly across the replicas. The global dtype policy is back
    to float32 when this returns or raises.
    """
    run_dir = Path(run_dir)
    for folder in (run_dir, *run_dir.parents):
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder}: is a file, not a folder for the run's logs; choose another --logs or --run")
    model_path = Path(model_path) if model_path else run_dir / "unet_membrane.keras"
    unfinished = (run_dir / BACKUP_FOLDER).is_dir()
    if model_path.exists() and not unfinished:
        raise UserError(f"{model_path}: already exists; choose another --out or remove it")
    if model_path.suffix != ".keras":
        raise UserError(f"{model_path}: the model is saved in the .keras format; use a .keras name")
    data = load_training_data(data_dir, recipe, select_ids, test_ids, num_class=num_class)
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    try:
        set_precision(recipe.precision)
        history, callbacks, seconds = _fit(data, recipe, run_dir, model_path, seed, workers, verbose,
                                           pretrained_weights, distribute)
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
    plot_performance(full_history, run_dir / "curves.png")
    if full_history.get("val_v_rand"):
        plot_time_to_quality(full_history, run_dir / "time_to_quality.png")
    return TrainResult(model_path, run_dir, full_history, seconds, data.split)


def _fit(data: TrainingData, recipe: Recipe, run_dir: Path, model_path: Path, seed: int, workers: int,
         verbose: int, pretrained_weights, distribute: str):
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
                                   replicas=replicas)
        start = time.monotonic()
        # shuffle=False: the dataset already orders an epoch's crops from (seed, epoch);
        # Keras's shuffle would draw the batch order from Python's global generator, a
        # state that a resumed process does not have.
        history = network.fit(train_batches, epochs=recipe.epochs, initial_epoch=done, shuffle=False,
                              validation_data=val_batches, callbacks=callbacks, verbose=verbose)
    return history, callbacks, time.monotonic() - start
