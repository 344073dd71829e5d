"""The seed's data functions: adjustData, the generators, geneTrainNpy, saveResult."""

import itertools

import numpy as np
import pytest
from skimage import io

import data
from isbi_unet.errors import UserError
from isbi_unet.io import images as image_files
from isbi_unet.io import pairs
from isbi_unet.training.recipes import BLOG_AUG_DICT


def test_adjust_data_binary_scales_and_binarises():
    img = np.array([[[[0], [255]], [[128], [64]]]], np.float32)
    mask = np.array([[[[0], [255]], [[200], [100]]]], np.float32)
    out_img, out_mask = data.adjustData(img, mask, False, 2)
    np.testing.assert_allclose(out_img, img / 255)
    np.testing.assert_array_equal(out_mask[0, ..., 0], [[0, 1], [1, 0]])
    assert out_img.dtype == np.float32 and out_mask.dtype == np.float32


def test_adjust_data_binary_mask_is_binarised_even_for_a_dark_image():
    _, mask = data.adjustData(np.zeros((1, 2, 2, 1)), np.full((1, 2, 2, 1), 255.0), False, 2)
    np.testing.assert_array_equal(mask, 1.0)


def test_adjust_data_multi_class_is_one_hot():
    mask = np.array([[[[0], [1]], [[2], [1]]]], np.float32)
    img, one_hot = data.adjustData(np.full((1, 2, 2, 1), 255.0), mask, True, 3)
    assert one_hot.shape == (1, 2, 2, 3)
    np.testing.assert_array_equal(one_hot.argmax(-1), mask[..., 0])
    np.testing.assert_array_equal(one_hot.sum(-1), 1)
    np.testing.assert_allclose(img, 1.0)


def test_train_generator_shapes_dtypes_and_values(tiny_dataset):
    generator = data.trainGenerator(2, tiny_dataset / "train", "image", "label", BLOG_AUG_DICT,
                                    target_size=(64, 64))
    for img, mask in itertools.islice(generator, 4):
        assert img.shape == (2, 64, 64, 1) and mask.shape == (2, 64, 64, 1)
        assert img.dtype == np.float32 and mask.dtype == np.float32
        assert 0 <= img.min() and img.max() <= 1
        assert set(np.unique(mask)) <= {0.0, 1.0}


def test_train_generator_save_to_dir(tiny_dataset, tmp_path):
    generator = data.trainGenerator(2, tiny_dataset / "train", "image", "label", {}, target_size=(32, 32),
                                    save_to_dir=tmp_path / "aug")
    next(generator)
    assert sorted(p.name for p in (tmp_path / "aug").iterdir()) == ["image_0.png", "image_1.png", "mask_0.png", "mask_1.png"]


def test_train_generator_is_reproducible_by_seed(tiny_dataset):
    def first_batches(seed):
        generator = data.trainGenerator(2, tiny_dataset / "train", "image", "label", BLOG_AUG_DICT,
                                        target_size=(32, 32), seed=seed)
        return [batch[0] for batch in itertools.islice(generator, 3)]

    for a, b in zip(first_batches(1), first_batches(1)):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(first_batches(1), first_batches(2)))


def test_segmentation_dataset_crops_and_visits_every_slice(tiny_dataset):
    names, images, masks = pairs.load_pairs(tiny_dataset / "train/image", tiny_dataset / "train/label")
    for k, image in enumerate(images):
        image[:] = k  # tag each slice with its index
    dataset = data.SegmentationDataset(images, masks, batch_size=3, steps_per_epoch=2, patch_size=(32, 32))
    assert len(dataset) == 2
    seen = []
    for index in range(len(dataset)):
        x, y = dataset[index]
        assert x.shape == (3, 32, 32, 1) and y.shape == (3, 32, 32, 1)
        seen.extend(int(round(v * 255)) for v in x[:, 0, 0, 0])
    assert sorted(seen) == list(range(6))  # one pass: every slice exactly once


def test_segmentation_dataset_weight_maps_follow_the_mask(tiny_dataset):
    _, images, masks = pairs.load_pairs(tiny_dataset / "train/image", tiny_dataset / "train/label")
    weights = [mask.copy() for mask in masks]
    dataset = data.SegmentationDataset(images, masks, batch_size=2, steps_per_epoch=1, patch_size=(48, 48),
                                       aug_dict=dict(rotation_range=20, elastic_sigma=5.0), weight_maps=weights)
    x, y, w = dataset[0]
    assert w.shape == (2, 48, 48, 1)
    np.testing.assert_array_equal(y, (w > 127.5).astype(np.float32))


def test_test_generator_resizes_like_the_seed_or_keeps_native_size(tiny_dataset):
    resized = list(data.testGenerator(tiny_dataset / "test", num_image=2))
    assert [batch.shape for batch in resized] == [(1, 256, 256, 1)] * 2
    native = list(data.testGenerator(tiny_dataset / "test", num_image=2, target_size=None))
    assert native[0].shape == (1, 96, 96, 1) and native[0].dtype == np.float32 and native[0].max() <= 1


def test_gene_train_npy_pairs_by_prefix(tmp_path):
    from conftest import synthetic_slice

    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    for i in range(3):
        image, label = synthetic_slice((32, 32), seed=i)
        io.imsave(tmp_path / "img" / f"image{i}.png", image, check_contrast=False)
        io.imsave(tmp_path / "msk" / f"mask{i}.png", label, check_contrast=False)
    images, masks = data.geneTrainNpy(str(tmp_path / "img"), str(tmp_path / "msk"))
    assert images.shape == (3, 32, 32, 1) and masks.shape == (3, 32, 32, 1)
    assert images.max() <= 1 and set(np.unique(masks)) == {0.0, 1.0}


def test_save_result_writes_8bit_pngs_at_the_requested_size(tmp_path):
    predictions = np.stack([np.full((16, 16, 1), 0.5, np.float32), np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16, 1)])
    paths = data.saveResult(tmp_path, predictions, names=["a", "b"], sizes=[(32, 32), (16, 16)])
    assert [p.name for p in paths] == ["a_predict.png", "b_predict.png"]
    first, second = io.imread(paths[0]), io.imread(paths[1])
    assert first.dtype == np.uint8 and first.shape == (32, 32) and np.all(first == 128)
    assert second.min() == 0 and second.max() == 255
    seed_style = data.saveResult(tmp_path / "seed", predictions)
    assert [p.name for p in seed_style] == ["0_predict.png", "1_predict.png"]


def test_save_result_multi_class_uses_the_colour_dict(tmp_path):
    scores = np.zeros((1, 4, 4, 3), np.float32)
    scores[0, :2, :, 1] = 1  # class 1 (Building) on top, class 0 (Sky) below
    scores[0, 2:, :, 0] = 1
    path = data.saveResult(tmp_path, scores, flag_multi_class=True, num_class=3)[0]
    colours = io.imread(path)
    np.testing.assert_array_equal(colours[0, 0], data.Building)
    np.testing.assert_array_equal(colours[3, 3], data.Sky)


def test_label_visualize_colours_labels():
    labels = np.array([[0, 1], [2, 0]])
    out = data.labelVisualize(3, data.COLOR_DICT, labels)
    np.testing.assert_allclose(out[0, 1] * 255, data.Building)
    assert out.shape == (2, 2, 3)


def test_load_pairs_reports_unmatched_and_mismatched_files(tiny_dataset):
    (tiny_dataset / "train/label/5.png").unlink()
    with pytest.raises(UserError, match="5.png: no mask"):
        pairs.load_pairs(tiny_dataset / "train/image", tiny_dataset / "train/label")
    (tiny_dataset / "train/image/5.png").unlink()
    io.imsave(tiny_dataset / "train/label/9.png", np.zeros((96, 96), np.uint8), check_contrast=False)
    with pytest.raises(UserError, match="9.png: mask without an image"):
        pairs.load_pairs(tiny_dataset / "train/image", tiny_dataset / "train/label")
    (tiny_dataset / "train/label/9.png").unlink()
    io.imsave(tiny_dataset / "train/label/0.png", np.zeros((50, 96), np.uint8), check_contrast=False)
    with pytest.raises(UserError, match="same size"):
        pairs.load_pairs(tiny_dataset / "train/image", tiny_dataset / "train/label")


def test_masks_are_matched_by_mask_suffix(tmp_path):
    (tmp_path / "image").mkdir()
    (tmp_path / "label").mkdir()
    io.imsave(tmp_path / "image/cell.png", np.zeros((16, 16), np.uint8), check_contrast=False)
    io.imsave(tmp_path / "label/cell_mask.png", np.full((16, 16), 255, np.uint8), check_contrast=False)
    names, _, masks = pairs.load_pairs(tmp_path / "image", tmp_path / "label")
    assert names == ["cell"] and masks[0].max() == 255


def test_truncated_image_is_a_user_error(tmp_path):
    from conftest import synthetic_slice

    path = tmp_path / "0.png"
    io.imsave(path, synthetic_slice((64, 64), 0)[0], check_contrast=False)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError, match="0.png: cannot read this image"):
        image_files.read_image(path)


def test_read_image_converts_rgb_to_gray(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 255
    io.imsave(tmp_path / "rgb.png", rgb, check_contrast=False)
    gray = image_files.read_image(tmp_path / "rgb.png")
    assert gray.shape == (8, 8, 1) and 150 < gray.mean() < 200  # luminance of pure green
    assert image_files.read_image(tmp_path / "rgb.png", as_gray=False).shape == (8, 8, 3)


def test_list_images_skips_predictions_and_sorts_numerically(tmp_path):
    for name in ["10.png", "2.png", "2_predict.png", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in image_files.list_images(tmp_path)] == ["2.png", "10.png"]
    with pytest.raises(UserError, match="folder not found"):
        image_files.list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        image_files.list_images(tmp_path / "empty")
