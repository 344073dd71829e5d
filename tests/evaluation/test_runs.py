"""Comparing finished runs: the table, mean +- sd, time to target, the plot, and mistakes."""

import json
import math

import pytest

from isbi_unet.cli import main as cli_main
from isbi_unet.errors import UserError
from isbi_unet.evaluation.runs import comparison_table, mean_and_sd, summarize_run


def write_run(folder, v_rand, minutes, scores=None):
    """A run folder as training leaves it: history.csv and optionally test_scores.json."""
    folder.mkdir(parents=True)
    lines = ["epoch,loss,minutes,val_loss,val_v_info,val_v_rand"]
    lines += [f"{epoch},{1.0 / (epoch + 1)},{m},{0.5},{v},{v}" for epoch, (v, m) in enumerate(zip(v_rand, minutes))]
    (folder / "history.csv").write_text("\n".join(lines) + "\n")
    if scores is not None:
        (folder / "test_scores.json").write_text(json.dumps({"chosen": scores, "per_slice": []}))
    return folder


def test_a_run_summary_reads_the_history_and_the_saved_models_scores(tmp_path):
    run = write_run(tmp_path / "a", v_rand=[0.5, 0.981, 0.97, 0.99], minutes=[1.0, 2.5, 4.0, 5.5],
                    scores=dict(v_rand=0.985, v_info=0.983, pixel_error=0.05))
    summary = summarize_run(run, target=0.98)
    assert (summary.name, summary.epochs, summary.minutes) == ("a", 4, 5.5)
    assert summary.best_epoch_v_rand == 0.99
    assert summary.minutes_to_target == 2.5  # the first epoch at or above the target
    assert summary.scores == dict(v_rand=0.985, v_info=0.983, pixel_error=0.05)
    assert summarize_run(run, target=0.995).minutes_to_target is None


def test_mean_and_sample_sd_skip_missing_values():
    mean, sd = mean_and_sd([0.98, None, 0.96, 0.97])
    assert mean == pytest.approx(0.97)
    assert sd == pytest.approx(0.01)  # sample sd (n - 1)
    assert mean_and_sd([0.5]) == (0.5, None)
    assert mean_and_sd([None]) == (None, None)


def test_the_table_has_a_row_per_run_and_the_mean_of_the_saved_models_scores(tmp_path):
    first = summarize_run(write_run(tmp_path / "seed1", [0.9, 0.985], [1.0, 2.0], dict(v_rand=0.98, v_info=0.97, pixel_error=0.05)))
    second = summarize_run(write_run(tmp_path / "seed2", [0.9, 0.95], [1.0, 2.0], dict(v_rand=0.96, v_info=0.99, pixel_error=0.07)))
    table = comparison_table([first, second]).splitlines()
    assert table[0].split()[0] == "run" and len(table) == 5  # header, rule, 2 runs, mean
    assert table[2].split()[0] == "seed1" and "never" in table[3]
    mean_row = table[4]
    assert "0.9700 +- 0.0141" in mean_row  # V_rand: mean 0.97, sd 0.02 / sqrt(2)
    assert "1 of 2 runs" in mean_row  # not a mean over the one run that got there
    assert f"{math.sqrt(2) * 0.01:.4f}" in mean_row  # V_info and pixel error sd
    assert "mean" not in comparison_table([first])


def test_compare_prints_plots_and_saves_json(tmp_path, capsys):
    runs = [write_run(tmp_path / f"seed{i}", [0.8, 0.97 + i / 100], [1.0, 2.0], dict(v_rand=0.97, v_info=0.98, pixel_error=0.05))
            for i in (1, 2)]
    plot, saved = tmp_path / "ttq.png", tmp_path / "runs.json"
    assert cli_main.main(["compare", *map(str, runs), "--plot", str(plot), "--ymin", "0.7", "--json", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "seed1" in out and "seed2" in out and "mean +- sd (2 runs)" in out
    assert plot.stat().st_size > 5_000
    rows = json.loads(saved.read_text())
    assert [row["best_epoch_v_rand"] for row in rows] == [0.98, 0.99]
    assert [row["minutes_to_target"] for row in rows] == [2.0, 2.0]


def test_the_plot_draws_one_curve_per_run_and_the_target(tmp_path):
    from isbi_unet.evaluation.plots import plot_runs_time_to_quality

    histories = {"a": {"minutes": [1, 2], "val_v_rand": [0.9, 0.95]}, "b": {"minutes": [1.5, 3], "val_v_rand": [0.8, 0.99]}}
    figure = plot_runs_time_to_quality(histories, target=0.98, ymin=0.75)
    lines = figure.axes[0].lines
    assert [line.get_label() for line in lines] == ["a", "b", "0.98"]
    assert list(lines[1].get_xdata()) == [1.5, 3]
    assert figure.axes[0].get_ylim()[0] == 0.75


def test_mistakes_are_user_errors(tmp_path, capsys):
    with pytest.raises(UserError, match="not found"):
        summarize_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="history.csv"):
        summarize_run(tmp_path / "empty")
    run = write_run(tmp_path / "run", [0.9], [1.0])
    assert cli_main.main(["compare", str(run), "--plot", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_the_table_says_which_slices_each_score_comes_from(tmp_path):
    """The per-epoch V_rand is the selection slices' (they chose the checkpoint); only
    test_scores.json holds test scores."""
    from isbi_unet.evaluation.runs import comparison_table, summarize_run

    run = tmp_path / "r"
    run.mkdir()
    (run / "history.csv").write_text("epoch,loss,val_v_rand,minutes\n0,0.5,0.97,1.0\n1,0.4,0.98,2.0\n")
    header = comparison_table([summarize_run(run)]).splitlines()[0]
    assert "selection: best epoch V_rand" in header and "test: V_rand" in header
    assert "held-out" not in header
