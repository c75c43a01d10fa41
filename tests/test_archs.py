"""Architectures: registry, BasicSR key names, kwargs read back from state dicts, forward shapes."""

import json

import pytest
import torch
import torch.nn.functional as F

from blindsr import archs
from blindsr.archs.rrdbnet import RRDB
from blindsr.errors import BlindSRError

SMALL = [
    ("srresnet", {"num_feat": 8, "num_block": 2, "scale": 2}),
    ("srresnet", {"num_feat": 8, "num_block": 2, "scale": 3}),
    ("srresnet", {"num_feat": 8, "num_block": 3, "scale": 4}),
    ("srresnet", {"num_in_ch": 1, "num_out_ch": 1, "num_feat": 4, "num_block": 1, "scale": 4}),
    ("rrdbnet", {"num_feat": 8, "num_block": 2, "num_grow_ch": 4, "scale": 4}),
    ("rrdbnet", {"num_feat": 8, "num_block": 2, "num_grow_ch": 4, "scale": 2}),
    ("rrdbnet", {"num_feat": 8, "num_block": 3, "num_grow_ch": 6, "scale": 1}),
    ("rrdbnet", {"num_in_ch": 1, "num_out_ch": 1, "num_feat": 4, "num_block": 1, "scale": 2}),
]


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_both():
    assert {"srresnet", "rrdbnet"} <= set(archs.arch_names())
    assert archs.arch_names() == sorted(archs.ARCHS)
    for name, spec in archs.ARCHS.items():
        assert spec.name == name and spec.constructor.arch_name == name


def test_unknown_name_lists_known():
    with pytest.raises(BlindSRError, match="srresnet.*rrdbnet|rrdbnet.*srresnet"):
        archs.build("edsr")


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("srresnet", {"upscale": 4}),  # BasicSR's name for it, not ours
        ("srresnet", {"scale": 5}),
        ("srresnet", {"num_feat": 0}),
        ("srresnet", {"num_block": 2.0}),
        ("rrdbnet", {"scale": 3}),
        ("rrdbnet", {"num_grow_ch": True}),
        ("rrdbnet", {"num_feat": "64"}),
    ],
)
def test_bad_kwargs_raise(name, kwargs):
    with pytest.raises(BlindSRError):
        archs.build(name, **kwargs)


@pytest.mark.parametrize("name, kwargs", SMALL)
def test_state_dict_round_trip(name, kwargs, rand_image):
    torch.manual_seed(0)
    model = archs.build(name, **kwargs).eval()
    assert model.arch_name == name
    assert model.scale == kwargs["scale"]
    assert json.loads(json.dumps(model.arch_kwargs)) == model.arch_kwargs
    assert kwargs.items() <= model.arch_kwargs.items()

    clone = archs.from_state_dict(model.state_dict()).eval()  # arch detected, kwargs inferred
    assert clone.arch_name == name
    assert clone.arch_kwargs == model.arch_kwargs
    x = rand_image(2, model.arch_kwargs["num_in_ch"], 8, 12)
    with torch.no_grad():
        y, y2 = model(x), clone(x)
    s = kwargs["scale"]
    assert y.shape == (2, model.arch_kwargs["num_out_ch"], 8 * s, 12 * s)
    assert torch.equal(y, y2)


def test_param_counts_match_published_models():
    assert _params(archs.build("srresnet")) == 1_517_571  # MSRResNet x4: 1.52M
    rrdb = archs.build("rrdbnet")
    assert _params(rrdb) == 16_697_987  # ESRGAN / RealESRGAN_x4plus: 16.7M
    assert rrdb.arch_kwargs == {
        "num_in_ch": 3,
        "num_out_ch": 3,
        "num_feat": 64,
        "num_block": 23,
        "num_grow_ch": 32,
        "scale": 4,
    }


def test_srresnet_basicsr_key_names():
    keys = set(archs.build("srresnet", num_feat=8, num_block=2, scale=4).state_dict())
    expected = {
        f"{layer}.{p}"
        for layer in [
            "conv_first",
            "body.0.conv1",
            "body.0.conv2",
            "body.1.conv1",
            "body.1.conv2",
            "upconv1",
            "upconv2",
            "conv_hr",
            "conv_last",
        ]
        for p in ("weight", "bias")
    }
    assert keys == expected
    x3 = archs.build("srresnet", num_feat=8, num_block=1, scale=3).state_dict()
    assert "upconv2.weight" not in x3 and x3["upconv1.weight"].shape == (72, 8, 3, 3)


def test_rrdbnet_realesrgan_shapes():
    sd = archs.build("rrdbnet", num_feat=8, num_block=2, num_grow_ch=4, scale=2).state_dict()
    assert sd["conv_first.weight"].shape == (8, 12, 3, 3)  # 3 channels pixel-unshuffled by 2
    assert sd["body.1.rdb3.conv5.weight"].shape == (8, 8 + 4 * 4, 3, 3)
    assert sd["body.0.rdb1.conv1.weight"].shape == (4, 8, 3, 3)
    for k in ("conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"):
        assert f"{k}.weight" in sd
    x1 = archs.build("rrdbnet", num_feat=8, num_block=1, num_grow_ch=4, scale=1).state_dict()
    assert x1["conv_first.weight"].shape[1] == 48


def test_srresnet_global_skip_is_bilinear(rand_image):
    model = archs.build("srresnet", num_feat=8, num_block=1, scale=3)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    x = rand_image(1, 3, 7, 5)
    expected = F.interpolate(x, scale_factor=3, mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)


def test_rrdb_residual_scaling_is_0_2(rand_image):
    block = RRDB(num_feat=4, num_grow_ch=2)
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
        for rdb in (block.rdb1, block.rdb2, block.rdb3):
            rdb.conv5.bias.fill_(1.0)  # each dense block then adds 0.2 * 1
    x = rand_image(1, 4, 5, 5)
    with torch.no_grad():
        out = block(x)
    torch.testing.assert_close(out, x + 0.2 * (x + 0.6))


@pytest.mark.parametrize("scale", [1, 2])
def test_rrdbnet_odd_sizes(scale, rand_image):
    model = archs.build("rrdbnet", num_feat=4, num_block=1, num_grow_ch=2, scale=scale).eval()
    with torch.no_grad():
        y = model(rand_image(1, 3, 7, 9))
        y_even = model(rand_image(1, 3, 8, 12))
    assert y.shape == (1, 3, 7 * scale, 9 * scale)
    assert y_even.shape == (1, 3, 8 * scale, 12 * scale)


@pytest.mark.parametrize("name, kwargs", [SMALL[2], SMALL[5]])
def test_backward_works(name, kwargs, rand_image):
    model = archs.build(name, **kwargs)
    x = rand_image(2, 3, 6, 6)
    model(x).square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.conv_first.weight.grad.abs().sum() > 0


def test_from_state_dict_explicit_arch_and_kwargs():
    model = archs.build("rrdbnet", num_feat=8, num_block=1, num_grow_ch=4, scale=4)
    sd = model.state_dict()
    clone = archs.from_state_dict(sd, arch="rrdbnet", kwargs=model.arch_kwargs)
    assert clone.arch_kwargs == model.arch_kwargs
    # The kwargs override detection: 12 input channels at x4 (not 3 channels at x2).
    twelve = archs.build("rrdbnet", num_in_ch=12, num_feat=8, num_block=1, num_grow_ch=4)
    assert archs.from_state_dict(twelve.state_dict()).scale == 2  # documented ambiguity
    clone12 = archs.from_state_dict(twelve.state_dict(), "rrdbnet", twelve.arch_kwargs)
    assert clone12.scale == 4 and clone12.arch_kwargs["num_in_ch"] == 12


def test_from_state_dict_accepts_ddp_and_compile_prefixes(rand_image):
    model = archs.build("srresnet", num_feat=8, num_block=2).eval()
    wrapped = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    clone = archs.from_state_dict(wrapped).eval()
    x = rand_image(1, 3, 5, 5)
    assert torch.equal(clone(x), model(x))
    assert set(archs.strip_wrapper_prefixes(wrapped)) == set(model.state_dict())


def test_from_state_dict_errors():
    sd = archs.build("srresnet", num_feat=8, num_block=2).state_dict()
    with pytest.raises(BlindSRError, match="no known architecture"):
        archs.from_state_dict({"foo.weight": torch.zeros(1)})
    with pytest.raises(BlindSRError, match="unknown architecture"):
        archs.from_state_dict(sd, arch="nope")
    with pytest.raises(BlindSRError, match="lacks 'body.0.rdb1.conv1.weight'"):
        archs.from_state_dict(sd, arch="rrdbnet")
    wrong = {"num_feat": 16, "num_block": 2}
    with pytest.raises(BlindSRError, match="wrong shape") as info:
        archs.from_state_dict(sd, arch="srresnet", kwargs=wrong)
    assert "\n" not in str(info.value)
    partial = {k: v for k, v in sd.items() if not k.startswith("body.0.")}
    with pytest.raises(BlindSRError, match="missing: body.0.conv1.weight"):
        archs.from_state_dict(partial)
    extra = dict(sd, **{"body.9.conv1.weight": torch.zeros(8, 8, 3, 3)})
    with pytest.raises(BlindSRError, match="missing"):  # a gap in the body indices
        archs.from_state_dict(extra)
