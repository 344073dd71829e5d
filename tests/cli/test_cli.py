"""The command line end to end on tiny data, and its handling of user mistakes."""

import json

import numpy as np
import pytest
from skimage import io

from conftest import TINY, run_cli
from isbi_unet.cli import main as cli_main
from isbi_unet.cli import parser, training


def test_train_predict_evaluate_on_tiny_synthetic_data(tiny_dataset, tmp_path):
    logs = tmp_path / "logs"
    assert cli_main.main(["train", "--data", str(tiny_dataset), "--val-ids", "4,5", "--run", "tiny",
                      "--logs", str(logs), *TINY]) == 0
    run_dir = logs / "tiny"
    model_path = run_dir / "unet_membrane.keras"
    assert model_path.is_file()
    history = (run_dir / "history.csv").read_text().splitlines()
    assert history[0].split(",") == ["epoch", "accuracy", "learning_rate", "loss", "minutes", "val_accuracy",
                                     "val_loss", "val_v_info", "val_v_rand"]
    assert len(history) == 3  # header + 2 epochs
    minutes = [float(line.split(",")[4]) for line in history[1:]]
    v_rand = [float(line.split(",")[-1]) for line in history[1:]]
    assert 0 < minutes[0] < minutes[1] and all(0 <= v <= 1 for v in v_rand)
    assert (run_dir / "curves.png").stat().st_size > 10_000
    assert (run_dir / "time_to_quality.png").is_file()
    assert list((run_dir / "train").glob("events.out.tfevents.*")), "no TensorBoard scalars"
    assert list((run_dir / "images").glob("events.out.tfevents.*")), "no TensorBoard image summaries"
    assert not (run_dir / "backup").exists()  # BackupAndRestore cleans up after a finished run

    out = tmp_path / "pred"
    assert cli_main.main(["predict", "--model", str(model_path), "--input", str(tiny_dataset / "test"),
                      "--output", str(out), "--quiet"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["0_predict.png", "1_predict.png"]
    prediction = io.imread(out / "0_predict.png")
    assert prediction.shape == (96, 96) and prediction.dtype == np.uint8

    assert cli_main.main(["predict", "--model", str(model_path), "--input", str(tiny_dataset / "train/image"),
                      "--output", str(tmp_path / "val"), "--quiet", "--mode", "tile"]) == 0
    scores_path = tmp_path / "scores.json"
    assert cli_main.main(["evaluate", "--pred", str(tmp_path / "val"), "--labels", str(tiny_dataset / "train/label"),
                      "--names", "4,5", "--json", str(scores_path), "--quiet"]) == 0
    scores = json.loads(scores_path.read_text())
    for key in ("v_rand", "v_info", "v_rand_threshold", "v_info_threshold", "pixel_error", "dice", "per_slice"):
        assert key in scores
    assert len(scores["per_slice"]) == 2


def test_training_refuses_to_overwrite_a_model(tiny_dataset, tmp_path, capsys):
    existing = tmp_path / "model.keras"
    existing.write_bytes(b"precious")
    code = cli_main.main(["train", "--data", str(tiny_dataset), "--out", str(existing), "--run", "x",
                      "--logs", str(tmp_path / "logs"), *TINY])
    assert code == 2
    assert "already exists" in capsys.readouterr().err
    assert existing.read_bytes() == b"precious"


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "/nonexistent/data"], "data folder not found"),
    (["predict", "--model", "/nonexistent/m.keras"], "model file not found"),
    (["evaluate", "--pred", "/nonexistent/p", "--labels", "/nonexistent/l"], "/nonexistent/"),
    (["fetch", "--source", "/nonexistent/src", "--dest", "/tmp/unet-never-created"], "/nonexistent/src"),
])
def test_user_errors_are_one_line_with_exit_code_2(args, message):
    code, stdout, stderr = run_cli(*args)
    assert code == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]


def test_main_job_on_the_isbi_data_with_tiny_settings(shared_isbi, tmp_path):
    """`all`: fetch (from ../shared), train on 0-19, choose on 20-24, score 25-29 once, predict the test images."""
    data_dir = tmp_path / "membrane"
    code = cli_main.main(["all", "--source", str(shared_isbi), "--data", str(data_dir), "--run", "job",
                      "--logs", str(tmp_path / "logs"), *TINY])
    assert code == 0
    run_dir = tmp_path / "logs" / "job"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["train_names"] == [str(i) for i in range(20)]
    assert summary["selection_names"] == ["20", "21", "22", "23", "24"]
    assert summary["test_names"] == ["25", "26", "27", "28", "29"]
    test, selection = summary["test"], summary["selection"]
    assert 0 <= test["v_rand"] <= test["v_rand_official"] <= 1  # the maximum over thresholds is never lower
    assert test["v_rand_threshold"] == selection["v_rand_threshold"] and test["tta"] == selection["tta"]
    scores = json.loads((run_dir / "test_scores.json").read_text())
    assert [entry["name"] for entry in scores["per_slice"]] == summary["test_names"]
    # the threshold is the selection curve's best, and the test figure is the test maps'
    # own score there, scored again here from the written maps and the labels
    from isbi_unet.evaluation.metric import isbi_scores

    chosen_by = json.loads((run_dir / "selection_scores.json").read_text())
    curve = chosen_by["v_rand_curve"]
    assert selection["v_rand_threshold"] == chosen_by["thresholds"][curve.index(max(curve))]
    maps = [io.imread(run_dir / "test_slice_predictions" / f"{name}_predict.png") for name in summary["test_names"]]
    labels = [io.imread(data_dir / "train" / "label" / f"{name}.png") for name in summary["test_names"]]
    rescored = isbi_scores(maps, labels)
    assert test["v_rand"] == pytest.approx(rescored["v_rand_curve"][rescored["thresholds"].index(
        selection["v_rand_threshold"])], abs=1e-12)
    tests = sorted((run_dir / "test_predictions").iterdir())
    assert len(tests) == 30 and io.imread(tests[0]).shape == (512, 512)
    assert len(list((run_dir / "selection_predictions").iterdir())) == 5
    assert len(list((run_dir / "test_slice_predictions").iterdir())) == 5
    cells = summary["instances"]  # the default method, its parameters chosen on the selection slices
    candidates = cells["candidates"]
    assert set(candidates) == {"learned-multicut"} == {cells["method"]} and 0 <= cells["test"]["v_rand"] <= 1
    assert candidates["learned-multicut"]["v_rand"] == cells["selection"]["v_rand"]
    assert len(cells["parameters"]["edge_model"]["weights"]) == 28  # fitted on the selection slices
    saved = json.loads((run_dir / "instance_parameters.json").read_text())
    assert saved["method"] == cells["method"] and saved["parameters"] == cells["parameters"]
    assert len(list((run_dir / "test_slice_instances").glob("*_labels.tif"))) == 5


def test_paper_options_train_with_weight_maps_and_elastic_deformation(tiny_dataset, tmp_path):
    assert cli_main.main(["train", "--data", str(tiny_dataset), "--val-ids", "5", "--run", "paper",
                      "--logs", str(tmp_path), "--weighted-loss", "--elastic", "10", *TINY]) == 0
    history = (tmp_path / "paper" / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "val_loss" in history[0]


def test_depth_5_trains_a_u_net_with_five_poolings_and_refuses_crops_it_cannot_pool(tiny_dataset, tmp_path, capsys):
    from isbi_unet.network import downsampling_factor, load_model

    assert cli_main.main(["train", "--data", str(tiny_dataset), "--val-ids", "5", "--run", "deep",
                      "--logs", str(tmp_path), *TINY, "--depth", "5"]) == 0
    assert "width 4, depth 5," in capsys.readouterr().out
    assert downsampling_factor(load_model(tmp_path / "deep" / "unet_membrane.keras")) == 32
    assert cli_main.main(["train", "--data", str(tiny_dataset), "--val-ids", "5", "--run", "deep48",
                      "--logs", str(tmp_path), *TINY, "--depth", "5", "--patch-size", "48"]) == 2
    assert "multiples of 32, not 48" in capsys.readouterr().err
    assert not (tmp_path / "deep48").exists()


def test_the_paper_recipe_runs_as_the_readme_gives_it(tiny_dataset, tmp_path, capsys):
    from isbi_unet.network import load_model
    from isbi_unet.training.recipes import RECIPES

    assert RECIPES["paper"].aug_dict["elastic_sigma"] == 10.0 and RECIPES["paper"].weighted_loss
    assert cli_main.main(["train", "--data", str(tiny_dataset), "--val-ids", "5", "--run", "paper",
                      "--logs", str(tmp_path), "--recipe", "paper", *TINY]) == 0
    out = capsys.readouterr().out
    assert "Training recipe 'paper'" in out and "elastic 10 px" in out
    network = load_model(tmp_path / "paper" / "unet_membrane.keras")
    assert network.get_layer("head_conv").activation.__name__ == "elu"
    assert len((tmp_path / "paper" / "history.csv").read_text().splitlines()) == 3


def test_crossval_reports_mean_and_sd_over_folds_and_continues_after_a_kill(tiny_dataset, tmp_path, monkeypatch,
                                                                              capsys):
    """Killed in fold 2, a rerun keeps fold 1's training, trains folds 2 and 3, and reports
    the mean and sd of the folds' own test scores; other settings are refused."""
    import statistics

    from isbi_unet.training import loop

    options = ["crossval", "--data", str(tiny_dataset), "--folds", "3", "--run", "cv", "--logs", str(tmp_path),
               "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--width", "4", "--patch-size", "64",
               "--precision", "float32", "--quiet"]
    fits, fit = [], loop._fit

    def killed_in_fold_2(*args, **kwargs):
        fits.append(args[2])  # run_dir
        if len(fits) == 2:
            raise KeyboardInterrupt
        return fit(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "_fit", killed_in_fold_2)
        assert cli_main.main(options) == 130
    fold1_model = tmp_path / "cv" / "fold1" / "unet_membrane.keras"
    written = fold1_model.stat().st_mtime_ns
    assert not (tmp_path / "cv" / "crossval.json").exists()
    fits.clear()
    monkeypatch.setattr(loop, "_fit", lambda *args, **kwargs: fits.append(args[2]) or fit(*args, **kwargs))
    report = training.cmd_crossval(parser.build_parser().parse_args(options))
    assert [path.name for path in fits] == ["fold2", "fold3"]  # fold 1 was not trained again
    assert fold1_model.stat().st_mtime_ns == written
    assert [fold["test_names"] for fold in report["folds"]] == [["0", "1"], ["2", "3"], ["4", "5"]]
    assert [fold["selection_names"] for fold in report["folds"]] == [["2", "3"], ["4", "5"], ["0", "1"]]
    for fold in report["folds"]:  # nested: the three roles are disjoint in every fold
        roles = [set(fold["train_names"]), set(fold["selection_names"]), set(fold["test_names"])]
        assert sum(map(len, roles)) == len(set.union(*roles)) == 6
    values = [fold["test"]["v_rand"] for fold in report["folds"]]
    assert report["v_rand"]["values"] == values
    assert report["v_rand"]["mean"] == pytest.approx(statistics.mean(values))
    assert report["v_rand"]["sd"] == pytest.approx(statistics.stdev(values))
    assert json.loads((tmp_path / "cv" / "crossval.json").read_text())["v_rand"] == report["v_rand"]
    capsys.readouterr()
    assert cli_main.main([word if word != "2" else "1" for word in options]) == 2  # --batch-size 1
    assert "holds a finished run made with recipe.batch_size = 2, not 1;" in capsys.readouterr().err


def test_seed_resize_mode_trains_on_resized_slices_and_predicts_at_native_size(tiny_dataset, tmp_path):
    options = [option for option in TINY if option not in ("--patch-size", "64")]
    assert cli_main.main(["train", "--data", str(tiny_dataset), "--val-ids", "5", "--run", "rs", "--logs", str(tmp_path),
                      "--resize", "32", *options]) == 0
    from isbi_unet import network as model_files

    network = model_files.load_model(tmp_path / "rs" / "unet_membrane.keras")
    assert network.input_shape == (None, 32, 32, 1)
    assert cli_main.main(["predict", "--model", str(tmp_path / "rs" / "unet_membrane.keras"), "--input",
                      str(tiny_dataset / "test"), "--output", str(tmp_path / "p"), "--quiet"]) == 0
    assert io.imread(tmp_path / "p" / "0_predict.png").shape == (96, 96)
    assert cli_main.main(["train", "--data", str(tiny_dataset), "--recipe", "blog", "--patch-size", "64",
                      "--logs", str(tmp_path), "--quiet"]) == 2
