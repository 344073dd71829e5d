"""The same train and predict code under every installed Keras backend (tiny, on the CPU)."""

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.parametrize("backend, module", [("tensorflow", "tensorflow"), ("jax", "jax"), ("torch", "torch")])
def test_train_and_predict_under_each_backend(backend, module, tiny_dataset, tmp_path):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    env = dict(os.environ, KERAS_BACKEND=backend)
    logs, out = tmp_path / "logs", tmp_path / "pred"
    train = [sys.executable, "main.py", "train", "--data", str(tiny_dataset), "--val-ids", "5", "--run", "b",
             "--logs", str(logs), "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "2", "--width", "4",
             "--patch-size", "64", "--weighted-loss", "--quiet"]
    done = subprocess.run(train, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    history = (logs / "b" / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "val_v_rand" in history[0]
    predict = [sys.executable, "main.py", "predict", "--model", str(logs / "b" / "unet_membrane.keras"),
               "--input", str(tiny_dataset / "test"), "--output", str(out), "--tta", "--quiet"]
    done = subprocess.run(predict, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["0_predict.png", "1_predict.png"]
