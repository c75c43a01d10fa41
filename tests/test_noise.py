"""Tests for blindsr.ops.noise: Gaussian and Poisson noise, seeded and per-sample."""

import pytest
import torch

from blindsr.errors import BlindSRError
from blindsr.ops.noise import as_generator, gaussian_noise, poisson_noise


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_std_matches_sigma_per_sample():
    x = torch.full((3, 3, 128, 128), 0.5)
    sigma = torch.tensor([5.0, 15.0, 30.0])
    noise = gaussian_noise(x, sigma, generator=_gen(), clip=False) - x
    std = noise.std(dim=(1, 2, 3)) * 255
    torch.testing.assert_close(std, sigma, rtol=0.02, atol=0)
    assert noise.mean().abs() < 1e-3


def test_gaussian_scalar_sigma_and_clipping():
    x = torch.full((1, 3, 64, 64), 0.98)
    out = gaussian_noise(x, 25.0, generator=_gen())
    assert out.max() <= 1 and out.min() >= 0
    assert (out == 1).float().mean() > 0.2  # a lot of the noise was clipped
    assert gaussian_noise(x, 25.0, generator=_gen(), clip=False).max() > 1


def test_same_seed_same_noise_different_seed_different(rand_image):
    x = rand_image(2, 3, 16, 16)
    a = gaussian_noise(x, 10.0, generator=_gen(1))
    torch.testing.assert_close(a, gaussian_noise(x, 10.0, generator=_gen(1)))
    assert not torch.equal(a, gaussian_noise(x, 10.0, generator=_gen(2)))
    p = poisson_noise(x, 1.0, generator=_gen(1))
    torch.testing.assert_close(p, poisson_noise(x, 1.0, generator=_gen(1)))
    assert not torch.equal(p, poisson_noise(x, 1.0, generator=_gen(2)))


def test_gray_noise_identical_across_channels_per_sample(rand_image):
    x = torch.full((2, 3, 32, 32), 0.5)
    gray = torch.tensor([True, False])
    noise = gaussian_noise(x, 20.0, gray=gray, generator=_gen(), clip=False) - x
    torch.testing.assert_close(noise[0, 0], noise[0, 1])
    torch.testing.assert_close(noise[0, 0], noise[0, 2])
    assert not torch.allclose(noise[1, 0], noise[1, 1])
    img = rand_image(2, 3, 32, 32)
    pn = poisson_noise(img, 2.0, gray=gray, generator=_gen(), clip=False) - img
    torch.testing.assert_close(pn[0, 0], pn[0, 1])
    assert not torch.allclose(pn[1, 0], pn[1, 1])


def test_poisson_statistics_follow_the_signal():
    # An 8-bit image with 256 distinct levels: vals = 256, noise var = q / 256 (times scale^2).
    levels = torch.arange(256.0) / 255
    x = levels.repeat(3, 64, 1)[None].expand(2, 3, 64, 256).contiguous()
    scale = torch.tensor([1.0, 2.0])
    noise = poisson_noise(x, scale, generator=_gen(), clip=False) - x
    dark, bright = noise[..., :64], noise[..., 192:]
    expect_dark = (levels[:64].mean() / 256).sqrt()
    expect_bright = (levels[192:].mean() / 256).sqrt()
    for i, s in enumerate(scale):
        assert float(dark[i].std()) == pytest.approx(float(s * expect_dark), rel=0.05)
        assert float(bright[i].std()) == pytest.approx(float(s * expect_bright), rel=0.05)
    assert noise.mean().abs() < 2e-3


def test_poisson_levels_count_distinct_values():
    # Two levels only -> vals = 2: Poisson(q * 2) / 2 gives much stronger noise than vals = 256.
    x = torch.zeros(1, 1, 64, 64)
    x[..., 32:] = 1.0
    noise = poisson_noise(x, 1.0, generator=_gen(), clip=False) - x
    assert noise[..., 32:].std() == pytest.approx((1 / 2) ** 0.5, rel=0.1)
    assert (noise[..., :32] == 0).all()  # zero signal, zero shot noise


def test_bad_arguments_raise(rand_image):
    x = rand_image(2, 3, 8, 8)
    with pytest.raises(BlindSRError):
        gaussian_noise(x, torch.ones(3))
    with pytest.raises(BlindSRError):
        poisson_noise(x, 1.0, gray=torch.tensor([True, False, True]))
    with pytest.raises(BlindSRError):
        gaussian_noise(x[0], 1.0)


def test_as_generator_takes_seeds_and_generators():
    assert as_generator(None) is None
    g = torch.Generator()
    assert as_generator(g) is g
    assert torch.equal(torch.rand(3, generator=as_generator(7)),
                       torch.rand(3, generator=torch.Generator().manual_seed(7)))
    for bad in (-1, 1.5, "7", False):
        with pytest.raises(BlindSRError, match="seed must be"):
            as_generator(bad)
