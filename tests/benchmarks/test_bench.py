"""benchmarks/bench.py: the FLOP count, the command line, and one quick end-to-end run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks import bench, flops
from conftest import ROOT
from model import unet

# The seed's 24 convolutions at 256x256: (output side in px, kernel, Cin, Cout).
SEED_CONVS = [
    (256, 3, 1, 64), (256, 3, 64, 64),            # down1
    (128, 3, 64, 128), (128, 3, 128, 128),        # down2
    (64, 3, 128, 256), (64, 3, 256, 256),         # down3
    (32, 3, 256, 512), (32, 3, 512, 512),         # down4
    (16, 3, 512, 1024), (16, 3, 1024, 1024),      # bottleneck
    (32, 2, 1024, 512), (32, 3, 1024, 512), (32, 3, 512, 512),   # up4
    (64, 2, 512, 256), (64, 3, 512, 256), (64, 3, 256, 256),     # up3
    (128, 2, 256, 128), (128, 3, 256, 128), (128, 3, 128, 128),  # up2
    (256, 2, 128, 64), (256, 3, 128, 64), (256, 3, 64, 64),      # up1
    (256, 3, 64, 2), (256, 1, 2, 1),              # head_conv, probability
]


def test_unet_flops_matches_a_hand_count_of_the_seed():
    hand = sum(2 * side * side * k * k * cin * cout for side, k, cin, cout in SEED_CONVS)
    assert flops.unet_flops(64) == hand == 109_211_549_696
    assert flops.unet_flops(64) / 1e9 == pytest.approx(109, rel=0.03)


def test_unet_flops_scale_with_width_and_size():
    ratio = flops.unet_flops(32) / flops.unet_flops(16)
    assert ratio == pytest.approx(4, rel=0.01)  # only the input conv and the head are linear
    assert flops.unet_flops(16, size=(512, 512)) == 4 * flops.unet_flops(16)


@pytest.mark.parametrize("width, depth, size, channels", [
    (64, 4, (256, 256), 1), (4, 4, (64, 96), 1), (8, 3, (32, 48), 3), (5, 2, (16, 16), 2),
])
def test_analytic_count_agrees_with_the_layer_walk(width, depth, size, channels):
    network = unet(input_size=(*size, channels), width=width, depth=depth, compile=False)
    assert flops.model_conv_flops(network) == flops.unet_flops(width, depth, size, channels)


def test_precision_overrides():
    names = ["default", "baseline"]
    assert bench.parse_precisions([], names) == {"default": None, "baseline": None}
    assert bench.parse_precisions(["baseline=bfloat16"], names) == {"default": None, "baseline": "bfloat16"}
    assert bench.parse_precisions(["float32", "default=mixed"], names) == {"default": "mixed", "baseline": "float32"}
    with pytest.raises(bench.UserError):
        bench.parse_precisions(["fp8"], names)
    with pytest.raises(bench.UserError):
        bench.parse_precisions(["other=float32"], names)


@pytest.mark.parametrize("extra", [[], ["--configs", "default,nonsense"]])
def test_missing_data_or_bad_config_is_one_error_line(tmp_path, tiny_dataset, capsys, extra):
    data = tiny_dataset if extra else tmp_path / "absent"
    out = tmp_path / "out.json"
    assert bench.main(["--quick", "--data", str(data), "--json", str(out), *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert (str(data) in lines[0]) if not extra else ("nonsense" in lines[0])
    assert not out.exists()


def test_quick_run_writes_both_configs_and_the_ratio(tmp_path, tiny_dataset):
    out = tmp_path / "bench.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "benchmarks/bench.py", "--quick", "--data", str(tiny_dataset), "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "default/baseline" in result.stdout and "peak RSS" in result.stdout
    report = json.loads(out.read_text())
    assert {"command", "argv", "machine", "settings", "flops", "matmul_peak", "configs", "ratio"} <= set(report)
    assert "--quick" in report["command"] and report["argv"][0] == "--quick"
    assert {"model", "flags_of_note"} <= set(report["machine"]["cpu"])
    assert {"cores", "keras", "tensorflow", "backend", "date"} <= set(report["machine"])
    assert report["flops"]["forward_flop_per_image"] == flops.unet_flops(4, size=(64, 64))
    assert report["flops"]["layer_walk_forward_gflop_per_image"] == report["flops"]["forward_gflop_per_image"]
    for dtype in ("float32", "bfloat16"):
        assert report["matmul_peak"][dtype]["gflops"] > 0
    configs = report["configs"]
    assert set(configs) == {"default", "baseline"}
    from isbi_unet.hardware import cpu_has_bfloat16

    assert configs["default"]["dtype_policy"] == ("mixed_bfloat16" if cpu_has_bfloat16() else "float32")
    assert configs["baseline"]["dtype_policy"] == "float32"
    assert configs["default"]["workers"] == 2 and configs["baseline"]["workers"] is None
    for figures in configs.values():
        assert figures["width"] == 4 and figures["peak_rss_mib"] > 0
        for batch in ("batch_2", "batch_8"):
            train = figures["train"][batch]
            assert len(train["pipeline_step_times_s"]) == len(train["fixed_step_times_s"]) == 2
            assert len(train["fit_fixed_step_times_s"]) == 2
            for key in ("pipeline_images_per_s", "fit_fixed_images_per_s", "fixed_images_per_s",
                        "train_step_gflops", "fraction_of_peak"):
                assert train[key] > 0
            assert {"pipeline_overhead_percent", "fit_overhead_percent"} <= set(train)
        assert set(figures["predict_s_per_slice"]) == {
            "whole", "whole_tta", "tile", "tile_tta", "resize", "resize_tta"}
        assert all(seconds > 0 for seconds in figures["predict_s_per_slice"].values())
    ratio = report["ratio"]
    assert ratio["train"]["batch_8"]["pipeline_images_per_s"] == pytest.approx(
        configs["default"]["train"]["batch_8"]["pipeline_images_per_s"]
        / configs["baseline"]["train"]["batch_8"]["pipeline_images_per_s"])
    assert set(ratio["predict_s_per_slice"]) == set(configs["default"]["predict_s_per_slice"])
    assert ratio["peak_rss_mib"] > 0


def test_config_specs_carry_their_own_precision():
    specs = bench.parse_configs("default:float32, default:bfloat16:xla", [])
    assert specs == {"default:float32": ("default", "float32", None),
                     "default:bfloat16:xla": ("default", "bfloat16", True)}
    assert bench.parse_configs("default:noxla,baseline", ["baseline=mixed"]) == {
        "default:noxla": ("default", None, False), "baseline": ("baseline", "mixed", None)}
    for bad in ("default:fp8", "default,default", "", "seed", "default:xla:jit"):
        with pytest.raises(bench.UserError):
            bench.parse_configs(bad, [])


def test_one_run_can_time_two_precisions_with_elastic_augmentation(tmp_path, tiny_dataset):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/bench.py", "--quick", "--data", str(tiny_dataset), "--json", str(out), "--batch-sizes", "2",
         "--configs", "default:float32,default:bfloat16", "--elastic", "10", "--skip-predict", "--jit-compile", "off"],
        cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "default:float32/default:bfloat16" in result.stdout
    report = json.loads(out.read_text())
    first, second = report["configs"]["default:float32"], report["configs"]["default:bfloat16"]
    assert (first["dtype_policy"], second["dtype_policy"]) == ("float32", "mixed_bfloat16")
    assert first["aug_dict"]["elastic_sigma"] == 10 and first["jit_compile"] is False
    assert first["predict_s_per_slice"] is None
    assert report["ratio"]["train"]["batch_2"]["fixed_images_per_s"] == pytest.approx(
        first["train"]["batch_2"]["fixed_images_per_s"] / second["train"]["batch_2"]["fixed_images_per_s"])
