"""The training folder's slices as batches: read, split by the protocol, weighted, batched.

:func:`load_training_data` reads the pairs and splits them (:func:`isbi_unet.protocol.split_slices`);
:func:`make_datasets` gives the augmented training batches (``data.SegmentationDataset``,
the seed's ``trainGenerator`` batches) and the selection slices whole (:class:`SliceBatches`).
Images are (H, W, C) and masks (H, W, 1), float32 on the 0-255 scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from data import SegmentationDataset, adjustData
from isbi_unet.errors import UserError
from isbi_unet.io.images import resize_image, resize_to
from isbi_unet.io.pairs import check_binary_mask, check_label_mask, load_pairs
from isbi_unet.protocol import Split, find_training_folders, split_slices
from isbi_unet.training.losses import unet_weight_map
from isbi_unet.training.recipes import Recipe


class SliceBatches(keras.utils.PyDataset):
    """Whole slices in order, for validation: batches of (B, H, W, C) and masks.

    Slices of one batch must share a size; ``batch_size`` 1 accepts any mix. ``copies``:
    each batch repeated this many times along its first axis, so that every data-parallel
    replica gets a full share; the mean loss and metrics stay those of the slices.
    ``target_fn``: as in SegmentationDataset.
    """

    def __init__(self, images, masks, batch_size: int = 1, flag_multi_class: bool = False,
                 num_class: int = 2, weight_maps=None, copies: int = 1, target_fn=None, **py_dataset_kwargs):
        super().__init__(**py_dataset_kwargs)
        self.images, self.masks, self.weight_maps = list(images), list(masks), weight_maps
        self.batch_size = batch_size
        self.copies = copies
        self.target_fn = target_fn
        self.flag_multi_class, self.num_class = flag_multi_class, num_class

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index: int):
        chunk = slice(index * self.batch_size, (index + 1) * self.batch_size)
        x, y = adjustData(np.stack(self.images[chunk]), np.stack(self.masks[chunk]),
                          self.flag_multi_class, self.num_class)
        if self.target_fn is not None:
            y = self.target_fn(y)
        batch = (x, y) if self.weight_maps is None else (x, y, np.stack(self.weight_maps[chunk]))
        return tuple(np.repeat(array, self.copies, axis=0) for array in batch)


# Threads that prepare training batches ahead of the step. The augmentation's warps release
# the GIL, so 2 threads keep a 2-core CPU's training step fed (bench.py: the pipeline
# overhead fell from a few % to within noise against 1 thread).
DEFAULT_WORKERS = 2


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


def load_training_data(data_dir: str | Path, recipe: Recipe, select_ids: Sequence[str] | None = None,
                       test_ids: Sequence[str] | None = None, num_class: int = 1,
                       mask_foreground: str = "cell") -> TrainingData:
    """Read the training folder and split it (see ``split_slices``); the test slices are
    left out of training and validation.

    Masks are binary (0/255 or 0/1) when num_class is 1, else integer labels below
    num_class. Binary masks whose non-zero pixels are membrane are read with
    ``mask_foreground="membrane"`` (turned round as they are read). In the seed's mode (recipe.target_size) every slice is resized to it.
    Otherwise the validation slices are cropped to multiples of 2**recipe.depth (16 for
    the seed's depth 4) so that the whole slice fits the network.
    """
    if num_class > 1 and recipe.weighted_loss:
        raise UserError("the weighted loss is for binary masks; drop --weighted-loss or --num-class")
    if recipe.target == "affinities" and (recipe.weighted_loss or num_class > 1):
        raise UserError("--target affinities is for binary masks, without --weighted-loss or --num-class")
    if num_class > 1 and mask_foreground != "cell":
        raise UserError("--mask-foreground is for binary masks; label masks (--num-class) say each pixel's class")
    image_dir, mask_dir = find_training_folders(data_dir)
    if num_class > 1:
        def check_mask(mask, path):
            check_label_mask(mask, path, num_class)
    else:
        check_mask = check_binary_mask
    names, images, masks = load_pairs(image_dir, mask_dir, as_gray=True, check_mask=check_mask,
                                     mask_foreground=mask_foreground)
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
        from isbi_unet.training.affinities import affinity_batch_targets

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
