"""blindsr.interpolate: network interpolation of two models of one architecture."""

import json

import pytest
import torch
from conftest import load_benchmark

from blindsr import archs, zoo
from blindsr.checkpoint import load_model, read_checkpoint, save_model
from blindsr.cli import main
from blindsr.errors import BlindSRError
from blindsr.evaluate import evaluate
from blindsr.interpolate import interpolate, interpolate_to_file


def pair(tmp_path, **kwargs):
    """Two checkpoints of one small SRResNet with different random weights."""
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = archs.build("srresnet", scale=4, num_feat=4, num_block=1, **kwargs)
        paths.append(save_model(net, tmp_path / f"net{seed}.safetensors"))
    return paths


def test_every_weight_is_the_blend_and_the_ends_are_the_models(tmp_path):
    a, b = pair(tmp_path)
    sa, sb = load_model(a).state_dict(), load_model(b).state_dict()
    mixed = interpolate(a, b, 0.3).state_dict()
    for key in sa:
        assert torch.allclose(mixed[key], 0.7 * sa[key] + 0.3 * sb[key], atol=1e-7)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        for weight, end in ((0.0, a), (1.0, b)):
            assert torch.equal(interpolate(a, b, weight)(x), load_model(end)(x))


def test_modules_are_taken_and_left_unchanged():
    torch.manual_seed(0)
    a = archs.build("srresnet", scale=2, num_feat=4, num_block=1)
    b = archs.build("srresnet", scale=2, num_feat=4, num_block=1)
    before = {k: v.clone() for k, v in a.state_dict().items()}
    mixed = interpolate(a, b, 0.5)
    assert mixed is not a and not mixed.training
    assert all(torch.equal(v, before[k]) for k, v in a.state_dict().items())


def test_the_command_writes_a_checkpoint_that_names_its_sources(tmp_path, capsys):
    a, b = pair(tmp_path)
    out = tmp_path / "made" / "mix.safetensors"
    assert main(["interpolate", str(a), str(b), "-w", "0.25", "-o", str(out)]) == 0
    assert "0.75 x" in capsys.readouterr().err
    summary = json.loads(read_checkpoint(out)[1]["summary"])["interpolation"]
    assert summary == {"a": str(a), "b": str(b), "weight": 0.25}
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(zoo.load(str(out))(x), interpolate(a, b, 0.25)(x))


def test_shipped_names_interpolate():
    mixed = interpolate("blindsr-x4-classical", "blindsr-x4", 0.5)
    blind = load_model("blindsr-x4").state_dict()
    classical = load_model("blindsr-x4-classical").state_dict()
    key = "conv_first.weight"
    assert torch.allclose(mixed.state_dict()[key], (blind[key] + classical[key]) / 2)


@pytest.mark.parametrize("weight", [-0.1, 1.5, float("nan")])
def test_weights_outside_zero_to_one_are_refused(tmp_path, weight):
    a, b = pair(tmp_path)
    with pytest.raises(BlindSRError, match=r"weight must be in \[0, 1\]"):
        interpolate(a, b, weight)


def test_different_architectures_are_refused_in_one_line(tmp_path, capsys):
    a, _ = pair(tmp_path)
    wider = save_model(archs.build("srresnet", scale=4, num_feat=8, num_block=1),
                       tmp_path / "wide.safetensors")
    drn = save_model(archs.build("drn", scale=4, num_block=1, num_feat=4),
                     tmp_path / "drn.safetensors")
    for other in (wider, drn):
        assert main(["interpolate", str(a), str(other), "-w", "0.5",
                     "-o", str(tmp_path / "x.safetensors")]) != 0
        err = capsys.readouterr().err.strip()
        assert "different architectures" in err and "\n" not in err
    assert not (tmp_path / "x.safetensors").exists()


def test_what_has_no_weights_of_its_own_is_refused(tmp_path):
    a, _ = pair(tmp_path)
    with pytest.raises(BlindSRError, match="bicubic has no weights"):
        interpolate(a, "bicubic", 0.5)
    with pytest.raises(BlindSRError, match="self-ensemble"):
        interpolate(a, f"{a}+", 0.5)
    with pytest.raises(BlindSRError, match="not a blindsr architecture"):
        interpolate(a, zoo.load(f"{a}+"), 0.5)


def test_no_source_is_overwritten_and_outputs_are_checked_first(tmp_path):
    a, b = pair(tmp_path)
    before = a.read_bytes()
    with pytest.raises(BlindSRError, match="one of the models being interpolated"):
        interpolate_to_file(a, b, 0.5, a)
    assert a.read_bytes() == before
    with pytest.raises(BlindSRError, match="must end in .safetensors"):
        interpolate_to_file(a, b, 0.5, tmp_path / "mix.pth")
    (tmp_path / "file").write_text("")
    with pytest.raises(BlindSRError, match="a part of it is a file"):
        interpolate_to_file(a, b, 0.5, tmp_path / "file" / "mix.safetensors")


def test_the_benchmark_sweeps_a_pair_and_writes_its_tables(tmp_path, monkeypatch, shared):
    script = load_benchmark("interpolation")
    a, b = pair(tmp_path)
    monkeypatch.setitem(script.PAIRS, "gan", (str(a), str(b), ["clean"], ["psnr"]))
    script.main(["--pair", "gan", "--weights", "0", "1", "--data", "Set5", "--max-images", "1",
                 "--out", str(tmp_path / "interp")])
    rows = json.loads((tmp_path / "interp_gan.json").read_text())["results"]
    assert [r["model"] for r in rows] == [f"w=0.0 ({a})", f"w=1.0 ({b})"]
    direct = evaluate({"b": str(b)}, "Set5", "clean", "psnr", max_images=1)[0].value
    assert rows[1]["value"] == pytest.approx(direct, abs=1e-9) != rows[0]["value"]


def test_a_shipped_model_named_as_an_input_is_not_overwritten(tmp_path, monkeypatch):
    from blindsr import interpolate as module
    from blindsr.shipped import ShippedModel

    a, b = pair(tmp_path)
    before = a.read_bytes()
    monkeypatch.setattr(module, "shipped_models",
                        lambda: {"mine-x4": ShippedModel("mine-x4", a, a.with_suffix(".md"))})
    monkeypatch.setattr("blindsr.shipped.shipped_models", module.shipped_models)
    with pytest.raises(BlindSRError, match="one of the models being interpolated"):
        interpolate_to_file("mine-x4", b, 0.5, a)
    assert a.read_bytes() == before


def test_an_unknown_model_name_lists_the_shipped_ones(tmp_path):
    a, _ = pair(tmp_path)
    with pytest.raises(BlindSRError, match=r"nosuch: no such model file or shipped model "
                                           r"\(shipped: .*blindsr-x4"):
        interpolate(a, "nosuch", 0.5)
    (tmp_path / "run").mkdir()
    with pytest.raises(BlindSRError, match=r"run is a folder, not a model file \(a run's model "
                                           r"is .*run/model.safetensors\)"):
        interpolate(a, tmp_path / "run", 0.5)
