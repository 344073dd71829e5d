"""TIFF stacks in and out, the ISBI submission format, bounded-memory prediction, auto mode."""

import json

import numpy as np
import pytest
import tifffile
from skimage import io

import model
from conftest import synthetic_slice
from isbi_unet import network as model_files
from isbi_unet.cli import main as cli_main
from isbi_unet.prediction import predict, tiling
from isbi_unet.prediction.memory import choose_mode, whole_image_bytes
from isbi_unet.prediction.streaming import predict_to_stack


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    """A width-2, depth-2 U-Net saved as .keras (its weights are random)."""
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.unet(input_size=(None, None, 1), width=2, depth=2, compile=False).save(path)
    return path


def slices(count, size, seed=0):
    return np.stack([synthetic_slice(size, seed + index)[0] for index in range(count)])


@pytest.mark.parametrize("start, stop, size", [(-5, 9, 4), (-3, 3, 1), (2, 30, 7), (-20, 2, 6)])
def test_mirrored_indices_are_numpys_symmetric_padding(start, stop, size):
    line = np.arange(size)
    padded = np.pad(line, (max(0, -start), max(0, stop - size)), mode="symmetric")
    expected = padded[start + max(0, -start): stop + max(0, -start)]
    np.testing.assert_array_equal(tiling.mirrored_indices(start, stop, size), expected)


@pytest.mark.parametrize("compression", [None, "zlib"])  # memory-mapped pages, decoded pages
def test_streamed_tile_prediction_of_a_stack_equals_in_memory_prediction(tiny_model_file, tmp_path, compression):
    network = model_files.load_model(tiny_model_file)
    pages = slices(3, (70, 150))
    tifffile.imwrite(tmp_path / "in.tif", pages, compression=compression, photometric="minisblack")
    out = predict_to_stack(network, tmp_path / "in.tif", tmp_path / "out.tif", mode="tile", progress=False, tile_size=64)
    written = tifffile.imread(out)
    assert written.dtype == np.float32 and written.shape == (3, 70, 150)
    for page, prediction in zip(pages, written):  # same page order, same values as predicting in memory
        expected = predict.predict_image(network, page[..., None].astype(np.float32) / 255.0, mode="tile", tile_size=64)
        np.testing.assert_array_equal(prediction, expected[..., 0])
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("mode", ["tile", "whole"])
def test_a_stack_is_predicted_by_the_engine_it_is_given(tiny_model_file, tmp_path, mode):
    """predict --engine onnx hands its function to the stack path; Keras is not used then."""
    network = model_files.load_model(tiny_model_file)
    tifffile.imwrite(tmp_path / "in.tif", slices(2, (40, 72)), photometric="minisblack")
    calls = []

    def engine(batch):
        calls.append(batch.shape)
        return np.full(batch.shape[:3] + (1,), 0.25, np.float32)

    out = predict_to_stack(network, tmp_path / "in.tif", tmp_path / "out.tif", mode=mode, progress=False,
                           tile_size=64, predict_fn=engine)
    assert calls
    np.testing.assert_array_equal(tifffile.imread(out), np.full((2, 40, 72), 0.25, np.float32))


def test_a_folder_predicted_into_a_stack_keeps_the_natural_order(tiny_model_file, tmp_path):
    network = model_files.load_model(tiny_model_file)
    pages = slices(3, (40, 48), seed=5)
    (tmp_path / "in").mkdir()
    for name, page in zip(("2", "10", "1"), pages):
        io.imsave(tmp_path / "in" / f"{name}.png", page, check_contrast=False)
    written = tifffile.imread(predict_to_stack(network, tmp_path / "in", tmp_path / "o.tif", mode="whole", progress=False))
    for index, name in enumerate(("1", "2", "10")):
        page = io.imread(tmp_path / "in" / f"{name}.png")[..., None].astype(np.float32) / 255.0
        np.testing.assert_allclose(written[index], predict.predict_image(network, page, mode="whole")[..., 0], atol=1e-6)


def test_isbi_submission_is_30_float_slices_of_512_with_1_for_cells(tiny_model_file, tmp_path, capsys):
    volume = slices(30, (512, 512))
    tifffile.imwrite(tmp_path / "test-volume.tif", volume, imagej=True)
    assert cli_main.main(["predict", "--model", str(tiny_model_file), "--input", str(tmp_path / "test-volume.tif"),
                      "--isbi-submission", str(tmp_path / "sub.tif"), "--engine", "keras", "--quiet"]) == 0
    with tifffile.TiffFile(tmp_path / "sub.tif") as tif:
        assert tif.is_imagej and tif.series[0].shape == (30, 512, 512)
        submission = tif.asarray()
    assert submission.dtype == np.float32 and 0.0 <= submission.min() and submission.max() <= 1.0
    network = model_files.load_model(tiny_model_file)
    probability_of_cell = predict.predict_image(network, volume[7][..., None] / np.float32(255.0), mode="whole")
    np.testing.assert_allclose(submission[7], probability_of_cell[..., 0], atol=1e-6)
    # the challenge takes nothing else: 29 slices are refused before anything is written
    tifffile.imwrite(tmp_path / "short.tif", volume[:29], imagej=True)
    assert cli_main.main(["predict", "--model", str(tiny_model_file), "--input", str(tmp_path / "short.tif"),
                      "--isbi-submission", str(tmp_path / "bad.tif"), "--quiet"]) == 2
    assert "30 slices of 512x512" in capsys.readouterr().err
    assert not list(tmp_path.glob("bad.tif*"))


def test_a_stack_is_not_predicted_into_a_folder(tiny_model_file, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "in.tif", slices(2, (32, 32)))
    assert cli_main.main(["predict", "--model", str(tiny_model_file), "--input", str(tmp_path / "in.tif"),
                      "--output", str(tmp_path / "folder"), "--quiet"]) == 2
    assert "give a .tif file name" in capsys.readouterr().err and not (tmp_path / "folder").exists()


def test_evaluating_stacks_gives_the_scores_of_the_same_slices_as_folders(tmp_path):
    labels = np.stack([synthetic_slice((64, 64), index)[1] for index in range(3)])
    rng = np.random.default_rng(0)
    probabilities = np.clip(labels / 255.0 + rng.normal(0, 0.3, labels.shape), 0, 1).astype(np.float32)
    tifffile.imwrite(tmp_path / "labels.tif", labels, photometric="minisblack")
    # 3 slices as one planar page (tifffile's old default for (3, H, W)) are 3 slices too
    tifffile.imwrite(tmp_path / "pred.tif", probabilities, photometric="rgb", planarconfig="separate")
    for folder, stack in (("label", labels), ("pred", probabilities)):
        (tmp_path / folder).mkdir()
        for index, page in enumerate(stack):
            tifffile.imwrite(tmp_path / folder / f"{index}.tif", page)
    for pred, label, out in (("pred.tif", "labels.tif", "s.json"), ("pred", "label", "f.json")):
        assert cli_main.main(["evaluate", "--pred", str(tmp_path / pred), "--labels", str(tmp_path / label),
                          "--names", "0,2", "--json", str(tmp_path / out), "--quiet"]) == 0
    stacks, folders = (json.loads((tmp_path / name).read_text()) for name in ("s.json", "f.json"))
    assert [s["name"] for s in stacks["per_slice"]] == ["0", "2"]
    for key in ("v_rand", "v_info", "pixel_error", "dice"):
        assert stacks[key] == pytest.approx(folders[key])
    assert stacks["v_rand"] < 1.0


def test_auto_mode_tiles_what_does_not_fit_in_memory():
    network = model.unet(input_size=(None, None, 1), width=4, depth=2, compile=False)
    # the bound covers every layer's actual output for one image
    probe = np.zeros((1, 32, 32, 1), np.float32)
    outputs = keras_outputs(network, probe)
    actual = sum(output.size * output.itemsize for output in outputs)
    assert whole_image_bytes(network, 32, 32) == actual
    assert whole_image_bytes(network, 64, 32, batch=3) == 6 * actual
    gib = 2**30
    assert choose_mode(network, 512, 512, available=4 * gib) == "whole"
    assert choose_mode(network, 8192, 8192, available=4 * gib) == "tile"
    assert choose_mode(network, 512, 512, available=whole_image_bytes(network, 512, 512)) == "tile"


def keras_outputs(network, batch):
    import keras

    probe = keras.Model(network.inputs, [layer.output for layer in network.layers[1:]])
    return [np.asarray(output) for output in probe.predict_on_batch(batch)]


def test_a_damaged_compressed_page_is_a_user_error(tmp_path):
    """Compressed pages are decoded when read: damage inside page 1's data names that page,
    and damage to the file's structure is one error too."""
    from isbi_unet.errors import UserError
    from isbi_unet.io.stacks import open_stack

    pages = np.random.default_rng(0).integers(0, 255, (2, 64, 64), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "z.tif", pages, compression="zlib")
    stack = open_stack(tmp_path / "z.tif")
    np.testing.assert_array_equal(stack.page(1)[..., 0], pages[1])
    with tifffile.TiffFile(tmp_path / "z.tif") as tif:
        start, length = tif.pages[1].dataoffsets[0], tif.pages[1].databytecounts[0]
    data = bytearray((tmp_path / "z.tif").read_bytes())
    data[start + length // 4: start + length // 2] = bytes(length // 2 - length // 4)  # inside the zlib stream
    (tmp_path / "z.tif").write_bytes(bytes(data))
    np.testing.assert_array_equal(open_stack(tmp_path / "z.tif").page(0)[..., 0], pages[0])
    with pytest.raises(UserError, match="page 1 cannot be read"):
        open_stack(tmp_path / "z.tif").page(1)
    data[8:200] = bytes(192)  # the first page's directory
    (tmp_path / "z.tif").write_bytes(bytes(data))
    with pytest.raises(UserError):
        for index in range(2):
            open_stack(tmp_path / "z.tif").page(index)
