"""benchmarks/model_speed.py: every model timed on the same input, ratios to the first."""

import pytest
import torch
from conftest import load_benchmark

from blindsr import archs
from blindsr.checkpoint import save_model


def test_rows_time_each_model_and_divide_by_the_first(tmp_path):
    script = load_benchmark("model_speed")
    torch.manual_seed(0)
    path = save_model(archs.build("srresnet", num_feat=4, num_block=1),
                      tmp_path / "tiny.safetensors")
    rows = script.measure([str(path), "arch:srvgg:num_feat=4,num_conv=1"], size=16, repeats=1,
                          tile=None)
    assert [r["model"] for r in rows] == [str(path), "arch:srvgg:num_feat=4,num_conv=1"]
    assert rows[0]["time_vs_first"] == 1.0
    assert rows[1]["time_vs_first"] == pytest.approx(rows[1]["ms_per_mp"] / rows[0]["ms_per_mp"],
                                                     rel=0.01)
    assert rows[1]["params"] == sum(p.numel() for p in archs.build(
        "srvgg", num_feat=4, num_conv=1).parameters())
    # srvgg's convs all run at the LR size: 3->4, 4->4, 4->48 channels, 3x3
    assert rows[1]["macs_per_lr_pixel"] == 9 * (3 * 4 + 4 * 4 + 4 * 48)
