"""The weight average's validation and resume, and the stop for a collapsed network."""

import keras
import numpy as np
import pytest

from conftest import TINY
from isbi_unet.cli import main as cli_main
from isbi_unet.training.callback_set import make_callbacks
from isbi_unet.training.callbacks import AveragedWeightsAtEpochEnd, ConstantOutputStop
from isbi_unet.training.recipes import RECIPES
from isbi_unet.training.resume import ResumableBackup
from model import unet


def tiny_model(ema_momentum=0.9, head_activation="relu"):
    keras.utils.set_random_seed(3)
    return unet(input_size=(16, 16, 1), width=2, depth=2, dropout=0.0, learning_rate=1e-2,
                ema_momentum=ema_momentum, head_activation=head_activation)


def tiny_data():
    rng = np.random.default_rng(0)
    images = rng.random((8, 16, 16, 1)).astype(np.float32)
    return images, (images > 0.5).astype(np.float32)


class WeightsAtEpochEnd(keras.callbacks.Callback):
    """Records the weights that later callbacks see at each epoch's end, and the head's
    raw kernel after every step."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.head_after_step = []

    def on_train_batch_end(self, batch, logs=None):
        self.head_after_step.append(np.array(self.model.get_layer("head_conv").kernel))

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append([np.array(weight) for weight in self.model.get_weights()])


class FailAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def fit(model, callbacks, epochs, initial_epoch=0):
    images, masks = tiny_data()
    return model.fit(images, masks, batch_size=2, epochs=epochs, initial_epoch=initial_epoch, shuffle=False,
                     verbose=0, callbacks=callbacks)


def test_callbacks_after_the_averaging_one_see_the_moving_average():
    model = tiny_model(ema_momentum=0.9)
    recorder = WeightsAtEpochEnd()
    fit(model, [AveragedWeightsAtEpochEnd(), recorder], epochs=2)
    head = [variable.path for variable in model.weights].index(model.get_layer("head_conv").kernel.path)
    average = recorder.head_after_step[0]  # Keras starts the average at the first step's weights
    for raw in recorder.head_after_step[1:4]:  # 8 images in batches of 2: 4 steps per epoch
        average = 0.9 * average + 0.1 * raw
    np.testing.assert_allclose(recorder.seen[0][head], average, rtol=1e-5, atol=1e-7)
    assert np.abs(recorder.seen[0][head] - recorder.head_after_step[3]).max() > 1e-4
    # Training continued from the raw weights, not from the average.
    assert np.abs(recorder.head_after_step[4] - recorder.head_after_step[3]).max() < \
        np.abs(recorder.head_after_step[4] - recorder.seen[0][head]).max()


def test_an_interrupted_averaged_run_resumes_exactly(tmp_path):
    """Backups come after the swap, as in make_callbacks, so they hold the averaged weights
    in the model; a resumed run must swap back."""
    uninterrupted = WeightsAtEpochEnd()
    fit(tiny_model(), [AveragedWeightsAtEpochEnd(), uninterrupted, ResumableBackup(tmp_path / "a")], 3)

    with pytest.raises(RuntimeError):
        fit(tiny_model(), [AveragedWeightsAtEpochEnd(), FailAtEpoch(2),
                           ResumableBackup(tmp_path / "b")], 3)
    resumed = WeightsAtEpochEnd()
    fit(tiny_model(), [AveragedWeightsAtEpochEnd(resuming=True), resumed,
                       ResumableBackup(tmp_path / "b")], 3, initial_epoch=2)
    assert len(resumed.seen) == 1
    for expected, got in zip(uninterrupted.seen[-1], resumed.seen[-1]):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    # Without the swap back, training would go on from the average: a different result.
    with pytest.raises(RuntimeError):
        fit(tiny_model(), [AveragedWeightsAtEpochEnd(), FailAtEpoch(2),
                           ResumableBackup(tmp_path / "c")], 3)
    naive = WeightsAtEpochEnd()
    fit(tiny_model(), [AveragedWeightsAtEpochEnd(), naive, ResumableBackup(tmp_path / "c")], 3, initial_epoch=2)
    assert max(np.abs(a - b).max() for a, b in zip(uninterrupted.seen[-1], naive.seen[-1])) > 1e-4


def test_the_average_stays_in_the_model_after_an_early_stop():
    """Keras puts the average into the model only after the last scheduled epoch; an
    early stop must leave it there too."""
    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    recorder = WeightsAtEpochEnd()
    averaging = AveragedWeightsAtEpochEnd()
    model = tiny_model(ema_momentum=0.9)
    fit(model, [averaging, recorder, StopAfterFirstEpoch()], epochs=5)
    assert len(recorder.seen) == 1
    head = [variable.path for variable in model.weights].index(model.get_layer("head_conv").kernel.path)
    np.testing.assert_array_equal(np.array(model.get_layer("head_conv").kernel), recorder.seen[0][head])
    assert np.abs(recorder.seen[0][head] - recorder.head_after_step[-1]).max() > 1e-4  # not the raw weights


def dead_head(model):
    """Make the ReLU head output 0 everywhere, so the prediction is one constant."""
    head = model.get_layer("head_conv")
    head.kernel.assign(np.zeros(head.kernel.shape))
    head.bias.assign(np.full(head.bias.shape, -1.0))


def test_a_constant_prediction_stops_training_after_patience_epochs():
    model = tiny_model(ema_momentum=None)
    dead_head(model)
    images, masks = tiny_data()
    stop = ConstantOutputStop(images[0] * 255.0, patience=2, verbose=0)
    model.fit(images, masks, batch_size=2, epochs=5, verbose=0, callbacks=[stop])
    assert stop.collapsed_at == 2
    assert len(model.history.history["loss"]) == 2

    healthy = tiny_model(ema_momentum=None, head_activation="elu")
    dead_head(healthy)  # the same start, but elu passes a gradient below zero
    stop = ConstantOutputStop(images[0] * 255.0, patience=2, verbose=0)
    healthy.fit(images, masks, batch_size=2, epochs=3, verbose=0, callbacks=[stop])
    assert stop.collapsed_at is None


def test_cli_reports_a_collapsed_network_in_one_line(tiny_dataset, tmp_path, monkeypatch, capsys):
    from isbi_unet.training import loop

    build = loop.build_model

    def build_dead(*args, **kwargs):
        model = build(*args, **kwargs)
        dead_head(model)
        return model

    monkeypatch.setattr(loop, "build_model", build_dead)
    code = cli_main.main(["train", "--data", str(tiny_dataset), "--val-ids", "5", "--logs", str(tmp_path),
                      "--head", "relu", "--lr", "1e-9", *TINY, "--epochs", "4"])
    assert code == 2
    assert "another --seed" in capsys.readouterr().err


def test_cpu_recipe_validates_the_average_before_the_other_callbacks(tmp_path):
    recipe = RECIPES["cpu"]
    assert recipe.ema_momentum and recipe.head_activation == "elu"
    images = [np.zeros((32, 32, 1), np.uint8)]
    callbacks = make_callbacks(tmp_path, tmp_path / "m.keras", recipe, verbose=0, validation=(images, images))
    kinds = [type(callback).__name__ for callback in callbacks]
    assert kinds[0] == "AveragedWeightsAtEpochEnd"
    assert kinds[-1] == "ResumableBackup"
    assert kinds.index("BestModelCheckpoint") > kinds.index("ISBIScore")
    seed_like = make_callbacks(tmp_path, tmp_path / "m.keras", RECIPES["blog"], verbose=0)
    assert not any(isinstance(callback, AveragedWeightsAtEpochEnd) for callback in seed_like)


def test_ema_option_is_checked(tiny_dataset, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli_main.main(["train", "--data", str(tiny_dataset), "--logs", str(tmp_path), "--ema", "1.5", *TINY])
    assert stop.value.code == 2
    assert "argument --ema: must be >= 0.0 and < 1.0, not 1.5" in capsys.readouterr().err


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_validation_panel_shows_binary_masks_of_either_scale(scale):
    from isbi_unet.training.callbacks import validation_panel

    mask = np.zeros((4, 4, 1), np.float32)
    mask[:, 2:] = scale
    image = np.full((4, 4, 1), 0.25, np.float32)
    prediction = np.full((4, 4, 1), 0.75, np.float32)
    panel = validation_panel(image, mask, prediction)
    assert panel.shape == (4, 12, 1)
    np.testing.assert_array_equal(panel[:, 4:8, 0], mask[..., 0] / scale)
    np.testing.assert_array_equal(panel[:, :4], image)
    np.testing.assert_array_equal(panel[:, 8:], prediction)


def test_validation_panel_shows_each_class_of_a_multi_class_mask():
    from isbi_unet.training.callbacks import validation_panel

    labels = np.array([[0, 1, 2, 2]], np.float32)[..., None]
    scores = np.eye(3, dtype=np.float32)[[2, 1, 0, 2]][None]  # argmax 2, 1, 0, 2
    panel = validation_panel(np.zeros((1, 4, 1), np.float32), labels, scores)
    np.testing.assert_allclose(panel[0, 4:8, 0], [0, 0.5, 1, 1])
    np.testing.assert_allclose(panel[0, 8:, 0], [1, 0.5, 0, 1])
