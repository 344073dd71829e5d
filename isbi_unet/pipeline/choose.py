"""What the selection slices choose after training, and the one scoring of the test slices.

:func:`choose_and_score` chooses test-time augmentation and the thresholds on the
selection slices, then predicts and scores the test slices once;
:func:`choose_and_score_instances` chooses the cell method's parameters (and fits the
learned multicut's edge model) on the selection maps, then segments and scores the test
maps once.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from isbi_unet.io.images import write_text

SCORE_KEYS = ("v_rand", "v_info", "v_rand_threshold", "v_info_threshold", "pixel_error", "dice")
# The cell method of `segment`, `predict --instances` and the notebook, where no labelled
# slices are at hand: components at a threshold read from the maps, split where multicut
# cuts along membrane. Chosen on the selection blocks under the shifts of
# benchmarks/shifts.py (docs/shifts.md): multicut on mean boundary costs, the default
# before, cut cells that components keep whole wherever maps are clean.
DEFAULT_INSTANCE_METHOD = "split-components"
# The cell method of the main job and crossval, which have selection slices to fit edge
# costs on: the multicut on learned edge costs, fixed in advance by the same
# four folds, where it scored V_rand 0.9688 against multicut's 0.9634 (README).
RUN_INSTANCE_METHOD = "learned-multicut"
# The methods among which a run's selection slices choose (each method's parameters are
# always chosen there): one alone, since a 5-slice block judges methods poorly.
INSTANCE_METHOD_CANDIDATES = (RUN_INSTANCE_METHOD,)



def png_picture(network) -> Callable[[np.ndarray], np.ndarray] | None:
    """How ``predict_folder`` draws the network's predictions: None (the membrane map) for
    a membrane model; for an affinity model, the mutex watershed's mask with its default
    parameters (255 in segments, 0 on their boundaries), which the metric then scores."""
    from isbi_unet.prediction.predict import affinity_offsets

    offsets = affinity_offsets(network)
    if offsets is None:
        return None
    from isbi_unet.cells.mutex_watershed import segments_mask

    return functools.partial(segments_mask, offsets=offsets)


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
                     progress: bool = True, mask_foreground: str = "cell") -> dict:
    """Choose TTA (when ``tta`` is None) and the thresholds on the selection slices, then
    predict and score the test slices once with those choices.

    Writes ``selection_predictions[_tta]/``, ``selection_scores.json``, and, when there are
    test slices, ``test_slice_predictions/`` and ``test_scores.json`` under out_dir.
    Returns {"selection": scores and "tta", "test": scores (see module doc) or None}.
    ``mask_foreground``: what the labels' non-zero pixels are (cell or membrane).
    """
    from isbi_unet.evaluation.folders import evaluate_folders
    from isbi_unet.prediction.predict import predict_folder

    candidates = [False, True] if tta is None else [bool(tta)]
    tried = []
    for with_tta in candidates:
        folder = out_dir / ("selection_predictions_tta" if with_tta else "selection_predictions")
        predict_folder(network, image_dir, folder, tta=with_tta, names=selection, progress=progress,
                       picture=png_picture(network))
        tried.append((evaluate_folders(folder, label_dir, names=selection, progress=progress,
                                       mask_foreground=mask_foreground), with_tta))
    selected, with_tta = max(tried, key=lambda pair: pair[0]["v_rand"])
    write_text(out_dir / "selection_scores.json", json.dumps(dict(selected, tta=with_tta), indent=2))
    report = {"selection": {**{key: selected[key] for key in SCORE_KEYS}, "tta": with_tta}, "test": None}
    if test:
        test_dir = out_dir / "test_slice_predictions"
        predict_folder(network, image_dir, test_dir, tta=with_tta, names=test, progress=progress,
                       picture=png_picture(network))
        scores = evaluate_folders(test_dir, label_dir, names=test, progress=progress,
                                  mask_foreground=mask_foreground)
        report["test"] = dict(read_at_thresholds(scores, selected["v_rand_threshold"], selected["v_info_threshold"]),
                              tta=with_tta)
        write_text(out_dir / "test_scores.json", json.dumps(dict(scores, chosen=report["test"]), indent=2))
    return report


def choose_and_score_instances(selection_maps: Path, test_maps: Path, image_dir: Path, label_dir: Path,
                               selection: Sequence[str], test: Sequence[str], out_dir: Path,
                               methods: Sequence[str] = INSTANCE_METHOD_CANDIDATES, progress: bool = True,
                               mask_foreground: str = "cell") -> dict:
    """Cells of the test slices: choose each of ``methods``' parameters on the selection
    slices' maps (cell_parameters.select_parameters), keep the method with the best selection
    V_rand (the first on ties), then segment the test slices' maps once and score the label
    images as they are. A learned method that cannot be fitted (the selection maps' graphs
    hold edges of one kind only) is left out; with none left, DEFAULT_INSTANCE_METHOD is used.

    Maps are ``N_predict.png`` files in selection_maps / test_maps; labels ``N.<ext>``
    or ``N_mask.<ext>`` in label_dir, read as ``mask_foreground`` says. Writes
    ``instance_parameters.json`` and ``test_slice_instances/`` (N_labels.tif,
    N_overlay.png, cells.csv) under out_dir. Returns {"method", "parameters", "selection"
    (V_rand, V_info of the choice), "candidates" (each method's choice and selection
    scores), "applied" (the method that made the test cells and, where a learned method
    gave way on test maps unlike its own, the reason; else None), "test"
    (segmentation_scores without per_slice)}.
    """
    import tifffile
    from skimage import io

    from isbi_unet.cells import parameters as cell_parameters
    from isbi_unet.cells.folders import segment_folder
    from isbi_unet.evaluation.metric import segmentation_scores
    from isbi_unet.evaluation.slice_scores import as_probability

    from isbi_unet.io.pairs import read_label

    def labels(names: Sequence[str]) -> list:
        return [read_label(label_dir, name, mask_foreground) for name in names]

    maps = [as_probability(io.imread(selection_maps / f"{name}_predict.png")) for name in selection]
    truth = labels(selection)
    candidates = []
    for method in methods:
        try:
            candidates.append(cell_parameters.select_parameters(method, maps, truth))
        except ValueError as exc:  # a learned method whose selection maps give edges of one kind only
            print(f"{method} left out: {exc}")
    if not candidates:
        print(f"Cells by {DEFAULT_INSTANCE_METHOD} instead")
        candidates = [cell_parameters.select_parameters(DEFAULT_INSTANCE_METHOD, maps, truth)]
    choice = max(candidates, key=lambda candidate: candidate["v_rand"] or 0.0)
    cell_parameters.save_parameters(choice, out_dir / "instance_parameters.json")
    written = segment_folder(test_maps, out_dir / "test_slice_instances", choice["method"], choice["parameters"],
                             images_dir=image_dir, names=test, progress=progress)
    scores = segmentation_scores([tifffile.imread(path) for path in written.paths], labels(test), names=list(test))
    return {"method": choice["method"], "parameters": choice["parameters"],
            "selection": {"v_rand": choice["v_rand"], "v_info": choice["v_info"]},
            "candidates": {c["method"]: {"parameters": c["parameters"], "v_rand": c["v_rand"], "v_info": c["v_info"]}
                           for c in candidates},
            "applied": {"method": written.method, "reason": written.gave_way},
            "test": {key: value for key, value in scores.items() if key != "per_slice"}}


def describe_scores(report: dict) -> str:
    """Lines that print a ``choose_and_score`` report."""
    selection = report["selection"]
    lines = [f"Selection slices (chose TTA {'on' if selection['tta'] else 'off'} and the thresholds): "
             f"V_rand {score_text(selection['v_rand'])} (threshold {selection['v_rand_threshold']:.1f}), "
             f"V_info {score_text(selection['v_info'])} (threshold {selection['v_info_threshold']:.1f})"]
    test = report["test"]
    if test is None:
        lines.append("No test slices (--test-ids): the scores above chose the checkpoint, so they are not test scores.")
    else:
        lines.append(f"Test slices, scored once: V_rand {score_text(test['v_rand'])}, V_info {score_text(test['v_info'])} "
                     f"at the selection's thresholds; official maxima over thresholds "
                     f"{score_text(test['v_rand_official'])} / {score_text(test['v_info_official'])}; "
                     f"pixel error {score_text(test['pixel_error'])}, Dice {score_text(test['dice'])}")
    return "\n".join(lines)


def score_text(value: float | None) -> str:
    """A score with 4 decimals; "n/a" for None (a NaN score: V_info can divide 0 by 0)."""
    return "n/a" if value is None else f"{value:.4f}"
