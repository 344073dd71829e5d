"""Training callbacks: the seed's four, made able to fire, plus what long runs need.

``make_callbacks`` gives the checkpoint (atomic, best val_loss), EarlyStopping and
ReduceLROnPlateau on val_loss, TensorBoard with per-epoch image summaries, a CSV of the
history, TerminateOnNaN, BackupAndRestore, a stop for a network whose output has become
constant, an optional time limit, and, when the optimizer keeps a moving average of the
weights, validation and checkpoints of that average.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

from isbi_unet.io.images import atomic_path
from isbi_unet.network import with_precision


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the model when ``monitor`` improves, atomically (temp file, then rename), in
    float32 whatever the training precision (see model.with_precision).

    ``mode`` "min" or "max"; ``best`` is the value to beat (None: none yet).
    """

    def __init__(self, filepath: str | Path, monitor: str = "val_loss", mode: str = "min",
                 verbose: int = 1, best: float | None = None):
        super().__init__()
        self.filepath = Path(filepath)
        self.monitor = monitor
        self.sign = -1.0 if mode == "max" else 1.0
        self.verbose = verbose
        self.best = best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or (self.best is not None and not self.sign * value < self.sign * self.best):
            return
        if self.verbose:
            before = "nothing" if self.best is None else f"{self.best:.5f}"
            print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {before} to "
                  f"{value:.5f}, saving model to {self.filepath}")
        self.best = float(value)
        with atomic_path(self.filepath) as temporary:
            with_precision(self.model, "float32").save(str(temporary))

    def training_state(self) -> dict:
        return {"best": self.best}

    def restore_training_state(self, state: dict) -> None:
        self.best = state["best"]


class TrainingClock(keras.callbacks.Callback):
    """Seconds of training so far, counting the time before an interruption too."""

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def training_state(self) -> dict:
        return {"seconds": self.elapsed()}

    def restore_training_state(self, state: dict) -> None:
        self.start = time.monotonic() - state["seconds"]


class TimeLimit(TrainingClock):
    """Stop training when the next epoch would end after ``minutes`` of training."""

    def __init__(self, minutes: float, verbose: int = 1):
        super().__init__()
        self.seconds = minutes * 60.0
        self.verbose = verbose

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.epoch_start = self.start

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        if now + (now - self.epoch_start) > self.start + self.seconds:
            self.model.stop_training = True
            if self.verbose:
                print(f"\nStopping after epoch {epoch + 1}: the time limit of "
                      f"{self.seconds / 60:.1f} min would be exceeded by another epoch.")


def predict_one(model: keras.Model, image: np.ndarray, copies: int = 1) -> np.ndarray:
    """The model's (H, W, K) float32 output for one (H, W, C) image.

    ``copies``: the number of data-parallel replicas; the image is repeated so that each
    replica gets a full share of the batch.
    """
    batch = np.repeat(image[None], copies, axis=0)
    return np.asarray(model.predict_on_batch(batch), np.float32)[0]


class AveragedWeightsAtEpochEnd(keras.callbacks.SwapEMAWeights):
    """Put the optimizer's moving average of the weights into the model for validation
    and for the callbacks after this one at the end of each epoch; training goes on from
    the raw weights. Needs an optimizer with ``use_ema=True``.

    A backup taken at the end of an epoch holds the swapped state (average in the model,
    raw weights in the optimizer), so a run that ``resuming`` starts from a backup swaps
    back before its first epoch.
    """

    def __init__(self, resuming: bool = False):
        super().__init__(swap_on_epoch=True)
        self.resuming = resuming
        self.averaged = None

    def on_train_begin(self, logs=None):
        self._ema_weights_in_model = self.resuming
        self.averaged = None

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self.averaged = [keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables]

    def on_train_end(self, logs=None):
        """Leave the average in the model however training ended. Keras finalises it only
        after the last scheduled epoch; after an early stop or a time limit its
        ``finalize_variable_values`` puts the raw weights back."""
        if self.averaged is not None:
            for variable, value in zip(self.model.trainable_variables, self.averaged):
                variable.assign(value)

    # Outside TensorFlow, Keras's swap lets a weight and its average share one array, and
    # JAX deletes an array that a step (a prediction too) consumed: copy through numpy.
    def _backend_swap_variables(self, optimizer):
        for variable, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
            raw = keras.ops.convert_to_numpy(variable)
            variable.assign(keras.ops.convert_to_numpy(average))
            average.assign(raw)

    def _backend_finalize_ema_values(self, optimizer):
        for variable, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
            average.assign(keras.ops.convert_to_numpy(variable))


class ConstantOutputStop(keras.callbacks.Callback):
    """Stop training when the prediction for a validation slice has been constant (every
    pixel within ``tolerance``) for ``patience`` epochs in a row: a network in that state
    (a dead head, or a step size that threw it there) does not recover.

    ``collapsed_at`` is then the 1-based epoch at which it stopped (None otherwise).
    image: (H, W, C) on the 0-255 scale; copies: data-parallel replicas (see ``predict_one``).
    """

    def __init__(self, image, patience: int = 3, tolerance: float = 1e-3, copies: int = 1, verbose: int = 1):
        super().__init__()
        self.image = np.asarray(image, np.float32) / 255.0
        self.patience = patience
        self.tolerance = tolerance
        self.copies = copies
        self.verbose = verbose
        self.constant_epochs = 0
        self.collapsed_at = None

    def training_state(self) -> dict:
        return {"constant_epochs": self.constant_epochs}

    def restore_training_state(self, state: dict) -> None:
        self.constant_epochs = state["constant_epochs"]

    def on_epoch_end(self, epoch, logs=None):
        prediction = predict_one(self.model, self.image, self.copies)
        spread = float(np.max(np.ptp(prediction.reshape(-1, prediction.shape[-1]), axis=0)))
        self.constant_epochs = self.constant_epochs + 1 if spread < self.tolerance else 0
        if self.constant_epochs >= self.patience:
            self.collapsed_at = epoch + 1
            self.model.stop_training = True
            if self.verbose:
                print(f"\nStopping after epoch {epoch + 1}: the prediction has been constant "
                      f"for {self.constant_epochs} epochs.")


class ISBIScore(TrainingClock):
    """Score the validation slices with the ISBI 2012 metric after every epoch.

    Adds ``val_v_rand``, ``val_v_info`` and ``minutes`` (of training so far, an
    interrupted run's included) to the epoch's logs, so CSVLogger records the
    time-to-quality curve and a checkpoint can monitor ``val_v_rand``. Must come before
    the callbacks that read them.

    Args:
      images, masks: validation slices (H, W, C) and masks (H, W, 1), 0-255 scale, H and
        W multiples of the network's 2**depth.
      copies: data-parallel replicas (see ``predict_one``).
    """

    def __init__(self, images, masks, copies: int = 1):
        super().__init__()
        self.copies = copies
        self.images = [np.asarray(image, np.float32) / 255.0 for image in images]
        self.labels = [np.asarray(mask)[..., 0] for mask in masks]

    def on_epoch_end(self, epoch, logs=None):
        from isbi_unet.evaluation.metric import isbi_scores

        if logs is None:
            return
        probabilities = [predict_one(self.model, image, self.copies)[..., 0] for image in self.images]
        scores = isbi_scores(probabilities, self.labels)
        logs["val_v_rand"] = scores["v_rand"]
        logs["val_v_info"] = scores["v_info"]
        logs["minutes"] = self.elapsed() / 60.0


def validation_panel(image: np.ndarray, mask: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """image | label | prediction side by side: (H, 3 W, 1) float32 in [0, 1].

    image (H, W, C) in [0, 1] (its first channel is shown); mask (H, W, 1): binary
    0/255 or 0/1, or, when prediction (H, W, K) has K > 1 classes, labels 0..K-1;
    classes (the label and the prediction's argmax) are shown as gray levels k / (K-1).
    """
    classes = prediction.shape[-1]
    if classes > 1:
        label = mask[..., :1] / (classes - 1)
        predicted = np.argmax(prediction, axis=-1)[..., None] / (classes - 1)
    else:
        label = mask[..., :1] / (255.0 if mask.max(initial=0) > 1 else 1.0)
        predicted = prediction
    return np.concatenate([image[..., :1], label, predicted], axis=1).astype(np.float32)


class ValidationImages(keras.callbacks.Callback):
    """Each epoch, write "image | label | prediction" of a few validation slices to
    TensorBoard (under ``log_dir/images``).

    Args:
      images, masks: validation slices (H, W, C) and masks (H, W, 1) on the 0-255 scale.
      copies: data-parallel replicas (see ``predict_one``).
    """

    def __init__(self, log_dir: str | Path, images, masks, count: int = 2, copies: int = 1):
        super().__init__()
        self.copies = copies
        self.log_dir = Path(log_dir) / "images"
        self.images = [np.asarray(image, np.float32) / 255.0 for image in images[:count]]
        self.masks = [np.asarray(mask, np.float32) for mask in masks[:count]]
        self.writer = None

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        self.writer = tf.summary.create_file_writer(str(self.log_dir))

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        panels = []
        for image, mask in zip(self.images, self.masks):
            prediction = predict_one(self.model, image, self.copies)
            panels.append(validation_panel(image, mask, prediction))
        with self.writer.as_default():
            for index, panel in enumerate(panels):
                tf.summary.image(f"image | label | prediction/{index}", panel[None], step=epoch)
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()


