"""Command line: fetch the data, train, predict, evaluate, or all of it in one go.

    python main.py fetch   [--source DIR_OR_URL] [--dest data/membrane]
    python main.py train   [--data data/membrane] [--recipe NAME] [--epochs N] ...
    python main.py predict --model FILE.keras [--input DIR] [--output DIR]
    python main.py evaluate --pred DIR --labels DIR [--json FILE]
    python main.py check   [--data data/membrane]   (the training data's problems, before training)
    python main.py segment --pred DIR --output DIR [--method watershed] [--params FILE.json]
    python main.py all     (fetch, train, choose on the selection slices, score the test slices once)
    python main.py crossval --folds 6 [training options]   (nested: train, select, test blocks)
    python main.py compare logs/RUN1 logs/RUN2 ... [--plot FILE]
    python main.py export  --model FILE.keras --out DIR   (ONNX, SavedModel, bioimage.io)

A mistake in the input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from cli_parser import DEFAULT_DATA, build_parser
from errors import UserError, exit_status


def recipe_from_args(args):
    import dataclasses

    from recipes import jit_compile_option, resolve_recipe

    recipe = resolve_recipe(args.recipe).replace(
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
        width=args.width, depth=args.depth, learning_rate=args.lr, precision=args.precision,
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
    step = 2**recipe.depth
    for side in (recipe.patch_size or ()) + (recipe.target_size or ()):
        if side % step:
            raise UserError(f"a U-Net of depth {recipe.depth} takes sides that are multiples of {step}, not {side} "
                            "(change --patch-size, --resize or --depth)")
    if args.num_class > 1 and not args.weighted_loss:  # the weight map is for binary masks
        recipe = dataclasses.replace(recipe, weighted_loss=False)
    if args.target == "affinities":
        if args.weighted_loss or args.num_class > 1 or (args.monitor or "").startswith("val_v_"):
            raise UserError("--target affinities takes binary masks, the unweighted loss and --monitor val_loss")
        recipe = dataclasses.replace(recipe, target="affinities", weighted_loss=False)
    if args.time_limit is not None:  # 0 lifts the recipe's limit
        recipe = dataclasses.replace(recipe, time_limit_minutes=args.time_limit or None)
    return recipe


def run_dir_for(args, recipe) -> Path:
    return Path(args.logs) / (args.run or f"{time.strftime('%Y%m%d-%H%M%S')}-{recipe.name}")


def cmd_fetch(args) -> int:
    from fetch import fetch_isbi

    fetch_isbi(args.source, args.dest, verify=not args.no_verify, progress=not args.quiet)
    return 0


def training_run(args, recipe) -> "TrainingRun":
    from pipeline import TrainingRun
    from train import DEFAULT_WORKERS

    return TrainingRun(args.data, run_dir_for(args, recipe), select_ids=args.val_ids, test_ids=args.test_ids,
                       seed=args.seed, workers=args.workers or DEFAULT_WORKERS, verbose=0 if args.quiet else 1,
                       num_class=args.num_class, pretrained_weights=args.pretrained, distribute=args.distribute,
                       model_path=getattr(args, "out", None))


def prepare_training(args):
    """(recipe, TrainingRun) of the training options, after checking the training folder
    (check.py) and splitting the CPU if asked."""
    from check import require_clean

    require_clean(args.data, num_class=args.num_class)
    if args.cpu_devices:
        from distribute import split_cpu

        split_cpu(args.cpu_devices)
    recipe = recipe_from_args(args)
    run = training_run(args, recipe)
    print(f"Training recipe {recipe.name!r} ({describe(recipe)}); logs in {run.run_dir}")
    return recipe, run


def cmd_train(args) -> dict:
    from pipeline import train_run

    summary = train_run(*prepare_training(args))
    best = summary["best_val_loss"]
    print(f"Trained {summary['epochs']} epochs in {summary['train_seconds'] / 60:.1f} min; best val_loss "
          f"{'none' if best is None else f'{best:.4f}'} on selection slices {','.join(summary['selection_names'])}; "
          f"model: {summary['model']}")
    return summary


def describe(recipe) -> str:
    size = f"crops {recipe.patch_size[0]}x{recipe.patch_size[1]}" if recipe.patch_size else f"resized to {recipe.target_size[0]}x{recipe.target_size[1]}"
    limit = f", at most {recipe.time_limit_minutes:g} min" if recipe.time_limit_minutes else ""
    ema = f", weight average {recipe.ema_momentum:g}" if recipe.ema_momentum else ""
    elastic = recipe.aug_dict.get("elastic_sigma")
    size += f", elastic {elastic:g} px" if elastic else ""
    depth = f", depth {recipe.depth}" if recipe.depth != 4 else ""
    return (f"width {recipe.width}{depth}, batch {recipe.batch_size}, {recipe.steps_per_epoch} steps x "
            f"{recipe.epochs} epochs, {size}, lr {recipe.learning_rate:g}, {recipe.precision}, "
            f"{recipe.head_activation} head{ema}{limit}, target {recipe.target}")


def cmd_predict(args) -> list:
    from export import cached_onnx, onnx_predict_fn, resolve_engine, resolve_precision
    from model import load_model
    from predict import predict_folder
    from stacks import is_tiff_file

    if args.params and not args.instances:
        raise UserError("--params needs --instances METHOD")
    if args.isbi_submission and args.output:
        raise UserError("give either --output or --isbi-submission, not both")
    if args.isbi_submission and not is_tiff_file(args.isbi_submission):
        raise UserError(f"--isbi-submission {args.isbi_submission}: give a .tif file name")
    stack_output = args.isbi_submission or (args.output if args.output and is_tiff_file(args.output) else None)
    if is_tiff_file(args.input) and not stack_output:
        if args.output:
            raise UserError(f"--output {args.output}: the predictions of a TIFF stack go to a stack; give a .tif file name")
        stack_output = str(Path(args.input).with_name(Path(args.input).stem + "_predict.tif"))
    if stack_output and args.instances:
        raise UserError("--instances writes label images per file; predict a folder of images, not a TIFF stack")
    params = instance_parameters(args.instances, args.params, {}) if args.instances else None
    predict_fn = None
    if resolve_engine(args.engine) == "onnx":
        # Before the model is loaded here: the export runs in a child process, and this
        # process should not hold a second copy meanwhile.
        try:
            predict_fn = onnx_predict_fn(cached_onnx(args.model))
        except UserError:
            if args.engine == "onnx":
                raise  # auto: Keras when the ONNX file cannot be written beside the model
    network = load_model(args.model, precision=resolve_precision(args.engine, args.precision))
    if args.instances and network.output_shape[-1] != 1:
        raise UserError("--instances needs a model with one output channel (cell probability), not --num-class > 1")
    if stack_output:
        from streaming import predict_to_stack

        predict_to_stack(network, args.input, stack_output, mode=args.mode, tta=args.tta,
                         progress=not args.quiet, isbi_submission=bool(args.isbi_submission),
                         predict_fn=predict_fn)
        print(f"Wrote the prediction stack {stack_output}")
        return [Path(stack_output)]
    output = args.output or f"{DEFAULT_DATA}/test"
    mws = dict(short_bias=args.mws_short_bias, long_bias=args.mws_long_bias,
               long_stride=args.mws_stride, min_size=args.mws_min_size)
    written = predict_folder(network, args.input, output, mode=args.mode, tta=args.tta,
                             progress=not args.quiet, mws=mws, predict_fn=predict_fn)
    print(f"Wrote {len(written)} predictions to {output}")
    if args.instances:
        from instances import segment_folder

        names = [Path(path).stem.removesuffix("_predict") for path in written]
        labels = segment_folder(output, output, args.instances, params, images_dir=args.input,
                                names=names, progress=not args.quiet)
        print(f"Wrote {len(labels)} label images ({args.instances}) and cells.csv to {output}")
    return written


def instance_parameters(method: str, params_file: str | None, overrides: dict, fitting: bool = False) -> dict:
    """The method's parameters: defaults, then the JSON file, then the command-line options.
    A learned method needs its edge model from the file unless it is ``fitting`` one."""
    import segment

    params: dict = {}
    if params_file:
        try:
            params = segment.load_parameters(params_file, method)
        except (OSError, ValueError) as exc:
            raise UserError(f"--params {params_file}: {exc}") from exc
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        checked = segment.check_parameters(method, {**params, **given})
        if not fitting:
            segment.require_edge_model(method, checked)
        return checked
    except ValueError as exc:
        raise UserError(f"{exc}: see segment --help") from exc


def cmd_segment(args) -> list:
    from instances import segment_folder

    import segment

    overrides = {key: getattr(args, key) for key in ("threshold", "sigma", "min_distance", "beta", "bias")}
    fitting = args.fit_maps is not None
    if fitting != (args.fit_labels is not None):
        raise UserError("--fit-maps and --fit-labels go together")
    if fitting and args.method not in segment.LEARNED_METHODS:
        raise UserError(f"--fit-maps fits the edge model of {', '.join(segment.LEARNED_METHODS)}; "
                        f"--method {args.method} has none")
    if fitting and args.params:
        raise UserError("give either --params (a fitted edge model) or --fit-maps/--fit-labels, not both")
    params = instance_parameters(args.method, args.params, overrides, fitting=fitting)
    if fitting:
        from instances import fit_edge_model_on_folders

        params = {**params, "edge_model": fit_edge_model_on_folders(args.fit_maps, args.fit_labels, params,
                                                                     progress=not args.quiet)}
    written = segment_folder(args.pred, args.output, args.method, params, images_dir=args.images,
                             progress=not args.quiet)
    if fitting:
        segment.save_parameters({"method": args.method, "parameters": params},
                                Path(args.output) / "instance_parameters.json")
    print(f"Wrote {len(written)} label images ({args.method}, {segment.describe_parameters(params)}) "
          f"and cells.csv to {args.output}" + (" with the fitted parameters in instance_parameters.json" if fitting else ""))
    return written


def cmd_evaluate(args) -> dict:
    from metrics import evaluate_folders, evaluate_segmentation_folders
    from stacks import is_tiff_file

    if args.segmentation:
        scores = evaluate_segmentation_folders(args.segmentation, args.labels, names=args.names,
                                               json_path=args.json, progress=not args.quiet)
        print(f"V_rand {scores['v_rand']:.4f}  V_info {scores['v_info']:.4f}  "
              f"({len(scores['per_slice'])} slices, label images as they are)")
    elif is_tiff_file(args.pred) or is_tiff_file(args.labels):
        from stacks import evaluate_stacks

        scores = evaluate_stacks(args.pred, args.labels, names=args.names, json_path=args.json,
                                 progress=not args.quiet)
        print_scores(scores)
    else:
        scores = evaluate_folders(args.pred, args.labels, names=args.names, json_path=args.json,
                                  progress=not args.quiet)
        print_scores(scores)
    print_score_parts(scores)
    return scores


def cmd_check(args) -> object:
    from check import check_dataset

    report = check_dataset(args.data, num_class=args.num_class, progress=not args.quiet)
    print(report.summary())
    if report.problems:
        raise UserError(f"{args.data}: {len(report.problems)} problem(s) listed above; fix them before training")
    return report


def print_scores(scores: dict) -> None:
    print(f"V_rand {scores['v_rand']:.4f} (threshold {scores['v_rand_threshold']:.1f})  "
          f"V_info {scores['v_info']:.4f} (threshold {scores['v_info_threshold']:.1f})  "
          f"pixel error {scores['pixel_error']:.4f}  Dice {scores['dice']:.4f}  "
          f"({len(scores['per_slice'])} slices)")


def print_score_parts(scores: dict) -> None:
    """The split and merge parts (isbi_slice_scores.foreground_restricted_parts); lower score = more errors."""
    def fmt(key: str) -> str:
        return "nan" if scores[key] is None else f"{scores[key]:.4f}"

    print(f"  splits: V_rand_split {fmt('v_rand_split')}  V_info_split {fmt('v_info_split')}  "
          f"H(S|T) {fmt('h_seg_given_gt')} nats")
    print(f"  merges: V_rand_merge {fmt('v_rand_merge')}  V_info_merge {fmt('v_info_merge')}  "
          f"H(T|S) {fmt('h_gt_given_seg')} nats")


def cmd_all(args) -> int:
    """The main job: fetch, train with the machine's default, choose on the selection
    slices, score the test slices once, predict the challenge's test images."""
    from fetch import fetch_isbi
    from pipeline import train_and_score
    from predict import predict_folder

    started = time.monotonic()
    fetch_isbi(args.source, args.data, verify=True, progress=not args.quiet)
    summary, network = train_and_score(*prepare_training(args), tta=args.tta, progress=not args.quiet)
    run_dir = Path(summary["run_dir"])
    test_dir = run_dir / "test_predictions"
    written = predict_folder(network, Path(args.data) / "test", test_dir, tta=summary["selection"]["tta"],
                             progress=not args.quiet)
    summary.update(total_seconds=time.monotonic() - started, test_predictions=str(test_dir))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"Wrote {len(written)} predictions of the challenge's test images to {test_dir}; total "
          f"{summary['total_seconds'] / 60:.1f} min; summary in {run_dir / 'summary.json'}")
    return 0


def cmd_crossval(args) -> dict:
    """Nested k-fold cross-validation (see pipeline.crossval)."""
    from pipeline import crossval

    if args.val_ids or args.test_ids is not None:
        raise UserError("crossval chooses the selection and test slices of each fold itself; drop --val-ids/--test-ids")
    if not args.run:
        args.run = f"{time.strftime('%Y%m%d-%H%M%S')}-crossval"
    recipe, run = prepare_training(args)
    return crossval(recipe, run, args.folds, tta=args.tta, progress=not args.quiet)


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


def cmd_export(args) -> dict:
    """Write the model as ONNX, TF SavedModel and a bioimage.io package into a new folder."""
    from export import export_model

    sample, source = None, ""
    if args.sample:
        import numpy as np

        from data import read_image

        sample, source = read_image(args.sample).round().astype(np.uint8), Path(args.sample).name
    written = export_model(args.model, args.out, formats=args.formats, sample=sample,
                           sample_source=source, progress=not args.quiet)
    for fmt, path in written.items():
        print(f"{fmt}: {path}")
    return written


def needs_keras(args) -> bool:
    """Whether a command imports Keras: compare never, fetch and evaluate for progress bars only."""
    if args.command == "compare":
        return False
    return not (args.command in ("fetch", "evaluate") and args.quiet)


COMMANDS = {"fetch": cmd_fetch, "train": cmd_train, "predict": cmd_predict,
            "evaluate": cmd_evaluate, "segment": cmd_segment, "check": cmd_check, "all": cmd_all,
            "crossval": cmd_crossval, "compare": cmd_compare, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if needs_keras(args):
        from startup import start_backend

        start_backend()
    return exit_status(COMMANDS[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
