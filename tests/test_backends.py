"""The same train and predict code under every installed Keras backend (tiny, on the CPU).

TensorFlow is the default backend; JAX comes with requirements-dev.txt; torch is used when
installed (its PyPI wheel pulls the CUDA libraries, so the project does not install it).
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

OTHER_BACKENDS = [("jax", "jax"), ("torch", "torch")]

PREDICT_SCRIPT = """
import sys
import numpy as np
import model, predict
network = model.load_model(sys.argv[1])
image = np.load(sys.argv[2])
np.save(sys.argv[3], predict.predict_whole(image, predict.with_tta(predict.model_predict_fn(network)), 16))
"""


def needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")


def run_under(backend: str, args: list, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, KERAS_BACKEND=backend)
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tensorflow_prediction(tmp_path_factory):
    """A random-weight depth-4 U-Net saved by TensorFlow, an image, and TensorFlow's map."""
    import keras

    import model
    import predict

    folder = tmp_path_factory.mktemp("backends")
    keras.utils.set_random_seed(3)
    network = model.unet(input_size=(None, None, 1), width=4, compile=False)
    network.save(folder / "m.keras")
    image = np.random.default_rng(0).random((48, 80, 1)).astype(np.float32)
    np.save(folder / "image.npy", image)
    expected = predict.predict_whole(image, predict.with_tta(predict.model_predict_fn(network)), 16)
    return folder, expected


@pytest.mark.parametrize("backend, module", OTHER_BACKENDS)
def test_each_backend_predicts_the_tensorflow_map_for_the_same_weights(backend, module, tensorflow_prediction):
    needs(module)
    folder, expected = tensorflow_prediction
    assert expected.shape == (48, 80, 1) and expected.std() > 1e-3  # a map with something to compare
    done = run_under(backend, ["-c", PREDICT_SCRIPT, folder / "m.keras", folder / "image.npy", folder / f"{backend}.npy"])
    assert done.returncode == 0, done.stderr[-2000:]
    got = np.load(folder / f"{backend}.npy")
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("backend, module", [("tensorflow", "tensorflow"), *OTHER_BACKENDS])
def test_train_and_predict_under_each_backend(backend, module, tiny_dataset, tmp_path):
    needs(module)
    logs, out = tmp_path / "logs", tmp_path / "pred"
    train = ["main.py", "train", "--data", tiny_dataset, "--val-ids", "5", "--run", "b",
             "--logs", logs, "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "2", "--width", "4",
             "--patch-size", "64", "--weighted-loss", "--quiet"]
    done = run_under(backend, train)
    assert done.returncode == 0, done.stderr[-2000:]
    history = (logs / "b" / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "val_v_rand" in history[0]
    losses = [float(line.split(",")[history[0].split(",").index("loss")]) for line in history[1:]]
    assert all(np.isfinite(losses))
    predict = ["main.py", "predict", "--model", logs / "b" / "unet_membrane.keras",
               "--input", tiny_dataset / "test", "--output", out, "--tta", "--quiet"]
    done = run_under(backend, predict)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["0_predict.png", "1_predict.png"]
