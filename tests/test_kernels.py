"""Tests for blindsr.ops.kernels: batched kernel generators and per-sample filtering."""

import math

import pytest
import torch
import torch.nn.functional as F

from blindsr.errors import BlindSRError
from blindsr.ops.kernels import (
    filter2d,
    gaussian_kernel,
    generalized_gaussian_kernel,
    plateau_kernel,
    pulse_kernel,
    restrict_support,
    sinc_kernel,
)


def _all_kernels(size: int = 15) -> dict[str, torch.Tensor]:
    sx = torch.tensor([0.8, 2.0, 3.0])
    sy = torch.tensor([2.5, 1.0, 3.0])
    th = torch.tensor([0.3, -1.2, 2.0])
    beta = torch.tensor([0.5, 1.5, 4.0])
    return {
        "gaussian": gaussian_kernel(size, sx, sy, th),
        "generalized": generalized_gaussian_kernel(size, sx, sy, th, beta),
        "plateau": plateau_kernel(size, sx, sy, th, beta.clamp(1, 2)),
        "sinc": sinc_kernel(size, torch.tensor([math.pi / 5, math.pi / 2, math.pi])),
    }


@pytest.mark.parametrize("name", ["gaussian", "generalized", "plateau", "sinc"])
def test_kernels_sum_to_one_and_are_point_symmetric(name):
    k = _all_kernels()[name]
    assert k.shape == (3, 15, 15)
    torch.testing.assert_close(k.sum(dim=(1, 2)), torch.ones(3))
    torch.testing.assert_close(k, k.flip(-1, -2))  # 180-degree symmetry
    assert torch.isfinite(k).all()


def test_isotropic_kernels_have_all_symmetries():
    for k in (gaussian_kernel(9, 1.3), sinc_kernel(9, 1.1), plateau_kernel(9, 1.3, beta=1.5)):
        torch.testing.assert_close(k, k.flip(-1))
        torch.testing.assert_close(k, k.transpose(-1, -2))
        assert k[0].argmax().item() == 4 * 9 + 4  # peak at the centre


def test_gaussian_matches_closed_form():
    ax = torch.arange(7.0) - 3
    g = torch.exp(-(ax**2) / (2 * 1.6**2))
    ref = g[:, None] * g[None, :]
    torch.testing.assert_close(gaussian_kernel(7, 1.6)[0], ref / ref.sum())


def test_sigma_x_blurs_along_width():
    k = gaussian_kernel(21, 3.0, 0.5, 0.0)[0]
    assert k.sum(dim=0).std() < k.sum(dim=1).std()  # wide along columns (x), narrow along rows
    assert k[10, 13] > k[13, 10]


def test_rotation_by_90_degrees_swaps_axes():
    base = gaussian_kernel(21, 3.0, 0.7, 0.0)
    rotated = gaussian_kernel(21, 3.0, 0.7, math.pi / 2)
    torch.testing.assert_close(rotated, base.transpose(-1, -2))
    torch.testing.assert_close(rotated, gaussian_kernel(21, 0.7, 3.0, 0.0))
    gen = generalized_gaussian_kernel(21, 2.0, 0.6, math.pi / 2, 2.0)
    torch.testing.assert_close(gen, generalized_gaussian_kernel(21, 0.6, 2.0, 0.0, 2.0))


def test_generalized_beta_one_is_gaussian():
    torch.testing.assert_close(
        generalized_gaussian_kernel(11, 1.5, 2.5, 0.4, 1.0), gaussian_kernel(11, 1.5, 2.5, 0.4)
    )


def test_sinc_matches_jinc_formula_and_low_cutoff_is_wider():
    wc = torch.tensor([math.pi / 5, math.pi])
    k = sinc_kernel(21, wc)
    r = torch.tensor([1.0, 2.0, 5.0])
    raw = wc[:, None] * torch.special.bessel_j1(wc[:, None] * r) / (2 * math.pi * r)
    centre = wc**2 / (4 * math.pi)  # the r -> 0 limit
    torch.testing.assert_close(k[:, 10, [11, 12, 15]] / k[:, 10, 10:11], raw / centre[:, None])
    assert k[0, 10, 10] < k[1, 10, 10]  # lower cut-off -> more blur -> lower peak


def test_restrict_support_equals_padded_small_kernel():
    big = gaussian_kernel(21, torch.tensor([2.0, 2.0]))
    small = restrict_support(big, torch.tensor([7, 21]))
    padded = F.pad(gaussian_kernel(7, 2.0)[0], (7, 7, 7, 7))
    torch.testing.assert_close(small[0], padded)
    torch.testing.assert_close(small[1], big[1])
    sinc_small = restrict_support(sinc_kernel(21, 1.5), torch.tensor([9]))
    torch.testing.assert_close(sinc_small[0, 6:15, 6:15], sinc_kernel(9, 1.5)[0])


def test_bad_parameters_raise():
    with pytest.raises(BlindSRError):
        gaussian_kernel(7, 0.0)
    with pytest.raises(BlindSRError):
        gaussian_kernel(7, torch.ones(3), torch.ones(2))
    with pytest.raises(BlindSRError):
        sinc_kernel(0, 1.0)
    with pytest.raises(BlindSRError):
        filter2d(torch.rand(2, 3, 8, 8), torch.rand(3, 5, 5))
    with pytest.raises(BlindSRError):
        filter2d(torch.rand(1, 3, 8, 8), torch.rand(5, 5), padding="mirror")


def test_identity_kernel_leaves_image_unchanged(rand_image):
    x = rand_image(2, 3, 20, 24)
    torch.testing.assert_close(filter2d(x, pulse_kernel(7)[0]), x)
    torch.testing.assert_close(filter2d(x, pulse_kernel(21, n=2)), x)


def test_per_sample_kernels_equal_one_by_one(rand_image):
    x = rand_image(3, 3, 24, 24)
    kernels = _all_kernels(9)["gaussian"]
    batched = filter2d(x, kernels)
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], filter2d(x[i : i + 1], kernels[i]))


def test_gaussian_filter_matches_direct_conv(rand_image):
    x = rand_image(2, 3, 16, 16)
    k = gaussian_kernel(5, 1.2, 0.6, 0.5)[0]
    ref = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k.expand(3, 1, 5, 5), groups=3)
    torch.testing.assert_close(filter2d(x, k), ref)
    ref_rep = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k.expand(3, 1, 5, 5), groups=3)
    torch.testing.assert_close(filter2d(x, k, padding="replicate"), ref_rep)


def test_filter_keeps_constants_and_handles_tiny_images():
    x = torch.full((2, 3, 6, 5), 0.37)
    out = filter2d(x, gaussian_kernel(21, torch.tensor([1.0, 3.0])))  # radius 10 > image size
    assert out.shape == x.shape
    torch.testing.assert_close(out, x)
