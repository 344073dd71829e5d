"""The command line's parser: every subcommand with its options and their ranges.

:func:`build_parser` returns the parser; :func:`add_training_options` adds the options
that train, all and crossval share. Every numeric option (here and in
``benchmarks/bench.py``) is parsed by :func:`in_range`, so that a value out of range (or
NaN) is refused when the command line is read, with one ``error:`` line and exit status 2,
before anything is loaded or written. The commands themselves are in the other modules
of :mod:`isbi_unet.cli`.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

MAX_CLASSES = 12  # colours of data.COLOR_DICT, which draws multi-class predictions
MAX_SEED = 2**32 - 1  # numpy's seeds


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's one-line ``error:`` message (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def in_range(kind: type = float, low: float | None = None, high: float | None = None,
             low_open: bool = False, high_open: bool = False, multiple_of: int | None = None):
    """An argparse ``type`` parsing an int or a finite float within [low, high].

    ``low_open``/``high_open`` exclude the bound itself; ``multiple_of`` also asks for a
    multiple of it. The message of a refused value says the allowed range.
    """

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            left = "" if low is None else f"{'>' if low_open else '>='} {kind(low)}"
            right = "" if high is None else f"{'<' if high_open else '<='} {kind(high)}"
            raise argparse.ArgumentTypeError(f"must be {' and '.join(filter(None, (left, right)))}, not {text}")
        if multiple_of and value % multiple_of:
            raise argparse.ArgumentTypeError(f"must be a multiple of {multiple_of}, not {text}")
        return value

    return parse


positive_int = in_range(int, 1)
side_16 = in_range(int, 16, multiple_of=16)  # the U-Net's 4 poolings need multiples of 16


def id_list(text: str) -> list[str]:
    """Comma-separated names, e.g. "25,26": at least one, none twice."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names no image; give names such as 25,26")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{repeated[0]!r} is named twice")
    return names

DEFAULT_DATA = "data/membrane"


unit_float = in_range(float, 0.0, 1.0)
share_float = in_range(float, 0.0, 1.0, low_open=True, high_open=True)
non_negative_float = in_range(float, 0.0, 100.0)
non_negative_int = in_range(int, 0)
# segment.METHODS, spelled out so that parsing stays light (a test checks they agree)
INSTANCE_METHODS = ("threshold", "watershed", "multicut", "gasp", "learned-multicut", "split-components")
MEMBRANE_SHARE = (0.25, 0.45)  # cells.calibration.MEMBRANE_SHARE (a test checks they agree)


MASK_FOREGROUNDS = ("cell", "membrane")  # isbi_unet.io.pairs.MASK_FOREGROUNDS (a test checks they agree)


def add_mask_foreground(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mask-foreground", choices=MASK_FOREGROUNDS, default="cell",
                        help="what the binary masks' non-zero pixels are: cell (ISBI's labels: 255 = cell, 0 = membrane) "
                             "or membrane (masks drawn the other way round; they are turned round as they are read) "
                             "(default: %(default)s)")


def id_list_or_none(text: str) -> list[str]:
    """Like options.id_list; "none" is the empty list."""
    return [] if text.strip().lower() == "none" else id_list(text)


def add_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=DEFAULT_DATA, help="dataset folder with train/image and train/label (default: %(default)s)")
    parser.add_argument("--recipe", default="auto", help="auto (blog on a GPU, cpu otherwise), blog, cpu, paper, or finetune (a trained model's "
                             "--pretrained weights on a few labelled slices of one's own) (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, help="override the recipe's epochs")
    parser.add_argument("--steps-per-epoch", type=positive_int, help="override the recipe's steps per epoch")
    parser.add_argument("--batch-size", type=positive_int, help="override the recipe's batch size")
    parser.add_argument("--width", type=positive_int, help="filters of the first level (the seed: 64)")
    parser.add_argument("--depth", type=in_range(int, 1, 6), help="pooling steps of the U-Net (the seed: 4; 5 doubles the receptive field; sides must be multiples of 2**depth)")
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
    parser.add_argument("--val-ids", type=id_list, default=None, metavar="A,B,...",
                        help="selection slices: they choose the checkpoint, early stopping, the LR plateau, TTA and "
                             "thresholds (default: 20,21,22,23,24, else the last sixth of the non-test slices)")
    parser.add_argument("--test-ids", type=id_list_or_none, default=None, metavar="A,B,...|none",
                        help="test slices: never trained on, choose nothing, scored once at the end "
                             "(default: 25,26,27,28,29 when they exist, else none)")
    parser.add_argument("--target", choices=["membrane", "affinities"], default="membrane",
                        help="what the network predicts: membrane (one sigmoid, the seed's) or affinities "
                             "(short- and long-range, for the mutex watershed; no weighted loss) (default: %(default)s)")
    parser.add_argument("--num-class", type=in_range(int, 1, MAX_CLASSES), default=1, metavar="N", help=f"1: binary masks (0/255 or 0/1); N > 1 (at most {MAX_CLASSES}): integer label masks 0..N-1, softmax output")
    add_mask_foreground(parser)
    parser.add_argument("--pretrained", metavar="FILE", help="start from these weights (.keras, .weights.h5 or .h5 of the same architecture), "
                                                             "e.g. a run's unet_membrane.keras; see --recipe finetune")
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
    program = "unet" if Path(sys.argv[0]).name == "unet" else "main.py"  # the console command, or main.py
    parser = ArgumentParser(prog=program, description="U-Net for ISBI 2012 cell-membrane segmentation.")
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
    predict.add_argument("--input", default=f"{DEFAULT_DATA}/test", help="folder of images, or a multi-page TIFF stack (default: %(default)s)")
    predict.add_argument("--output", help="folder for N_predict.png, or FILE.tif: one float32 stack in the input's page order "
                                          "(default: INPUT_predictions/ beside the input folder; for a TIFF input: INPUT_predict.tif)")
    predict.add_argument("--isbi-submission", metavar="FILE.tif", help="instead of --output: the ISBI 2012 challenge's format, "
                         "a float32 stack of 30 slices of 512x512, 0 = membrane, 1 = non-membrane")
    predict.add_argument("--mode", default="auto", choices=["auto", "whole", "tile", "resize"], help="whole image, overlap-tile, or the seed's resize; auto: resize for a fixed-size model, else whole images that fit in memory, tiles otherwise (default: auto)")
    predict.add_argument("--tta", action="store_true", help="average over the 8 flips and rotations")
    predict.add_argument("--pixel-size", type=in_range(float, 0.0, 1000.0, low_open=True), metavar="NM",
                         help="nm per pixel of your images: the network sees them resampled to ISBI's 4 nm, and the maps "
                              "come back at your images' size (default: as they are)")
    predict.add_argument("--precision", choices=["default", "float32", "bfloat16", "float16"], default="default",
                         help="precision of the computation; models are saved in float32 (default: bfloat16 with --engine auto "
                              "on a CPU that computes it natively, else float32)")
    predict.add_argument("--instances", metavar="METHOD", choices=INSTANCE_METHODS,
                         help="also segment the maps into cells (N_labels.tif, N_overlay.png, cells.csv; see segment --help): "
                              "beside the maps, or for a stack output OUT.tif in the folder OUT_cells/, pages named 0, 1, ...")
    predict.add_argument("--params", metavar="FILE.json", help="parameters of the --instances method (a JSON file such as a run's "
                                                               "instance_parameters.json; default for learned-multicut: the one "
                                                               "beside --model, when there is one)")
    predict.add_argument("--mws-short-bias", type=unit_float, default=0.5, metavar="B", help="affinity models: subtracted from the 1-px affinities before the mutex watershed (default: %(default)s)")
    predict.add_argument("--mws-long-bias", type=unit_float, default=0.5, metavar="B", help="affinity models: subtracted from the long-range affinities (default: %(default)s)")
    predict.add_argument("--mws-stride", type=positive_int, default=1, metavar="N", help="affinity models: long-range edges every N px (default: %(default)s)")
    predict.add_argument("--mws-min-size", type=non_negative_int, default=0, metavar="PX", help="affinity models: segments smaller than this become boundary (default: %(default)s)")
    predict.add_argument("--engine", choices=["auto", "keras", "onnx"], default="auto",
                         help="keras: the model as saved (its precision); onnx: ONNX Runtime on a float32 "
                              "export, cached next to the model as MODEL.onnx (needs requirements-export.txt); "
                              "auto: keras in bfloat16 on a CPU that computes it natively (AVX512-BF16, AMX), else onnx on a CPU "
                              "when those packages are installed, else keras (default: %(default)s)")

    seg = commands.add_parser("segment", parents=[common], help="probability maps -> one label per cell (N_labels.tif, N_overlay.png, cells.csv)")
    seg.add_argument("--pred", required=True, help="folder of N_predict.png probability maps (high = cell), or a TIFF stack "
                                                   "of maps (its pages named 0, 1, ...)")
    seg.add_argument("--output", required=True, help="folder for N_labels.tif, N_overlay.png and cells.csv")
    seg.add_argument("--images", help="the input images, for the overlays and mean intensities: a folder of N.png, or for a "
                                      "stack of maps the stack (or folder) they were predicted from (default: the maps)")
    # default: isbi_unet.pipeline.choose.DEFAULT_INSTANCE_METHOD (not imported here: parsing stays light)
    seg.add_argument("--method", default="split-components", choices=INSTANCE_METHODS,
                     help="connected components of map > threshold, seeded watershed, watershed superpixels merged by multicut or GASP, "
                          "or by a multicut on edge costs learned from labelled maps (learned-multicut; needs --params or --fit-maps), "
                          "or components at a threshold read from the maps, split where the multicut cuts along membrane "
                          "(split-components) (default: %(default)s)")
    seg.add_argument("--params", metavar="FILE.json", help="the method's parameters (a JSON file such as a run's "
                                                           "instance_parameters.json); the options below override them")
    seg.add_argument("--fit-maps", metavar="DIR", help="learned-multicut: fit its edge model on these N_predict.png maps (or a TIFF "
                                                        "stack of maps), of slices the network did not train on (writes "
                                                        "OUTPUT/instance_parameters.json)")
    seg.add_argument("--fit-labels", metavar="DIR", help="learned-multicut: the ground truth N.png of the --fit-maps slices (or their "
                                                          "TIFF stack; 0 = membrane)")
    seg.add_argument("--threshold", type=unit_float, help="cell interior is map > this (all methods; default 0.5, split-components: "
                                                          "the median of the maps' Otsu thresholds, kept where 25-45 %% of their pixels are at or below it)")
    seg.add_argument("--sigma", type=non_negative_float, help="px, smoothing of the distance transform for the seeds (watershed, multicut, gasp)")
    seg.add_argument("--min-distance", type=positive_int, help="px, least distance between seeds (watershed, multicut, gasp)")
    seg.add_argument("--beta", type=unit_float, help="multicut boundary bias in (0, 1): higher cuts more (default 0.5; split-components "
                                                     "0.15, its costs read on the map's ranks)")
    seg.add_argument("--bias", type=unit_float, help="gasp: an edge merges while bias > its mean boundary probability (default 0.5)")
    seg.add_argument("--membrane-fraction", type=unit_float, metavar="F",
                     help="split-components: a multicut cut splits a component where at least this fraction of it lies "
                          "on membrane (map <= threshold, in pieces of at least 1000 px) (default 0.95)")
    seg.add_argument("--pixel-size", type=in_range(float, 0.0, 1000.0, low_open=True), metavar="NM",
                     help="nm per pixel of the maps: the methods' sizes in px hold at ISBI's 4 nm, so the maps are "
                          "segmented resampled to 4 nm and the cells come back at their size (default: as they are)")
    seg.add_argument("--membrane-share", type=share_float, metavar="S",
                     help="a threshold read from the maps calls this share of their pixels membrane: about 1.5 times "
                          "the membrane's share of a labelled slice (default: the median of the maps' Otsu thresholds, "
                          "kept where %g-%g of the pixels are at or below it)" % MEMBRANE_SHARE)
    seg.add_argument("--min-size", type=non_negative_int, metavar="PX",
                     help="split-components, learned-multicut: segments smaller than this join the neighbour they share most boundary with "
                          "(default 300)")
    seg.add_argument("--faint-boundary", type=unit_float, metavar="F",
                     help="split-components, learned-multicut: a segment under --min-size joins a neighbour only across "
                          "a faint boundary (a faint wall, not a cell's membrane; 0: any boundary): split-components, where "
                          "its pixels' ranks in the map average at least F times the threshold's (default 0.25); "
                          "learned-multicut, where the map along it averages at least F times the threshold (default 0.25)")
    seg.add_argument("--enclosed-boundary", type=unit_float, metavar="F",
                     help="split-components, learned-multicut: a segment enclosed by a single other one joins it only "
                          "across a faint boundary (an organelle, not a cell walled by membrane; 0: any boundary): "
                          "split-components, where the ranks of their boundary's pixels in the map average at least F "
                          "times the threshold's (default 0.5); learned-multicut, where the map along it averages at "
                          "least F times the threshold (default 0.25)")

    evaluate = commands.add_parser("evaluate", parents=[common], help="score predictions with the ISBI 2012 metric")
    scored = evaluate.add_mutually_exclusive_group(required=True)
    scored.add_argument("--pred", help="folder of N.png or N_predict.png probability maps (threshold sweep), or a TIFF stack")
    scored.add_argument("--segmentation", metavar="DIR",
                        help="folder of label images scored as they are: N_labels.tif (from segment) or N.png/N.tif, one integer id per cell, 0 = boundary "
                             "(or one colour per cell, black = boundary)")
    evaluate.add_argument("--labels", required=True, help="folder of N.png labels (255 = cell, 0 = membrane), or a TIFF stack (slices named 0, 1, ...)")
    evaluate.add_argument("--names", type=id_list, metavar="A,B,...", help="score only these names")
    evaluate.add_argument("--json", help="write the scores to this JSON file")
    add_mask_foreground(evaluate)

    check = commands.add_parser("check", parents=[common], help="check a training folder: pairs, formats, mask values, balance, duplicates")
    check.add_argument("--data", default=DEFAULT_DATA, help="dataset folder with train/image and train/label (default: %(default)s)")
    check.add_argument("--num-class", type=positive_int, default=1, metavar="N", help="1: binary masks (0/255 or 0/1); N > 1: integer label masks 0..N-1")
    add_mask_foreground(check)

    everything = commands.add_parser("all", parents=[common], help="fetch, train, choose on the selection slices, score the test slices once, cells")
    add_training_options(everything)
    everything.add_argument("--source", help="fetch ISBI 2012 from this source into --data (see fetch --help); "
                                             "without it, only the default --data is fetched into, and any other "
                                             "--data is your own folder, read and never written")
    everything.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help="test-time augmentation (8 flips and rotations) when predicting (default: on if it scores better on the selection slices)")

    crossval = commands.add_parser("crossval", parents=[common], help="k-fold cross-validation with the ISBI metric")
    add_training_options(crossval)
    crossval.add_argument("--folds", type=in_range(int, 3), default=6, help="number of blocks of consecutive slices; fold k tests on block k and selects on block k+1 (default: %(default)s)")
    crossval.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help="test-time augmentation when predicting (default: on if it scores better on each fold's selection slices)")
    compare = commands.add_parser("compare", parents=[common], help="compare finished runs: test scores, time to quality on the selection slices, mean +- sd")
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (logs/RUN) with a history.csv")
    compare.add_argument("--target", type=in_range(float, 0, 1), default=0.98, help="V_rand whose first epoch is reported (default: %(default)s)")
    compare.add_argument("--plot", metavar="FILE", help="draw the runs' per-epoch selection V_rand against minutes of training (PNG; an existing file is replaced)")
    compare.add_argument("--ymin", type=in_range(float, 0, 1, high_open=True), help="lower end of the plot's score axis, in [0, 1)")
    compare.add_argument("--json", help="write each run's figures to this JSON file")

    export = commands.add_parser("export", parents=[common], help="export a model for other tools: ONNX, TF SavedModel, bioimage.io package")
    export.add_argument("--model", required=True, help="a .keras model written by train")
    export.add_argument("--out", required=True, help="new folder to write into (must not exist)")
    export.add_argument("--formats", type=id_list, default=["onnx", "saved_model", "bioimageio"], metavar="A,B,...",
                        help="any of onnx, saved_model, bioimageio (default: all three)")
    export.add_argument("--sample", metavar="IMAGE",
                        help="image for the bioimage.io test tensors, sides multiples of 16 (default: "
                             "data/membrane/test/0.png or ../shared/data/isbi2012/test/0.png, else a synthetic one)")
    return parser
