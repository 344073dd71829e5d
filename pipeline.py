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

import numpy as np

from errors import UserError
from recipes import Recipe

SCORE_KEYS = ("v_rand", "v_info", "v_rand_threshold", "v_info_threshold", "pixel_error", "dice")
# The cell method of `segment`, `predict --instances` and the notebook, where no labelled
# slices are at hand:
# multicut on mean boundary costs. In the 6-fold nested cross-validation on the AMX machine
# (README), over the four folds whose test and selection blocks leave out slices 25-29,
# multicut's cells scored V_rand 0.9634 / V_info 0.9823 against 0.9559 / 0.9753 for the
# threshold and 0.9581 / 0.9803 for GASP; letting each fold's 5 selection slices choose
# among the three scored 0.9520 over the 6 folds, against 0.9587 for multicut alone.
DEFAULT_INSTANCE_METHOD = "multicut"
# The cell method of the main job and crossval, which have selection slices to fit edge
# costs on: the multicut on learned edge costs, fixed in advance by the same
# four folds, where it scored V_rand 0.9688 against multicut's 0.9634 (README).
RUN_INSTANCE_METHOD = "learned-multicut"
# The methods among which a run's selection slices choose (each method's parameters are
# always chosen there): one alone, since a 5-slice block judges methods poorly.
INSTANCE_METHOD_CANDIDATES = (RUN_INSTANCE_METHOD,)


@dataclass
class TrainingRun:
    """Where and how to train: the options of ``train.train`` besides the recipe."""

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


def train_run(recipe: Recipe, run: TrainingRun) -> dict:
    """Train as ``train.train`` does; a JSON-ready summary of the run."""
    from train import train

    result = train(run.data_dir, recipe, run.run_dir, model_path=run.model_path, select_ids=run.select_ids,
                   test_ids=run.test_ids, seed=run.seed, workers=run.workers, verbose=run.verbose,
                   num_class=run.num_class, pretrained_weights=run.pretrained_weights,
                   distribute=run.distribute)
    val_loss = result.history.get("val_loss", [])
    return {"recipe": recipe.name, "run_dir": str(result.run_dir), "model": str(result.model_path),
            "train_seconds": result.seconds, "epochs": len(result.history.get("loss", [])),
            "best_val_loss": min(val_loss) if val_loss else None,
            "train_names": result.split.train, "selection_names": result.split.select,
            "test_names": result.split.test}


def read_at_thresholds(scores: dict, rand_threshold: float, info_threshold: float) -> dict:
    """V_rand and V_info of ``isbi_scores`` output read at given thresholds (from its
    curves), beside the official maxima."""
    thresholds = scores["thresholds"]
    return {
        "v_rand": scores["v_rand_curve"][thresholds.index(rand_threshold)],
        "v_info": scores["v_info_curve"][thresholds.index(info_threshold)],
        "v_rand_threshold": rand_threshold,
        "v_info_threshold": info_threshold,
        "v_rand_official": scores["v_rand"],
        "v_info_official": scores["v_info"],
        "pixel_error": scores["pixel_error"],
        "dice": scores["dice"],
    }


def choose_and_score(network, image_dir: Path, label_dir: Path, selection: Sequence[str],
                     test: Sequence[str], out_dir: Path, tta: bool | None = None,
                     progress: bool = True) -> dict:
    """Choose TTA (when ``tta`` is None) and the thresholds on the selection slices, then
    predict and score the test slices once with those choices.

    Writes ``selection_predictions[_tta]/``, ``selection_scores.json``, and, when there are
    test slices, ``test_slice_predictions/`` and ``test_scores.json`` under out_dir.
    Returns {"selection": scores and "tta", "test": scores (see module doc) or None}.
    """
    from metrics import evaluate_folders
    from predict import predict_folder

    candidates = [False, True] if tta is None else [bool(tta)]
    tried = []
    for with_tta in candidates:
        folder = out_dir / ("selection_predictions_tta" if with_tta else "selection_predictions")
        predict_folder(network, image_dir, folder, tta=with_tta, names=selection, progress=progress)
        tried.append((evaluate_folders(folder, label_dir, names=selection, progress=progress), with_tta))
    selected, with_tta = max(tried, key=lambda pair: pair[0]["v_rand"])
    (out_dir / "selection_scores.json").write_text(json.dumps(dict(selected, tta=with_tta), indent=2))
    report = {"selection": {**{key: selected[key] for key in SCORE_KEYS}, "tta": with_tta}, "test": None}
    if test:
        test_dir = out_dir / "test_slice_predictions"
        predict_folder(network, image_dir, test_dir, tta=with_tta, names=test, progress=progress)
        scores = evaluate_folders(test_dir, label_dir, names=test, progress=progress)
        report["test"] = dict(read_at_thresholds(scores, selected["v_rand_threshold"], selected["v_info_threshold"]),
                              tta=with_tta)
        (out_dir / "test_scores.json").write_text(json.dumps(dict(scores, chosen=report["test"]), indent=2))
    return report


def choose_and_score_instances(selection_maps: Path, test_maps: Path, image_dir: Path, label_dir: Path,
                               selection: Sequence[str], test: Sequence[str], out_dir: Path,
                               methods: Sequence[str] = INSTANCE_METHOD_CANDIDATES, progress: bool = True) -> dict:
    """Cells of the test slices: choose each of ``methods``' parameters on the selection
    slices' maps (segment.select_parameters), keep the method with the best selection
    V_rand (the first on ties), then segment the test slices' maps once and score the label
    images as they are. A learned method that cannot be fitted (the selection maps' graphs
    hold edges of one kind only) is left out; with none left, DEFAULT_INSTANCE_METHOD is used.

    Maps are ``N_predict.png`` files in selection_maps / test_maps. Writes
    ``instance_parameters.json`` and ``test_slice_instances/`` (N_labels.tif,
    N_overlay.png, cells.csv) under out_dir. Returns {"method", "parameters", "selection"
    (V_rand, V_info of the choice), "candidates" (each method's choice and selection
    scores), "test" (segmentation_scores without per_slice)}.
    """
    import tifffile
    from skimage import io

    import segment
    from instances import segment_folder
    from isbi_metric import segmentation_scores
    from isbi_slice_scores import as_probability

    def labels(names: Sequence[str]) -> list:
        return [io.imread(label_dir / f"{name}.png") for name in names]

    maps = [as_probability(io.imread(selection_maps / f"{name}_predict.png")) for name in selection]
    truth = labels(selection)
    candidates = []
    for method in methods:
        try:
            candidates.append(segment.select_parameters(method, maps, truth))
        except ValueError as exc:  # a learned method whose selection maps give edges of one kind only
            print(f"{method} left out: {exc}")
    if not candidates:
        print(f"Cells by {DEFAULT_INSTANCE_METHOD} instead")
        candidates = [segment.select_parameters(DEFAULT_INSTANCE_METHOD, maps, truth)]
    choice = max(candidates, key=lambda candidate: candidate["v_rand"] or 0.0)
    segment.save_parameters(choice, out_dir / "instance_parameters.json")
    written = segment_folder(test_maps, out_dir / "test_slice_instances", choice["method"], choice["parameters"],
                             images_dir=image_dir, names=test, progress=progress)
    scores = segmentation_scores([tifffile.imread(path) for path in written], labels(test), names=list(test))
    return {"method": choice["method"], "parameters": choice["parameters"],
            "selection": {"v_rand": choice["v_rand"], "v_info": choice["v_info"]},
            "candidates": {c["method"]: {"parameters": c["parameters"], "v_rand": c["v_rand"], "v_info": c["v_info"]}
                           for c in candidates},
            "test": {key: value for key, value in scores.items() if key != "per_slice"}}


def describe_scores(report: dict) -> str:
    """Lines that print a ``choose_and_score`` report."""
    selection = report["selection"]
    lines = [f"Selection slices (chose TTA {'on' if selection['tta'] else 'off'} and the thresholds): "
             f"V_rand {selection['v_rand']:.4f} (threshold {selection['v_rand_threshold']:.1f}), "
             f"V_info {selection['v_info']:.4f} (threshold {selection['v_info_threshold']:.1f})"]
    test = report["test"]
    if test is None:
        lines.append("No test slices (--test-ids): the scores above chose the checkpoint, so they are not test scores.")
    else:
        lines.append(f"Test slices, scored once: V_rand {test['v_rand']:.4f}, V_info {test['v_info']:.4f} "
                     f"at the selection's thresholds; official maxima over thresholds {test['v_rand_official']:.4f} / "
                     f"{test['v_info_official']:.4f}; pixel error {test['pixel_error']:.4f}, Dice {test['dice']:.4f}")
    return "\n".join(lines)


def train_and_score(recipe: Recipe, run: TrainingRun, tta: bool | None = None,
                    progress: bool = True) -> tuple[dict, object]:
    """Train, then choose and score (``choose_and_score``) in the run folder.

    Returns (summary, best model); the summary gains "selection" and "test" scores.
    """
    from model import load_model
    from train import find_training_folders

    summary = train_run(recipe, run)
    run_dir = Path(summary["run_dir"])
    network = load_model(summary["model"])
    image_dir, label_dir = find_training_folders(run.data_dir)
    report = choose_and_score(network, image_dir, label_dir, summary["selection_names"], summary["test_names"],
                              run_dir, tta=tta, progress=progress)
    print(describe_scores(report))
    if report["test"] is not None and network.output_shape[-1] == 1:
        chosen = "selection_predictions_tta" if report["selection"]["tta"] else "selection_predictions"
        cells = choose_and_score_instances(run_dir / chosen, run_dir / "test_slice_predictions", image_dir, label_dir,
                                           summary["selection_names"], summary["test_names"], run_dir,
                                           progress=progress)
        report["instances"] = cells
        import segment

        print(f"Cells of the test slices ({cells['method']} and its parameters chosen on the selection slices: "
              f"{segment.describe_parameters(cells['parameters'])}, selection V_rand {cells['selection']['v_rand']:.4f}): "
              f"V_rand {cells['test']['v_rand']:.4f}, V_info {cells['test']['v_info']:.4f}")
    summary.update(report)
    return summary, network


def consecutive_folds(names: Sequence[str], folds: int) -> list[list[str]]:
    """``folds`` blocks of consecutive names (sizes differ by at most one)."""
    if not 3 <= folds <= len(names):
        raise UserError(f"--folds must be between 3 (train, select, test) and the number of training images "
                        f"({len(names)}), not {folds}")
    return [list(chunk) for chunk in np.array_split(list(names), folds)]


def crossval(recipe: Recipe, run: TrainingRun, folds: int, tta: bool | None = None,
             progress: bool = True) -> dict:
    """Nested k-fold cross-validation over blocks of consecutive slices.

    Fold k tests on block k, selects on block k+1 (the first block for the last fold)
    and trains on the others. Writes ``crossval.json`` (per fold summaries; mean and
    sample sd of the test scores) into run.run_dir, whose ``fold<k>`` folders hold the
    runs. Returns that report.
    """
    import copy

    from data import list_images
    from train import find_training_folders

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
        values = np.array([fold["test"][key] for fold in results])
        report[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)), "values": values.tolist()}
    if all("instances" in fold for fold in results):
        for key in ("v_rand", "v_info"):
            values = np.array([fold["instances"]["test"][key] for fold in results])
            report[f"instances_{key}"] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)),
                                          "values": values.tolist()}
    path = run.run_dir / "crossval.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"{len(blocks)}-fold nested cross-validation, test slices: V_rand {report['v_rand']['mean']:.4f} +- "
          f"{report['v_rand']['sd']:.4f}, V_info {report['v_info']['mean']:.4f} +- {report['v_info']['sd']:.4f}; "
          f"details in {path}")
    return report
