"""Scoring finished label images (isbi_metric.segmentation_scores, metrics.evaluate_segmentation_folders)
and the split / merge parts of V_rand and V_info."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from skimage import io

from conftest import synthetic_slice
from isbi_unet.errors import UserError
from isbi_unet.evaluation import folders as folder_scores
from isbi_unet.evaluation import metric, slice_scores
from isbi_unet.evaluation.thinning import thin_labels, thin_mask


def _prediction_with_errors(label: np.ndarray) -> np.ndarray:
    """A 0/1 probability map that is ``label``'s cells with one membrane erased (a merge)
    and one cell cut by a new membrane (a split)."""
    prob = (label > 0).astype(np.float32)
    prob[:, 30:32] = 1.0  # erase a stretch of vertical membrane
    prob[40:42, :] = 0.0  # draw a new horizontal membrane
    return prob


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` and ``b`` have the same 0 pixels and the same segments up to renumbering."""
    if not (a == 0).tolist() == (b == 0).tolist():
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_probability_map_of_a_segmentation_scores_the_same_both_ways(tmp_path):
    _, label = synthetic_slice((96, 96), seed=3)
    prob = _prediction_with_errors(label)
    components, _ = ndimage.label(prob > 0.5, structure=ndimage.generate_binary_structure(2, 1))
    assert _same_partition(thin_labels(components), thin_mask(prob > 0.5))
    from_map = metric.isbi_scores([prob], [label])
    from_labels = metric.segmentation_scores([components.astype(np.uint16)], [label])
    assert from_map["v_rand"] < 0.999  # the errors are seen
    for key in ("v_rand", "v_info") + slice_scores.SCORE_PARTS:
        assert from_labels[key] == pytest.approx(from_map[key], abs=1e-12), key
    # the same through the folders: N_labels.tif against N_predict.png
    seg_dir, pred_dir, label_dir = tmp_path / "seg", tmp_path / "pred", tmp_path / "label"
    for folder in (seg_dir, pred_dir, label_dir):
        folder.mkdir()
    tifffile.imwrite(seg_dir / "7_labels.tif", components.astype(np.uint16))
    io.imsave(seg_dir / "7_overlay.png", np.zeros((96, 96, 3), np.uint8), check_contrast=False)
    io.imsave(seg_dir / "7.png", label, check_contrast=False)  # ignored beside N_labels.tif
    io.imsave(pred_dir / "7_predict.png", (prob * 255).astype(np.uint8), check_contrast=False)
    io.imsave(label_dir / "7.png", label, check_contrast=False)
    json_path = tmp_path / "seg.json"
    folder_seg = folder_scores.evaluate_segmentation_folders(seg_dir, label_dir, json_path=json_path, progress=False)
    folder_map = folder_scores.evaluate_folders(pred_dir, label_dir, progress=False)
    assert json_path.exists()
    assert folder_seg["per_slice"][0]["name"] == "7"
    for key in ("v_rand", "v_info", "v_rand_split", "v_rand_merge"):
        assert folder_seg[key] == pytest.approx(folder_map[key], abs=1e-12), key


def _perfect(label: np.ndarray) -> np.ndarray:
    return slice_scores.ground_truth_segments(label).astype(np.int64)


def _parts(seg: np.ndarray, label: np.ndarray) -> dict:
    return slice_scores.foreground_restricted_parts(slice_scores.ground_truth_segments(label), thin_labels(seg))


def test_a_split_lowers_only_the_split_parts_and_a_merge_only_the_merge_parts():
    _, label = synthetic_slice((96, 96), seed=5)
    perfect = _perfect(label)
    base = _parts(perfect, label)
    assert base["v_rand"] == pytest.approx(1.0) and base["h_seg_given_gt"] == pytest.approx(0.0, abs=1e-12)

    split = perfect.copy()  # cut the largest cell in two ids, no boundary pixels added
    sizes = np.bincount(perfect.ravel())
    sizes[0] = 0
    cell = int(sizes.argmax())
    rows, _ = np.nonzero(perfect == cell)
    split[(perfect == cell) & (np.arange(96)[:, None] < np.median(rows))] = perfect.max() + 1
    s = _parts(split, label)
    assert s["v_rand_split"] < 0.99 and s["v_rand_merge"] == pytest.approx(1.0)
    assert s["v_info_split"] < 0.99 and s["v_info_merge"] == pytest.approx(1.0)
    assert s["h_seg_given_gt"] > 0.01 and s["h_gt_given_seg"] == pytest.approx(0.0, abs=1e-12)

    merged = perfect.copy()  # two touching cells share one id
    touching = ndimage.binary_dilation(perfect == cell, iterations=3) & (perfect > 0) & (perfect != cell)
    other = int(np.bincount(perfect[touching]).argmax())
    merged[merged == other] = cell
    m = _parts(merged, label)
    assert m["v_rand_merge"] < 0.99 and m["v_rand_split"] == pytest.approx(1.0)
    assert m["v_info_merge"] < 0.99 and m["v_info_split"] == pytest.approx(1.0)
    assert m["h_gt_given_seg"] > 0.01 and m["h_seg_given_gt"] == pytest.approx(0.0, abs=1e-12)


def test_thin_labels_keeps_touching_ids_apart_and_thins_wide_boundaries():
    seg = np.array([[1, 1, 2, 2, 0, 0, 0, 3, 3]])
    out = thin_labels(seg * 1000)  # ids need not be consecutive
    assert out[0, :4].tolist() == [1, 1, 2, 2]
    assert np.count_nonzero(out == 0) == 1  # three boundary pixels thinned to one line pixel
    assert (thin_labels(np.zeros((4, 5), np.uint8)) == 1).all()
    with pytest.raises(ValueError):
        thin_labels(np.full((3, 3), 0.5))


def test_evaluate_segmentation_folders_rejects_float_images(tmp_path):
    seg_dir, label_dir = tmp_path / "seg", tmp_path / "label"
    seg_dir.mkdir()
    label_dir.mkdir()
    _, label = synthetic_slice((32, 32), seed=1)
    io.imsave(label_dir / "0.png", label, check_contrast=False)
    tifffile.imwrite(seg_dir / "0_labels.tif", np.full((32, 32), 0.5, np.float32))
    with pytest.raises(UserError, match="not a label image"):
        folder_scores.evaluate_segmentation_folders(seg_dir, label_dir, progress=False)


def _map_with_grey_level_204(label: np.ndarray) -> np.ndarray:
    """An 8-bit map (H, W) of ``label``'s cells (230) and membranes (30) in which one
    stretch of membrane has level 204: above 0.8 for Fiji (float32 204/255 against the
    double 0.8), not above it when compared in float32."""
    prob = np.where(label > 0, 230, 30).astype(np.uint8)
    prob[:, 30:32][label[:, 30:32] == 0] = 204
    return prob


def test_components_of_fijis_threshold_score_exactly_as_the_probability_path():
    _, label = synthetic_slice((96, 96), seed=3)
    prob = slice_scores.as_probability(_map_with_grey_level_204(label))
    mask = slice_scores.above_threshold(prob, 0.8)
    assert mask.sum() > (prob > 0.8).sum()  # the level-204 pixels count only at Fiji's precision
    components, _ = ndimage.label(mask, structure=ndimage.generate_binary_structure(2, 1))  # row-major ids
    assert np.array_equal(thin_labels(components), thin_mask(mask))  # same ids, not just the same partition
    gt = slice_scores.ground_truth_segments(label)
    from_map = slice_scores.foreground_restricted_parts(gt, slice_scores.thin_segmentation(prob, 0.8))
    from_labels = metric.segmentation_scores([components], [label])
    for key in ("v_rand", "v_info") + slice_scores.SCORE_PARTS:
        assert from_labels[key] == from_map[key], key


def test_threshold_segmentation_scores_as_the_probability_path_at_grey_level_204():
    from isbi_unet.cells import methods as cell_methods

    _, label = synthetic_slice((96, 96), seed=3)
    prob = slice_scores.as_probability(_map_with_grey_level_204(label))
    gt = slice_scores.ground_truth_segments(label)
    v_rand, v_info = slice_scores.foreground_restricted_scores(gt, slice_scores.thin_segmentation(prob, 0.8))
    from_labels = metric.segmentation_scores([cell_methods.threshold(prob, 0.8)], [label])
    assert (from_labels["v_rand"], from_labels["v_info"]) == (v_rand, v_info)


def test_a_colour_coded_segmentation_scores_as_its_ids(tmp_path):
    _, label = synthetic_slice((96, 96), seed=3)
    components, count = ndimage.label(_prediction_with_errors(label) > 0.5)
    palette = np.random.default_rng(0).permutation(np.arange(1, 256 ** 3))[:count]  # distinct colours
    palette = np.stack([palette // 65536, palette // 256 % 256, palette % 256], -1).astype(np.uint8)
    palette[:2] = [[255, 0, 0], [0, 64, 115]]  # one gray level (54): as gray, two cells would be one
    colours = np.concatenate([np.zeros((1, 3), np.uint8), palette])[components]
    seg_dir, label_dir = tmp_path / "seg", tmp_path / "label"
    seg_dir.mkdir()
    label_dir.mkdir()
    io.imsave(label_dir / "7.png", label, check_contrast=False)
    io.imsave(seg_dir / "7.png", colours, check_contrast=False)
    from_colours = folder_scores.evaluate_segmentation_folders(seg_dir, label_dir, progress=False)
    from_ids = metric.segmentation_scores([components], [label])
    assert from_colours["v_rand"] < 0.999  # the errors are seen
    for key in ("v_rand", "v_info", "v_rand_split", "v_rand_merge"):
        assert from_colours[key] == pytest.approx(from_ids[key], abs=1e-12), key
