"""Model files and precision: load and check ``.keras`` files, change the compute dtype, 2**depth.

``model.unet()`` builds the network; this module handles what ``train`` saved: loading
without compile state (:func:`load_model`), the dtype policies (:data:`PRECISION_POLICIES`,
:func:`with_precision`), and the factor H and W must be multiples of
(:func:`downsampling_factor`).
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from isbi_unet.errors import UserError


def check_model_file(path: str | Path) -> Path:
    """``path`` as a Path when it names a ``.keras`` file (a zip archive); UserError otherwise."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found; train one with `python main.py train`")
    if path.suffix != ".keras":
        raise UserError(
            f"{path}: expected a .keras model file (weights-only .h5 files load with "
            "unet(pretrained_weights=...))"
        )
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a .keras model (a .keras file is a zip archive); give a model written by train")
    return path


def load_model(path: str | Path, precision: str | None = None) -> keras.Model:
    """Load a model saved by ``train`` (``.keras``), without its compile state.

    ``precision``: compute in "float32", "bfloat16" or "float16" (see with_precision);
    None: DEFAULT_INFERENCE_PRECISION. Raises UserError for a missing
    or unreadable file.
    """
    path = check_model_file(path)
    try:
        model = keras.models.load_model(str(path), compile=False)
    except (ValueError, OSError, KeyError) as error:
        raise UserError(f"{path}: not a readable .keras model ({error})") from error
    return with_precision(model, PRECISION_POLICIES[precision or DEFAULT_INFERENCE_PRECISION])


PRECISION_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


# Inference precision of load_model (predict, evaluate, the main job), whatever the training
# precision was: see the README's precision measurements.
DEFAULT_INFERENCE_PRECISION = "float32"


def compute_policy(model: keras.Model) -> str:
    """The dtype policy of the model's first computing layer: "float32", "mixed_bfloat16"..."""
    for layer in model.layers:
        if layer.weights:
            return layer.dtype_policy.name
    return "float32"


def with_precision(model: keras.Model, policy: str) -> keras.Model:
    """``model`` computing under the dtype policy ``policy`` ("float32", "mixed_bfloat16"
    or "mixed_float16"): the model itself when it already does, else an uncompiled copy
    with the same weights. Output layers compute in float32 under every policy, and
    variables are float32 in all of them, so the weights copy exactly.
    """
    if compute_policy(model) == policy:
        return model
    config = model.get_config()
    entries = config["output_layers"]
    outputs = {entries[0]} if isinstance(entries[0], str) else {entry[0] for entry in entries}
    for layer in config["layers"]:
        dtype = layer["config"].get("dtype")
        if isinstance(dtype, dict) and dtype.get("class_name") == "DTypePolicy" and layer["name"] not in outputs:
            dtype["config"]["name"] = policy
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def downsampling_factor(model: keras.Model) -> int:
    """2**depth: the factor that H and W of the model's input must be multiples of."""
    pools = [layer for layer in model.layers if isinstance(layer, layers.MaxPooling2D)]
    return 2 ** len(pools)
