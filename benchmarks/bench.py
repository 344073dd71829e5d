"""Speed of this repo's default CPU configuration against the seed's, in one run.

    python benchmarks/bench.py [--data data/membrane] [--width N] [--steps N] [--warmup N] [--quick]
                    [--json bench.json] [--configs default,baseline] [--precision [NAME=]P]
                    [--workers N] [--elastic PX] [--jit-compile on|off|auto] [--skip-predict]

A configuration may carry its own precision and XLA setting, ``NAME[:PRECISION][:xla|:noxla]``,
so that one run can time the same configuration twice, e.g.
``--configs default:float32,default:bfloat16`` or ``--configs default:xla,default:noxla``.

Two configurations of the same architecture (same width):

- ``default``: ``train.RECIPES["cpu"]``: its precision ("mixed", bfloat16 on a CPU), random
  256x256 crops of native-resolution slices with its aug_dict, the ``SegmentationDataset``
  PyDataset pipeline (``isbi_unet.training.dataset.make_datasets``).
- ``baseline``: the seed's way: float32, ``data.trainGenerator`` with ``BLOG_AUG_DICT``
  resizing every slice to 256x256, a Python generator fed to ``model.fit``.

For each it measures training throughput (images/s) at batch 2 and 8 three ways (the first
two alternating over ``--rounds``, their step times pooled): through
the real data path (``model.fit`` pulling batches from the PyDataset or generator); through
the same ``model.fit`` fed one fixed in-memory batch over and over, so that the difference
is the input pipeline's cost (loading, augmentation, weight maps); and with bare
``train_on_batch`` calls on that batch, the step itself (which the GFLOP/s figures use);
prediction seconds per 512x512 slice (whole, overlap-tile and the seed's resize, each with
and without test-time augmentation); the training step's achieved GFLOP/s from the
analytic FLOPs (``unet_flops``; a training step counts as 3 forward passes) and its
fraction of a dense-matmul peak measured on the same machine; and peak RSS. Each
configuration runs in a fresh process (unless ``--in-process``), so its peak RSS and
dtype policy are its own. Prints a table (with two configurations, the ratio first/second
in the last column) and writes every figure, with machine information and the command
line, to a JSON file.

A missing or malformed data folder ends with one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, when run as a script

from isbi_unet.hardware import start_backend

start_backend()

from benchmarks.flops import (  # noqa: E402
    TRAIN_PASSES,
    machine_info,
    matmul_peak,
    model_conv_flops,
    unet_flops,
)
from benchmarks.measure import CONFIGS, PREDICT_MODES, Settings, load_slices, run_config  # noqa: E402
from isbi_unet.cli.parser import ArgumentParser, in_range, positive_int
from isbi_unet.errors import UserError, exit_status
from isbi_unet.io.images import write_text
from isbi_unet.prediction.tiling import default_tiling
from isbi_unet.protocol import find_training_folders
from isbi_unet.training.dataset import DEFAULT_WORKERS
from isbi_unet.training.recipes import RECIPES, jit_compile_option
from model import unet

PRECISIONS = ("float32", "mixed", "bfloat16", "float16")


# ---------------------------------------------------------------------------- report

# (label, path into a config's figures, format, whether first/second is meaningful)
def table_rows(settings: Settings) -> list[tuple[str, tuple[str, ...], str, bool]]:
    """Rows of the printed table and of the JSON ratios."""
    rows: list[tuple[str, tuple[str, ...], str, bool]] = [
        ("dtype policy", ("dtype_policy",), "s", False),
        ("width", ("width",), "d", False),
    ]
    for batch_size in settings.batch_sizes:
        key = f"batch_{batch_size}"
        rows += [
            (f"train b{batch_size}: real data path, img/s", ("train", key, "pipeline_images_per_s"), ".3f", True),
            (f"train b{batch_size}: fit, fixed batch, img/s", ("train", key, "fit_fixed_images_per_s"), ".3f", True),
            (f"train b{batch_size}: train_on_batch, img/s", ("train", key, "fixed_images_per_s"), ".3f", True),
            (f"train b{batch_size}: pipeline overhead, %", ("train", key, "pipeline_overhead_percent"), ".1f", False),
            (f"train b{batch_size}: fit-loop overhead, %", ("train", key, "fit_overhead_percent"), ".1f", False),
            (f"train b{batch_size}: step GFLOP/s", ("train", key, "train_step_gflops"), ".1f", True),
            (f"train b{batch_size}: fraction of peak", ("train", key, "fraction_of_peak"), ".3f", True),
        ]
    for mode in PREDICT_MODES:
        for suffix, label in (("", ""), ("_tta", " + TTA")):
            rows.append((f"predict {mode}{label}, s/slice", ("predict_s_per_slice", mode + suffix), ".3f", True))
    rows.append(("peak RSS, MiB", ("peak_rss_mib",), ".0f", True))
    return rows


def lookup(figures: dict, path: Sequence[str]):
    """figures[path[0]][path[1]]...; None when absent."""
    for key in path:
        if not isinstance(figures, dict) or key not in figures:
            return None
        figures = figures[key]
    return figures


def ratios(configs: dict, settings: Settings) -> dict | None:
    """first/second config of every row where a ratio means something, nested like a
    config; None unless there are exactly two configurations."""
    if len(configs) != 2:
        return None
    first, second = configs.values()
    result: dict = {}
    for _, path, _, meaningful in table_rows(settings):
        if not meaningful:
            continue
        top, bottom = lookup(first, path), lookup(second, path)
        node = result
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = top / bottom if top is not None and bottom else None
    return result


def format_table(report: dict, settings: Settings) -> str:
    """The human-readable summary: a header, then configs as columns and the ratio last."""
    machine, flops, peaks = report["machine"], report["flops"], report["matmul_peak"]
    lines = [
        f"U-Net training/prediction benchmark: width {settings.width}, training at "
        f"{settings.train_size[0]}x{settings.train_size[1]}, prediction slices "
        f"{settings.predict_size[0]}x{settings.predict_size[1]} (tile {settings.tile_size}, margin "
        f"{settings.tile_margin}); medians of {settings.steps} steps after {settings.warmup} warm-up",
        f"machine: {machine['cpu']['model']}, {machine['cores_available']} cores; keras "
        f"{machine['keras']} ({machine['backend']}), tensorflow {machine['tensorflow']}",
        f"forward {flops['forward_gflop_per_image']:.3f} GFLOP/image; training step = "
        f"{TRAIN_PASSES} x forward = {flops['train_gflop_per_image']:.3f} GFLOP/image",
        "matmul peak (n=" + str(settings.matmul_n) + "): " + ", ".join(
            f"{dtype} {figures['gflops']:.1f} GFLOP/s" for dtype, figures in peaks.items()),
        "",
    ]
    names = list(report["configs"])
    ratio = report["ratio"]
    header = ["", *names] + (["/".join(names)] if ratio else [])
    body = []
    for label, path, fmt, meaningful in table_rows(settings):
        cells = [label]
        for name in names:
            value = lookup(report["configs"][name], path)
            cells.append("-" if value is None else format(value, fmt))
        if ratio:
            value = lookup(ratio, path) if meaningful else None
            cells.append("-" if value is None else f"{value:.2f}x")
        body.append(cells)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    for row in [header, *body]:
        lines.append("  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))
    return "\n".join(lines)


# ----------------------------------------------------------------------- command line

def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, not {text!r}") from error
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, not {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="benchmarks/bench.py",
        description="Training and prediction speed of the default CPU configuration against the seed's.")
    parser.add_argument("--data", default="data/membrane", help="dataset folder with train/image and train/label (default: %(default)s)")
    parser.add_argument("--configs", default="default,baseline", help="configurations to run, comma-separated, each NAME[:PRECISION][:xla|:noxla] (default: %(default)s)")
    parser.add_argument("--width", type=positive_int, help=f"filters of the first level, both configs (default: the cpu recipe's {RECIPES['cpu'].width}; --quick: 4)")
    parser.add_argument("--batch-sizes", type=int_list, help="training batch sizes (default: 2,8)")
    parser.add_argument("--steps", type=positive_int, help="timed training steps per measurement (default: 10; --quick: 2)")
    parser.add_argument("--rounds", type=positive_int, help="alternations of real-data and fixed-batch fits, each of --steps timed steps (default: 3; --quick: 1)")
    parser.add_argument("--warmup", type=positive_int, help="untimed steps before them (default: 3; --quick: 1)")
    parser.add_argument("--size", type=positive_int, help="side of the training crops / resized slices (default: 256; --quick: 64)")
    parser.add_argument("--predict-size", type=positive_int, help="side of the prediction slices (default: 512; --quick: 64)")
    parser.add_argument("--slices", type=positive_int, help="prediction slices timed per mode (default: 3; --quick: 2)")
    parser.add_argument("--matmul-n", type=positive_int, help="side of the peak matmul (default: 4096; --quick: 256)")
    parser.add_argument("--matmul-repeats", type=positive_int, help="timed matmuls (default: 5; --quick: 3)")
    parser.add_argument("--precision", action="append", default=[], metavar="[NAME=]PREC",
                        help="precision (float32, mixed, bfloat16, float16) of one config (NAME=PREC) or of all; repeatable")
    parser.add_argument("--workers", type=positive_int, default=DEFAULT_WORKERS, help="PyDataset workers of the default config (default: %(default)s)")
    parser.add_argument("--elastic", type=in_range(float, 0), metavar="PX", help="the default config's elastic deformation: grid std in px (default: the cpu recipe's, 10; 0: off)")
    parser.add_argument("--jit-compile", choices=["on", "off", "auto"], help="XLA compilation of the training step, all configs (default: each recipe's)")
    parser.add_argument("--skip-predict", action="store_true", help="time training only")
    parser.add_argument("--seed", type=in_range(int, 0, 2**32 - 1), default=1, help="seed of weights, data order and augmentation (default: %(default)s)")
    parser.add_argument("--json", default="bench.json", help="where to write the figures (default: %(default)s)")
    parser.add_argument("--in-process", action="store_true", help="run the configs in this process (peak RSS is then cumulative)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test (about 30 s)")
    return parser


def parse_precisions(items: Sequence[str], names: Sequence[str]) -> dict[str, str | None]:
    """``--precision`` values -> {config: precision or None (the recipe's)}."""
    chosen: dict[str, str | None] = {name: None for name in names}
    for item in items:
        name, _, precision = item.rpartition("=")
        if precision not in PRECISIONS:
            raise UserError(f"--precision {item}: precision must be one of {', '.join(PRECISIONS)}")
        if name and name not in CONFIGS:
            raise UserError(f"--precision {item}: unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
        for target in ([name] if name else names):
            if target in chosen:
                chosen[target] = precision
    return chosen


def parse_configs(text: str, precision_options: Sequence[str]) -> dict[str, tuple[str, str | None, bool | None]]:
    """``--configs`` -> {spec: (configuration, precision, jit_compile)}.

    A spec is NAME[:PRECISION][:xla|:noxla]. Its precision overrides ``--precision``;
    None means the recipe's (or ``--jit-compile``'s) choice.
    """
    specs = [spec.strip() for spec in text.split(",") if spec.strip()]
    if not specs:
        raise UserError("--configs: name at least one configuration")
    if len(set(specs)) != len(specs):
        raise UserError(f"--configs: a configuration is named twice in {text!r}")
    names = [spec.split(":")[0] for spec in specs]
    for name in names:
        if name not in CONFIGS:
            raise UserError(f"--configs: unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
    chosen = parse_precisions(precision_options, sorted(set(names)))
    result = {}
    for spec, name in zip(specs, names):
        precision, jit = chosen[name], None
        for option in spec.split(":")[1:]:
            if option in PRECISIONS:
                precision = option
            elif option in ("xla", "noxla"):
                jit = option == "xla"
            else:
                raise UserError(f"--configs {spec}: {option!r} is neither a precision "
                                f"({', '.join(PRECISIONS)}) nor xla/noxla")
        result[spec] = (name, precision, jit)
    return result


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Explicit options, else the --quick sizes, else the full-size defaults."""
    quick = args.quick

    def pick(value, full, small):
        return value if value is not None else (small if quick else full)

    size = pick(args.size, 256, 64)
    predict_size = pick(args.predict_size, 512, 64)
    tile_size, tile_margin = (64, 16) if quick else default_tiling()
    return Settings(
        data_dir=args.data, width=pick(args.width, RECIPES["cpu"].width, 4),
        train_size=(size, size), predict_size=(predict_size, predict_size),
        batch_sizes=pick(args.batch_sizes, (2, 8), (2, 8)),
        warmup=pick(args.warmup, 3, 1), steps=pick(args.steps, 10, 2),
        predict_slices=pick(args.slices, 3, 2), tile_size=tile_size, tile_margin=tile_margin,
        matmul_n=pick(args.matmul_n, 4096, 256), matmul_repeats=pick(args.matmul_repeats, 5, 3),
        workers=args.workers, seed=args.seed, in_process=args.in_process, quick=quick,
        elastic=args.elastic, skip_predict=args.skip_predict, rounds=pick(args.rounds, 3, 1),
        jit_compile=jit_compile_option(args.jit_compile),
    )


def check_inputs(settings: Settings) -> None:
    """Fail early, before any timing, on missing data or impossible sizes."""
    step = 2**4
    if settings.train_size[0] % step or settings.predict_size[0] % step:
        raise UserError(f"--size and --predict-size must be multiples of {step}")
    find_training_folders(settings.data_dir)
    load_slices(settings)


def run(argv: Sequence[str], command: str) -> dict:
    """Measure everything, print the table, write the JSON; returns the report."""
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    specs = parse_configs(args.configs, args.precision)
    check_inputs(settings)

    flops = unet_flops(settings.width, size=settings.train_size)
    layer_walk = model_conv_flops(unet(input_size=(*settings.train_size, 1), width=settings.width, compile=False))
    if layer_walk != flops:
        raise RuntimeError(f"unet_flops ({flops}) and the layer walk ({layer_walk}) disagree")
    peaks = {dtype: matmul_peak(settings.matmul_n, settings.matmul_repeats, dtype)
             for dtype in ("float32", "bfloat16")}
    configs = {}
    for spec, (name, precision, jit) in specs.items():
        print(f"measuring {spec} ...", file=sys.stderr, flush=True)
        own = settings if jit is None else dataclasses.replace(settings, jit_compile=jit)
        configs[spec] = run_config(name, precision, own, peaks)
    report = {
        "command": command,
        "argv": list(argv),
        "machine": machine_info(),
        "settings": asdict(settings),
        "flops": {
            "width": settings.width,
            "size": list(settings.train_size),
            "forward_flop_per_image": flops,
            "forward_gflop_per_image": flops / 1e9,
            "layer_walk_forward_gflop_per_image": layer_walk / 1e9,
            "train_passes": TRAIN_PASSES,
            "train_gflop_per_image": TRAIN_PASSES * flops / 1e9,
        },
        "matmul_peak": peaks,
        "configs": configs,
        "ratio": ratios(configs, settings),
        "ratio_definition": "first / second configuration of each figure (times: below 1 means the first is faster)",
    }
    print(format_table(report, settings))
    if args.json:
        write_text(args.json, json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 on success, 2 with one ``error:`` line on a user mistake."""
    if argv is None:
        argv, command = sys.argv[1:], shlex.join(getattr(sys, "orig_argv", sys.argv))
    else:
        command = shlex.join(["benchmarks/bench.py", *argv])
    return exit_status(run, list(argv), command)


if __name__ == "__main__":
    sys.exit(main())
