"""The architecture, its options, and saving/loading."""

import numpy as np
import pytest

import model
from isbi_unet import network as model_files
from isbi_unet.errors import UserError


def test_default_is_the_seed_architecture():
    network = model.unet()
    assert network.count_params() == model.SEED_PARAMETER_COUNT == 31_031_685
    assert network.input_shape == (None, 256, 256, 1)
    assert network.output_shape == (None, 256, 256, 1)
    names = [layer.name for layer in network.layers]
    assert "down4_dropout" in names and "bottleneck_dropout" in names
    head = network.get_layer("head_conv")
    assert head.filters == 2 and head.kernel_size == (3, 3)
    assert network.get_layer("probability").activation.__name__ == "sigmoid"
    assert network.get_layer("up1_upconv").kernel_size == (2, 2)
    assert network.optimizer.learning_rate.numpy() == pytest.approx(1e-4)
    assert network.loss == "binary_crossentropy"


@pytest.mark.parametrize("size", [256, 512])
def test_output_shape_matches_the_input_at_any_size(size):
    network = model.unet(input_size=(None, None, 1), width=4, compile=False)
    output = network.predict(np.zeros((1, size, size, 1), np.float32), verbose=0)
    assert output.shape == (1, size, size, 1)
    assert np.all((output >= 0) & (output <= 1))


def test_width_classes_and_channels_options():
    network = model.unet(input_size=(64, 64, 3), width=8, num_class=4)
    assert network.get_layer("down1_conv1").filters == 8
    assert network.get_layer("bottleneck_conv1").filters == 128
    output = network.predict(np.random.rand(2, 64, 64, 3).astype(np.float32), verbose=0)
    assert output.shape == (2, 64, 64, 4)
    np.testing.assert_allclose(output.sum(-1), 1.0, rtol=1e-5)
    assert network.loss == "categorical_crossentropy"


def test_sizes_that_do_not_divide_are_refused():
    with pytest.raises(ValueError, match="multiples of 16"):
        model.unet(input_size=(100, 100, 1), width=4)


def test_keras_round_trip_gives_the_same_predictions(tmp_path):
    network = model.unet(input_size=(None, None, 1), width=4)
    x = np.random.default_rng(0).random((1, 32, 32, 1)).astype(np.float32)
    path = tmp_path / "unet.keras"
    network.save(path)
    loaded = model_files.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), network.predict(x, verbose=0), atol=1e-6)


def test_weights_h5_load_through_pretrained_weights(tmp_path):
    network = model.unet(input_size=(32, 32, 1), width=4)
    path = tmp_path / "unet.weights.h5"
    network.save_weights(path)
    other = model.unet(pretrained_weights=path, input_size=(32, 32, 1), width=4)
    x = np.random.default_rng(1).random((1, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(other.predict(x, verbose=0), network.predict(x, verbose=0), atol=1e-6)


def test_weights_of_another_architecture_are_a_user_error(tmp_path):
    """One error that names the first weight whose shape differs, without Keras's warning per layer."""
    import warnings

    path = tmp_path / "w8.weights.h5"
    model.unet(input_size=(32, 32, 1), width=8).save_weights(path)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(UserError, match="--width") as refused:
        warnings.simplefilter("always")
        model.unet(pretrained_weights=path, input_size=(32, 32, 1), width=4)
    assert "down1_conv1/kernel is (3, 3, 1, 8) there and (3, 3, 1, 4) here" in str(refused.value)
    assert not [w for w in caught if "Skipping" in str(w.message)]


def test_a_refused_pretrained_file_leaves_no_run_folder(tiny_dataset, tmp_path):
    from conftest import TINY, run_cli

    path = tmp_path / "w8.weights.h5"
    model.unet(input_size=(None, None, 1), width=8).save_weights(path)
    code, _, stderr = run_cli("train", "--data", tiny_dataset, "--logs", tmp_path / "logs", "--run", "tuned",
                              "--pretrained", path, *TINY)  # TINY trains width 4
    assert code == 2 and "error:" in stderr and "--width" in stderr and "Skipping" not in stderr
    assert not (tmp_path / "logs" / "tuned").exists()


def test_load_model_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        model_files.load_model(tmp_path / "none.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="bad.keras: not a .keras model"):
        model_files.load_model(bad)


@pytest.mark.parametrize("kind", ["trained.keras", "trained.weights.h5", "uncompiled.weights.h5"])
def test_a_trained_model_gives_its_weights_and_not_its_optimizer_state(tmp_path, kind):
    """--pretrained logs/RUN/unet_membrane.keras, or a .weights.h5 saved with or without an
    optimizer: the network's weights, a fresh optimizer, no "Skipping variable loading for
    optimizer" warning."""
    import warnings

    trained = model.unet(input_size=(None, None, 1), width=4)
    x = np.random.default_rng(2).random((2, 32, 32, 1)).astype(np.float32)
    trained.fit(x, (x > 0.5).astype(np.float32), epochs=1, verbose=0)
    path = tmp_path / kind
    if kind.startswith("uncompiled"):
        bare = model.unet(input_size=(None, None, 1), width=4, compile=False)
        bare.set_weights(trained.get_weights())
        bare.save_weights(path)
    elif kind.endswith(".weights.h5"):
        trained.save_weights(path)
    else:
        trained.save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = model.unet(pretrained_weights=path, input_size=(None, None, 1), width=4)
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    np.testing.assert_allclose(started.predict(x, verbose=0), trained.predict(x, verbose=0), atol=1e-6)
    assert int(started.optimizer.iterations.numpy()) == 0
    with pytest.raises(UserError, match="--width"):
        model.unet(pretrained_weights=path, input_size=(None, None, 1), width=8)
