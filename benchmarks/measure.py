"""One benchmark configuration measured: training throughput and prediction time.

``default`` is ``train.RECIPES["cpu"]`` on the ``SegmentationDataset`` pipeline,
``baseline`` the seed's (``RECIPES["blog"]``, ``data.trainGenerator``); see bench.py.
Times are seconds (``time.perf_counter``), sizes pixels (height, width).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import keras
import numpy as np

from benchmarks.flops import TRAIN_PASSES, peak_rss_mib, unet_flops
from data import trainGenerator
from isbi_unet.errors import UserError
from isbi_unet.io.images import list_images, read_image
from isbi_unet.network import downsampling_factor
from isbi_unet.prediction.predict import model_predict_fn
from isbi_unet.prediction.tiling import (
    predict_overlap_tile,
    predict_resized,
    predict_whole,
)
from isbi_unet.prediction.tta import with_tta
from isbi_unet.protocol import find_training_folders
from isbi_unet.training.loop import build_model, load_training_data, make_datasets
from isbi_unet.training.recipes import RECIPES, Recipe, set_precision
from model import unet

CONFIGS = ("default", "baseline")
PREDICT_MODES = ("whole", "tile", "resize")


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
    elastic: float | None = None  # None: the cpu recipe's; 0: off
    jit_compile: bool | str | None = None
    skip_predict: bool = False


def config_recipe(name: str, settings: Settings, precision: str | None) -> Recipe:
    """The recipe behind a configuration; ``precision`` overrides the recipe's."""
    side = settings.train_size
    if name == "default":
        recipe = RECIPES["cpu"].replace(width=settings.width, patch_size=side, precision=precision,
                                        jit_compile=settings.jit_compile)
        if settings.elastic is not None:
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
    """One slice (H, W, 1) -> (H, W, 1) in a prediction mode of isbi_unet/prediction."""
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
