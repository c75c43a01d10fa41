import importlib.util

import pytest
import torch

from blindsr import archs, zoo
from blindsr.checkpoint import save_model
from blindsr.cli import main
from blindsr.errors import BlindSRError
from blindsr.evaluate import evaluate
from blindsr.export import export_onnx
from blindsr.inference import Settings, Upscaler, bytes_per_pixel
from blindsr.onnx_model import OnnxModel
from tests.conftest import smooth_images

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny x2 SRResNet as a checkpoint and as the ONNX file `blindsr export` makes of it."""
    folder = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    checkpoint = save_model(archs.build("srresnet", scale=2, num_feat=8, num_block=1),
                            folder / "net.safetensors")
    return checkpoint, export_onnx(str(checkpoint), folder / "net.onnx").path


def resize_graph(path, channels: int = 3, metadata: bool = False, batch: int | str = "n"):
    """A foreign ONNX file: nearest x2 upsampling of a batch x channels x H x W float input."""
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")
    graph = helper.make_graph(
        [node], "up", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                     [batch, channels, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    if metadata:
        model.metadata_props.add(key="scale", value="2")
    onnx.save(model, str(path))
    return path


def test_an_exported_file_runs_like_its_checkpoint(exported):
    checkpoint, path = exported
    model, twin = zoo.load(str(path)), zoo.load(str(checkpoint))
    assert isinstance(model, OnnxModel) and model.scale == 2
    x = torch.rand(2, 3, 11, 14)
    with torch.inference_mode():
        assert torch.allclose(model(x), twin(x), atol=1e-5)
        half = model(x.bfloat16())
    assert half.dtype == torch.bfloat16 and half.shape == (2, 3, 22, 28)


def test_upscale_and_eval_score_the_file_as_the_checkpoint(exported, tmp_path):
    checkpoint, path = exported
    folder = smooth_images(tmp_path / "hr", n=2, size=(24, 20))
    results = evaluate([str(checkpoint), str(path), f"{path}+"], [str(folder)],
                       ["clean", "noise"], ["psnr"], scale=2)
    value = {(r.model, r.degradation): r.value for r in results}
    for deg in ("clean", "noise"):
        assert value[(str(path), deg)] == pytest.approx(value[(str(checkpoint), deg)], abs=1e-3)
    for deg in ("clean", "noise"):  # the + of the file is the + of the checkpoint
        assert value[(f"{path}+", deg)] != value[(str(path), deg)]
        assert value[(f"{path}+", deg)] == pytest.approx(value[(str(checkpoint), deg)], abs=1.0)
    assert main(["upscale", str(folder / "img0.png"), "-o", str(tmp_path / "out.png"),
                 "--model", str(path), "-q"]) == 0
    assert (tmp_path / "out.png").is_file()


def test_a_foreign_file_without_metadata_has_its_scale_measured(tmp_path):
    model = zoo.load(str(resize_graph(tmp_path / "up.onnx")))
    assert not hasattr(model, "scale")
    upscaler = Upscaler(model, Settings(tile=16, tile_pad=4))
    assert upscaler.scale == 2
    x = torch.rand(1, 3, 20, 30)
    out = upscaler.upscale_tensor(x)
    assert torch.allclose(out, x.repeat_interleave(2, -2).repeat_interleave(2, -1), atol=1e-6)
    assert zoo.load(str(resize_graph(tmp_path / "meta.onnx", metadata=True))).scale == 2


def test_bad_files_fail_in_one_line(tmp_path, monkeypatch):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    with pytest.raises(BlindSRError, match="not a usable ONNX model"):
        zoo.load(str(junk))
    with pytest.raises(BlindSRError, match="takes one float N x 3 x H x W input"):
        zoo.load(str(resize_graph(tmp_path / "gray.onnx", channels=1)))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(BlindSRError, match=r"need onnxruntime: pip install 'blindsr\[export\]'"):
        zoo.load(str(resize_graph(tmp_path / "up.onnx")))


def test_a_graph_with_a_fixed_batch_of_one_takes_any_batch(tmp_path):
    model = zoo.load(str(resize_graph(tmp_path / "one.onnx", batch=1)))
    assert model.fixed_batch == 1
    x = torch.rand(3, 3, 5, 6)
    expected = x.repeat_interleave(2, -2).repeat_interleave(2, -1)
    assert torch.equal(model(x), expected)
    assert torch.allclose(zoo.load(f"{model.path}+")(x), expected, atol=1e-6)


def test_the_tile_is_sized_from_the_widest_conv(exported):
    checkpoint, path = exported
    model, twin = zoo.load(str(path)), zoo.load(str(checkpoint))
    assert model.activation_width == 32  # the x2 upsampler's conv: 8 features x 4
    cpu = torch.device("cpu")
    assert bytes_per_pixel(model, torch.float32, cpu) >= bytes_per_pixel(twin, torch.float32, cpu)


def test_onnxruntime_running_out_of_memory_halves_the_tile(exported):
    class Exhausted:
        def run(self, *_):
            raise Exception("Failed to allocate memory for requested buffer of size 1048576")

    upscaler = Upscaler(str(exported[1]), Settings(tile=64))
    upscaler.model.session = Exhausted()
    with pytest.raises(BlindSRError, match="out of memory on cpu even with 16-pixel tiles"):
        upscaler.upscale_tensor(torch.rand(1, 3, 40, 40))
    assert upscaler.tile == 16


def test_commands_that_need_gradients_refuse_onnx_files(exported, tmp_path, capsys):
    hr = smooth_images(tmp_path / "hr", n=1, size=(40, 40)) / "img0.png"
    assert main(["degrade", str(hr), "-o", str(tmp_path / "g"), "--preset", "and", "--scale",
                 "2", "--model", str(exported[1])]) == 1
    err = capsys.readouterr().err
    assert "the AND attack needs the restorer's gradients" in err and "Traceback" not in err


def test_an_onnx_file_runs_in_float32_only(exported):
    _, path = exported
    with pytest.raises(BlindSRError, match=r"\(--dtype\) bf16: an ONNX model runs in float32"):
        Upscaler(str(path), Settings(dtype="bf16"))
    assert Upscaler(str(path), Settings(dtype="fp32")).scale == 2
