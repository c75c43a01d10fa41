"""SRVGGNetCompact: Real-ESRGAN's key layout and parameter counts, the nearest skip, loading a
Real-ESRGAN-style ``.pth`` as it is, and readable errors for weights that do not fit."""

import pytest
import torch
import torch.nn.functional as F

from blindsr import archs
from blindsr.archs.srvgg import kwargs_from_state_dict
from blindsr.checkpoint import load_model
from blindsr.errors import BlindSRError


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_of_the_released_compact_models():
    general = archs.build("srvgg", num_feat=64, num_conv=32, scale=4)  # realesr-general-x4v3
    anime = archs.build("srvgg", num_feat=64, num_conv=16, scale=4)  # realesr-animevideov3
    assert _params(general) == 1_213_296
    assert _params(anime) == 621_424


def test_key_layout_is_real_esrgans():
    sd = archs.build("srvgg", num_feat=8, num_conv=2, scale=4).state_dict()
    assert list(sd) == ["body.0.weight", "body.0.bias", "body.1.weight",
                        "body.2.weight", "body.2.bias", "body.3.weight",
                        "body.4.weight", "body.4.bias", "body.5.weight",
                        "body.6.weight", "body.6.bias"]
    assert sd["body.1.weight"].shape == (8,)  # per-channel PReLU
    assert sd["body.6.weight"].shape == (48, 8, 3, 3)  # 3 x 4^2 channels for the pixel shuffle


def test_no_body_convs_is_allowed():
    model = archs.build("srvgg", num_feat=4, num_conv=0, scale=2)
    assert archs.from_state_dict(model.state_dict()).arch_kwargs["num_conv"] == 0


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 8])
def test_round_trip_from_tensors_at_every_scale(scale, rand_image):
    torch.manual_seed(0)
    model = archs.build("srvgg", num_feat=8, num_conv=3, scale=scale).eval()
    clone = archs.from_state_dict(model.state_dict()).eval()
    assert clone.arch_name == "srvgg" and clone.arch_kwargs == model.arch_kwargs
    x = rand_image(1, 3, 6, 10)
    with torch.no_grad():
        y = model(x)
        assert y.shape == (1, 3, 6 * scale, 10 * scale) and torch.equal(y, clone(x))


def test_a_zero_body_is_nearest_neighbour_upsampling(rand_image):
    model = archs.build("srvgg", num_feat=4, num_conv=1, scale=4).eval()
    last = model.body[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    x = rand_image(1, 3, 5, 7)
    with torch.no_grad():
        assert torch.equal(model(x), F.interpolate(x, scale_factor=4, mode="nearest"))


def test_a_real_esrgan_style_pth_loads_as_it_is(tmp_path, rand_image):
    torch.manual_seed(1)
    model = archs.build("srvgg", num_feat=8, num_conv=4, scale=2).eval()
    path = tmp_path / "realesr-tiny-x2.pth"
    torch.save({"params": model.state_dict()}, path)  # Real-ESRGAN's release format
    loaded = load_model(path)
    assert loaded.arch_name == "srvgg" and loaded.arch_kwargs["num_conv"] == 4
    x = rand_image(1, 3, 9, 9)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_weights_that_do_not_fit_are_named():
    sd = archs.build("srvgg", num_feat=8, num_conv=1, scale=4).state_dict()
    del sd["body.4.weight"], sd["body.4.bias"]  # ends with a PReLU, no output conv
    with pytest.raises(BlindSRError, match="body.3 is not a conv"):
        kwargs_from_state_dict(sd)
    odd = archs.build("srvgg", num_feat=8, num_conv=1, scale=4).state_dict()
    odd["body.4.weight"] = odd["body.4.weight"][:40]
    with pytest.raises(BlindSRError, match="40 channels, not the 3 input channels x scale"):
        kwargs_from_state_dict(odd)
    relu = {k: v for k, v in sd.items() if not k.startswith(("body.1.", "body.3."))}
    assert archs.detect_arch(relu) == "srvgg"
    with pytest.raises(BlindSRError, match="without PReLU weights .* not supported"):
        archs.from_state_dict(relu)
    headless = {k: v for k, v in odd.items() if not k.startswith("body.0.")}
    with pytest.raises(BlindSRError, match="matches no known architecture"):
        archs.detect_arch(headless)  # not taken for srvgg, and no other detection broken
    with pytest.raises(BlindSRError, match="num_out_ch == num_in_ch"):
        archs.build("srvgg", num_in_ch=1, num_out_ch=3)
    with pytest.raises(BlindSRError, match="scale must be one of"):
        archs.build("srvgg", scale=5)
