"""Exact resume of an interrupted training run.

A run's ``backup/`` folder holds one ``epoch-NNNN/`` folder per completed epoch, written
under a temporary name and committed by a single rename, so the weights and the record
that goes with them appear together or not at all:

- ``model.weights.h5``: the model's and the optimizer's variables (weights, Adam's moments
  and step count, the learning rate, the moving average of the weights);
- ``state.json``: the epoch, the states of the dropout layers' random generators, and
  the counters of the callbacks that decide when to lower the rate, stop and save.

Beside them, ``config.json`` holds the run's settings (recipe, seed, slices); a run is
only continued with the same ones (:func:`check_configuration`). Each backup is synced
to disk before it replaces the previous one.

Only committed folders are read: a kill at any moment, during a step or in the middle
of writing a backup, leaves the last completed epoch to continue from, and the
continued run repeats the uninterrupted one (same seed) epoch for epoch.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

BACKUP_FOLDER = "backup"
WEIGHTS_FILE = "model.weights.h5"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
FINISHED_FILE = "run.json"  # a finished run's settings and training time

# The counters of Keras's own callbacks that a continued run needs (ours define
# ``training_state`` / ``restore_training_state`` instead).
KERAS_CALLBACK_STATE = {
    "EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch"),
    "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
}


def _epoch_folders(backup_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, folder) of the committed backups, oldest first."""
    if not backup_dir.is_dir():
        return []
    found = []
    for path in backup_dir.iterdir():
        number = path.name.removeprefix("epoch-")
        if path.is_dir() and path.name.startswith("epoch-") and number.isdigit():
            found.append((int(number), path))
    return sorted(found)


def committed_epochs(run_dir: str | Path) -> int:
    """Epochs that the run in run_dir completed and backed up (0: none)."""
    folders = _epoch_folders(Path(run_dir) / BACKUP_FOLDER)
    return folders[-1][0] if folders else 0


def check_configuration(run_dir: str | Path, config: dict) -> None:
    """Record the run's settings in its backup folder, or, when the run is being
    continued, refuse settings other than those it started with (UserError naming the
    first that differs). ``config``: JSON-ready settings, e.g. the recipe and the slices."""
    from isbi_unet.errors import UserError

    backup_dir = Path(run_dir) / BACKUP_FOLDER
    stored_path = backup_dir / CONFIG_FILE
    if committed_epochs(run_dir) and stored_path.is_file():
        difference = _first_difference(json.loads(stored_path.read_text()), config)
        if difference:
            raise UserError(f"{run_dir}: this interrupted run started with {difference}; continue it with its own "
                            "settings, or start a new --run")
        return
    _write_synced(stored_path, config)


def record_finished(run_dir: str | Path, config: dict, seconds: float) -> None:
    """Keep a finished run's settings, training time and code commit in ``run_dir/run.json``."""
    _write_synced(Path(run_dir) / FINISHED_FILE, {"config": config, "train_seconds": seconds,
                                                  "commit": code_commit()})


def code_commit() -> str | None:
    """The git commit of this code (with "+changes" when the checkout has uncommitted
    changes to tracked files); None outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10)
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                 capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("+changes" if changed.stdout.strip() else "")


def check_finished(run_dir: str | Path, config: dict) -> float:
    """The training seconds of the finished run in run_dir, made with ``config``;
    UserError when it was made with other settings, or its record is missing."""
    from isbi_unet.errors import UserError

    path = Path(run_dir) / FINISHED_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: holds a finished run without its settings ({FINISHED_FILE}); choose another --run")
    record = json.loads(path.read_text())
    difference = _first_difference(record["config"], config)
    if difference:
        raise UserError(f"{run_dir}: holds a finished run made with {difference}; choose another --run "
                        "or the same settings")
    return float(record["train_seconds"])


def _first_difference(stored: dict, config: dict, prefix: str = "") -> str | None:
    """"KEY = STORED, not NEW" for the first setting that differs (nested keys joined by
    dots, e.g. recipe.width); None when all agree."""
    config = json.loads(json.dumps(config))
    for key in sorted(set(stored) | set(config)):
        old, new = stored.get(key), config.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found = _first_difference(old, new, f"{prefix}{key}.")
            if found:
                return found
        elif old != new:
            return f"{prefix}{key} = {old!r}, not {new!r}"
    return None


def _write_synced(path: Path, data: dict) -> None:
    """Write JSON through a synced temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2))
    _sync(partial)
    os.replace(partial, path)
    _sync(path.parent)


def _sync(path: Path) -> None:
    """fsync a file, or a folder's entries, so that a power cut cannot undo a rename."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def trim_history(run_dir: str | Path, epochs: int) -> None:
    """Keep the header and the first ``epochs`` rows of run_dir/history.csv, so that a
    continued run does not repeat an epoch that was logged but not backed up."""
    history = Path(run_dir) / "history.csv"
    if history.is_file():
        lines = history.read_text().splitlines(keepends=True)
        history.write_text("".join(lines[: epochs + 1]) if epochs else "")


def _json_value(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def callback_state(callback: keras.callbacks.Callback) -> dict | None:
    """The state of a callback that a continued run must restore (None: stateless)."""
    if hasattr(callback, "training_state"):
        return callback.training_state()
    names = KERAS_CALLBACK_STATE.get(type(callback).__name__)
    return None if names is None else {name: _json_value(getattr(callback, name)) for name in names}


def restore_callback_state(callback: keras.callbacks.Callback, state: dict) -> None:
    if hasattr(callback, "restore_training_state"):
        callback.restore_training_state(state)
    else:
        for name, value in state.items():
            setattr(callback, name, value)


def random_states(model: keras.Model) -> list:
    """The random-generator states of the model (dropout): its variables that are not
    weights, in a fixed order."""
    weights = {id(variable) for variable in model.weights}
    return [variable for variable in model.variables if id(variable) not in weights]


class ResumableBackup(keras.callbacks.Callback):
    """Back up everything a continued run needs at the end of each epoch; restore it at
    the start of a run whose ``backup_dir`` holds a committed epoch.

    Place it last in the callback list: it restores the other callbacks' counters after
    their own ``on_train_begin`` has reset them, and saves them after they have acted on
    the epoch. ``callbacks``: the run's callbacks whose state is saved (see
    :func:`callback_state`). The folder is removed when training ends normally.
    Start ``fit`` at ``initial_epoch=committed_epochs(run_dir)``.
    """

    def __init__(self, backup_dir: str | Path, callbacks: Sequence[keras.callbacks.Callback] = ()):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.stateful = list(callbacks)

    def on_train_begin(self, logs=None):
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        folders = _epoch_folders(self.backup_dir)
        if not folders:
            return
        folder = folders[-1][1]
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:  # built lazily by the first step otherwise
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(folder / WEIGHTS_FILE))
        state = json.loads((folder / STATE_FILE).read_text())
        for variable, value in zip(random_states(self.model), state["random_states"]):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        for callback, saved in zip(self.stateful, state["callbacks"]):
            if saved is not None:
                restore_callback_state(callback, saved)

    def on_epoch_end(self, epoch, logs=None):
        partial = self.backup_dir / f".epoch-{epoch + 1:04d}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        self.model.save_weights(str(partial / WEIGHTS_FILE))
        state = {
            "epoch": epoch + 1,
            "random_states": [keras.ops.convert_to_numpy(v).tolist() for v in random_states(self.model)],
            "callbacks": [callback_state(callback) for callback in self.stateful],
        }
        (partial / STATE_FILE).write_text(json.dumps(state))
        for path in (partial / WEIGHTS_FILE, partial / STATE_FILE, partial):
            _sync(path)
        self._commit(partial, epoch + 1)

    def _commit(self, partial: Path, epoch: int) -> None:
        """Make the written backup of ``epoch`` the one to resume from (one rename), then
        drop the older ones."""
        committed = self.backup_dir / f"epoch-{epoch:04d}"
        shutil.rmtree(committed, ignore_errors=True)
        os.replace(partial, committed)
        _sync(self.backup_dir)  # the new backup is on disk before the older ones go
        for number, older in _epoch_folders(self.backup_dir):
            if number < epoch:
                shutil.rmtree(older, ignore_errors=True)

    def on_train_end(self, logs=None):
        shutil.rmtree(self.backup_dir, ignore_errors=True)
