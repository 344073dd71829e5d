"""The seed's data.py: reading, augmenting and writing ISBI-style image/mask data.

The seed's functions keep their names, arguments and meaning: ``adjustData``,
``trainGenerator``, ``testGenerator``, ``geneTrainNpy``, ``labelVisualize``,
``saveResult`` and ``COLOR_DICT``. They run without ImageDataGenerator: augmentation is
:mod:`isbi_unet.io.augment` (numpy + skimage), batching is ``SegmentationDataset``, a
``keras.utils.PyDataset``, so the same code trains under the TensorFlow, JAX and PyTorch
backends; the training loop (:mod:`isbi_unet.training.loop`) batches with it too.
Image files are read and written by :mod:`isbi_unet.io.images`; the data set is fetched
by ``python main.py fetch`` (:mod:`isbi_unet.io.fetch`).

Arrays are channels-last: images (H, W, C) or batches (B, H, W, C), float32.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import keras
import numpy as np

from isbi_unet.errors import UserError
from isbi_unet.io.augment import AugmentSpec, augment_planes
from isbi_unet.io.images import (
    natural_key,
    read_image,
    resize_image,
    resize_to,
    to_uint8,
    write_image,
)
from isbi_unet.io.pairs import load_pairs

Sky = [128, 128, 128]
Building = [128, 0, 0]
Pole = [192, 192, 128]
Road = [128, 64, 128]
Pavement = [60, 40, 222]
Tree = [128, 128, 0]
SignSymbol = [192, 128, 128]
Fence = [64, 64, 128]
Car = [64, 0, 128]
Pedestrian = [64, 64, 0]
Bicyclist = [0, 128, 192]
Unlabelled = [0, 0, 0]

COLOR_DICT = np.array([Sky, Building, Pole, Road, Pavement, Tree, SignSymbol, Fence,
                       Car, Pedestrian, Bicyclist, Unlabelled])


# --------------------------------------------------------------- the seed's functions

def adjustData(img: np.ndarray, mask: np.ndarray, flag_multi_class: bool, num_class: int):
    """Scale a batch to the network's ranges, as the seed did.

    Args:
      img: (..., H, W, C) on the 0-255 (or already 0-1) scale.
      mask: (..., H, W, 1) 0/255 or 0/1 masks; with flag_multi_class, integer labels.
      flag_multi_class: one-hot encode ``num_class`` labels instead of binarising.

    Returns:
      (img, mask): img in [0, 1]; mask binary {0, 1} of shape (..., H, W, 1), or one-hot
      of shape (..., H, W, num_class). (The seed also flattened the one-hot mask to
      (B, H*W, num_class), which matches no output of its model; that step is dropped.)
    """
    img = np.asarray(img, dtype=np.float32)
    mask = np.asarray(mask, dtype=np.float32)
    if np.max(img) > 1:
        img = img / 255.0
    if flag_multi_class:
        labels = np.rint(mask[..., 0]).astype(np.int64)
        one_hot = np.zeros(labels.shape + (num_class,), dtype=np.float32)
        for i in range(num_class):
            one_hot[labels == i, i] = 1.0
        return img, one_hot
    if np.max(mask) > 1:
        mask = mask / 255.0
    return img, (mask > 0.5).astype(np.float32)


class SegmentationDataset(keras.utils.PyDataset):
    """Endless augmented training batches from slices held in memory.

    Each epoch has ``steps_per_epoch`` batches. Slices are drawn as the seed's
    flow_from_directory drew them: shuffled, every slice once per pass. Batch ``i`` of
    epoch ``e`` depends only on (seed, e, i), so runs repeat exactly with any number of
    workers.

    Args:
      images: slices (H, W, C) on the 0-255 scale (sizes may differ when cropping).
      masks: matching (H, W, 1) masks.
      batch_size, steps_per_epoch: batches of (B, h, w, C) images and (B, h, w, K) masks.
      aug_dict: the seed's augmentation dict (see isbi_unet/io/augment.py).
      patch_size: (h, w) random crops at native resolution; None keeps the whole slice
        (the seed's mode, after resizing everything to its target_size).
      weight_maps: optional per-slice (H, W, 1) loss weights, transformed with the mask
        and yielded as the third element of each batch.
      seed: base seed of the augmentation and the slice order.
      target_fn: optional map of the augmented binary masks (B, h, w, 1) to the training
        targets (B, h, w, K'), e.g. affinities.affinity_batch_targets.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        batch_size: int = 2,
        steps_per_epoch: int = 100,
        aug_dict: Mapping | None = None,
        patch_size: Sequence[int] | None = (256, 256),
        flag_multi_class: bool = False,
        num_class: int = 2,
        weight_maps: Sequence[np.ndarray] | None = None,
        seed: int = 1,
        target_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        **py_dataset_kwargs,
    ):
        super().__init__(**py_dataset_kwargs)
        if len(images) != len(masks) or not images:
            raise ValueError("need as many masks as images, and at least one")
        self.has_weights = weight_maps is not None
        # Per slice, one (C, H, W) float32 stack of image channels, mask and weights: the
        # transform is drawn once per crop and applied plane by plane without copies.
        self.planes = [
            np.ascontiguousarray(np.concatenate([np.moveaxis(np.asarray(a, np.float32), -1, 0) for a in arrays]))
            for arrays in zip(images, masks, *([weight_maps] if self.has_weights else []))
        ]
        self.image_channels = images[0].shape[2]
        self.orders = [1] * self.image_channels + [0 if flag_multi_class else 1] + [1] * self.has_weights
        self.batch_size = int(batch_size)
        self.steps_per_epoch = int(steps_per_epoch)
        self.spec = AugmentSpec.from_dict(aug_dict)
        self.patch_size = tuple(patch_size) if patch_size else None
        self.flag_multi_class = flag_multi_class
        self.num_class = num_class
        self.seed = int(seed)
        self.target_fn = target_fn
        self.epoch = 0
        if self.patch_size:
            smallest = min(min(planes.shape[1:]) for planes in self.planes)
            if smallest < max(self.patch_size):
                raise UserError(
                    f"a training image is {smallest} px on a side, smaller than the "
                    f"{self.patch_size} training patch; use a smaller --patch-size"
                )

    def __len__(self) -> int:
        return self.steps_per_epoch

    def on_epoch_end(self) -> None:
        self.epoch += 1

    def slice_index(self, epoch: int, position: int) -> int:
        """The slice at a sample position of an epoch: a fresh permutation per pass."""
        count = len(self.planes)
        cycle, offset = divmod(position, count)
        order = np.random.default_rng([self.seed, epoch, cycle, 1]).permutation(count)
        return int(order[offset])

    def batch(self, epoch: int, index: int):
        """Batch ``index`` of ``epoch``: (images, masks[, weights])."""
        rng = np.random.default_rng([self.seed, epoch, index])
        crops = np.stack([
            augment_planes(self.planes[self.slice_index(epoch, index * self.batch_size + j)],
                           self.spec, rng, self.patch_size, self.orders)
            for j in range(self.batch_size)
        ], axis=-1)  # (C, h, w, B)
        channels = self.image_channels
        x = np.moveaxis(crops[:channels], (0, 3), (3, 0))
        y = np.moveaxis(crops[channels:channels + 1], (0, 3), (3, 0))
        x, y = adjustData(x, y, self.flag_multi_class, self.num_class)
        if self.target_fn is not None:
            y = self.target_fn(y)
        if self.has_weights:
            return x, y, np.ascontiguousarray(np.moveaxis(crops[channels + 1:], (0, 3), (3, 0)))
        return x, y

    def __getitem__(self, index: int):
        return self.batch(self.epoch, index)


def trainGenerator(batch_size, train_path, image_folder, mask_folder, aug_dict,
                   image_color_mode="grayscale", mask_color_mode="grayscale",
                   image_save_prefix="image", mask_save_prefix="mask",
                   flag_multi_class=False, num_class=2, save_to_dir=None,
                   target_size=(256, 256), seed=1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless (img, mask) batches from ``train_path/image_folder`` and ``mask_folder``.

    As in the seed: every slice is resized to ``target_size`` (images with
    ``resize_image``, as prediction does; masks nearest neighbour), image and mask get the same random augmentation, and
    ``adjustData`` scales them. Yields img (B, h, w, C) in [0, 1] and mask (B, h, w, 1)
    in {0, 1} (one-hot with flag_multi_class). With ``save_to_dir`` the augmented pairs
    are also written there as PNGs. ``target_size=None`` keeps the native size.
    """
    names, images, masks = load_pairs(
        Path(train_path) / image_folder, Path(train_path) / mask_folder,
        as_gray=image_color_mode == "grayscale",
    )
    if target_size is not None:
        images = [resize_image(image, target_size) for image in images]
        masks = [resize_to(mask, target_size, order=0) for mask in masks]
    steps = -(-len(images) // batch_size)
    dataset = SegmentationDataset(
        images, masks, batch_size=batch_size, steps_per_epoch=steps, aug_dict=aug_dict,
        patch_size=None, flag_multi_class=flag_multi_class, num_class=num_class, seed=seed,
    )
    counter = 0
    while True:
        for index in range(len(dataset)):
            img, mask = dataset[index]
            if save_to_dir is not None:
                os.makedirs(save_to_dir, exist_ok=True)
                for i in range(len(img)):
                    write_image(os.path.join(save_to_dir, f"{image_save_prefix}_{counter}.png"), to_uint8(img[i]))
                    write_image(os.path.join(save_to_dir, f"{mask_save_prefix}_{counter}.png"),
                                to_uint8(mask[i][..., :1]))
                    counter += 1
            yield img, mask
        dataset.on_epoch_end()


def testGenerator(test_path, num_image=30, target_size=(256, 256), flag_multi_class=False,
                  as_gray=True) -> Iterator[np.ndarray]:
    """Yield test slices ``0.png`` .. ``{num_image-1}.png`` as (1, h, w, C) in [0, 1].

    ``target_size=None`` keeps each slice's native size.
    """
    for i in range(num_image):
        img = read_image(os.path.join(test_path, "%d.png" % i), as_gray=as_gray) / 255.0
        if target_size is not None:
            img = resize_image(img, target_size)
        yield img[None].astype(np.float32)


def geneTrainNpy(image_path, mask_path, flag_multi_class=False, num_class=2,
                 image_prefix="image", mask_prefix="mask", image_as_gray=True,
                 mask_as_gray=True) -> tuple[np.ndarray, np.ndarray]:
    """All ``{image_prefix}*.png`` of ``image_path`` and their masks as two arrays.

    The mask of ``image_path/{image_prefix}X.png`` is ``mask_path/{mask_prefix}X.png``.
    Returns (N, H, W, C) images in [0, 1] and (N, H, W, 1) (or one-hot) masks.
    """
    image_name_arr = sorted(glob.glob(os.path.join(image_path, "%s*.png" % image_prefix)),
                            key=natural_key)
    image_arr, mask_arr = [], []
    for item in image_name_arr:
        img = read_image(item, as_gray=image_as_gray)
        mask_file = os.path.join(mask_path, os.path.basename(item).replace(image_prefix, mask_prefix, 1))
        mask = read_image(mask_file, as_gray=mask_as_gray)[..., :1]
        img, mask = adjustData(img, mask, flag_multi_class, num_class)
        image_arr.append(img)
        mask_arr.append(mask)
    return np.array(image_arr), np.array(mask_arr)


def labelVisualize(num_class, color_dict, img) -> np.ndarray:
    """Colour a label map: (H, W) labels, or (H, W, K) scores (argmax), -> (H, W, 3) in [0, 1]."""
    img = np.asarray(img)
    if img.ndim == 3:
        img = img[..., 0] if img.shape[-1] == 1 else np.argmax(img, axis=-1)
    img_out = np.zeros(img.shape + (3,))
    for i in range(num_class):
        img_out[img == i, :] = color_dict[i]
    return img_out / 255


def saveResult(save_path, npyfile, flag_multi_class=False, num_class=2,
               names: Sequence[str] | None = None,
               sizes: Sequence[tuple[int, int]] | None = None) -> list[Path]:
    """Write predictions as 8-bit PNGs ``{name}_predict.png`` (name defaults to the index).

    Args:
      npyfile: (N, h, w, K) predictions, or a sequence of (h, w, K) arrays.
      flag_multi_class: colour the argmax with COLOR_DICT instead of writing the
        probability of class 1 as gray levels.
      sizes: optional (H, W) per prediction; each map is resized (bilinear) to it,
        e.g. back to a slice's native 512x512.
    Returns the written paths.
    """
    os.makedirs(save_path, exist_ok=True)
    written = []
    for i, item in enumerate(npyfile):
        item = np.asarray(item, dtype=np.float32)
        if sizes is not None:
            item = resize_to(item, sizes[i], order=1)
        if flag_multi_class:
            img = (labelVisualize(num_class, COLOR_DICT, item) * 255).round().astype(np.uint8)
        else:
            img = to_uint8(item)
        name = names[i] if names is not None else str(i)
        written.append(write_image(Path(save_path) / f"{name}_predict.png", img))
    return written
