"""Export a trained U-Net for other tools: ONNX, TensorFlow SavedModel, BioImage Model Zoo.

Every format is written from a float32 copy of the model (a model trained under a
mixed-precision policy computes in bfloat16/float16; the copy has the same weights and
computes in float32), so all formats give Keras's float32 output. Inputs are
(B, H, W, C) float32 images scaled to [0, 1] with H and W multiples of 2**depth (16);
outputs are (B, H, W, K) float32 probabilities (K = 1: probability of cell interior).

``export_model`` writes, into a new folder:

    unet.onnx                       ONNX (opset 15+), batch, height and width dynamic
    saved_model/                    TensorFlow SavedModel, endpoint "serve"
    unet.bioimageio.zip             BioImage Model Zoo package (rdf.yaml, format 0.5)
    bioimageio/                     the same package unpacked

ONNX needs the packages of ``requirements-export.txt`` (onnx, tf2onnx, onnxruntime,
bioimageio.spec/core); ``onnx_predict_fn`` runs an ONNX file with ONNX Runtime as a
``predict.PredictFn``.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from errors import UserError
from model import check_model_file, downsampling_factor, load_model, with_precision

FORMATS = ("onnx", "saved_model", "bioimageio")
ONNX_NAME = "unet.onnx"
SAVED_MODEL_NAME = "saved_model"
INPUT_NAME = "image"
OUTPUT_NAME = "probability"
DIM_NAMES = ("batch", "height", "width")


def require(module: str):
    """Import an optional export dependency, or raise UserError saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise UserError(f"{module} is not installed; install the export dependencies with "
                        "`python -m pip install -r requirements-export.txt`") from error


def float32_model(model: keras.Model) -> keras.Model:
    """``model`` computing in float32 (``model.with_precision``), called once on zeros:
    Keras's ``export`` refuses a model that has never been called."""
    model = with_precision(model, "float32")
    height, width, channels = (side or 32 for side in model.input_shape[1:])
    model(np.zeros((1, height, width, channels), np.float32))
    return model


def export_onnx(model: keras.Model, path: str | Path, factor: int) -> Path:
    """Write the float32 model to ``path`` as ONNX with named, dynamic B, H and W.

    The input is "image" (B, H, W, C) and the output "probability" (B, H, W, K), both
    float32; the metadata key ``downsampling_factor`` records the multiple of H and W.
    """
    onnx = require("onnx")
    require("tf2onnx")
    path = Path(path)
    with warnings.catch_warnings():  # Keras's tf2onnx patch probes np.object
        warnings.simplefilter("ignore", FutureWarning)
        model.export(str(path), format="onnx", verbose=False)
    proto = onnx.load(str(path))
    graph = proto.graph
    old_output = graph.output[0].name
    for node in graph.node:
        node.output[:] = [OUTPUT_NAME if name == old_output else name for name in node.output]
    graph.output[0].name = OUTPUT_NAME
    for value in (graph.input[0], graph.output[0]):
        for dim, name in zip(value.type.tensor_type.shape.dim, DIM_NAMES):
            dim.dim_param = name
    proto.metadata_props.add(key="downsampling_factor", value=str(factor))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def export_saved_model(model: keras.Model, path: str | Path) -> Path:
    """Write the float32 model as a TensorFlow SavedModel folder.

    Its endpoint "serve" (also the default serving signature) takes "image" (B, H, W, C)
    float32 and returns {"probability": (B, H, W, K) float32}; a dict, which TF Serving
    and bioimageio.core's TensorFlow adapter expect.
    """
    path = Path(path)
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = keras.InputSpec(shape=(None, None, None, model.input_shape[-1]), dtype="float32", name=INPUT_NAME)
    archive.add_endpoint(name="serve", fn=lambda image: {OUTPUT_NAME: model(image, training=False)},
                         input_signature=[spec])
    archive.write_out(str(path), verbose=False)
    return path


def onnx_predict_fn(path: str | Path, threads: int | None = None, max_batch: int = 8):
    """A ``predict.PredictFn`` running an ONNX file with ONNX Runtime on the CPU.

    (B, H, W, C) float32 in [0, 1] -> (B, H, W, K) float32. Batches larger than
    ``max_batch`` run in chunks, as ``predict.model_predict_fn`` does (TTA multiplies a
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
    from recipes import cpu_has_bfloat16

    return "onnx" if _tensorflow_on_cpu() and not cpu_has_bfloat16() and onnx_available() else "keras"


def resolve_precision(engine: str, precision: str) -> str:
    """The inference precision for ``--engine`` and ``--precision`` choices: "default" is
    bfloat16 when the auto engine runs Keras on a CPU that computes bfloat16 natively
    (outputs within about 3e-3 of float32, the same held-out scores; README), else
    model.DEFAULT_INFERENCE_PRECISION (float32, what every export computes in)."""
    if precision != "default":
        return precision
    from model import DEFAULT_INFERENCE_PRECISION
    from recipes import cpu_has_bfloat16

    native_bfloat16_cpu = _tensorflow_on_cpu() and cpu_has_bfloat16()
    return "bfloat16" if engine == "auto" and native_bfloat16_cpu else DEFAULT_INFERENCE_PRECISION


def _tensorflow_on_cpu() -> bool:
    """Whether Keras runs the TensorFlow backend without a GPU (where ``auto`` chooses)."""
    from recipes import has_gpu

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


def write_onnx_file(model_path: str | Path, onnx_path: str | Path) -> Path:
    """Load a ``.keras`` file and write its float32 ONNX export to ``onnx_path``."""
    model = load_model(model_path)
    return export_onnx(float32_model(model), onnx_path, downsampling_factor(model))


def _run_in_child(function: str, *args: str) -> None:
    """Run ``export.<function>(*args)`` in a fresh Python process; UserError with its last
    error line when it fails."""
    import os
    import subprocess
    import sys

    here = str(Path(__file__).resolve().parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    code = ("import sys, startup; startup.start_backend(); import export; from errors import UserError\n"
            f"try: export.{function}(*sys.argv[1:])\n"
            "except UserError as error: sys.exit(f'{error}')")
    result = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise UserError(f"the ONNX export of {args[0]} failed: {lines[-1] if lines else f'exit {result.returncode}'}")


def default_sample(repo_root: Path) -> tuple[np.ndarray, str]:
    """A (H, W, 1) uint8 test slice and where it came from.

    The first of data/membrane/test/0.png and ../shared/data/isbi2012/test/0.png that
    exists, else a synthetic 256x256 image of smoothed noise.
    """
    from data import read_image

    for path in (repo_root / "data/membrane/test/0.png",
                 repo_root.parent / "shared/data/isbi2012/test/0.png"):
        if path.is_file():
            return read_image(path).round().astype(np.uint8), f"ISBI 2012 test slice 0 ({path.name})"
    from skimage.filters import gaussian

    noise = gaussian(np.random.default_rng(0).random((256, 256)), sigma=3)
    scaled = (noise - noise.min()) / (noise.max() - noise.min()) * 255
    return scaled.round().astype(np.uint8)[..., None], "synthetic smoothed noise (no ISBI slice found)"


def export_model(
    model_path: str | Path,
    out_dir: str | Path,
    formats: Sequence[str] = FORMATS,
    sample: np.ndarray | None = None,
    sample_source: str = "",
    progress: bool = True,
) -> dict[str, Path]:
    """Export ``model_path`` (.keras) to a new folder ``out_dir`` in the given formats.

    sample: (H, W, C) uint8 image for the bioimage.io test tensors (H, W multiples of
    16; default: ``default_sample``). Everything is written to a staging folder that is
    renamed to out_dir at the end, so a failure leaves nothing behind. Returns format ->
    path inside out_dir. Raises UserError when out_dir exists or a format is unknown.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise UserError(f"--formats: choose from {', '.join(FORMATS)} (got {', '.join(unknown) or 'none'})")
    model_path, out_dir = Path(model_path), Path(out_dir)
    if out_dir.exists():
        raise UserError(f"{out_dir}: already exists; give a new folder with --out")
    if "onnx" in formats or "bioimageio" in formats:
        for module in ("onnx", "tf2onnx"):
            require(module)
    if "bioimageio" in formats:
        require("bioimageio.spec")
    if sample is None:
        sample, sample_source = default_sample(Path(__file__).resolve().parent)
    model = load_model(model_path)
    factor = downsampling_factor(model)
    if sample.shape[-1] != model.input_shape[-1]:
        raise UserError(f"--sample: has {sample.shape[-1]} channels but the model expects {model.input_shape[-1]}")
    if sample.shape[0] % factor or sample.shape[1] % factor:
        raise UserError(f"--sample: height and width must be multiples of {factor}, not {sample.shape[:2]}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        written = write_formats(model, model_path, staging, formats, sample, sample_source, progress)
        staging.chmod(0o755)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {key: out_dir / path.relative_to(staging) for key, path in written.items()}


def write_formats(model: keras.Model, model_path: Path, staging: Path, formats: Sequence[str],
                  sample: np.ndarray, sample_source: str, progress: bool) -> dict[str, Path]:
    """Write the formats into staging (the package needs ONNX and the SavedModel: they are
    made for it and removed afterwards when not asked for). Returns format -> path."""
    float_model = float32_model(model)
    written = {}
    if "onnx" in formats or "bioimageio" in formats:
        say(progress, f"Writing {ONNX_NAME} ...")
        written["onnx"] = export_onnx(float_model, staging / ONNX_NAME, downsampling_factor(model))
    if "saved_model" in formats or "bioimageio" in formats:
        say(progress, f"Writing {SAVED_MODEL_NAME}/ ...")
        written["saved_model"] = export_saved_model(float_model, staging / SAVED_MODEL_NAME)
    if "bioimageio" in formats:
        from bioimageio_package import write_package

        say(progress, "Writing the bioimage.io package ...")
        written.update(write_package(float_model, model_path, staging, written["onnx"],
                                     written["saved_model"], sample, sample_source))
    for fmt in ("onnx", "saved_model"):
        if fmt not in formats and fmt in written:
            path = written.pop(fmt)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return written


def say(progress: bool, message: str) -> None:
    """Print a progress line when progress is on."""
    if progress:
        print(message, flush=True)
