"""The selection slices as batches: whole, in order, at native size."""

import numpy as np

from isbi_unet.io import pairs
from isbi_unet.training.dataset import SliceBatches


def test_slice_batches_keep_order_and_native_size(tiny_dataset):
    _, images, masks = pairs.load_pairs(tiny_dataset / "train/image", tiny_dataset / "train/label")
    batches = SliceBatches(images, masks, batch_size=4)
    assert len(batches) == 2
    x, y = batches[1]
    assert x.shape == (2, 96, 96, 1)
    np.testing.assert_allclose(x[0], images[4] / 255)
