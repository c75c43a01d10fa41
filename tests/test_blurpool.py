"""Tests for blindsr.ops.blurpool: anti-aliased (binomial blur) downsampling."""

import pytest
import torch
import torch.nn.functional as F

from blindsr.errors import BlindSRError
from blindsr.ops.blurpool import BlurPool, binomial_kernel, blurpool


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
    ref = F.conv2d(F.pad(x, (1, 2, 1, 2), mode="reflect"), k, stride=4, groups=2)
    torch.testing.assert_close(blurpool(x, 4, 4), ref)
    torch.testing.assert_close(BlurPool(4)(x), ref)


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
