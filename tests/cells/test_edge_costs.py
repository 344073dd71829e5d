"""edge_costs.py and the learned multicut: edge features and targets, the logistic
regression's fit and its JSON form, and cells from learned costs where mean costs fail."""

from __future__ import annotations

import json

import bioimage_cpp as bic
import numpy as np
import pytest
from scipy import ndimage

from conftest import false_boundary_map, synthetic_slice
from isbi_unet.cells import methods as cell_methods
from isbi_unet.cells import parameters as cell_parameters
from isbi_unet.cells.edge_costs import (
    FEATURE_NAMES,
    EdgeCostModel,
    edge_features,
    edge_targets,
)
from isbi_unet.cli import main as cli_main
from isbi_unet.evaluation.metric import segmentation_scores


def graph_of(prob: np.ndarray):
    regions = cell_methods.superpixels(prob) - 1
    return regions, bic.graph.region_adjacency_graph(regions, number_of_threads=1)


def test_edge_features_have_one_named_finite_column_each():
    prob, _ = false_boundary_map(1)
    regions, rag = graph_of(prob)
    features = edge_features(prob, regions, rag)
    assert features.shape == (rag.number_of_edges, len(FEATURE_NAMES)) and np.isfinite(features).all()
    mean = features[:, FEATURE_NAMES.index("boundary_mean")]
    low, high = (features[:, FEATURE_NAMES.index(name)] for name in ("boundary_min", "boundary_max"))
    assert np.all(low <= mean + 1e-6) and np.all(mean <= high + 1e-6) and np.all((0 <= low) & (high <= 1))


def test_edge_targets_cut_exactly_between_the_cells_of_the_ground_truth():
    _, label = synthetic_slice((64, 64), seed=3, cells=6)
    cells, _ = ndimage.label(label > 0, structure=ndimage.generate_binary_structure(2, 1))
    rows, cols = np.indices(label.shape)
    regions = ((rows // 8) * 8 + cols // 8).astype(np.uint32)  # superpixels: 8x8 blocks
    rag = bic.graph.region_adjacency_graph(regions, number_of_threads=1)
    cut, known = edge_targets(regions, rag, label)
    cell_of = {}  # each block's majority cell, membrane pixels not counted (0: none)
    for block in range(64):
        inside = cells[regions == block]
        inside = inside[inside > 0]
        cell_of[block] = int(np.bincount(inside).argmax()) if inside.size else 0
    for (u, v), is_cut, is_known in zip(np.asarray(rag.uv_ids(), dtype=np.int64), cut, known):
        assert is_known == (cell_of[u] != 0 and cell_of[v] != 0)
        if is_known:
            assert is_cut == (cell_of[u] != cell_of[v])
    assert (known & ~cut).sum() >= 10 and (known & cut).sum() >= 10


def test_the_fit_reaches_the_optimum_of_its_penalised_log_loss():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(FEATURE_NAMES))) * rng.uniform(0.1, 10, len(FEATURE_NAMES)) + 3
    truth = (x[:, 0] - 3) / x[:, 0].std() - 0.5 * (x[:, 5] - 3) / x[:, 5].std()
    cut = rng.random(400) < 1 / (1 + np.exp(-2 * truth))
    model = EdgeCostModel.fit(x, cut)
    z = (x - np.array(model.mean)) / np.array(model.scale)
    residual = model.cut_probability(x) - cut
    gradient = np.append(z.T @ residual + np.array(model.weights), residual.sum())
    assert np.abs(gradient).max() < 1e-3  # the objective's gradient vanishes there
    assert model.weights[0] > 0.5 and model.weights[5] < -0.2  # and it found the features that matter
    with pytest.raises(ValueError, match="all cut or all merged"):
        EdgeCostModel.fit(x, np.ones(400, bool))


def test_the_model_round_trips_through_json_and_rejects_what_it_cannot_use():
    prob, label = false_boundary_map(1)
    data = cell_parameters.fit_edge_model([prob], [label])
    model = EdgeCostModel.from_dict(json.loads(json.dumps(data)))
    regions, rag = graph_of(prob)
    features = edge_features(prob, regions, rag)
    np.testing.assert_array_equal(model.cut_probability(features), EdgeCostModel.from_dict(data).cut_probability(features))
    for broken in ({**data, "features": data["features"][:-1]}, {**data, "weights": data["weights"][:-1]},
                   {**data, "scale": [0.0] * len(FEATURE_NAMES)}, {**data, "bias": float("nan")},
                   {key: value for key, value in data.items() if key != "mean"}, [1, 2]):
        with pytest.raises(ValueError):
            EdgeCostModel.from_dict(broken)


def test_learned_costs_merge_the_false_boundaries_that_mean_costs_cut():
    fit = [false_boundary_map(seed) for seed in (1, 2)]
    edge_model = cell_parameters.fit_edge_model([p for p, _ in fit], [label for _, label in fit])
    prob, label = false_boundary_map(3)
    learned = segmentation_scores([cell_methods.learned_multicut(prob, edge_model=edge_model)], [label])["v_rand"]
    plain = [segmentation_scores([cell_methods.multicut(prob, beta=beta)], [label])["v_rand"]
             for beta in cell_parameters.DEFAULT_GRIDS["multicut"]["beta"]]
    assert learned > 0.99 and max(plain) < 0.9


def test_select_parameters_fits_the_model_on_the_selection_slices_and_saves_it(tmp_path):
    fit = [false_boundary_map(seed) for seed in (1, 2)]
    chosen = cell_parameters.select_parameters("learned-multicut", [p for p, _ in fit], [label for _, label in fit])
    assert chosen["parameters"]["beta"] == 0.5 and chosen["parameters"]["edge_model"] is not None
    assert all("edge_model" not in trial["parameters"] for trial in chosen["trials"])
    path = tmp_path / "params.json"
    cell_parameters.save_parameters(chosen, path)
    prob, _ = false_boundary_map(3)
    loaded = cell_parameters.load_parameters(path, "learned-multicut")
    np.testing.assert_array_equal(cell_parameters.segment(prob, "learned-multicut", loaded),
                                  cell_methods.learned_multicut(prob, edge_model=chosen["parameters"]["edge_model"]))
    with pytest.raises(ValueError, match="needs an edge model"):
        cell_parameters.segment(prob, "learned-multicut")
    with pytest.raises(ValueError, match="may not vary the superpixels"):
        cell_parameters.select_parameters("learned-multicut", [prob], [fit[0][1]], grid={"sigma": [1.0, 2.0]})


def _write_maps(folder, seeds, with_labels=None):
    from skimage import io

    folder.mkdir(parents=True)
    for index, seed in enumerate(seeds):
        prob, label = false_boundary_map(seed)
        io.imsave(folder / f"{index}_predict.png", np.round(prob * 255).astype(np.uint8), check_contrast=False)
        if with_labels is not None:
            with_labels.mkdir(parents=True, exist_ok=True)
            io.imsave(with_labels / f"{index}.png", label, check_contrast=False)


def test_segment_fits_on_labelled_maps_and_writes_reusable_parameters(tmp_path, capsys):
    _write_maps(tmp_path / "fit", (1, 2), with_labels=tmp_path / "fit_labels")
    _write_maps(tmp_path / "maps", (3,))
    out = tmp_path / "cells"
    assert cli_main.main(["segment", "--pred", str(tmp_path / "maps"), "--output", str(out), "--method", "learned-multicut",
                      "--fit-maps", str(tmp_path / "fit"), "--fit-labels", str(tmp_path / "fit_labels"), "--quiet"]) == 0
    assert "logistic regression of" in capsys.readouterr().out
    again = tmp_path / "again"
    assert cli_main.main(["segment", "--pred", str(tmp_path / "maps"), "--output", str(again), "--method", "learned-multicut",
                      "--params", str(out / "instance_parameters.json"), "--quiet"]) == 0
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(again / "0_labels.tif"), tifffile.imread(out / "0_labels.tif"))
    assert tifffile.imread(out / "0_labels.tif").max() >= 5


def test_an_edge_model_fitted_on_stacks_is_the_one_fitted_on_folders(tmp_path):
    """--fit-maps STACK.tif --fit-labels STACK.tif: the pages of the two stacks, as their folders give them."""
    import json

    import tifffile
    from skimage import io

    _write_maps(tmp_path / "fit", (1, 2), with_labels=tmp_path / "fit_labels")
    _write_maps(tmp_path / "maps", (3,))
    for folder, pattern in (("fit", "{}_predict.png"), ("fit_labels", "{}.png")):
        pages = np.stack([io.imread(tmp_path / folder / pattern.format(index)) for index in range(2)])
        tifffile.imwrite(tmp_path / f"{folder}.tif", pages)
    fitted = {}
    for kind, suffix in (("folders", ""), ("stacks", ".tif")):
        out = tmp_path / kind
        assert cli_main.main(["segment", "--pred", str(tmp_path / "maps"), "--output", str(out), "--method",
                              "learned-multicut", "--fit-maps", str(tmp_path / f"fit{suffix}"),
                              "--fit-labels", str(tmp_path / f"fit_labels{suffix}"), "--quiet"]) == 0
        fitted[kind] = json.loads((out / "instance_parameters.json").read_text())
    assert fitted["stacks"] == fitted["folders"]


@pytest.mark.parametrize("extra, message", [
    ([], "needs an edge model"),
    (["--fit-maps", "fit"], "go together"),
    (["--fit-maps", "fit", "--fit-labels", "missing"], "labels not found"),
])
def test_segment_without_a_usable_edge_model_is_a_user_error(tmp_path, capsys, extra, message):
    _write_maps(tmp_path / "maps", (3,))
    _write_maps(tmp_path / "fit", (1,))
    arguments = [str(tmp_path / a) if a in ("fit", "missing") else a for a in extra]
    assert cli_main.main(["segment", "--pred", str(tmp_path / "maps"), "--output", str(tmp_path / "out"),
                      "--method", "learned-multicut", *arguments, "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_parsers_method_names_are_segments():
    from isbi_unet.cli.parser import INSTANCE_METHODS

    assert INSTANCE_METHODS == cell_parameters.METHODS


def test_the_parsers_membrane_share_is_the_calibrations():
    from isbi_unet.cells.calibration import MEMBRANE_SHARE
    from isbi_unet.cli.parser import MEMBRANE_SHARE as parsed

    assert parsed == MEMBRANE_SHARE


def test_segment_fits_on_the_superpixels_it_will_segment_with(tmp_path):
    """--min-distance changes the superpixels: the edge model is fitted on those, not the defaults'."""
    from isbi_unet.io.images import read_image

    _write_maps(tmp_path / "fit", (1, 2), with_labels=tmp_path / "fit_labels")
    _write_maps(tmp_path / "maps", (3,))
    out = tmp_path / "cells"
    assert cli_main.main(["segment", "--pred", str(tmp_path / "maps"), "--output", str(out), "--method", "learned-multicut",
                      "--fit-maps", str(tmp_path / "fit"), "--fit-labels", str(tmp_path / "fit_labels"),
                      "--min-distance", "4", "--quiet"]) == 0
    saved = cell_parameters.load_parameters(out / "instance_parameters.json", "learned-multicut")
    maps = [read_image(tmp_path / "fit" / f"{i}_predict.png")[..., 0] / np.float32(255.0) for i in range(2)]
    labels = [read_image(tmp_path / "fit_labels" / f"{i}.png")[..., 0] for i in range(2)]
    assert saved["min_distance"] == 4
    assert saved["edge_model"] == cell_parameters.fit_edge_model(maps, labels, min_distance=4)
    assert saved["edge_model"] != cell_parameters.fit_edge_model(maps, labels)


def test_predict_finds_the_edge_model_of_the_models_run(tmp_path, capsys):
    """predict --instances learned-multicut without --params takes the instance_parameters.json
    beside the model (its run's), and only one written for that method."""
    import shutil

    import model
    from skimage import io

    _write_maps(tmp_path / "fit", (1, 2), with_labels=tmp_path / "fit_labels")
    _write_maps(tmp_path / "maps", (3,))
    assert cli_main.main(["segment", "--pred", str(tmp_path / "maps"), "--output", str(tmp_path / "fitted"),
                          "--method", "learned-multicut", "--fit-maps", str(tmp_path / "fit"),
                          "--fit-labels", str(tmp_path / "fit_labels"), "--quiet"]) == 0
    run = tmp_path / "run"
    run.mkdir()
    model.unet(input_size=(None, None, 1), width=4, depth=2, compile=False).save(run / "unet_membrane.keras")
    (tmp_path / "images").mkdir()
    io.imsave(tmp_path / "images" / "0.png", (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8),
              check_contrast=False)
    arguments = ["predict", "--model", str(run / "unet_membrane.keras"), "--input", str(tmp_path / "images"),
                 "--output", str(tmp_path / "out"), "--instances", "learned-multicut", "--quiet"]
    capsys.readouterr()
    assert cli_main.main(arguments) == 2 and "needs an edge model" in capsys.readouterr().err
    shutil.copy(tmp_path / "fitted" / "instance_parameters.json", run / "instance_parameters.json")
    assert cli_main.main(arguments) == 0
    assert f"the model's run, {run / 'instance_parameters.json'}" in capsys.readouterr().out
    (run / "instance_parameters.json").write_text(json.dumps({"method": "split-components", "parameters": {}}))
    assert cli_main.main(arguments) == 2 and "needs an edge model" in capsys.readouterr().err
