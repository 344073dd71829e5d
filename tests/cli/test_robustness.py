"""Your own data, bad input, interruption and reproducibility (the user-facing contract)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from skimage import io

from conftest import ROOT, TINY, run_cli, synthetic_slice
from isbi_unet.cli import main as cli_main


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("damage, message", [
    ("three_valued_mask", "0.png: mask has values {0, 128, 255}"),
    ("truncated_image", "3.png: cannot read"),
    ("image_without_mask", "extra.png: no mask"),
    ("mask_without_image", "lonely.png: mask without an image"),
    ("size_mismatch", "same size"),
    ("empty_folder", "no images"),
])
def test_bad_training_data_is_one_line_exit_2_and_writes_nothing(tiny_dataset, tmp_path, damage, message):
    image_dir, label_dir = tiny_dataset / "train/image", tiny_dataset / "train/label"
    if damage == "three_valued_mask":
        mask = io.imread(label_dir / "0.png")
        mask[:10, :10] = 128
        io.imsave(label_dir / "0.png", mask, check_contrast=False)
    elif damage == "truncated_image":
        (image_dir / "3.png").write_bytes((image_dir / "3.png").read_bytes()[:300])
    elif damage == "image_without_mask":
        io.imsave(image_dir / "extra.png", synthetic_slice((96, 96), 9)[0], check_contrast=False)
    elif damage == "mask_without_image":
        io.imsave(label_dir / "lonely.png", synthetic_slice((96, 96), 9)[1], check_contrast=False)
    elif damage == "size_mismatch":
        io.imsave(label_dir / "2.png", np.zeros((64, 96), np.uint8), check_contrast=False)
    elif damage == "empty_folder":
        for path in image_dir.iterdir():
            path.unlink()
    logs = tmp_path / "logs"
    code, _, stderr = run_cli("train", "--data", tiny_dataset, "--logs", logs, "--run", "r", *TINY)
    assert code == 2
    assert message in one_error_line(stderr)
    assert not (logs / "r" / "unet_membrane.keras").exists()


def test_weights_of_another_width_are_refused(tiny_dataset, tmp_path):
    import model

    weights = tmp_path / "w8.weights.h5"
    model.unet(input_size=(None, None, 1), width=8).save_weights(weights)
    code, _, stderr = run_cli("train", "--data", tiny_dataset, "--logs", tmp_path, "--pretrained", weights, *TINY)
    assert code == 2 and "--width" in one_error_line(stderr)


def test_rgb_image_of_300x200_is_predicted_at_native_size(tmp_path):
    import model

    network = model.unet(input_size=(None, None, 1), width=4, compile=False)
    network.save(tmp_path / "m.keras")
    (tmp_path / "in").mkdir()
    rgb = np.stack([synthetic_slice((200, 300), 1)[0]] * 3, axis=-1)
    io.imsave(tmp_path / "in" / "photo.jpg", rgb)
    io.imsave(tmp_path / "in" / "scan.tif", synthetic_slice((50, 70), 2)[0])
    assert cli_main.main(["predict", "--model", str(tmp_path / "m.keras"), "--input", str(tmp_path / "in"),
                      "--output", str(tmp_path / "out"), "--quiet"]) == 0
    assert io.imread(tmp_path / "out" / "photo_predict.png").shape == (200, 300)
    assert io.imread(tmp_path / "out" / "scan_predict.png").shape == (50, 70)


def test_own_data_with_mask_suffix_odd_sizes_and_multi_class_labels(tmp_path):
    """image/ + label/ folders, `_mask` names, 100x90 images, labels 0/1/2."""
    for folder in ("image", "label"):
        (tmp_path / "own" / folder).mkdir(parents=True)
    for index in range(4):
        image, label = synthetic_slice((100, 90), index)
        classes = np.where(label > 0, 1, 0).astype(np.uint8)
        classes[:20] = 2 * (classes[:20] > 0)
        io.imsave(tmp_path / "own/image" / f"cell{index}.png", image, check_contrast=False)
        io.imsave(tmp_path / "own/label" / f"cell{index}_mask.png", classes, check_contrast=False)
    assert cli_main.main(["train", "--data", str(tmp_path / "own"), "--num-class", "3", "--run", "mc",
                      "--logs", str(tmp_path / "logs"), *TINY]) == 0
    model_path = tmp_path / "logs" / "mc" / "unet_membrane.keras"
    assert cli_main.main(["predict", "--model", str(model_path), "--input", str(tmp_path / "own/image"),
                      "--output", str(tmp_path / "pred"), "--quiet"]) == 0
    colours = io.imread(tmp_path / "pred" / "cell0_predict.png")
    assert colours.shape == (100, 90, 3)


def test_evaluate_matches_mask_suffixed_labels(tmp_path):
    (tmp_path / "label").mkdir()
    (tmp_path / "pred").mkdir()
    for name in ("a12", "b07"):
        label = synthetic_slice((64, 64), len(name))[1]
        io.imsave(tmp_path / "label" / f"{name}_mask.png", label, check_contrast=False)
        io.imsave(tmp_path / "pred" / f"{name}_predict.png", label, check_contrast=False)
    assert cli_main.main(["evaluate", "--pred", str(tmp_path / "pred"), "--labels", str(tmp_path / "label"),
                      "--names", "a12,b07", "--json", str(tmp_path / "s.json"), "--quiet"]) == 0

    assert json.loads((tmp_path / "s.json").read_text())["v_rand"] == pytest.approx(1.0)


def test_label_masks_out_of_range_are_refused(tiny_dataset, tmp_path):
    code, _, stderr = run_cli("train", "--data", tiny_dataset, "--num-class", "3", "--logs", tmp_path, *TINY)
    assert code == 2 and "integer labels 0..2" in one_error_line(stderr)


def test_prediction_never_replaces_an_input(tmp_path):
    import model

    network = model.unet(input_size=(None, None, 1), width=4, compile=False)
    network.save(tmp_path / "m.keras")
    (tmp_path / "in").mkdir()
    io.imsave(tmp_path / "in" / "a.png", synthetic_slice((32, 32), 0)[0], check_contrast=False)
    io.imsave(tmp_path / "in" / "a_predict.tif", synthetic_slice((32, 32), 1)[0], check_contrast=False)
    before = (tmp_path / "in" / "a_predict.tif").read_bytes()
    assert cli_main.main(["predict", "--model", str(tmp_path / "m.keras"), "--input", str(tmp_path / "in"),
                      "--output", str(tmp_path / "in"), "--quiet"]) == 0
    assert (tmp_path / "in" / "a_predict.tif").read_bytes() == before
    assert (tmp_path / "in" / "a_predict.png").is_file()


def test_same_seed_gives_identical_losses_with_any_number_of_workers(tiny_dataset, tmp_path):
    from isbi_unet.evaluation.runs import read_history

    histories = []
    for run, seed, workers in (("a", "7", "1"), ("b", "7", "3"), ("c", "8", "1")):
        assert cli_main.main(["train", "--data", str(tiny_dataset), "--val-ids", "5", "--run", run, "--seed", seed,
                          "--workers", workers, "--logs", str(tmp_path), *TINY]) == 0
        history = read_history(tmp_path / run / "history.csv")
        history.pop("minutes")  # wall-clock time, the one column that may differ
        histories.append(history)
    assert set(histories[0]) >= {"loss", "accuracy", "val_loss", "val_v_rand"}
    assert len(histories[0]["loss"]) == 2
    assert histories[0] == histories[1]  # both epochs: same crops in the same order
    assert histories[0]["loss"][0] != histories[2]["loss"][0]


def test_a_killed_run_resumes_from_the_last_completed_epoch(tiny_dataset, tmp_path):
    from isbi_unet.training.resume import committed_epochs

    logs = tmp_path / "logs"
    args = [sys.executable, "main.py", "train", "--data", str(tiny_dataset), "--val-ids", "5", "--run", "k",
            "--logs", str(logs), "--epochs", "6", "--steps-per-epoch", "3", "--batch-size", "2", "--width", "4",
            "--patch-size", "64", "--precision", "float32", "--quiet"]
    history = logs / "k" / "history.csv"
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not history.exists() or len(history.read_text().splitlines()) < 3):
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    logged = len(history.read_text().splitlines()) - 1
    assert 2 <= logged < 6, "the run should be killed part-way"
    # A kill between an epoch's CSV row and its backup leaves one epoch logged but not saved.
    backed_up = committed_epochs(logs / "k")
    assert backed_up in (logged - 1, logged)

    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"after epoch {backed_up}" in done.stdout
    epochs = [int(line.split(",")[0]) for line in history.read_text().splitlines()[1:]]
    assert epochs == list(range(6)), epochs
    assert (logs / "k" / "unet_membrane.keras").is_file()
    assert not (logs / "k" / "backup").exists()


def test_a_nan_loss_stops_training_with_a_clear_message(tiny_dataset, tmp_path):
    code, _, stderr = run_cli("train", "--data", tiny_dataset, "--val-ids", "5", "--logs", tmp_path,
                              "--lr", "1e30", *TINY)
    assert code == 2 and "NaN or infinite" in one_error_line(stderr)


def test_resume_trims_epochs_logged_after_the_last_backup(tmp_path):
    """A kill between the CSV row and the backup of an epoch must not repeat that epoch."""
    from isbi_unet.training.resume import BACKUP_FOLDER, committed_epochs, trim_history

    (tmp_path / BACKUP_FOLDER / "epoch-0002").mkdir(parents=True)
    (tmp_path / BACKUP_FOLDER / ".epoch-0003.partial").mkdir()  # an uncommitted backup does not count
    (tmp_path / "history.csv").write_text("epoch,loss\n0,0.9\n1,0.8\n2,0.7\n")
    assert committed_epochs(tmp_path) == 2
    trim_history(tmp_path, 2)
    assert (tmp_path / "history.csv").read_text() == "epoch,loss\n0,0.9\n1,0.8\n"
    assert committed_epochs(tmp_path / "fresh") == 0


def test_a_finished_run_is_not_trained_over(tiny_dataset, tmp_path):
    """Reusing a finished run's name is refused, whatever --out says; its files stay."""
    args = [sys.executable, "main.py", "train", "--data", str(tiny_dataset), "--epochs", "1", "--steps-per-epoch", "1",
            "--batch-size", "2", "--width", "4", "--patch-size", "64", "--val-ids", "5", "--logs", str(tmp_path),
            "--run", "done", "--quiet"]
    assert subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600).returncode == 0
    history = (tmp_path / "done" / "history.csv").read_bytes()
    again = subprocess.run([*args, "--out", str(tmp_path / "other.keras")], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 2 and "finished run" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / "done" / "history.csv").read_bytes() == history
    assert not (tmp_path / "other.keras").exists()


@pytest.mark.parametrize("command", [
    ["train", "--data", "{tmp}/data", "--out", "{tmp}/FILE/m.keras"],
    ["train", "--data", "{tmp}/data", "--logs", "{tmp}/FILE"],
    ["evaluate", "--pred", "{tmp}/data", "--labels", "{tmp}/data", "--json", "{tmp}/folder"],
    ["predict", "--model", "{tmp}/m.keras", "--input", "{tmp}/data", "--output", "{tmp}/FILE/out.tif"],
    ["predict", "--model", "{tmp}/m.keras", "--input", "{tmp}/data", "--isbi-submission", "{tmp}/folder"],
    ["segment", "--pred", "{tmp}/data", "--output", "{tmp}/FILE"],
    ["compare", "{tmp}/data", "--plot", "{tmp}/folder"],
    ["compare", "{tmp}/data", "--json", "{tmp}/FILE/runs.json"],
    ["export", "--model", "{tmp}/m.keras", "--out", "{tmp}/FILE/exported"],
    ["fetch", "--dest", "{tmp}/FILE"],
], ids=lambda command: "-".join(word.lstrip("-") for word in command if not word.startswith("{")))
def test_an_output_that_cannot_be_written_is_one_error_line_and_nothing_is_written(command, tmp_path, capsys):
    """A folder where a file is expected, a file where a folder is, a file among the parents."""
    (tmp_path / "data").mkdir()
    (tmp_path / "folder").mkdir()
    (tmp_path / "FILE").write_text("a file")
    before = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*"))
    assert cli_main.main([word.format(tmp=tmp_path) for word in command]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and str(tmp_path) in errors[0]
    assert sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*")) == before
    assert (tmp_path / "FILE").read_text() == "a file"


def test_a_truncated_tiff_stack_is_one_error_line(tmp_path):
    import tifffile

    from model import unet

    unet(input_size=(None, None, 1), width=4).save(tmp_path / "m.keras")
    tifffile.imwrite(tmp_path / "whole.tif", np.zeros((3, 64, 64), np.uint8))
    data = (tmp_path / "whole.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    code, _, stderr = run_cli("predict", "--model", tmp_path / "m.keras", "--input", tmp_path / "cut.tif",
                              "--output", tmp_path / "out.tif", "--quiet")
    assert code == 2 and "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == [
        f"error: {tmp_path / 'cut.tif'}: truncated: {len(data) // 2} bytes where its 3 pages need {len(data)}; "
        "copy or save it again"]
    assert not (tmp_path / "out.tif").exists()


def test_logs_and_pipes_get_plain_lines_without_tensorflow_noise(tiny_dataset, tmp_path):
    """Piped, `check` and `train` write no terminal control codes, and TensorFlow's C++ log
    lines (E0000 ... oneDNN ..., cuInit) stay out of stderr on a machine without a GPU."""
    import re

    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    for command in (["check", "--data", str(tiny_dataset)],
                    ["train", "--data", str(tiny_dataset), "--val-ids", "5", "--run", "plain", "--logs", str(tmp_path),
                     *[word for word in TINY if word != "--quiet"]]):
        done = subprocess.run([sys.executable, "main.py", *command], cwd=ROOT, capture_output=True, text=True,
                              env=environment, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        assert not re.search(r"[\x1b\x08\r]", done.stdout), repr(done.stdout[:300])
        if not os.path.exists("/proc/driver/nvidia/version"):
            assert not re.findall(r"^[EWI]\d{4} .*", done.stderr, re.M)
    assert "  6/6 pairs" in subprocess.run([sys.executable, "main.py", "check", "--data", str(tiny_dataset)], cwd=ROOT,
                                           capture_output=True, text=True, env=environment, timeout=300).stdout


def test_the_main_job_on_your_own_folder_reads_it_and_writes_nothing_there(tmp_path):
    """`all --data DIR` on a folder of one's own pairs (image/, label/, test/): no ISBI
    fetched into it, its slices split by the own-data rules, the unlabelled test/ images
    predicted into the run folder, and every file of DIR byte for byte as it was."""
    own = tmp_path / "my_cells"
    for folder in ("image", "label", "test"):
        (own / folder).mkdir(parents=True)
    names = [f"cell{index}" for index in (1, 2, 3, 5, 8, 13)]
    for seed, name in enumerate(names):
        image, label = synthetic_slice((64, 64), seed=seed)
        io.imsave(own / "image" / f"{name}.png", image, check_contrast=False)
        io.imsave(own / "label" / f"{name}_mask.png", label, check_contrast=False)
    io.imsave(own / "test" / "new.png", synthetic_slice((64, 64), seed=40)[0], check_contrast=False)
    before = {path.relative_to(own): path.read_bytes() for path in own.rglob("*") if path.is_file()}
    code, _, stderr = run_cli("all", "--data", own, "--run", "mine", "--logs", tmp_path / "logs", *TINY)
    assert code == 0, stderr[-2000:]
    assert {path.relative_to(own): path.read_bytes() for path in own.rglob("*") if path.is_file()} == before
    summary = json.loads((tmp_path / "logs" / "mine" / "summary.json").read_text())
    assert summary["selection_names"] == ["cell13"] and summary["test_names"] == []  # the own-data rules
    assert summary["train_names"] == names[:-1]
    assert [path.name for path in (tmp_path / "logs" / "mine" / "test_predictions").iterdir()] == ["new_predict.png"]


def test_finetuning_starts_from_a_runs_model_without_its_optimizer(tiny_dataset, tmp_path):
    """`train --recipe finetune --pretrained logs/RUN/unet_membrane.keras`: the recipe asks for
    the weights, and starting from a trained .keras model says nothing of its optimizer."""
    code, _, stderr = run_cli("train", "--data", tiny_dataset, "--logs", tmp_path, "--recipe", "finetune", *TINY)
    assert code == 2 and "--pretrained" in one_error_line(stderr)
    code, _, stderr = run_cli("train", "--data", tiny_dataset, "--logs", tmp_path, "--run", "base", *TINY)
    assert code == 0, stderr[-2000:]
    code, stdout, stderr = run_cli("train", "--data", tiny_dataset, "--logs", tmp_path, "--run", "tuned",
                                   "--recipe", "finetune", "--pretrained", tmp_path / "base" / "unet_membrane.keras",
                                   *TINY)
    assert code == 0, stderr[-2000:]
    assert "Skipping variable loading" not in stdout + stderr
    assert json.loads((tmp_path / "tuned" / "run.json").read_text())["config"]["recipe"]["name"] == "finetune"
