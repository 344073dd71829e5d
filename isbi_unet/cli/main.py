"""Command line: fetch the data, train, predict, evaluate, or all of it in one go.

``unet SUBCOMMAND`` (the console script of ``pip install -e .``) and
``python main.py SUBCOMMAND`` run :func:`main`:

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

import sys

from isbi_unet.cli.parser import build_parser
from isbi_unet.cli.prediction import cmd_predict, cmd_segment
from isbi_unet.cli.tools import (
    cmd_check,
    cmd_compare,
    cmd_evaluate,
    cmd_export,
    cmd_fetch,
)
from isbi_unet.cli.training import cmd_all, cmd_crossval, cmd_train
from isbi_unet.errors import exit_status


def needs_keras(args) -> bool:
    """Whether a command imports Keras: compare never; fetch, evaluate and segment only for
    progress bars on a terminal (isbi_unet.progress)."""
    if args.command == "compare":
        return False
    if args.command in ("fetch", "evaluate", "segment"):
        from isbi_unet.progress import interactive

        return not args.quiet and interactive()
    return True


# The paths each command writes: (option's attribute, option, "file" / "folder" / "any").
OUTPUTS = {
    "fetch": [("dest", "--dest", "folder")],
    "train": [("out", "--out", "file"), ("logs", "--logs", "folder")],
    "all": [("logs", "--logs", "folder")],
    "crossval": [("logs", "--logs", "folder")],
    "predict": [("output", "--output", "any"), ("isbi_submission", "--isbi-submission", "file")],
    "segment": [("output", "--output", "folder")],
    "evaluate": [("json", "--json", "file")],
    "compare": [("json", "--json", "file"), ("plot", "--plot", "file")],
    "export": [("out", "--out", "folder")],
}


def check_outputs(args) -> None:
    """One ``error:`` line for an output path that cannot be written, before any work."""
    from isbi_unet.io.images import writable_path

    for attribute, option, kind in OUTPUTS.get(args.command, []):
        if getattr(args, attribute, None):
            writable_path(getattr(args, attribute), option, kind)


COMMANDS = {"fetch": cmd_fetch, "train": cmd_train, "predict": cmd_predict,
            "evaluate": cmd_evaluate, "segment": cmd_segment, "check": cmd_check, "all": cmd_all,
            "crossval": cmd_crossval, "compare": cmd_compare, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; 0 on success, 2 (one ``error:`` line on stderr) on bad input."""
    args = build_parser().parse_args(argv)
    if needs_keras(args):
        from isbi_unet.hardware import start_backend

        start_backend()
    return exit_status(run_command, args)


def run_command(args):
    """Check the command's output paths, then run it."""
    check_outputs(args)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
