"""Unsharp masking of ground truth (Real-ESRGAN's USM)."""

import pytest
import torch

from blindsr.errors import BlindSRError
from blindsr.ops.kernels import filter2d
from blindsr.ops.sharpen import opencv_gaussian_1d, opencv_sigma, usm_sharpen


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> bool:
    return a.shape == b.shape and float((a.double() - b.double()).abs().max()) <= atol


def _edge(low: float = 0.2, high: float = 0.8, width: int = 160) -> torch.Tensor:
    img = torch.full((1, 3, 24, width), low)
    img[..., width // 2 :] = high
    return img


def test_opencv_kernel_rule():
    assert opencv_sigma(51) == pytest.approx(8.0)
    k = opencv_gaussian_1d(51, dtype=torch.float64)
    x = torch.arange(51, dtype=torch.float64) - 25
    ref = torch.exp(-(x**2) / (2 * 8.0**2))
    assert _close(k, ref / ref.sum(), 1e-12)
    # OpenCV's fixed table for small sizes, not the formula
    assert torch.equal(opencv_gaussian_1d(3), torch.tensor([0.25, 0.5, 0.25]))
    with pytest.raises(BlindSRError):
        opencv_gaussian_1d(4)


def test_sharpen_boosts_edge_and_keeps_flat_regions():
    img = _edge()
    out = usm_sharpen(img)
    mid = img.shape[-1] // 2
    # overshoot on both sides of the edge: local contrast goes up
    assert out[..., mid - 1].max() < 0.2 - 0.02
    assert out[..., mid].min() > 0.8 + 0.02
    # far from the edge (more than the 51-tap kernel reach twice) nothing changes
    assert _close(out[..., :20], img[..., :20])
    assert _close(out[..., -20:], img[..., -20:])
    flat = torch.full((2, 3, 40, 40), 0.37)
    assert _close(usm_sharpen(flat), flat)
    assert out.min() >= 0 and out.max() <= 1


def test_threshold_leaves_faint_edges_alone():
    faint = _edge(0.50, 0.51)  # a 2.5-level step: residual stays under 10/255
    assert _close(usm_sharpen(faint), faint)
    assert not torch.equal(usm_sharpen(faint, threshold=0), faint)


def test_matches_reference_with_filter2d_and_is_batched(rand_image):
    img = rand_image(3, 3, 40, 36, seed=1)
    weight, radius, threshold = 0.7, 10, 5
    k1 = opencv_gaussian_1d(11)
    kernel = torch.outer(k1, k1)
    blur = filter2d(img, kernel)
    residual = img - blur
    soft = filter2d((residual.abs() * 255 > threshold).float(), kernel)
    sharp = (img + weight * residual).clamp(0, 1)
    ref = soft * sharp + (1 - soft) * img
    out = usm_sharpen(img, weight, radius, threshold)
    assert _close(out, ref, 1e-5)
    # each sample sharpened on its own
    assert _close(out[1:2], usm_sharpen(img[1:2], weight, radius, threshold))


def test_tiny_images_and_bad_input():
    small = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert usm_sharpen(small).shape == small.shape  # kernel larger than the image
    with pytest.raises(BlindSRError):
        usm_sharpen(torch.rand(3, 8, 8))
    with pytest.raises(BlindSRError):
        usm_sharpen(small, radius=0)
