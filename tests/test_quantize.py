"""blindsr.quantize and `blindsr export --int8`: static int8 ONNX files, calibrated and checked."""

import numpy as np
import pytest
import torch
from PIL import Image

from blindsr import archs, quantize
from blindsr.checkpoint import save_model
from blindsr.cli import main
from blindsr.errors import BlindSRError
from blindsr.export import export_onnx
from blindsr.onnx_model import OnnxModel

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture
def hr_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "hr"
    folder.mkdir()
    for i in range(3):
        small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        Image.fromarray(small).resize((96, 80), Image.BICUBIC).save(folder / f"{i}.png")
    return folder


def small_model(tmp_path):
    torch.manual_seed(0)
    net = archs.build("srresnet", scale=2, num_feat=8, num_block=1).eval()
    return net, save_model(net, tmp_path / "net.safetensors")


def test_calibration_inputs_are_seeded_lr_crops_of_both_kinds(hr_folder):
    first = quantize.calibration_inputs(str(hr_folder), 2, count=4, size=16, seed=0)
    again = quantize.calibration_inputs(str(hr_folder), 2, count=4, size=16, seed=0)
    other = quantize.calibration_inputs(str(hr_folder), 2, count=4, size=16, seed=1)
    assert [x.shape for x in first] == [(1, 3, 16, 16)] * 4
    assert all(x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1 for x in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    with pytest.raises(BlindSRError, match="calibration needs at least 1 image"):
        quantize.calibration_inputs(str(hr_folder), 2, count=0)


def test_export_int8_writes_a_smaller_close_file_with_its_recipe(tmp_path, hr_folder, capsys):
    net, path = small_model(tmp_path)
    out = tmp_path / "net.int8.onnx"
    assert main(["export", "--model", str(path), "-o", str(out), "--int8",
                 "--calibration", str(hr_folder)]) == 0
    assert "int8 outputs" in capsys.readouterr().err
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert "int8 static" in meta["quantization"] and meta["scale"] == "2"
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    x = torch.rand(1, 3, 20, 24)
    with torch.inference_mode():
        expected = net(x).clamp(0, 1)
        got = OnnxModel(out)(x).clamp(0, 1)
    assert got.shape == expected.shape
    assert 10 * torch.log10(1 / (got - expected).pow(2).mean()) > 30


def test_an_int8_file_too_far_from_the_float_one_is_not_written(tmp_path, hr_folder,
                                                                monkeypatch):
    _, path = small_model(tmp_path)
    monkeypatch.setattr(quantize, "MIN_PSNR", 1000.0)
    out = tmp_path / "deploy" / "net.onnx"
    with pytest.raises(BlindSRError, match=r"int8 graph's outputs are .* dB PSNR from the float"):
        export_onnx(path, out, int8=True, calibration=str(hr_folder))
    assert not (tmp_path / "deploy").exists()


def test_calibration_without_int8_is_refused(tmp_path, capsys):
    _, path = small_model(tmp_path)
    assert main(["export", "--model", str(path), "-o", str(tmp_path / "x.onnx"),
                 "--calibration", "T91"]) == 1
    assert "--calibration is for --int8" in capsys.readouterr().err


def test_calibration_problems_are_found_before_the_export(tmp_path, monkeypatch, shared):
    _, path = small_model(tmp_path)

    def no_export(*args, **kwargs):
        raise AssertionError("the export ran before the calibration data was checked")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    Image.new("RGB", (5, 3)).save(tiny / "a.png")
    for data, message in [(str(tiny), "no HR image of at least 32 pixels a side"),
                          (str(tmp_path / "none"), "not found"),
                          ("lr:RealSRSet", "has no HR images to calibrate with")]:
        with pytest.raises(BlindSRError, match=message):
            export_onnx(path, tmp_path / "x.onnx", int8=True, calibration=data)


def test_a_test_set_as_calibration_is_warned_about():
    with pytest.warns(UserWarning, match="calibrating on Set5\\[:2\\], a test set"):
        quantize.check_calibration_set("Set5[:2]")
