"""What this machine offers (a GPU for the active Keras backend, a GPU driver, native
bfloat16 on the CPU), and a quiet start of the backend on it.

Importing this module imports no deep-learning framework: :func:`start_backend` must run
before anything imports keras.

The ``tensorflow`` wheel is built with CUDA support. On a machine without an NVIDIA driver,
importing it and listing its devices writes lines such as ``Could not find cuda drivers``
and ``E0000 ... failed call to cuInit: ... UNKNOWN ERROR (303)`` straight to file
descriptor 2, from C++ code that runs before TensorFlow's log settings
(``TF_CPP_MIN_LOG_LEVEL``) take effect. They mean nothing on such a machine, so
:func:`start_backend` silences file descriptor 2 while TensorFlow starts there. Where an
NVIDIA driver (or WSL's GPU device) exists, nothing is hidden: those lines then matter.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
from typing import Iterator


def has_gpu() -> bool:
    """Whether the active Keras backend sees a GPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def cpu_has_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16 in the flags of
    /proc/cpuinfo). Without them bfloat16 is emulated, and training is many times slower
    than in float32. False where /proc/cpuinfo does not exist."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as handle:
                cpuinfo = handle.read()
        except OSError:
            return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


GPU_DRIVER_PATHS = ("/proc/driver/nvidia/version", "/dev/nvidia[0-9]*", "/dev/nvidiactl", "/dev/dxg")


def has_gpu_driver() -> bool:
    """True when an NVIDIA driver (or WSL's GPU device) is visible to this process."""
    return any(glob.glob(pattern) for pattern in GPU_DRIVER_PATHS)


@contextlib.contextmanager
def silenced_stderr_fd() -> Iterator[None]:
    """Send file descriptor 2 (C and C++ code included) to /dev/null inside the block.

    A Python exception raised in the block is reported after the descriptor is restored.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_backend() -> None:
    """Quiet TensorFlow's C++ log (unless TF_CPP_MIN_LOG_LEVEL is set) and, for the
    TensorFlow backend on a machine without a GPU driver, import TensorFlow and probe its
    devices with stderr silenced.

    The level is 2 (errors only) where a GPU driver exists, whose CUDA errors matter, and
    3 on other machines, where the C++ errors are lines such as ``oneDNN supports DT_INT32
    only on platforms with AVX-512`` that read like failures and are none (TensorFlow's
    real errors reach Python as exceptions). Call it before anything imports keras.
    Other backends are left alone.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if has_gpu_driver() else "3")
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != "tensorflow" or "tensorflow" in sys.modules or has_gpu_driver():
        return
    with silenced_stderr_fd():
        try:
            import tensorflow as tf
        except ImportError:
            return
        tf.config.list_physical_devices()
