"""blindsr.describe and `blindsr models PATH`: what a model file is."""

import importlib.util

import pytest
import torch

from blindsr import archs
from blindsr.checkpoint import save_model
from blindsr.cli import main
from blindsr.describe import describe
from blindsr.errors import BlindSRError
from blindsr.interpolate import interpolate_to_file


def small(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return archs.build("srresnet", scale=2, num_feat=4, num_block=1)


def test_a_checkpoint_shows_architecture_scale_parameters_and_summary(tmp_path, capsys):
    net = small()
    path = save_model(net, tmp_path / "net.safetensors", {"iterations": 7, "strategy": "plain"})
    assert main(["models", str(path)]) == 0
    out = capsys.readouterr().out
    assert "architecture: srresnet(num_block=1, num_feat=4" in out and "scale: x2" in out
    assert f"parameters: {sum(p.numel() for p in net.parameters()):,}" in out
    assert "iterations: 7" in out and "strategy: plain" in out


def test_an_interpolated_model_names_its_sources(tmp_path):
    a = save_model(small(0), tmp_path / "a.safetensors")
    b = save_model(small(1), tmp_path / "b.safetensors")
    mix = interpolate_to_file(a, b, 0.3, tmp_path / "mix.safetensors")
    assert f'interpolation: {{"a": "{a}", "b": "{b}", "weight": 0.3}}' in describe(mix)


def test_a_foreign_state_dict_says_it_has_no_metadata(tmp_path):
    torch.save({"params_ema": small().state_dict()}, tmp_path / "foreign.pth")
    text = describe(tmp_path / "foreign.pth")
    assert "architecture: srresnet(" in text and "metadata: none" in text


def test_a_training_checkpoint_says_so(tmp_path):
    from blindsr.train_state import save_checkpoint

    net = small()
    folder = save_checkpoint(tmp_path / "run", 5, {"generator": net.state_dict()}, {}, keep=1)
    text = describe(folder / "weights.safetensors")
    assert "scale: x2" in text and "a training checkpoint at step 5" in text


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None
                    or importlib.util.find_spec("onnxscript") is None, reason="needs onnx")
def test_an_onnx_file_shows_its_inputs_and_metadata(tmp_path):
    from blindsr.export import export_onnx

    path = export_onnx(small(), tmp_path / "net.onnx", check=False).path
    text = describe(path)
    assert "ONNX" in text and "input: lr tensor(float)" in text
    assert "arch: srresnet" in text and "scale: 2" in text


def test_bad_paths_fail_in_one_line(tmp_path, capsys):
    (tmp_path / "junk.safetensors").write_text("not a model")
    with pytest.raises(BlindSRError, match="unreadable checkpoint"):
        describe(tmp_path / "junk.safetensors")
    assert main(["models", str(tmp_path)]) == 1
    assert "is a folder, not a file" in capsys.readouterr().err
    assert main(["models", "no-such-model"]) == 1
    assert "no such shipped model or model file" in capsys.readouterr().err


def test_foreign_metadata_is_shown_and_odd_summaries_do_not_crash(tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in small().state_dict().items()}
    save_file(sd, tmp_path / "foreign.safetensors", metadata={"format": "pt", "note": "hi"})
    text = describe(tmp_path / "foreign.safetensors")
    assert "metadata (not written by blindsr" in text and "note: hi" in text
    meta = {"format": "blindsr", "arch": "srresnet", "scale": "2", "summary": "[1, 2]",
            "kwargs": '{"num_feat": 4, "num_block": 1, "scale": 2}'}
    save_file(sd, tmp_path / "odd.safetensors", metadata=meta)
    assert "summary: [1, 2]" in describe(tmp_path / "odd.safetensors")


def test_files_that_are_not_models_say_what_they_are(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(BlindSRError, match="neither safetensors nor torch.save"):
        describe(tmp_path / "empty.pth")
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "photo.png")
    with pytest.raises(BlindSRError, match="an image, not a model file"):
        describe(tmp_path / "photo.png")
