"""Channel analysis: Gini, cosine similarity, gradient x activation saliency, files, errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from blindsr import analyze, archs, cli
from blindsr.checkpoint import save_model
from blindsr.degrade import apply
from blindsr.errors import BlindSRError
from blindsr.io import read_image

PNG = b"\x89PNG\r\n\x1a\n"


class TinyNet(nn.Module):
    """conv1 (3 -> C) -> ReLU -> conv2 (C -> 12) -> pixel shuffle x2."""

    arch_name = "tiny"

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.scale = 2
        self.conv1 = nn.Conv2d(3, channels, 3, 1, 1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, 12, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.conv2(self.relu(self.conv1(x))))


def _save_png(path, seed, size):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def hr_folder(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    for k in range(3):
        _save_png(folder / f"img{k}.png", k, (16, 20))
    return folder


@pytest.fixture
def paired_folder(tmp_path):
    for sub in ("HR", "LR"):
        (tmp_path / "pairs" / sub).mkdir(parents=True)
    for k in range(2):
        _save_png(tmp_path / "pairs" / "HR" / f"p{k}.png", k, (16, 16))
        _save_png(tmp_path / "pairs" / "LR" / f"p{k}.png", 10 + k, (8, 8))
    return tmp_path / "pairs"


def _srresnet(seed=0, scale=2):
    torch.manual_seed(seed)
    return archs.build("srresnet", num_feat=8, num_block=1, scale=scale)


# ------------------------------------------------------------------------------------ numbers


def test_gini_of_equal_values_is_zero_and_of_one_holder_is_maximal():
    assert analyze.gini([0.3] * 7) == pytest.approx(0.0, abs=1e-12)
    assert analyze.gini([0.0] * 4) == 0.0
    assert analyze.gini([0, 0, 0, 2.0]) == pytest.approx(0.75)


def test_gini_matches_the_pairwise_definition():
    x = torch.rand(9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    pairwise = (x[:, None] - x[None, :]).abs().sum() / (2 * 9 * 9 * x.mean())
    assert analyze.gini(x) == pytest.approx(float(pairwise))
    with pytest.raises(BlindSRError):
        analyze.gini([1.0, -0.5])


def test_cosine_from_gram_handles_dead_channels():
    flat = torch.tensor([[1.0, 0.0, 1.0], [2.0, 0.0, 2.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    cos = analyze.cosine_from_gram((flat @ flat.T).double())
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1.0]]).double()
    assert torch.allclose(cos, expected)
    assert analyze.mean_offdiag_abs(cos) == pytest.approx(2 / 12)


# ------------------------------------------------------------------------------------ hooking


def test_layer_response_is_the_clean_activation_and_its_gradient(rand_image):
    model = _srresnet().eval()  # conv_first is followed by an in-place LeakyReLU
    x = rand_image(1, 3, 8, 8)
    act, grad = analyze.layer_response(model, model.conv_first, x)
    with torch.enable_grad():
        ref = model.conv_first(x).detach().requires_grad_(True)
        rest = model.body(model.lrelu(ref.clone()))
        rest = model.lrelu(model.pixel_shuffle(model.upconv1(rest)))
        y = model.conv_last(model.lrelu(model.conv_hr(rest)))
        (ref_grad,) = torch.autograd.grad(y.sum(), ref)
    assert (act < 0).any()  # not the LeakyReLU's output
    assert torch.allclose(act, ref.detach(), atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_identical_filters_are_fully_similar_and_contribute_equally(hr_folder):
    net = TinyNet(4)
    with torch.no_grad():
        net.conv1.weight.copy_(net.conv1.weight[:1].expand_as(net.conv1.weight))
        net.conv1.bias.fill_(0.1)
        net.conv2.weight.copy_(net.conv2.weight[:, :1].expand_as(net.conv2.weight))
    s = analyze.analyze_channels({"copies": net}, str(hr_folder), "conv1")["models"]["copies"]
    assert torch.allclose(torch.tensor(s["similarity"]), torch.ones(4, 4),
                          atol=1e-5)
    assert s["mean_abs_offdiag_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert s["gini_response"] == pytest.approx(0.0, abs=1e-6)
    assert s["gini_saliency"] == pytest.approx(0.0, abs=1e-6)
    assert s["contribution"] == pytest.approx([0.25] * 4, abs=1e-6)


def test_a_single_used_channel_gives_maximal_gini(hr_folder):
    net = TinyNet(4)
    with torch.no_grad():
        net.conv1.bias.fill_(1.0)  # every channel active, so only the gradient differs
        net.conv2.weight[:, 1:] = 0
    s = analyze.analyze_channels([net], str(hr_folder), "conv1")["models"]["tiny"]
    assert s["contribution"][0] == pytest.approx(1.0)
    assert s["gini_saliency"] == pytest.approx(0.75)
    assert s["gini_response"] < 0.5


def test_zeroed_channel_has_zero_saliency(hr_folder):
    model = _srresnet(1)
    with torch.no_grad():
        model.conv_first.weight[2] = 0
        model.conv_first.bias[2] = 0
    s = analyze.analyze_channels([model], str(hr_folder), "conv_first")["models"]["srresnet"]
    saliency = torch.tensor(s["saliency"])
    assert saliency.shape == (3, 8)
    assert (saliency[:, 2] == 0).all() and (saliency[:, [0, 1, 3]] > 0).all()
    assert s["contribution"][2] == 0 and s["mean_response"][2] == 0
    assert s["dead_channels"] == 1
    sim = torch.tensor(s["similarity"])
    assert (sim[2] == 0).all() and sim[0, 0] == pytest.approx(1.0)
    assert sum(s["contribution"]) == pytest.approx(1.0)


def test_lr_inputs_are_the_given_lr_or_bicubic_hr(hr_folder, paired_folder):
    _, names, images, _ = analyze._lr_images(str(paired_folder), 2, None)
    assert names == ["p0", "p1"]
    assert torch.equal(images[1], read_image(paired_folder / "LR" / "p1.png").color)
    _, names, images, _ = analyze._lr_images(str(hr_folder), 2, 2)
    assert names == ["img0", "img1"]
    hr = read_image(hr_folder / "img1.png").color
    assert images[1].shape == (1, 3, 8, 10)
    assert torch.equal(images[1], apply(hr, "bicubic", 2))


# ------------------------------------------------------------------------------------ outputs


def test_two_models_side_by_side_write_json_and_pngs(tmp_path, paired_folder):
    models = {"a": _srresnet(0), "b": archs.build("han-lite", num_feat=8, num_group=1,
                                                   num_block=1, reduction=4, scale=2)}
    out = tmp_path / "out"
    result = analyze.analyze_channels(models, str(paired_folder), "conv_first", out=out,
                                      max_images=1)
    assert [p.rsplit("/", 1)[-1] for p in result["files"]] == [
        "channels_conv_first.json", "channels_conv_first_response.png",
        "channels_conv_first_saliency.png", "channels_conv_first_similarity.png"]
    for path in result["files"][1:]:
        with open(path, "rb") as f:
            assert f.read(8) == PNG
    saved = json.loads((out / "channels_conv_first.json").read_text())
    assert saved["images"] == ["p0"] and saved["scale"] == 2 and set(saved["models"]) == {"a", "b"}
    for s in saved["models"].values():
        assert len(s["mean_response"]) == s["channels"] == 8
        assert len(s["saliency"]) == 1 and len(s["similarity"]) == 8
        assert 0 <= s["gini_saliency"] <= 1 and 0 <= s["mean_abs_offdiag_similarity"] <= 1


def test_command_line_writes_files_and_prints_summary(tmp_path, hr_folder, capsys):
    ckpt = save_model(_srresnet(2), tmp_path / "m.safetensors")
    out = tmp_path / "cli"
    code = cli.main(["analyze", "channels", "--model", str(ckpt), "--model", str(ckpt),
                     "--data", str(hr_folder), "--layer", "body.0.conv1", "--out", str(out),
                     "--max-images", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mean |cos|" in printed and f"{ckpt}-2" in printed
    assert len(list(out.glob("channels_body.0.conv1*"))) == 4


def _copies(net: TinyNet) -> TinyNet:
    """The same network with every conv1 filter a copy of the first (fully similar channels)."""
    out = TinyNet(4)
    out.load_state_dict(net.state_dict())
    with torch.no_grad():
        out.conv1.weight.copy_(out.conv1.weight[:1].expand_as(out.conv1.weight))
        out.conv1.bias.copy_(out.conv1.bias[:1].expand_as(out.conv1.bias))
    return out


def test_all_layers_match_single_layer_analyses(hr_folder):
    torch.manual_seed(0)
    net = TinyNet(4)
    models = {"a": net, "b": _copies(net)}
    result = analyze.analyze_layers(models, str(hr_folder), ["all"])
    assert [r["layer"] for r in result["layers"]] == ["conv1", "conv2"] == list(result["summary"])
    for r in result["layers"]:
        single = analyze.analyze_channels(models, str(hr_folder), r["layer"])
        for label in models:
            assert torch.allclose(torch.tensor(r["models"][label]["similarity"]),
                                  torch.tensor(single["models"][label]["similarity"]), atol=1e-6)
            assert result["summary"][r["layer"]][label]["gini_saliency"] == pytest.approx(
                single["models"][label]["gini_saliency"], abs=1e-9)
    assert result["summary"]["conv1"]["b"]["mean_abs_offdiag_similarity"] == pytest.approx(1.0)
    again = analyze.analyze_layers(models, str(hr_folder), ["conv2", "all", "conv2"])
    assert [r["layer"] for r in again["layers"]] == ["conv2", "conv1"]


def test_command_line_all_layers_prints_a_table_and_counts(tmp_path, hr_folder, capsys):
    torch.manual_seed(0)
    net = TinyNet(4)
    copies = _copies(net)
    net.conv1.weight.data[1:] = torch.randn(3, 3, 3, 3)  # channels unlike each other
    out = tmp_path / "all"
    result = analyze.analyze_layers({"copies": copies, "varied": net}, str(hr_folder), ["all"],
                                    out=out)
    table = analyze.format_layer_table(result["summary"])
    assert table.splitlines()[0].endswith("copies | varied")
    assert table.splitlines()[1].startswith("  conv1: 1.0000 | ")
    assert "varied is lower than copies in" in table.splitlines()[-1]
    lower = int(table.splitlines()[-1].split(" in ")[1].split(" of ")[0])
    expected = sum(result["summary"][n]["varied"]["mean_abs_offdiag_similarity"]
                   < result["summary"][n]["copies"]["mean_abs_offdiag_similarity"]
                   for n in ("conv1", "conv2"))
    assert lower == expected >= 1 and table.endswith("of 2 layers")
    body = json.loads((out / "channels_summary.json").read_text())
    assert set(body["layers"]) == {"conv1", "conv2"}
    assert len(list(out.glob("channels_conv*.png"))) == 6
    ckpt = save_model(_srresnet(2), tmp_path / "m.safetensors")
    code = cli.main(["analyze", "channels", "--model", str(ckpt), "--model", str(ckpt),
                     "--data", str(hr_folder), "--layer", "all", "--out", str(tmp_path / "cli"),
                     "--max-images", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mean |cos| between channels per layer" in printed
    assert printed.rstrip().endswith(f"{ckpt}-2 is lower than {ckpt} in 0 of 6 layers")


def test_all_keeps_layers_every_model_has_and_runs_once(hr_folder):
    torch.manual_seed(0)
    drn = archs.build("drn", scale=4, num_block=1, num_feat=4)
    result = analyze.analyze_layers([drn], str(hr_folder), ["all"], max_images=1)
    assert {"tail.0", "tail.1"} <= set(result["left_out"])  # lower-scale outputs: not in forward
    assert [r["layer"] for r in result["layers"]] == [
        n for n in analyze.conv_layers(drn) if n not in result["left_out"]]
    small, big = (archs.build("srresnet", num_feat=8, num_block=n, scale=2) for n in (1, 2))
    for pair in ([small, big], [big, small]):
        result = analyze.analyze_layers(pair, str(hr_folder), ["all"], max_images=1)
        assert not any(r["layer"].startswith("body.1.") for r in result["layers"])
        if pair[0] is big:
            assert result["left_out"] == ["body.1.conv1", "body.1.conv2"]
    with pytest.raises(BlindSRError, match="takes one layer"):
        analyze.analyze_channels([small], str(hr_folder), "all")


def test_command_line_layers_repeat_and_all_has_no_plots(tmp_path, hr_folder, capsys):
    ckpt = save_model(_srresnet(2), tmp_path / "m.safetensors")
    base = ["analyze", "channels", "--model", str(ckpt), "--data", str(hr_folder),
            "--max-images", "1"]
    one = tmp_path / "one"
    assert cli.main([*base, "--layer", "conv_first", "--out", str(one)]) == 0
    assert not (one / "channels_summary.json").exists()
    two = tmp_path / "two"
    assert cli.main([*base, "--layer", "conv_first", "--layer", "conv_hr", "--out", str(two)]) == 0
    assert len(list(two.glob("*.png"))) == 6 and (two / "channels_summary.json").is_file()
    every = tmp_path / "every"
    assert cli.main([*base, "--layer", "all", "--out", str(every)]) == 0
    assert not list(every.glob("*.png")) and len(list(every.glob("channels_*.json"))) == 7
    capsys.readouterr()
    assert cli.main(["analyze", "channels", "--model", "bicubic", "--scale", "2", "--data",
                     str(hr_folder), "--layer", "all", "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "has no conv layer" in err and err.count("\n") == 1 and "Traceback" not in err


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layer", "body.9.conv1"], "conv_first, body.0.conv1"),
        (["--layer", "lrelu"], "runs exactly once"),
        (["--layer", "conv_first", "--scale", "4"], "--scale is x4"),
        (["--layer", "conv_first", "--max-images", "0"], "max_images"),
    ],
)
def test_errors_are_one_line(tmp_path, hr_folder, capsys, args, message):
    ckpt = save_model(_srresnet(), tmp_path / "m.safetensors")
    code = cli.main(["analyze", "channels", "--model", str(ckpt), "--data", str(hr_folder),
                     "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 1
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_api_errors(hr_folder, tmp_path):
    with pytest.raises(BlindSRError, match="no such folder"):
        analyze.analyze_channels([_srresnet()], str(tmp_path / "missing"), "conv_first")
    with pytest.raises(BlindSRError, match="do not share one scale"):
        analyze.analyze_channels([_srresnet(scale=2), _srresnet(scale=4)], str(hr_folder),
                                 "conv_first")
    with pytest.raises(BlindSRError, match="no layer ''"):
        analyze.analyze_channels([_srresnet()], str(hr_folder), "")


def test_caller_model_is_not_changed(hr_folder):
    model = _srresnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    analyze.analyze_channels([model], str(hr_folder), "conv_first", max_images=1)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_json_numbers_are_compact_and_valid():
    assert analyze._compact({"a": [float("nan"), 1.23456789, 2], "b": (0.5, float("inf"))}) == {
        "a": [None, 1.23457, 2], "b": [0.5, None]}


class CutNet(nn.Module):
    """conv a -> (no gradient) -> conv b, plus the input: the graph is cut before b."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 3, 3, 1, 1), nn.Conv2d(3, 3, 3, 1, 1)

    def forward(self, x):
        with torch.no_grad():
            h = self.a(x)
        return self.b(h) * 2 + x


def test_a_graph_cut_before_the_layer_still_gives_its_gradient(rand_image):
    net, x = CutNet(), rand_image(1, 3, 6, 6)
    act, grad = analyze.layer_response(net, net.b, x)
    assert torch.allclose(grad, torch.full_like(grad, 2.0))  # d sum(2 b + x) / d b = 2
    both = analyze.layer_responses(net, {"a": net.a, "b": net.b}, x)
    assert torch.equal(both["b"][1], grad) and torch.equal(both["a"][1], torch.zeros_like(act))


def test_an_onnx_file_is_refused_with_the_way_out(hr_folder, tmp_path):
    pytest.importorskip("onnxruntime")
    from blindsr.export import export_onnx

    path = export_onnx(_srresnet(), tmp_path / "m.onnx", check=False).path
    with pytest.raises(BlindSRError, match="an ONNX file has no layers to analyse; give the "
                                           ".safetensors it was exported from"):
        analyze.analyze_channels([str(path)], str(hr_folder), "conv_first")
