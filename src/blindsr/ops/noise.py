"""Additive Gaussian and Poisson (shot) noise with per-sample parameters.

All random numbers are drawn on the CPU from the given ``torch.Generator`` (a CPU generator; None
uses torch's global one) and then moved to the image's device, so one seed gives the same noise on
CPU and GPU. "Gray" noise is a single noise map shared by all channels.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from blindsr.errors import BlindSRError

# ITU-R BT.601 luma, as torchvision's rgb_to_grayscale (which Real-ESRGAN uses).
_LUMA = (0.299, 0.587, 0.114)


def check_generator(generator: torch.Generator | None) -> None:
    """Reject non-CPU generators: every draw is made on the CPU (see module docstring)."""
    if generator is not None and generator.device.type != "cpu":
        raise BlindSRError(
            f"pass a CPU torch.Generator (got one on {generator.device}); draws are made on the "
            "CPU and moved to the image's device so results match across devices"
        )


def as_generator(seed: int | torch.Generator | None) -> torch.Generator | None:
    """A CPU generator from a seed (any integer type in [0, 2**64)) or a generator itself
    (checked to be on the CPU); None stays None (the global random state)."""
    if seed is None or isinstance(seed, torch.Generator):
        check_generator(seed)
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise BlindSRError(f"seed must be an integer or a torch.Generator, got {seed!r}")
    if not 0 <= int(seed) < 1 << 64:
        raise BlindSRError(f"seed must be in [0, 2**64), got {seed}")
    return torch.Generator().manual_seed(int(seed))


def _check_image(x: Tensor, name: str) -> None:
    if x.ndim != 4 or not x.is_floating_point():
        raise BlindSRError(f"{name} expects a float N,C,H,W tensor, got {x.dtype} {tuple(x.shape)}")


def _per_sample(v: float | Tensor, n: int, name: str, x: Tensor) -> Tensor:
    """A parameter as an (N, 1, 1, 1) tensor on x's device."""
    t = torch.as_tensor(v).reshape(-1)
    if t.numel() not in (1, n):
        raise BlindSRError(
            f"{name} must be a number or one value per image (N={n}), got {t.numel()}"
        )
    return t.to(device=x.device, dtype=x.dtype).expand(n).reshape(n, 1, 1, 1)


def _gray_mask(gray: bool | Tensor, n: int) -> Tensor:
    """Per-sample gray flags as a CPU bool tensor (N,)."""
    g = torch.as_tensor(gray).reshape(-1).to("cpu").bool()
    if g.numel() not in (1, n):
        raise BlindSRError(f"gray must be a bool or one flag per image (N={n}), got {g.numel()}")
    return g.expand(n)


def _luma(x: Tensor) -> Tensor:
    """(N, 1, H, W) gray version of x: BT.601 luma for RGB, the mean otherwise."""
    if x.shape[1] == 3:
        w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    return x.mean(dim=1, keepdim=True)


def _mix(color: Tensor | None, gray: Tensor | None, mask: Tensor) -> Tensor:
    """Per sample, the gray map (broadcast over channels) where mask, else the colour one."""
    if color is None:
        return gray
    if gray is None:
        return color
    m = mask.to(color.device).view(-1, 1, 1, 1)
    return torch.where(m, gray, color)


def _finish(x: Tensor, noise: Tensor, clip: bool) -> Tensor:
    out = x + noise.expand_as(x)
    return out.clamp(0, 1) if clip else out


def gaussian_noise(
    x: Tensor,
    sigma: float | Tensor,
    gray: bool | Tensor = False,
    generator: torch.Generator | None = None,
    clip: bool = True,
) -> Tensor:
    """Add zero-mean Gaussian noise of std ``sigma / 255`` (``sigma`` on the 0..255 scale).

    ``sigma`` and ``gray`` are scalars or per-sample tensors ``(N,)``.
    """
    _check_image(x, "gaussian_noise")
    check_generator(generator)
    n, c, h, w = x.shape
    s = _per_sample(sigma, n, "sigma", x)
    mask = _gray_mask(gray, n)
    color = gmap = None
    if not bool(mask.all()):
        color = torch.randn(n, c, h, w, generator=generator).to(device=x.device, dtype=x.dtype)
    if bool(mask.any()):
        gmap = torch.randn(n, 1, h, w, generator=generator).to(device=x.device, dtype=x.dtype)
    return _finish(x, _mix(color, gmap, mask) * (s / 255), clip)


def _levels(q: Tensor) -> Tensor:
    """Real-ESRGAN's ``vals`` per sample: 2 ** ceil(log2(#distinct 8-bit levels)), shape (N,1,1,1).

    ``q`` holds 8-bit-rounded values in [0, 1]; distinct levels are counted with a histogram, so
    this is vectorised and exact.
    """
    n = q.shape[0]
    idx = (q * 255).round().long().reshape(n, -1)
    hist = torch.zeros(n, 256, device=q.device).scatter_(1, idx, 1.0)
    count = (hist > 0).sum(dim=1).clamp(min=1).to(q.dtype)
    return torch.exp2(torch.ceil(torch.log2(count))).view(n, 1, 1, 1)


def _shot(q: Tensor, generator: torch.Generator | None) -> Tensor:
    """Poisson noise ``Poisson(q * vals) / vals - q`` for 8-bit-rounded q (drawn on the CPU)."""
    vals = _levels(q)
    rate = (q * vals).detach().to("cpu", torch.float32)
    counts = torch.poisson(rate, generator=generator).to(device=q.device, dtype=q.dtype)
    return counts / vals - q


def poisson_noise(
    x: Tensor,
    scale: float | Tensor,
    gray: bool | Tensor = False,
    generator: torch.Generator | None = None,
    clip: bool = True,
) -> Tensor:
    """Add Poisson (shot) noise as Real-ESRGAN does, multiplied by ``scale``.

    The image is rounded to 8-bit levels ``q``; the noise is ``Poisson(q * vals) / vals - q`` with
    ``vals = 2 ** ceil(log2(#distinct levels in the sample))`` counted per sample. Gray noise is
    computed on the (8-bit-rounded) luma and shared by all channels. ``scale`` and ``gray`` are
    scalars or per-sample tensors ``(N,)``.
    """
    _check_image(x, "poisson_noise")
    check_generator(generator)
    n = x.shape[0]
    s = _per_sample(scale, n, "scale", x)
    mask = _gray_mask(gray, n)
    color = gmap = None
    if not bool(mask.all()):
        color = _shot(torch.round(x.clamp(0, 1) * 255) / 255, generator)
    if bool(mask.any()):
        gmap = _shot(torch.round(_luma(x).clamp(0, 1) * 255) / 255, generator)
    return _finish(x, _mix(color, gmap, mask) * s, clip)
