"""benchmarks/onnx_int8.py: one row times and scores both files of the same model."""

import json

import pytest
import torch
from conftest import load_benchmark

from blindsr import archs
from blindsr.checkpoint import save_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def test_a_row_compares_the_float_and_int8_files(tmp_path, shared):
    script = load_benchmark("onnx_int8")
    torch.manual_seed(0)
    path = save_model(archs.build("srresnet", scale=4, num_feat=8, num_block=1),
                      tmp_path / "tiny.safetensors")
    out = tmp_path / "int8.json"
    script.main(["--model", str(path), "--data", "Set5[:1]", "--degrade", "clean", "--size",
                 "32", "--repeats", "1", "--threads", "1", "--out", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["mib"]["int8"] < row["mib"]["float32"]
    assert row["ratio"] == pytest.approx(row["ms_per_mp"]["float32"] / row["ms_per_mp"]["int8"],
                                         rel=0.01)
    assert set(row["psnr"]) == {"float32/Set5[:1]/clean", "int8/Set5[:1]/clean"}
    assert row["int8_vs_float_psnr"] >= 35
