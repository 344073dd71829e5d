"""benchmarks/score_folds.py: the folds of benchmarks/train_folds_gpu.sh are crossval's."""

import re

import numpy as np
import pytest
from skimage import io

from conftest import ROOT, load_benchmark


@pytest.fixture
def thirty_slices(tmp_path):
    """A data folder of 30 tiny image/label pairs named 0..29."""
    for sub in ("image", "label"):
        (tmp_path / "train" / sub).mkdir(parents=True)
    for i in range(30):
        io.imsave(tmp_path / "train" / "image" / f"{i}.png", np.full((16, 16), i, np.uint8), check_contrast=False)
        io.imsave(tmp_path / "train" / "label" / f"{i}.png", np.full((16, 16), 255, np.uint8), check_contrast=False)
    return tmp_path


@pytest.mark.parametrize("fold", [1, 2, 5, 6])
def test_fold_split_matches_the_gpu_script_and_crossval(thirty_slices, fold):
    score_folds = load_benchmark("score_folds")
    test, selection = score_folds.fold_split(thirty_slices, fold)
    assert test == [str(i) for i in range(5 * (fold - 1), 5 * fold)]
    assert selection == [str(i) for i in range(5 * (fold % 6), 5 * (fold % 6) + 5)]
    script = (ROOT / "benchmarks" / "train_folds_gpu.sh").read_text()
    blocks = re.search(r"blocks=\((.*)\)", script).group(1).replace('"', "").split()
    assert blocks[fold - 1].split(",") == test
    assert "--val-ids \"${blocks[$(((k + 1) % 6))]}\"" in script
