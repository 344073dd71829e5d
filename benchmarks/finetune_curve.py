"""Fine-tuning against training from scratch, by the number of labelled slices of a new stack.

    python benchmarks/finetune_curve.py --base logs/BASE/unet_membrane.keras --data data/membrane \\
        --shift "contrast 0.5" --pool 12,13,14,15,16,17,18,19 --select 20 --held-out 25,26,27,28,29 \\
        --counts 0,1,2,4,8 --out logs/finetune_curve

The "new stack" is the ISBI slices under one of ``benchmarks/shifts.py``'s shifts (a
new microscope), saved as 8-bit images. ``--base`` is a model trained on other ISBI
slices: none of ``--pool``, ``--select`` or ``--held-out`` may have been trained on.
For each count k, the first k ``--pool`` slices are the labelled ones; with them and the
``--select`` slice (which chooses the checkpoint) two runs are trained through the
command line, as a user would:

* fine-tuned: ``main.py train --recipe finetune --pretrained BASE`` (200 steps, lr 1e-4);
* from scratch: ``main.py train --recipe cpu --epochs 10 --steps-per-epoch 20`` (the same
  200 steps of the same crops, at the cpu recipe's learning rate).

k = 0 is the base model as it is. Every model predicts the ``--held-out`` slices (never
trained on, choosing nothing), scored with the official maximum over thresholds and at
the fixed threshold 0.5. Writes ``OUT/finetune_curve.json`` and ``OUT/finetune_curve.png``
and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load_shifts():
    spec = importlib.util.spec_from_file_location("shifts", ROOT / "benchmarks" / "shifts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shifts = _load_shifts()  # benchmarks/shifts.py: its SHIFTS and shifted_slice


def write_stack(data: Path, names: list[str], shift: str, out: Path) -> None:
    """OUT/image/N.png and OUT/label/N.png: the ``names`` slices of ``data`` under ``shift``."""
    from skimage import io

    from isbi_unet.io.pairs import read_label
    from isbi_unet.protocol import find_training_folders

    image_dir, label_dir = find_training_folders(data)
    for folder in ("image", "label"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        image = io.imread(image_dir / f"{name}.png").astype(np.float64) / 255.0
        label = (read_label(label_dir, name) > 0).astype(np.float64)
        image_u8, label_u8 = shifts.shifted_slice(shift, image, label, seed=index)
        io.imsave(out / "image" / f"{name}.png", image_u8, check_contrast=False)
        io.imsave(out / "label" / f"{name}.png", label_u8, check_contrast=False)


def train(folder: Path, logs: Path, run: str, select: str, held_out: str, extra: list[str]) -> tuple[Path, float]:
    """Train through ``main.py train``; (model path, minutes). A finished run is reused."""
    model = logs / run / "unet_membrane.keras"
    if model.exists():
        return model, json.loads((logs / run / "run.json").read_text()).get("train_seconds", 0.0) / 60
    started = time.monotonic()
    command = [sys.executable, str(ROOT / "main.py"), "train", "--data", str(folder), "--val-ids", select,
               "--test-ids", held_out, "--logs", str(logs), "--run", run, "--quiet", *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return model, (time.monotonic() - started) / 60


def score(model_path: Path, folder: Path, names: list[str]) -> dict:
    """Official maximum over thresholds and V_rand at 0.5 of ``names`` (maps without TTA)."""
    from skimage import io

    from isbi_unet.evaluation.metric import isbi_scores
    from isbi_unet.network import load_model
    from isbi_unet.prediction.predict import predict_image

    network = load_model(model_path)
    maps = [predict_image(network, io.imread(folder / "image" / f"{n}.png")[..., None] / np.float32(255))[..., 0]
            for n in names]
    labels = [io.imread(folder / "label" / f"{n}.png") for n in names]
    scores = isbi_scores(maps, labels)
    at_half = scores["v_rand_curve"][[round(t, 1) for t in scores["thresholds"]].index(0.5)]
    return {"v_rand_official": scores["v_rand"], "v_rand_threshold": scores["v_rand_threshold"],
            "v_rand_at_0.5": at_half, "v_info_official": scores["v_info"]}


def plot(rows: list[dict], path: Path, shift: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    for kind, style in (("fine-tuned", "o-"), ("from scratch", "s--")):
        points = [(row["labelled"], row[kind]["v_rand_official"]) for row in rows if kind in row]
        if points:
            axis.plot(*zip(*points), style, label=kind)
    base = [row for row in rows if row["labelled"] == 0]
    if base:
        axis.axhline(base[0]["base"]["v_rand_official"], color="grey", lw=0.8, label="base model, no labels")
    axis.set_xlabel("labelled slices of the new stack")
    axis.set_ylabel("held-out V_rand (best threshold)")
    axis.set_title(f"ISBI under '{shift}': fine-tuning vs scratch", fontsize=10)
    axis.set_xticks([row["labelled"] for row in rows])
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="a model trained on other slices of the stack")
    parser.add_argument("--data", type=Path, default=Path("data/membrane"))
    parser.add_argument("--shift", default="contrast 0.5", help="one of benchmarks/shifts.py's SHIFTS (default: %(default)s)")
    parser.add_argument("--pool", default="12,13,14,15,16,17,18,19", help="labelled slices, taken in this order")
    parser.add_argument("--select", default="20", help="the slice that chooses each run's checkpoint")
    parser.add_argument("--held-out", default="25,26,27,28,29", help="slices scored, never trained on")
    parser.add_argument("--counts", default="0,1,2,4,8", help="numbers of labelled slices")
    parser.add_argument("--out", type=Path, default=Path("logs/finetune_curve"))
    args = parser.parse_args(argv)
    from isbi_unet.hardware import start_backend

    start_backend()
    pool, held_out = args.pool.split(","), args.held_out.split(",")
    counts = [int(k) for k in args.counts.split(",")]
    if max(counts) > len(pool) or set(pool) & set(held_out) or args.select in pool + held_out:
        parser.error("the counts must fit the pool, and pool, --select and --held-out must be disjoint")
    if args.shift not in shifts.SHIFTS:
        parser.error(f"unknown shift {args.shift!r}")
    rows = []
    for k in counts:
        folder = args.out / f"stack{k}"
        write_stack(args.data, pool[:k] + [args.select] + held_out, args.shift, folder)
        row: dict = {"labelled": k, "names": pool[:k]}
        if k == 0:
            row["base"] = score(args.base, folder, held_out)
        else:
            for kind, extra in (("fine-tuned", ["--recipe", "finetune", "--pretrained", str(args.base)]),
                                ("from scratch", ["--recipe", "cpu", "--epochs", "10", "--steps-per-epoch", "20"])):
                run = f"{'finetune' if kind == 'fine-tuned' else 'scratch'}{k}"
                model, minutes = train(folder, args.out / "logs", run, args.select, args.held_out, extra)
                row[kind] = dict(score(model, folder, held_out), minutes=minutes)
        rows.append(row)
        print(json.dumps(row), flush=True)
        (args.out / "finetune_curve.json").write_text(json.dumps({"shift": args.shift, "rows": rows}, indent=2))
    plot(rows, args.out / "finetune_curve.png", args.shift)
    print("| labelled slices | fine-tuned | from scratch |\n|---|---|---|")
    for row in rows:
        cells = [f"{row[kind]['v_rand_official']:.4f} / {row[kind]['v_rand_at_0.5']:.4f}" if kind in row else "-"
                 for kind in ("fine-tuned", "from scratch")]
        if row["labelled"] == 0:
            cells = [f"{row['base']['v_rand_official']:.4f} / {row['base']['v_rand_at_0.5']:.4f} (base)"] * 2
        print(f"| {row['labelled']} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
