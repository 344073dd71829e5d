"""Command line: fetch the data, train, predict, evaluate, or all of it in one go.

    python main.py fetch   [--source DIR_OR_URL] [--dest data/membrane]
    python main.py train   [--data data/membrane] [--recipe NAME] [--epochs N] ...
    python main.py predict --model FILE.keras [--input DIR] [--output DIR]
    python main.py evaluate --pred DIR --labels DIR [--json FILE]
    python main.py all     (fetch, train, predict, evaluate with the machine's default)
    python main.py crossval --folds 6 [training options]
    python main.py compare logs/RUN1 logs/RUN2 ... [--plot FILE]

A mistake in the input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from errors import UserError, exit_status
from options import MAX_CLASSES, MAX_SEED, ArgumentParser, id_list, in_range, positive_int, side_16

DEFAULT_DATA = "data/membrane"


def add_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=DEFAULT_DATA, help="dataset folder with train/image and train/label (default: %(default)s)")
    parser.add_argument("--recipe", default="auto", help="auto (blog on a GPU, cpu otherwise), blog, cpu or paper (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, help="override the recipe's epochs")
    parser.add_argument("--steps-per-epoch", type=positive_int, help="override the recipe's steps per epoch")
    parser.add_argument("--batch-size", type=positive_int, help="override the recipe's batch size")
    parser.add_argument("--width", type=positive_int, help="filters of the first level (the seed: 64)")
    parser.add_argument("--patch-size", type=side_16, metavar="N", help="side of the random training crops, a multiple of 16 (default: 256)")
    parser.add_argument("--resize", type=side_16, metavar="N", help="the seed's way instead of crops: resize every slice to NxN, N a multiple of 16 (predictions are resized back)")
    parser.add_argument("--lr", type=in_range(float, 0, low_open=True), help="override the recipe's Adam learning rate (> 0)")
    parser.add_argument("--weighted-loss", action=argparse.BooleanOptionalAction, default=None, help="the paper's border-weighted loss, w0=10, sigma=5 px (default: the recipe's; on for cpu and paper)")
    parser.add_argument("--elastic", type=in_range(float, 0), metavar="PX", help="elastic deformation: std of the 3x3 grid displacements in px (the paper: 10; 0: off)")
    parser.add_argument("--monitor", choices=["val_loss", "val_v_rand", "val_v_info"], help="what picks the best checkpoint (default: the recipe's, val_loss)")
    parser.add_argument("--head", choices=["relu", "elu"], help="activation of the 2-filter layer before the sigmoid (the seed: relu; default: the recipe's, elu for cpu and paper)")
    parser.add_argument("--ema", type=in_range(float, 0, 1, high_open=True), metavar="MOMENTUM", help="validate and save a moving average of the weights with this momentum (default: the recipe's, 0.99 for cpu and paper; 0: off)")
    parser.add_argument("--jit-compile", choices=["auto", "on", "off"], help="XLA compilation of the training step (default: auto)")
    parser.add_argument("--precision", choices=["float32", "mixed", "bfloat16", "float16"], help="override the recipe's precision")
    parser.add_argument("--time-limit", type=in_range(float, 0), metavar="MIN", help="stop training after this many minutes (0: no limit)")
    parser.add_argument("--val-ids", type=id_list, default=None, metavar="A,B,...", help="held-out image names (default: 25,26,27,28,29)")
    parser.add_argument("--num-class", type=in_range(int, 1, MAX_CLASSES), default=1, metavar="N", help=f"1: binary masks (0/255 or 0/1); N > 1 (at most {MAX_CLASSES}): integer label masks 0..N-1, softmax output")
    parser.add_argument("--pretrained", metavar="FILE", help="start from these weights (.keras, .weights.h5 or .h5 of the same architecture)")
    parser.add_argument("--seed", type=in_range(int, 0, MAX_SEED), default=1, help="seed of initialisation, data order and augmentation (default: %(default)s)")
    parser.add_argument("--run", help="run name: logs go to LOGS/RUN (default: date-time-recipe)")
    parser.add_argument("--logs", default="logs", help="folder of the runs' logs (default: %(default)s)")
    parser.add_argument("--workers", type=positive_int, help="threads that prepare training batches (default: train.DEFAULT_WORKERS, 2)")
    parser.add_argument("--distribute", choices=["none", "mirrored", "multiworker"], default="none",
                        help="data-parallel training: mirrored over the local GPUs (or --cpu-devices), "
                             "multiworker over machines (TensorFlow, TF_CONFIG); --batch-size is the global batch (default: none)")
    parser.add_argument("--cpu-devices", type=positive_int, metavar="N",
                        help="split the CPU into N logical devices (to try --distribute mirrored without GPUs)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="main.py", description="U-Net for ISBI 2012 cell-membrane segmentation.")
    common = ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars (for scripts)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fetch = commands.add_parser("fetch", parents=[common], help="fetch and verify the ISBI 2012 data")
    fetch.add_argument("--source", help="a folder (PNG layout or TIFF stacks) or an http(s) URL (default: $UNET_DATA_SOURCE, ../shared/data/isbi2012, or the public mirror)")
    fetch.add_argument("--dest", default=DEFAULT_DATA, help="where to put it (default: %(default)s)")
    fetch.add_argument("--no-verify", action="store_true", help="skip the SHA-256 checks (TIFF stacks whose pixels differ)")

    train = commands.add_parser("train", parents=[common], help="train a U-Net")
    add_training_options(train)
    train.add_argument("--out", help="model file, .keras (default: LOGS/RUN/unet_membrane.keras)")

    predict = commands.add_parser("predict", parents=[common], help="predict masks at each image's native size")
    predict.add_argument("--model", required=True, help="a .keras model written by train")
    predict.add_argument("--input", default=f"{DEFAULT_DATA}/test", help="folder of images (default: %(default)s)")
    predict.add_argument("--output", default=f"{DEFAULT_DATA}/test", help="folder for N_predict.png (default: %(default)s)")
    predict.add_argument("--mode", default="auto", choices=["auto", "whole", "tile", "resize"], help="whole image, overlap-tile, or the seed's resize (default: auto)")
    predict.add_argument("--tta", action="store_true", help="average over the 8 flips and rotations")

    evaluate = commands.add_parser("evaluate", parents=[common], help="score predictions with the ISBI 2012 metric")
    evaluate.add_argument("--pred", required=True, help="folder of N.png or N_predict.png probability maps")
    evaluate.add_argument("--labels", required=True, help="folder of N.png labels (255 = cell, 0 = membrane)")
    evaluate.add_argument("--names", type=id_list, metavar="A,B,...", help="score only these names")
    evaluate.add_argument("--json", help="write the scores to this JSON file")

    everything = commands.add_parser("all", parents=[common], help="fetch, train, predict the held-out and test slices, evaluate")
    add_training_options(everything)
    everything.add_argument("--source", help="data source for fetch (see fetch --help)")
    everything.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True, help="test-time augmentation (8 flips and rotations) when predicting (default: on)")

    crossval = commands.add_parser("crossval", parents=[common], help="k-fold cross-validation with the ISBI metric")
    add_training_options(crossval)
    crossval.add_argument("--folds", type=in_range(int, 2), default=6, help="number of folds of consecutive slices (default: %(default)s)")
    crossval.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True, help="test-time augmentation when predicting (default: on)")
    compare = commands.add_parser("compare", parents=[common], help="compare finished runs: held-out scores, time to quality, mean +- sd")
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (logs/RUN) with a history.csv")
    compare.add_argument("--target", type=in_range(float, 0, 1), default=0.98, help="V_rand whose first epoch is reported (default: %(default)s)")
    compare.add_argument("--plot", metavar="FILE", help="draw the runs' held-out V_rand against minutes of training (PNG; an existing file is replaced)")
    compare.add_argument("--ymin", type=in_range(float, 0, 1, high_open=True), help="lower end of the plot's score axis, in [0, 1)")
    compare.add_argument("--json", help="write each run's figures to this JSON file")
    return parser


def recipe_from_args(args):
    import dataclasses

    from train import jit_compile_option, resolve_recipe

    recipe = resolve_recipe(args.recipe).replace(
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
        width=args.width, learning_rate=args.lr, precision=args.precision,
        weighted_loss=args.weighted_loss, monitor=args.monitor, head_activation=args.head,
        jit_compile=jit_compile_option(args.jit_compile))
    if args.ema is not None:
        recipe = dataclasses.replace(recipe, ema_momentum=args.ema or None)
    if args.elastic is not None:
        recipe = recipe.replace(aug_dict=dict(recipe.aug_dict, elastic_sigma=args.elastic))
    if args.resize:
        recipe = dataclasses.replace(recipe, target_size=(args.resize, args.resize), patch_size=None)
    if args.patch_size:
        if recipe.target_size:
            raise UserError(f"recipe {recipe.name!r} resizes whole slices: set their size with --resize, not --patch-size")
        recipe = recipe.replace(patch_size=(args.patch_size, args.patch_size))
    if args.num_class > 1 and not args.weighted_loss:  # the weight map is for binary masks
        recipe = dataclasses.replace(recipe, weighted_loss=False)
    if args.time_limit is not None:  # 0 lifts the recipe's limit
        recipe = dataclasses.replace(recipe, time_limit_minutes=args.time_limit or None)
    return recipe


def run_dir_for(args, recipe) -> Path:
    return Path(args.logs) / (args.run or f"{time.strftime('%Y%m%d-%H%M%S')}-{recipe.name}")


def cmd_fetch(args) -> int:
    from fetch import fetch_isbi

    fetch_isbi(args.source, args.dest, verify=not args.no_verify, progress=not args.quiet)
    return 0


def cmd_train(args) -> dict:
    from data import DEFAULT_VALIDATION_IDS
    from train import DEFAULT_WORKERS, train

    if args.cpu_devices:
        from distribute import split_cpu

        split_cpu(args.cpu_devices)
    recipe = recipe_from_args(args)
    run_dir = run_dir_for(args, recipe)
    verbose = 0 if args.quiet else 1
    print(f"Training recipe {recipe.name!r} ({describe(recipe)}); logs in {run_dir}")
    result = train(args.data, recipe, run_dir, model_path=getattr(args, "out", None),
                   validation_ids=args.val_ids or DEFAULT_VALIDATION_IDS,
                   seed=args.seed, workers=args.workers or DEFAULT_WORKERS, verbose=verbose,
                   num_class=args.num_class, pretrained_weights=args.pretrained,
                   distribute=args.distribute)
    best = min(result.history.get("val_loss", [float("nan")]))
    print(f"Trained {len(result.history.get('loss', []))} epochs in {result.seconds / 60:.1f} min; "
          f"best val_loss {best:.4f}; model: {result.model_path}")
    return {"recipe": recipe.name, "run_dir": str(result.run_dir), "model": str(result.model_path),
            "train_seconds": result.seconds, "epochs": len(result.history.get("loss", [])),
            "best_val_loss": best, "validation_names": result.validation_names}


def describe(recipe) -> str:
    size = f"crops {recipe.patch_size[0]}x{recipe.patch_size[1]}" if recipe.patch_size else f"resized to {recipe.target_size[0]}x{recipe.target_size[1]}"
    limit = f", at most {recipe.time_limit_minutes:g} min" if recipe.time_limit_minutes else ""
    ema = f", weight average {recipe.ema_momentum:g}" if recipe.ema_momentum else ""
    return (f"width {recipe.width}, batch {recipe.batch_size}, {recipe.steps_per_epoch} steps x "
            f"{recipe.epochs} epochs, {size}, lr {recipe.learning_rate:g}, {recipe.precision}, "
            f"{recipe.head_activation} head{ema}{limit}")


def cmd_predict(args) -> list:
    from model import load_model
    from predict import predict_folder

    network = load_model(args.model)
    written = predict_folder(network, args.input, args.output, mode=args.mode, tta=args.tta,
                             progress=not args.quiet)
    print(f"Wrote {len(written)} predictions to {args.output}")
    return written


def cmd_evaluate(args) -> dict:
    from metrics import evaluate_folders

    scores = evaluate_folders(args.pred, args.labels, names=args.names, json_path=args.json,
                              progress=not args.quiet)
    print_scores(scores)
    return scores


def print_scores(scores: dict) -> None:
    print(f"V_rand {scores['v_rand']:.4f} (threshold {scores['v_rand_threshold']:.1f})  "
          f"V_info {scores['v_info']:.4f} (threshold {scores['v_info_threshold']:.1f})  "
          f"pixel error {scores['pixel_error']:.4f}  Dice {scores['dice']:.4f}  "
          f"({len(scores['per_slice'])} slices)")


SCORE_KEYS = ("v_rand", "v_info", "v_rand_threshold", "v_info_threshold", "pixel_error", "dice")


def train_and_score(args) -> tuple[dict, object]:
    """Train as ``train`` does, then predict the held-out slices and score them.

    Returns (summary, best model); the summary gains "validation" (ISBI scores).
    """
    from metrics import evaluate_folders
    from model import load_model
    from predict import predict_folder
    from train import find_training_folders

    summary = cmd_train(args)
    run_dir = Path(summary["run_dir"])
    network = load_model(summary["model"])
    image_dir, label_dir = find_training_folders(args.data)
    val_dir = run_dir / "val_predictions"
    predict_folder(network, image_dir, val_dir, tta=args.tta, names=summary["validation_names"],
                   progress=not args.quiet)
    scores = evaluate_folders(val_dir, label_dir, names=summary["validation_names"],
                              json_path=run_dir / "validation_scores.json", progress=not args.quiet)
    print("Held-out slices " + ",".join(summary["validation_names"]) + ":")
    print_scores(scores)
    summary["validation"] = {key: scores[key] for key in SCORE_KEYS}
    return summary, network


def cmd_all(args) -> int:
    """The main job: fetch, train with the machine's default, predict, evaluate."""
    from fetch import fetch_isbi
    from predict import predict_folder

    started = time.monotonic()
    fetch_isbi(args.source, args.data, verify=True, progress=not args.quiet)
    summary, network = train_and_score(args)
    run_dir = Path(summary["run_dir"])
    test_dir = run_dir / "test_predictions"
    written = predict_folder(network, Path(args.data) / "test", test_dir, tta=args.tta, progress=not args.quiet)
    summary.update(total_seconds=time.monotonic() - started, test_predictions=str(test_dir))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"Wrote {len(written)} test predictions to {test_dir}; total {summary['total_seconds'] / 60:.1f} min; "
          f"summary in {run_dir / 'summary.json'}")
    return 0


def cmd_crossval(args) -> dict:
    """k-fold cross-validation: train once per fold of consecutive slices, report mean +- sd."""
    import copy

    import numpy as np

    from data import list_images
    from train import find_training_folders

    image_dir, _ = find_training_folders(args.data)
    names = [path.stem for path in list_images(image_dir)]
    if args.folds > len(names):
        raise UserError(f"--folds {args.folds}: more folds than training images ({len(names)})")
    folds = [list(chunk) for chunk in np.array_split(names, args.folds)]
    base = args.run or f"{time.strftime('%Y%m%d-%H%M%S')}-crossval"
    results = []
    for index, held_out in enumerate(folds):
        fold_args = copy.copy(args)
        fold_args.val_ids, fold_args.run = held_out, f"{base}/fold{index + 1}"
        print(f"Fold {index + 1}/{len(folds)}: holding out {','.join(held_out)}")
        summary, _ = train_and_score(fold_args)
        results.append(summary)
    report = {"folds": results}
    for key in ("v_rand", "v_info", "pixel_error", "dice"):
        values = np.array([fold["validation"][key] for fold in results])
        report[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)), "values": values.tolist()}
    path = Path(args.logs) / base / "crossval.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"{len(folds)}-fold cross-validation: V_rand {report['v_rand']['mean']:.4f} +- {report['v_rand']['sd']:.4f}, "
          f"V_info {report['v_info']['mean']:.4f} +- {report['v_info']['sd']:.4f}; details in {path}")
    return report


def cmd_compare(args) -> list:
    """Print a table of finished runs (and mean +- sd), optionally plot and save them."""
    import dataclasses

    from runs import comparison_table, summarize_run

    for path in (args.plot, args.json):
        if path and Path(path).is_dir():
            raise UserError(f"{path}: is a folder; give a file name")
    summaries = [summarize_run(run_dir, target=args.target) for run_dir in args.runs]
    names = [run.name for run in summaries]
    if len(set(names)) < len(names):  # e.g. crossval's fold1 of two experiments: use the paths
        for run, path in zip(summaries, args.runs):
            run.name = str(path)
    if args.plot and not all(run.history.get("minutes") and run.history.get("val_v_rand") for run in summaries):
        raise UserError("--plot needs per-epoch val_v_rand and minutes in every run's history.csv")
    print(comparison_table(summaries, target=args.target))
    if args.plot:
        from plots import plot_runs_time_to_quality

        plot_runs_time_to_quality({run.name: run.history for run in summaries}, args.plot,
                                  target=args.target, ymin=args.ymin)
        print(f"Wrote {args.plot}")
    if args.json:
        fields = [{key: value for key, value in dataclasses.asdict(run).items() if key != "history"}
                  for run in summaries]
        from images import write_text

        write_text(args.json, json.dumps(fields, indent=2))
    return summaries


def needs_keras(args) -> bool:
    """Whether a command imports Keras: compare never, fetch and evaluate for progress bars only."""
    if args.command == "compare":
        return False
    return not (args.command in ("fetch", "evaluate") and args.quiet)


COMMANDS = {"fetch": cmd_fetch, "train": cmd_train, "predict": cmd_predict,
            "evaluate": cmd_evaluate, "all": cmd_all, "crossval": cmd_crossval, "compare": cmd_compare}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if needs_keras(args):
        from startup import start_backend

        start_backend()
    return exit_status(COMMANDS[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
