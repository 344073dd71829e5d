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

# Under JAX every random initializer compiles once per weight shape (minutes for a U-Net
# on a busy 2-core machine). The weights are replaced by the saved ones (prediction) or
# only need to be finite (the training smoke test), so there they start at zero instead.
FAST_INIT = """
import sys
import keras
from keras.src.backend import random as backend_random
if keras.backend.backend() == "jax":
    def zeros(shape, *args, dtype=None, **kwargs):
        return keras.ops.zeros(shape, dtype or "float32")
    for name in ("normal", "truncated_normal", "uniform"):
        setattr(backend_random, name, zeros)
sys.argv = sys.argv[1:]
"""

PREDICT_SCRIPT = FAST_INIT + """
import numpy as np
from isbi_unet.network import load_model
from isbi_unet.prediction.predict import model_predict_fn
from isbi_unet.prediction.tiling import predict_whole
network = load_model(sys.argv[0])
image = np.load(sys.argv[1])
np.save(sys.argv[2], predict_whole(image, model_predict_fn(network), 16))
"""

MAIN_SCRIPT = FAST_INIT + """
import main
sys.exit(main.main(sys.argv))
"""


def needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")


def run_under(backend: str, script: str, args: list, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a Python script with ``args`` (as sys.argv) under a Keras backend, in the repo root."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tensorflow_prediction(tmp_path_factory):
    """A random-weight depth-4 U-Net saved by TensorFlow, an image, and TensorFlow's map."""
    import keras

    import model
    from isbi_unet.prediction import predict as predict_module
    from isbi_unet.prediction import tiling

    folder = tmp_path_factory.mktemp("backends")
    keras.utils.set_random_seed(3)
    network = model.unet(input_size=(None, None, 1), width=2, compile=False)
    network.save(folder / "m.keras")
    image = np.random.default_rng(0).random((32, 48, 1)).astype(np.float32)
    np.save(folder / "image.npy", image)
    expected = tiling.predict_whole(image, predict_module.model_predict_fn(network), 16)
    return folder, expected


@pytest.mark.parametrize("backend, module", OTHER_BACKENDS)
def test_each_backend_predicts_the_tensorflow_map_for_the_same_weights(backend, module, tensorflow_prediction):
    needs(module)
    folder, expected = tensorflow_prediction
    assert expected.shape == (32, 48, 1) and expected.std() > 1e-3  # a map with something to compare
    done = run_under(backend, PREDICT_SCRIPT, [folder / "m.keras", folder / "image.npy", folder / f"{backend}.npy"])
    assert done.returncode == 0, done.stderr[-2000:]
    got = np.load(folder / f"{backend}.npy")
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("backend, module", [("tensorflow", "tensorflow"), *OTHER_BACKENDS])
def test_train_and_predict_under_each_backend(backend, module, tiny_dataset, tmp_path):
    needs(module)
    logs, out = tmp_path / "logs", tmp_path / "pred"
    train = ["train", "--data", tiny_dataset, "--val-ids", "5", "--run", "b",
             "--logs", logs, "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "2", "--width", "4",
             "--patch-size", "64", "--weighted-loss", "--quiet"]
    done = run_under(backend, MAIN_SCRIPT, train)
    assert done.returncode == 0, done.stderr[-2000:]
    history = (logs / "b" / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "val_v_rand" in history[0]
    losses = [float(line.split(",")[history[0].split(",").index("loss")]) for line in history[1:]]
    assert all(np.isfinite(losses))
    predict = ["predict", "--model", logs / "b" / "unet_membrane.keras",
               "--input", tiny_dataset / "test", "--output", out, "--tta", "--quiet"]
    done = run_under(backend, MAIN_SCRIPT, predict)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["0_predict.png", "1_predict.png"]
