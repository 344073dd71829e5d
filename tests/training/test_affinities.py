"""Affinity targets, their loss and data pipeline, TTA of affinities, mutex watershed."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from conftest import synthetic_slice
from isbi_unet.cells.mutex_watershed import mws_segmentation, segments_mask
from isbi_unet.errors import UserError
from isbi_unet.prediction.tta import tta_channel_sources
from isbi_unet.training.affinities import (
    DEFAULT_OFFSETS,
    MaskedAffinityCrossentropy,
    affinities_from_labels,
    affinity_batch_targets,
    cell_instances,
)


def test_targets_of_hand_made_labels():
    cells = np.array([[1, 1, 0, 2],
                      [1, 1, 0, 2],
                      [3, 0, 0, 2]])
    targets, valid = affinities_from_labels(cells, [(-1, 0), (0, -1), (0, -3)])
    up, left, far_left = targets[..., 0], targets[..., 1], targets[..., 2]
    assert up.tolist() == [[0, 0, 0, 0],
                           [1, 1, 0, 1],
                           [0, 0, 0, 1]]
    assert left.tolist() == [[0, 1, 0, 0],
                             [0, 1, 0, 0],
                             [0, 0, 0, 0]]
    assert far_left.tolist() == [[0, 0, 0, 0]] * 3  # column 3 looks at column 0: 2 vs 1, 1, 3
    assert valid[..., 0].tolist() == [[0] * 4, [1] * 4, [1] * 4]
    assert valid[..., 1].tolist() == [[0, 1, 1, 1]] * 3
    assert valid[..., 2].tolist() == [[0, 0, 0, 1]] * 3
    same = np.array([[5, 5, 5, 5]] * 3)
    assert affinities_from_labels(same, [(0, -3)])[0][..., 0].tolist() == [[0, 0, 0, 1]] * 3


def test_cells_are_four_connected_components():
    mask = np.array([[255, 0], [0, 255]])
    assert cell_instances(mask).max() == 2


def test_loss_ignores_invalid_edges_and_matches_numpy():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, (2, 4, 4, 3)).astype(np.float32)
    valid = rng.integers(0, 2, (2, 4, 4, 3)).astype(np.float32)
    prediction = rng.uniform(0.05, 0.95, (2, 4, 4, 3)).astype(np.float32)
    loss = MaskedAffinityCrossentropy(reduction=None)
    values = np.asarray(loss(np.concatenate([targets, valid], -1), prediction))
    expected = -(targets * np.log(prediction) + (1 - targets) * np.log(1 - prediction)) * valid
    np.testing.assert_allclose(values, expected.mean(-1), rtol=1e-5)
    flipped = np.where(valid > 0, prediction, 1 - prediction)  # change only the invalid edges
    np.testing.assert_allclose(np.asarray(loss(np.concatenate([targets, valid], -1), flipped)), values, rtol=1e-5)


def test_dataset_targets_follow_the_augmented_crop():
    from data import SegmentationDataset
    from isbi_unet.training.recipes import NATIVE_AUG_DICT

    images, masks = zip(*(synthetic_slice((80, 80), seed) for seed in range(3)))
    images = [image[..., None].astype(np.float32) for image in images]
    masks = [mask[..., None].astype(np.float32) for mask in masks]
    common = dict(batch_size=3, steps_per_epoch=2, aug_dict=NATIVE_AUG_DICT, patch_size=(48, 48), seed=4)
    plain = SegmentationDataset(images, masks, **common)
    with_affinities = SegmentationDataset(images, masks, target_fn=affinity_batch_targets, **common)
    x, y = with_affinities[1]
    x_plain, y_plain = plain[1]
    assert x.shape == (3, 48, 48, 1) and y.shape == (3, 48, 48, 2 * len(DEFAULT_OFFSETS))
    np.testing.assert_array_equal(x, x_plain)
    for crop, packed in zip(y_plain, y):
        targets, valid = affinities_from_labels(cell_instances(crop[..., 0]))
        np.testing.assert_array_equal(packed, np.concatenate([targets, valid], -1))
    assert 0 < y[..., :len(DEFAULT_OFFSETS)].mean() < 1


def test_tta_maps_affinity_channels_back():
    from isbi_unet.prediction.tta import with_tta

    _, label = synthetic_slice((48, 64), seed=3)  # not square: turned views change shape

    def exact_affinities(batch):  # a perfect "network" for whatever view it is shown
        return np.stack([affinities_from_labels(cell_instances(view[..., 0]))[0] for view in batch])

    targets, valid = affinities_from_labels(cell_instances(label))
    averaged = with_tta(exact_affinities, DEFAULT_OFFSETS)(label[None, ..., None].astype(np.float32))[0]
    np.testing.assert_allclose(averaged[valid > 0], targets[valid > 0], atol=1e-6)
    naive = with_tta(exact_affinities)(label[None, ..., None].astype(np.float32))[0]
    assert np.abs(naive - targets)[valid > 0].max() > 0.5  # without the channel map it is wrong


def test_tta_refuses_offsets_that_do_not_map_onto_each_other():
    with pytest.raises(UserError, match="--tta"):
        tta_channel_sources([(-1, 0), (0, -3)], flip=False, quarter_turns=1)


def test_mws_recovers_known_cells():
    from isbi_unet.evaluation.slice_scores import foreground_restricted_scores

    _, label = synthetic_slice((96, 96), seed=5, cells=10)
    cells = cell_instances(label)
    targets, _ = affinities_from_labels(cells)
    noisy = np.clip(targets + np.random.default_rng(1).normal(0, 0.15, targets.shape), 0, 1)
    segments = mws_segmentation(noisy, DEFAULT_OFFSETS, min_size=10)
    assert segments.dtype == np.uint32 and segments.shape == cells.shape
    inside = cells > 0
    pairs = set(zip(cells[inside].tolist(), segments[inside].tolist()))
    assert len({c for c, _ in pairs}) == cells.max() and foreground_restricted_scores(cells, segments)[0] > 0.99
    exact = mws_segmentation(targets, DEFAULT_OFFSETS)
    assert set(zip(cells[inside].tolist(), exact[inside].tolist())) == {(c, c) for c in range(1, cells.max() + 1)}
    assert not exact[~inside].any()


def test_tiny_affinity_model_trains_saves_and_predicts(tmp_path, tiny_dataset):
    import keras

    from isbi_unet.prediction.predict import predict_folder
    from isbi_unet.training.loop import build_model, load_training_data, make_datasets
    from isbi_unet.training.recipes import RECIPES

    recipe = RECIPES["cpu"].replace(width=4, batch_size=2, steps_per_epoch=2, epochs=1, patch_size=(32, 32),
                                    precision="float32", ema_momentum=0.0, target="affinities",
                                    jit_compile=False)
    recipe = recipe.replace(weighted_loss=False)
    data = load_training_data(tiny_dataset, recipe, ["4", "5"])
    train_batches, val_batches = make_datasets(data, recipe, workers=1)
    network = build_model(recipe)
    history = network.fit(train_batches, epochs=1, validation_data=val_batches, verbose=0)
    assert np.isfinite(history.history["val_loss"][0])
    path = tmp_path / "affinities.keras"
    network.save(path)
    loaded = keras.models.load_model(path)  # with its compile state: the loss deserializes
    assert isinstance(loaded.loss, MaskedAffinityCrossentropy)
    image = val_batches[0][0]
    np.testing.assert_allclose(loaded.predict_on_batch(image), network.predict_on_batch(image), atol=1e-5)
    picture = functools.partial(segments_mask, offsets=DEFAULT_OFFSETS, min_size=5)
    written = predict_folder(loaded, tiny_dataset / "test", tmp_path / "out", progress=False, picture=picture)
    from skimage import io

    assert len(written) == 2 and set(np.unique(io.imread(written[0]))) <= {0, 255}

    # affinity_eval: parameters chosen on slice 4, slice 5 scored; the cell maps it writes
    # are the minimum of the 1-px affinities.
    import importlib.util
    import json

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("affinity_eval", ROOT / "benchmarks" / "affinity_eval.py")
    affinity_eval = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(affinity_eval)
    from isbi_unet.prediction.predict import predict_image

    report_path, cell_maps = tmp_path / "eval.json", tmp_path / "cells"
    assert affinity_eval.main(["--model", str(path), "--data", str(tiny_dataset), "--select", "4", "--test", "5",
                               "--cell-maps", str(cell_maps), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())["affinities"]
    assert report["threshold"]["chosen"]["parameters"] in affinity_eval.THRESHOLDS
    assert 0.0 <= report["test_v_rand"] <= 1.0 and len(report["trials"]) == 24
    affinities = predict_image(loaded, io.imread(tiny_dataset / "train/image/5.png")[..., None] / 255.0)
    short = [k for k, offset in enumerate(DEFAULT_OFFSETS) if max(map(abs, offset)) == 1]
    expected = np.clip(np.rint(affinities[..., short].min(axis=-1) * 255), 0, 255)
    np.testing.assert_allclose(io.imread(cell_maps / "5_predict.png"), expected, atol=1)


def test_cli_refuses_affinities_with_weighted_loss_and_bad_mws_options(tiny_dataset, capsys):
    from isbi_unet.cli import main as cli_main

    assert cli_main.main(["train", "--data", str(tiny_dataset), "--target", "affinities", "--weighted-loss"]) == 2
    assert "--target affinities" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["predict", "--model", "m.keras", "--mws-long-bias", "1.5"])
    assert exit_info.value.code == 2
