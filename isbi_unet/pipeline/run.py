"""Train, choose on the selection slices, score once on the test slices; and k-fold.

Called by ``main.py all`` / ``crossval`` and by the notebook. Every choice made after
training, test-time augmentation (TTA) on or off and the thresholds at which V_rand and
V_info are read, is made on the selection slices; the test slices are predicted once with
those choices and scored once. Their scores are reported two ways:

- ``v_rand`` / ``v_info``: at the thresholds chosen on the selection slices (the honest
  figure: the test slices chose nothing);
- ``v_rand_official`` / ``v_info_official``: the maximum over thresholds, as the ISBI 2012
  challenge defined its score (the threshold is then chosen on the test slices).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from isbi_unet.io.images import write_text
from isbi_unet.pipeline.choose import (
    choose_and_score,
    choose_and_score_instances,
    describe_scores,
    score_text,
)
from isbi_unet.protocol import consecutive_folds
from isbi_unet.training.recipes import Recipe


@dataclass
class TrainingRun:
    """Where and how to train: the options of :func:`isbi_unet.training.loop.train` besides the recipe."""

    data_dir: str | Path
    run_dir: Path
    select_ids: Sequence[str] | None = None
    test_ids: Sequence[str] | None = None
    seed: int = 1
    workers: int = 2
    verbose: int = 1
    num_class: int = 1
    pretrained_weights: str | Path | None = None
    distribute: str = "none"
    model_path: str | Path | None = None
    mask_foreground: str = "cell"


def train_run(recipe: Recipe, run: TrainingRun, seed_callbacks: Sequence | None = None,
              reuse_finished: bool = False) -> dict:
    """Train (:func:`isbi_unet.training.loop.train`); a JSON-ready summary of the run.

    ``python main.py train`` and the notebook's training cell both call this.
    ``seed_callbacks``: the seed's four callbacks, when the caller made them (see
    :func:`isbi_unet.training.callback_set.seed_callbacks`). ``reuse_finished``: a run
    folder that holds a finished run with the same settings gives that run (``all`` and
    ``crossval`` continue after a kill this way); otherwise it is refused.
    """
    from isbi_unet.training.loop import train

    result = train(run.data_dir, recipe, run.run_dir, model_path=run.model_path, select_ids=run.select_ids,
                   test_ids=run.test_ids, seed=run.seed, workers=run.workers, verbose=run.verbose,
                   num_class=run.num_class, pretrained_weights=run.pretrained_weights,
                   distribute=run.distribute, seed_callbacks=seed_callbacks, reuse_finished=reuse_finished,
                   mask_foreground=run.mask_foreground)
    val_loss = result.history.get("val_loss", [])
    return {"recipe": recipe.name, "run_dir": str(result.run_dir), "model": str(result.model_path),
            "train_seconds": result.seconds, "epochs": len(result.history.get("loss", [])),
            "best_val_loss": min(val_loss) if val_loss else None,
            "train_names": result.split.train, "selection_names": result.split.select,
            "test_names": result.split.test}


def score_run(network, data_dir: str | Path, run_dir: Path, selection: Sequence[str], test: Sequence[str],
              tta: bool | None = None, progress: bool = True, mask_foreground: str = "cell") -> dict:
    """After training: the selection slices choose, the test slices are scored once.

    Maps first (:func:`choose_and_score`: TTA and thresholds), then, for a one-channel
    model with test slices, cells (:func:`choose_and_score_instances`: the cell method's
    parameters and edge model). Writes under ``run_dir``; prints both results. Returns
    {"selection", "test"} and, with cells, "instances". ``mask_foreground``: what the
    labels' non-zero pixels are (cell or membrane).
    """
    from isbi_unet.cells import parameters as cell_parameters
    from isbi_unet.protocol import find_training_folders

    image_dir, label_dir = find_training_folders(data_dir)
    report = choose_and_score(network, image_dir, label_dir, selection, test, run_dir, tta=tta, progress=progress,
                              mask_foreground=mask_foreground)
    print(describe_scores(report))
    if report["test"] is not None and network.output_shape[-1] == 1:
        chosen = "selection_predictions_tta" if report["selection"]["tta"] else "selection_predictions"
        cells = choose_and_score_instances(run_dir / chosen, run_dir / "test_slice_predictions", image_dir, label_dir,
                                           selection, test, run_dir, progress=progress,
                                           mask_foreground=mask_foreground)
        report["instances"] = cells
        print(f"Cells of the test slices ({cells['method']} and its parameters chosen on the selection slices: "
              f"{cell_parameters.describe_parameters(cells['parameters'])}, selection V_rand {cells['selection']['v_rand']:.4f}): "
              f"V_rand {cells['test']['v_rand']:.4f}, V_info {cells['test']['v_info']:.4f}"
              + (f" (by {cells['applied']['method']}: {cells['method']} gave way on these maps)"
                 if cells["applied"]["reason"] else ""))
    return report


def train_and_score(recipe: Recipe, run: TrainingRun, tta: bool | None = None,
                    progress: bool = True) -> tuple[dict, object]:
    """Train (:func:`train_run`), then choose and score (:func:`score_run`) in the run folder.

    A rerun with the same settings after a kill continues: an interrupted training
    resumes, a finished one is reused, and the scoring is done again. Returns (summary,
    best model); the summary gains the report of :func:`score_run`.
    """
    from isbi_unet.network import load_model

    summary = train_run(recipe, run, reuse_finished=True)
    network = load_model(summary["model"])
    run_dir = Path(summary["run_dir"])
    report = score_run(network, run.data_dir, run_dir, summary["selection_names"], summary["test_names"],
                       tta=tta, progress=progress, mask_foreground=run.mask_foreground)
    summary.update(report)
    write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary, network


def crossval(recipe: Recipe, run: TrainingRun, folds: int, tta: bool | None = None,
             progress: bool = True) -> dict:
    """Nested k-fold cross-validation over blocks of consecutive slices.

    Fold k tests on block k, selects on block k+1 (the first block for the last fold)
    and trains on the others. Writes ``crossval.json`` (per fold summaries; mean and
    sample sd of the test scores) into run.run_dir, whose ``fold<k>`` folders hold the
    runs. Rerun with the same settings after a kill, it continues where it stopped:
    finished folds keep their training, the interrupted one resumes. Returns that report.
    """
    import copy

    from isbi_unet.io.images import list_images
    from isbi_unet.protocol import find_training_folders

    image_dir, _ = find_training_folders(run.data_dir)
    blocks = consecutive_folds([path.stem for path in list_images(image_dir)], folds)
    results = []
    started = time.monotonic()
    for index, test in enumerate(blocks):
        select = blocks[(index + 1) % len(blocks)]
        fold = copy.copy(run)
        fold.run_dir, fold.select_ids, fold.test_ids = run.run_dir / f"fold{index + 1}", select, test
        print(f"Fold {index + 1}/{len(blocks)}: test {','.join(test)}, select {','.join(select)}")
        summary, _ = train_and_score(recipe, fold, tta=tta, progress=progress)
        results.append(summary)
    report = {"protocol": "nested: fold k tests on block k, selects on block k+1, trains on the rest",
              "minutes": (time.monotonic() - started) / 60, "folds": results}
    for key in ("v_rand", "v_info", "v_rand_official", "v_info_official", "pixel_error", "dice"):
        report[key] = over_folds([fold["test"][key] for fold in results])
    if all("instances" in fold for fold in results):
        for key in ("v_rand", "v_info"):
            report[f"instances_{key}"] = over_folds([fold["instances"]["test"][key] for fold in results])
    path = run.run_dir / "crossval.json"
    write_text(path, json.dumps(report, indent=2))
    print(f"{len(blocks)}-fold nested cross-validation, test slices: V_rand {score_text(report['v_rand']['mean'])} +- "
          f"{score_text(report['v_rand']['sd'])}, V_info {score_text(report['v_info']['mean'])} +- "
          f"{score_text(report['v_info']['sd'])}; details in {path}")
    return report


def over_folds(values: Sequence[float | None]) -> dict:
    """{"mean", "sd" (sample), "values"} of per-fold scores; a fold whose score is None
    (NaN: V_info can divide 0 by 0) is left out of the mean and sd."""
    from isbi_unet.evaluation.runs import mean_and_sd

    mean, sd = mean_and_sd(values)
    return {"mean": mean, "sd": sd, "values": list(values)}
