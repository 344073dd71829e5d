"""The ``train``, ``all`` and ``crossval`` commands: a recipe from the options, then the pipeline."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from isbi_unet.cli.parser import DEFAULT_DATA
from isbi_unet.errors import UserError

if TYPE_CHECKING:
    from isbi_unet.pipeline.run import TrainingRun


def recipe_from_args(args):
    import dataclasses

    from isbi_unet.training.recipes import NEEDS_PRETRAINED, jit_compile_option, resolve_recipe

    if args.recipe in NEEDS_PRETRAINED and not args.pretrained:
        raise UserError(f"recipe {args.recipe!r} fine-tunes a trained model: give its weights with --pretrained "
                        "(e.g. logs/RUN/unet_membrane.keras)")
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


def training_run(args, recipe) -> "TrainingRun":
    from isbi_unet.pipeline.run import TrainingRun
    from isbi_unet.progress import interactive
    from isbi_unet.training.dataset import DEFAULT_WORKERS

    return TrainingRun(args.data, run_dir_for(args, recipe), select_ids=args.val_ids, test_ids=args.test_ids,
                       seed=args.seed, workers=args.workers or DEFAULT_WORKERS,
                       verbose=0 if args.quiet else 1 if interactive() else 2,
                       num_class=args.num_class, pretrained_weights=args.pretrained, distribute=args.distribute,
                       model_path=getattr(args, "out", None), mask_foreground=args.mask_foreground)


def prepare_training(args):
    """(recipe, TrainingRun) of the training options, after checking the training folder
    (isbi_unet/io/check.py; a folder of two stacks is read as their pages, see
    isbi_unet/io/stack_pairs.py) and splitting the CPU if asked."""
    from isbi_unet.io.check import require_clean
    from isbi_unet.io.stack_pairs import pages_of_stacks

    args.data = str(pages_of_stacks(args.data, args.logs))  # a folder of image.tif + label.tif: their pages
    require_clean(args.data, num_class=args.num_class, mask_foreground=args.mask_foreground)
    if args.cpu_devices:
        from isbi_unet.training.distribute import split_cpu

        split_cpu(args.cpu_devices)
    recipe = recipe_from_args(args)
    run = training_run(args, recipe)
    print(f"Training recipe {recipe.name!r} ({describe(recipe)}); logs in {run.run_dir}")
    return recipe, run


def cmd_train(args) -> dict:
    from isbi_unet.pipeline.run import train_run

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


def cmd_all(args) -> int:
    """The main job: fetch, train with the machine's default, choose on the selection
    slices, score the test slices once, predict the unlabelled images of DATA/test.

    ISBI 2012 is fetched into the default data folder, or where ``--source`` asks; any
    other ``--data`` is the user's own folder, which is read and never written: its pairs
    are split by the usual rules and everything goes to the run folder.
    """
    from isbi_unet.io.fetch import fetch_isbi
    from isbi_unet.io.images import write_text
    from isbi_unet.pipeline.choose import png_picture
    from isbi_unet.pipeline.run import train_and_score
    from isbi_unet.prediction.predict import predict_folder

    started = time.monotonic()
    if args.source or Path(args.data).resolve() == Path(DEFAULT_DATA).resolve():
        fetch_isbi(args.source, args.data, verify=True, progress=not args.quiet)
    summary, network = train_and_score(*prepare_training(args), tta=args.tta, progress=not args.quiet)
    run_dir = Path(summary["run_dir"])
    unlabelled = Path(args.data) / "test"
    written = []
    if unlabelled.is_dir():
        written = predict_folder(network, unlabelled, run_dir / "test_predictions", tta=summary["selection"]["tta"],
                                 progress=not args.quiet, picture=png_picture(network))
        summary["test_predictions"] = str(run_dir / "test_predictions")
    summary["total_seconds"] = time.monotonic() - started
    write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    predicted = f"wrote {len(written)} predictions of {unlabelled} to {run_dir / 'test_predictions'}; " if written else ""
    print(f"Done: {predicted}total {summary['total_seconds'] / 60:.1f} min; summary in {run_dir / 'summary.json'}")
    return 0


def cmd_crossval(args) -> dict:
    """Nested k-fold cross-validation (see pipeline.crossval)."""
    from isbi_unet.pipeline.run import crossval

    if args.val_ids or args.test_ids is not None:
        raise UserError("crossval chooses the selection and test slices of each fold itself; drop --val-ids/--test-ids")
    if not args.run:
        args.run = f"{time.strftime('%Y%m%d-%H%M%S')}-crossval"
    recipe, run = prepare_training(args)
    return crossval(recipe, run, args.folds, tta=args.tta, progress=not args.quiet)
