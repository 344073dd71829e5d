"""Prediction time of the engines on this machine: Keras in bfloat16 mixed precision, Keras
in float32, ONNX Runtime (float32 export).

    python benchmarks/engines.py [--model M.keras] [--slices 8] [--rounds 3] [--json FILE]

Without --model, a width-16 U-Net with random weights built under mixed_bfloat16, as the
cpu recipe trains it (timing does not depend on the weights). Each round times every
engine in turn (interleaved, so a busy machine slows all alike) on the same slices,
whole and with the 8-view test-time augmentation, batches of 4 slices as ``predict_folder``
does; the figures are medians over rounds of seconds per slice. Also reported: the
largest absolute difference of each engine's output from Keras float32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from isbi_unet.export.formats import export_onnx, float32_model
from isbi_unet.io.images import list_images, read_image
from isbi_unet.network import downsampling_factor, load_model, with_precision
from isbi_unet.prediction.engines import onnx_predict_fn
from isbi_unet.prediction.predict import model_predict_fn
from isbi_unet.prediction.tiling import predict_whole_batch
from isbi_unet.prediction.tta import with_tta
from model import unet

BATCH = 4


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def random_bf16_model() -> keras.Model:
    """unet(width=16) with random weights under mixed_bfloat16 (the cpu recipe's network)."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(1)
        return unet(input_size=(None, None, 1), width=16, head_activation="elu", compile=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def load_slices(count: int) -> np.ndarray:
    """(count, 512, 512, 1) float32 in [0, 1]: ISBI test slices, else synthetic noise."""
    for folder in (ROOT / "data/membrane/test", ROOT.parent / "shared/data/isbi2012/test"):
        if folder.is_dir():
            paths = list_images(folder)[:count]
            return np.stack([read_image(path) for path in paths]) / np.float32(255)
    return np.random.default_rng(0).random((count, 512, 512, 1), np.float32)


def predict_all(images: np.ndarray, predict_fn, tta: bool, factor: int) -> np.ndarray:
    """All images, BATCH at a time, as predict_folder's whole mode does: (N, H, W, K)."""
    network = with_tta(predict_fn) if tta else predict_fn
    return np.concatenate([predict_whole_batch(images[i:i + BATCH], network, factor)
                           for i in range(0, len(images), BATCH)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help=".keras model (default: random width-16, mixed_bfloat16)")
    parser.add_argument("--slices", type=positive_int, default=8, help="512x512 slices per measurement (default: %(default)s)")
    parser.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args(argv)

    model = load_model(args.model) if args.model else random_bf16_model()
    factor = downsampling_factor(model)
    float_model = float32_model(model)
    bfloat16_model = with_precision(float_model, "mixed_bfloat16")
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = export_onnx(float_model, Path(folder) / "unet.onnx", factor)
        engines = {"keras bfloat16": model_predict_fn(bfloat16_model),
                   "keras float32": model_predict_fn(float_model),
                   "onnxruntime float32": onnx_predict_fn(onnx_path)}
        images = load_slices(args.slices)
        for fn in engines.values():  # warm-up: graph tracing, session start
            predict_all(images[:1], fn, True, factor)
        times = {name: {"whole": [], "tta": []} for name in engines}
        outputs = {}
        for round_index in range(args.rounds):
            for name, fn in engines.items():
                for mode in ("whole", "tta"):
                    start = time.perf_counter()
                    outputs[name, mode] = predict_all(images, fn, mode == "tta", factor)
                    times[name][mode].append((time.perf_counter() - start) / len(images))
                print(f"round {round_index + 1}/{args.rounds} {name}: whole {times[name]['whole'][-1]:.3f} s, "
                      f"TTA {times[name]['tta'][-1]:.3f} s per slice", flush=True)
    report = {"slices": len(images), "shape": list(images.shape[1:]), "rounds": args.rounds,
              "model": args.model or "random unet(width=16), mixed_bfloat16", "cpu_count": os.cpu_count(),
              "engines": {}}
    for name in engines:
        report["engines"][name] = {
            "seconds_per_slice_whole": statistics.median(times[name]["whole"]),
            "seconds_per_slice_tta": statistics.median(times[name]["tta"]),
            "all_seconds_per_slice_whole": times[name]["whole"],
            "all_seconds_per_slice_tta": times[name]["tta"],
            "max_abs_difference_from_keras_float32": {
                mode: float(np.abs(outputs[name, mode] - outputs["keras float32", mode]).max())
                for mode in ("whole", "tta")},
        }
    print(f"{'engine':<22} {'whole s/slice':>14} {'TTA s/slice':>12} {'30 slices TTA':>14} {'max |diff| vs float32':>22}")
    for name, row in report["engines"].items():
        print(f"{name:<22} {row['seconds_per_slice_whole']:>14.3f} {row['seconds_per_slice_tta']:>12.3f} "
              f"{30 * row['seconds_per_slice_tta']:>13.1f}s {row['max_abs_difference_from_keras_float32']['tta']:>22.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
