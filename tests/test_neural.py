"""AND's degradation network: structure, exact identity initialisation, noise, the scaled ball,
PGD in parameter space and random perturbations."""

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from blindsr.degrade.neural import (
    Ball,
    NeuralDegradation,
    at_identity,
    base_params,
    identity_error,
    identity_gradients,
    kind_shares,
    param_kind,
    pgd,
    random_perturbation,
    run,
    scaled_norm,
)
from blindsr.errors import BlindSRError
from blindsr.ops.blurpool import BlurPool, blurpool


def delta_of(params, net):
    theta = base_params(net)
    return {n: params[n] - theta[n] for n in theta}


def upsample_l1(hr, scale=4):
    """A parameter-free restorer (bilinear upsampling) and its L1 loss to ``hr``."""
    return lambda lr: (F.interpolate(lr, scale_factor=scale, mode="bilinear") - hr).abs().mean()


def test_structure():
    net = NeuralDegradation(scale=4, channels=8)
    convs = net.convs()
    assert len(convs) == 11 and len(net.blocks()) == 10
    assert all(c.kernel_size == (3, 3) and c.bias is None for c in convs)
    assert convs[0].in_channels == 3 and convs[-1].out_channels == 3
    assert all(c.out_channels == 8 for c in convs[:-1])
    assert isinstance(net.pool, BlurPool) and net.pool.stride == 4
    kinds = Counter(param_kind(n) for n, _ in net.named_parameters())
    assert kinds == {"conv": 11, "noise": 10, "slope": 10}
    assert net(torch.rand(2, 3, 32, 24)).shape == (2, 3, 8, 6)


def test_blurpool_taps_keep_lr_registered_with_bicubic_lr():
    assert NeuralDegradation(scale=4, channels=4).pool.taps == 4
    assert NeuralDegradation(scale=3, channels=4).pool.taps == 5
    assert NeuralDegradation(scale=4, channels=4, taps=6).pool.taps == 6
    with pytest.raises(BlindSRError, match="5 BlurPool taps at x4 do not keep LR pixels centred"):
        NeuralDegradation(scale=4, channels=4, taps=5)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_identity_equals_blurpool_with_fresh_random_matrices(rand_image, scale):
    net = NeuralDegradation(scale=scale, channels=64)  # the paper's width
    x = rand_image(2, 3, 36, 36, seed=3)
    g = torch.Generator().manual_seed(0)
    centres = []
    for _ in range(3):
        net.identity_(g)
        out = net(x, net.sample_noise(x, g))  # strengths 0: the noise changes nothing
        assert (out - blurpool(x, scale, net.pool.taps)).abs().max() <= 1e-4
        assert identity_error(net, x) <= 1e-4
        for block in net.blocks():
            assert torch.all(block.act.weight == 1) and torch.all(block.noise.weight == 0)
        for conv in net.convs():
            off = conv.weight.detach().clone()
            off[:, :, 1, 1] = 0
            assert torch.all(off == 0)
        centres.append(net.head[2].conv.weight[:, :, 1, 1].clone())
    assert not torch.equal(centres[0], centres[1]) and not torch.equal(centres[1], centres[2])


def test_identity_is_reproducible_from_the_generator():
    a, b = NeuralDegradation(channels=8), NeuralDegradation(channels=8)
    a.identity_(torch.Generator().manual_seed(5))
    b.identity_(torch.Generator().manual_seed(5))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_xavier_ablation_fills_every_tap(rand_image):
    net = NeuralDegradation(channels=8).xavier_(torch.Generator().manual_seed(0))
    w = net.head[1].conv.weight
    assert torch.all(w != 0)
    bound = math.sqrt(6 / ((8 + 8) * 9))
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
    assert identity_error(net, rand_image(1, 3, 32, 32)) > 0.05


def test_noise_injection_adds_scaled_per_pixel_noise(rand_image):
    net = NeuralDegradation(channels=8)
    x = rand_image(2, 3, 32, 32)
    maps = net.sample_noise(x, torch.Generator().manual_seed(1))
    assert [tuple(m.shape) for m in maps] == [(2, 1, 32, 32)] * 5 + [(2, 1, 8, 8)] * 5
    again = net.sample_noise(x, torch.Generator().manual_seed(1))
    assert all(torch.equal(m, n) for m, n in zip(maps, again, strict=True))
    block = net.tail[4]
    with torch.no_grad():
        block.noise.weight[3] = 0.5
    h = torch.zeros(2, 8, 8, 8)
    out = block.noise(h, maps[-1])
    torch.testing.assert_close(out[:, 3:4], 0.5 * maps[-1])
    assert torch.all(out[:, :3] == 0)
    assert not torch.equal(net(x, maps), net(x))
    with pytest.raises(BlindSRError, match="needs 10 noise maps, got 9"):
        net(x, maps[:-1])


def test_bad_arguments_are_clear_errors():
    with pytest.raises(BlindSRError, match="scale must be a positive integer"):
        NeuralDegradation(scale=0)
    with pytest.raises(BlindSRError, match="expects an N,3,H,W batch"):
        NeuralDegradation(channels=4)(torch.rand(1, 1, 16, 16))


def test_ball_factors_and_scaled_norm():
    net = NeuralDegradation(channels=8)
    f = Ball().factors(net)
    assert f["head.0.conv.weight"] == pytest.approx(math.sqrt(3 * 9))
    assert f["head.1.conv.weight"] == pytest.approx(math.sqrt(8 * 9))
    assert f["last.weight"] == pytest.approx(math.sqrt(8 * 9))
    assert f["tail.2.noise.weight"] == 10 and f["head.0.act.weight"] == 50
    raw = Ball(conv_units="raw", conv=2.0).factors(net)
    assert raw["head.1.conv.weight"] == 2.0
    delta = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    delta["head.0.act.weight"][0] = 0.1  # 50 * 0.1 = 5
    delta["tail.0.noise.weight"][1] = 1.2  # 10 * 1.2 = 12
    assert float(scaled_norm(delta, f)) == pytest.approx(13.0)
    shares = kind_shares(delta, f)
    assert float(shares["noise"]) == pytest.approx(144 / 169)
    assert float(shares["conv"]) == 0


def test_pgd_stays_in_the_ball_and_raises_the_loss(rand_image):
    net = NeuralDegradation(channels=8)
    net.identity_(torch.Generator().manual_seed(0))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    hr = rand_image(2, 3, 32, 32, seed=1)
    noise = net.sample_noise(hr, torch.Generator().manual_seed(1))
    loss_fn = upsample_l1(hr)
    ball = Ball(epsilon=0.5)  # 4 steps of 0.15 reach the boundary
    params, losses = pgd(net, hr, loss_fn, ball, steps=4, alpha=0.15, noise=noise)
    assert len(losses) == 4
    assert float(scaled_norm(delta_of(params, net), ball.factors(net))) == pytest.approx(0.5,
                                                                                      rel=1e-4)
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())  # nothing in place
    assert not any(p.requires_grad for p in params.values())
    with torch.no_grad():
        attacked = loss_fn(run(net, params, hr, noise).clamp(0, 1))
        identity = loss_fn(net(hr, noise).clamp(0, 1))
    assert float(identity) == pytest.approx(float(losses[0]))
    assert attacked > identity * 1.05 and losses[-1] > losses[0]
    same, none = pgd(net, hr, loss_fn, ball, steps=0)
    assert none == [] and all(torch.equal(same[n], before[n]) for n in before)


def test_pgd_step_is_alpha_along_the_normalised_gradient(rand_image):
    net = NeuralDegradation(channels=4)
    hr = rand_image(1, 3, 16, 16, seed=2)
    ball = Ball(epsilon=100.0)  # no projection
    params, _ = pgd(net, hr, upsample_l1(hr), ball, steps=1, alpha=0.05)
    assert float(scaled_norm(delta_of(params, net), ball.factors(net))) == pytest.approx(0.05,
                                                                                       rel=1e-4)


@pytest.mark.parametrize("scale,with_noise", [(4, True), (3, True), (2, False)])
def test_identity_gradients_equal_autograd_through_the_network(rand_image, scale, with_noise):
    net = NeuralDegradation(scale=scale, channels=6)
    g = torch.Generator().manual_seed(3)
    net.identity_(g)
    hr = rand_image(2, 3, 24, 24, seed=4)
    noise = net.sample_noise(hr, g) if with_noise else None
    target = rand_image(2, 3, 24 // scale, 24 // scale, seed=5)

    def loss_of(lr):  # non-linear, so every parameter kind gets a non-trivial gradient
        return ((lr - target) ** 2).sum() + (3 * lr).sin().sum()

    params = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters()}
    grads = torch.autograd.grad(loss_of(run(net, params, hr, noise)), list(params.values()),
                                allow_unused=True)  # None: noise strengths without noise maps
    expected = {n: torch.zeros_like(p) if gr is None else gr
                for (n, p), gr in zip(params.items(), grads, strict=True)}
    lr = net.pool(hr).requires_grad_(True)
    (grad_lr,) = torch.autograd.grad(loss_of(lr), lr)
    found = identity_gradients(net, hr, grad_lr, noise)
    assert set(found) == set(expected)
    for n, e in expected.items():
        assert found[n].shape == e.shape and found[n].dtype == e.dtype
        scale_n = float(e.abs().max())
        if not with_noise and n.endswith("noise.weight"):
            assert scale_n == 0 and not found[n].any()
            continue
        assert scale_n > 0, n
        assert float((found[n] - e).abs().max()) <= 1e-4 * scale_n, n


def test_identity_gradients_ignore_the_callers_grad_and_autocast_modes(rand_image):
    net = NeuralDegradation(channels=6)
    hr = rand_image(2, 3, 24, 24, seed=9)
    noise = net.sample_noise(hr, torch.Generator().manual_seed(9))
    grad_lr = rand_image(2, 3, 6, 6, seed=10) - 0.5
    plain = identity_gradients(net, hr, grad_lr, noise)
    with torch.no_grad():
        assert all(torch.equal(v, plain[n])
                   for n, v in identity_gradients(net, hr, grad_lr, noise).items())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = identity_gradients(net, hr, grad_lr, noise)
    assert all(torch.equal(v, plain[n]) for n, v in cast.items())  # float32 all the same
    with pytest.raises(BlindSRError, match="needs 10 noise maps, got 9"):
        identity_gradients(net, hr, grad_lr, noise[:-1])


def test_identity_gradients_refuse_a_network_off_its_identity(rand_image):
    net = NeuralDegradation(channels=4)
    hr = rand_image(1, 3, 16, 16, seed=6)
    grad_lr = torch.ones(1, 3, 4, 4)
    assert at_identity(net)
    for change in ("head.0.act.weight", "tail.1.noise.weight", "head.2.conv.weight"):
        net.identity_()
        with torch.no_grad():
            dict(net.named_parameters())[change].view(-1)[0] += 0.1
        assert not at_identity(net)
        with pytest.raises(BlindSRError, match="identity point"):
            identity_gradients(net, hr, grad_lr)
    net.xavier_()
    assert not at_identity(net)


def test_pgd_from_identity_takes_the_same_steps_without_the_first_network_pass(rand_image):
    net = NeuralDegradation(channels=8)
    g = torch.Generator().manual_seed(7)
    net.identity_(g)
    hr = rand_image(2, 3, 32, 32, seed=8)
    noise = net.sample_noise(hr, g)
    ball = Ball(epsilon=0.5)
    plain, plain_losses = pgd(net, hr, upsample_l1(hr), ball, steps=3, alpha=0.2, noise=noise)
    calls = []
    hook = net.head[0].conv.register_forward_hook(lambda *_: calls.append(1))
    try:
        fast, fast_losses = pgd(net, hr, upsample_l1(hr), ball, steps=3, alpha=0.2, noise=noise,
                                from_identity=True)
    finally:
        hook.remove()
    assert len(calls) == 2  # steps 2 and 3 only: the first step never runs the network
    assert torch.allclose(torch.stack(fast_losses), torch.stack(plain_losses), rtol=1e-5)
    for n in plain:
        assert torch.allclose(fast[n], plain[n], rtol=1e-4, atol=1e-6), n


def test_random_perturbation_is_uniform_in_the_ball():
    net = NeuralDegradation(channels=8)
    ball = Ball(epsilon=3.0)
    g = torch.Generator().manual_seed(0)
    norms, deltas = [], []
    for _ in range(3):
        d = delta_of(random_perturbation(net, ball, g), net)
        norms.append(float(scaled_norm(d, ball.factors(net))))
        deltas.append(d["head.1.conv.weight"])
    assert all(2.9 < n <= 3.0 + 1e-4 for n in norms)  # high dimension: radius ~ epsilon
    assert not torch.equal(deltas[0], deltas[1])
    again = delta_of(random_perturbation(net, ball, torch.Generator().manual_seed(0)), net)
    assert torch.equal(again["head.1.conv.weight"], deltas[0])


def conv_tap_sums(delta):
    return {n: d.sum(dim=(-2, -1)) for n, d in delta.items() if param_kind(n) == "conv"}


@pytest.mark.parametrize("make", ["pgd", "random"])
def test_flat_colour_is_kept_unless_freed(make, rand_image):
    """Conv deviations sum to zero over the taps, so a flat colour comes out of the perturbed
    network as out of the identity (slopes frozen here: their non-linearity may change it)."""
    net = NeuralDegradation(channels=8)
    net.identity_(torch.Generator().manual_seed(0))
    hr = rand_image(2, 3, 32, 32, seed=1)
    flat = torch.ones(1, 3, 32, 32) * torch.tensor([0.2, 0.5, 0.7]).view(1, 3, 1, 1)
    outs = {}
    for keep in (True, False):
        ball = Ball(epsilon=0.5, slope=1e9, keep_flat_colour=keep)
        if make == "pgd":
            params, _ = pgd(net, hr, upsample_l1(hr), ball, steps=3, alpha=0.2)
        else:
            params = random_perturbation(net, ball, torch.Generator().manual_seed(2))
        sums = conv_tap_sums(delta_of(params, net))
        moved = max(float(d.abs().max()) for d in delta_of(params, net).values())
        assert moved > 1e-3
        if keep:
            assert all(float(s.abs().max()) < 1e-6 for s in sums.values())
        else:
            assert max(float(s.abs().max()) for s in sums.values()) > 1e-3
        with torch.no_grad():
            outs[keep] = (run(net, params, flat) - net(flat)).abs().max()
    assert outs[True] < 1e-5 < outs[False]
