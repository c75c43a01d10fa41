"""Anti-aliased downsampling (BlurPool, Zhang 2019): binomial blur, then keep every stride-th pixel.

The blur is the outer product of binomial taps (3: [1,2,1], 4: [1,3,3,1], 5: [1,4,6,4,1], ...),
normalised to sum 1, applied depthwise with reflect padding of ``(taps-1)//2`` before and
``taps//2`` after (so taps=4 pads (1, 2), as the original BlurPool). The output is
``ceil(H / stride) x ceil(W / stride)``: exactly ``H / stride`` when ``stride`` divides ``H``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blindsr.errors import BlindSRError

MAX_TAPS = 7


def binomial_kernel(taps: int) -> Tensor:
    """The normalised 2-D binomial kernel ``(taps, taps)`` (float32, CPU)."""
    if not isinstance(taps, int) or not 1 <= taps <= MAX_TAPS:
        raise BlindSRError(f"blurpool taps must be an integer in 1..{MAX_TAPS}, got {taps!r}")
    row = torch.tensor([math.comb(taps - 1, i) for i in range(taps)], dtype=torch.float32)
    k = row[:, None] * row[None, :]
    return k / k.sum()


def _check_stride(stride: int) -> None:
    if not isinstance(stride, int) or stride < 1:
        raise BlindSRError(f"blurpool stride must be a positive integer, got {stride!r}")


def _blurpool(x: Tensor, kernel: Tensor, stride: int) -> Tensor:
    if x.ndim != 4:
        raise BlindSRError(f"blurpool expects an N,C,H,W tensor, got shape {tuple(x.shape)}")
    taps = kernel.shape[-1]
    c = x.shape[1]
    if taps == 1:
        return x[..., ::stride, ::stride]
    lo, hi = (taps - 1) // 2, taps // 2
    if hi >= min(x.shape[-2:]):
        raise BlindSRError(
            f"blurpool with {taps} taps needs images larger than {hi} pixels, got "
            f"{x.shape[-2]}x{x.shape[-1]}"
        )
    xp = F.pad(x, (lo, hi, lo, hi), mode="reflect")
    weight = kernel.to(device=x.device, dtype=x.dtype).expand(c, 1, taps, taps)
    return F.conv2d(xp, weight, stride=stride, groups=c)


def blurpool(x: Tensor, stride: int, taps: int = 4) -> Tensor:
    """Blur ``x`` (N, C, H, W) with binomial taps and subsample by ``stride`` (1 = blur only)."""
    _check_stride(stride)
    return _blurpool(x, binomial_kernel(taps), stride)


class BlurPool(nn.Module):
    """Depthwise binomial blur + subsampling; the kernel is a (non-persistent) buffer."""

    def __init__(self, stride: int, taps: int = 4) -> None:
        super().__init__()
        _check_stride(stride)
        self.stride = stride
        self.taps = taps
        self.register_buffer("kernel", binomial_kernel(taps), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return _blurpool(x, self.kernel, self.stride)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, taps={self.taps}"
