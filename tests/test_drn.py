"""DRN architecture: shapes of every output, published parameter counts, presets, key-name
detection, kwargs (incl. pruned widths) read back from shapes, checkpoint round trips."""

import json

import pytest
import torch

import blindsr
from blindsr import archs
from blindsr.archs.drn import DRN, RGB_MEAN, full_widths
from blindsr.checkpoint import save_model
from blindsr.errors import BlindSRError


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("scale", [4, 8])
def test_outputs_at_every_scale(scale, rand_image):
    torch.manual_seed(0)
    model = archs.build("drn", scale=scale, num_block=1, num_feat=4).eval()
    x = rand_image(2, 3, 5, 7)
    with torch.no_grad():
        outs = model.forward_all(x)
        final = model(x)
    stages = {4: 2, 8: 3}[scale]
    assert len(outs) == stages + 1
    assert [tuple(o.shape) for o in outs] == [(2, 3, 5 * 2**k, 7 * 2**k)
                                             for k in range(stages + 1)]
    assert torch.equal(final, outs[-1])


@pytest.mark.parametrize("name, scale, expected", [
    ("drn-s", 4, 4.8e6), ("drn-l", 4, 9.8e6), ("drn-s", 8, 5.4e6), ("drn-l", 8, 10.0e6)])
def test_presets_match_published_parameter_counts(name, scale, expected):
    model = archs.build(name, scale=scale)
    assert model.arch_name == "drn" and model.scale == scale
    assert abs(_params(model) - expected) / expected < 0.02
    blocks, feat = {("drn-s", 4): (30, 16), ("drn-l", 4): (40, 20), ("drn-s", 8): (30, 8),
                    ("drn-l", 8): (36, 10)}[(name, scale)]
    assert model.arch_kwargs == {"scale": scale, "num_block": blocks, "num_feat": feat}


def test_preset_kwargs_can_be_overridden():
    model = archs.build("drn-l", scale=8, num_block=2)
    assert model.arch_kwargs == {"scale": 8, "num_block": 2, "num_feat": 10}
    assert archs.build("drn-s").arch_kwargs["num_feat"] == 16  # scale defaults to 4
    with pytest.raises(BlindSRError, match="scale must be one of"):
        archs.build("drn-s", scale=3)


def test_widths_of_the_trunk():
    # x4: both stages at 4F; x8: 8F, 8F, 4F (as DRN's up_body_blocks)
    assert full_widths(4, 2, 5) == ([20, 20, 20, 20], [20, 20])
    assert full_widths(8, 1, 3) == ([24, 24, 12], [24, 24, 12])
    sd = archs.build("drn", scale=8, num_block=1, num_feat=3).state_dict()
    assert sd["up.2.blocks.0.conv1.weight"].shape == (12, 12, 3, 3)
    assert sd["up.0.upconv.weight"].shape == (96, 24, 3, 3)
    assert sd["up.0.reduce.weight"].shape == (12, 24, 1, 1)  # to the x8 -> x4 skip width
    assert sd["down.0.0.weight"].shape == (3, 3, 3, 3) and "down.0.0.bias" not in sd
    assert [sd[f"tail.{k}.weight"].shape[1] for k in range(4)] == [24, 24, 12, 6]


@pytest.mark.parametrize("scale", [4, 8])
def test_detect_and_kwargs_round_trip(scale, rand_image):
    torch.manual_seed(0)
    model = archs.build("drn", scale=scale, num_block=2, num_feat=4).eval()
    sd = model.state_dict()
    assert [n for n, spec in archs.ARCHS.items() if spec.detect(sd)] == ["drn"]
    clone = archs.from_state_dict(sd).eval()
    assert clone.arch_kwargs == model.arch_kwargs == {"scale": scale, "num_block": 2,
                                                      "num_feat": 4}
    x = rand_image(1, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))


def test_pruned_widths_round_trip(tmp_path, rand_image):
    torch.manual_seed(0)
    model = DRN(scale=4, num_block=2, num_feat=4, block_widths=[3, 16, 5, 1],
                up_widths=[16, 7]).eval()
    assert model.arch_kwargs == {"scale": 4, "num_block": 2, "num_feat": 4,
                                 "block_widths": [3, 16, 5, 1], "up_widths": [16, 7]}
    kw = archs.ARCHS["drn"].kwargs_from_state_dict(model.state_dict())
    assert kw == {"scale": 4, "num_block": 2, "num_feat": 4, "block_widths": [3, 16, 5, 1],
                  "up_widths": [16, 7]}
    path = save_model(model, tmp_path / "pruned.safetensors")
    loaded = blindsr.load_model(path)
    assert loaded.block_widths == [3, 16, 5, 1] and loaded.up_widths == [16, 7]
    assert json.loads(json.dumps(loaded.arch_kwargs)) == loaded.arch_kwargs
    x = rand_image(1, 3, 6, 5)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_full_width_lists_are_not_recorded():
    model = DRN(scale=4, num_block=1, num_feat=4, block_widths=[16, 16], up_widths=(16, 16))
    assert model.arch_kwargs == {"scale": 4, "num_block": 1, "num_feat": 4}
    assert archs.ARCHS["drn"].kwargs_from_state_dict(model.state_dict()) == model.arch_kwargs


@pytest.mark.parametrize("kwargs, match", [
    ({"scale": 2}, "scale must be one of"),
    ({"scale": 3}, "scale must be one of"),
    ({"num_block": 0}, "num_block must be >= 1"),
    ({"block_widths": [4]}, "block_widths must have 2 entries"),
    ({"block_widths": [4, 0]}, r"block_widths\[1\] must be an integer >= 1"),
    ({"up_widths": "16,16"}, "up_widths must be a list"),
    ({"up_widths": [16, 2.5]}, r"up_widths\[1\]"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(BlindSRError, match=match):
        DRN(**{"scale": 4, "num_block": 1, "num_feat": 4, **kwargs})


def test_mean_is_added_back_to_every_output(rand_image):
    model = DRN(scale=4, num_block=1, num_feat=4)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        outs = model.forward_all(rand_image(1, 3, 4, 4))
    mean = torch.tensor(RGB_MEAN).view(1, 3, 1, 1)
    for out in outs:
        assert torch.allclose(out, mean.expand_as(out), atol=1e-6)
    assert "mean" not in model.state_dict()  # a constant, not a weight


def _reference_forward_all(sd: dict, lr: torch.Tensor, scale: int, num_block: int,
                           mode: str = "bicubic", align: bool = False, slope: float = 0.2,
                           up_first: bool = True, sub_mean: bool = True) -> list[torch.Tensor]:
    """DRN's forward (guoyongcs/DRN ``model/drn.py`` + ``common.py``) written functionally from
    a state dict; the keyword arguments switch single details off (to show the test sees them)."""
    F = torch.nn.functional
    mean = torch.tensor(RGB_MEAN).view(1, 3, 1, 1)

    def conv(x, key, **kw):
        return F.conv2d(x, sd[f"{key}.weight"], sd.get(f"{key}.bias"), **kw)

    def rcab(x, key):
        res = conv(F.relu(conv(x, f"{key}.conv1", padding=1)), f"{key}.conv2", padding=1)
        att = F.relu(conv(res.mean(dim=(2, 3), keepdim=True), f"{key}.ca.attention.1"))
        return x + res * torch.sigmoid(conv(att, f"{key}.ca.attention.3"))

    phase = scale.bit_length() - 1
    x = F.interpolate(lr, scale_factor=scale, mode=mode, align_corners=align)
    x = conv(x - mean if sub_mean else x, "head", padding=1)
    skips = []
    for p in range(phase):
        skips.append(x)
        x = F.leaky_relu(conv(x, f"down.{p}.0", stride=2, padding=1), slope)
        x = conv(x, f"down.{p}.2", padding=1)
    outs = [conv(x, "tail.0", padding=1) + mean]
    for s in range(phase):
        for b in range(num_block):
            x = rcab(x, f"up.{s}.blocks.{b}")
        up = conv(F.pixel_shuffle(conv(x, f"up.{s}.upconv", padding=1), 2), f"up.{s}.reduce")
        skip = skips[phase - 1 - s]
        x = torch.cat((up, skip) if up_first else (skip, up), dim=1)
        outs.append(conv(x, f"tail.{s + 1}", padding=1) + mean)
    return outs


@pytest.mark.parametrize("scale, widths", [
    (4, {}), (8, {"block_widths": [3, 16, 5, 1, 8, 2], "up_widths": [7, 16, 3]})])
def test_forward_all_equals_a_functional_drn(scale, widths, rand_image):
    """Every output equals an independent re-implementation of DRN's forward (bicubic
    upsampling without align_corners, mean shift, LeakyReLU 0.2, RCABs with channel attention,
    pixel shuffle, 1x1 reduction, cat(up, skip), tails); each single deviation is detected."""
    torch.manual_seed(0)
    model = DRN(scale=scale, num_block=2, num_feat=2, **widths).eval()
    sd = model.state_dict()
    x = rand_image(2, 3, 5, 6)
    with torch.no_grad():
        got = model.forward_all(x)
        want = _reference_forward_all(sd, x, scale, 2)
        for a, b in zip(got, want, strict=True):
            assert a.shape == b.shape and (a - b).abs().max() < 1e-5
        for change in ({"mode": "bilinear"}, {"align": True}, {"slope": 0.1},
                       {"up_first": False}, {"sub_mean": False}):
            wrong = _reference_forward_all(sd, x, scale, 2, **change)
            assert max((a - b).abs().max() for a, b in zip(got, wrong, strict=True)) > 1e-3, \
                change
