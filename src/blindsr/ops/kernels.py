"""Batched blur kernels and a per-sample 2-D filter.

Every generator returns an ``(N, k, k)`` tensor normalised to sum 1, built from per-sample parameter
tensors of shape ``(N,)`` (Python numbers broadcast to N = 1) without a loop over samples.
Coordinates are pixel offsets from the kernel centre, ``x`` along the width (columns) and ``y``
along the height (rows), so ``sigma_x`` blurs horizontally. ``theta`` rotates the kernel
counter-clockwise in the (x, y) plane, as Real-ESRGAN's ``sigma_matrix2`` does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from blindsr.errors import BlindSRError

Param = float | Tensor

_PADDING_MODES = ("reflect", "replicate", "circular", "zeros")


def _params(*values: Param | None) -> list[Tensor | None]:
    """Turn numbers / tensors into 1-D float tensors broadcast to a common length N."""
    tensors = [v for v in values if isinstance(v, Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = torch.float32
    for t in tensors:
        if t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    out = [
        None if v is None else torch.as_tensor(v, dtype=dtype, device=device).reshape(-1)
        for v in values
    ]
    present = [t for t in out if t is not None]
    n = max(t.numel() for t in present)
    for t in present:
        if t.numel() not in (1, n):
            raise BlindSRError(
                f"kernel parameters must have one value or N = {n} values, got {t.numel()}"
            )
    return [None if t is None else t.expand(n) for t in out]


def _grid(size: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Centred coordinate grids ``(x, y)``, each ``(1, k, k)``: x varies along columns."""
    if not isinstance(size, int) or size < 1:
        raise BlindSRError(f"kernel size must be a positive integer, got {size!r}")
    ax = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    return x[None], y[None]


def _normalise(k: Tensor) -> Tensor:
    return k / k.sum(dim=(-2, -1), keepdim=True)


def _quadratic_form(
    size: int, sigma_x: Param, sigma_y: Param | None, theta: Param | None
) -> Tensor:
    """``[x y] S^-1 [x y]^T`` on the grid, ``S = R diag(sx^2, sy^2) R^T``; shape ``(N, k, k)``."""
    sx, sy, th = _params(sigma_x, sigma_y, theta)
    sy = sx if sy is None else sy
    th = torch.zeros_like(sx) if th is None else th
    if bool((sx <= 0).any()) or bool((sy <= 0).any()):
        raise BlindSRError("Gaussian kernel sigmas must be > 0")
    x, y = _grid(size, sx)
    c, s = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
    ix, iy = (1 / sx**2)[:, None, None], (1 / sy**2)[:, None, None]
    # Coordinates in the kernel's own (rotated) frame: u along sigma_x, v along sigma_y.
    u = c * x + s * y
    v = -s * x + c * y
    return u * u * ix + v * v * iy


def gaussian_kernel(
    size: int, sigma_x: Param, sigma_y: Param | None = None, theta: Param | None = None
) -> Tensor:
    """(An)isotropic Gaussian ``exp(-Q/2)``; ``sigma_y=None`` means ``sigma_y = sigma_x``."""
    return _normalise(torch.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta)))


def generalized_gaussian_kernel(
    size: int,
    sigma_x: Param,
    sigma_y: Param | None = None,
    theta: Param | None = None,
    beta: Param = 1.0,
) -> Tensor:
    """Generalized Gaussian ``exp(-Q^beta / 2)`` (beta = 1 is the Gaussian)."""
    q = _quadratic_form(size, sigma_x, sigma_y, theta)
    (b,) = _params(beta)
    return _normalise(torch.exp(-0.5 * q.pow(b.to(q)[:, None, None])))


def plateau_kernel(
    size: int,
    sigma_x: Param,
    sigma_y: Param | None = None,
    theta: Param | None = None,
    beta: Param = 1.0,
) -> Tensor:
    """Plateau-shaped kernel ``1 / (1 + Q^beta)``."""
    q = _quadratic_form(size, sigma_x, sigma_y, theta)
    (b,) = _params(beta)
    return _normalise(1.0 / (q.pow(b.to(q)[:, None, None]) + 1.0))


def sinc_kernel(size: int, cutoff: Param) -> Tensor:
    """Circular low-pass ('jinc') kernel ``wc J1(wc r) / (2 pi r)``, cut-off ``wc`` in rad/pixel."""
    (wc,) = _params(cutoff)
    if bool((wc <= 0).any()):
        raise BlindSRError("sinc kernel cut-off must be > 0")
    x, y = _grid(size, wc)
    r = torch.sqrt(x * x + y * y)
    w = wc[:, None, None]
    safe_r = torch.where(r == 0, torch.ones_like(r), r)
    k = w * torch.special.bessel_j1(w * safe_r) / (2 * math.pi * safe_r)
    k = torch.where(r == 0, w * w / (4 * math.pi), k)  # limit r -> 0
    return _normalise(k)


def pulse_kernel(size: int, n: int = 1, device: torch.device | str | None = None) -> Tensor:
    """Identity kernels ``(n, k, k)`` (a single 1 at the centre; ``size`` must be odd)."""
    if not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise BlindSRError(f"a pulse kernel needs an odd size, got {size!r}")
    k = torch.zeros(n, size, size, device=device)
    k[:, size // 2, size // 2] = 1.0
    return k


def restrict_support(kernel: Tensor, sizes: Tensor) -> Tensor:
    """Zero each kernel outside its central ``sizes[i] x sizes[i]`` window and renormalise.

    A kernel built on a large odd grid and restricted to an odd size k equals the k x k kernel
    zero-padded to the large grid, which lets a batch carry kernels of different sizes.
    """
    size = kernel.shape[-1]
    half = (torch.as_tensor(sizes, device=kernel.device).reshape(-1, 1, 1) - 1) / 2
    ax = (torch.arange(size, device=kernel.device) - (size - 1) / 2).abs()
    inside = (ax[None, :, None] <= half) & (ax[None, None, :] <= half)
    return _normalise(kernel * inside)


def _pad(x: Tensor, k: int, mode: str) -> Tensor:
    """Pad so that a k x k 'valid' correlation keeps the size (extra pixel at the end if k even)."""
    lo, hi = (k - 1) // 2, k // 2
    if mode == "zeros":
        return F.pad(x, (lo, hi, lo, hi))
    if mode == "reflect" and max(lo, hi) >= min(x.shape[-2:]):
        mode = "replicate"  # reflection needs pad < size; tiny images fall back to replication
    return F.pad(x, (lo, hi, lo, hi), mode=mode)


def filter2d(x: Tensor, kernel: Tensor, padding: str = "reflect") -> Tensor:
    """Filter ``x`` (N, C, H, W) with one kernel ``(k, k)`` or per-sample kernels ``(N, k, k)``.

    The output has the input's size. This is a correlation, as ``conv2d`` computes; it equals a
    convolution for the point-symmetric kernels made here. ``padding`` is 'reflect' (falls back
    to 'replicate' when the image is not larger than the kernel radius), 'replicate', 'circular'
    or 'zeros'.
    """
    if x.ndim != 4:
        raise BlindSRError(f"filter2d expects an N,C,H,W tensor, got shape {tuple(x.shape)}")
    if padding not in _PADDING_MODES:
        raise BlindSRError(f"unknown padding {padding!r}; use one of {', '.join(_PADDING_MODES)}")
    n, c, h, w = x.shape
    if kernel.ndim == 2:
        kernel = kernel[None]
    if kernel.ndim != 3 or kernel.shape[-1] != kernel.shape[-2] or kernel.shape[0] not in (1, n):
        raise BlindSRError(
            f"filter2d kernel must be (k, k) or (N={n}, k, k), got {tuple(kernel.shape)}"
        )
    k = kernel.shape[-1]
    kernel = kernel.to(device=x.device, dtype=x.dtype)
    xp = _pad(x, k, padding)
    if kernel.shape[0] == 1:
        weight = kernel.expand(c, k, k).reshape(c, 1, k, k)
        return F.conv2d(xp, weight, groups=c)
    weight = kernel.repeat_interleave(c, dim=0).reshape(n * c, 1, k, k)
    out = F.conv2d(xp.reshape(1, n * c, *xp.shape[-2:]), weight, groups=n * c)
    return out.reshape(n, c, h, w)
