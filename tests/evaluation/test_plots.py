"""The seed's plot_performance (fixed) and the time-to-quality plot."""

from isbi_unet.evaluation.plots import plot_performance, plot_time_to_quality

HISTORY = {"accuracy": [0.8, 0.9], "loss": [0.5, 0.3], "val_accuracy": [0.85, 0.88], "val_loss": [0.4, 0.35]}


def test_plot_performance_draws_training_and_validation_curves(tmp_path):
    figure = plot_performance(HISTORY, tmp_path / "curves.png")
    assert len(figure.axes) == 2
    assert [line.get_label() for line in figure.axes[0].lines] == ["Training", "Validation"]
    assert (tmp_path / "curves.png").stat().st_size > 5_000


def test_isbi_scores_get_a_third_panel_and_a_time_to_quality_plot(tmp_path):
    history = dict(HISTORY, val_v_rand=[0.9, 0.95], val_v_info=[0.92, 0.96], minutes=[1.0, 2.1])
    assert len(plot_performance(history).axes) == 3
    figure = plot_time_to_quality(history, tmp_path / "ttq.png")
    assert list(figure.axes[0].lines[0].get_xdata()) == [1.0, 2.1]
    assert (tmp_path / "ttq.png").is_file()
