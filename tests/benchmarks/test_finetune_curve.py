"""benchmarks/finetune_curve.py: the new stack it trains on, and the slices it keeps apart."""

from __future__ import annotations


import numpy as np
import pytest
from skimage import io

from conftest import load_benchmark, write_dataset


curve = load_benchmark("finetune_curve")


def test_the_new_stack_is_the_shifted_slices_with_their_labels(tmp_path):
    data = write_dataset(tmp_path / "data", count=4, size=(48, 48), test_count=0)
    curve.write_stack(data, ["1", "3"], "contrast 0.5", tmp_path / "stack")
    assert sorted(p.name for p in (tmp_path / "stack" / "image").iterdir()) == ["1.png", "3.png"]
    original = io.imread(data / "train/image/3.png").astype(float)
    shifted = io.imread(tmp_path / "stack/image/3.png").astype(float)
    assert np.ptp(shifted) == pytest.approx(0.5 * np.ptp(original), abs=2)
    np.testing.assert_array_equal(io.imread(tmp_path / "stack/label/3.png"), io.imread(data / "train/label/3.png"))


@pytest.mark.parametrize("extra", [
    ["--pool", "1,2", "--held-out", "2,3"],  # a held-out slice in the pool
    ["--pool", "1,2", "--select", "2"],  # the selection slice in the pool
    ["--pool", "1,2", "--counts", "0,4"],  # more labelled slices than the pool has
    ["--shift", "sepia"],
])
def test_slices_with_two_roles_and_unknown_shifts_are_refused(tmp_path, extra):
    with pytest.raises(SystemExit):
        curve.main(["--base", str(tmp_path / "m.keras"), "--out", str(tmp_path / "out"), *extra])
    assert not (tmp_path / "out").exists()
