"""Unsharp masking (USM) of ground-truth images, as Real-ESRGAN sharpens its training targets.

``usm_sharpen`` blurs with a Gaussian of odd size ``k`` (``radius`` rounded up to odd) and OpenCV's
default sigma for that size, takes the residual ``img - blur``, builds a mask where the residual
exceeds ``threshold`` gray levels (of 255), softens that mask with the same Gaussian and blends
``img + weight * residual`` (clamped to [0, 1]) into the image through the soft mask. The Gaussian
is separable, so it runs as two 1-D passes (``2k`` taps instead of ``k * k``); the result equals
:func:`blindsr.ops.kernels.filter2d` with the outer-product kernel and reflect padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from blindsr.errors import BlindSRError

# OpenCV's fixed kernels for odd sizes <= 7 when sigma <= 0 (getGaussianKernel's table).
_SMALL_GAUSSIANS: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}


def opencv_sigma(size: int) -> float:
    """OpenCV's sigma for a Gaussian of ``size`` taps when sigma <= 0 is asked for."""
    return 0.3 * ((size - 1) * 0.5 - 1) + 0.8


def opencv_gaussian_1d(
    size: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``cv2.getGaussianKernel(size, 0)`` as a 1-D tensor of ``size`` taps summing to 1."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise BlindSRError(f"Gaussian kernel size must be a positive odd integer, got {size!r}")
    if size in _SMALL_GAUSSIANS:
        k = torch.tensor(_SMALL_GAUSSIANS[size], dtype=torch.float64)
    else:
        sigma = opencv_sigma(size)
        x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(device=device, dtype=dtype)


def _separable_blur(x: Tensor, k1d: Tensor) -> Tensor:
    """Filter ``x`` (N, C, H, W) with ``outer(k1d, k1d)``; padding as filter2d's 'reflect'."""
    n, c, h, w = x.shape
    k = k1d.numel()
    half = k // 2
    mode = "reflect" if half < min(h, w) else "replicate"  # filter2d's fallback for tiny images
    flat = x.reshape(n * c, 1, h, w)
    flat = F.conv2d(F.pad(flat, (0, 0, half, half), mode=mode), k1d.reshape(1, 1, k, 1))
    flat = F.conv2d(F.pad(flat, (half, half, 0, 0), mode=mode), k1d.reshape(1, 1, 1, k))
    return flat.reshape(n, c, h, w)


def usm_sharpen(img: Tensor, weight: float = 0.5, radius: int = 50, threshold: int = 10) -> Tensor:
    """Sharpen a batch ``img`` (N, C, H, W) in [0, 1] by Real-ESRGAN's unsharp masking.

    ``radius`` is the Gaussian's size in pixels (made odd; sigma from OpenCV's rule, 8.0 for the
    default 51 taps), ``weight`` the amount of residual added and ``threshold`` the residual (in
    gray levels of 255) below which a pixel is left alone. Flat regions are unchanged.
    """
    if not isinstance(img, Tensor) or img.ndim != 4 or not img.is_floating_point():
        shape = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
        raise BlindSRError(f"usm_sharpen expects a float N,C,H,W tensor, got {shape}")
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
        raise BlindSRError(f"usm_sharpen radius must be a positive integer, got {radius!r}")
    size = radius + 1 if radius % 2 == 0 else radius
    kernel = opencv_gaussian_1d(size, device=img.device, dtype=img.dtype)
    residual = img - _separable_blur(img, kernel)
    mask = (residual.abs() * 255 > threshold).to(img.dtype)
    soft = _separable_blur(mask, kernel)
    sharp = (img + weight * residual).clamp(0, 1)
    return soft * sharp + (1 - soft) * img
