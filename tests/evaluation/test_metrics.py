"""Tests for isbi_metric.py and isbi_slice_scores.py (the ISBI 2012 official V_rand / V_info after border thinning) and metrics.py (folders)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from isbi_unet.errors import UserError
from isbi_unet.evaluation import folders as folder_scores
from isbi_unet.evaluation import metric, slice_scores, thinning


def grid_label(shape=(48, 64), step_y=12, step_x=16, thickness=2) -> np.ndarray:
    """0/255 label image: cells (255) separated by straight membranes (0)."""
    y, x = np.indices(shape)
    label = np.full(shape, 255, np.uint8)
    label[(y % step_y) < thickness] = 0
    label[(x % step_x) < thickness] = 0
    return label


# ----------------------------------------------------------------------------- thresholds


def test_official_thresholds_are_accumulated_in_double_precision():
    ths = metric.OFFICIAL_THRESHOLDS
    assert len(ths) == 11
    assert ths[0] == 0.0 and ths[1] == 0.1 and ths[2] == 0.2
    assert ths[3] == 0.30000000000000004
    assert ths[-1] == 0.9999999999999999
    assert list(ths) == metric.official_thresholds(0.0, 1.0, 0.1)


# ----------------------------------------------------------------------------- thinning


def test_thinning_puts_one_pixel_line_in_the_middle_of_a_gap():
    # seeds at x=0,1 and x=5,6; the 3-pixel gap is flooded from both sides:
    # x=2 takes basin 1, x=4 basin 2, and x=3 sees both and becomes the line (0).
    fg = np.array([[1, 1, 0, 0, 0, 1, 1]], bool)
    assert thinning.thin_mask(fg).tolist() == [[1, 1, 1, 0, 2, 2, 2]]


def test_thinning_breaks_ties_in_fijis_queue_order():
    # Even gap of 2: both gap pixels are in the first flooding layer. Fiji dequeues
    # them in column-major order (x, then y), so the first one joins its basin and
    # the second one sees two basins and becomes the watershed line.
    row = np.array([[1, 0, 0, 1]], bool)
    assert thinning.thin_mask(row).tolist() == [[1, 1, 0, 2]]
    assert thinning.thin_mask(row.T).T.tolist() == [[1, 1, 0, 2]]


def test_thinning_empty_or_full_mask_is_one_segment():
    assert (thinning.thin_mask(np.zeros((5, 6), bool)) == 1).all()
    assert (thinning.thin_mask(np.ones((5, 6), bool)) == 1).all()


def test_thin_segmentation_lines_are_one_pixel_wide():
    label = grid_label()
    seg = slice_scores.thin_segmentation(label.astype(np.float32) / 255, 0.5)
    # every cell keeps its own id and the 2-pixel membranes become 1-pixel lines
    assert seg.max() == slice_scores.ground_truth_segments(label).max()
    assert np.count_nonzero(seg == 0) < np.count_nonzero(label == 0) / 1.5
    gt = slice_scores.ground_truth_segments(label)
    pairs = set(zip(gt[gt > 0].tolist(), seg[gt > 0].tolist()))
    assert len(pairs) == gt.max() and len({s for _, s in pairs}) == gt.max()  # one id per cell
    lines = seg == 0
    assert not (lines[:-1, :-1] & lines[:-1, 1:] & lines[1:, :-1] & lines[1:, 1:]).any()


# ----------------------------------------------------------------------------- hand calculations


def test_split_cell_matches_hand_calculation():
    # GT: two cells of 4 pixels; the proposal splits cell 1 in halves.
    gt = np.array([[1, 1, 1, 1, 0, 2, 2, 2, 2]])
    seg = np.array([[1, 1, 2, 2, 0, 3, 3, 3, 3]])
    # n = 8 GT-foreground pixels. a = (1/2, 1/2) -> sum a^2 = 1/2.
    # b = (2/8, 2/8, 4/8) -> sum b^2 = 1/16 + 1/16 + 1/4 = 3/8; p_ij = b_j -> sum p^2 = 3/8.
    # precision = 3/8 / 3/8 = 1, recall = 3/8 / 1/2 = 3/4 -> V_rand = 2*(3/4)/(7/4) = 6/7.
    # H(GT) = ln 2, H(S) = 1.5 ln 2, I = H(GT) (S determines GT) -> V_info = 2 ln2 / 2.5 ln2 = 0.8.
    v_rand, v_info = slice_scores.foreground_restricted_scores(gt, seg)
    assert v_rand == pytest.approx(6 / 7, abs=1e-12)
    assert v_info == pytest.approx(0.8, abs=1e-12)
    # the proposal only splits: one part of each score is perfect, the other is the hand value
    parts = slice_scores.foreground_restricted_parts(gt, seg)
    assert sorted([parts["v_rand_split"], parts["v_rand_merge"]]) == pytest.approx([3 / 4, 1.0], abs=1e-12)
    assert sorted([parts["v_info_split"], parts["v_info_merge"]]) == pytest.approx([2 / 3, 1.0], abs=1e-12)


def test_merged_cells_match_hand_calculation():
    # GT: three cells of 2 pixels; the proposal merges cells 1 and 2 (and the membrane
    # pixel between them, which does not count).
    gt = np.array([[1, 1, 0, 2, 2, 0, 3, 3]])
    seg = np.array([[1, 1, 1, 1, 1, 0, 2, 2]])
    # n = 6. a = (1/3, 1/3, 1/3) -> sum a^2 = 1/3. b = (4/6, 2/6) -> sum b^2 = 5/9.
    # p_ij = (1/3, 1/3, 1/3) -> sum p^2 = 1/3. precision = (1/3)/(5/9) = 3/5, recall = 1
    # -> V_rand = 2*(3/5)/(8/5) = 3/4.
    # H(GT) = ln 3, H(S) = -(2/3 ln 2/3 + 1/3 ln 1/3); I = H(S) (GT determines S)
    # -> V_info = 2 H(S) / (H(GT) + H(S)).
    hs = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    v_rand, v_info = slice_scores.foreground_restricted_scores(gt, seg)
    assert v_rand == pytest.approx(0.75, abs=1e-12)
    assert v_info == pytest.approx(2 * hs / (math.log(3) + hs), abs=1e-12)


def test_boundary_pixels_inside_cells_are_singletons():
    # The proposal's boundary pixels (0) that fall inside GT cells count as segments of
    # one pixel each.
    gt = np.array([[1, 1, 1, 0, 2, 2, 2]])
    seg = np.array([[1, 1, 0, 0, 0, 2, 2]])
    # n = 6, singletons: x=2 (in cell 1) and x=4 (in cell 2) -> sum p_i0 = 2/6.
    # sum a^2 = 1/2; sum b^2 = (2/6)^2 * 2 + (2/6)/6 = 2/9 + 1/18 = 5/18; sum p^2 = 5/18.
    # precision = 1, recall = (5/18)/(1/2) = 5/9 -> V_rand = 2*(5/9)/(14/9) = 5/7.
    v_rand, _ = slice_scores.foreground_restricted_scores(gt, seg)
    assert v_rand == pytest.approx(5 / 7, abs=1e-12)


def test_renumbering_labels_changes_nothing():
    rng = np.random.default_rng(3)
    gt = slice_scores.ground_truth_segments(grid_label())
    seg = slice_scores.thin_segmentation(rng.random(gt.shape).astype(np.float32), 0.4)
    base = slice_scores.foreground_restricted_scores(gt, seg)
    gt_perm = np.concatenate([[0], rng.permutation(np.arange(1, gt.max() + 1)) * 7 + 3])
    seg_perm = np.concatenate([[0], rng.permutation(np.arange(1, seg.max() + 1)) + 1000])
    again = slice_scores.foreground_restricted_scores(gt_perm[gt], seg_perm[seg])
    assert again == pytest.approx(base, abs=1e-12)
    # a 0/1 label gives the same ground truth as a 0/255 label
    label = grid_label()
    assert (slice_scores.ground_truth_segments(label) == slice_scores.ground_truth_segments(label // 255)).all()


# ----------------------------------------------------------------------------- isbi_scores


def test_perfect_map_scores_one():
    labels = [grid_label(), grid_label(step_y=10, step_x=13)]
    for probs in (labels, [lab.astype(np.float32) / 255 for lab in labels]):
        result = metric.isbi_scores(probs, labels)
        assert result["v_rand"] == pytest.approx(1.0, abs=1e-12)
        assert result["v_info"] == pytest.approx(1.0, abs=1e-12)
        assert result["pixel_error"] == pytest.approx(0.0, abs=1e-12)
        assert result["dice"] == pytest.approx(1.0, abs=1e-12)


def test_uint8_maps_are_rescaled_and_the_sweep_does_not_collapse():
    # membrane at 77/255 = 0.302, interior at 204/255 = 0.8, so only thresholds
    # 0.4 ... 0.7 separate the cells. Without rescaling every threshold below 1 would
    # see the same all-foreground image.
    label = grid_label()
    u8 = np.where(label > 0, 204, 77).astype(np.uint8)
    as_float = u8.astype(np.float32) / np.float32(255)
    r8 = metric.isbi_scores([u8], [label])
    rf = metric.isbi_scores([as_float], [label])
    for key in ("v_rand", "v_info", "v_rand_threshold", "v_info_threshold", "pixel_error", "dice"):
        assert r8[key] == rf[key]
    assert r8["v_rand"] == pytest.approx(1.0, abs=1e-12)
    assert r8["v_rand_threshold"] == 0.4
    assert r8["v_rand_curve"][0] < 0.5  # at 0.0 the cells are merged
    assert len(set(np.round(r8["v_rand_curve"], 9))) > 1


def test_official_number_is_max_of_mean_not_mean_of_maxima():
    label = grid_label()
    # slice A separates the cells only at thresholds 0.1-0.2, slice B only at 0.9
    slice_a = np.where(label > 0, 0.25, 0.05).astype(np.float32)
    slice_b = np.where(label > 0, 0.95, 0.85).astype(np.float32)
    result = metric.isbi_scores([slice_a, slice_b], [label, label])
    best_each = [s["v_rand_best"] for s in result["per_slice"]]
    assert best_each == pytest.approx([1.0, 1.0], abs=1e-12)
    assert result["per_slice"][0]["v_rand_best_threshold"] == 0.1
    assert result["per_slice"][1]["v_rand_best_threshold"] == 0.8999999999999999
    assert result["v_rand"] < 0.9  # no single threshold is good for both slices
    assert result["v_rand"] == pytest.approx(max(result["v_rand_curve"]), abs=0)
    curve = np.mean([s["v_rand_curve"] for s in result["per_slice"]], axis=0)
    assert result["v_rand_curve"] == pytest.approx(curve.tolist(), abs=1e-15)


def test_result_is_plain_json():
    label = grid_label()
    rng = np.random.default_rng(0)
    result = metric.isbi_scores([rng.random(label.shape)], [label], thresholds=[0.3, 0.6])
    text = json.dumps(result, allow_nan=False)
    assert set(json.loads(text)) >= {
        "v_rand", "v_info", "v_rand_threshold", "v_info_threshold", "pixel_error", "dice",
        "per_slice", "thresholds", "v_rand_curve", "v_info_curve",
    }
    assert result["thresholds"] == [0.3, 0.6]
    assert len(result["v_rand_curve"]) == 2
    assert all(isinstance(v, float) for v in (result["v_rand"], result["v_info"], result["dice"]))


def test_pixel_error_and_dice_of_a_perfect_and_an_inverted_map():
    label = grid_label()
    perfect = metric.isbi_scores([label.astype(np.float32) / 255], [label])
    assert perfect["pixel_error"] == pytest.approx(0.0)
    assert perfect["dice"] == pytest.approx(1.0)
    inverted = 1.0 - label.astype(np.float32) / 255
    assert metric.isbi_scores([inverted], [label])["dice"] == pytest.approx(0.0)


# ----------------------------------------------------------------------------- Fiji regression


def _hash_noise(shape, seed):
    """Deterministic integer-hash noise in 0..255 (no RNG, same on every platform)."""
    y, x = np.indices(shape, dtype=np.int64)
    v = (x * 73856093) ^ (y * 19349663) ^ (seed * 83492791)
    v = (v ^ (v >> 13)) * 1274126177
    return ((v ^ (v >> 16)) & 0xFF).astype(np.int64)


def fiji_regression_case():
    """Three 40x56 slices: uint8 probability maps and 0/255 labels."""
    shape = (40, 56)
    y, x = np.indices(shape)
    probs, labels = [], []
    for k in range(3):
        label = np.full(shape, 255, np.uint8)
        label[(y + 3 * k) % 13 < 2] = 0  # horizontal membranes, 2 px thick
        label[(x + 5 * k) % 17 < 2 + (k == 2)] = 0  # vertical membranes
        fine = _hash_noise(shape, 10 + k)
        coarse = _hash_noise((shape[0] // 4 + 1, shape[1] // 4 + 1), 20 + k)
        coarse = np.repeat(np.repeat(coarse, 4, 0), 4, 1)[: shape[0], : shape[1]]
        base = np.where(label > 0, 150 + coarse * 105 // 255, coarse * 130 // 255)
        prob = (base * 3 + fine) // 4  # 3/4 structure, 1/4 pixel noise
        probs.append(prob.astype(np.uint8))
        labels.append(label)
    return probs, labels


# Produced by the Fiji code itself: fiji/Trainable_Segmentation at commit
# 0c1783d805e486187affaa3e06d719a6eaf6ed26 (RandError.getForegroundRestrictedRandAfterThinningStats
# with perSliceAverage=true, VariationOfInformation.getForegroundRestrictedScoresAfterThinning,
# PixelError.getPixelErrorMaximalFScore; WatershedTransform2D as of that commit), compiled
# against ImageJ 1.53t and run headless on these maps as 32-bit images (uint8 / 255) with
# 8-bit 0/255 labels, thresholds 0.0:0.1:1.0. The connected-component labelling of the
# ground truth (Fiji's FindConnectedRegions) was replaced by a plain 4-connected labelling.
FIJI_V_RAND_CURVE = [
    0.15371832217569045, 0.15371832217569045, 0.15371832217569045, 0.15371832217569045,
    0.23498760414293887, 0.6717589792872368, 0.9183077385131321, 0.6090065236012937,
    0.27276615768480217, 0.23025708808806766, 0.15371832217569045,
]
FIJI_V_INFO_CURVE = [
    -1.132209861083852e-16, -1.132209861083852e-16, -1.132209861083852e-16,
    -1.132209861083852e-16, 0.25964244515324153, 0.8447661137299621, 0.9368254530483594,
    0.7527784293814982, 0.6506702523856306, 0.6292309695353834, -1.132209861083852e-16,
]
FIJI_V_RAND_MAX = 0.9183077385131321
FIJI_V_INFO_MAX = 0.9368254530483594
FIJI_PIXEL_F_MAX = 0.9671179883945841


def test_matches_fiji_regression_values():
    probs, labels = fiji_regression_case()
    result = metric.isbi_scores(probs, labels)
    assert result["v_rand_curve"] == pytest.approx(FIJI_V_RAND_CURVE, abs=1e-9)
    assert result["v_info_curve"] == pytest.approx(FIJI_V_INFO_CURVE, abs=1e-9)
    assert result["v_rand"] == pytest.approx(FIJI_V_RAND_MAX, abs=1e-9)
    assert result["v_info"] == pytest.approx(FIJI_V_INFO_MAX, abs=1e-9)
    assert result["v_rand_threshold"] == 0.6
    assert result["v_info_threshold"] == 0.6
    assert result["pixel_error"] == pytest.approx(1.0 - FIJI_PIXEL_F_MAX, abs=1e-9)


# ----------------------------------------------------------------------------- evaluate_folders


def _write_png(path: Path, image: np.ndarray) -> None:
    from skimage import io

    io.imsave(str(path), image, check_contrast=False)


@pytest.fixture
def folders(tmp_path):
    pred_dir, label_dir = tmp_path / "pred", tmp_path / "label"
    pred_dir.mkdir()
    label_dir.mkdir()
    labels = {"25": grid_label(), "26": grid_label(step_y=10, step_x=13), "27": grid_label(step_y=8)}
    for name, label in labels.items():
        _write_png(label_dir / f"{name}.png", label)
    _write_png(pred_dir / "25_predict.png", labels["25"])
    noisy = np.where(labels["26"] > 0, 200, 90).astype(np.uint8)
    noisy[::5, ::7] = 30
    _write_png(pred_dir / "26.png", noisy)
    _write_png(pred_dir / "27_predict.png", labels["27"])
    return pred_dir, label_dir, labels


def test_evaluate_folders_end_to_end(folders, tmp_path, capsys):
    pred_dir, label_dir, labels = folders
    json_path = tmp_path / "out" / "scores.json"
    result = folder_scores.evaluate_folders(pred_dir, label_dir, json_path=json_path, progress=True)
    assert [s["name"] for s in result["per_slice"]] == ["25", "26", "27"]
    assert result["per_slice"][0]["v_rand"] == pytest.approx(1.0, abs=1e-12)
    assert 0.0 < result["v_rand"] <= 1.0
    saved = json.loads(json_path.read_text())
    for key in ("v_rand", "v_info", "v_rand_threshold", "v_info_threshold", "pixel_error",
                "dice", "per_slice", "thresholds", "v_rand_curve", "v_info_curve"):
        assert key in saved
    assert saved["v_rand"] == result["v_rand"]
    assert not list(json_path.parent.glob("*.tmp"))
    assert "3/3" in capsys.readouterr().out  # the progress bar

    only = folder_scores.evaluate_folders(pred_dir, label_dir, names=["25", "27"], progress=False)
    assert [s["name"] for s in only["per_slice"]] == ["25", "27"]
    direct = metric.isbi_scores([labels["25"], labels["27"]], [labels["25"], labels["27"]])
    assert only["v_rand"] == direct["v_rand"] and only["v_info"] == direct["v_info"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_evaluate_folders_user_errors(folders, tmp_path):
    pred_dir, label_dir, labels = folders
    with pytest.raises(UserError, match="nope: prediction folder not found"):
        folder_scores.evaluate_folders(tmp_path / "nope", label_dir, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="empty: no labels"):
        folder_scores.evaluate_folders(pred_dir, empty, progress=False)
    with pytest.raises(UserError, match="no label image for 99"):
        folder_scores.evaluate_folders(pred_dir, label_dir, names=["25", "99"], progress=False)

    (pred_dir / "27_predict.png").unlink()
    with pytest.raises(UserError, match="no prediction .* 27"):
        folder_scores.evaluate_folders(pred_dir, label_dir, progress=False)

    _write_png(pred_dir / "27.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(UserError, match="is 10x10 but label"):
        folder_scores.evaluate_folders(pred_dir, label_dir, progress=False)

    (pred_dir / "27.png").write_bytes(b"this is not a png")
    with pytest.raises(UserError, match="27.png: cannot read this image"):
        folder_scores.evaluate_folders(pred_dir, label_dir, progress=False)

    _write_png(pred_dir / "27.png", labels["27"])
    _write_png(pred_dir / "27_predict.png", labels["27"])
    with pytest.raises(UserError, match="two predictions"):
        folder_scores.evaluate_folders(pred_dir, label_dir, progress=False)
