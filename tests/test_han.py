"""HAN-lite: size against HAN, shapes, state-dict round trip, detection, attention modules."""

import pytest
import torch

from blindsr import archs
from blindsr.archs import han
from blindsr.errors import BlindSRError

TINY = {"num_feat": 8, "num_group": 2, "num_block": 1, "reduction": 4}
HAN_FULL = {"num_feat": 64, "num_group": 10, "num_block": 20, "reduction": 16}


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta(**kwargs) -> torch.nn.Module:
    with torch.device("meta"):  # counts parameters without allocating them
        return han.HANLite(**kwargs)


def test_default_size_is_about_a_twentieth_of_han():
    full = _params(_meta(**HAN_FULL, scale=4))
    lite = _params(_meta(scale=4))
    assert 15.9e6 < full < 16.3e6  # HAN x4 as published: about 16.1M
    assert lite == 753_756
    assert 18 < full / lite < 23


def test_registered_and_built_by_name():
    assert "han-lite" in archs.arch_names()
    model = archs.build("han-lite", scale=2, **TINY)
    assert isinstance(model, han.HANLite)
    assert model.arch_name == "han-lite" and model.scale == 2
    assert model.arch_kwargs == {"num_in_ch": 3, "num_out_ch": 3, **TINY, "scale": 2}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shapes(scale, rand_image):
    model = archs.build("han-lite", scale=scale, **TINY).eval()
    x = rand_image(2, 3, 7, 9)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, 7 * scale, 9 * scale)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {**TINY, "scale": 2},
        {**TINY, "scale": 3},
        {**TINY, "scale": 4},
        {"num_in_ch": 1, "num_out_ch": 1, "num_feat": 12, "num_group": 3, "num_block": 2,
         "reduction": 3, "scale": 4},
    ],
)
def test_state_dict_round_trip_without_arch(kwargs, rand_image):
    torch.manual_seed(0)
    model = archs.build("han-lite", **kwargs).eval()
    with torch.no_grad():  # make the attention branches matter
        model.lam.gamma.fill_(0.3)
        model.csam.gamma.fill_(0.7)
    sd = model.state_dict()
    assert archs.detect_arch(sd) == "han-lite"
    again = archs.from_state_dict(sd).eval()
    assert again.arch_kwargs == model.arch_kwargs
    x = rand_image(1, kwargs.get("num_in_ch", 3), 6, 5)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_key_names_are_basicsr_like():
    keys = set(archs.build("han-lite", scale=4, **TINY).state_dict())
    for key in ("conv_first.weight", "body.1.residual_group.0.rcab.0.weight",
                "body.0.residual_group.0.rcab.3.attention.1.weight", "body.0.conv.weight",
                "conv_after_body.weight", "lam.gamma", "conv_lam.weight", "csam.weight",
                "csam.bias", "csam.gamma", "conv_fuse.weight", "upsample.0.weight",
                "upsample.2.weight", "conv_last.weight"):
        assert key in keys
    assert not any("mean" in k for k in keys)  # the fixed input mean is not a weight


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("srresnet", {"num_feat": 8, "num_block": 1, "scale": 4}),
        ("rrdbnet", {"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "scale": 4}),
        ("han-lite", {**TINY, "scale": 4}),
    ],
)
def test_detection_does_not_collide(name, kwargs):
    sd = archs.build(name, **kwargs).state_dict()
    assert [n for n, spec in archs.ARCHS.items() if spec.detect(sd)] == [name]


def test_layer_attention_mixes_layers_and_keeps_identity_at_zero_gamma():
    lam = han.LayerAttention()
    g = torch.Generator().manual_seed(1)
    feats = torch.rand(2, 3, 4, 5, 5, generator=g)
    assert torch.equal(lam(feats), feats.reshape(2, 12, 5, 5))
    with torch.no_grad():
        lam.gamma.fill_(1.0)
    out = lam(feats).view(2, 3, 4, 5, 5)
    flat = feats.reshape(2, 3, -1)
    energy = flat @ flat.transpose(1, 2)
    attn = torch.softmax(energy.amax(-1, keepdim=True) - energy, dim=-1)
    assert torch.allclose(attn.sum(-1), torch.ones(2, 3))
    expected = (attn @ flat).view_as(feats) + feats
    assert torch.allclose(out, expected, atol=1e-6)


def test_channel_spatial_attention_is_hans_3d_conv_mask():
    csam = han.ChannelSpatialAttention()
    x = torch.rand(2, 6, 5, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(csam(x), x)  # gamma starts at zero
    conv3d = torch.nn.Conv3d(1, 1, 3, 1, 1)
    with torch.no_grad():
        conv3d.weight.copy_(csam.weight.view(1, 1, 3, 3, 3))
        conv3d.bias.copy_(csam.bias)
        csam.gamma.fill_(0.8)
        expected = x + x * 0.8 * torch.sigmoid(conv3d(x.unsqueeze(1)).squeeze(1))
        assert torch.allclose(csam.volume_conv(x), conv3d(x.unsqueeze(1)).squeeze(1), atol=1e-6)
        assert torch.allclose(csam(x), expected, atol=1e-6)


def test_channels_last_and_bf16_autocast(rand_image):
    model = archs.build("han-lite", scale=2, **TINY).eval()
    with torch.no_grad():
        model.lam.gamma.fill_(0.5)
        model.csam.gamma.fill_(0.5)
        x = rand_image(1, 3, 9, 7)
        y = model(x)
        model.to(memory_format=torch.channels_last)  # as the Upscaler does: no 5-D parameter
        y_cl = model(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y_bf = model(x)
    assert torch.allclose(y_cl, y, atol=1e-5)
    assert torch.isfinite(y_bf).all() and (y_bf.float() - y).abs().max() < 0.1


@pytest.mark.parametrize(
    "kwargs",
    [{"scale": 1}, {"num_feat": 40, "reduction": 16}, {"num_group": 0}, {"reduction": 2.0},
     {"n_resgroups": 3}],
)
def test_bad_kwargs_give_one_line(kwargs):
    with pytest.raises(BlindSRError) as err:
        archs.build("han-lite", **kwargs)
    assert "\n" not in str(err.value)


def test_gradients_reach_every_parameter(rand_image):
    model = archs.build("han-lite", scale=2, **TINY)
    with torch.no_grad():
        model.lam.gamma.fill_(0.5)
        model.csam.gamma.fill_(0.5)
    model(rand_image(1, 3, 6, 6)).square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    for name in ("lam.gamma", "conv_lam.weight", "csam.gamma", "csam.weight", "csam.bias",
                 "conv_fuse.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
