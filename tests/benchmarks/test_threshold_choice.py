"""benchmarks/threshold_choice.py: label-free thresholds scored on folders laid out as shifts.py writes them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import false_boundary_map, load_benchmark
from skimage import io

from isbi_unet.cells import methods as cell_methods
from isbi_unet.cells.calibration import label_free_threshold
from isbi_unet.evaluation.metric import segmentation_scores

choice = load_benchmark("threshold_choice")


def test_every_threshold_is_scored_against_otsus_and_ranked_by_the_rule(tmp_path):
    folder = tmp_path / "shifts"
    for condition, power in (("none", 1), ("map^5", 5)):
        for name, seed in (("3", 3), ("4", 4)):
            prob, label = false_boundary_map(seed, size=96)
            for kind, image in (("maps", np.round(prob ** power * 255)), ("labels", label)):
                (folder / kind / condition).mkdir(parents=True, exist_ok=True)
                suffix = "_predict" if kind == "maps" else ""
                io.imsave(folder / kind / condition / f"{name}{suffix}.png", image.astype(np.uint8),
                          check_contrast=False)
    out = tmp_path / "choice.json"
    assert choice.main(["--set", str(folder), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    scores = report["scores"][str(folder)]
    assert set(scores) == {"none", "map^5"}
    maps, labels = choice.read_condition(folder, "none")
    for share in (0.25, 0.4):
        threshold = label_free_threshold(maps, share)
        assert scores["none"][f"share {share:g}"]["threshold"] == threshold
        assert scores["none"][f"share {share:g}"]["v_rand"] == pytest.approx(
            segmentation_scores([cell_methods.threshold(p, threshold) for p in maps], labels)["v_rand"])
    assert scores["none"]["otsu"]["threshold"] == pytest.approx(choice.otsu_threshold(maps))
    bounded = scores["none"]["otsu within 0.3-0.4"]["threshold"]
    assert label_free_threshold(maps, 0.3) <= bounded <= label_free_threshold(maps, 0.4)
    assert bounded in (scores["none"]["otsu"]["threshold"], label_free_threshold(maps, 0.3), label_free_threshold(maps, 0.4))
    rows = report["summary"]
    assert len(rows) == len(choice.SHARES) + len(choice.BOUNDS) + 1 and rows[-1][0] == "otsu"
    assert [(r[1], r[4]) for r in rows[:-1]] == sorted(((r[1], r[4]) for r in rows[:-1]), key=lambda c: (-c[0], -c[1]))
