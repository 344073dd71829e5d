"""Choose mutex-watershed parameters on selection slices, then score test slices once.

    python benchmarks/affinity_eval.py --model logs/RUN/unet_membrane.keras --data DIR \\
        --select 20,21,22,23,24 --test 25,26,27,28,29 [--tta] [--json scores.json]

The affinity model predicts every named slice of DIR (train/image, train/label); each
grid point of (short bias, long bias, min size) is scored with the official
foreground-restricted V_rand on the selection slices only; the best one segments the
test slices, which are scored once. The same network's 1-px affinities, thresholded the
official way (threshold chosen on the selection slices, Fiji's thinning), are scored
beside it as "threshold". With ``--membrane-maps DIR`` a membrane model's
``N_predict.png`` maps are scored the same way (threshold chosen on the selection
slices, Fiji's thinning) for comparison.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, when run as a script

from isbi_unet.errors import UserError, exit_status

SHORT_BIASES = (0.3, 0.5, 0.7)
LONG_BIASES = (0.3, 0.5, 0.7, 0.9)
MIN_SIZES = (0, 25)
# The official sweep's 0.1 .. 0.9, and two higher ones: a well-trained network's 1-px
# affinities are near 1 inside cells, and 0.9 was the best of the coarse grid.
THRESHOLDS = (*np.round(np.arange(0.1, 1.0, 0.1), 1), 0.95, 0.98)


def mean_scores(segmentations: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> tuple[float, float]:
    """(V_rand, V_info): slice means of the official scores of (H, W) segmentations
    (0 = boundary) against (H, W) labels (0 = membrane, 255 = cell)."""
    from isbi_unet.evaluation.slice_scores import (
        foreground_restricted_scores,
        ground_truth_segments,
    )

    pairs = [foreground_restricted_scores(ground_truth_segments(label), seg)
             for seg, label in zip(segmentations, labels)]
    return float(np.mean([p[0] for p in pairs])), float(np.nanmean([p[1] for p in pairs]))


def choose_and_test(select: Sequence, test: Sequence, select_labels, test_labels, segment, grid) -> dict:
    """Pick the grid point with the best mean V_rand of ``segment(x, point)`` on the
    selection inputs; score the test inputs once with it."""
    trials = []
    for point in grid:
        v_rand, v_info = mean_scores([segment(x, point) for x in select], select_labels)
        trials.append({"parameters": point, "select_v_rand": v_rand, "select_v_info": v_info})
    best = max(trials, key=lambda trial: trial["select_v_rand"])
    start = time.perf_counter()
    segmentations = [segment(x, best["parameters"]) for x in test]
    seconds = (time.perf_counter() - start) / len(test)
    v_rand, v_info = mean_scores(segmentations, test_labels)
    return {"chosen": best, "test_v_rand": v_rand, "test_v_info": v_info,
            "seconds_per_test_slice": seconds, "trials": trials}


def read_slices(folder: Path, names: Sequence[str]) -> list[np.ndarray]:
    from isbi_unet.io.images import read_image

    return [read_image(folder / f"{name}.png")[..., 0] for name in names]


def evaluate_affinity_model(model_path: str, data_dir: str, select: list[str], test: list[str],
                            tta: bool = False, cell_maps_dir: str | None = None) -> dict:
    """Mutex watershed (grid chosen on ``select``) and thresholded 1-px affinities of an
    affinity model's (H, W, K) predictions, scored once on ``test``; optionally write the
    cell maps (H, W) = min over the 1-px affinities as 8-bit ``N_predict.png``."""
    from isbi_unet.cells.mutex_watershed import mws_segmentation
    from isbi_unet.evaluation.slice_scores import thin_segmentation
    from isbi_unet.network import load_model
    from isbi_unet.prediction.predict import affinity_offsets, predict_image
    from isbi_unet.protocol import find_training_folders

    image_dir, label_dir = find_training_folders(data_dir)
    network = load_model(model_path)
    offsets = affinity_offsets(network)
    if offsets is None:
        raise UserError(f"{model_path}: not an affinity model (train one with --target affinities)")
    start = time.perf_counter()
    maps = {name: predict_image(network, image[..., None] / 255.0, tta=tta)
            for name, image in zip(select + test, read_slices(image_dir, select + test))}
    predict_seconds = (time.perf_counter() - start) / len(maps)

    def segment(affinities, point):
        short_bias, long_bias, min_size = point
        return mws_segmentation(affinities, offsets, short_bias=short_bias, long_bias=long_bias,
                                min_size=min_size)

    select_labels, test_labels = read_slices(label_dir, select), read_slices(label_dir, test)
    grid = list(itertools.product(SHORT_BIASES, LONG_BIASES, MIN_SIZES))
    result = choose_and_test([maps[n] for n in select], [maps[n] for n in test], select_labels, test_labels,
                             segment, grid)
    short = [k for k, offset in enumerate(offsets) if max(abs(v) for v in offset) <= 1]
    cell_maps = {name: affinities[..., short].min(axis=-1) for name, affinities in maps.items()}
    if cell_maps_dir:
        from isbi_unet.io.images import to_uint8, write_image

        Path(cell_maps_dir).mkdir(parents=True, exist_ok=True)
        for name, cell_map in cell_maps.items():
            write_image(Path(cell_maps_dir) / f"{name}_predict.png", to_uint8(cell_map))
    threshold = choose_and_test([cell_maps[n] for n in select], [cell_maps[n] for n in test], select_labels,
                                test_labels, thin_segmentation, list(THRESHOLDS))
    return {"model": model_path, "tta": tta, "select": select, "test": test,
            "predict_seconds_per_slice": predict_seconds, **result, "threshold": threshold}


def evaluate_membrane_maps(maps_dir: str, data_dir: str, select: list[str], test: list[str]) -> dict:
    """A membrane model's 8-bit ``N_predict.png`` maps thresholded (threshold chosen on
    ``select``, Fiji's thinning), scored once on ``test``."""
    from isbi_unet.evaluation.slice_scores import as_probability, thin_segmentation
    from isbi_unet.protocol import find_training_folders

    _, label_dir = find_training_folders(data_dir)
    folder = Path(maps_dir)
    # as_probability: an 8-bit map read as the metric reads it (float32 level / 255).
    maps = {name: as_probability(read_slices(folder, [f"{name}_predict"])[0]) for name in select + test}
    result = choose_and_test([maps[n] for n in select], [maps[n] for n in test],
                             read_slices(label_dir, select), read_slices(label_dir, test),
                             thin_segmentation, list(THRESHOLDS))
    return {"maps": maps_dir, "select": select, "test": test, **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="an affinity model (.keras, train --target affinities)")
    parser.add_argument("--membrane-maps", help="folder of a membrane model's N_predict.png maps")
    parser.add_argument("--data", required=True, help="dataset folder with train/image and train/label")
    parser.add_argument("--select", required=True, help="names that choose the parameters, A,B,...")
    parser.add_argument("--test", required=True, help="names scored once, A,B,...")
    parser.add_argument("--tta", action="store_true", help="affinities averaged over 8 flips and turns")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--cell-maps", help="folder for the affinity model's cell maps (N_predict.png)")
    args = parser.parse_args(argv)
    select, test = args.select.split(","), args.test.split(",")

    def run() -> int:
        if set(select) & set(test):
            raise UserError("--select and --test must not share a slice")
        report = {}
        if args.model:
            report["affinities"] = evaluate_affinity_model(args.model, args.data, select, test, args.tta,
                                                            args.cell_maps)
        if args.membrane_maps:
            report["membrane"] = evaluate_membrane_maps(args.membrane_maps, args.data, select, test)
        shown = dict(report)
        if "affinities" in report:
            shown["1-px affinities thresholded"] = report["affinities"]["threshold"]
        for kind, result in shown.items():
            print(f"{kind}: chosen {result['chosen']['parameters']} (select V_rand "
                  f"{result['chosen']['select_v_rand']:.4f}); test V_rand {result['test_v_rand']:.4f}, "
                  f"V_info {result['test_v_info']:.4f}; {result['seconds_per_test_slice']:.2f} s/slice")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2, default=float))
        return 0

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
