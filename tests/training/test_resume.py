"""A run interrupted at any moment continues to the same history as an uninterrupted one.

The interruptions are raised inside the training process at pseudo-random moments: at the
start, after a training step, in the middle of writing the best model or a backup. One
more test kills a real process with SIGKILL at a random time. The histories and the final
weights must be equal bit for bit; a negative control shows that a state left out of the
backup (the dropout generators') breaks that equality.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import ROOT, write_dataset
from isbi_unet.evaluation.runs import read_history
from isbi_unet.training import callback_set, loop, resume
from isbi_unet.training.recipes import NATIVE_AUG_DICT, Recipe

# Small enough to run 20 times; every piece of state is in play: dropout (random
# generator), the weights' moving average, the border-weighted loss, a learning-rate
# plateau and early stopping that can fire within 4 epochs.
RECIPE = Recipe("tiny", epochs=4, steps_per_epoch=2, batch_size=2, width=2, learning_rate=3e-3,
                aug_dict=NATIVE_AUG_DICT, patch_size=(32, 32), precision="float32",
                early_stopping_patience=2, reduce_lr_patience=1, weighted_loss=True,
                jit_compile=False, head_activation="elu", ema_momentum=0.9)
SEED = 7


class Interrupted(Exception):
    """Stands for a kill: nothing after it runs in the interrupted process."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "membrane", count=5, size=(48, 48), test_count=0)


def run_training(dataset, run_dir):
    return loop.train(dataset, RECIPE, run_dir, select_ids=["4"], test_ids=[], seed=SEED,
                              workers=1, verbose=0)


def comparable(history: dict) -> dict:
    return {key: values for key, values in history.items() if key != "minutes"}


def assert_same_history(history: dict, expected: dict) -> None:
    """Every column of every epoch equal, bit for bit."""
    assert history == expected


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run_training(dataset, run_dir)
    return comparable(read_history(run_dir / "history.csv")), keras.models.load_model(
        run_dir / "unet_membrane.keras", compile=False).get_weights()


class InterruptAfterBatch(keras.callbacks.Callback):
    def __init__(self, count: int):
        super().__init__()
        self.remaining = count

    def on_train_begin(self, logs=None):
        if self.remaining == 0:
            raise Interrupted

    def on_train_batch_end(self, batch, logs=None):
        self.remaining -= 1
        if self.remaining == 0:
            raise Interrupted


def fail_on_call(function, call: int):
    """``function`` that raises Interrupted on its ``call``-th call (1-based), before or
    after doing its work, alternately, so that half-written files are left behind too."""
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            if call % 2:
                function(*args, **kwargs)
            raise Interrupted
        return function(*args, **kwargs)

    return wrapped


def interrupt(monkeypatch, moment: tuple[str, int]) -> None:
    """Arrange for the next training run to be interrupted at ``moment``."""
    kind, count = moment
    if kind == "batch":  # 0: at the very start
        make = callback_set.make_callbacks
        monkeypatch.setattr(loop, "make_callbacks",
                            lambda *a, **k: [InterruptAfterBatch(count), *make(*a, **k)])
    elif kind == "backup weights":
        monkeypatch.setattr(keras.Model, "save_weights", fail_on_call(keras.Model.save_weights, count))
    elif kind == "backup commit":
        monkeypatch.setattr(resume.ResumableBackup, "_commit", fail_on_call(resume.ResumableBackup._commit, count))
    elif kind == "best model":
        monkeypatch.setattr(keras.Model, "save", fail_on_call(keras.Model.save, count))


MOMENTS = ([("batch", n) for n in range(9)] + [("backup weights", n) for n in range(1, 5)]
           + [("backup commit", n) for n in range(1, 5)] + [("best model", n) for n in range(1, 4)])
# The start, and two drawn moments of each kind: 9 of the 21 (each costs two tiny trainings).
_DRAW = np.random.default_rng(2026)
CHOSEN = [MOMENTS[0]] + [MOMENTS[i] for kind in ("batch", "backup weights", "backup commit", "best model")
                         for i in sorted(_DRAW.choice([i for i, m in enumerate(MOMENTS) if i and m[0] == kind],
                                                      size=2, replace=False))]


@pytest.mark.parametrize("moment", CHOSEN, ids=[f"{kind}-{n}" for kind, n in CHOSEN])
def test_an_interrupted_run_continues_to_the_uninterrupted_history(dataset, uninterrupted, tmp_path,
                                                                   monkeypatch, moment):
    expected_history, expected_weights = uninterrupted
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt(patch, moment)
        with pytest.raises(Interrupted):
            run_training(dataset, run_dir)
    assert keras.mixed_precision.global_policy().name == "float32"
    run_training(dataset, run_dir)
    assert_same_history(comparable(read_history(run_dir / "history.csv")), expected_history)
    weights = keras.models.load_model(run_dir / "unet_membrane.keras", compile=False).get_weights()
    for got, expected in zip(weights, expected_weights):
        np.testing.assert_array_equal(got, expected)
    assert not (run_dir / resume.BACKUP_FOLDER).exists()


def test_the_random_generator_state_is_part_of_the_backup(dataset, tmp_path, monkeypatch):
    """Dropout draws from a generator whose state is no weight: without it a continued
    run would draw other masks. The backup of epoch 1 holds the generators' state after
    that epoch, which is not their initial state."""
    import json

    network = loop.build_model(RECIPE)
    states = resume.random_states(network)
    assert states, "the network's dropout layers should have random-generator states"
    assert not {id(v) for v in states} & {id(v) for v in network.weights}
    initial = [keras.ops.convert_to_numpy(v).tolist() for v in states]
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt(patch, ("batch", 3))  # in epoch 2, after epoch 1's backup
        with pytest.raises(Interrupted):
            run_training(dataset, run_dir)
    (folder,) = [path for path in (run_dir / resume.BACKUP_FOLDER).iterdir() if path.name.startswith("epoch-")]
    saved = json.loads((folder / resume.STATE_FILE).read_text())
    assert saved["epoch"] == 1 and len(saved["random_states"]) == len(initial)
    assert saved["random_states"] != initial


def test_a_backup_without_the_random_generator_states_does_not_resume_exactly(dataset, uninterrupted,
                                                                             tmp_path, monkeypatch):
    """Negative control: the equality above can fail. Forgetting the dropout generators'
    states (resumed from their initial state instead) changes the continued history."""
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt(patch, ("batch", 3))
        with pytest.raises(Interrupted):
            run_training(dataset, run_dir)
    monkeypatch.setattr(resume, "random_states", lambda model: [])
    run_training(dataset, run_dir)
    assert comparable(read_history(run_dir / "history.csv")) != uninterrupted[0]


def test_a_killed_process_continues_to_the_uninterrupted_history(dataset, tmp_path):
    """SIGKILL at a random time (any time is right: the result must not depend on it).

    The uninterrupted reference runs in a fresh process too: the test worker's process has
    run other tests first, and on an AMX CPU its float32 losses once differed from a fresh
    process's in the last bit before any interruption."""
    script = ("import sys; sys.path[:0] = [{root!r}, {tests!r}, {here!r}]; import test_resume as t; "
              "from pathlib import Path; t.run_training(Path({data!r}), Path({run!r}))")
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

    def command(run_dir: Path) -> list[str]:
        return [sys.executable, "-c", script.format(root=str(ROOT), tests=str(ROOT / "tests"), here=str(Path(__file__).resolve().parent),
                                                    data=str(dataset),
                                                    run=str(run_dir))]

    reference = tmp_path / "reference"
    started = time.monotonic()
    done = subprocess.run(command(reference), cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    reference_seconds = time.monotonic() - started
    # The kill falls within the reference's own duration, so that on a fast machine it
    # still lands before the run ends. A run whose training had finished first (its model
    # written, its backup removed: the process may still be shutting down) is started
    # again with an earlier kill.
    random = np.random.default_rng()
    for attempt in range(4):
        run_dir = tmp_path / f"run{attempt}"
        process = subprocess.Popen(command(run_dir), cwd=ROOT, env=environment,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(random.uniform(0.1, 0.8)) * reference_seconds / 2 ** attempt)
        process.send_signal(signal.SIGKILL)
        process.wait()
        finished = (run_dir / "unet_membrane.keras").exists() and not (run_dir / resume.BACKUP_FOLDER).exists()
        if not finished:
            break
    assert not finished, "every run finished its training before its kill"
    done = subprocess.run(command(run_dir), cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_history(comparable(read_history(run_dir / "history.csv")),
                        comparable(read_history(reference / "history.csv")))
    weights = keras.models.load_model(run_dir / "unet_membrane.keras", compile=False).get_weights()
    expected_weights = keras.models.load_model(reference / "unet_membrane.keras", compile=False).get_weights()
    for got, expected in zip(weights, expected_weights):
        np.testing.assert_array_equal(got, expected)


def test_an_interrupted_run_continues_only_with_its_own_settings(dataset, tmp_path, monkeypatch):
    """Other settings would mix two runs (or end in a traceback when the weights no longer
    fit): one error line naming the setting, and the backup is left as it was."""
    from isbi_unet.errors import UserError

    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt(patch, ("batch", 3))
        with pytest.raises(Interrupted):
            run_training(dataset, run_dir)
    backup = {path: path.read_bytes() for path in (run_dir / resume.BACKUP_FOLDER).rglob("*") if path.is_file()}
    changes = {"recipe.width = 2, not 4": dict(recipe=RECIPE.replace(width=4)),
               "recipe.learning_rate = 0.003, not 0.001": dict(recipe=RECIPE.replace(learning_rate=1e-3)),
               "recipe.epochs = 4, not 6": dict(recipe=RECIPE.replace(epochs=6)),
               "seed = 7, not 8": dict(seed=SEED + 1), "split.select = ['4'], not ['3']": dict(select_ids=["3"])}
    for named, change in changes.items():
        options = dict(recipe=RECIPE, seed=SEED, select_ids=["4"]) | change
        with pytest.raises(UserError, match=re.escape(f"this interrupted run started with {named};")):
            loop.train(dataset, options["recipe"], run_dir, select_ids=options["select_ids"], test_ids=[],
                       seed=options["seed"], workers=1, verbose=0)
    assert {path: path.read_bytes() for path in (run_dir / resume.BACKUP_FOLDER).rglob("*") if path.is_file()} == backup
