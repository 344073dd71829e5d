"""instances.py and the command line: `segment`, `predict --instances`, `evaluate --segmentation`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from skimage import io

from conftest import run_cli, synthetic_slice
from isbi_unet.cli import main as cli_main


@pytest.fixture
def map_folder(tmp_path):
    """maps/N_predict.png (8-bit, cells bright), images/N.png and labels/N.png for N = 0, 1."""
    folders = {name: tmp_path / name for name in ("maps", "images", "labels")}
    for folder in folders.values():
        folder.mkdir()
    for index in range(2):
        image, label = synthetic_slice((64, 80), seed=10 + index, cells=6)
        io.imsave(folders["maps"] / f"{index}_predict.png", label, check_contrast=False)
        io.imsave(folders["images"] / f"{index}.png", image, check_contrast=False)
        io.imsave(folders["labels"] / f"{index}.png", label, check_contrast=False)
    return folders


def test_segment_writes_labels_overlays_and_a_cell_table(map_folder, tmp_path, capsys):
    out = tmp_path / "cells"
    assert cli_main.main(["segment", "--pred", str(map_folder["maps"]), "--output", str(out), "--images",
                      str(map_folder["images"]), "--method", "watershed", "--min-distance", "4", "--quiet"]) == 0
    labels = tifffile.imread(out / "0_labels.tif")
    assert labels.dtype == np.uint16 and labels.shape == (64, 80)
    overlay = io.imread(out / "0_overlay.png")
    assert overlay.shape == (64, 80, 3) and overlay.dtype == np.uint8
    with open(out / "cells.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    first = [row for row in rows if row["image"] == "0"]
    assert len(first) == labels.max() == 6
    areas = {int(row["label"]): int(row["area"]) for row in first}
    assert areas == {k: int(np.count_nonzero(labels == k)) for k in range(1, 7)}
    image = io.imread(map_folder["images"] / "0.png").astype(float)
    assert float(first[0]["mean_intensity"]) == pytest.approx(image[labels == int(first[0]["label"])].mean(), abs=1e-3)
    assert "min_distance=4" in capsys.readouterr().out
    # the label images score perfectly as they are
    scores_path = tmp_path / "scores.json"
    assert cli_main.main(["evaluate", "--segmentation", str(out), "--labels", str(map_folder["labels"]),
                      "--json", str(scores_path), "--quiet"]) == 0
    scores = json.loads(scores_path.read_text())
    assert scores["v_rand"] == pytest.approx(1.0) and scores["v_rand_merge"] == pytest.approx(1.0)


@pytest.mark.parametrize("extra, message", [
    (["--method", "watershed", "--beta", "0.5"], "no parameter 'beta'"),
    (["--params", "missing.json"], "--params"),
])
def test_segment_user_errors_write_nothing(map_folder, tmp_path, capsys, extra, message):
    out = tmp_path / "cells"
    assert cli_main.main(["segment", "--pred", str(map_folder["maps"]), "--output", str(out), "--quiet", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_segment_rejects_out_of_range_options(map_folder, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["segment", "--pred", str(map_folder["maps"]), "--output", str(tmp_path / "o"), "--threshold", "1.5"])
    assert exit_info.value.code == 2


def test_segment_with_a_params_file_and_a_missing_image(map_folder, tmp_path, capsys):
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"method": "threshold", "parameters": {"threshold": 0.3}}))
    out = tmp_path / "cells"
    (map_folder["images"] / "1.png").unlink()
    assert cli_main.main(["segment", "--pred", str(map_folder["maps"]), "--output", str(out), "--images",
                      str(map_folder["images"]), "--method", "threshold", "--params", str(params), "--quiet"]) == 2
    assert "no image 1" in capsys.readouterr().err and not out.exists()
    assert cli_main.main(["segment", "--pred", str(map_folder["maps"]), "--output", str(out),
                      "--method", "threshold", "--params", str(params), "--quiet"]) == 0
    assert "threshold=0.3" in capsys.readouterr().out


def test_predict_instances(tmp_path):
    import model

    network = model.unet(input_size=(None, None, 1), width=4, depth=2, compile=False)
    model_path = tmp_path / "tiny.keras"
    network.save(model_path)
    images = tmp_path / "images"
    images.mkdir()
    image, _ = synthetic_slice((32, 32), seed=3)
    io.imsave(images / "5.png", image, check_contrast=False)
    assert cli_main.main(["predict", "--model", str(model_path), "--input", str(images), "--output", str(images),
                      "--instances", "threshold", "--quiet"]) == 0
    assert sorted(p.name for p in images.iterdir()) == ["5.png", "5_labels.tif", "5_overlay.png", "5_predict.png", "cells.csv"]
    # a second run in the same folder takes only 5.png as input
    assert cli_main.main(["predict", "--model", str(model_path), "--input", str(images), "--output", str(images),
                      "--instances", "watershed", "--quiet"]) == 0
    assert len(list(images.iterdir())) == 5


def test_segment_without_method_segments_with_the_default_method(tmp_path, capsys):
    """`segment` with no --method writes the cells of DEFAULT_INSTANCE_METHOD with its
    default parameters, pixel for pixel."""
    from isbi_unet.cells.parameters import DEFAULT_PARAMETERS, segment
    from isbi_unet.cli import main as cli_main
    from isbi_unet.pipeline.choose import DEFAULT_INSTANCE_METHOD

    _, label = synthetic_slice((64, 64), seed=4)
    prob = ndimage.gaussian_filter((label > 0).astype(np.float32), 1.0)
    (tmp_path / "maps").mkdir()
    io.imsave(tmp_path / "maps" / "7_predict.png", np.round(prob * 255).astype(np.uint8), check_contrast=False)
    assert cli_main.main(["segment", "--pred", str(tmp_path / "maps"), "--output", str(tmp_path / "cells"),
                          "--quiet"]) == 0
    written = tifffile.imread(tmp_path / "cells" / "7_labels.tif")
    stored = io.imread(tmp_path / "maps" / "7_predict.png") / np.float32(255)
    from isbi_unet.cells.calibration import label_free_threshold

    assert f"threshold {label_free_threshold([stored]):g}, read from the maps" in capsys.readouterr().out
    expected = segment(stored, DEFAULT_INSTANCE_METHOD, DEFAULT_PARAMETERS[DEFAULT_INSTANCE_METHOD])
    np.testing.assert_array_equal(written, expected)
    others = [segment(stored, method, DEFAULT_PARAMETERS[method]) for method in ("threshold", "watershed")]
    assert not any(np.array_equal(written, other) for other in others)  # the methods differ on this map


@pytest.mark.parametrize("share", [0.2, 0.5])
def test_segment_reads_the_threshold_at_the_membrane_share_it_is_given(tmp_path, capsys, share):
    from isbi_unet.cells.calibration import label_free_threshold
    from isbi_unet.cells.split_components import split_components
    from isbi_unet.cli import main as cli_main

    _, label = synthetic_slice((64, 64), seed=4)
    prob = ndimage.gaussian_filter((label > 0).astype(np.float32), 1.0)
    (tmp_path / "maps").mkdir()
    io.imsave(tmp_path / "maps" / "7_predict.png", np.round(prob * 255).astype(np.uint8), check_contrast=False)
    assert cli_main.main(["segment", "--pred", str(tmp_path / "maps"), "--output", str(tmp_path / "cells"),
                          "--membrane-share", str(share), "--quiet"]) == 0
    stored = io.imread(tmp_path / "maps" / "7_predict.png") / np.float32(255)
    own = label_free_threshold([stored], share)
    assert f"threshold {own:g}, read from the maps ({share:.1%} of their pixels" in capsys.readouterr().out
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "cells" / "7_labels.tif"), split_components(stored, own))


@pytest.mark.parametrize("share", ["0", "1", "1.5", "x"])
def test_segment_refuses_a_membrane_share_outside_0_1(tmp_path, share):
    code, out, err = run_cli("segment", "--pred", tmp_path, "--output", tmp_path / "cells", "--membrane-share", share)
    assert code == 2 and "--membrane-share" in err and "Traceback" not in err
    assert not (tmp_path / "cells").exists()


def test_a_stack_of_maps_gives_the_cells_of_the_same_maps_as_a_folder(map_folder, tmp_path):
    """segment --pred STACK.tif (float32 maps, as predict writes them) --images STACK.tif writes
    what the folder gives, pages named 0, 1, ...; evaluate scores it against a label stack."""
    maps = np.stack([io.imread(map_folder["maps"] / f"{index}_predict.png") for index in range(2)])
    images = np.stack([io.imread(map_folder["images"] / f"{index}.png") for index in range(2)])
    labels = np.stack([io.imread(map_folder["labels"] / f"{index}.png") for index in range(2)])
    tifffile.imwrite(tmp_path / "maps.tif", maps.astype(np.float32) / 255.0)
    tifffile.imwrite(tmp_path / "images.tif", images)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    from_folder, from_stack = tmp_path / "from_folder", tmp_path / "from_stack"
    for pred, image_source, out in ((map_folder["maps"], map_folder["images"], from_folder),
                                    (tmp_path / "maps.tif", tmp_path / "images.tif", from_stack)):
        assert cli_main.main(["segment", "--pred", str(pred), "--images", str(image_source), "--output", str(out),
                              "--method", "watershed", "--min-distance", "4", "--quiet"]) == 0
    assert sorted(p.name for p in from_stack.iterdir()) == sorted(p.name for p in from_folder.iterdir())
    for index in range(2):
        np.testing.assert_array_equal(tifffile.imread(from_stack / f"{index}_labels.tif"),
                                      tifffile.imread(from_folder / f"{index}_labels.tif"))
        np.testing.assert_array_equal(io.imread(from_stack / f"{index}_overlay.png"),
                                      io.imread(from_folder / f"{index}_overlay.png"))
    assert (from_stack / "cells.csv").read_text() == (from_folder / "cells.csv").read_text()
    scores = tmp_path / "scores.json"
    assert cli_main.main(["evaluate", "--segmentation", str(from_stack), "--labels", str(tmp_path / "labels.tif"),
                          "--json", str(scores), "--quiet"]) == 0
    assert [row["name"] for row in json.loads(scores.read_text())["per_slice"]] == ["0", "1"]
    assert json.loads(scores.read_text())["v_rand"] == pytest.approx(1.0)
    # probability maps of a folder against the label stack: as against the label folder
    for labels_source, out in ((tmp_path / "labels.tif", "stack.json"), (map_folder["labels"], "folder.json")):
        assert cli_main.main(["evaluate", "--pred", str(map_folder["maps"]), "--labels", str(labels_source),
                              "--json", str(tmp_path / out), "--quiet"]) == 0
    assert json.loads((tmp_path / "stack.json").read_text())["per_slice"] == json.loads(
        (tmp_path / "folder.json").read_text())["per_slice"]


@pytest.mark.parametrize("images, message", [("missing.tif", "images not found"), ("short.tif", "has 1 images")])
def test_a_stack_of_maps_refuses_images_that_do_not_match(map_folder, tmp_path, capsys, images, message):
    tifffile.imwrite(tmp_path / "maps.tif", np.zeros((2, 64, 80), np.float32))
    tifffile.imwrite(tmp_path / "short.tif", np.zeros((64, 80), np.uint8))
    out = tmp_path / "cells"
    assert cli_main.main(["segment", "--pred", str(tmp_path / "maps.tif"), "--images", str(tmp_path / images),
                          "--output", str(out), "--quiet"]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_predict_instances_of_a_stack(tmp_path):
    import model

    network = model.unet(input_size=(None, None, 1), width=4, depth=2, compile=False)
    network.save(tmp_path / "tiny.keras")
    stack = np.stack([synthetic_slice((32, 32), seed=seed)[0] for seed in (3, 4, 5)])
    tifffile.imwrite(tmp_path / "volume.tif", stack, photometric="minisblack")
    before = (tmp_path / "volume.tif").read_bytes()
    assert cli_main.main(["predict", "--model", str(tmp_path / "tiny.keras"), "--input", str(tmp_path / "volume.tif"),
                          "--instances", "threshold", "--quiet"]) == 0
    assert (tmp_path / "volume.tif").read_bytes() == before
    cells = tmp_path / "volume_predict_cells"
    assert sorted(p.name for p in cells.iterdir()) == sorted(
        [f"{index}_{kind}" for index in range(3) for kind in ("labels.tif", "overlay.png")] + ["cells.csv"])
    maps = tifffile.imread(tmp_path / "volume_predict.tif")
    for index in range(3):  # the cells of each page of the prediction stack
        expected, _ = ndimage.label(maps[index] > 0.5)
        found = tifffile.imread(cells / f"{index}_labels.tif")
        assert (found > 0).tolist() == (expected > 0).tolist()


def test_cells_of_a_stack_predicted_from_a_folder_keep_the_images_names(tmp_path):
    import model

    network = model.unet(input_size=(None, None, 1), width=4, depth=2, compile=False)
    network.save(tmp_path / "tiny.keras")
    (tmp_path / "images").mkdir()
    for name, seed in (("b7", 3), ("a12", 4)):
        io.imsave(tmp_path / "images" / f"{name}.png", synthetic_slice((32, 32), seed=seed)[0], check_contrast=False)
    assert cli_main.main(["predict", "--model", str(tmp_path / "tiny.keras"), "--input", str(tmp_path / "images"),
                          "--output", str(tmp_path / "maps.tif"), "--instances", "threshold", "--quiet"]) == 0
    cells = tmp_path / "maps_cells"
    assert sorted(p.name for p in cells.iterdir()) == ["a12_labels.tif", "a12_overlay.png", "b7_labels.tif",
                                                      "b7_overlay.png", "cells.csv"]
    maps = tifffile.imread(tmp_path / "maps.tif")  # pages in natural order: a12, b7
    expected, _ = ndimage.label(maps[1] > 0.5)
    assert (tifffile.imread(cells / "b7_labels.tif") > 0).tolist() == (expected > 0).tolist()


@pytest.mark.parametrize("quiet", [True, False])
def test_segment_in_a_pipe_does_not_load_keras(map_folder, tmp_path, quiet):
    """Cells need no network: `segment` outside a terminal leaves Keras and TensorFlow
    unloaded (on a terminal, Keras draws its progress bar)."""
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import sys\nfrom isbi_unet.cli import main\n"
            f"status = main.main(['segment', '--pred', {str(map_folder['maps'])!r}, '--output', "
            f"{str(tmp_path / 'cells')!r}] + {['--quiet'] if quiet else []!r})\n"
            "print(status, 'keras' in sys.modules, 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.stdout.splitlines()[-1] == "0 False False", done.stdout + done.stderr[-2000:]
    assert (tmp_path / "cells" / "cells.csv").is_file()


def test_segment_into_a_folder_with_other_slices_cells_says_so(map_folder, tmp_path, capsys):
    out = tmp_path / "cells"
    base = ["segment", "--pred", str(map_folder["maps"]), "--output", str(out), "--method", "threshold", "--quiet"]
    assert cli_main.main(base) == 0
    assert cli_main.main(base) == 0 and "warning:" not in capsys.readouterr().out  # the same slices again
    (out / "0_labels.tif").rename(out / "9_labels.tif")  # a slice of an earlier run
    assert cli_main.main(base) == 0
    warning = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "1 label image(s) of other slices (9_labels.tif" in warning[0]
    assert (out / "9_labels.tif").exists()  # told, not deleted
