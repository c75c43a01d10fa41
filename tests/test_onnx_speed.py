"""benchmarks/onnx_speed.py: both sides run the same model and agree."""

import pytest
import torch
from conftest import load_benchmark

from blindsr import archs
from blindsr.checkpoint import save_model

pytest.importorskip("onnxruntime")


def test_a_row_times_both_sides_of_the_same_model(tmp_path):
    script = load_benchmark("onnx_speed")
    torch.manual_seed(0)
    path = save_model(archs.build("srresnet", scale=2, num_feat=4, num_block=1),
                      tmp_path / "tiny.safetensors")
    row = script.bench(str(path), size=16, threads=1, repeats=1)
    assert row["pytorch_ms_per_mp"] > 0 and row["onnxruntime_ms_per_mp"] > 0
    assert row["ratio"] == pytest.approx(row["pytorch_ms_per_mp"] / row["onnxruntime_ms_per_mp"],
                                         rel=0.01)
    assert row["max_diff_255"] < 0.01  # the same function on both sides
