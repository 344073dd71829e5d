"""split_components: components of a map, split only where a multicut cut follows membrane."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from isbi_unet.cells import calibration
from isbi_unet.cells import methods as cell_methods
from isbi_unet.cells import parameters as cell_parameters
from isbi_unet.cells.segments import absorb_small, merge_enclosed
from isbi_unet.cells.split_components import (
    map_threshold,
    membrane,
    split_components,
)
from isbi_unet.evaluation.metric import segmentation_scores

CELL, WALL = 0.9, 0.1
# These maps have far less membrane than a slice of tissue; the tests of the split give the
# threshold (the middle of WALL and CELL) rather than read it from the maps.
MIDDLE = 0.5


def framed(size: int = 96, wall: int = 4) -> np.ndarray:
    """A map (size, size) float32: cell interior CELL inside a membrane frame ``wall`` px thick."""
    prob = np.full((size, size), CELL, np.float32)
    prob[:wall], prob[-wall:], prob[:, :wall], prob[:, -wall:] = WALL, WALL, WALL, WALL
    return prob


FAINT = 0.44  # a wall below the threshold (0.5), whose pixels rank just under it


def spread_frame(prob: np.ndarray, wall: int = 4) -> np.ndarray:
    """``prob`` with its frame's membrane spread evenly over 0.05-0.45, as a network spreads
    membrane below the threshold: how deep a wall is then shows in its pixels' ranks."""
    frame = np.zeros(prob.shape, bool)
    frame[:wall], frame[-wall:], frame[:, :wall], frame[:, -wall:] = True, True, True, True
    out = prob.copy()
    out[frame] = np.linspace(0.05, 0.45, int(frame.sum()), dtype=np.float32)
    return out


def two_cells_with_a_gap(gap: int) -> tuple[np.ndarray, np.ndarray]:
    """(map, label): two cells split by a vertical membrane 4 px wide with a ``gap`` px hole
    (map as high as the cells there) in its middle, in the frame of :func:`spread_frame`; the
    label's membrane has no hole."""
    prob = spread_frame(framed())
    prob[:, 46:50] = WALL
    label = np.where(prob > 0.5, 255, 0).astype(np.uint8)
    prob[48 - gap // 2:48 - gap // 2 + gap, 46:50] = CELL
    return ndimage.gaussian_filter(prob, 0.7), label


def one_cell_with_specks() -> tuple[np.ndarray, np.ndarray]:
    """(map, label): one cell crossed by a line of dark specks (3x4 px, every 5 px), as weak
    maps have inside cells, in the frame of :func:`spread_frame`; the label is the one cell."""
    prob = spread_frame(framed())
    label = np.where(prob > 0.5, 255, 0).astype(np.uint8)
    for row in range(6, 90, 5):
        prob[row:row + 3, 46:50] = WALL
    return ndimage.gaussian_filter(prob, 0.7), label


def cells(labels: np.ndarray) -> int:
    return len(np.unique(labels[labels > 0]))


@pytest.mark.parametrize("gap", [2, 4])
def test_a_gap_in_a_membrane_is_closed(gap):
    prob, label = two_cells_with_a_gap(gap)
    assert cells(cell_methods.threshold(prob, MIDDLE)) == 1  # components leak through the gap
    split = split_components(prob, MIDDLE)
    assert cells(split) == 2
    assert segmentation_scores([split], [label])["v_rand"] > 0.99


@pytest.mark.parametrize("power", [0.2, 5.0])
def test_the_multicut_under_the_split_reads_its_costs_relative_to_the_threshold(power):
    prob, _ = two_cells_with_a_gap(2)
    split = split_components(prob, MIDDLE)
    np.testing.assert_array_equal(split_components(prob ** power, MIDDLE ** power), split)  # another calibration
    assert cells(split) == 2
    # costs read on the map's own values at the same beta: under prob ** 0.2 the wall (0.1 -> 0.63)
    # reads as cell, and the gap stays open
    assert cells(split_components(prob ** 0.2, MIDDLE ** 0.2, cost_map="map")) == 1


@pytest.mark.parametrize("gap, fraction, expected", [(8, 0.95, 1), (8, 0.8, 2), (12, 0.8, 2)])
def test_a_cut_must_lie_on_membrane_for_membrane_fraction_of_its_length(gap, fraction, expected):
    prob, _ = two_cells_with_a_gap(gap)  # the cut is about 96 px long, ``gap`` + 1-2 px of it off membrane
    assert cells(split_components(prob, MIDDLE, membrane_fraction=fraction)) == expected


def test_specks_inside_a_cell_do_not_cut_it():
    prob, label = one_cell_with_specks()
    assert cells(cell_methods.multicut(prob)) > 1  # multicut cuts along the specks
    assert not membrane(prob, MIDDLE, 1000)[10:86, 46:50].any()  # the specks are not membrane
    for beta in (0.15, 0.5):  # the default, and a multicut that cuts more
        assert cells(split_components(prob, MIDDLE, beta=beta)) == 1
        assert segmentation_scores([split_components(prob, MIDDLE, beta=beta)], [label])["v_rand"] > 0.99
    assert cells(split_components(prob, MIDDLE, beta=0.5, membrane_area=0)) > 1  # counted as membrane, they would cut it


def test_two_components_are_never_joined():
    prob = framed()
    prob[:, 46:50] = WALL  # a whole membrane: two components
    prob[40:56, 20:30] = WALL  # and a dark organelle inside the left one
    out = split_components(ndimage.gaussian_filter(prob, 0.7), beta=0.1)  # a multicut that merges much
    assert cells(out) == 2
    assert len(np.unique(out[:, :44][out[:, :44] > 0])) == 1  # the organelle stays in its cell


def test_the_threshold_is_read_from_the_maps_when_not_given():
    prob, _ = two_cells_with_a_gap(4)
    low = (prob ** 4).astype(np.float32)  # another calibration: the same ranking, cells far below 0.9
    assert map_threshold(low) == pytest.approx(calibration.label_free_threshold([low]))
    np.testing.assert_array_equal(split_components(low), split_components(low, map_threshold(low)))
    maps = [low, (one_cell_with_specks()[0] ** 4).astype(np.float32)]
    _, params, reason = cell_parameters.method_for_maps("split-components", {}, maps)
    assert reason is None and params["threshold"] == calibration.label_free_threshold(maps)
    given = cell_parameters.method_for_maps("split-components", {"threshold": 0.3}, maps)[1]
    assert given["threshold"] == 0.3


def test_selection_keeps_the_threshold_to_be_read_on_each_folder():
    prob, label = two_cells_with_a_gap(4)
    chosen = cell_parameters.select_parameters("split-components", [prob], [label],
                                               grid={"membrane_fraction": [0.6, 0.9]})
    assert chosen["parameters"]["threshold"] is None and chosen["v_rand"] > 0.99
    assert cell_parameters.describe_parameters(chosen["parameters"]).startswith("threshold=from the maps")
    with pytest.raises(ValueError, match="threshold"):
        cell_parameters.check_parameters("multicut", {"threshold": None})


def test_small_segments_join_the_neighbour_they_share_most_boundary_with():
    dense = np.ones((20, 20), np.int64)
    dense[:, 10:] = 2
    dense[4:7, 8:11] = 3  # 9 px: two columns in 1, one in 2
    dense[15:17, 0:2] = 4  # 4 px in the corner, inside 1
    out = absorb_small(dense, 10)
    assert set(np.unique(out)) == {1, 2} and (out[4:7, 8:11] == 1).all() and (out[15:17, 0:2] == 1).all()
    np.testing.assert_array_equal(absorb_small(dense, 4), dense)  # none smaller than 4 px
    tiny = np.array([[1, 2], [3, 4]])
    np.testing.assert_array_equal(absorb_small(tiny, 5), tiny)  # no neighbour large enough: all stay


def test_small_segments_join_only_across_a_faint_boundary_when_a_map_is_given():
    dense = np.ones((20, 20), np.int64)
    dense[:, 10:] = 2
    dense[4:7, 8:11] = 3  # 9 px: its boundary with 1 is longer than with 2
    boundary = np.full((20, 20), 0.9, np.float32)
    boundary[3:8, 7:10] = 0.0  # deep membrane between 3 and 1; the boundary with 2 is faint (0.9)
    out = absorb_small(dense, 10, boundary, 0.5)
    assert (out[4:7, 8:11] == 2).all()  # across the faint boundary, though it is the shorter
    np.testing.assert_array_equal(absorb_small(dense, 10, boundary, 0.95), dense)  # none faint enough: it stays
    np.testing.assert_array_equal(absorb_small(dense, 10, boundary, 0.0), absorb_small(dense, 10))


def test_enclosed_segments_join_only_across_a_faint_boundary_when_a_map_is_given():
    dense = np.ones((20, 20), np.int64)
    dense[:, 14:] = 2  # touches the edge: stays
    dense[3:7, 3:7] = 3  # inside 1, behind a deep boundary
    dense[10:14, 3:7] = 4  # inside 1, behind a faint one
    boundary = np.full((20, 20), 0.9, np.float32)
    boundary[2:8, 2:8] = 0.0
    out = merge_enclosed(dense, boundary, 0.5)
    assert set(np.unique(out)) == {1, 2, 3} and (out[10:14, 3:7] == 1).all()
    np.testing.assert_array_equal(merge_enclosed(dense, boundary, 0.0), merge_enclosed(dense))
    assert set(np.unique(merge_enclosed(dense))) == {1, 2}




def cell_inside_a_cell(wall: float) -> tuple[np.ndarray, np.ndarray]:
    """(map, label): a cell (24x24 px inside) walled all round by membrane of value ``wall``
    in the middle of a larger one (its frame :func:`spread_frame`); the label has the two cells."""
    prob = spread_frame(framed())
    prob[32:64, 32:64] = WALL
    prob[36:60, 36:60] = CELL
    label = np.where(prob > 0.5, 255, 0).astype(np.uint8)
    prob[32:64, 32:64] = np.where(prob[32:64, 32:64] == WALL, wall, CELL)
    return ndimage.gaussian_filter(prob, 0.7), label


def test_an_enclosed_cell_walled_by_deep_membrane_is_kept_and_one_walled_faintly_joins():
    prob, label = cell_inside_a_cell(WALL)
    assert cells(split_components(prob, MIDDLE, enclosed_boundary=0.0)) == 1  # any boundary: merged
    kept = split_components(prob, MIDDLE)
    assert cells(kept) == 2 and segmentation_scores([kept], [label])["v_rand"] > 0.99
    faint = cell_inside_a_cell(FAINT)[0]
    assert cells(split_components(faint, MIDDLE)) == 1
    assert cells(split_components(faint, MIDDLE, enclosed_boundary=0.9)) == 2
    # the same decisions on the maps of another calibration, at its own threshold
    for power in (0.2, 5.0):
        assert cells(split_components(prob ** power, MIDDLE ** power)) == 2
        assert cells(split_components(faint ** power, MIDDLE ** power)) == 1


def small_cell_beside_a_large_one() -> tuple[np.ndarray, np.ndarray]:
    """(map, label): a large cell and a small one (10x10 px inside, under 300 px with its
    walls) in its corner, walled by membrane as deep as the frame's deepest (the frame
    :func:`spread_frame`); the label has the two cells."""
    prob = spread_frame(framed())
    prob[4:18, 14:18] = WALL
    prob[14:18, 4:18] = WALL
    label = np.where(prob > 0.5, 255, 0).astype(np.uint8)
    return ndimage.gaussian_filter(prob, 0.7), label


def test_a_small_cell_walled_by_deep_membrane_is_kept_and_one_cut_off_by_a_faint_wall_joins():
    prob, label = small_cell_beside_a_large_one()
    assert cells(split_components(prob, MIDDLE, min_size=300, faint_boundary=0.0)) == 1  # any boundary: absorbed
    kept = split_components(prob, MIDDLE, min_size=300)
    assert cells(kept) == 2 and segmentation_scores([kept], [label])["v_rand"] > 0.99
    faint = faint_walled_small_cell()
    assert cells(split_components(faint, MIDDLE, min_size=300)) == 1
    assert cells(split_components(faint, MIDDLE, min_size=300, faint_boundary=0.9)) == 2
    for power in (0.2, 5.0):  # the same decisions on the maps of another calibration
        assert cells(split_components(prob ** power, MIDDLE ** power, min_size=300)) == 2
        assert cells(split_components(faint ** power, MIDDLE ** power, min_size=300)) == 1


def faint_walled_small_cell() -> np.ndarray:
    prob = small_cell_beside_a_large_one()[0]
    prob[4:18, 14:18] = prob[14:18, 4:18] = FAINT  # a faint wall round the small cell
    return prob


@pytest.mark.parametrize("option, value, make_map", [
    ("faint_boundary", "0", faint_walled_small_cell), ("faint_boundary", "0.9", faint_walled_small_cell),
    ("enclosed_boundary", "0", lambda: cell_inside_a_cell(FAINT)[0]),  # a faint wall round the inner cell
    ("enclosed_boundary", "0.9", lambda: cell_inside_a_cell(FAINT)[0])])
def test_segment_passes_its_boundary_options_to_split_components(tmp_path, option, value, make_map):
    import tifffile
    from skimage import io

    from isbi_unet.cli import main as cli_main

    (tmp_path / "maps").mkdir()
    io.imsave(tmp_path / "maps" / "3_predict.png", np.round(make_map() * 255).astype(np.uint8), check_contrast=False)
    assert cli_main.main(["segment", "--pred", str(tmp_path / "maps"), "--output", str(tmp_path / "cells"),
                          "--threshold", "0.5", "--" + option.replace("_", "-"), value, "--quiet"]) == 0
    stored = io.imread(tmp_path / "maps" / "3_predict.png") / np.float32(255)
    written = tifffile.imread(tmp_path / "cells" / "3_labels.tif")
    np.testing.assert_array_equal(written, split_components(stored, 0.5, **{option: float(value)}))
    assert cells(written) == (1 if value == "0" else 2)


def test_enclosed_boundary_is_refused_for_a_method_without_it(tmp_path, capsys):
    from isbi_unet.cli import main as cli_main

    (tmp_path / "maps").mkdir()
    assert cli_main.main(["segment", "--pred", str(tmp_path / "maps"), "--output", str(tmp_path / "cells"),
                          "--method", "multicut", "--enclosed-boundary", "0.5"]) == 2
    assert "error: method 'multicut' has no parameter 'enclosed_boundary'" in capsys.readouterr().err
    assert not (tmp_path / "cells").exists()


def test_segment_refuses_a_faint_boundary_outside_0_1(tmp_path, capsys):
    from isbi_unet.cli import main as cli_main

    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["segment", "--pred", str(tmp_path), "--output", str(tmp_path / "cells"), "--faint-boundary", "1.5"])
    assert exit_info.value.code == 2 and "--faint-boundary" in capsys.readouterr().err
    assert not (tmp_path / "cells").exists()


def test_split_reads_faint_on_the_map_itself_only_when_asked():
    from isbi_unet.cells.split_components import component_graph, split

    prob = cell_inside_a_cell(WALL)[0] ** 0.2  # deep membrane 0.1 reads 0.63: above a quarter of any threshold
    graph = component_graph(prob, MIDDLE ** 0.2)
    assert cells(split(graph)) == 2  # ranks: the deep wall stays a wall
    assert cells(split(graph, boundary_levels="threshold")) == 1  # values: it reads faint, the cell joins
    with pytest.raises(ValueError, match="boundary_levels"):
        split(graph, boundary_levels="quantiles")
