"""Bad input on the command line: option ranges, degenerate splits, bad image files.

Each mistake ends with one ``error:`` line on stderr, exit status 2, and nothing written.
"""

import argparse

import numpy as np
import pytest
import tifffile
from skimage import io

from conftest import ROOT, TINY, run_cli
from isbi_unet.cli import main as cli_main
from isbi_unet.cli import parser as cli_parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """The parser of every subcommand, read from main.py's parser (so new ones are included)."""
    parser = cli_parser.build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices)


def numeric_options() -> list[tuple[str, str, object]]:
    """(subcommand, option, type) of every option whose type turns "1" into a number."""
    found = []
    for name, parser in subcommands().items():
        for action in parser._actions:
            if action.type is None or not action.option_strings:
                continue
            try:
                value = action.type("1")
            except (argparse.ArgumentTypeError, ValueError, TypeError):
                value = None
            if isinstance(value, (int, float)) or value is None:
                found.append((name, action.option_strings[-1], action.type))
    return found


def test_the_subcommands_are_found():
    assert {"fetch", "train", "predict", "evaluate", "all", "crossval", "compare"} <= set(subcommands())
    options = {(command, option) for command, option, _ in numeric_options()}
    assert {("train", "--lr"), ("train", "--seed"), ("crossval", "--folds"), ("compare", "--target")} <= options


@pytest.mark.parametrize("command, option, kind", numeric_options(), ids=lambda x: getattr(x, "__name__", str(x)))
def test_every_numeric_option_has_a_range(command, option, kind):
    """No plain int/float: NaN, infinity and huge negative values are refused at parse time."""
    assert kind not in (int, float), f"{command} {option}: use options.in_range(...) as its type"
    for text in ("nan", "inf", "-inf", "-1000000000000", "-1e12"):
        with pytest.raises((argparse.ArgumentTypeError, ValueError)):
            kind(text)


def test_every_subcommand_has_help(capsys):
    for name in subcommands():
        with pytest.raises(SystemExit) as stop:
            cli_main.main([name, "--help"])
        assert stop.value.code == 0
        assert f"usage: main.py {name}" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["train", "--lr", "nan"], "argument --lr: 'nan' is not a finite number"),
    (["train", "--lr", "0"], "argument --lr: must be > 0.0, not 0"),
    (["train", "--seed", "-1"], "argument --seed: must be >= 0 and <= 4294967295, not -1"),
    (["train", "--patch-size", "50"], "argument --patch-size: must be a multiple of 16, not 50"),
    (["train", "--resize", "8"], "argument --resize: must be >= 16, not 8"),
    (["train", "--time-limit", "-5"], "argument --time-limit: must be >= 0.0, not -5"),
    (["train", "--elastic", "inf"], "argument --elastic: 'inf' is not a finite number"),
    (["train", "--num-class", "13"], "argument --num-class: must be >= 1 and <= 12, not 13"),
    (["train", "--epochs", "0"], "argument --epochs: must be >= 1, not 0"),
    (["train", "--batch-size", "two"], "argument --batch-size: 'two' is not an integer"),
    (["train", "--val-ids", ","], "argument --val-ids: ',' names no image"),
    (["train", "--val-ids", "3,3"], "argument --val-ids: '3' is named twice"),
    (["all", "--ema", "1"], "argument --ema: must be >= 0.0 and < 1.0, not 1"),
    (["crossval", "--folds", "2"], "argument --folds: must be >= 3, not 2"),
    (["evaluate", "--pred", "p", "--labels", "l", "--names", ""], "argument --names: '' names no image"),
    (["compare", "run", "--target", "1.5"], "argument --target: must be >= 0.0 and <= 1.0, not 1.5"),
    (["compare", "run", "--ymin", "-0.1"], "argument --ymin: must be >= 0.0 and < 1.0, not -0.1"),
])
def test_bad_option_values_are_one_error_line_and_exit_2(args, message, tmp_path):
    code, stdout, stderr = run_cli(*args, "--quiet", cwd=ROOT)
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and message in stderr, stderr


def test_max_classes_matches_the_colour_table():
    from data import COLOR_DICT

    assert cli_parser.MAX_CLASSES == len(COLOR_DICT)


def test_val_ids_naming_every_slice_is_refused_and_writes_nothing(tiny_dataset, tmp_path, capsys):
    code = cli_main.main(["train", "--data", str(tiny_dataset), "--val-ids", "0,1,2,3,4,5", "--run", "r",
                      "--logs", str(tmp_path / "logs"), *TINY])
    assert code == 2
    assert "6 training images split into 0 to train on" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import model

    path = tmp_path_factory.mktemp("model") / "m.keras"
    model.unet(input_size=(None, None, 1), width=2, depth=2, compile=False).save(path)
    return path


@pytest.mark.parametrize("kind", ["nan", "inf", "empty", "text"])
def test_bad_input_image_is_refused_before_anything_is_written(tiny_model, tmp_path, capsys, kind):
    folder = tmp_path / "in"
    folder.mkdir()
    io.imsave(folder / "0.png", np.full((32, 32), 100, np.uint8), check_contrast=False)
    bad = folder / ("1.tif" if kind in ("nan", "inf") else "1.png")
    if kind in ("nan", "inf"):
        image = np.full((32, 32), 0.5, np.float32)
        image[4, 5] = float(kind)
        tifffile.imwrite(bad, image)
    else:
        bad.write_bytes(b"" if kind == "empty" else b"not an image at all")
    code = cli_main.main(["predict", "--model", str(tiny_model), "--input", str(folder),
                      "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {bad}: ")
    assert "pip install" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["empty", "text"])
def test_bad_label_file_is_one_error_line_in_evaluate(tmp_path, capsys, kind):
    for folder in ("pred", "label"):
        (tmp_path / folder).mkdir()
        io.imsave(tmp_path / folder / "0.png", np.full((8, 8), 255, np.uint8), check_contrast=False)
    (tmp_path / "label" / "0.png").write_bytes(b"" if kind == "empty" else b"GIF89a but not really")
    code = cli_main.main(["evaluate", "--pred", str(tmp_path / "pred"), "--labels", str(tmp_path / "label"),
                      "--json", str(tmp_path / "s.json"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {tmp_path / 'label' / '0.png'}: ") and err.count("\n") == 1
    assert not (tmp_path / "s.json").exists()


def test_a_model_file_that_is_no_model_is_refused(tmp_path, capsys):
    (tmp_path / "m.keras").write_text("garbage")
    code = cli_main.main(["predict", "--model", str(tmp_path / "m.keras"), "--input", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {tmp_path / 'm.keras'}: not a .keras model") and "not found" not in err


def test_selection_images_smaller_than_the_network_are_refused(tmp_path, capsys):
    from conftest import write_dataset

    data = write_dataset(tmp_path / "small", count=3, size=(12, 40), test_count=0)
    code = cli_main.main(["train", "--data", str(data), "--val-ids", "2", "--logs", str(tmp_path / "logs"),
                      *TINY, "--patch-size", "16"])
    assert code == 2 and "selection image 2 is 40x12 px" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


def test_a_cpu_machine_shows_no_tensorflow_or_cuda_log_lines(tmp_path):
    """A newcomer's command (TensorFlow imported, devices probed) prints only its own line."""
    import os
    import subprocess
    import sys

    from isbi_unet.hardware import has_gpu_driver

    if has_gpu_driver():
        pytest.skip("a GPU driver is present: its log lines are not hidden")
    (tmp_path / "m.keras").write_text("garbage")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TF_CPP", "KERAS_BACKEND"))}
    code = ("import main, sys; code = main.main(sys.argv[1:]); import tensorflow as tf; "
            "tf.config.list_physical_devices(); tf.constant(1.0) + 1.0; sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, "predict", "--model", str(tmp_path / "m.keras"),
                           "--input", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: {tmp_path / 'm.keras'}: not a .keras model "
                                        "(a .keras file is a zip archive); give a model written by train"]
