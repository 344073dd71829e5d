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
``isbi_unet.prediction.tiling.PredictFn``.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from isbi_unet.errors import UserError, require
from isbi_unet.io.manifest import REPO_ROOT
from isbi_unet.network import downsampling_factor, load_model, with_precision

FORMATS = ("onnx", "saved_model", "bioimageio")
ONNX_NAME = "unet.onnx"
SAVED_MODEL_NAME = "saved_model"
INPUT_NAME = "image"
OUTPUT_NAME = "probability"
DIM_NAMES = ("batch", "height", "width")


def float32_model(model: keras.Model) -> keras.Model:
    """``model`` computing in float32 (``isbi_unet.network.with_precision``), called once on zeros:
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


def write_onnx_file(model_path: str | Path, onnx_path: str | Path) -> Path:
    """Load a ``.keras`` file and write its float32 ONNX export to ``onnx_path``."""
    model = load_model(model_path)
    return export_onnx(float32_model(model), onnx_path, downsampling_factor(model))


def default_sample(repo_root: Path) -> tuple[np.ndarray, str]:
    """A (H, W, 1) uint8 test slice and where it came from.

    The first of data/membrane/test/0.png and ../shared/data/isbi2012/test/0.png that
    exists, else a synthetic 256x256 image of smoothed noise.
    """
    from isbi_unet.io.images import read_image

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
        sample, sample_source = default_sample(REPO_ROOT)
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
        from isbi_unet.export.bioimageio import write_package

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
