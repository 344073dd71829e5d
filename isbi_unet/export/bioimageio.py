"""A BioImage Model Zoo package (rdf.yaml, format 0.5) of a float32 U-Net.

The description is built with bioimageio.spec's own model classes, so it is validated
when it is made. The package holds three weight formats of one network: ``keras_v3``
(the float32 ``.keras`` file, the parent), ``onnx`` and ``tensorflow_saved_model_bundle``
(a zip of the SavedModel folder); test tensors from one slice; a cover image; a short
markdown documentation with the training run's figures when the run folder has them.

Tensors: input "raw" (b, y, x, c) uint8 0..255, scaled to [0, 1] float32 by the
preprocessing; y and x any multiple of 16. Output "probability" (b, y, x, c) float32 in
[0, 1], same y and x as the input; one channel, the probability of cell interior (the
ISBI 2012 labels: 1 = cell, 0 = membrane), or one channel per class for a softmax model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np

PACKAGE_FOLDER = "bioimageio"
PACKAGE_ZIP = "unet.bioimageio.zip"
CITATIONS = (
    ("Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image "
     "Segmentation. MICCAI 2015.", "10.1007/978-3-319-24574-4_28"),
    ("Arganda-Carreras et al. Crowdsourcing the creation of image segmentation algorithms "
     "for connectomics. Frontiers in Neuroanatomy 2015 (ISBI 2012 challenge).",
     "10.3389/fnana.2015.00142"),
)
def training_record(run_dir: Path) -> dict:
    """What the run folder says about the model, from the files the run wrote.

    ``run``: recipe, seed, epochs, training minutes and the code's commit (run.json,
    history.csv); ``protocol``: the slices in their roles; ``selection``: the selection
    slices' scores (they chose the checkpoint, TTA, the thresholds and the cells'
    parameters: not test scores); ``test``: the test slices' scores, read once at the
    selection's thresholds (test_scores.json), and ``cells``: the test slices' cells
    (summary.json). Sections the folder has no file for are left out.
    """
    from isbi_unet.evaluation.runs import read_history

    def read(name: str) -> dict | None:
        path = run_dir / name
        return json.loads(path.read_text()) if path.is_file() else None

    record: dict = {}
    finished, history = read("run.json"), read_history(run_dir / "history.csv")
    if finished:
        config = finished["config"]
        record["run"] = {"recipe": config["recipe"]["name"], "seed": config["seed"],
                         "training minutes": round(finished["train_seconds"] / 60, 1),
                         "commit": finished.get("commit") or "unknown"}
        record["protocol"] = {"training slices": ",".join(config["split"]["train"]),
                              "selection slices (chose the checkpoint, TTA, thresholds, cell parameters)":
                                  ",".join(config["split"]["select"]),
                              "test slices (chose nothing, scored once)": ",".join(config["split"]["test"]) or "none"}
    if history.get("loss"):
        record.setdefault("run", {})["epochs"] = len(history["loss"])
    selection = read("selection_scores.json")
    if selection:
        record["selection"] = {"V_rand": selection["v_rand"], "V_info": selection["v_info"],
                               "TTA": bool(selection.get("tta"))}
    test = read("test_scores.json")
    if test:
        chosen = test["chosen"]
        record["test"] = {"slices": len(test["per_slice"]),
                          "V_rand (at the selection's threshold)": chosen["v_rand"],
                          "V_info (at the selection's threshold)": chosen["v_info"],
                          "V_rand, maximum over thresholds (the challenge's number)": chosen["v_rand_official"],
                          "V_info, maximum over thresholds": chosen["v_info_official"],
                          "pixel error": chosen["pixel_error"], "Dice": chosen["dice"]}
    cells = (read("summary.json") or {}).get("instances")
    if cells:
        record["cells"] = {"method (parameters chosen on the selection slices)": cells["method"],
                           "test V_rand": cells["test"]["v_rand"], "test V_info": cells["test"]["v_info"]}
    return record


TITLES = (("Run", "run"), ("Protocol", "protocol"), ("Selection slices (ISBI 2012 metric; they chose)", "selection"),
          ("Test slices (ISBI 2012 metric)", "test"), ("Cells of the test slices", "cells"))


def documentation(model: keras.Model, record: dict, sample_source: str, num_class: int) -> str:
    """The package's README.md: what the model does, its tensors, and how it was trained."""
    width = model.get_layer("down1_conv1").filters
    if num_class == 1:
        output = "1 channel, float32 in [0, 1]: the probability that the pixel is inside a cell (1) rather than on a membrane (0)"
    else:
        output = f"{num_class} channels, float32 softmax scores of the classes 0..{num_class - 1}"
    lines = [
        "# U-Net for ISBI 2012 cell-membrane segmentation",
        "",
        f"The U-Net of Ronneberger et al. (2015) at width {width} (filters of the first level), "
        f"{model.count_params():,} parameters, for 2D electron-microscopy slices of neural tissue "
        "(ISBI 2012 challenge: serial-section TEM of the Drosophila ventral nerve cord, 4x4x50 nm voxels).",
        "",
        "## Input and output",
        "",
        f"- input `raw`: axes b, y, x, c; {model.input_shape[-1]} channel(s), uint8 0..255; y and x any multiple of 16.",
        "- preprocessing: cast to float32, then scale_linear with gain 1/255 (to [0, 1]).",
        f"- output `probability`: axes b, y, x, c, the same y and x as the input; {output}.",
        "- Threshold the probability (e.g. at 0.5), or split cells by a watershed on it.",
        "- Images of other sizes: mirror-pad to a multiple of 16 and crop the output back.",
        "",
        "The weights come in three formats that compute the same float32 function: keras_v3 "
        "(Keras 3 `.keras`), ONNX, and a TensorFlow SavedModel. They reproduce the test output "
        f"within 1e-4. Test tensors: {sample_source}.",
        "",
        "## Training",
        "",
    ]
    if not record:
        lines.append("None recorded: the model file has no run folder (run.json, history.csv) beside it.")
    for title, key in TITLES:
        if key in record:
            lines += [f"{title}:", ""] + [f"- {name}: {value}" for name, value in record[key].items()] + [""]
    if record and "test" not in record:
        lines.append("Test scores: none; this run was not scored on test slices (`python main.py all` scores them).")
    return "\n".join(lines) + "\n"


def cover_image(sample: np.ndarray, output: np.ndarray) -> np.ndarray:
    """(H, 2W) uint8: the input slice beside the first output channel."""
    probability = np.clip(output[..., 0] * 255.0, 0, 255).round().astype(np.uint8)
    return np.concatenate([sample[..., 0], probability], axis=1)


def write_package(
    model: keras.Model,
    model_path: Path,
    staging: Path,
    onnx_path: Path,
    saved_model_dir: Path,
    sample: np.ndarray,
    sample_source: str,
    author: str = "unknown",
    license_id: str = "CC-BY-4.0",
) -> dict[str, Path]:
    """Write staging/bioimageio/ (rdf.yaml and its files) and staging/unet.bioimageio.zip.

    model: the float32 network; model_path: its original .keras file (its folder is read
    for the training record); sample: (H, W, C) uint8 test input. Returns
    {"bioimageio": zip path, "bioimageio_folder": folder path}.
    """
    import onnx
    import tensorflow as tf
    from bioimageio.spec import (
        ValidationContext,
        save_bioimageio_package,
        save_bioimageio_yaml_only,
    )
    from bioimageio.spec.model import v0_5
    from skimage import io

    folder = staging / PACKAGE_FOLDER
    folder.mkdir()
    model.save(folder / "unet.keras")
    shutil.copyfile(onnx_path, folder / "unet.onnx")
    shutil.make_archive(str(folder / "tf_saved_model"), "zip", saved_model_dir)
    test_input = sample[None].astype(np.uint8)
    test_output = np.asarray(model.predict_on_batch(test_input.astype(np.float32) / 255.0), np.float32)
    np.save(folder / "test_input.npy", test_input)
    np.save(folder / "test_output.npy", test_output)
    io.imsave(folder / "cover.png", cover_image(sample, test_output[0]), check_contrast=False)
    num_class = model.output_shape[-1]
    record = training_record(model_path.parent)
    (folder / "README.md").write_text(documentation(model, record, sample_source, num_class))

    with ValidationContext(root=folder, perform_io_checks=True):
        channel_names = ["cell_interior"] if num_class == 1 else [f"class{k}" for k in range(num_class)]
        step = v0_5.ParameterizedSize(min=16, step=16)
        inputs = [v0_5.InputTensorDescr(
            id=v0_5.TensorId("raw"),
            description="EM slice, 0..255",
            axes=[v0_5.BatchAxis(),
                  v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=step),
                  v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=step),
                  v0_5.ChannelAxis(channel_names=[v0_5.Identifier(f"gray{c}" if c else "gray")
                                                  for c in range(sample.shape[-1])])],
            test_tensor=v0_5.FileDescr(source=Path("test_input.npy")),
            data=v0_5.IntervalOrRatioDataDescr(type="uint8", range=(0, 255)),
            preprocessing=[v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32")),
                           v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=1 / 255, offset=0.0)),
                           v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32"))],
        )]
        same_size = [v0_5.SpaceOutputAxis(id=v0_5.AxisId(axis), size=v0_5.SizeReference(
            tensor_id=v0_5.TensorId("raw"), axis_id=v0_5.AxisId(axis))) for axis in ("y", "x")]
        outputs = [v0_5.OutputTensorDescr(
            id=v0_5.TensorId("probability"),
            description="probability of cell interior (1) against membrane (0)" if num_class == 1 else "class scores (softmax)",
            axes=[v0_5.BatchAxis(), *same_size,
                  v0_5.ChannelAxis(channel_names=[v0_5.Identifier(name) for name in channel_names])],
            test_tensor=v0_5.FileDescr(source=Path("test_output.npy")),
            data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        )]
        opset = max(entry.version for entry in onnx.load(str(onnx_path)).opset_import if entry.domain in ("", "ai.onnx"))
        weights = v0_5.WeightsDescr(
            keras_v3=v0_5.KerasV3WeightsDescr(source=Path("unet.keras"), keras_version=keras.__version__,
                                              backend=("tensorflow", tf.__version__)),
            onnx=v0_5.OnnxWeightsDescr(source=Path("unet.onnx"), opset_version=opset, parent="keras_v3"),
            tensorflow_saved_model_bundle=v0_5.TensorflowSavedModelBundleWeightsDescr(
                source=Path("tf_saved_model.zip"), tensorflow_version=tf.__version__, parent="keras_v3"),
        )
        description = v0_5.ModelDescr(
            name="U-Net ISBI 2012 membrane segmentation",
            description="2D U-Net: probability of cell interior against membrane in EM slices (ISBI 2012).",
            authors=[v0_5.Author(name=author)],
            cite=[v0_5.CiteEntry(text=text, doi=v0_5.Doi(doi)) for text, doi in CITATIONS],
            license=license_id,
            documentation=v0_5.FileDescr(source=Path("README.md")),
            covers=[v0_5.FileDescr(source=Path("cover.png"))],
            tags=["unet", "segmentation", "electron-microscopy", "2d", "membrane", "isbi2012", "keras", "onnx", "tensorflow"],
            inputs=inputs,
            outputs=outputs,
            weights=weights,
            config={"isbi_unet": record} if record else {},
        )
    save_bioimageio_yaml_only(description, file=folder / "rdf.yaml")
    zip_path = staging / PACKAGE_ZIP
    save_bioimageio_package(description, output_path=zip_path)
    return {"bioimageio": zip_path, "bioimageio_folder": folder}
