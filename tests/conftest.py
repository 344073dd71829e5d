"""Shared fixtures: small synthetic membrane images, the shared ISBI folder, the repo root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
SHARED_ISBI = ROOT.parent / "shared" / "data" / "isbi2012"
sys.path.insert(0, str(ROOT))


def synthetic_slice(size: tuple[int, int], seed: int, cells: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A membrane-like image and its label, both uint8 (H, W).

    Cells are Voronoi regions of random points; the label is 255 inside cells and 0 on
    the 2-pixel boundaries; the image is bright cells, dark membranes, plus noise.
    """
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng(seed)
    height, width = size
    points = rng.uniform(0, [height, width], size=(cells, 2))
    rows, cols = np.mgrid[0:height, 0:width]
    distances = (rows[..., None] - points[:, 0]) ** 2 + (cols[..., None] - points[:, 1]) ** 2
    regions = np.argmin(distances, axis=-1)
    membrane = find_boundaries(regions, mode="thick")
    label = np.where(membrane, 0, 255).astype(np.uint8)
    image = np.where(membrane, 60.0, 190.0) + rng.normal(0, 12, size)
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_dataset(root: Path, count: int = 6, size=(96, 96), test_count: int = 2) -> Path:
    """An ISBI-layout folder: train/image, train/label (N.png) and test (N.png)."""
    from skimage import io

    for folder in ("train/image", "train/label", "test"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, label = synthetic_slice(size, seed=index)
        io.imsave(root / "train/image" / f"{index}.png", image, check_contrast=False)
        io.imsave(root / "train/label" / f"{index}.png", label, check_contrast=False)
    for index in range(test_count):
        image, _ = synthetic_slice(size, seed=100 + index)
        io.imsave(root / "test" / f"{index}.png", image, check_contrast=False)
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """Six 96x96 training pairs and two test images in the ISBI layout."""
    return write_dataset(tmp_path / "membrane")


@pytest.fixture(scope="session")
def shared_isbi() -> Path:
    """The shared ISBI 2012 folder; skips the test when it is absent."""
    if not (SHARED_ISBI / "train" / "image").is_dir():
        pytest.skip("../shared/data/isbi2012 is not available")
    return SHARED_ISBI


def pytest_collection_modifyitems(config, items):
    """Run test_resume.py last: its interrupted trainings stop fit() by an exception, so
    that fit's clean-up (callbacks' on_train_end, its data-loading threads) never runs."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_resume.py"))


TINY = ["--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "2", "--width", "4",
        "--patch-size", "64", "--precision", "float32", "--quiet"]


def load_benchmark(name: str):
    """The script ``benchmarks/NAME.py`` as a module (the folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(*args, cwd=ROOT):
    """Run main.py in a fresh interpreter: (exit code, stdout, stderr)."""
    done = subprocess.run([sys.executable, "main.py", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def false_boundary_map(seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(probability map (H, W) float32, label (H, W) 0/255): blurred true membranes plus
    three rows and three columns of thin false boundary (map 0.05, as dark as a membrane
    but one pixel wide) crossing the cells."""
    _, label = synthetic_slice((size, size), seed=seed, cells=10)
    prob = ndimage.gaussian_filter((label > 0).astype(np.float32), 0.8)
    rng = np.random.default_rng(seed)
    for row in rng.choice(np.arange(10, size - 10), size=3, replace=False):
        prob[row, :] = np.minimum(prob[row, :], 0.05)
    for col in rng.choice(np.arange(10, size - 10), size=3, replace=False):
        prob[:, col] = np.minimum(prob[:, col], 0.05)
    prob += rng.normal(0, 0.03, prob.shape)
    return np.clip(prob, 0, 1).astype(np.float32), label
