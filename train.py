"""Training recipes and the training loop shared by main.py and the notebook.

A run writes everything under ``logs/<run>/``: TensorBoard event files, ``history.csv``,
``curves.png`` (the seed's plot_performance), a BackupAndRestore folder for resuming,
and, unless told otherwise, the best model ``unet_membrane.keras`` (by val_loss).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from data import (
    BLOG_AUG_DICT,
    DEFAULT_VALIDATION_IDS,
    SegmentationDataset,
    SliceBatches,
    check_binary_mask,
    check_label_mask,
    load_pairs,
    resize_image,
    resize_to,
)
from callbacks import ConstantOutputStop, completed_epochs, make_callbacks
from distribute import distribution_scope
from errors import UserError
from losses import PixelBinaryCrossentropy, unet_weight_map
from model import unet
from plots import plot_performance, plot_time_to_quality
from runs import read_history

# Threads that prepare training batches ahead of the step. The augmentation's warps release
# the GIL, so 2 threads keep a 2-core CPU's training step fed (bench.py: the pipeline
# overhead fell from a few % to within noise against 1 thread).
DEFAULT_WORKERS = 2

# Native-resolution recipe: flips, quarter turns and a mild affine, as the paper's
# augmentation without its elastic part (which the "paper" recipe adds).
NATIVE_AUG_DICT = dict(
    rotation_range=10.0,
    width_shift_range=0.05,
    height_shift_range=0.05,
    shear_range=5.0,
    zoom_range=0.1,
    horizontal_flip=True,
    vertical_flip=True,
    rot90=True,
    fill_mode="reflect",
)


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run but the data.

    ``patch_size`` set: train on random crops of native-resolution slices and validate on
    whole slices. ``target_size`` set instead: the seed's way, every slice resized.
    ``time_limit_minutes`` stops training early when the next epoch would not fit.
    ``weighted_loss`` trains with the paper's border-weighted cross-entropy.
    ``monitor`` picks the best checkpoint: "val_loss" (the seed's choice) or the ISBI
    "val_v_rand" / "val_v_info" of the held-out slices. ``jit_compile``: XLA (True),
    none (False), or Keras's choice ("auto"). ``head_activation``: of the 2-filter
    convolution before the sigmoid ("relu" in the seed; see model.unet).
    ``ema_momentum``: validate, checkpoint and keep an exponential moving average of the
    weights (None or 0: the raw weights, as the seed did).
    """

    name: str
    epochs: int
    steps_per_epoch: int
    batch_size: int
    width: int = 64
    learning_rate: float = 1e-4
    aug_dict: dict = field(default_factory=dict)
    patch_size: tuple[int, int] | None = (256, 256)
    target_size: tuple[int, int] | None = None
    precision: str = "float32"
    time_limit_minutes: float | None = None
    early_stopping_patience: int = 5
    reduce_lr_patience: int = 2
    weighted_loss: bool = False
    monitor: str = "val_loss"
    jit_compile: bool | str = "auto"
    head_activation: str = "relu"
    ema_momentum: float | None = None

    def replace(self, **changes) -> "Recipe":
        """A copy with some fields changed (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


JIT_CHOICES = {"on": True, "off": False, "auto": "auto"}


def jit_compile_option(choice: str | None) -> bool | str | None:
    """A ``--jit-compile`` choice (on, off, auto) as Recipe.jit_compile; None stays None."""
    return None if choice is None else JIT_CHOICES[choice]


RECIPES = {
    # The blog, exactly: batch 2, 2000 steps, 20 epochs, its aug dict, resized to 256x256.
    "blog": Recipe("blog", epochs=20, steps_per_epoch=2000, batch_size=2, width=64,
                   learning_rate=1e-4, aug_dict=BLOG_AUG_DICT, patch_size=None,
                   target_size=(256, 256)),
    # Sized for a 2-core CPU: a narrower network in bfloat16 on native-resolution crops,
    # stopped after 20 minutes of training.
    "cpu": Recipe("cpu", epochs=40, steps_per_epoch=100, batch_size=4, width=16,
                  learning_rate=1e-3, aug_dict=NATIVE_AUG_DICT, precision="mixed",
                  weighted_loss=True, time_limit_minutes=20.0, early_stopping_patience=10,
                  reduce_lr_patience=4, head_activation="elu", ema_momentum=0.99),
    # The paper's training on top of the seed network: native-resolution crops, elastic
    # deformation (3x3 grid, 10 px) and the border-weighted loss. Meant for a GPU.
    "paper": Recipe("paper", epochs=40, steps_per_epoch=250, batch_size=4, width=64,
                    learning_rate=1e-4, aug_dict=dict(NATIVE_AUG_DICT, elastic_sigma=10.0),
                    weighted_loss=True, precision="mixed", early_stopping_patience=8,
                    reduce_lr_patience=3, head_activation="elu", ema_momentum=0.99),
}


def has_gpu() -> bool:
    """Whether the active Keras backend sees a GPU."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def resolve_recipe(name: str = "auto") -> Recipe:
    """A recipe by name; "auto" is "blog" on a GPU and "cpu" otherwise."""
    if name == "auto":
        name = "blog" if has_gpu() else "cpu"
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; choose one of auto, {', '.join(RECIPES)}")
    return RECIPES[name]


def set_precision(precision: str) -> str:
    """Set Keras's global dtype policy: "float32", "bfloat16"/"float16" (mixed), or
    "mixed" (float16 on a GPU, bfloat16 on a CPU). Returns the policy name."""
    policies = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
    if precision == "mixed":
        precision = "float16" if has_gpu() else "bfloat16"
    if precision not in policies:
        raise UserError(f"--precision must be float32, mixed, bfloat16 or float16, not {precision!r}")
    keras.mixed_precision.set_global_policy(policies[precision])
    return policies[precision]


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


def split_validation(names: Sequence[str], validation_ids: Sequence[str] | None) -> list[str]:
    """The held-out names: validation_ids when all exist, else the last sixth (>= 1)."""
    if validation_ids:
        wanted = [str(i) for i in validation_ids]
        missing = [name for name in wanted if name not in names]
        if not missing and set(names) <= set(wanted):
            raise UserError(f"--val-ids holds out every one of the {len(names)} training images; "
                            "leave at least one to train on")
        if not missing:
            return wanted
        if tuple(wanted) != DEFAULT_VALIDATION_IDS:
            raise UserError(f"validation id {missing[0]!r} is not an image name of the training folder")
    if len(names) < 2:
        raise UserError("need at least 2 training images: one to train on and one to validate")
    return list(names[-max(1, len(names) // 6):])


@dataclass
class TrainingData:
    """Training and validation slices (H, W, C) and masks (H, W, 1), 0-255 floats."""

    train_images: list
    train_masks: list
    val_images: list
    val_masks: list
    val_names: list
    train_weights: list | None = None
    val_weights: list | None = None
    num_class: int = 1


def load_training_data(data_dir: str | Path, recipe: Recipe,
                       validation_ids: Sequence[str] | None = DEFAULT_VALIDATION_IDS,
                       num_class: int = 1) -> TrainingData:
    """Read the training folder and split off the validation slices.

    Masks are binary (0/255 or 0/1) when num_class is 1, else integer labels below
    num_class. In the seed's mode (recipe.target_size) every slice is resized to it.
    Otherwise the validation slices are cropped to multiples of 16 so that the whole
    slice fits the network.
    """
    if num_class > 1 and recipe.weighted_loss:
        raise UserError("the weighted loss is for binary masks; drop --weighted-loss or --num-class")
    image_dir, mask_dir = find_training_folders(data_dir)
    if num_class > 1:
        def check_mask(mask, path):
            check_label_mask(mask, path, num_class)
    else:
        check_mask = check_binary_mask
    names, images, masks = load_pairs(image_dir, mask_dir, as_gray=True, check_mask=check_mask)
    held_out = set(split_validation(names, validation_ids))
    if recipe.target_size:
        images = [resize_image(image, recipe.target_size) for image in images]
        masks = [resize_to(mask, recipe.target_size, order=0) for mask in masks]
    train = [(i, m) for n, i, m in zip(names, images, masks) if n not in held_out]
    val = [(n, i, m) for n, i, m in zip(names, images, masks) if n in held_out]
    for name, image, _ in val:
        if min(image.shape[:2]) < 16:
            raise UserError(f"validation image {name} is {image.shape[1]}x{image.shape[0]} px; "
                            "the network needs at least 16x16 (hold out larger images with --val-ids)")

    def crop16(array: np.ndarray) -> np.ndarray:
        height, width = array.shape[0] // 16 * 16, array.shape[1] // 16 * 16
        return array[:height, :width]

    split = TrainingData(
        train_images=[i for i, _ in train], train_masks=[m for _, m in train],
        val_images=[crop16(i) for _, i, _ in val], val_masks=[crop16(m) for _, _, m in val],
        val_names=[n for n, _, _ in val], num_class=num_class,
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
    return unet(pretrained_weights, input_size=input_size, width=recipe.width, num_class=num_class,
                learning_rate=recipe.learning_rate, jit_compile=recipe.jit_compile,
                head_activation=recipe.head_activation, ema_momentum=recipe.ema_momentum or None,
                loss=PixelBinaryCrossentropy() if recipe.weighted_loss else None)


@dataclass
class TrainResult:
    model_path: Path
    run_dir: Path
    history: dict
    seconds: float
    validation_names: list


def train(
    data_dir: str | Path,
    recipe: Recipe,
    run_dir: str | Path,
    model_path: str | Path | None = None,
    validation_ids: Sequence[str] | None = DEFAULT_VALIDATION_IDS,
    seed: int = 1,
    workers: int = DEFAULT_WORKERS,
    verbose: int = 1,
    num_class: int = 1,
    pretrained_weights: str | Path | None = None,
    distribute: str = "none",
) -> TrainResult:
    """Train a U-Net with ``recipe`` on ``data_dir`` (train/image, train/label).

    Writes the best model (by val_loss) to model_path (default run_dir/unet_membrane.keras),
    and history.csv, curves.png and TensorBoard logs to run_dir. Re-running with the same
    run_dir after an interruption resumes from the last completed epoch. ``distribute``:
    "none", or data parallelism over several devices (see distribute.py); the recipe's
    batch size is then the global batch, split evenly across the replicas.
    """
    run_dir = Path(run_dir)
    for folder in (run_dir, *run_dir.parents):
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder}: is a file, not a folder for the run's logs; choose another --logs or --run")
    model_path = Path(model_path) if model_path else run_dir / "unet_membrane.keras"
    if model_path.exists() and not (run_dir / "backup").exists():
        raise UserError(f"{model_path}: already exists; choose another --out or remove it")
    if model_path.suffix != ".keras":
        raise UserError(f"{model_path}: the model is saved in the .keras format; use a .keras name")
    keras.utils.set_random_seed(seed)
    set_precision(recipe.precision)
    data = load_training_data(data_dir, recipe, validation_ids, num_class=num_class)
    run_dir.mkdir(parents=True, exist_ok=True)

    with distribution_scope(distribute) as replicas:
        if recipe.batch_size % replicas:
            raise UserError(f"the batch size {recipe.batch_size} does not split evenly across {replicas} replicas")
        if replicas > 1:
            print(f"Data-parallel training over {replicas} replicas, {recipe.batch_size // replicas} crops each per step")
        train_batches, val_batches = make_datasets(data, recipe, seed=seed, workers=workers, replicas=replicas)
        network = build_model(recipe, num_class, pretrained_weights)
        resuming = (run_dir / "backup").is_dir()
        if resuming:  # BackupAndRestore restores the weights; the augmentation follows the epoch
            train_batches.epoch = completed_epochs(run_dir)
            print(f"Resuming the interrupted run in {run_dir} after epoch {train_batches.epoch}")

        callbacks = make_callbacks(run_dir, model_path, recipe, verbose,
                                   validation=(data.val_images, data.val_masks), resuming=resuming,
                                   isbi_score=num_class == 1, replicas=replicas)
        start = time.monotonic()
        history = network.fit(train_batches, epochs=recipe.epochs, validation_data=val_batches,
                              callbacks=callbacks, verbose=verbose)
    seconds = time.monotonic() - start
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
    return TrainResult(model_path, run_dir, full_history, seconds, data.val_names)
