import importlib.util

import numpy as np
import pytest
import torch

from blindsr import archs, export
from blindsr.checkpoint import save_model
from blindsr.cli import main
from blindsr.ensemble import SelfEnsemble
from blindsr.errors import BlindSRError
from blindsr.export import export_onnx
from tests.conftest import make_code_matter

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")


def run_onnx(path, x: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"lr": x.numpy()})[0])


def metadata(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_a_checkpoint_exports_with_any_batch_and_size(tmp_path, capsys):
    torch.manual_seed(0)
    model = archs.build("srresnet", scale=2, num_feat=8, num_block=1).eval()
    checkpoint = save_model(model, tmp_path / "net.safetensors")
    out = tmp_path / "deploy" / "net.onnx"
    assert main(["export", "--model", str(checkpoint), "-o", str(out)]) == 0
    assert "onnxruntime matches PyTorch within" in capsys.readouterr().err
    x = torch.rand(3, 3, 13, 21)
    with torch.no_grad():
        assert torch.allclose(run_onnx(out, x), model(x), atol=1e-5)
    meta = metadata(out)
    assert meta["arch"] == "srresnet" and meta["scale"] == "2" and "[0, 1]" in meta["input"]


@pytest.mark.parametrize("name, kwargs", [
    ("drn", {"scale": 4, "num_block": 1, "num_feat": 4}),
    ("amnet", {"num_feat": 8, "num_block": 2, "predictor_feat": 4, "am_hidden": 6}),
])
def test_drn_and_amnet_export(tmp_path, name, kwargs):
    torch.manual_seed(0)
    model = archs.build(name, **kwargs).eval()
    if name == "amnet":  # its code must matter, and be clamped into a recorded box
        make_code_matter(model)
        model.code_box.copy_(torch.tensor([[0.2], [0.6]]))
    report = export_onnx(model, tmp_path / f"{name}.onnx")
    assert report.max_error is not None and report.max_error < 1e-4
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        assert torch.allclose(run_onnx(report.path, x), model(x), atol=1e-4)


class Blocky(torch.nn.Module):
    """x2 nearest upsampling that only takes sizes divisible by 4."""

    scale, size_multiple = 2, 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._check(x.shape[-1] % 4 == 0)
        return torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest") * 0.5


def test_sizes_follow_the_models_multiple(tmp_path):
    report = export_onnx(Blocky(), tmp_path / "blocky.onnx")
    assert report.max_error == 0 and all(s[2] % 4 == 0 and s[3] % 4 == 0 for s in report.checked)
    assert metadata(report.path)["size_multiple"] == "4"


class DataDependent(torch.nn.Module):
    scale = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if float(x.mean()) > 0.5 else 1 - x


class Doubler(torch.nn.Module):
    """Nearest x2 without a ``scale`` attribute: the export measures it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")


def test_the_scale_is_measured_when_the_model_does_not_say(tmp_path):
    report = export_onnx(Doubler(), tmp_path / "d.onnx", check=False)
    assert metadata(report.path)["scale"] == "2"
    assert report.max_error is None and "not checked (--no-check)" in report.summary()


def test_refusals_are_one_line_and_leave_nothing_behind(tmp_path, monkeypatch):
    target = tmp_path / "new" / "sub" / "m.onnx"
    onnx_file = export_onnx(Blocky(), tmp_path / "b.onnx").path
    for model, message in [("bicubic", "not exported"), ("bicubic+", "bicubic is not exported"),
                           ("blindsr-x4+", "self-ensemble is not exported"),
                           (SelfEnsemble(Blocky()), "is a self-ensemble"),
                           (str(onnx_file), "is an ONNX file already"),
                           (DataDependent(), "cannot export DataDependent")]:
        with pytest.raises(BlindSRError, match=message):
            export_onnx(model, target)
    with pytest.raises(BlindSRError, match="must end in .onnx"):
        export_onnx("blindsr-x4", tmp_path / "m.pt")
    with pytest.raises(BlindSRError, match="opset"):
        export_onnx("blindsr-x4", target, opset=11)
    monkeypatch.setattr(export, "_compare", lambda *_: 0.5)  # a graph that computes otherwise
    with pytest.raises(BlindSRError, match="differs from the model by 0.5"):
        export_onnx(Blocky(), target)
    monkeypatch.undo()

    def broken_session(*_, **__):
        raise RuntimeError("INVALID_ARGUMENT: bad graph\nmore lines")

    monkeypatch.setattr(onnxruntime, "InferenceSession", broken_session)
    with pytest.raises(BlindSRError, match="cannot run the exported graph: INVALID_ARGUMENT"):
        export_onnx(Blocky(), target)
    assert [p.name for p in tmp_path.iterdir()] == ["b.onnx"]  # no folder, file or .partial
    monkeypatch.undo()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(BlindSRError, match=r"needs onnxscript: pip install 'blindsr\[export\]'"):
        export_onnx("blindsr-x4", target)


def test_a_graph_with_a_fixed_size_is_refused(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["lr"], ["sr"])], "fixed",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, [1, 3, "h", 64])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, None)])
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(BlindSRError, match="fixed the batch at 1, width at 64"):
        export._write_metadata(path, Blocky(), 2, 1)


def test_without_onnxruntime_the_file_is_written_unchecked(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    report = export_onnx(Blocky(), tmp_path / "b.onnx")
    assert report.max_error is None and "install onnxruntime" in report.summary()
    monkeypatch.undo()
    x = torch.rand(1, 3, 8, 12)
    assert np.array_equal(run_onnx(report.path, x).numpy(), Blocky()(x).numpy())
