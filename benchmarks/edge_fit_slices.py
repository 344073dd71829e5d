"""Which slices should the learned multicut's edge model be fitted on? Measured on the folds of a crossval run.

    python benchmarks/edge_fit_slices.py --crossval logs/RUN --data data/membrane [--json FILE]

For every fold of a finished ``main.py crossval`` run, the edge model
(``isbi_unet.cells.parameters.fit_edge_model``) is fitted three ways:

* ``selection``: on the selection block's maps, as the runs do (5 slices the network
  never trained on);
* ``selection+training``: on those and the fold model's maps of its own 20 training
  slices (cleaner than maps of unseen slices, but 5 times as many edges);
* ``training``: on the training slices' maps alone.

The training slices' maps are predicted here by the fold's model, with the TTA choice its
selection block made, in float32 as the pipeline predicts, and cached as 8-bit
``N_predict.png`` in ``FOLD/train_slice_predictions[_tta]``. Each model segments the
fold's test block once with the learned multicut's fixed parameters
(``isbi_unet.cells.parameters.DEFAULT_PARAMETERS``); no test slice is used for any fit. Prints per-fold test
V_rand / V_info and the means over all folds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from segmentation_table import crossval_folds, read_fold  # noqa: E402

from isbi_unet.cells import parameters as cell_parameters
from isbi_unet.errors import UserError, exit_status
from isbi_unet.evaluation.metric import segmentation_scores

FITS = ("selection", "selection+training", "training")


def training_slice_maps(fold_dir: Path, fold: dict[str, Any], image_dir: Path) -> Path:
    """The folder of the fold model's 8-bit maps of its training slices, predicted once."""
    tta = bool(fold["selection"]["tta"])
    out = fold_dir / ("train_slice_predictions_tta" if tta else "train_slice_predictions")
    missing = [name for name in fold["train_names"] if not (out / f"{name}_predict.png").is_file()]
    if missing:
        from isbi_unet.io.images import read_image, to_uint8, write_image
        from isbi_unet.network import load_model
        from isbi_unet.prediction.predict import predict_image

        network = load_model(fold_dir / "unet_membrane.keras")
        out.mkdir(exist_ok=True)
        for name in missing:
            image = read_image(image_dir / f"{name}.png")[..., :1] / 255.0
            write_image(out / f"{name}_predict.png", to_uint8(predict_image(network, image, tta=tta)[..., 0]))
    return out


def fold_scores(crossval_dir: Path, data_dir: Path) -> list[dict[str, Any]]:
    """Per fold: test V_rand / V_info of the learned multicut for each way of fitting."""
    report = json.loads((crossval_dir / "crossval.json").read_text())
    labels_dir = data_dir / "train" / "label"
    fixed = {k: v for k, v in cell_parameters.DEFAULT_PARAMETERS["learned-multicut"].items() if k != "edge_model"}
    superpixels = {k: fixed[k] for k in ("threshold", "sigma", "min_distance")}
    rows = []
    for fold, record in zip(crossval_folds(crossval_dir), report["folds"]):
        train_dir = training_slice_maps(crossval_dir / f"fold{fold['fold']}", record, data_dir / "train" / "image")
        sel_maps, sel_labels = read_fold(fold["selection_maps"], labels_dir, fold["selection_names"])
        train_maps, train_labels = read_fold(train_dir, labels_dir, record["train_names"])
        test_maps, test_labels = read_fold(fold["test_maps"], labels_dir, fold["test_names"])
        fit_sets = {"selection": (sel_maps, sel_labels),
                    "selection+training": (sel_maps + train_maps, sel_labels + train_labels),
                    "training": (train_maps, train_labels)}
        row: dict[str, Any] = {"fold": fold["fold"], "test_names": fold["test_names"]}
        for fit, (maps, labels) in fit_sets.items():
            model = cell_parameters.fit_edge_model(maps, labels, **superpixels)
            params = {**fixed, "edge_model": model}
            cells = [cell_parameters.segment(prob, "learned-multicut", params) for prob in test_maps]
            scores = segmentation_scores(cells, test_labels)
            row[fit] = {"v_rand": scores["v_rand"], "v_info": scores["v_info"]}
        print(f"fold {row['fold']}: " + ", ".join(f"{fit} {row[fit]['v_rand']:.4f} / {row[fit]['v_info']:.4f}"
                                                  for fit in FITS), flush=True)
        rows.append(row)
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per way of fitting: mean and sample sd of V_rand and V_info over the folds."""
    out = {}
    for fit in FITS:
        v_rand = np.array([row[fit]["v_rand"] for row in rows])
        v_info = np.array([row[fit]["v_info"] for row in rows])
        out[fit] = {"v_rand": float(v_rand.mean()), "v_rand_sd": float(v_rand.std(ddof=1)) if len(rows) > 1 else 0.0,
                    "v_info": float(v_info.mean())}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crossval", required=True, type=Path, help="folder of a finished main.py crossval run")
    parser.add_argument("--data", required=True, type=Path, help="dataset folder with train/image and train/label")
    parser.add_argument("--json", type=Path, help="write per-fold figures and means here")
    args = parser.parse_args(argv)

    def run() -> int:
        if not (args.crossval / "crossval.json").is_file():
            raise UserError(f"{args.crossval}: no crossval.json (give the folder of a finished crossval run)")
        if not (args.data / "train" / "label").is_dir():
            raise UserError(f"{args.data}: no train/label folder")
        rows = fold_scores(args.crossval, args.data)
        means = summary(rows)
        print("| edge model fitted on | V_rand | V_info |\n|---|---|---|")
        for fit, figures in means.items():
            print(f"| {fit} | {figures['v_rand']:.4f} ± {figures['v_rand_sd']:.4f} | {figures['v_info']:.4f} |")
        if args.json:
            args.json.write_text(json.dumps({"folds": rows, "means": means}, indent=2))
        return 0

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
