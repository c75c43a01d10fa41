"""A pure-torch JPEG round trip (encode + decode) that runs batched, on any device.

Baseline JPEG as libjpeg does it with default settings: full-range YCbCr (JFIF), 4:2:0 chroma
subsampling (2x2 averages), 8x8 orthonormal block DCT, quantisation with the IJG tables scaled by
quality (IJG formula, baseline-clamped to 1..255), rounding, dequantisation, inverse DCT, samples
rounded and clamped to 0..255, chroma upsampled with libjpeg's 'fancy' (triangle = bilinear)
filter, then back to RGB. Entropy coding is lossless and skipped. Rounding uses a straight-through
estimator, so gradients pass (as identity) through the quantisers.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from blindsr.errors import BlindSRError

# ITU-T T.81 Annex K tables (the IJG defaults), row-major.
_LUMA_TABLE = [
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
]  # fmt: skip
_CHROMA_TABLE = [
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
]  # fmt: skip

# JFIF full-range RGB <-> YCbCr on the 0..255 scale (chroma offset 128).
_RGB_TO_YCC = [
    [0.299, 0.587, 0.114],
    [-0.168735892, -0.331264108, 0.5],
    [0.5, -0.418687589, -0.081312411],
]
_YCC_TO_RGB = [
    [1.0, 0.0, 1.402],
    [1.0, -0.344136286, -0.714136286],
    [1.0, 1.772, 0.0],
]


@lru_cache(maxsize=1)
def _dct_matrix() -> Tensor:
    """Orthonormal 8-point DCT-II matrix ``C`` (block DCT is ``C B C^T``), float64 CPU."""
    u = torch.arange(8, dtype=torch.float64)[:, None]
    x = torch.arange(8, dtype=torch.float64)[None, :]
    c = torch.cos((2 * x + 1) * u * math.pi / 16) * math.sqrt(2 / 8)
    c[0] = math.sqrt(1 / 8)
    return c


def _round(x: Tensor) -> Tensor:
    """Round to integers with a straight-through (identity) gradient."""
    return x + (torch.round(x) - x).detach()


def quant_tables(quality: Tensor) -> tuple[Tensor, Tensor]:
    """IJG-scaled luma and chroma tables ``(N, 8, 8)`` for qualities ``(N,)`` in [1, 100].

    ``scale = 5000 / q`` below 50, else ``200 - 2 q`` (in percent); entries
    ``floor((base * scale + 50) / 100)`` clamped to 1..255. Non-integer qualities are used as is.
    """
    q = quality.to(torch.float64).clamp(1, 100)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)[:, None, None]
    tables = []
    for base in (_LUMA_TABLE, _CHROMA_TABLE):
        b = torch.tensor(base, dtype=torch.float64, device=q.device).view(1, 8, 8)
        tables.append(torch.floor((b * scale + 50) / 100).clamp(1, 255))
    return tables[0], tables[1]


def _block_codec(plane: Tensor, table: Tensor) -> Tensor:
    """Encode + decode one plane (N, H, W) on 0..255 with per-sample tables (N, 8, 8)."""
    n, h, w = plane.shape
    c = _dct_matrix().to(device=plane.device, dtype=plane.dtype)
    blocks = (plane - 128).reshape(n, h // 8, 8, w // 8, 8).transpose(2, 3)  # N, bh, bw, 8, 8
    coef = c @ blocks @ c.T
    t = table.to(plane)[:, None, None]
    coef = _round(coef / t) * t
    blocks = c.T @ coef @ c + 128
    out = blocks.transpose(2, 3).reshape(n, h, w)
    return _round(out).clamp(0, 255)


def _qualities(quality: float | Tensor, n: int, device: torch.device) -> Tensor:
    q = torch.as_tensor(quality, dtype=torch.float64).reshape(-1)
    if q.numel() not in (1, n):
        raise BlindSRError(f"jpeg quality must be a number or one value per image (N={n})")
    if not bool(torch.isfinite(q).all()) or bool(((q < 1) | (q > 100)).any()):
        raise BlindSRError(f"jpeg quality must be in [1, 100], got {q.tolist()}")
    return q.expand(n).to(device)


def _pad_to(x: Tensor, multiple: int) -> Tensor:
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x


def jpeg(x: Tensor, quality: float | Tensor) -> Tensor:
    """JPEG-compress and decode ``x`` (N, 3 or 1, H, W) RGB/gray in [0, 1] at ``quality`` (1..100).

    ``quality`` is a number or a per-sample tensor ``(N,)``. Returns the decoded image in [0, 1]
    on the 8-bit grid, as a JPEG decoder would.
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3) or not x.is_floating_point():
        raise BlindSRError(
            f"jpeg expects a float N,C,H,W tensor with 1 or 3 channels, got "
            f"{x.dtype} {tuple(x.shape)}"
        )
    n, ch, h, w = x.shape
    luma_t, chroma_t = quant_tables(_qualities(quality, n, x.device))
    work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    work = work.clamp(0, 1) * 255
    if ch == 1:
        y = _block_codec(_pad_to(work, 8)[:, 0], luma_t)
        return (y[:, None, :h, :w] / 255).to(x.dtype)
    work = _pad_to(work, 16)
    m = torch.tensor(_RGB_TO_YCC, dtype=work.dtype, device=work.device)
    ycc = torch.einsum("ij,njhw->nihw", m, work)
    ycc[:, 1:] += 128
    ycc = _round(ycc)  # libjpeg converts to integer YCbCr samples
    y = _block_codec(ycc[:, 0], luma_t)
    chroma = F.avg_pool2d(ycc[:, 1:], 2)
    hc, wc = chroma.shape[-2:]
    chroma = _block_codec(chroma.reshape(2 * n, hc, wc), chroma_t.repeat_interleave(2, dim=0))
    chroma = chroma.reshape(n, 2, hc, wc)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    ycc = torch.cat([y[:, None], chroma - 128], dim=1)
    mi = torch.tensor(_YCC_TO_RGB, dtype=work.dtype, device=work.device)
    rgb = torch.einsum("ij,njhw->nihw", mi, ycc)
    return (_round(rgb[..., :h, :w]).clamp(0, 255) / 255).to(x.dtype)
