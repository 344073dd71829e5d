"""Synchronous data-parallel training on more than one device, under the active backend.

``--distribute`` choices:

- ``none``: one device (the default).
- ``mirrored``: every local GPU holds a copy of the model and takes an equal share of
  each batch; gradients are summed across copies before the update. Without a GPU the
  copies go on the CPU's logical devices (see ``split_cpu``). TensorFlow:
  ``tf.distribute.MirroredStrategy``; JAX: ``keras.distribution.DataParallel``.
- ``multiworker``: the same over several machines, TensorFlow's
  ``MultiWorkerMirroredStrategy``; each machine runs the same command with its own
  ``TF_CONFIG`` (see the TensorFlow multi-worker guide).

The batch size of a recipe is the global batch: with 2 replicas and batch 4, each
replica sees 2 crops per step and the update equals that of one device with batch 4.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import keras

from isbi_unet.errors import UserError

DISTRIBUTIONS = ("none", "mirrored", "multiworker")


def split_cpu(count: int) -> None:
    """Present the CPU as ``count`` logical devices, to run data parallelism without GPUs.

    Call before the backend's first computation. TensorFlow and JAX only.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError as error:  # the runtime has started; the split can no longer change
            if len(tf.config.list_logical_devices("CPU")) != count:
                raise UserError(f"cannot split the CPU into {count} devices after TensorFlow started") from error
    elif backend == "jax":
        import jax

        try:
            jax.config.update("jax_num_cpu_devices", count)
        except RuntimeError as error:
            if len(jax.devices("cpu")) != count:
                raise UserError(f"cannot split the CPU into {count} devices after JAX started") from error
    else:
        raise UserError(f"--cpu-devices needs the tensorflow or jax backend, not {backend}")


def _local_devices_tensorflow() -> list[str]:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return [device.name for device in (gpus or tf.config.list_logical_devices("CPU"))]


def _local_devices_jax() -> list:
    import jax

    gpus = [device for device in jax.devices() if device.platform != "cpu"]
    return gpus or jax.devices("cpu")


@contextlib.contextmanager
def distribution_scope(kind: str = "none") -> Iterator[int]:
    """Build, compile and train the model inside this context; yields the number of replicas.

    Raises UserError for an unknown kind, or one the active backend cannot run.
    """
    if kind not in DISTRIBUTIONS:
        raise UserError(f"--distribute must be one of {', '.join(DISTRIBUTIONS)}, not {kind!r}")
    if kind == "none":
        yield 1
        return
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if kind == "mirrored":
            strategy = tf.distribute.MirroredStrategy(devices=_local_devices_tensorflow())
        else:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        with strategy.scope():
            yield strategy.num_replicas_in_sync
    elif backend == "jax" and kind == "mirrored":
        devices = _local_devices_jax()
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        try:
            yield len(devices)
        finally:
            keras.distribution.set_distribution(previous)
    else:
        raise UserError(f"--distribute {kind} is not available under the {backend} backend; "
                        "use tensorflow (mirrored, multiworker) or jax (mirrored)")
