"""Tests for blindsr.ops.blurpool: anti-aliased (binomial blur) downsampling."""

import pytest
import torch
import torch.nn.functional as F

from blindsr.errors import BlindSRError
from blindsr.ops import imresize
from blindsr.ops.blurpool import BlurPool, binomial_kernel, blurpool, centred_taps


def test_binomial_taps():
    torch.testing.assert_close(binomial_kernel(3)[1], torch.tensor([1.0, 2, 1]) * 2 / 16)
    k4 = torch.tensor([1.0, 3, 3, 1])
    torch.testing.assert_close(binomial_kernel(4), k4[:, None] * k4[None, :] / 64)
    assert binomial_kernel(5).sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("taps", [1, 3, 4, 5])
@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_output_shape_is_exactly_h_over_stride(rand_image, stride, taps):
    x = rand_image(2, 3, 24, 36)
    assert blurpool(x, stride, taps).shape == (2, 3, 24 // stride, 36 // stride)
    assert BlurPool(stride, taps)(x).shape == (2, 3, 24 // stride, 36 // stride)


def test_constant_stays_constant():
    x = torch.full((1, 3, 16, 16), 0.42)
    for taps in (3, 4, 5):
        torch.testing.assert_close(blurpool(x, 4, taps), torch.full((1, 3, 4, 4), 0.42))


def test_equals_explicit_conv(rand_image):
    x = rand_image(1, 2, 16, 16)
    row = torch.tensor([1.0, 3, 3, 1]) / 8
    k = (row[:, None] * row[None, :]).expand(2, 1, 4, 4)
    ref = F.conv2d(x, k, stride=4, groups=2)  # 4 taps at stride 4: each window is one block
    torch.testing.assert_close(blurpool(x, 4, 4), ref)
    torch.testing.assert_close(BlurPool(4)(x), ref)
    ref2 = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k, stride=2, groups=2)
    torch.testing.assert_close(blurpool(x, 2, 4), ref2)  # x2: Zhang's BlurPool


@pytest.mark.parametrize(("stride", "taps"), [(2, 4), (3, 3), (3, 5), (4, 4), (4, 6), (8, 4)])
def test_lr_pixels_are_centred_like_bicubic_lr(stride, taps):
    """On a ramp, output pixel i is input coordinate stride*i + (stride-1)/2, as MATLAB's
    imresize: a network trained on BlurPool LR is registered with bicubic test LR."""
    ramp = torch.arange(48, dtype=torch.float64).expand(1, 1, 8, 48)
    out = blurpool(ramp, stride, taps)
    assert centred_taps(taps, stride)
    centres = stride * torch.arange(out.shape[-1], dtype=torch.float64) + (stride - 1) / 2
    inner = slice(2, -2)  # away from the reflected borders
    torch.testing.assert_close(out[0, 0, 0, inner], centres[inner])
    torch.testing.assert_close(out[..., inner], imresize(ramp, scale=1 / stride)[..., inner])
    assert not centred_taps(5, 4)  # half a pixel late
    assert blurpool(ramp, 4, 5)[0, 0, 0, 3] == pytest.approx(14.0)


@pytest.mark.parametrize("size", [13, 14, 15, 16])
@pytest.mark.parametrize(("stride", "taps"), [(4, 4), (3, 5), (8, 4), (2, 3)])
def test_sizes_not_divisible_by_the_stride_round_up(rand_image, size, stride, taps):
    x = rand_image(1, 3, size, size + 1)
    assert blurpool(x, stride, taps).shape[-2:] == (-(-size // stride), -(-(size + 1) // stride))


def test_each_axis_only_needs_its_own_padding():
    assert blurpool(torch.rand(1, 1, 9, 3), 4, 4).shape == (1, 1, 3, 1)
    with pytest.raises(BlindSRError, match="a 9x2 image is too small"):
        blurpool(torch.rand(1, 1, 9, 2), 4, 6)


def test_stride_one_blurs_only(rand_image):
    x = rand_image(1, 3, 12, 12)
    out = blurpool(x, 1, 3)
    assert out.shape == x.shape
    assert out.std() < x.std()


def test_removes_nyquist_aliasing():
    i = torch.arange(32)
    checker = ((i[:, None] + i[None, :]) % 2).float().expand(1, 1, 32, 32)
    naive = checker[..., ::2, ::2]  # plain subsampling aliases the checkerboard to a constant 0
    assert naive.mean() == 0 and checker.mean() == 0.5
    for taps in (3, 4, 5):
        out = blurpool(checker, 2, taps)
        torch.testing.assert_close(out, torch.full_like(out, 0.5))  # the Nyquist energy is gone


def test_module_buffer_moves_and_is_not_saved():
    m = BlurPool(2).double()
    assert m.kernel.dtype == torch.float64
    assert "kernel" not in m.state_dict()
    assert m(torch.rand(1, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64


def test_bad_arguments_raise():
    with pytest.raises(BlindSRError):
        blurpool(torch.rand(1, 1, 8, 8), 0)
    with pytest.raises(BlindSRError):
        blurpool(torch.rand(1, 1, 8, 8), 2, taps=9)
    with pytest.raises(BlindSRError):
        blurpool(torch.rand(1, 1, 2, 2), 2, taps=5)
