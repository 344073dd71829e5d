"""Score the 6 folds of ``benchmarks/train_folds_gpu.sh`` as ``main.py crossval`` does.

    python benchmarks/score_folds.py --weights DIR --out logs/h200-s3

``DIR`` holds ``fold1.weights.h5`` ... ``fold6.weights.h5`` (the `cpu` recipe's network in
float32). Fold k tests on block k (slices 5k-5 ... 5k-1 of ISBI) and selects on the next
block (the first for fold 6), as ``main.py crossval --folds 6`` splits them. Each fold's
model is rebuilt and saved as ``OUT/foldK/unet_membrane.keras``; its selection block
chooses TTA, the thresholds and the cells' parameters (fitting the learned multicut's edge
model), and its test block is scored once (:func:`isbi_unet.pipeline.run.score_run`):
``OUT/foldK/summary.json`` and the files of a run folder, which
``benchmarks/shifts.py --params OUT/foldK/instance_parameters.json`` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fold_split(data_dir: str | Path, fold: int, folds: int = 6) -> tuple[list[str], list[str]]:
    """(test, selection) slice names of ``fold`` (1..folds), as ``main.py crossval`` splits
    the training images of ``data_dir``: fold k tests on block k and selects on the next."""
    from isbi_unet.io.images import list_images
    from isbi_unet.protocol import consecutive_folds, find_training_folders

    image_dir, _ = find_training_folders(data_dir)
    blocks = consecutive_folds([path.stem for path in list_images(image_dir)], folds)
    return blocks[fold - 1], blocks[fold % folds]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True, help="folder of foldK.weights.h5")
    parser.add_argument("--data", default="data/membrane", help="ISBI layout with train/image, train/label")
    parser.add_argument("--out", type=Path, required=True, help="one run folder per fold goes here")
    parser.add_argument("--folds", default="1,2,3,4,5,6", help="comma-separated folds to score")
    args = parser.parse_args(argv)

    import keras

    from isbi_unet.pipeline.run import score_run
    from isbi_unet.training.loop import build_model
    from isbi_unet.training.recipes import RECIPES

    for fold in [int(k) for k in args.folds.split(",")]:
        run_dir = args.out / f"fold{fold}"
        run_dir.mkdir(parents=True, exist_ok=True)
        model_path = run_dir / "unet_membrane.keras"
        if not model_path.exists():
            weights = args.weights / f"fold{fold}.weights.h5"
            build_model(RECIPES["cpu"].replace(precision="float32"), pretrained_weights=weights).save(model_path)
        test, selection = fold_split(args.data, fold)
        print(f"fold {fold}: test {','.join(test)}, selection {','.join(selection)}")
        report = score_run(keras.models.load_model(model_path, compile=False), args.data, run_dir,
                           selection, test, progress=False)
        (run_dir / "summary.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
