"""segment.py: probability map -> label image (threshold, watershed, multicut, GASP), parameter selection."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import synthetic_slice
from isbi_unet.cells import methods as cell_methods
from isbi_unet.cells import parameters as cell_parameters
from isbi_unet.evaluation.metric import segmentation_scores


def _map_of(label: np.ndarray, sigma: float = 0.8, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """A blurred, noisy probability map (H, W) float32 of a 0/255 label."""
    rng = np.random.default_rng(seed)
    prob = ndimage.gaussian_filter((label > 0).astype(np.float32), sigma) + rng.normal(0, noise, label.shape)
    return np.clip(prob, 0, 1).astype(np.float32)


@pytest.mark.parametrize("method", cell_parameters.METHODS)
def test_every_method_recovers_clear_cells(method):
    _, label = synthetic_slice((96, 96), seed=2, cells=10)
    params = {}
    if method in cell_parameters.LEARNED_METHODS:  # fitted on another slice
        _, other = synthetic_slice((96, 96), seed=5, cells=10)
        params = {"edge_model": cell_parameters.fit_edge_model([_map_of(other, noise=0.15, seed=5)], [other])}
    out = cell_parameters.segment(_map_of(label), method, params)
    assert out.shape == label.shape and out.dtype == np.uint32
    assert out.min() == 0 and np.array_equal(np.unique(out[out > 0]), np.arange(1, out.max() + 1))
    assert segmentation_scores([out], [label])["v_rand"] > 0.95
    assert np.mean(out[label == 0] == 0) > 0.2  # boundaries stay 0 ...
    assert np.mean(out[label > 0] > 0) > 0.9  # ... cells do not


def _two_touching_discs() -> np.ndarray:
    """Probability map (H, W) of two discs joined by a narrow neck, no membrane between."""
    rows, cols = np.indices((40, 70))
    discs = ((rows - 20) ** 2 + (cols - 18) ** 2 < 14**2) | ((rows - 20) ** 2 + (cols - 51) ** 2 < 14**2)
    neck = (abs(rows - 20) <= 2) & (cols > 18) & (cols < 51)
    return (discs | neck).astype(np.float32)


def test_watershed_splits_what_a_threshold_merges():
    prob = _two_touching_discs()
    assert cell_methods.threshold(prob, 0.5).max() == 1
    assert cell_methods.watershed(prob, threshold=0.5, sigma=1.0, min_distance=5).max() == 2


def test_graph_methods_follow_their_bias():
    _, label = synthetic_slice((96, 96), seed=4, cells=12)
    prob = _map_of(label, noise=0.15, seed=1)
    counts = {beta: cell_methods.multicut(prob, beta=beta).max() for beta in (0.2, 0.8)}
    assert counts[0.8] > counts[0.2]  # a higher boundary bias cuts more
    counts = {bias: cell_methods.gasp(prob, bias=bias).max() for bias in (0.2, 0.8)}
    assert counts[0.8] < counts[0.2]  # a higher bias merges more
    assert cell_methods.superpixels(prob).max() >= counts[0.2]


def test_select_parameters_chooses_on_the_given_slices_and_round_trips(tmp_path):
    _, label = synthetic_slice((64, 64), seed=7, cells=8)
    prob = np.where(label > 0, 0.6, 0.4).astype(np.float32)  # only thresholds in (0.4, 0.6) separate cells
    chosen = cell_parameters.select_parameters("threshold", [prob], [label], grid={"threshold": [0.7, 0.5, 0.3]})
    assert chosen["parameters"] == {"threshold": 0.5}
    assert [t["parameters"]["threshold"] for t in chosen["trials"]] == [0.7, 0.5, 0.3]
    assert chosen["v_rand"] == max(t["v_rand"] for t in chosen["trials"]) > 0.99
    path = tmp_path / "params.json"
    cell_parameters.save_parameters(chosen, path)
    assert cell_parameters.load_parameters(path, "threshold") == {"threshold": 0.5}
    with pytest.raises(ValueError, match="for method 'threshold'"):
        cell_parameters.load_parameters(path, "watershed")


@pytest.mark.parametrize("content", [b"II*\x00\xc2\x9f binary", b'{"method": "threshold"'])
def test_load_parameters_names_a_file_that_is_not_json(tmp_path, content):
    path = tmp_path / "stack.tif"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a JSON file of cell parameters"):
        cell_parameters.load_parameters(path, "threshold")


@pytest.mark.parametrize("params", [{"threshold": 1.5}, {"min_distance": 2.5}, {"nope": 1}, {"sigma": "2"}])
def test_check_parameters_rejects_bad_values(params):
    with pytest.raises(ValueError):
        cell_parameters.check_parameters("watershed", params)
