import pytest
import torch

from blindsr import archs
from blindsr.archs.grow import grow_state_dict
from blindsr.errors import BlindSRError


def trained(seed: int = 0, **kwargs) -> torch.nn.Module:
    """A small srresnet with non-trivial weights everywhere (fresh blocks are near-identity)."""
    torch.manual_seed(seed)
    net = archs.build("srresnet", **kwargs)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_grown_network_computes_the_same_function(rand_image, scale):
    small = trained(num_feat=8, num_block=2, scale=scale)
    big = archs.build("srresnet", num_feat=16, num_block=5, scale=scale)
    big.load_state_dict(grow_state_dict(small.state_dict(), big))
    x = rand_image(2, 3, 12, 10)
    with torch.no_grad():
        assert torch.allclose(big(x), small(x), atol=1e-6)


def test_new_channels_carry_signal_and_their_outgoing_weights_learn(rand_image):
    small = trained(num_feat=8, num_block=2, scale=4)
    big = archs.build("srresnet", num_feat=16, num_block=3, scale=4)
    big.load_state_dict(grow_state_dict(small.state_dict(), big))
    w = big.body[0].conv1.weight
    assert torch.equal(w[:8, 8:], torch.zeros_like(w[:8, 8:]))  # new -> old: zero
    assert w[8:].abs().sum() > 0  # new outputs: random, not dead
    added = big.body[2]
    assert added.conv2.weight.abs().sum() == 0 and added.conv1.weight.abs().sum() > 0
    x = rand_image(1, 3, 12, 12)
    big(x).square().mean().backward()
    assert w.grad[:8, 8:].abs().sum() > 0  # the zero block gets gradients: growth is trainable
    assert added.conv2.weight.grad.abs().sum() > 0


def test_same_size_is_a_plain_copy():
    small = trained(num_feat=8, num_block=2, scale=4)
    big = archs.build("srresnet", num_feat=8, num_block=2, scale=4)
    grown = grow_state_dict(small.state_dict(), big)
    assert all(torch.equal(v, grown[k]) for k, v in small.state_dict().items())


def test_what_cannot_grow_is_a_one_line_error():
    big = archs.build("srresnet", num_feat=8, num_block=2, scale=4)

    def grow(**kwargs):
        return grow_state_dict(trained(**{"num_feat": 8, "num_block": 2, **kwargs}).state_dict(),
                               big)

    with pytest.raises(BlindSRError, match="num_feat 16 is larger than the target's 8"):
        grow(num_feat=16)
    with pytest.raises(BlindSRError, match="num_block 3 is larger than the target's 2"):
        grow(num_block=3)
    for kwargs in ({"scale": 2}, {"num_in_ch": 1}, {"num_out_ch": 1}):  # would scramble it
        with pytest.raises(BlindSRError, match="differs from the target's .*only num_feat, "
                                               "num_block may grow"):
            grow(**kwargs)
    x3 = archs.build("srresnet", num_feat=4, num_block=1, scale=3)  # upconv1 "fits" a x4's
    with pytest.raises(BlindSRError, match="scale 3 differs"):
        grow_state_dict(x3.state_dict(), archs.build("srresnet", num_feat=16, num_block=1))
    partial = dict(trained(num_feat=4, num_block=1).state_dict())
    del partial["conv_hr.bias"]
    with pytest.raises(BlindSRError, match="smaller weights lack conv_hr.bias"):
        grow_state_dict(partial, big)
    junk = {**trained(num_feat=4, num_block=1).state_dict(), "extra.weight": torch.zeros(1)}
    with pytest.raises(BlindSRError, match="smaller weights have extra.weight, which the larger"):
        grow_state_dict(junk, big)
    with pytest.raises(BlindSRError, match="not srresnet weights"):
        grow_state_dict({"conv_body.weight": torch.zeros(1)}, big)
    rrdb = archs.build("rrdbnet", num_feat=8, num_block=1, num_grow_ch=4, scale=4)
    with pytest.raises(BlindSRError, match="rrdbnet cannot be grown"):
        grow_state_dict(rrdb.state_dict(), rrdb)
