"""MATLAB-compatible bicubic ``imresize`` on batched float tensors.

Follows MATLAB's ``imresize(..., 'bicubic')``: the cubic convolution kernel with a = -0.5, a
kernel widened by ``1/scale`` when shrinking (antialiasing), MATLAB's centre/index computation and
symmetric (mirror) boundary handling. Each dimension is resized in turn, in MATLAB's order (the
dimension with the smaller scale first).

Being matrix products, float32 results on CUDA carry TF32 rounding (about 1e-3) if the caller has
enabled TF32 matmuls; use float64 input (or leave TF32 off) where exact MATLAB parity matters.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from blindsr.errors import BlindSRError

_KERNEL_WIDTH = 4.0  # support of the cubic kernel: [-2, 2]


def _cubic(x: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = x.abs()
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=64)
def _contributions(
    in_len: int, out_len: int, scale: float, antialias: bool
) -> tuple[Tensor, Tensor]:
    """Weights and 0-based source indices, each ``(out_len, taps)``, as MATLAB's ``contributions``.

    Computed in float64 on the CPU; callers move/cast copies, never modify these.
    """
    widen = antialias and scale < 1
    width = _KERNEL_WIDTH / scale if widen else _KERNEL_WIDTH
    out_pos = torch.arange(1, out_len + 1, dtype=torch.float64)
    # Position in input space (1-based) of each output pixel centre.
    u = out_pos / scale + 0.5 * (1.0 - 1.0 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    weights = scale * _cubic(scale * dist) if widen else _cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # Symmetric padding: mirror 1-based indices into [1, in_len], then make them 0-based.
    period = 2 * in_len
    idx = torch.remainder(idx.long() - 1, period)
    idx = torch.where(idx < in_len, idx, period - 1 - idx)
    # Drop tap columns whose weights are zero for every output pixel (as MATLAB does).
    keep = (weights != 0).any(dim=0)
    return weights[:, keep].contiguous(), idx[:, keep].contiguous()


_BLOCK = 256  # output samples per dense block


def _resize_dim(x: Tensor, dim: int, out_len: int, scale: float, antialias: bool) -> Tensor:
    """Resize ``x`` along ``dim`` (-1 or -2) to ``out_len`` samples.

    The weights form a banded matrix; each block of ``_BLOCK`` output samples is one small dense
    product with the narrow input range it reads (built on the CPU in float64; mirrored taps that
    hit the same pixel add up). Cost and memory grow with the image, not with its square.
    """
    in_len = x.shape[dim]
    if out_len == in_len and scale == 1.0:
        return x
    weights, idx = _contributions(in_len, out_len, scale, antialias)
    blocks = []
    for start in range(0, out_len, _BLOCK):
        rows = slice(start, min(start + _BLOCK, out_len))
        lo, hi = int(idx[rows].min()), int(idx[rows].max()) + 1
        mat = torch.zeros(rows.stop - start, hi - lo, dtype=torch.float64)
        mat = mat.scatter_add_(1, idx[rows] - lo, weights[rows]).to(x.device, x.dtype)
        part = x.narrow(dim, lo, hi - lo)
        blocks.append(mat @ part if dim == -2 else part @ mat.T)
    return torch.cat(blocks, dim)


def _output_size(
    h: int, w: int, scale: float | None, size: tuple[int, int] | None
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Output size and per-dimension scale, as MATLAB derives them."""
    if (scale is None) == (size is None):
        raise BlindSRError("imresize needs exactly one of `scale` or `size`")
    if scale is not None:
        try:
            s = float(scale)
        except (TypeError, ValueError):
            s = math.nan
        if not (math.isfinite(s) and s > 0):
            raise BlindSRError(f"imresize scale must be a positive number, got {scale!r}")
        return (math.ceil(h * s), math.ceil(w * s)), (s, s)
    try:
        oh, ow = (int(v) for v in size)
        valid = (oh, ow) == tuple(size) and oh >= 1 and ow >= 1
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise BlindSRError(f"imresize size must be two positive integers (H, W), got {size!r}")
    return (oh, ow), (oh / h, ow / w)


def imresize(
    x: Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> Tensor:
    """Resize ``x`` (NCHW, or any ``(..., H, W)``) with MATLAB's bicubic ``imresize``.

    Give either ``scale`` (output is ``ceil(H * scale) x ceil(W * scale)``) or ``size = (H, W)``.
    ``antialias`` widens the kernel when shrinking, as MATLAB does by default. The result is not
    clamped. Half-precision inputs are computed in float32 and cast back.
    """
    if not isinstance(x, Tensor):
        raise BlindSRError(f"imresize expects a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2 or not x.is_floating_point():
        raise BlindSRError(
            f"imresize expects a floating-point (..., H, W) tensor, got {x.dtype} {tuple(x.shape)}"
        )
    h, w = x.shape[-2:]
    if h == 0 or w == 0:
        raise BlindSRError(f"imresize got an empty image of size {h}x{w}")
    (oh, ow), (sh, sw) = _output_size(h, w, scale, size)
    if oh < 1 or ow < 1:
        raise BlindSRError(f"imresize output would be empty ({oh}x{ow}) for input {h}x{w}")
    src, orig_dtype = x, x.dtype
    if orig_dtype not in (torch.float32, torch.float64):
        x = x.float()
    passes = [(-2, oh, sh), (-1, ow, sw)]
    if sw < sh:  # MATLAB resizes the dimension with the smaller scale first
        passes.reverse()
    for dim, out_len, s in passes:
        x = _resize_dim(x, dim, out_len, s, antialias)
    if x is src:  # identity resize: still hand back a new tensor
        return x.clone()
    return x.to(orig_dtype) if x.dtype != orig_dtype else x
