"""main.py export: ONNX and SavedModel parity with Keras, the bioimage.io package passes
bioimageio.core's own model test, predict --engine onnx. Skips without the export
packages (requirements-export.txt)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

import keras  # noqa: E402

from conftest import synthetic_slice  # noqa: E402


@pytest.fixture(scope="module")
def bf16_model_path(tmp_path_factory) -> Path:
    """A width-4 U-Net built and saved under mixed_bfloat16, with random weights, alone in
    its folder (no run files: its package says so)."""
    from model import unet

    folder = tmp_path_factory.mktemp("run")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(3)
        model = unet(input_size=(None, None, 1), width=4, head_activation="elu", compile=False)
        model.save(folder / "unet_membrane.keras")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return folder / "unet_membrane.keras"


@pytest.fixture(scope="module")
def exported(bf16_model_path, tmp_path_factory) -> Path:
    """All three formats of the model, with 64x64 synthetic test tensors."""
    from isbi_unet.export.formats import export_model

    sample, _ = synthetic_slice((64, 64), seed=5)
    out = tmp_path_factory.mktemp("export") / "out"
    export_model(bf16_model_path, out, sample=sample[..., None], sample_source="synthetic", progress=False)
    return out


@pytest.fixture(scope="module")
def real_slice() -> np.ndarray:
    """(1, 512, 512, 1) float32 in [0, 1]: ISBI test slice 0, or a synthetic one without shared/."""
    from conftest import SHARED_ISBI
    from isbi_unet.io.images import read_image

    path = SHARED_ISBI / "test" / "0.png"
    image = read_image(path) if path.is_file() else synthetic_slice((512, 512), seed=9)[0][..., None]
    return (np.asarray(image, np.float32) / 255.0)[None]


def test_the_float32_copy_computes_in_float32_with_the_same_weights(bf16_model_path, real_slice):
    from isbi_unet.network import load_model, with_precision

    original = load_model(bf16_model_path, precision="bfloat16")
    copy = with_precision(original, "float32")
    assert original.get_layer("down1_conv1").compute_dtype == "bfloat16"
    assert {layer.compute_dtype for layer in copy.layers} == {"float32"}
    for a, b in zip(original.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(a, b)
    crop = real_slice[:, :128, :128]
    low, full = original.predict_on_batch(crop), copy.predict_on_batch(crop)
    assert 1e-4 < np.abs(low - full).max() < 0.1  # bfloat16 rounding, same function


def test_onnx_and_saved_model_reproduce_keras_float32(exported, bf16_model_path, real_slice):
    """On a real 512x512 slice and on a non-square batch: within 1e-4 of Keras in float32."""
    import onnx
    import tensorflow as tf

    from isbi_unet.network import load_model
    from isbi_unet.prediction.engines import onnx_predict_fn

    reference_model = load_model(bf16_model_path)  # float32 unless told otherwise
    batch = np.concatenate([real_slice[:, :96, :160], real_slice[:, 96:192, 160:320]])
    serving = tf.saved_model.load(str(exported / "saved_model")).signatures["serving_default"]
    onnx_fn = onnx_predict_fn(exported / "unet.onnx")
    for inputs in (real_slice, batch):
        reference = reference_model.predict_on_batch(inputs)
        np.testing.assert_allclose(onnx_fn(inputs), reference, atol=1e-4, rtol=0)
        saved = serving(image=tf.constant(inputs))["probability"].numpy()
        np.testing.assert_allclose(saved, reference, atol=1e-4, rtol=0)
    proto = onnx.load(str(exported / "unet.onnx"))
    dims = [dim.dim_param for dim in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[:3] == ["batch", "height", "width"]
    assert {prop.key: prop.value for prop in proto.metadata_props}["downsampling_factor"] == "16"


def test_bioimageio_package_passes_bioimageio_core_model_test(exported, monkeypatch, tmp_path):
    # bioimageio.core sets os.environ["KERAS_BACKEND"] (to "torch" unless that variable is
    # set) when it loads Keras weights; every later subprocess of the suite would inherit
    # it. monkeypatch restores the variable after the test.
    monkeypatch.setenv("KERAS_BACKEND", keras.backend.backend())
    pytest.importorskip("bioimageio.core")
    from bioimageio.core import test_model

    monkeypatch.chdir(tmp_path)  # the TensorFlow adapter unzips into the working folder
    folder = exported / "bioimageio"
    summary = test_model(folder / "rdf.yaml")
    failed = [(detail.name, [error.msg for error in detail.errors]) for detail in summary.details
              if detail.status == "failed"]
    assert summary.status == "passed", failed
    tested = " ".join(detail.name for detail in summary.details)
    for weights in ("keras_v3", "onnx", "tensorflow_saved_model_bundle"):
        assert f"Reproduce test outputs from test inputs ({weights})" in tested
    from bioimageio.spec import load_description

    packed = load_description(exported / "unet.bioimageio.zip")
    assert packed.validation_summary.status == "valid-format", packed.validation_summary.format()
    readme = (folder / "README.md").read_text()
    assert "None recorded: the model file has no run folder" in readme


def test_the_package_carries_the_runs_own_test_and_selection_scores(tmp_path_factory):
    """A real tiny run (train, choose on the selection slices, score the test slices once):
    its package's README and rdf.yaml hold the figures the run wrote, labelled by role."""
    pytest.importorskip("bioimageio.spec")
    import yaml

    from conftest import write_dataset
    from isbi_unet.export.formats import export_model
    from isbi_unet.pipeline.run import TrainingRun, train_and_score
    from isbi_unet.training.recipes import RECIPES

    root = tmp_path_factory.mktemp("scored")
    data = write_dataset(root / "membrane", count=6, size=(64, 64), test_count=0)
    recipe = RECIPES["cpu"].replace(epochs=2, steps_per_epoch=2, batch_size=2, width=4, patch_size=(64, 64),
                                    precision="float32", time_limit_minutes=None)
    summary, _ = train_and_score(recipe, TrainingRun(data, root / "run", select_ids=["2", "3"], test_ids=["4", "5"],
                                                     workers=1, verbose=0), progress=False)
    sample = synthetic_slice((64, 64), seed=5)[0][..., None]
    written = export_model(summary["model"], root / "exported", formats=("bioimageio",), sample=sample,
                           sample_source="a synthetic slice", progress=False)
    folder = written["bioimageio_folder"]
    readme = (folder / "README.md").read_text()
    chosen = json.loads((root / "run" / "test_scores.json").read_text())["chosen"]
    assert f"- V_rand (at the selection's threshold): {chosen['v_rand']}" in readme
    assert f"- V_rand, maximum over thresholds (the challenge's number): {chosen['v_rand_official']}" in readme
    assert "- test slices (chose nothing, scored once): 4,5" in readme and "- recipe: cpu" in readme
    assert f"- V_rand: {summary['selection']['v_rand']}" in readme  # under the selection slices
    assert f"- test V_rand: {summary['instances']['test']['v_rand']}" in readme
    assert "Held-out" not in readme and "none recorded" not in readme.lower()
    record = yaml.safe_load((folder / "rdf.yaml").read_text())["config"]["isbi_unet"]
    assert record["test"]["V_rand (at the selection's threshold)"] == chosen["v_rand"]
    assert record["run"]["epochs"] == summary["epochs"] and record["run"]["commit"] != "unknown"


def test_bioimageio_description_says_axes_preprocessing_and_output(exported):
    pytest.importorskip("bioimageio.spec")
    from bioimageio.spec import load_description

    description = load_description(exported / "bioimageio" / "rdf.yaml", perform_io_checks=False)
    assert description.format_version.startswith("0.5")
    [inputs], [outputs] = description.inputs, description.outputs
    assert [str(axis.id) for axis in inputs.axes] == ["batch", "y", "x", "channel"]
    assert inputs.axes[1].size.step == 16 and inputs.axes[2].size.step == 16
    scale = [step for step in inputs.preprocessing if step.id == "scale_linear"]
    assert scale and scale[0].kwargs.gain == pytest.approx(1 / 255)
    assert [str(name) for name in outputs.axes[-1].channel_names] == ["cell_interior"]
    assert tuple(outputs.data.range) == (0.0, 1.0)
    test_input = np.load(exported / "bioimageio" / "test_input.npy")
    assert test_input.shape == (1, 64, 64, 1) and test_input.dtype == np.uint8


def test_predict_engine_onnx_matches_keras_float32(bf16_model_path, tmp_path):
    from skimage import io

    from isbi_unet.cli.main import main

    images = tmp_path / "images"
    images.mkdir()
    io.imsave(images / "0.png", synthetic_slice((80, 112), seed=0)[0], check_contrast=False)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model_path = model_dir / "m.keras"
    from isbi_unet.network import load_model

    load_model(bf16_model_path).save(model_path)
    outputs = {}
    for engine in ("onnx", "keras"):
        outputs[engine] = tmp_path / engine
        assert main(["predict", "--model", str(model_path), "--input", str(images), "--output",
                     str(outputs[engine]), "--tta", "--engine", engine, "--quiet"]) == 0
    assert (model_dir / "m.onnx").is_file()  # the cache beside the model
    onnx_png = io.imread(outputs["onnx"] / "0_predict.png").astype(int)
    keras_png = io.imread(outputs["keras"] / "0_predict.png").astype(int)
    assert onnx_png.shape == (80, 112)
    assert np.abs(onnx_png - keras_png).max() <= 1  # 8-bit rounding of equal floats


def test_the_onnx_cache_is_exported_in_a_child_process_and_reused(bf16_model_path, tmp_path, monkeypatch):
    """predict's ONNX cache is converted in a child process (this process keeps none of
    tf2onnx's memory), reused while fresh, redone when the model is newer; a broken model
    gives the child's one-line error and leaves nothing behind."""
    import shutil

    from isbi_unet.errors import UserError
    from isbi_unet.export import formats
    from isbi_unet.prediction import engines

    def in_this_process(*args, **kwargs):
        raise AssertionError("the ONNX conversion ran in the predicting process")

    monkeypatch.setattr(formats, "export_onnx", in_this_process)
    model_path = tmp_path / "m.keras"
    shutil.copy(bf16_model_path, model_path)
    onnx_path = engines.cached_onnx(model_path)
    assert onnx_path == tmp_path / "m.onnx" and onnx_path.stat().st_size > 100_000
    written = onnx_path.stat().st_mtime_ns
    assert engines.cached_onnx(model_path).stat().st_mtime_ns == written  # reused
    os.utime(model_path, ns=(written + 10**9, written + 10**9))  # the model is newer
    assert engines.cached_onnx(model_path).stat().st_mtime_ns > written
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip archive
    with pytest.raises(UserError, match="broken.keras: not a readable .keras model"):
        engines.cached_onnx(broken)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["broken.keras", "m.keras", "m.onnx"]


def test_export_refuses_an_existing_folder_and_unknown_formats(bf16_model_path, tmp_path, capsys):
    from isbi_unet.cli.main import main

    existing = tmp_path / "out"
    existing.mkdir()
    assert main(["export", "--model", str(bf16_model_path), "--out", str(existing)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", "--model", str(bf16_model_path), "--out", str(tmp_path / "new"),
                 "--formats", "onnx,tflite"]) == 2
    assert "tflite" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert os.listdir(tmp_path) == ["out"]


def test_auto_engine_is_keras_bfloat16_on_a_native_bfloat16_cpu_else_onnx_runtime(monkeypatch):
    from isbi_unet import hardware
    from isbi_unet.prediction import engines

    assert engines.resolve_engine("keras") == "keras" and engines.resolve_engine("onnx") == "onnx"
    monkeypatch.setattr(hardware, "has_gpu", lambda: False)  # this suite runs TensorFlow on a CPU
    monkeypatch.setattr(hardware, "cpu_has_bfloat16", lambda: False)
    assert engines.resolve_engine("auto") == "onnx"
    assert engines.resolve_precision("auto", "default") == "float32"
    monkeypatch.setattr(hardware, "cpu_has_bfloat16", lambda: True)
    assert engines.resolve_engine("auto") == "keras"
    assert engines.resolve_precision("auto", "default") == "bfloat16"
    # a chosen engine or precision is kept: --engine keras is the model as saved, in float32
    assert engines.resolve_precision("keras", "default") == "float32"
    assert engines.resolve_precision("onnx", "default") == "float32"
    assert engines.resolve_precision("auto", "float32") == "float32"
    monkeypatch.setattr(hardware, "cpu_has_bfloat16", lambda: False)
    monkeypatch.setattr(engines, "onnx_available", lambda: False)
    assert engines.resolve_engine("auto") == "keras"
    assert engines.resolve_precision("auto", "default") == "float32"
    monkeypatch.setattr(hardware, "has_gpu", lambda: True)
    monkeypatch.setattr(engines, "onnx_available", lambda: True)
    monkeypatch.setattr(hardware, "cpu_has_bfloat16", lambda: True)
    assert engines.resolve_engine("auto") == "keras" and engines.resolve_precision("auto", "default") == "float32"

def test_onnx_predict_fn_runs_large_batches_in_chunks(monkeypatch):
    """A TTA batch (8 views per image) goes to ONNX Runtime at most max_batch at a time, in
    order, and comes back whole."""
    import onnxruntime

    from isbi_unet.prediction import engines

    seen = []

    class RecordingSession:
        def __init__(self, *args, **kwargs):
            pass

        def get_inputs(self):
            return [type("Input", (), {"name": "image"})()]

        def run(self, outputs, feeds):
            batch = feeds["image"]
            assert batch.flags["C_CONTIGUOUS"] and batch.dtype == np.float32
            seen.append(len(batch))
            return [batch * 2.0]

    monkeypatch.setattr(onnxruntime, "InferenceSession", RecordingSession)
    predict_fn = engines.onnx_predict_fn("unused.onnx", max_batch=8)
    batch = np.random.default_rng(0).random((20, 16, 16, 1)).astype(np.float64)[:, ::-1]
    np.testing.assert_allclose(predict_fn(batch), 2.0 * batch.astype(np.float32))
    assert seen == [8, 8, 4]
