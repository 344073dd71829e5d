"""Native-size prediction: whole image, overlap-tile, resize, TTA, and the folder driver."""

import numpy as np
import pytest
from skimage import io

import model
from isbi_unet import network as model_files
from isbi_unet.errors import UserError
from isbi_unet.prediction import predict, tiling, tta


def local_mean(batch: np.ndarray) -> np.ndarray:
    """A stand-in network with a 5x5 receptive field: (B, H, W, 1) -> (B, H, W, 1)."""
    padded = np.pad(batch, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="constant")
    out = np.zeros_like(batch)
    for dr in range(5):
        for dc in range(5):
            out += padded[:, dr:dr + batch.shape[1], dc:dc + batch.shape[2]]
    return out / 25.0


def test_receptive_field_and_default_tiling():
    assert tiling.receptive_field(4) == 217
    tile, margin = tiling.default_tiling(4)
    assert margin == 112 and tile == 448 and margin >= tiling.receptive_field(4) / 2


@pytest.mark.parametrize("shape", [(64, 64), (100, 37), (33, 130)])
@pytest.mark.parametrize("tile, margin", [(32, 8), (48, 4), (16, 2)])
def test_overlap_tile_equals_whole_image_for_a_local_operator(shape, tile, margin):
    """With margin >= the operator's reach (2 px), tiles reproduce the mirrored whole-image result."""
    image = np.random.default_rng(0).random(shape + (1,)).astype(np.float32)
    mirrored = np.pad(image, ((2, 2), (2, 2), (0, 0)), mode="symmetric")
    expected = local_mean(mirrored[None])[0, 2:-2, 2:-2]
    tiled = tiling.predict_overlap_tile(image, local_mean, tile_size=tile, margin=margin, batch_size=3)
    assert tiled.shape == shape + (1,)
    np.testing.assert_allclose(tiled, expected, atol=1e-6)


def test_overlap_tile_needs_a_positive_core():
    with pytest.raises(ValueError):
        tiling.predict_overlap_tile(np.zeros((8, 8, 1)), local_mean, tile_size=16, margin=8)


def test_whole_and_tiled_network_predictions_agree_at_the_seeds_depth():
    network = model.unet(input_size=(None, None, 1), width=2, depth=4, compile=False)
    image = np.random.default_rng(1).random((400, 370, 1)).astype(np.float32)
    whole = tiling.predict_whole(image, predict.model_predict_fn(network), multiple=16)
    tile, margin = tiling.default_tiling(4)
    tiled = tiling.predict_overlap_tile(image, predict.model_predict_fn(network), tile, margin)
    assert whole.shape == tiled.shape == (400, 370, 1)
    # More than half the receptive field (108 px) from the border, the whole image's zero
    # padding is out of reach: tiles and whole image must agree there.
    reach = tiling.receptive_field(4) // 2 + 16  # + one pooling cell: even 2x2 convs pad asymmetrically
    inside = (slice(reach, -reach), slice(reach, -reach))
    assert np.abs(tiled[inside] - whole[inside]).max() < 1e-6
    assert np.abs(tiled - whole).max() > 1e-5  # and the border really differs


def test_tta_of_an_equivariant_operator_is_unchanged():
    image = np.random.default_rng(2).random((1, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(tta.with_tta(local_mean)(image), local_mean(image), atol=1e-6)
    shifted = lambda batch: np.roll(batch, 1, axis=2)  # not equivariant: TTA averages it out
    assert not np.allclose(tta.with_tta(shifted)(image), shifted(image))


def test_training_and_prediction_resize_images_alike(tiny_dataset):
    """The seed's resize mode: the network sees the same pixels in training and in prediction."""
    import dataclasses

    from isbi_unet.io.images import read_image
    from isbi_unet.training.loop import load_training_data
    from isbi_unet.training.recipes import resolve_recipe

    recipe = dataclasses.replace(resolve_recipe("blog"), target_size=(40, 40), weighted_loss=False)
    training = load_training_data(tiny_dataset, recipe, select_ids=["5"])
    seen = []
    tiling.predict_resized(read_image(tiny_dataset / "train/image/0.png") / 255.0,
                            lambda batch: seen.append(batch) or batch, (40, 40))
    assert seen[0].shape == (1, 40, 40, 1)
    np.testing.assert_allclose(seen[0][0] * 255.0, training.train_images[0], atol=1e-3)


def test_resize_mode_returns_native_size():
    out = tiling.predict_resized(np.random.rand(100, 60, 1).astype(np.float32), local_mean, (32, 32))
    assert out.shape == (100, 60, 1)


@pytest.mark.parametrize("mode", ["auto", "whole", "tile"])
def test_predict_folder_writes_native_size_8bit_pngs(tmp_path, mode):
    from conftest import synthetic_slice

    (tmp_path / "in").mkdir()
    io.imsave(tmp_path / "in" / "0.png", synthetic_slice((60, 90), 0)[0], check_contrast=False)
    io.imsave(tmp_path / "in" / "0_predict.png", np.zeros((5, 5), np.uint8), check_contrast=False)
    network = model.unet(input_size=(None, None, 1), width=4, depth=2, compile=False)
    written = predict.predict_folder(network, tmp_path / "in", tmp_path / "out", mode=mode, progress=False)
    assert [p.name for p in written] == ["0_predict.png"]
    out = io.imread(written[0])
    assert out.shape == (60, 90) and out.dtype == np.uint8


def test_fixed_size_model_predicts_by_resizing(tmp_path):
    from conftest import synthetic_slice

    (tmp_path / "in").mkdir()
    io.imsave(tmp_path / "in" / "3.png", synthetic_slice((96, 96), 0)[0], check_contrast=False)
    network = model.unet(input_size=(32, 32, 1), width=4, depth=2, compile=False)
    written = predict.predict_folder(network, tmp_path / "in", tmp_path / "in", progress=False)
    assert io.imread(written[0]).shape == (96, 96)
    with pytest.raises(UserError, match="--mode resize"):
        predict.predict_folder(network, tmp_path / "in", tmp_path / "o", mode="whole", progress=False)


def test_output_path_that_is_a_file_is_refused(tmp_path):
    from conftest import synthetic_slice

    (tmp_path / "in").mkdir()
    io.imsave(tmp_path / "in" / "0.png", synthetic_slice((32, 32), 0)[0], check_contrast=False)
    (tmp_path / "out").write_text("keep me")
    network = model.unet(input_size=(None, None, 1), width=4, depth=2, compile=False)
    with pytest.raises(UserError, match="is a file"):
        predict.predict_folder(network, tmp_path / "in", tmp_path / "out", progress=False)
    assert (tmp_path / "out").read_text() == "keep me"


def test_batched_folder_prediction_equals_one_by_one(tmp_path):
    from conftest import synthetic_slice

    (tmp_path / "in").mkdir()
    for index, size in enumerate([(48, 48), (48, 48), (48, 48), (32, 64), (48, 48)]):
        io.imsave(tmp_path / "in" / f"{index}.png", synthetic_slice(size, index)[0], check_contrast=False)
    network = model.unet(input_size=(None, None, 1), width=4, depth=2, compile=False)
    batched = predict.predict_folder(network, tmp_path / "in", tmp_path / "b", batch_size=2, tta=True, progress=False)
    single = predict.predict_folder(network, tmp_path / "in", tmp_path / "s", batch_size=1, tta=True, progress=False)
    for a, b in zip(batched, single):
        difference = np.abs(io.imread(a).astype(int) - io.imread(b).astype(int))
        assert difference.max() <= 1  # rounding to 8 bits


@pytest.mark.parametrize("native_bfloat16, engine, precision, expected", [
    (True, "auto", "default", "bfloat16"),   # the fastest engine on AVX512-BF16 / AMX CPUs
    (True, "keras", "default", "float32"),   # the model as saved
    (True, "auto", "float32", "float32"),
    (False, "keras", "default", "float32"),
    (False, "keras", "bfloat16", "bfloat16"),
])
def test_predict_loads_the_model_in_the_precision_of_its_engine(tmp_path, monkeypatch, native_bfloat16, engine,
                                                                 precision, expected):
    """``predict`` hands load_model the precision that engines.resolve_precision gives."""
    from conftest import synthetic_slice
    from isbi_unet import hardware
    from isbi_unet.cli import main as cli_main

    monkeypatch.setattr(hardware, "has_gpu", lambda: False)
    monkeypatch.setattr(hardware, "cpu_has_bfloat16", lambda: native_bfloat16)
    network = model.unet(input_size=(None, None, 1), width=2, depth=2, compile=False)
    network.save(tmp_path / "m.keras")
    (tmp_path / "in").mkdir()
    io.imsave(tmp_path / "in" / "a.png", synthetic_slice((32, 32), 1)[0], check_contrast=False)
    loaded = []
    real_load = model_files.load_model

    def recording_load(path, precision=None):
        loaded.append(precision)
        return real_load(path, precision=precision)

    monkeypatch.setattr(model_files, "load_model", recording_load)
    assert cli_main.main(["predict", "--model", str(tmp_path / "m.keras"), "--input", str(tmp_path / "in"),
                      "--output", str(tmp_path / "out"), "--engine", engine, "--precision", precision, "--quiet"]) == 0
    assert loaded == [expected]
    assert io.imread(tmp_path / "out" / "a_predict.png").shape == (32, 32)


def test_predict_without_output_writes_beside_the_input_and_leaves_it_alone(tmp_path):
    from conftest import synthetic_slice
    from isbi_unet.cli import main as cli_main
    from model import unet

    unet(input_size=(None, None, 1), width=4).save(tmp_path / "m.keras")
    (tmp_path / "scans").mkdir()
    for name in ("a", "a_predict"):  # an image whose name a prediction would take
        io.imsave(tmp_path / "scans" / f"{name}.png", synthetic_slice((32, 32), 1)[0], check_contrast=False)
    before = {path.name: path.read_bytes() for path in (tmp_path / "scans").iterdir()}
    assert cli_main.main(["predict", "--model", str(tmp_path / "m.keras"), "--input", str(tmp_path / "scans"),
                          "--quiet"]) == 0
    assert {path.name: path.read_bytes() for path in (tmp_path / "scans").iterdir()} == before
    assert sorted(path.name for path in (tmp_path / "scans_predictions").iterdir()) == ["a_predict.png"]


@pytest.mark.parametrize("as_stack", [False, True])
def test_predicting_dim_16_bit_images_says_so_once(tmp_path, capsys, monkeypatch, as_stack):
    import tifffile

    from isbi_unet.cli import main as cli_main
    from isbi_unet.io import input_scale

    monkeypatch.setattr(input_scale, "_warned", set())
    model.unet(input_size=(None, None, 1), width=4, depth=2, compile=False).save(tmp_path / "tiny.keras")
    pages = (np.random.default_rng(0).random((2, 32, 32)) * 3000).astype(np.uint16)
    (tmp_path / "in").mkdir()
    for index, page in enumerate(pages):
        tifffile.imwrite(tmp_path / "in" / f"{index}.tif", page)
    tifffile.imwrite(tmp_path / "in.tif", pages, photometric="minisblack")
    source, output = (tmp_path / "in.tif", tmp_path / "out.tif") if as_stack else (tmp_path / "in", tmp_path / "out")
    assert cli_main.main(["predict", "--model", str(tmp_path / "tiny.keras"), "--input", str(source),
                          "--output", str(output), "--quiet"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "16-bit images whose brightest pixel is" in lines[0]


def test_a_folder_is_predicted_one_batch_in_memory_at_a_time(tmp_path, monkeypatch):
    """Every image is read before anything is written, but no more than a batch of them is
    held at once (a folder of thousands of sections must not fill the memory)."""
    import gc
    import weakref

    network = model.unet(input_size=(None, None, 1), width=4, depth=2, compile=False)
    (tmp_path / "in").mkdir()
    for index in range(9):
        io.imsave(tmp_path / "in" / f"{index}.png", np.full((32, 32), 20 * index, np.uint8), check_contrast=False)
    alive, most = [], [0]
    real_read = predict.read_image

    def tracked(*args, **kwargs):
        gc.collect()
        most[0] = max(most[0], sum(ref() is not None for ref in alive))
        image = real_read(*args, **kwargs)
        alive.append(weakref.ref(image))
        return image

    monkeypatch.setattr(predict, "read_image", tracked)
    written = predict.predict_folder(network, tmp_path / "in", tmp_path / "out", mode="whole", batch_size=2,
                                     progress=False)
    assert len(written) == 9 and len(alive) == 18  # read twice: checked, then predicted
    assert most[0] <= 3  # at most the batch being read and the one before it, not the folder
