"""Data-parallel training on the CPU split into 2 logical devices (TensorFlow, JAX)."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

# One SGD step on a fixed batch of 4, on one device and on 2 replicas of 2 crops each,
# from the same initial weights. Prints the largest weight difference and the losses.
ONE_STEP = textwrap.dedent("""
    import sys
    import keras
    import numpy as np
    from isbi_unet.training.distribute import distribution_scope, split_cpu
    from isbi_unet.training.losses import PixelBinaryCrossentropy
    from model import unet

    split_cpu(2)
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1)).astype("float32")
    y = (rng.random((4, 32, 32, 1)) > 0.5).astype("float32")
    w = rng.uniform(1, 10, (4, 32, 32, 1)).astype("float32")

    def one_step(kind, weights):
        with distribution_scope(kind) as replicas:
            network = unet(input_size=(32, 32, 1), width=4, depth=2, dropout=0.0, compile=False)
            network.compile(optimizer=keras.optimizers.SGD(0.5), loss=PixelBinaryCrossentropy())
            if weights is not None:
                network.set_weights(weights)
            initial = [np.array(v) for v in network.get_weights()]
            # fit, not train_on_batch: under TensorFlow only fit splits the batch across replicas
            history = network.fit(x, y, sample_weight=w, batch_size=4, epochs=1, shuffle=False, verbose=0)
            loss = history.history["loss"][0]
            return replicas, initial, [np.array(v) for v in network.get_weights()], loss

    keras.utils.set_random_seed(1)
    _, initial, single, single_loss = one_step("none", None)
    replicas, _, mirrored, mirrored_loss = one_step("mirrored", initial)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(single, initial))
    diff = max(float(np.abs(a - b).max()) for a, b in zip(single, mirrored))
    print(replicas, moved, diff, single_loss, mirrored_loss)
""")


def backend_env(backend: str) -> dict:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    return dict(os.environ, KERAS_BACKEND=backend)


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_replicas_make_the_update_of_one_device(backend):
    done = subprocess.run([sys.executable, "-c", ONE_STEP], cwd=ROOT, env=backend_env(backend),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    replicas, moved, diff, single_loss, mirrored_loss = done.stdout.split()[-5:]
    assert int(replicas) == 2
    assert float(moved) > 1e-3  # the step changed the weights...
    assert float(diff) < 1e-4 * max(1.0, float(moved))  # ...the same way on 2 replicas
    assert float(mirrored_loss) == pytest.approx(float(single_loss), rel=1e-5)


def test_train_command_with_two_cpu_replicas(tiny_dataset, tmp_path):
    logs = tmp_path / "logs"
    command = [sys.executable, "main.py", "train", "--data", str(tiny_dataset), "--val-ids", "5", "--run", "d",
               "--logs", str(logs), "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "2",
               "--width", "4", "--patch-size", "64", "--quiet", "--distribute", "mirrored", "--cpu-devices", "2"]
    done = subprocess.run(command, cwd=ROOT, env=backend_env("tensorflow"), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "over 2 replicas, 1 crops each" in done.stdout
    history = (logs / "d" / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "val_v_rand" in history[0]
    assert (logs / "d" / "unet_membrane.keras").is_file()


def test_uneven_batch_is_a_user_error(tiny_dataset, tmp_path):
    command = [sys.executable, "main.py", "train", "--data", str(tiny_dataset), "--val-ids", "5",
               "--logs", str(tmp_path / "logs"), "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "3",
               "--width", "4", "--patch-size", "64", "--quiet", "--distribute", "mirrored", "--cpu-devices", "2"]
    done = subprocess.run(command, cwd=ROOT, env=backend_env("tensorflow"), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: the batch size 3 does not split evenly")
    assert "Traceback" not in done.stderr
