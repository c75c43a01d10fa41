"""NIQE (Mittal et al. 2013), the "completely blind" evaluator, as the MATLAB release computes it.

The image is reduced to gray (MATLAB ``rgb2gray``) or Y (MATLAB ``rgb2ycbcr``) 8-bit levels and
cropped to whole 96x96 blocks. At two scales (the second made by MATLAB bicubic ``imresize`` by
0.5, blocks 48x48) the MSCN coefficients ``(I - mu) / (sigma + 1)`` are computed with a 7x7
Gaussian window (sigma 7/6, replicate borders); each block gives 18 features: an AGGD fit of the
coefficients (shape, mean scale) and AGGD fits (shape, mean, left and right scale) of the products
of neighbouring coefficients in four directions. A Gaussian fitted to the 36-dimensional block
features (NaN-aware, as ``nanmean``/``nancov``) is compared with the pristine model:
``sqrt(d' pinv((C_pristine + C_image) / 2) d)``. Lower is better. Everything runs in float64.

One deliberate difference: ``I - mu`` below 1e-10 is taken as exactly zero (see :func:`mscn`).
Its sign is floating-point noise in flat areas, which depends on how the filter sums; MATLAB's
own arithmetic cannot be reproduced bit for bit, and exact zeros come closest to it. On the five
TID2013 calibration images the result is within 0.031 of the MATLAB release (without the rule,
0.49 off on I19). A completely flat image has no finite features and scores NaN, as in MATLAB.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from blindsr.assets import load_asset
from blindsr.checks import check_crop_border
from blindsr.errors import BlindSRError
from blindsr.metrics.psnr_ssim import ImageLike, _levels
from blindsr.ops.resize import imresize

BLOCK = 96
_WINDOW, _SIGMA = 7, 7 / 6
_RESIDUE = 1e-10  # |I - mu| below this is rounding residue (noise is ~1e-13, signal >= ~1e-8)
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # MATLAB circshift offsets (rows, columns)
# MATLAB rgb2gray: first row of inv([1 .956 .621; 1 -.272 -.647; 1 -1.106 1.703]).
_NTSC = ((1.0, 0.956, 0.621), (1.0, -0.272, -0.647), (1.0, -1.106, 1.703))
_Y_WEIGHTS = (65.481, 128.553, 24.966)  # MATLAB rgb2ycbcr luma, for RGB in [0, 1]


@lru_cache(maxsize=1)
def _gamma_tables() -> tuple[Tensor, ...]:
    """The AGGD shape grid 0.2:0.001:10 and, per shape, r(a), G(2/a)/G(1/a), sqrt(G(1/a)/G(3/a))."""
    shapes = [0.2 + 0.001 * k for k in range(9801)]
    rows = []
    for a in shapes:
        g1, g2, g3 = math.gamma(1 / a), math.gamma(2 / a), math.gamma(3 / a)
        rows.append((a, g2 * g2 / (g1 * g3), g2 / g1, math.sqrt(g1 / g3)))
    return tuple(torch.tensor(col, dtype=torch.float64) for col in zip(*rows, strict=True))


def gaussian_window(device: torch.device | str = "cpu") -> Tensor:
    """MATLAB ``fspecial('gaussian', 7, 7/6)`` as a 7x7 float64 tensor (sums to one)."""
    r = torch.arange(_WINDOW, dtype=torch.float64, device=device) - (_WINDOW - 1) / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * _SIGMA**2))
    return g / g.sum()


def _gaussian_filter(x: Tensor) -> Tensor:
    """``imfilter(x, fspecial('gaussian', 7, 7/6), 'replicate')``, as two 7-tap passes."""
    r = torch.arange(_WINDOW, dtype=x.dtype, device=x.device) - (_WINDOW - 1) / 2
    g = torch.exp(-(r**2) / (2 * _SIGMA**2))
    g = g / g.sum()
    h, w = x.shape[-2:]
    p = F.pad(x, (3, 3, 3, 3), mode="replicate")
    cols = sum(g[k] * p[..., k : k + h, :] for k in range(_WINDOW))
    return sum(g[k] * cols[..., k : k + w] for k in range(_WINDOW))


def _matlab_round(x: Tensor) -> Tensor:
    """Round half away from zero, as MATLAB does when it casts to uint8."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def to_gray_levels(levels: Tensor, convert_to: str) -> Tensor:
    """``N x C x H x W`` 8-bit levels -> ``N x 1 x H x W`` float64 gray or Y levels (integers)."""
    levels = levels.to(torch.float64)
    if levels.shape[1] == 1:
        return levels
    if convert_to == "gray":
        w = torch.linalg.inv(torch.tensor(_NTSC, dtype=torch.float64))[0]
        return _matlab_round(torch.einsum("c,nchw->nhw", w.to(levels.device), levels)[:, None])
    w = torch.tensor(_Y_WEIGHTS, dtype=torch.float64, device=levels.device) / 255
    return _matlab_round(torch.einsum("c,nchw->nhw", w, levels)[:, None] + 16)


def mscn(img: Tensor) -> Tensor:
    """Mean-subtracted contrast-normalised coefficients of ``N x 1 x H x W`` float64 levels.

    ``I - mu`` below ``_RESIDUE`` (levels 0..255) is set to zero: it is floating-point residue
    where exact arithmetic gives zero (flat areas, linear ramps). Its random signs would otherwise
    tilt the AGGD fits of images with large flat areas (TID2013 I19: +0.49 against MATLAB).
    """
    mu = _gaussian_filter(img)
    sigma = (_gaussian_filter(img * img) - mu * mu).abs().sqrt()
    centred = img - mu
    centred = torch.where(centred.abs() < _RESIDUE, torch.zeros_like(centred), centred)
    return centred / (sigma + 1)


def _nearest_shape(rhat_norm: Tensor) -> Tensor:
    """Index of the grid shape whose r(a) is nearest to each value (first on ties; NaN -> 0).

    r(a) increases strictly along the grid, so the nearest is one of two neighbours; this equals
    MATLAB's ``min((r_gam - rhatnorm).^2)`` without the (values x 9801) matrix.
    """
    r = _gamma_tables()[1].to(rhat_norm.device)
    hi = torch.searchsorted(r, rhat_norm.contiguous()).clamp(1, r.numel() - 1)
    lo = hi - 1
    take_lo = (r[lo] - rhat_norm) ** 2 <= (r[hi] - rhat_norm) ** 2
    idx = torch.where(take_lo, lo, hi)
    idx = torch.where(rhat_norm <= r[0], torch.zeros_like(idx), idx)
    return torch.where(torch.isnan(rhat_norm), torch.zeros_like(idx), idx)


def aggd_fit(v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """AGGD fit of each row of ``v`` (M x L): shape, left scale, right scale and mean factor.

    As the MATLAB ``estimateaggdparam``: moment matching on the shape grid 0.2:0.001:10. Rows
    with no negative (or no positive) values give NaN scales, as MATLAB's empty means do.
    """
    neg, pos = (v < 0).to(v.dtype), (v > 0).to(v.dtype)
    sq = v * v
    left = ((sq * neg).sum(1) / neg.sum(1)).sqrt()
    right = ((sq * pos).sum(1) / pos.sum(1)).sqrt()
    g = left / right
    rhat = v.abs().mean(1) ** 2 / sq.mean(1)
    rhat_norm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    idx = _nearest_shape(rhat_norm)
    shapes, _, mean_factor, scale = (t.to(v.device) for t in _gamma_tables())
    return shapes[idx], left * scale[idx], right * scale[idx], mean_factor[idx]


def block_features(coeffs: Tensor, block: int) -> Tensor:
    """The 18 NIQE features of every ``block x block`` block: ``N x B x 18``."""
    n, _, h, w = coeffs.shape
    bh, bw = h // block, w // block
    blocks = coeffs[:, 0, : bh * block, : bw * block].reshape(n, bh, block, bw, block)
    blocks = blocks.permute(0, 1, 3, 2, 4).reshape(n * bh * bw, block, block)
    pairs = [blocks] + [blocks * torch.roll(blocks, s, dims=(1, 2)) for s in _SHIFTS]
    shape, left, right, mean_factor = aggd_fit(torch.stack(pairs).flatten(2).flatten(0, 1))
    m = blocks.shape[0]
    shape, left, right, mean_factor = (t.view(5, m) for t in (shape, left, right, mean_factor))
    feats = [shape[0], (left[0] + right[0]) / 2]
    for k in range(1, 5):
        feats += [shape[k], (right[k] - left[k]) * mean_factor[k], left[k], right[k]]
    return torch.stack(feats, 1).view(n, bh * bw, 18)


def _nan_gaussian(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: MATLAB ``nanmean`` (per column) and ``nancov`` (complete rows) of N x B x D."""
    finite = ~torch.isnan(feats)
    mean = torch.where(finite, feats, 0).sum(1) / finite.sum(1)
    rows = finite.all(2, keepdim=True).to(feats.dtype)  # N x B x 1
    count = rows.sum(1, keepdim=True)
    clean = torch.where(rows.bool(), feats, 0)
    centred = (clean - clean.sum(1, keepdim=True) / count) * rows
    cov = centred.transpose(1, 2) @ centred / (count - 1).clamp(min=1)
    return mean, cov


def niqe_from_gray(img: Tensor, mu: Tensor, cov: Tensor) -> Tensor:
    """NIQE of ``N x 1 x H x W`` float64 gray levels (already cropped to whole blocks)."""
    feats = [block_features(mscn(img), BLOCK)]
    half = imresize(img, scale=0.5)
    feats.append(block_features(mscn(half), BLOCK // 2))
    mean, cov_img = _nan_gaussian(torch.cat(feats, 2))
    d = (mu - mean)[:, None, :]  # N x 1 x 36
    pooled = (cov + cov_img) / 2
    finite = torch.isfinite(pooled).all(2).all(1) & torch.isfinite(d).all(2).all(1)
    eye = torch.eye(pooled.shape[-1], dtype=pooled.dtype, device=pooled.device)
    inv = torch.linalg.pinv(torch.where(finite[:, None, None], pooled, eye))
    quality = (d @ inv @ d.transpose(1, 2)).flatten().sqrt()
    return torch.where(finite, quality, torch.full_like(quality, math.nan))


@lru_cache(maxsize=8)
def _pristine(device: torch.device) -> tuple[Tensor, Tensor]:
    params = load_asset("niqe")
    return params["mu"].to(device), params["cov"].to(device)


def niqe(img: ImageLike, crop_border: int = 0, convert_to: str = "gray") -> Tensor:
    """NIQE of each image: float64 values, one per image (lower is better).

    ``img``: uint8 HxW(xC) numpy array or NCHW/CHW tensor (float in [0, 1] or uint8); float
    inputs are taken at 8-bit levels. ``convert_to``: "gray" (MATLAB ``rgb2gray``, as the MATLAB
    release) or "y" (MATLAB YCbCr luma, BasicSR's default); either is rounded to integer levels.
    After ``crop_border``, at least 96x96 pixels are needed (only whole 96-pixel blocks are used).
    """
    if convert_to not in ("gray", "y"):
        raise BlindSRError(f"niqe: convert_to must be 'gray' or 'y', got {convert_to!r}")
    crop_border = check_crop_border(crop_border, "niqe")
    levels = _levels(img, "niqe")
    if levels.shape[1] not in (1, 3):
        raise BlindSRError(f"niqe: images must have 1 or 3 channels, got {levels.shape[1]}")
    gray = to_gray_levels(levels, convert_to)
    c = crop_border
    if c:
        gray = gray[..., c:-c, c:-c]
    h, w = gray.shape[-2:]
    if h < BLOCK or w < BLOCK:
        raise BlindSRError(
            f"niqe: needs at least {BLOCK}x{BLOCK} pixels after crop_border, got {max(h, 0)}x"
            f"{max(w, 0)}"
        )
    gray = gray[..., : h // BLOCK * BLOCK, : w // BLOCK * BLOCK]
    mu, cov = _pristine(gray.device)
    return niqe_from_gray(gray, mu, cov)


__all__ = ["aggd_fit", "block_features", "gaussian_window", "mscn", "niqe", "to_gray_levels"]
