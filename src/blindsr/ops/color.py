"""RGB <-> YCbCr in MATLAB's ``rgb2ycbcr`` convention (ITU-R BT.601, studio range).

All tensors are NCHW (or any ``(..., 3, H, W)``) floats in [0, 1]: for RGB in [0, 1],
Y lies in [16/255, 235/255] and Cb, Cr in [16/255, 240/255].
"""

from __future__ import annotations

import torch
from torch import Tensor

from blindsr.errors import BlindSRError

# MATLAB rgb2ycbcr for inputs in [0, 1], outputs on the 0..255 scale.
_MATRIX = (
    (65.481, 128.553, 24.966),
    (-37.797, -74.203, 112.0),
    (112.0, -93.786, -18.214),
)
_OFFSET = (16.0, 128.0, 128.0)


def _check(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise BlindSRError(f"{name} expects a floating-point tensor")
    if x.ndim < 3 or x.shape[-3] != 3:
        raise BlindSRError(f"{name} expects a (..., 3, H, W) tensor, got shape {tuple(x.shape)}")


def _apply(x: Tensor, matrix: Tensor, offset: Tensor) -> Tensor:
    """``matrix @ pixel + offset`` over the channel dimension (-3)."""
    compute = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    m = matrix.to(device=x.device, dtype=compute)
    b = offset.to(device=x.device, dtype=compute)
    out = torch.einsum("ij,...jhw->...ihw", m, x.to(compute)) + b[:, None, None]
    return out.to(x.dtype)


def _forward() -> tuple[Tensor, Tensor]:
    m = torch.tensor(_MATRIX, dtype=torch.float64) / 255.0
    b = torch.tensor(_OFFSET, dtype=torch.float64) / 255.0
    return m, b


def rgb_to_ycbcr(x: Tensor) -> Tensor:
    """RGB in [0, 1] -> YCbCr in [0, 1] (MATLAB ``rgb2ycbcr``; channels Y, Cb, Cr)."""
    _check(x, "rgb_to_ycbcr")
    return _apply(x, *_forward())


def ycbcr_to_rgb(x: Tensor) -> Tensor:
    """YCbCr in [0, 1] -> RGB (inverse of :func:`rgb_to_ycbcr`; not clamped)."""
    _check(x, "ycbcr_to_rgb")
    m, b = _forward()
    inv = torch.linalg.inv(m)
    return _apply(x, inv, -(inv @ b))


def rgb_to_y(x: Tensor) -> Tensor:
    """Luma only: RGB ``(..., 3, H, W)`` in [0, 1] -> Y ``(..., 1, H, W)`` in [16/255, 235/255]."""
    _check(x, "rgb_to_y")
    m, b = _forward()
    return _apply(x, m[:1], b[:1])
