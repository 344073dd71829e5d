"""Cells on maps the project was not tuned on: enclosed segments, the maps' own calibration,
and a fitted edge model that gives way on maps unlike its own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from skimage import io

from conftest import false_boundary_map, synthetic_slice
from isbi_unet.cells import calibration
from isbi_unet.cells import methods as cell_methods
from isbi_unet.cells import parameters as cell_parameters
from isbi_unet.cells.edge_costs import EdgeCostModel
from isbi_unet.cells.split_components import split_components
from isbi_unet.cli import main as cli_main
from isbi_unet.evaluation.metric import segmentation_scores


def test_a_segment_enclosed_by_one_other_takes_its_id():
    dense = np.ones((12, 12), np.int64)
    dense[:, 8:] = 2  # touches the edge: stays
    dense[3:6, 2:5] = 3  # inside 1 only: becomes 1
    dense[4, 3] = 4  # inside 3, which is inside 1: becomes 1
    dense[5:7, 6:10] = 5  # between 1 and 2: stays
    merged = cell_methods.merge_enclosed(dense)
    assert set(np.unique(merged)) == {1, 2, 5}
    assert (merged[3:6, 2:5] == 1).all() and (merged[:, 10:] == 2).all()
    single = np.full((5, 5), 7)
    np.testing.assert_array_equal(cell_methods.merge_enclosed(single), single)


def _map_with_organelles(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(map (H, W) float32, label 0/255): clear cells, and a dark ring (an organelle's
    membrane, as a network draws it) well inside each of the larger cells."""
    _, label = synthetic_slice((128, 128), seed=seed, cells=8)
    from scipy import ndimage

    prob = ndimage.gaussian_filter((label > 0).astype(np.float32), 0.8)
    room = ndimage.distance_transform_edt(label > 0)
    rows, cols = np.indices(label.shape)
    cells, count = ndimage.label(label > 0)
    for cell in range(1, count + 1):
        inside = np.where(cells == cell, room, 0)
        if inside.max() < 14:
            continue
        row, col = np.unravel_index(np.argmax(inside), inside.shape)
        ring = np.abs(np.hypot(rows - row, cols - col) - 6) < 1.2
        prob[ring] = 0.05
    return np.clip(prob, 0, 1).astype(np.float32), label


def test_multicut_keeps_an_organelle_inside_its_cell():
    prob, label = _map_with_organelles(3)
    merged = segmentation_scores([cell_methods.multicut(prob)], [label])
    original = cell_methods.merge_enclosed
    try:
        cell_methods.merge_enclosed = lambda dense, *boundary: dense
        cut_out = segmentation_scores([cell_methods.multicut(prob)], [label])
    finally:
        cell_methods.merge_enclosed = original
    assert merged["v_rand_split"] > cut_out["v_rand_split"] + 0.02
    assert merged["v_rand"] > 0.95


@pytest.mark.parametrize("rescale", [lambda p: p ** 8, lambda p: p ** 0.2, lambda p: 0.2 + 0.6 * p,
                                     lambda p: 1 / (1 + np.exp(-12 * (p - 0.7)))])
def test_components_at_the_label_free_threshold_do_not_depend_on_the_maps_calibration(rescale):
    prob, _ = false_boundary_map(3)
    second = false_boundary_map(4)[0]
    own = calibration.label_free_threshold([prob, second])
    other = calibration.label_free_threshold([rescale(prob), rescale(second)])  # the same ranking, another scale
    assert other == pytest.approx(float(rescale(np.float32(own))), abs=1e-6)
    np.testing.assert_array_equal(cell_methods.threshold(rescale(prob), other), cell_methods.threshold(prob, own))


@pytest.mark.parametrize("rescale", [lambda p: p ** 8, lambda p: p ** 0.2])
def test_a_bounded_threshold_stays_between_its_shares_whatever_the_calibration(rescale):
    maps = [rescale(false_boundary_map(seed)[0]) for seed in (3, 4)]
    low, high = (calibration.label_free_threshold(maps, share) for share in (0.3, 0.4))
    bounded = calibration.label_free_threshold(maps, (0.3, 0.4))
    assert low <= bounded <= high


def test_cells_saturated_at_one_stay_cells():
    _, label = synthetic_slice((96, 96), seed=1)
    prob = np.where(label > 0, 1.0, 0.0).astype(np.float32)  # 80 % of the pixels at 1
    threshold = calibration.label_free_threshold([prob])
    assert threshold == 0.0
    assert cell_methods.threshold(prob, threshold).max() > 1


@pytest.mark.parametrize("share", [0.2, 0.35, 0.5])
def test_the_label_free_threshold_calls_its_share_of_the_pixels_membrane(share):
    values = np.random.default_rng(0).random((2, 64, 64)).astype(np.float32)
    threshold = calibration.label_free_threshold(list(values), share)
    assert threshold in values
    assert np.mean(values <= threshold) == pytest.approx(share, abs=1 / values.size + 1e-9)
    with pytest.raises(ValueError):
        calibration.label_free_threshold(list(values), 1.0)


def _fitted(tmp_path=None) -> dict:
    fit = [false_boundary_map(seed) for seed in (1, 2)]
    return cell_parameters.fit_edge_model([p for p, _ in fit], [label for _, label in fit])


def test_a_fitted_edge_model_keeps_its_maps_quantiles_through_json():
    model = _fitted()
    maps = [false_boundary_map(seed)[0] for seed in (1, 2)]
    assert model["map_quantiles"] == pytest.approx(calibration.map_quantiles(maps))
    again = EdgeCostModel.from_dict(json.loads(json.dumps(model))).to_dict()
    assert again["map_quantiles"] == model["map_quantiles"]
    for broken in ([0.5, 0.4], [float("nan")], [0.0, 1.5]):
        with pytest.raises(ValueError):
            EdgeCostModel.from_dict({**model, "map_quantiles": broken})
    older = {key: value for key, value in model.items() if key != "map_quantiles"}
    assert "map_quantiles" not in EdgeCostModel.from_dict(older).to_dict()  # files from before still load


def test_a_fitted_model_gives_way_to_split_components_at_the_maps_threshold_on_unlike_maps_only():
    params = {"edge_model": _fitted()}
    like = [false_boundary_map(3)[0]]
    unlike = [like[0] ** 6, false_boundary_map(4)[0] ** 6]  # another network's scale: cells need a threshold near 0.9
    assert cell_parameters.method_for_maps("learned-multicut", params, like)[0] == "learned-multicut"
    method, fallback, reason = cell_parameters.method_for_maps("learned-multicut", params, unlike)
    assert method == cell_parameters.FALLBACK_METHOD == "split-components" and "unlike" in reason
    assert fallback == {**cell_parameters.DEFAULT_PARAMETERS["split-components"],
                        "threshold": calibration.label_free_threshold(unlike)}
    assert cell_parameters.method_for_maps("multicut", {}, unlike)[0] == "multicut"


def test_segment_warns_and_falls_back_on_unlike_maps(tmp_path, capsys):
    path = tmp_path / "instance_parameters.json"
    cell_parameters.save_parameters({"method": "learned-multicut", "parameters": {"edge_model": _fitted()}}, path)
    maps = tmp_path / "maps"
    maps.mkdir()
    prob = false_boundary_map(3)[0] ** 6
    io.imsave(maps / "0_predict.png", np.round(prob * 255).astype(np.uint8), check_contrast=False)
    out = tmp_path / "cells"
    assert cli_main.main(["segment", "--pred", str(maps), "--output", str(out), "--method", "learned-multicut",
                          "--params", str(path), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "warning: these maps are unlike" in printed and "split-components: threshold 0." in printed
    assert "Wrote 1 label images (split-components, threshold=0." in printed  # what made them, not what was asked
    stored = io.imread(maps / "0_predict.png") / np.float32(255.0)
    own = calibration.label_free_threshold([stored])
    np.testing.assert_array_equal(tifffile.imread(out / "0_labels.tif"), split_components(stored, own))


def test_the_learned_multicut_keeps_organelles_and_small_pieces_in_their_cells():
    model = _fitted()
    prob, label = _map_with_organelles(3)
    scores = {}
    for min_size in (0, 300):  # the rings are as deep as membranes: pieces join across any boundary
        scores[min_size] = segmentation_scores([cell_methods.learned_multicut(
            prob, edge_model=model, min_size=min_size, faint_boundary=0.0, enclosed_boundary=0.0)], [label])
    walled = segmentation_scores([cell_methods.learned_multicut(prob, edge_model=model, min_size=300)], [label])
    enclosed_walled = segmentation_scores([cell_methods.learned_multicut(prob, edge_model=model, min_size=0,
                                                                         faint_boundary=0.0)], [label])
    original = cell_methods.merge_enclosed
    try:
        cell_methods.merge_enclosed = lambda dense, *boundary: dense
        cut_out = segmentation_scores([cell_methods.learned_multicut(prob, edge_model=model, min_size=0)], [label])
    finally:
        cell_methods.merge_enclosed = original
    assert scores[0]["v_rand_split"] > cut_out["v_rand_split"] + 0.01  # organelles stay in their cells
    assert scores[300]["v_rand_split"] > scores[0]["v_rand_split"] + 0.02  # and so do small pieces
    assert scores[300]["v_rand"] > 0.99
    assert walled["v_rand_split"] < scores[300]["v_rand_split"]  # the default joins only across faint boundaries
    assert enclosed_walled["v_rand_split"] < scores[0]["v_rand_split"]  # and merges enclosed ones only across them
    assert cell_parameters.DEFAULT_PARAMETERS["learned-multicut"]["min_size"] == 300


@pytest.mark.parametrize("change", [lambda p: p ** 0.2, lambda p: p ** 5, lambda p: 0.5 * p + 0.25])
def test_map_ranks_do_not_move_with_the_calibration(change):
    prob = np.random.default_rng(0).random((32, 40)).astype(np.float32)
    ranks = calibration.map_ranks(prob)
    assert ranks.shape == prob.shape and ranks.min() > 0 and ranks.max() == 1.0
    np.testing.assert_allclose(calibration.map_ranks(change(prob)), ranks)


def test_pixels_of_one_value_share_the_middle_rank_of_their_group():
    prob = np.array([[0.0, 0.0, 0.0, 0.5], [0.5, 0.9, 0.9, 1.0]])  # 3 at 0: ranks 1-3 of 8
    ranks = calibration.map_ranks(prob)
    np.testing.assert_allclose(ranks[0, :3], 2 / 8)
    np.testing.assert_allclose(ranks[1, 3], 1.0)


@pytest.mark.parametrize("change", [lambda p: p ** 0.2, lambda p: p ** 5, lambda p: 0.5 * p + 0.25])
def test_a_map_read_relative_to_its_threshold_does_not_move_with_the_calibration(change):
    prob = np.random.default_rng(1).random((32, 40)).astype(np.float64)
    relative = calibration.relative_map(prob, 0.3, "ranks")
    assert (relative[prob <= 0.3] <= 0.5).all() and (relative[prob > 0.3] > 0.5).all()
    assert relative.min() >= 0.0 and relative.max() == pytest.approx(1.0)
    np.testing.assert_allclose(calibration.relative_map(change(prob), change(0.3), "ranks"), relative, atol=1e-6)


def test_a_power_of_the_map_puts_its_threshold_at_one_half():
    prob = np.random.default_rng(2).random((16, 16))
    relative = calibration.relative_map(prob, 0.7, "power")
    np.testing.assert_allclose(calibration.relative_map(np.array([0.7]), 0.7, "power"), [0.5], rtol=1e-6)
    np.testing.assert_allclose(calibration.relative_map(prob ** 3, 0.7 ** 3, "power"), relative, rtol=1e-5)
    np.testing.assert_array_equal(calibration.relative_map(prob, 0.7, "map"), prob.astype(np.float32))
    with pytest.raises(ValueError, match="reading"):
        calibration.relative_map(prob, 0.7, "quantiles")


@pytest.mark.parametrize("value", ["0", "1"])
def test_segment_passes_enclosed_boundary_to_the_learned_multicut(tmp_path, value):
    path = tmp_path / "instance_parameters.json"
    model = {key: value for key, value in _fitted().items() if key != "map_quantiles"}  # no check of the maps
    cell_parameters.save_parameters({"method": "learned-multicut", "parameters": {"edge_model": model}}, path)
    (tmp_path / "maps").mkdir()
    io.imsave(tmp_path / "maps" / "0_predict.png", np.round(_map_with_organelles(3)[0] * 255).astype(np.uint8),
              check_contrast=False)
    assert cli_main.main(["segment", "--pred", str(tmp_path / "maps"), "--output", str(tmp_path / "cells"),
                          "--method", "learned-multicut", "--params", str(path), "--min-size", "0",
                          "--faint-boundary", "0", "--enclosed-boundary", value, "--quiet"]) == 0
    stored = io.imread(tmp_path / "maps" / "0_predict.png") / np.float32(255.0)
    expected = cell_methods.learned_multicut(stored, edge_model=model, min_size=0, faint_boundary=0.0,
                                             enclosed_boundary=float(value))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "cells" / "0_labels.tif"), expected)
    merged_all = cell_methods.learned_multicut(stored, edge_model=model, min_size=0, faint_boundary=0.0,
                                               enclosed_boundary=0.0)
    assert (len(np.unique(expected)) > len(np.unique(merged_all))) == (value == "1")  # deep rings stay apart at 1


@pytest.mark.parametrize("prob, threshold", [(np.full((8, 8), 0.5), 0.5), (np.linspace(0.2, 0.9, 64).reshape(8, 8), 0.1),
                                             (np.linspace(0.2, 0.9, 64).reshape(8, 8), 0.95)])
def test_a_map_read_relative_to_a_threshold_outside_its_values_stays_within_0_1(prob, threshold):
    relative = calibration.relative_map(prob, threshold)
    assert relative.dtype == np.float32 and np.isfinite(relative).all()
    assert (relative >= 0).all() and (relative <= 1).all()
    assert ((relative <= 0.5) == (prob <= threshold)).all()  # the threshold's side is kept


def test_large_folders_are_read_on_every_kth_pixel_and_small_ones_whole(monkeypatch):
    maps = [np.random.default_rng(seed).random((10, 10)).astype(np.float32) for seed in range(3)]
    whole = calibration.pixel_values(maps)
    np.testing.assert_array_equal(whole, np.concatenate([m.ravel() for m in maps]))
    monkeypatch.setattr(calibration, "MAX_EXACT_PIXELS", 100)  # 300 pixels: every 3rd
    np.testing.assert_array_equal(calibration.pixel_values(maps), np.concatenate([m.ravel()[::3] for m in maps]))
    assert calibration.pixel_values([]).size == 0


def test_a_folders_maps_are_read_one_at_a_time():
    from isbi_unet.cells.map_slices import LazyMaps, MapSlice

    reads = []
    maps = [np.full((4, 4), value, np.float32) for value in (0.2, 0.8)]
    slices = [MapSlice(str(index), lambda index=index: reads.append(index) or maps[index], lambda: None)
              for index in range(2)]
    lazy = LazyMaps(slices)
    assert len(lazy) == 2 and reads == []
    assert calibration.map_quantiles(lazy) == calibration.map_quantiles(maps)
    assert reads == [0, 0, 1]  # the first map also tells the folder's size


def test_membrane_probabilities_are_told_to_turn_round(tmp_path, capsys):
    """Cell-probability maps pass; the same maps turned round (high = membrane, as other tools
    write them) get one warning line from segment, which still writes the cells."""
    from scipy import ndimage as ndi

    maps = []
    for seed in range(3):
        _, label = synthetic_slice((96, 96), seed=seed)
        maps.append(ndi.gaussian_filter((label > 0).astype(np.float32), 1.0))
    assert calibration.inverted_reason(maps) is None
    assert "look inverted" in calibration.inverted_reason([1 - prob for prob in maps])
    assert "look inverted" in calibration.inverted_reason([1 - prob for prob in maps], crop=64)  # the centre
    assert calibration.inverted_reason(maps, crop=64) is None
    (tmp_path / "maps").mkdir()
    for index, prob in enumerate(maps):
        io.imsave(tmp_path / "maps" / f"{index}_predict.png", np.round((1 - prob) * 255).astype(np.uint8),
                  check_contrast=False)
    assert cli_main.main(["segment", "--pred", str(tmp_path / "maps"), "--output", str(tmp_path / "cells"),
                          "--quiet"]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "save 1 - map" in warnings[0]
    assert (tmp_path / "cells" / "cells.csv").is_file()


def test_a_map_slice_reads_each_file_once_and_refuses_unequal_sizes():
    from isbi_unet.cells.map_slices import MapSlice
    from isbi_unet.errors import UserError

    reads = []
    prob = np.full((4, 4), 0.5, np.float32)
    prob_only = MapSlice("a", lambda: reads.append("map") or prob)
    got_map, got_image = prob_only.read()
    assert reads == ["map"] and np.array_equal(got_image, prob * 255)
    with pytest.raises(UserError, match="image of b is 5x4 but its map b is 4x4"):
        MapSlice("b", lambda: prob, lambda: np.zeros((4, 5), np.float32)).read()
