"""Anti-aliased downsampling (BlurPool, Zhang 2019): binomial blur, then keep every stride-th pixel.

The blur is the outer product of binomial taps (3: [1,2,1], 4: [1,3,3,1], 5: [1,4,6,4,1], ...),
normalised to sum 1, applied depthwise. Output pixel ``i`` is centred on input coordinate
``stride * i + (stride - 1) / 2``: the convention of MATLAB's ``imresize`` and of every SR
dataset's LR/HR pairs, so a network trained on BlurPool LR is registered with bicubic LR. That
needs ``taps - stride`` even (x4: 2, 4 or 6 taps; x3: 1, 3, 5 or 7; x2: 2, 4 or 6); otherwise
the centre is half an input pixel later (:func:`centred_taps` says). The window starts
``(taps - stride) // 2`` pixels before each stride block, with reflect padding at the borders
(or cropping, when the taps are fewer than the stride). The output is
``ceil(H / stride) x ceil(W / stride)``.

Zhang's BlurPool pads ``((taps-1)//2, taps//2)``, centring output ``i`` on ``stride * i + 0.5``
for 4 taps: right for stride 2, one input pixel early at stride 4, which would train an SR
network on LR shifted against every test set (the first AND runs did).
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


def centred_taps(taps: int, stride: int) -> bool:
    """Whether ``taps`` centre every output pixel exactly on its stride block's centre."""
    return (taps - stride) % 2 == 0


def _window(size: int, taps: int, stride: int) -> tuple[int, int]:
    """(before, after): input pixels to add (> 0, reflected) or drop (< 0) along one axis so
    that ``ceil(size / stride)`` windows of ``taps`` at ``stride`` start ``(taps - stride) // 2``
    pixels before each block."""
    out = -(-size // stride)
    before = (taps - stride) // 2
    return before, (out - 1) * stride + taps - size - before


def _blurpool(x: Tensor, kernel: Tensor, stride: int) -> Tensor:
    if x.ndim != 4:
        raise BlindSRError(f"blurpool expects an N,C,H,W tensor, got shape {tuple(x.shape)}")
    taps = kernel.shape[-1]
    (top, bottom), (left, right) = (_window(n, taps, stride) for n in x.shape[-2:])
    x = x[..., max(-top, 0): x.shape[-2] - max(-bottom, 0),
          max(-left, 0): x.shape[-1] - max(-right, 0)]
    pad = (max(left, 0), max(right, 0), max(top, 0), max(bottom, 0))
    if max(pad[2:]) >= x.shape[-2] or max(pad[:2]) >= x.shape[-1]:  # reflect needs pad < size
        raise BlindSRError(
            f"blurpool with {taps} taps at stride {stride}: a {x.shape[-2]}x{x.shape[-1]} image "
            "is too small"
        )
    if any(pad):
        x = F.pad(x, pad, mode="reflect")
    weight = kernel.to(device=x.device, dtype=x.dtype).expand(x.shape[1], 1, taps, taps)
    return F.conv2d(x, weight, stride=stride, groups=x.shape[1])


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
