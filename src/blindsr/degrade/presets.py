"""Named, deterministic HR -> LR degradations used for evaluation.

Every preset crops the HR image to a multiple of ``scale`` (top-left, as the benchmark scripts'
``modcrop``), works on float tensors and rounds to 8-bit levels (with clamping to [0, 1]) after
each step, as the MATLAB/uint8 pipelines of the papers do.

- ``bicubic``: MATLAB bicubic ``imresize`` by 1/scale (antialiased).
- ``BD``: 7x7 Gaussian, sigma 1.6, replicate padding, then keep every scale-th pixel starting at
  offset ``(scale - 1) // 2``. This is RDN's ``imresize_BD`` (Zhang et al. 2018): at x3 it calls
  MATLAB ``imresize(.., 1/3, 'nearest')``, which samples the centre pixel of each 3x3 cell
  (0-based offset 1), and for even scales it takes ``scale/2 : scale : end`` (1-based), i.e.
  offset ``scale/2 - 1``; ``(scale - 1) // 2`` is both. (RDN uses a 12x12 kernel at even scales;
  this preset keeps 7x7 at every scale.)
- ``DN``: bicubic, then colour Gaussian noise of sigma 30 (0..255 scale), seeded.
- ``nearest``: decimation without blur, same sampling phase as ``BD``.
- EATS test set ``clean``, ``blur``, ``noise``, ``jpeg``, ``b+n``, ``b+j``, ``n+j``, ``b+n+j``:
  blur = 21x21 Gaussian, sigma 2, reflect padding, on the HR image; then bicubic downsampling;
  noise = colour Gaussian sigma 20; JPEG quality 50; always in that order.
- ``iso<sigma>`` (e.g. ``iso1.3``): 21x21 isotropic Gaussian of that sigma (reflect padding), then
  bicubic downsampling.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import Tensor

from blindsr.checks import check_unit_range
from blindsr.errors import BlindSRError
from blindsr.ops.jpeg import jpeg as _jpeg
from blindsr.ops.kernels import filter2d, gaussian_kernel
from blindsr.ops.noise import as_generator, gaussian_noise
from blindsr.ops.resize import imresize

_EATS = {
    "clean": "",
    "blur": "b",
    "noise": "n",
    "jpeg": "j",
    "b+n": "bn",
    "b+j": "bj",
    "n+j": "nj",
    "b+n+j": "bnj",
}
PRESETS: tuple[str, ...] = ("bicubic", "BD", "DN", "nearest", *_EATS)
_ISO_HELP = "iso<sigma> (e.g. iso1.3)"
_ISO = re.compile(r"iso(\d+(?:\.\d*)?|\.\d+)")

EATS_BLUR_SIGMA = 2.0
EATS_NOISE_SIGMA = 20.0
EATS_JPEG_QUALITY = 50
BLUR_SIZE = 21


def preset_names() -> list[str]:
    """Every preset name, for help text (``iso<sigma>`` stands for the parametric family)."""
    return [*PRESETS, _ISO_HELP]


def _q(x: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to 8-bit levels."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def _bicubic(x: Tensor, scale: int) -> Tensor:
    h, w = x.shape[-2:]
    return _q(imresize(x, size=(h // scale, w // scale)))


def _decimate(x: Tensor, scale: int) -> Tensor:
    off = (scale - 1) // 2
    return x[..., off::scale, off::scale]


def _blur(x: Tensor, size: int, sigma: float, padding: str = "reflect") -> Tensor:
    return _q(filter2d(x, gaussian_kernel(size, sigma), padding=padding))


def _eats(steps: str) -> Callable[[Tensor, int, torch.Generator], Tensor]:
    def run(x: Tensor, scale: int, g: torch.Generator) -> Tensor:
        if "b" in steps:
            x = _blur(x, BLUR_SIZE, EATS_BLUR_SIGMA)
        x = _bicubic(x, scale)
        if "n" in steps:
            x = _q(gaussian_noise(x, EATS_NOISE_SIGMA, generator=g))
        if "j" in steps:
            x = _q(_jpeg(x, EATS_JPEG_QUALITY))
        return x

    return run


_FIXED: dict[str, Callable[[Tensor, int, torch.Generator], Tensor]] = {
    "bicubic": lambda x, s, g: _bicubic(x, s),
    "BD": lambda x, s, g: _q(_decimate(_blur(x, 7, 1.6, padding="replicate"), s)),
    "DN": lambda x, s, g: _q(gaussian_noise(_bicubic(x, s), 30.0, generator=g)),
    "nearest": lambda x, s, g: _q(_decimate(x, s)),
    **{name: _eats(steps) for name, steps in _EATS.items()},
}
_BY_LOWER = {name.lower(): name for name in _FIXED}


def _unknown(preset: object) -> BlindSRError:
    return BlindSRError(
        f"unknown degradation preset {preset!r}; known presets: {', '.join(preset_names())}"
    )


def parse_iso(preset: str) -> float:
    """The sigma of an ``iso<sigma>`` preset name, with a clear error when it is malformed."""
    m = _ISO.fullmatch(preset.strip().lower())
    if m is None:
        raise BlindSRError(
            f"bad isotropic-blur preset {preset!r}: write iso<sigma> with a positive number, "
            "e.g. iso1.3"
        )
    sigma = float(m.group(1))
    if sigma <= 0:
        raise BlindSRError(f"isotropic-blur preset {preset!r}: sigma must be > 0")
    return sigma


def resolve(preset: str) -> Callable[[Tensor, int, torch.Generator], Tensor]:
    """The function ``(hr, scale, generator) -> lr`` behind a preset name (case-insensitive)."""
    if not isinstance(preset, str):
        raise _unknown(preset)
    key = preset.strip().lower()
    if key in _BY_LOWER:
        return _FIXED[_BY_LOWER[key]]
    if key.startswith("iso"):
        sigma = parse_iso(preset)
        return lambda x, s, g: _bicubic(_blur(x, BLUR_SIZE, sigma), s)
    raise _unknown(preset)


def canonical(preset: str) -> str:
    """The one spelling of a preset name: the registered one (``bd`` -> ``BD``), or
    ``iso<sigma>`` without trailing zeros (``iso2.0`` -> ``iso2``, ``iso1.30`` -> ``iso1.3``;
    the width itself never changes); checked."""
    resolve(preset)
    key = preset.strip().lower()
    if key in _BY_LOWER:
        return _BY_LOWER[key]
    sigma = parse_iso(preset)
    text = repr(sigma).removesuffix(".0")  # the shortest text of exactly this float
    short = "iso" + (text if "e" not in text else key[3:])
    return short if parse_iso(short) == sigma else key


def check_hr(img: Tensor, scale: int, who: str = "degrade") -> None:
    """One-line errors for anything but a float (N, 1|3, H, W) image at least ``scale`` wide."""
    if not isinstance(img, Tensor) or img.ndim != 4 or not img.is_floating_point():
        got = (f"{img.dtype} of shape {tuple(img.shape)}" if isinstance(img, Tensor)
               else type(img).__name__)
        raise BlindSRError(f"{who} expects a float N,C,H,W image tensor, got {got}")
    if img.shape[1] not in (1, 3):
        raise BlindSRError(f"{who} expects 1 or 3 channels, got {img.shape[1]}")
    check_unit_range(img, who)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise BlindSRError(f"scale must be a positive integer, got {scale!r}")
    if min(img.shape[-2:]) < scale:
        raise BlindSRError(
            f"image of {img.shape[-2]}x{img.shape[-1]} is smaller than the scale {scale}"
        )


def apply(img: Tensor, preset: str, scale: int, seed: int | torch.Generator = 0) -> Tensor:
    """Degrade HR ``img`` (N, C, H, W in [0, 1]) with a named preset into LR on the 8-bit grid.

    The HR is cropped to a multiple of ``scale``; the LR is ``H // scale x W // scale``.
    ``seed`` (an integer or a CPU ``torch.Generator``) fixes the noise of the noisy presets (the
    others ignore it).
    """
    fn = resolve(preset)
    check_hr(img, scale)
    generator = as_generator(seed)
    if generator is None:
        raise BlindSRError("seed must be an integer or a torch.Generator, got None")
    h, w = img.shape[-2:]
    hr = img[..., : h - h % scale, : w - w % scale]
    return fn(hr, scale, generator)
