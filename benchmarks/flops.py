"""FLOP counts of the U-Net, the machine's dense-matmul peak, and what the machine is.

FLOPs count a multiply-add as 2; the training step is taken as 3 forward passes
(:data:`TRAIN_PASSES`).
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import keras
import numpy as np
from keras import layers

TRAIN_PASSES = 3  # a training step costs about 3 forward passes (forward + 2x backward)


# ------------------------------------------------------------------------------ FLOPs

def unet_flops(width: int, depth: int = 4, size: tuple[int, int] = (256, 256),
               in_channels: int = 1) -> int:
    """Forward FLOPs of one image through ``model.unet`` (num_class 1), analytically.

    Sums 2 * H * W * k * k * Cin * Cout (a multiply-add counts as 2 FLOPs) over every
    Conv2D, at that convolution's output resolution; biases, activations, pooling,
    upsampling and dropout are left out. 109,211,549,696 for the seed (width 64, 256x256).
    """
    height, width_px = size
    step = 2**depth
    if height % step or width_px % step:
        raise ValueError(f"size {size} must be multiples of {step}")

    def conv(level: int, kernel: int, cin: int, cout: int) -> int:
        return 2 * (height >> level) * (width_px >> level) * kernel * kernel * cin * cout

    total, channels = 0, in_channels
    for level in range(depth + 1):  # encoder levels, then the bottleneck
        filters = width * 2**level
        total += conv(level, 3, channels, filters) + conv(level, 3, filters, filters)
        channels = filters
    for level in reversed(range(depth)):  # upsample + 2x2 conv, concat, two 3x3 convs
        filters = width * 2**level
        total += conv(level, 2, channels, filters)
        total += conv(level, 3, 2 * filters, filters) + conv(level, 3, filters, filters)
        channels = filters
    total += conv(0, 3, channels, 2) + conv(0, 1, 2, 1)  # head_conv, probability
    return total


def model_conv_flops(model: keras.Model) -> int:
    """Forward FLOPs of one image through a built model's Conv2D layers.

    Walks the layers: 2 * Hout * Wout * kh * kw * Cin * Cout each, with Cin and the kernel
    from the layer's kernel and Hout, Wout from its output shape (which must be static).
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, out_h, out_w, _ = layer.output.shape
            if out_h is None or out_w is None:
                raise ValueError(f"{layer.name}: build the model with a fixed input size")
            total += 2 * out_h * out_w * kh * kw * cin * cout
    return int(total)



# ------------------------------------------------------------------------- machine

def cpu_info() -> dict:
    """CPU model name and the vector extensions that matter here, from /proc/cpuinfo."""
    model_name, flags = "", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model_name:
            model_name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    notable = [flag for flag in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags]
    return {"model": model_name or platform.processor() or "unknown", "flags_of_note": notable}


def machine_info() -> dict:
    """CPU, cores, library versions, backend and date of this run."""
    import tensorflow as tf

    return {
        "cpu": cpu_info(),
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "backend": keras.backend.backend(),
        "platform": platform.platform(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _synchronize(tensor) -> None:
    """Wait for an asynchronously dispatched result (JAX); TF and torch CPU are eager."""
    if hasattr(tensor, "block_until_ready"):
        tensor.block_until_ready()


def matmul_peak(n: int, repeats: int, dtype: str, seed: int = 0) -> dict:
    """Dense n x n matmul speed with keras.ops.matmul: median seconds and GFLOP/s (2 n^3 / t)."""
    rng = np.random.default_rng(seed)
    a = keras.ops.convert_to_tensor(rng.standard_normal((n, n), dtype=np.float32), dtype=dtype)
    b = keras.ops.convert_to_tensor(rng.standard_normal((n, n), dtype=np.float32), dtype=dtype)
    _synchronize(keras.ops.matmul(a, b))  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        _synchronize(keras.ops.matmul(a, b))
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"n": n, "repeats": repeats, "median_s": median, "gflops": 2 * n**3 / median / 1e9}
