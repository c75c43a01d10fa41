"""PSNR and SSIM as the super-resolution literature reports them (MATLAB / BasicSR conventions).

Images are first brought to 8-bit levels (float inputs: ``round(clamp(x, 0, 1) * 255)``); with
``y_channel`` the MATLAB BT.601 luma is computed from those levels and kept as float on the 0..255
scale; ``crop_border`` pixels are removed on every side; everything is computed in float64.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from blindsr.checks import check_crop_border, check_unit_range
from blindsr.errors import BlindSRError

_Y_WEIGHTS = (65.481, 128.553, 24.966)  # MATLAB rgb2ycbcr, for RGB in [0, 1]
_SSIM_SIZE, _SSIM_SIGMA = 11, 1.5
_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

ImageLike = np.ndarray | Tensor


def _levels(img: ImageLike, name: str) -> Tensor:
    """8-bit levels as a float64 ``N x C x H x W`` tensor (values 0..255)."""
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8 or img.ndim not in (2, 3):
            raise BlindSRError(
                f"{name}: numpy images must be uint8 HxW or HxWxC, got {img.dtype} {img.shape}"
            )
        t = torch.from_numpy(img.astype(np.float64))
        return t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    if isinstance(img, Tensor):
        t = img[None] if img.ndim == 3 else img
        if t.ndim != 4:
            raise BlindSRError(f"{name}: tensors must be NCHW (or CHW), got {tuple(img.shape)}")
        if t.dtype == torch.uint8:
            return t.to(torch.float64)
        if not t.is_floating_point():
            raise BlindSRError(f"{name}: tensors must be float in [0, 1] or uint8, got {t.dtype}")
        check_unit_range(t, name)
        return (t.detach().to(torch.float64).clamp(0, 1) * 255).round()
    raise BlindSRError(f"{name}: expected a numpy array or torch tensor, got {type(img).__name__}")


def _prepare(x: ImageLike, y: ImageLike, crop_border: int, y_channel: bool, name: str):
    """Both images as comparable float64 NCHW tensors on the 0..255 scale."""
    a, b = _levels(x, name), _levels(y, name)
    if a.shape != b.shape:
        raise BlindSRError(f"{name}: image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    b = b.to(a.device)
    if a.shape[1] not in (1, 3):
        raise BlindSRError(f"{name}: images must have 1 or 3 channels, got {a.shape[1]}")
    if y_channel and a.shape[1] == 3:
        w = torch.tensor(_Y_WEIGHTS, dtype=torch.float64, device=a.device).view(1, 3, 1, 1)
        a = (a * w).sum(1, keepdim=True) / 255.0 + 16.0
        b = (b * w).sum(1, keepdim=True) / 255.0 + 16.0
    crop_border = check_crop_border(crop_border, name)
    if crop_border:
        h, w_ = a.shape[-2:]
        if 2 * crop_border >= min(h, w_):
            raise BlindSRError(f"{name}: crop_border {crop_border} leaves nothing of {h}x{w_}")
        c = crop_border
        a, b = a[..., c:-c, c:-c], b[..., c:-c, c:-c]
    return a, b


def psnr(x: ImageLike, y: ImageLike, crop_border: int = 0, y_channel: bool = False) -> Tensor:
    """Peak signal-to-noise ratio in dB on the 0..255 scale, one value per image (float64).

    ``x``/``y``: uint8 HxW(xC) numpy arrays or float NCHW tensors in [0, 1]. Identical -> inf.
    """
    a, b = _prepare(x, y, crop_border, y_channel, "psnr")
    mse = (a - b).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0**2 / mse)


def _gaussian_taps(device: torch.device) -> Tensor:
    """The normalised 1-D Gaussian (11 taps, sigma 1.5) in float64; the 2-D window is its outer
    product, applied as two 1-D passes."""
    r = torch.arange(_SSIM_SIZE, dtype=torch.float64, device=device) - (_SSIM_SIZE - 1) / 2
    g = torch.exp(-(r**2) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()


def ssim(x: ImageLike, y: ImageLike, crop_border: int = 0, y_channel: bool = False) -> Tensor:
    """Structural similarity (Wang et al. 2004), one value per image (float64).

    Gaussian 11x11 window (sigma 1.5), 'valid' filtering, mean over pixels and channels.
    """
    a, b = _prepare(x, y, crop_border, y_channel, "ssim")
    n, c, h, w = a.shape
    if min(h, w) < _SSIM_SIZE:
        raise BlindSRError(f"ssim: images must be at least {_SSIM_SIZE}x{_SSIM_SIZE}, got {h}x{w}")
    taps = _gaussian_taps(a.device)
    # Filter every channel of all five statistics' inputs at once, rows then columns.
    stack = torch.cat([a, b, a * a, b * b, a * b], dim=1).reshape(n * 5 * c, 1, h, w)
    k = _SSIM_SIZE - 1
    stack = F.conv2d(stack, taps.reshape(1, 1, 1, -1))
    stats = F.conv2d(stack, taps.reshape(1, 1, -1, 1)).reshape(n, 5, c, h - k, w - k)
    mu_a, mu_b, e_aa, e_bb, e_ab = stats.unbind(1)
    var_a, var_b = e_aa - mu_a**2, e_bb - mu_b**2
    cov = e_ab - mu_a * mu_b
    num = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    den = (mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2)
    return (num / den).mean(dim=(1, 2, 3))


__all__ = ["psnr", "ssim"]
