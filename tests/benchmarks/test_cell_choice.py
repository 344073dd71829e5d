"""benchmarks/cell_choice.py: candidates against components on folders laid out as shifts.py writes them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import false_boundary_map, load_benchmark
from skimage import io

from isbi_unet.cells import methods as cell_methods
from isbi_unet.cells import parameters as cell_parameters
from isbi_unet.cells.calibration import label_free_threshold
from isbi_unet.cells.split_components import component_graph, split, split_components
from isbi_unet.evaluation.metric import segmentation_scores

choice = load_benchmark("cell_choice")


@pytest.fixture
def selection_set(tmp_path):
    """A shifts.py-like folder (conditions "none" and "dark": the same maps squared) and a
    fitted instance_parameters.json."""
    fit = [false_boundary_map(seed, size=96) for seed in (1, 2)]
    params = tmp_path / "instance_parameters.json"
    edge_model = cell_parameters.fit_edge_model([p for p, _ in fit], [label for _, label in fit])
    params.write_text(json.dumps({"method": "learned-multicut", "parameters": {"edge_model": edge_model}}))
    folder = tmp_path / "shifts"
    for condition, power in (("none", 1), ("dark", 4)):
        for name, (prob, label) in zip(("3", "4"), (false_boundary_map(seed, size=96) for seed in (3, 4))):
            for kind, image in (("maps", np.round(prob ** power * 255)), ("labels", label)):
                (folder / kind / condition).mkdir(parents=True, exist_ok=True)
                suffix = "_predict" if kind == "maps" else ""
                io.imsave(folder / kind / condition / f"{name}{suffix}.png", image.astype(np.uint8),
                          check_contrast=False)
    return folder, params


def test_every_candidate_is_scored_against_components_at_the_label_free_threshold(selection_set, tmp_path):
    folder, params = selection_set
    out = tmp_path / "choice.json"
    assert choice.main(["--set", str(folder), str(params), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    scores = report["v_rand"][str(folder)]
    assert set(scores) == {"none", "dark"}
    maps, labels = choice.read_condition(folder, "none")
    threshold = label_free_threshold(maps)
    assert scores["none"]["components"] == pytest.approx(
        segmentation_scores([cell_methods.threshold(p, threshold) for p in maps], labels)["v_rand"])
    defaults = cell_parameters.DEFAULT_PARAMETERS["split-components"]
    split_only = {key: defaults[key] for key in choice.SPLIT_GRID[0]}
    default = {**split_only, "boundary_levels": "ranks", "cost_map": "ranks", "beta": defaults["beta"]}
    assert choice.default_split_key() == "split-components " + json.dumps(default)
    assert scores["none"]["split-components " + json.dumps(default)] == pytest.approx(
        segmentation_scores([split_components(p, threshold) for p in maps], labels)["v_rand"])
    # the candidates before: the multicut's costs on the map itself at beta 0.5; faint read on
    # the map's ranks, or before that on the map itself
    on_values = [component_graph(p, threshold, cost_map="map", beta=0.5) for p in maps]
    for levels, key in (("ranks", {**split_only, "boundary_levels": "ranks"}), ("threshold", split_only)):
        assert scores["none"]["split-components " + json.dumps(key)] == pytest.approx(segmentation_scores(
            [split(graph, **split_only, boundary_levels=levels) for graph in on_values], labels)["v_rand"])
    learned = {"edge_model": json.loads(params.read_text())["parameters"]["edge_model"]}
    learned_default = {"enclosed": True, "min_size": 300, "faint_boundary": 0.25, "enclosed_boundary": 0.25}
    assert scores["none"]["learned-multicut " + json.dumps(learned_default)] == pytest.approx(
        segmentation_scores([cell_methods.learned_multicut(p, **learned) for p in maps], labels)["v_rand"])
    merged_across_any = {"enclosed": True, "min_size": 300, "faint_boundary": 0.25}  # the default before
    assert scores["none"]["learned-multicut " + json.dumps(merged_across_any)] == pytest.approx(segmentation_scores(
        [cell_methods.learned_multicut(p, **learned, enclosed_boundary=0.0) for p in maps], labels)["v_rand"])
    # the squared maps are unlike the fitted ones: the learned multicut gives way to components
    # there, or to split-components with its defaults where the candidate says so
    fallback = "split-components " + json.dumps(default)
    for key in (key for key in scores["dark"] if "learned" in key):
        assert scores["dark"][key] == scores["dark"][fallback if '"fallback"' in key else "components"]
    assert scores["dark"][fallback] != scores["dark"]["components"]  # the two fallbacks differ here
    assert len(report["summary"]) == len(scores["none"]) - 1
    counts = [(row[1], row[4]) for row in report["summary"]]
    assert counts == sorted(counts, key=lambda c: (-c[0], -c[1]))  # the rule's order


def test_reuse_takes_the_scores_an_earlier_report_holds_and_scores_only_the_rest(selection_set, tmp_path):
    folder, params = selection_set
    first = tmp_path / "first.json"
    assert choice.main(["--set", str(folder), str(params), "--out", str(first)]) == 0
    earlier = json.loads(first.read_text())
    earlier["v_rand"][str(folder)]["none"]["components"] = 2.0  # a mark that only reuse carries over
    marked = tmp_path / "marked.json"
    marked.write_text(json.dumps(earlier))
    again = tmp_path / "again.json"
    assert choice.main(["--set", str(folder), str(params), "--reuse", str(marked), "--out", str(again)]) == 0
    assert json.loads(again.read_text())["v_rand"][str(folder)]["none"]["components"] == 2.0
    for key in (choice.candidates()[-1], "split-components " + json.dumps(choice.SPLIT_GRID[-1])):
        del earlier["v_rand"][str(folder)]["dark"][key]  # candidates the earlier grid lacked
    marked.write_text(json.dumps(earlier))
    assert choice.main(["--set", str(folder), str(params), "--reuse", str(marked), "--out", str(again)]) == 0
    scores, fresh = json.loads(again.read_text())["v_rand"][str(folder)], json.loads(first.read_text())["v_rand"][str(folder)]
    assert scores["none"]["components"] == 2.0  # the rest still taken from the earlier report
    assert scores["dark"] == fresh["dark"]  # the missing two scored again, as a fresh run scores them
