import copy

import pytest
import torch
from torch import nn

from blindsr import archs
from blindsr.errors import BlindSRError
from blindsr.strategies.dropout import ChannelDropout, default_p


def build(arch: str = "srresnet") -> nn.Module:
    torch.manual_seed(0)
    if arch == "srresnet":
        return archs.build("srresnet", num_feat=16, num_block=1, scale=2)
    return archs.build("rrdbnet", num_feat=8, num_block=1, num_grow_ch=4, scale=2)


def make(params=None, arch="srresnet") -> ChannelDropout:
    g = build(arch)
    return ChannelDropout(g, ChannelDropout.parse_params(params or {}), 2, torch.device("cpu"))


def batch(rand_image, n=2):
    return {"lr": rand_image(n, h=8, w=8, seed=2), "hr": rand_image(n, h=16, w=16, seed=1),
            "has_hr": torch.ones(n, dtype=torch.bool), "has_lr": torch.ones(n, dtype=torch.bool)}


def last_conv_inputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What conv_last receives (after the strategy's hook, which was registered first)."""
    seen = []
    handle = model.conv_last.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("arch", ["srresnet", "rrdbnet"])
def test_channels_dropped_before_the_last_conv_in_training_only(rand_image, arch):
    s = make({"p": 0.5}, arch)
    b = batch(rand_image)
    bare = copy.deepcopy(s.generator)
    list(s.training_step(b, 0))
    assert s.layer == "conv_last"
    g = s.generator.train()
    clean = last_conv_inputs(bare.eval(), b["lr"])
    torch.manual_seed(1)
    dropped = last_conv_inputs(g, b["lr"])
    zero = dropped.abs().amax(dim=(2, 3)) == 0  # (N, C): whole channels zeroed
    kept = ~zero & (clean.abs().amax(dim=(2, 3)) > 0)
    assert 0 < zero.float().mean() < 1
    assert torch.allclose(dropped[kept], 2 * clean[kept])  # survivors scaled by 1 / (1 - p)
    # off in eval: the same outputs as the bare network, deterministic
    g.eval()
    with torch.no_grad():
        assert torch.equal(g(b["lr"]), bare(b["lr"]))


def test_state_dict_keys_unchanged_and_attached_once(rand_image):
    s = make()
    keys = list(s.generator.state_dict())
    b = batch(rand_image)
    list(s.training_step(b, 0))
    list(s.training_step(b, 1))
    assert list(s.generator.state_dict()) == keys
    assert len(s.generator.conv_last._forward_pre_hooks) == 1
    fresh = archs.from_state_dict(s.generator.state_dict())
    assert type(fresh) is type(s.generator)


def test_p_defaults_by_architecture():
    assert make(arch="srresnet").p == 0.5 and make(arch="rrdbnet").p == 0.7
    assert make({"p": 0.2}, arch="rrdbnet").p == 0.2
    assert default_p(nn.Conv2d(1, 1, 1)) == 0.5
    with pytest.raises(BlindSRError, match="p: must be < 1"):
        ChannelDropout.parse_params({"p": 1.0})


def test_loss_is_l1_of_the_dropped_out_network(rand_image):
    s = make()
    b = batch(rand_image)
    torch.manual_seed(5)
    (u,) = list(s.training_step(b, 0))
    torch.manual_seed(5)
    with torch.no_grad():
        sr = s.generator(b["lr"])
        sr_eval = copy.deepcopy(s.generator).eval()(b["lr"])
    assert u.loss.item() == pytest.approx((sr - b["hr"]).abs().mean().item(), rel=1e-5)
    assert (sr - sr_eval).abs().max() > 1e-4  # the loss saw the dropped-out network
    u.loss.backward()
    assert s.generator.conv_first.weight.grad is not None


def test_registered_and_validated_from_a_config():
    from blindsr.strategies import get_strategy

    assert get_strategy("dropout") is ChannelDropout
    assert ChannelDropout.parse_params({"loss": "l1", "p": 0.7}).p == 0.7
