"""Inference engines: Keras, or ONNX Runtime on an ONNX export cached next to the model.

``--engine auto`` and ``--precision default`` are resolved here (:func:`resolve_engine`,
:func:`resolve_precision`); :func:`onnx_predict_fn` runs an ONNX file as a
:data:`~isbi_unet.prediction.tiling.PredictFn`, (B, H, W, C) -> (B, H, W, K) float32.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np

from isbi_unet.errors import UserError, require
from isbi_unet.network import check_model_file


def onnx_predict_fn(path: str | Path, threads: int | None = None, max_batch: int = 8):
    """A ``isbi_unet.prediction.tiling.PredictFn`` running an ONNX file with ONNX Runtime on the CPU.

    (B, H, W, C) float32 in [0, 1] -> (B, H, W, K) float32. Batches larger than
    ``max_batch`` run in chunks, as ``isbi_unet.prediction.predict.model_predict_fn`` does (TTA multiplies a
    batch by 8; one run of 32 slices of 512x512 held over 4 GB of activations).
    ``threads``: intra-op threads (default: ONNX Runtime's, one per core).
    """
    runtime = require("onnxruntime")
    options = runtime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = runtime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def predict_fn(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, np.float32)
        chunks = [session.run(None, {input_name: np.ascontiguousarray(batch[i:i + max_batch])})[0]
                  for i in range(0, len(batch), max_batch)]
        return np.concatenate(chunks)

    return predict_fn


def onnx_available() -> bool:
    """Whether the packages for an on-the-fly ONNX export and ONNX Runtime are installed."""
    import importlib.util

    return all(importlib.util.find_spec(name) for name in ("onnx", "tf2onnx", "onnxruntime"))


def resolve_engine(engine: str) -> str:
    """"keras" or "onnx" for a ``--engine`` choice. "auto" on a CPU with the TensorFlow
    backend: Keras where the CPU computes bfloat16 natively (AVX512-BF16 or AMX, where
    Keras in bfloat16 is the fastest engine), else ONNX Runtime when its packages are
    installed (faster than Keras in float32 there); Keras on a GPU or another backend
    (benchmarks/engines.py, README)."""
    if engine != "auto":
        return engine
    from isbi_unet.hardware import cpu_has_bfloat16

    return "onnx" if _tensorflow_on_cpu() and not cpu_has_bfloat16() and onnx_available() else "keras"


def resolve_precision(engine: str, precision: str) -> str:
    """The inference precision for ``--engine`` and ``--precision`` choices: "default" is
    bfloat16 when the auto engine runs Keras on a CPU that computes bfloat16 natively
    (outputs within about 3e-3 of float32, the same held-out scores; README), else
    model.DEFAULT_INFERENCE_PRECISION (float32, what every export computes in)."""
    if precision != "default":
        return precision
    from isbi_unet.hardware import cpu_has_bfloat16
    from isbi_unet.network import DEFAULT_INFERENCE_PRECISION

    native_bfloat16_cpu = _tensorflow_on_cpu() and cpu_has_bfloat16()
    return "bfloat16" if engine == "auto" and native_bfloat16_cpu else DEFAULT_INFERENCE_PRECISION


def _tensorflow_on_cpu() -> bool:
    """Whether Keras runs the TensorFlow backend without a GPU (where ``auto`` chooses)."""
    from isbi_unet.hardware import has_gpu

    return keras.backend.backend() == "tensorflow" and not has_gpu()


def cached_onnx(model_path: str | Path) -> Path:
    """The ONNX export of a ``.keras`` file, kept next to it as ``<stem>.onnx``.

    Written (atomically) when missing or older than the model file; reused otherwise. The
    export runs in a short-lived child process (``write_onnx_file``): tf2onnx's
    conversion takes several hundred MB that a Python process does not give back, and the
    process that then predicts a large stack should not carry them.
    """
    model_path = check_model_file(model_path)
    target = model_path.with_suffix(".onnx")
    if target.is_file() and target.stat().st_mtime >= model_path.stat().st_mtime:
        return target
    try:
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".onnx-") as staging:
            staged = Path(staging) / target.name
            _run_in_child("write_onnx_file", str(model_path), str(staged))
            staged.replace(target)
    except PermissionError as error:
        raise UserError(f"{target}: cannot write the ONNX export next to the model ({error}); "
                        "run `main.py export` and copy unet.onnx there") from error
    return target


def _run_in_child(function: str, *args: str) -> None:
    """Run ``isbi_unet.export.formats.<function>(*args)`` in a fresh Python process; UserError with its last
    error line when it fails."""
    import os
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[2])  # the folder that holds isbi_unet/
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    code = ("import sys\nfrom isbi_unet.hardware import start_backend\nstart_backend()\n"
            "from isbi_unet.errors import UserError\nfrom isbi_unet.export import formats\n"
            f"try: formats.{function}(*sys.argv[1:])\n"
            "except UserError as error: sys.exit(f'{error}')")
    result = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise UserError(f"the ONNX export of {args[0]} failed: {lines[-1] if lines else f'exit {result.returncode}'}")
