"""Cells under the shifts a new microscope or lab brings: does each cell method hold?

    python benchmarks/shifts.py --model logs/RUN/unet_membrane.keras \\
        --params logs/RUN/instance_parameters.json --second-model logs/OTHER/unet_membrane.keras \\
        --data data/membrane --names 25,26,27,28,29 --out logs/shifts

The ``--names`` slices (held out from both models' training and selection) are shifted
(:data:`SHIFTS`: rescaled, gamma, contrast halved, Gaussian noise, slight blur, dark
organelles inside cells; the
labels are rescaled with the images, by nearest neighbour), saved as 8-bit images as a
user's would be, and predicted by ``--model`` (TTA as the run chose it on its selection
slices, when ``--params`` sits in a run folder; else ``--tta``). One more condition is the
unshifted slices predicted by ``--second-model``, a differently trained network (or its maps,
``--second-maps DIR``, e.g. from a machine where the model stays); two more
(:data:`CALIBRATIONS`) are the unshifted maps raised to a power, as a network with another
calibration would give them (one network's 0.5 is another's 0.87 or 0.03); and three
(:data:`PIXEL_SIZED`) are the rescaled slices predicted and segmented with ``--pixel-size``, as a
user who states the pixel size gets them. Maps are
written as ``OUT/maps/CONDITION/N_predict.png`` (8-bit, as ``predict`` writes them) and
reused when present.

On every condition's maps each cell method runs with the parameters a user would have
(the defaults, and the run's fitted ``--params`` file, which gives way to
``split-components`` on maps unlike those it was fitted on, as ``segment`` does; and once
more without that check), beside connected components of the same map at 0.5 and at the threshold
:func:`isbi_unet.cells.calibration.label_free_threshold` finds without labels; the
official maximum over thresholds (chosen on these labels) is the map's ceiling. Scores: V_rand, V_info and their split/merge parts. Writes
``OUT/shifts.json`` and prints a Markdown table (one row per method, one column per
condition, then the mean). ``--combine OUT1/shifts.json OUT2/shifts.json ...`` prints the
mean of several runs instead, e.g. one per crossval fold on its own test block.
``--rescore split-components`` scores that method's rows again on the kept maps and keeps
the other rows (after a change to its defaults).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isbi_unet.cells import parameters as cell_parameters
from isbi_unet.cells.calibration import label_free_threshold
from isbi_unet.evaluation.metric import isbi_scores, segmentation_scores
from isbi_unet.evaluation.slice_scores import SCORE_PARTS, as_probability

Image = np.ndarray  # (H, W) float in [0, 1]


def rescaled(factor: float) -> Callable[[Image, Image, int], tuple[Image, Image]]:
    def shift(image: Image, label: Image, seed: int) -> tuple[Image, Image]:
        from skimage.transform import rescale

        return (rescale(image, factor, order=1, anti_aliasing=factor < 1, mode="reflect"),
                rescale(label, factor, order=0, anti_aliasing=False, mode="reflect"))
    return shift


def on_image(function: Callable[[Image, int], Image]) -> Callable[[Image, Image, int], tuple[Image, Image]]:
    return lambda image, label, seed: (function(image, seed), label)


def _contrast(image: Image, factor: float) -> Image:
    return image.mean() + factor * (image - image.mean())


def dark_organelles(image: Image, label: Image, seed: int, per_megapixel: float = 150.0,
                    radii: tuple[float, float] = (4.0, 14.0), darkness: float = 0.45) -> tuple[Image, Image]:
    """Dark round blobs inside cells, as mitochondria and vesicles look in another tissue:
    ``per_megapixel`` blobs per 10**6 px of radius drawn from ``radii`` (px), each at least
    its radius plus 3 px away from the nearest membrane pixel of ``label``, the image
    multiplied by ``darkness`` in them (soft edges). The label is unchanged: they are
    inside cells."""
    rng = np.random.default_rng(seed)
    room = ndimage.distance_transform_edt(label > 0.5)
    shade = np.zeros(image.shape)
    rows, cols = np.indices(image.shape)
    for _ in range(int(round(per_megapixel * image.size / 1e6))):
        radius = rng.uniform(*radii)
        places = np.argwhere(room > radius + 3)
        if not len(places):
            continue
        row, col = places[rng.integers(len(places))]
        inside = np.clip(radius + 0.5 - np.hypot(rows - row, cols - col), 0.0, 1.0)
        shade = np.maximum(shade, inside)
    return image * (1.0 - (1.0 - darkness) * shade), label


# name -> shift(image, label, seed) -> (image, label); images (H, W) in [0, 1], labels 0/1
SHIFTS: dict[str, Callable[[Image, Image, int], tuple[Image, Image]]] = {
    "none": lambda image, label, seed: (image, label),
    "scale 0.8": rescaled(0.8),
    "scale 1.15": rescaled(1.15),
    "scale 1.3": rescaled(1.3),
    "gamma 0.7": on_image(lambda image, seed: image ** 0.7),
    "gamma 1.4": on_image(lambda image, seed: image ** 1.4),
    "contrast 0.5": on_image(lambda image, seed: _contrast(image, 0.5)),
    "noise 0.05": on_image(lambda image, seed: image + np.random.default_rng(seed).normal(0, 0.05, image.shape)),
    "blur 1 px": on_image(lambda image, seed: ndimage.gaussian_filter(image, 1.0)),
    "dark organelles": dark_organelles,
}
SECOND_MODEL = "second model"
# name -> exponent: the unshifted maps (8-bit, as saved) raised to it, saved again as 8-bit
CALIBRATIONS: dict[str, float] = {"map^0.2": 0.2, "map^5": 5.0}
# name -> (shift, the pixel size in nm that a user of the rescaled slices states)
PIXEL_SIZED: dict[str, tuple[str, float]] = {
    f"scale {factor:g} at {4.0 / factor:.3g} nm": (f"scale {factor:g}", 4.0 / factor) for factor in (0.8, 1.15, 1.3)}
CONDITIONS: tuple[str, ...] = (*SHIFTS, SECOND_MODEL, *CALIBRATIONS, *PIXEL_SIZED)


def recalibrated(prediction_png: np.ndarray, exponent: float) -> np.ndarray:
    """An 8-bit map (H, W) uint8 raised to ``exponent`` in [0, 1]: the same ranking of pixels
    on another scale, uint8 (H, W)."""
    return np.round((prediction_png.astype(np.float64) / 255.0) ** exponent * 255.0).astype(np.uint8)


def shifted_slice(name: str, image: Image, label: Image, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One slice under the shift ``name``: (image uint8 (H', W'), label uint8 0/255 (H', W'))."""
    shifted, shifted_label = SHIFTS[name](image, label, seed)
    return (np.round(np.clip(shifted, 0, 1) * 255).astype(np.uint8),
            np.where(shifted_label > 0.5, 255, 0).astype(np.uint8))


def make_maps(model_path: Path, second_model: Path | None, data: Path, names: Sequence[str], out: Path,
              tta: bool, conditions: Sequence[str], second_maps: Path | None = None) -> None:
    """Write OUT/images/CONDITION/N.png, OUT/labels/CONDITION/N.png and the maps
    OUT/maps/CONDITION/N_predict.png of every condition; existing maps are kept. The
    :data:`CALIBRATIONS` are made from the maps of ``none`` (made first when missing).
    ``second_maps``: a folder of another network's N_predict.png maps of the unshifted
    slices, copied as the second model's condition instead of predicting it."""
    from skimage import io

    from isbi_unet.io.pairs import read_label
    from isbi_unet.network import downsampling_factor, load_model
    from isbi_unet.prediction.pixel_size import at_pixel_size
    from isbi_unet.prediction.predict import model_predict_fn, predict_image, prediction_to_png
    from isbi_unet.protocol import find_training_folders

    image_dir, label_dir = find_training_folders(data)
    models: dict[Path, Any] = {}
    ordered = list(dict.fromkeys([*(["none"] if set(conditions) & set(CALIBRATIONS) else []), *conditions]))
    for condition in ordered:
        shift, path = ("none", second_model) if condition == SECOND_MODEL else (condition, model_path)
        shift, pixel_size = PIXEL_SIZED.get(condition, (shift, None))
        folders = {kind: out / kind / condition for kind in ("images", "labels", "maps")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        for index, name in enumerate(names):
            target = folders["maps"] / f"{name}_predict.png"
            if target.exists():
                continue
            if condition in CALIBRATIONS:
                for kind in ("images", "labels"):
                    (folders[kind] / f"{name}.png").write_bytes((out / kind / "none" / f"{name}.png").read_bytes())
                unshifted = io.imread(out / "maps" / "none" / f"{name}_predict.png")
                io.imsave(target, recalibrated(unshifted, CALIBRATIONS[condition]), check_contrast=False)
                continue
            image = io.imread(image_dir / f"{name}.png").astype(np.float64) / 255.0
            label = (read_label(label_dir, name) > 0).astype(np.float64)
            image_u8, label_u8 = shifted_slice(shift, image, label, seed=index)
            io.imsave(folders["images"] / f"{name}.png", image_u8, check_contrast=False)
            io.imsave(folders["labels"] / f"{name}.png", label_u8, check_contrast=False)
            if condition == SECOND_MODEL and second_maps is not None:
                target.write_bytes((second_maps / f"{name}_predict.png").read_bytes())
                continue
            if path not in models:
                models[path] = load_model(path)
            predict_fn = None if pixel_size is None else at_pixel_size(
                model_predict_fn(models[path]), pixel_size, downsampling_factor(models[path]))
            prediction = predict_image(models[path], image_u8[..., None] / np.float32(255.0), tta=tta,
                                       predict_fn=predict_fn)
            io.imsave(target, prediction_to_png(prediction), check_contrast=False)
        print(f"maps of {condition}: {folders['maps']}", flush=True)


def cell_rows(params_file: Path | None) -> list[tuple[str, str, dict[str, Any]]]:
    """(row title, method, parameters) of every cell method a user would run."""
    rows = [("components at 0.5", "threshold", {"threshold": 0.5})]
    rows += [(f"{method}, defaults", method, {}) for method in ("watershed", "multicut", "gasp", "split-components")]
    if params_file is not None:
        chosen = json.loads(params_file.read_text())
        rows.append((f"{chosen['method']}, the run's fitted file", chosen["method"], chosen["parameters"]))
        if chosen["method"] in cell_parameters.LEARNED_METHODS:  # the same without its check of the maps
            unchecked = {**chosen["parameters"], "edge_model": {key: value for key, value in
                                                                chosen["parameters"]["edge_model"].items()
                                                                if key != "map_quantiles"}}
            rows.append((f"{chosen['method']}, the run's fitted file, unchecked", chosen["method"], unchecked))
    return rows


def score_condition(out: Path, condition: str, names: Sequence[str],
                    rows: Sequence[tuple[str, str, dict]]) -> dict[str, dict]:
    """Scores of every row on one condition's maps (OUT/maps/CONDITION against
    OUT/labels/CONDITION): {title: {v_rand, v_info, their parts, segments per slice}}."""
    from skimage import io

    maps = [as_probability(io.imread(out / "maps" / condition / f"{name}_predict.png")) for name in names]
    labels = [io.imread(out / "labels" / condition / f"{name}.png") for name in names]
    official = isbi_scores(maps, labels)
    result = {"map, best threshold on these labels": {"v_rand": official["v_rand"], "v_info": official["v_info"],
                                                      "threshold": official["v_rand_threshold"]}}
    threshold = label_free_threshold(maps)
    pixel_size = PIXEL_SIZED.get(condition, ("", None))[1]  # given to segment as to predict
    candidates = [("components, label-free threshold", "threshold", {"threshold": threshold}), *rows]
    for title, method, parameters in candidates:
        method, parameters, _ = cell_parameters.method_for_maps(method, parameters, maps)  # as segment does
        segmentations = [cell_parameters.segment(prob, method, parameters, pixel_size) for prob in maps]
        scores = segmentation_scores(segmentations, labels)
        result[title] = {key: scores[key] for key in ("v_rand", "v_info") + SCORE_PARTS}
        result[title]["segments"] = statistics.mean(entry["segments"] for entry in scores["per_slice"])
    result["components, label-free threshold"]["threshold"] = threshold
    return result


def markdown(report: dict[str, dict[str, dict]], key: str = "v_rand") -> str:
    """Rows: methods; columns: conditions, then the mean over them."""
    conditions = list(report)
    titles = list(report[conditions[0]])
    lines = ["| " + " | ".join(["method", *conditions, "mean"]) + " |", "|" + "---|" * (len(conditions) + 2)]
    for title in titles:
        values = [report[condition][title][key] for condition in conditions]
        cells = [f"{value:.4f}" for value in values] + [f"{statistics.mean(values):.4f}"]
        lines.append("| " + " | ".join([title, *cells]) + " |")
    return "\n".join(lines)


def combine(reports: Sequence[Path]) -> dict[str, dict[str, dict]]:
    """The mean over several ``shifts.json`` files (e.g. one per crossval fold) of every
    condition's and method's scores, for the conditions and methods all of them have."""
    parts = [json.loads(path.read_text())["conditions"] for path in reports]
    combined: dict[str, dict[str, dict]] = {}
    for condition in [c for c in parts[0] if all(c in part for part in parts)]:
        titles = [t for t in parts[0][condition] if all(t in part[condition] for part in parts)]
        combined[condition] = {title: {key: statistics.mean(part[condition][title][key] for part in parts)
                                       for key in parts[0][condition][title]
                                       if all(part[condition][title].get(key) is not None for part in parts)}
                               for title in titles}
    return combined


def run_tta(params_file: Path | None) -> bool | None:
    """The TTA choice of the run whose folder holds ``params_file``, or None."""
    scores = params_file and params_file.parent / "selection_scores.json"
    if scores and scores.is_file():
        return bool(json.loads(scores.read_text()).get("tta"))
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="the run's unet_membrane.keras")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="SHIFTS_JSON",
                        help="instead of a run: the mean of these shifts.json files (e.g. one per crossval fold)")
    parser.add_argument("--params", type=Path, help="the run's instance_parameters.json (its fitted cell method)")
    parser.add_argument("--second-model", type=Path, help="a differently trained model (another seed, width or recipe)")
    parser.add_argument("--second-maps", type=Path, help="instead of --second-model: a folder of its maps of the "
                                                          "unshifted slices (N_predict.png, as predict writes them)")
    parser.add_argument("--data", type=Path, default=Path("data/membrane"), help="ISBI layout with train/image, train/label")
    parser.add_argument("--names", default="25,26,27,28,29", help="held-out slices (default: %(default)s)")
    parser.add_argument("--conditions", help="comma-separated subset of the conditions (default: all; the second "
                                             "model's with --second-model)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="test-time augmentation (default: the run's choice next to --params, else off)")
    parser.add_argument("--out", type=Path, default=Path("logs/shifts"), help="where images, maps and shifts.json go")
    parser.add_argument("--rescore", metavar="METHOD,...",
                        help="score only these cell methods' rows again (after a change to them) and keep the other "
                             "rows of OUT/shifts.json")
    args = parser.parse_args(argv)
    from isbi_unet.hardware import start_backend

    start_backend()
    if args.combine:
        print(markdown(combine(args.combine)))
        return 0
    if args.model is None:
        parser.error("give --model (or --combine)")
    second = args.second_model or args.second_maps
    conditions = [name for name in CONDITIONS if name != SECOND_MODEL or second]
    if args.conditions:
        conditions = [name.strip() for name in args.conditions.split(",")]
        unknown = [name for name in conditions if name not in CONDITIONS]
        if unknown or (SECOND_MODEL in conditions and not second):
            parser.error(f"unknown conditions {unknown}" if unknown else
                         "the second model's condition needs --second-model or --second-maps")
    names = [name for name in args.names.split(",") if name]
    if args.second_maps and SECOND_MODEL in conditions:
        missing = [name for name in names if not (args.second_maps / f"{name}_predict.png").is_file()]
        if missing:
            parser.error(f"--second-maps {args.second_maps} has no {missing[0]}_predict.png")
    tta = args.tta if args.tta is not None else bool(run_tta(args.params))
    make_maps(args.model, args.second_model, args.data, names, args.out, tta, conditions, args.second_maps)
    rows = cell_rows(args.params)
    kept: dict[str, dict] = {}
    if args.rescore:
        rows = [row for row in rows if row[1] in args.rescore.split(",")]
        kept = json.loads((args.out / "shifts.json").read_text())["conditions"]
    report = {}
    for condition in conditions:
        report[condition] = {**kept.get(condition, {}), **score_condition(args.out, condition, names, rows)}
        print(f"scored {condition}", flush=True)
    (args.out / "shifts.json").write_text(json.dumps({"names": names, "tta": tta, "conditions": report}, indent=2) + "\n")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
