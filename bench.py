"""Speed of this repo's default CPU configuration against the seed's, in one run.

    python bench.py [--data data/membrane] [--width N] [--steps N] [--warmup N] [--quick]
                    [--json bench.json] [--configs default,baseline] [--precision [NAME=]P]
                    [--workers N] [--elastic PX] [--jit-compile on|off|auto] [--skip-predict]

A configuration may carry its own precision and XLA setting, ``NAME[:PRECISION][:xla|:noxla]``,
so that one run can time the same configuration twice, e.g.
``--configs default:float32,default:bfloat16`` or ``--configs default:xla,default:noxla``.

Two configurations of the same architecture (same width):

- ``default``: ``train.RECIPES["cpu"]``: its precision ("mixed", bfloat16 on a CPU), random
  256x256 crops of native-resolution slices with its aug_dict, the ``SegmentationDataset``
  PyDataset pipeline (``train.make_datasets``).
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
import concurrent.futures
import dataclasses
import datetime
import json
import multiprocessing
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from data import list_images, read_image, trainGenerator  # noqa: E402
from errors import UserError, exit_status  # noqa: E402
from model import downsampling_factor, unet  # noqa: E402
from predict import (  # noqa: E402
    default_tiling,
    model_predict_fn,
    predict_overlap_tile,
    predict_resized,
    predict_whole,
    with_tta,
)
from recipes import RECIPES, Recipe, jit_compile_option, set_precision  # noqa: E402
from train import (  # noqa: E402
    DEFAULT_WORKERS,
    build_model,
    find_training_folders,
    load_training_data,
    make_datasets,
)

CONFIGS = ("default", "baseline")
PRECISIONS = ("float32", "mixed", "bfloat16", "float16")
PREDICT_MODES = ("whole", "tile", "resize")
TRAIN_PASSES = 3  # a training step costs about 3 forward passes (forward + 2x backward)


# ------------------------------------------------------------------------------ FLOPs

def unet_flops(width: int, depth: int = 4, size: tuple[int, int] = (256, 256),
               in_channels: int = 1) -> int:
    """Forward FLOPs of one image through ``model.unet`` (num_class 1), analytically.

    Sums 2 * H * W * k * k * Cin * Cout (a multiply-add counts as 2 FLOPs) over every
    Conv2D, at that convolution's output resolution; biases, activations, pooling,
    upsampling and dropout are left out. 109,211,549,696 for the seed (width 64, 256x256).
    """
    height, width_px = size
    step = 2**depth
    if height % step or width_px % step:
        raise ValueError(f"size {size} must be multiples of {step}")

    def conv(level: int, kernel: int, cin: int, cout: int) -> int:
        return 2 * (height >> level) * (width_px >> level) * kernel * kernel * cin * cout

    total, channels = 0, in_channels
    for level in range(depth + 1):  # encoder levels, then the bottleneck
        filters = width * 2**level
        total += conv(level, 3, channels, filters) + conv(level, 3, filters, filters)
        channels = filters
    for level in reversed(range(depth)):  # upsample + 2x2 conv, concat, two 3x3 convs
        filters = width * 2**level
        total += conv(level, 2, channels, filters)
        total += conv(level, 3, 2 * filters, filters) + conv(level, 3, filters, filters)
        channels = filters
    total += conv(0, 3, channels, 2) + conv(0, 1, 2, 1)  # head_conv, probability
    return total


def model_conv_flops(model: keras.Model) -> int:
    """Forward FLOPs of one image through a built model's Conv2D layers.

    Walks the layers: 2 * Hout * Wout * kh * kw * Cin * Cout each, with Cin and the kernel
    from the layer's kernel and Hout, Wout from its output shape (which must be static).
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, out_h, out_w, _ = layer.output.shape
            if out_h is None or out_w is None:
                raise ValueError(f"{layer.name}: build the model with a fixed input size")
            total += 2 * out_h * out_w * kh * kw * cin * cout
    return int(total)


# -------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Settings:
    """What one run measures; sizes in pixels, (height, width)."""

    data_dir: str
    width: int
    train_size: tuple[int, int]
    predict_size: tuple[int, int]
    batch_sizes: tuple[int, ...]
    warmup: int
    steps: int
    predict_slices: int
    tile_size: int
    tile_margin: int
    matmul_n: int
    matmul_repeats: int
    workers: int
    seed: int
    in_process: bool
    quick: bool
    rounds: int = 1
    elastic: float = 0.0
    jit_compile: bool | str | None = None
    skip_predict: bool = False


def config_recipe(name: str, settings: Settings, precision: str | None) -> Recipe:
    """The recipe behind a configuration; ``precision`` overrides the recipe's."""
    side = settings.train_size
    if name == "default":
        recipe = RECIPES["cpu"].replace(width=settings.width, patch_size=side, precision=precision,
                                        jit_compile=settings.jit_compile)
        if settings.elastic:
            recipe = recipe.replace(aug_dict=dict(recipe.aug_dict, elastic_sigma=settings.elastic))
        return recipe
    if name == "baseline":
        return RECIPES["blog"].replace(width=settings.width, target_size=side,
                                       precision=precision or "float32", jit_compile=settings.jit_compile)
    raise UserError(f"--configs: unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")


def describe_data_path(name: str, recipe: Recipe) -> str:
    """One line on how a configuration gets its training batches."""
    if name == "baseline":
        size = recipe.target_size
        return f"data.trainGenerator (Python generator), slices resized to {size[0]}x{size[1]}"
    size = recipe.patch_size
    return f"train.make_datasets (SegmentationDataset PyDataset), random {size[0]}x{size[1]} crops"


# ------------------------------------------------------------------------- machine

def cpu_info() -> dict:
    """CPU model name and the vector extensions that matter here, from /proc/cpuinfo."""
    model_name, flags = "", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model_name:
            model_name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    notable = [flag for flag in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags]
    return {"model": model_name or platform.processor() or "unknown", "flags_of_note": notable}


def machine_info() -> dict:
    """CPU, cores, library versions, backend and date of this run."""
    import tensorflow as tf

    return {
        "cpu": cpu_info(),
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "backend": keras.backend.backend(),
        "platform": platform.platform(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _synchronize(tensor) -> None:
    """Wait for an asynchronously dispatched result (JAX); TF and torch CPU are eager."""
    if hasattr(tensor, "block_until_ready"):
        tensor.block_until_ready()


def matmul_peak(n: int, repeats: int, dtype: str, seed: int = 0) -> dict:
    """Dense n x n matmul speed with keras.ops.matmul: median seconds and GFLOP/s (2 n^3 / t)."""
    rng = np.random.default_rng(seed)
    a = keras.ops.convert_to_tensor(rng.standard_normal((n, n), dtype=np.float32), dtype=dtype)
    b = keras.ops.convert_to_tensor(rng.standard_normal((n, n), dtype=np.float32), dtype=dtype)
    _synchronize(keras.ops.matmul(a, b))  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        _synchronize(keras.ops.matmul(a, b))
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"n": n, "repeats": repeats, "median_s": median, "gflops": 2 * n**3 / median / 1e9}


# ------------------------------------------------------------------------- training

class StepTimer(keras.callbacks.Callback):
    """perf_counter() at the end of every training batch (logs are already synced)."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.ends.append(time.perf_counter())


def fit_step_seconds(model: keras.Model, batches, total_steps: int, warmup: int,
                     steps_per_epoch: int | None = None, shuffle: bool = True) -> list[float]:
    """Seconds per step of ``model.fit`` over ``batches`` (data loading + train step).

    A step's time is the interval between consecutive batch ends, so it includes pulling
    the next batch from the PyDataset or generator (as fit prefetches it). The first
    ``warmup`` steps (tracing, the first batches) are dropped. ``shuffle`` as in fit
    (a generator cannot be shuffled).
    """
    timer = StepTimer()
    model.fit(batches, epochs=1, steps_per_epoch=steps_per_epoch, shuffle=shuffle, verbose=0,
              callbacks=[timer])
    if len(timer.ends) != total_steps:
        raise RuntimeError(f"fit ran {len(timer.ends)} steps, expected {total_steps}")
    return list(np.diff(timer.ends)[warmup - 1:])


def fixed_step_seconds(model: keras.Model, batch: tuple, total_steps: int,
                       warmup: int) -> list[float]:
    """Seconds per ``train_on_batch`` on one in-memory batch (x, y[, sample weights]),
    after ``warmup`` calls."""
    seconds = []
    for _ in range(total_steps):
        start = time.perf_counter()
        model.train_on_batch(*batch)
        seconds.append(time.perf_counter() - start)
    return seconds[warmup:]


class RepeatedBatch(keras.utils.PyDataset):
    """``steps`` copies of one in-memory batch: model.fit with no input pipeline to wait for."""

    def __init__(self, batch: tuple, steps: int) -> None:
        super().__init__()
        self.batch, self.steps = batch, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> tuple:
        return self.batch


def generator_batches(settings: Settings, recipe: Recipe, batch_size: int, seed: int) -> Iterator:
    """The seed's endless (x, y) generator: ``trainGenerator`` over the training folder."""
    image_dir, mask_dir = find_training_folders(settings.data_dir)
    if image_dir.parent != mask_dir.parent:
        raise UserError(f"{settings.data_dir}: trainGenerator needs image and label folders side by side")
    return trainGenerator(batch_size, image_dir.parent, image_dir.name, mask_dir.name,
                          recipe.aug_dict, target_size=recipe.target_size, seed=seed)


def summarize_training(pipeline_s: Sequence[float], fit_fixed_s: Sequence[float], fixed_s: Sequence[float],
                       batch_size: int, forward_gflop: float, peak_gflops: float | None) -> dict:
    """Medians, images/s, overheads (% of the slower step) and GFLOP/s of one batch size.

    ``pipeline_overhead_percent``: the real data path against fit on a fixed batch.
    ``fit_overhead_percent``: fit on a fixed batch against bare train_on_batch calls.
    """
    pipeline, fit_fixed, fixed = (statistics.median(times) for times in (pipeline_s, fit_fixed_s, fixed_s))
    step_gflop = TRAIN_PASSES * forward_gflop * batch_size
    return {
        "batch_size": batch_size,
        "pipeline_step_s": pipeline,
        "pipeline_images_per_s": batch_size / pipeline,
        "fit_fixed_step_s": fit_fixed,
        "fit_fixed_images_per_s": batch_size / fit_fixed,
        "fixed_step_s": fixed,
        "fixed_images_per_s": batch_size / fixed,
        "pipeline_overhead_percent": 100.0 * (pipeline - fit_fixed) / pipeline,
        "fit_overhead_percent": 100.0 * (fit_fixed - fixed) / fit_fixed,
        "train_step_gflop": step_gflop,
        "train_step_gflops": step_gflop / fixed,
        "pipeline_gflops": step_gflop / pipeline,
        "fraction_of_peak": step_gflop / fixed / peak_gflops if peak_gflops else None,
        "pipeline_step_times_s": list(map(float, pipeline_s)),
        "fit_fixed_step_times_s": list(map(float, fit_fixed_s)),
        "fixed_step_times_s": list(map(float, fixed_s)),
    }


def measure_training(name: str, model: keras.Model, recipe: Recipe, settings: Settings,
                     forward_gflop: float, peak_gflops: float | None) -> dict:
    """Training figures of one configuration for every batch size, keyed ``batch_<B>``."""
    total = settings.warmup + settings.steps
    split = load_training_data(settings.data_dir, recipe) if name == "default" else None
    results = {}
    for batch_size in settings.batch_sizes:
        sized = recipe.replace(batch_size=batch_size, steps_per_epoch=total)
        pipeline, fit_fixed, batch = [], [], None
        if split is not None:
            train_batches, _ = make_datasets(split, sized, seed=settings.seed, workers=settings.workers)
        for round_index in range(settings.rounds):  # interleaved, so drifts in load hit both alike
            if split is not None:
                train_batches.epoch = round_index  # fresh crops each round
                pipeline += fit_step_seconds(model, train_batches, total, settings.warmup)
                batch = batch or train_batches.batch(0, 0)
            else:
                generator = generator_batches(settings, sized, batch_size, seed=settings.seed + round_index)
                batch = batch or next(generator)
                pipeline += fit_step_seconds(model, generator, total, settings.warmup,
                                             steps_per_epoch=total, shuffle=False)
            fit_fixed += fit_step_seconds(model, RepeatedBatch(batch, total), total, settings.warmup, shuffle=False)
        fixed = fixed_step_seconds(model, batch, total, settings.warmup)
        results[f"batch_{batch_size}"] = summarize_training(pipeline, fit_fixed, fixed, batch_size,
                                                            forward_gflop, peak_gflops)
    return results


# ------------------------------------------------------------------------ prediction

def load_slices(settings: Settings) -> list[np.ndarray]:
    """``predict_slices`` slices cropped to ``predict_size``, (H, W, 1) in [0, 1].

    Taken from the ``test`` folder of the data when it has images, else from the
    training images. Raises UserError when too few or too small.
    """
    test_dir = Path(settings.data_dir) / "test"
    try:
        paths = list_images(test_dir)
    except UserError:
        paths = list_images(find_training_folders(settings.data_dir)[0])
    height, width = settings.predict_size
    slices = []
    for path in paths[:settings.predict_slices]:
        image = read_image(path, as_gray=True)
        if image.shape[0] < height or image.shape[1] < width:
            raise UserError(f"{path}: {image.shape[1]}x{image.shape[0]} is smaller than the "
                            f"{width}x{height} prediction slice; use a smaller --predict-size")
        slices.append(image[:height, :width] / 255.0)
    if len(slices) < settings.predict_slices:
        raise UserError(f"{paths[0].parent}: {len(slices)} images, fewer than --slices {settings.predict_slices}")
    return slices


def predict_once(mode: str, image: np.ndarray, predict_fn, settings: Settings,
                 multiple: int) -> np.ndarray:
    """One slice (H, W, 1) -> (H, W, 1) in a prediction mode of predict.py."""
    if mode == "whole":
        return predict_whole(image, predict_fn, multiple)
    if mode == "tile":
        return predict_overlap_tile(image, predict_fn, settings.tile_size, settings.tile_margin)
    return predict_resized(image, predict_fn, settings.train_size)


def measure_prediction(any_size_model: keras.Model, resize_model: keras.Model,
                       slices: Sequence[np.ndarray], settings: Settings) -> dict:
    """Median seconds per slice of each mode, with (``<mode>_tta``) and without TTA.

    ``resize`` (the seed's: resize to the training size, predict, resize back) uses
    ``resize_model``; the others the any-size model. Each mode is run once untimed first.
    """
    multiple = downsampling_factor(any_size_model)
    results = {}
    for mode in PREDICT_MODES:
        network = resize_model if mode == "resize" else any_size_model
        for tta in (False, True):
            predict_fn = model_predict_fn(network)
            if tta:
                predict_fn = with_tta(predict_fn)
            predict_once(mode, slices[0], predict_fn, settings, multiple)  # warm-up
            seconds = []
            for image in slices:
                start = time.perf_counter()
                predict_once(mode, image, predict_fn, settings, multiple)
                seconds.append(time.perf_counter() - start)
            results[f"{mode}_tta" if tta else mode] = statistics.median(seconds)
    return results


# ---------------------------------------------------------------------- one config

def measure_config(name: str, precision: str | None, settings: Settings,
                   peaks: dict) -> dict:
    """All figures of one configuration (run in a fresh process by ``run_config``)."""
    keras.utils.set_random_seed(settings.seed)
    recipe = config_recipe(name, settings, precision)
    policy = set_precision(recipe.precision)
    try:
        model = build_model(recipe)
        forward_gflop = unet_flops(recipe.width, size=settings.train_size) / 1e9
        peak_dtype = "float32" if policy == "float32" else policy.removeprefix("mixed_")
        peak = peaks.get(peak_dtype, {}).get("gflops")
        training = measure_training(name, model, recipe, settings, forward_gflop, peak)
        if recipe.target_size:  # the seed's fixed-size model: an any-size twin for whole/tile
            any_size = unet(input_size=(None, None, 1), width=recipe.width, compile=False)
            any_size.set_weights(model.get_weights())
        else:
            any_size = model
        prediction = None if settings.skip_predict else measure_prediction(
            any_size, model, load_slices(settings), settings)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return {
        "recipe": recipe.name,
        "precision": recipe.precision,
        "dtype_policy": policy,
        "width": recipe.width,
        "data_path": describe_data_path(name, recipe),
        "aug_dict": recipe.aug_dict,
        "workers": settings.workers if name == "default" else None,
        "jit_compile": bool(model.jit_compile),
        "peak_dtype": peak_dtype,
        "train": training,
        "predict_s_per_slice": prediction,
        "peak_rss_mib": peak_rss_mib(),
        "isolated_process": not settings.in_process,
    }


def run_config(name: str, precision: str | None, settings: Settings, peaks: dict) -> dict:
    """``measure_config`` in a fresh spawned process (its own peak RSS and dtype policy),
    or in this one with ``settings.in_process``."""
    if settings.in_process:
        return measure_config(name, precision, settings, peaks)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(measure_config, name, precision, settings, peaks).result()


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

def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, not {text!r}") from error
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, not {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench.py",
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
    parser.add_argument("--elastic", type=float, metavar="PX", help="add the paper's elastic deformation (grid std in px, e.g. 10) to the default config's augmentation")
    parser.add_argument("--jit-compile", choices=["on", "off", "auto"], help="XLA compilation of the training step, all configs (default: each recipe's)")
    parser.add_argument("--skip-predict", action="store_true", help="time training only")
    parser.add_argument("--seed", type=int, default=1, help="seed of weights, data order and augmentation (default: %(default)s)")
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
        elastic=args.elastic or 0.0, skip_predict=args.skip_predict, rounds=pick(args.rounds, 3, 1),
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
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 on success, 2 with one ``error:`` line on a user mistake."""
    if argv is None:
        argv, command = sys.argv[1:], shlex.join(getattr(sys, "orig_argv", sys.argv))
    else:
        command = shlex.join(["bench.py", *argv])
    return exit_status(run, list(argv), command)


if __name__ == "__main__":
    sys.exit(main())
