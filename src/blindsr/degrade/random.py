"""Real-ESRGAN's random second-order degradation, batched and seedable (optionally mixed with the
classical first-order model: ``first_order_prob``).

Two rounds of blur -> random resize -> noise -> JPEG, then a final step that resizes to the target
size and applies a sinc filter, before or after the second JPEG (Wang et al. 2021, Real-ESRGAN).
Defaults are the published ones. Whole batches are processed at once:

- blur kernels, noise kind/strength, gray-noise flags, JPEG qualities and the final-step order
  are drawn per sample (kernels of different sizes are zero-padded to the largest size, which is
  exact); Real-ESRGAN draws the second-blur decision, the noise kind and the final order once per
  batch, which gives fewer distinct combinations per batch but the same marginal distribution;
- each resize (stage 1, stage 2, final) uses one factor and one mode for the whole batch, as
  Real-ESRGAN does, so a batch stays one tensor. Stage 2 resizes relative to the target size
  ``H / scale``, again as Real-ESRGAN does;
- beta of the generalized / plateau kernels is drawn half below and half above 1 when its range
  straddles 1 (Real-ESRGAN's rule), otherwise uniformly; for the default plateau range [1, 2] this
  is uniform, whereas Real-ESRGAN's sampler returns exactly 1 for half of its draws.

All random numbers come from one CPU ``torch.Generator`` (None: torch's global one) and are moved
to the image's device, so the same seed gives the same LR on CPU and GPU (up to float rounding
differences of the convolutions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from blindsr.degrade.presets import check_hr
from blindsr.errors import BlindSRError
from blindsr.ops.jpeg import jpeg
from blindsr.ops.kernels import (
    filter2d,
    generalized_gaussian_kernel,
    plateau_kernel,
    pulse_kernel,
    restrict_support,
    sinc_kernel,
)
from blindsr.ops.noise import as_generator, gaussian_noise, poisson_noise

KERNEL_TYPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
RESIZE_MODES = ("area", "bilinear", "bicubic")
PI = math.pi

# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass
class BlurConfig:
    """Random blur kernels of one stage."""

    prob: float = 1.0  # chance a sample is blurred at all (identity kernel otherwise)
    kernel_sizes: tuple[int, int] = (7, 21)  # odd sizes drawn uniformly from this range
    sinc_prob: float = 0.1  # chance of a sinc kernel instead of the Gaussian family
    sinc_cutoff_small: tuple[float, float] = (PI / 3, PI)  # cut-off for sizes < sinc_small_below
    sinc_cutoff_large: tuple[float, float] = (PI / 5, PI)
    sinc_small_below: int = 13
    kernel_types: tuple[str, ...] = KERNEL_TYPES
    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sigma: tuple[float, float] = (0.2, 3.0)
    rotation: tuple[float, float] = (-PI, PI)
    beta_generalized: tuple[float, float] = (0.5, 4.0)
    beta_plateau: tuple[float, float] = (1.0, 2.0)


@dataclass
class ResizeConfig:
    """Random resize of one stage: one factor and mode per batch."""

    probs: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    up: tuple[float, float] = (1.0, 1.5)
    down: tuple[float, float] = (0.15, 1.0)
    modes: tuple[str, ...] = RESIZE_MODES  # drawn with equal chance


@dataclass
class NoiseConfig:
    """Random noise of one stage: Gaussian or Poisson per sample, colour or gray."""

    gaussian_prob: float = 0.5  # otherwise Poisson
    gaussian_sigma: tuple[float, float] = (1.0, 30.0)  # 0..255 scale
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    gray_prob: float = 0.4


@dataclass
class StageConfig:
    """One degradation round. Stage 2's JPEG is the one applied in the final step."""

    blur: BlurConfig = field(default_factory=BlurConfig)
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    jpeg_quality: tuple[float, float] = (30.0, 95.0)


@dataclass
class FinalConfig:
    """Resize to the target size + sinc filter, before (resize_first) or after the last JPEG."""

    resize_first_prob: float = 0.5
    modes: tuple[str, ...] = RESIZE_MODES
    sinc_prob: float = 0.8  # identity kernel otherwise
    sinc_cutoff: tuple[float, float] = (PI / 3, PI)
    kernel_sizes: tuple[int, int] = (7, 21)


def _stage2() -> StageConfig:
    return StageConfig(
        blur=BlurConfig(prob=0.8, sigma=(0.2, 1.5)),
        resize=ResizeConfig(probs=(0.3, 0.4, 0.3), up=(1.0, 1.2), down=(0.3, 1.0)),
        noise=NoiseConfig(gaussian_sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5)),
    )


def _fail(path: str, msg: str) -> BlindSRError:
    return BlindSRError(f"second-order config {path}: {msg}")


def _check_prob(p: float, path: str) -> None:
    if not 0 <= p <= 1:
        raise _fail(path, f"must be a probability in [0, 1], got {p}")


def _check_range(r: tuple, path: str, lo: float = -math.inf, hi: float = math.inf) -> None:
    if len(r) != 2 or not all(math.isfinite(v) for v in r) or r[0] > r[1]:
        raise _fail(path, f"must be a [low, high] pair with low <= high, got {list(r)}")
    if r[0] < lo or r[1] > hi:
        raise _fail(path, f"must lie within [{lo}, {hi}], got {list(r)}")


MAX_KERNEL_SIZE = 101  # Real-ESRGAN uses up to 21; larger only exhausts memory


def _check_weights(w: tuple, n: int, path: str) -> None:
    if len(w) != n or not all(math.isfinite(v) and v >= 0 for v in w) or sum(w) <= 0:
        raise _fail(path, f"needs {n} finite non-negative weights with a positive sum, "
                          f"got {list(w)}")


def _check_choices(values: tuple, allowed: tuple, path: str) -> None:
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise _fail(path, f"must be a non-empty list from {list(allowed)}, got {list(values)}")


def _check_sizes(r: tuple, path: str) -> None:
    if len(r) != 2 or r[0] > r[1] or r[0] < 1 or r[0] % 2 == 0 or r[1] % 2 == 0 \
            or r[1] > MAX_KERNEL_SIZE:
        raise _fail(path, f"must be [min, max] odd kernel sizes with min <= max <= "
                          f"{MAX_KERNEL_SIZE}, got {list(r)}")


def _validate_blur(b: BlurConfig, path: str) -> None:
    _check_prob(b.prob, f"{path}.prob")
    _check_prob(b.sinc_prob, f"{path}.sinc_prob")
    _check_sizes(b.kernel_sizes, f"{path}.kernel_sizes")
    _check_range(b.sinc_cutoff_small, f"{path}.sinc_cutoff_small", lo=1e-3)
    _check_range(b.sinc_cutoff_large, f"{path}.sinc_cutoff_large", lo=1e-3)
    _check_choices(b.kernel_types, KERNEL_TYPES, f"{path}.kernel_types")
    _check_weights(b.kernel_probs, len(b.kernel_types), f"{path}.kernel_probs")
    _check_range(b.sigma, f"{path}.sigma", lo=1e-3)
    _check_range(b.rotation, f"{path}.rotation")
    _check_range(b.beta_generalized, f"{path}.beta_generalized", lo=1e-2)
    _check_range(b.beta_plateau, f"{path}.beta_plateau", lo=1e-2)


def _validate_stage(s: StageConfig, path: str) -> None:
    _validate_blur(s.blur, f"{path}.blur")
    r = s.resize
    _check_weights(r.probs, 3, f"{path}.resize.probs")
    _check_range(r.up, f"{path}.resize.up", lo=1.0, hi=16.0)
    _check_range(r.down, f"{path}.resize.down", lo=1e-2, hi=1.0)
    _check_choices(r.modes, RESIZE_MODES, f"{path}.resize.modes")
    n = s.noise
    _check_prob(n.gaussian_prob, f"{path}.noise.gaussian_prob")
    _check_prob(n.gray_prob, f"{path}.noise.gray_prob")
    _check_range(n.gaussian_sigma, f"{path}.noise.gaussian_sigma", lo=0.0)
    _check_range(n.poisson_scale, f"{path}.noise.poisson_scale", lo=0.0)
    _check_range(s.jpeg_quality, f"{path}.jpeg_quality", lo=1.0, hi=100.0)


def _coerce(default: Any, value: Any, path: str) -> Any:
    """Convert a plain (YAML/JSON) value to the type of the field's default, or fail clearly."""
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise _fail(path, f"must be a list, got {value!r}")
        kind = type(default[0]) if default else float
        return tuple(_coerce(kind(), v, f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(default, str):
        if not isinstance(value, str):
            raise _fail(path, f"must be a string, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, f"must be a number, got {value!r}")
    if isinstance(default, int):
        if int(value) != value:
            raise _fail(path, f"must be an integer, got {value!r}")
        return int(value)
    return float(value)


def _merge(obj: Any, overrides: Any, path: str) -> Any:
    if not isinstance(overrides, Mapping):
        raise _fail(path, f"must be a mapping, got {overrides!r}")
    names = [f.name for f in fields(obj)]
    changes = {}
    for key, value in overrides.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in names:
            where = f"in {path} " if path else ""
            raise BlindSRError(
                f"unknown second-order config key {sub!r}; "
                f"known keys {where}are: {', '.join(names)}"
            )
        current = getattr(obj, key)
        if is_dataclass(current):
            changes[key] = _merge(current, value, sub)
        else:
            changes[key] = _coerce(current, value, sub)
    return replace(obj, **changes)


def _lists(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _lists(v) for k, v in d.items()}
    if isinstance(d, tuple):
        return [_lists(v) for v in d]
    return d


@dataclass
class SecondOrderConfig:
    """Every parameter of the second-order pipeline, with Real-ESRGAN's published defaults."""

    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=_stage2)
    final: FinalConfig = field(default_factory=FinalConfig)
    # The share of samples made by the first-order (classical) model instead (:func:`first_order`):
    # white noise at LR scale, which the second order rarely leaves (its stage-2 noise is resized
    # and sinc-filtered on the way to the target size). 0: Real-ESRGAN's pipeline alone.
    first_order_prob: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise BlindSRError naming the first bad value."""
        _check_prob(self.first_order_prob, "first_order_prob")
        _validate_stage(self.stage1, "stage1")
        _validate_stage(self.stage2, "stage2")
        f = self.final
        _check_prob(f.resize_first_prob, "final.resize_first_prob")
        _check_choices(f.modes, RESIZE_MODES, "final.modes")
        _check_prob(f.sinc_prob, "final.sinc_prob")
        _check_range(f.sinc_cutoff, "final.sinc_cutoff", lo=1e-3)
        _check_sizes(f.kernel_sizes, "final.kernel_sizes")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> SecondOrderConfig:
        """Defaults overridden by a (possibly partial) nested dict; unknown keys are errors."""
        return _merge(cls(), d or {}, "")

    def to_dict(self) -> dict[str, Any]:
        """A nested plain dict (lists, numbers, strings) that ``from_dict`` reads back."""
        return _lists(asdict(self))


# ---------------------------------------------------------------------------------------------
# Random draws (all on the CPU, from the one generator)


def _uniform(r: tuple[float, float], n: int, g: torch.Generator | None) -> Tensor:
    return r[0] + (r[1] - r[0]) * torch.rand(n, generator=g)


def _chance(p: float, n: int, g: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=g) < p


def _pick(weights: tuple[float, ...], n: int, g: torch.Generator | None) -> Tensor:
    w = torch.tensor(weights, dtype=torch.float64)
    return torch.multinomial(w / w.sum(), n, replacement=True, generator=g)


def _odd_sizes(r: tuple[int, int], n: int, g: torch.Generator | None) -> Tensor:
    return torch.randint((r[1] - r[0]) // 2 + 1, (n,), generator=g) * 2 + r[0]


def _beta(r: tuple[float, float], n: int, g: torch.Generator | None) -> Tensor:
    """Uniform in the range, or half below / half above 1 when the range straddles 1."""
    if r[0] < 1 < r[1]:
        low = _chance(0.5, n, g)
        return torch.where(low, _uniform((r[0], 1.0), n, g), _uniform((1.0, r[1]), n, g))
    return _uniform(r, n, g)


def random_kernels(cfg: BlurConfig, n: int, g: torch.Generator | None = None) -> Tensor:
    """``n`` random blur kernels ``(n, K, K)`` (K = the largest size) on the CPU."""
    size = cfg.kernel_sizes[1]
    sizes = _odd_sizes(cfg.kernel_sizes, n, g)
    kind = _pick(cfg.kernel_probs, n, g)
    sigma_x, sigma_y = _uniform(cfg.sigma, n, g), _uniform(cfg.sigma, n, g)
    theta = _uniform(cfg.rotation, n, g)
    beta_g, beta_p = _beta(cfg.beta_generalized, n, g), _beta(cfg.beta_plateau, n, g)
    use_sinc = _chance(cfg.sinc_prob, n, g)
    cut_small = _uniform(cfg.sinc_cutoff_small, n, g)
    cut_large = _uniform(cfg.sinc_cutoff_large, n, g)
    blurred = _chance(cfg.prob, n, g)

    names = cfg.kernel_types
    iso = torch.tensor([not t.endswith("aniso") for t in names])[kind]
    family = torch.tensor([0 if "_" not in t else 1 if t.startswith("gen") else 2 for t in names])
    family = family[kind]
    sigma_y = torch.where(iso, sigma_x, sigma_y)
    theta = torch.where(iso, torch.zeros_like(theta), theta)
    beta = torch.where(family == 1, beta_g, torch.ones_like(beta_g))
    gauss = generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, beta)
    plateau = plateau_kernel(size, sigma_x, sigma_y, theta, beta_p)
    k = torch.where((family == 2)[:, None, None], plateau, gauss)
    cutoff = torch.where(sizes < cfg.sinc_small_below, cut_small, cut_large)
    k = torch.where(use_sinc[:, None, None], sinc_kernel(size, cutoff), k)
    k = restrict_support(k, sizes)
    return torch.where(blurred[:, None, None], k, pulse_kernel(size, n))


def final_sinc_kernels(cfg: FinalConfig, n: int, g: torch.Generator | None = None) -> Tensor:
    """The final-step sinc kernels (identity where no sinc is drawn), ``(n, K, K)`` on the CPU."""
    size = cfg.kernel_sizes[1]
    sizes = _odd_sizes(cfg.kernel_sizes, n, g)
    cutoff = _uniform(cfg.sinc_cutoff, n, g)
    use = _chance(cfg.sinc_prob, n, g)
    k = restrict_support(sinc_kernel(size, cutoff), sizes)
    return torch.where(use[:, None, None], k, pulse_kernel(size, n))


# ---------------------------------------------------------------------------------------------
# Pipeline steps


def _resize(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    align = False if mode in ("bilinear", "bicubic") else None
    return F.interpolate(x, size=size, mode=mode, align_corners=align)


def _random_resize(
    x: Tensor, cfg: ResizeConfig, base: tuple[float, float], g: torch.Generator | None
) -> Tensor:
    """Resize to ``base * factor`` with one random factor and mode for the whole batch."""
    kind = int(_pick(cfg.probs, 1, g))
    factor = [_uniform(cfg.up, 1, g), _uniform(cfg.down, 1, g), torch.ones(1)][kind].item()
    mode = cfg.modes[int(torch.randint(len(cfg.modes), (1,), generator=g))]
    size = (max(1, int(base[0] * factor)), max(1, int(base[1] * factor)))
    return _resize(x, size, mode)


def _split(x: Tensor, mask: Tensor, when_true, when_false) -> Tensor:
    """Apply ``when_true(x[i], idx)`` to samples where mask, ``when_false`` to the others."""
    idx_t, idx_f = mask.nonzero().flatten(), (~mask).nonzero().flatten()
    if idx_f.numel() == 0:
        return when_true(x, idx_t)
    if idx_t.numel() == 0:
        return when_false(x, idx_f)
    a = when_true(x[idx_t.to(x.device)], idx_t)
    b = when_false(x[idx_f.to(x.device)], idx_f)
    out = a.new_empty((x.shape[0], *a.shape[1:]))
    out[idx_t.to(x.device)] = a
    out[idx_f.to(x.device)] = b
    return out


def _random_noise(x: Tensor, cfg: NoiseConfig, g: torch.Generator | None) -> Tensor:
    n = x.shape[0]
    gaussian = _chance(cfg.gaussian_prob, n, g)
    sigma = _uniform(cfg.gaussian_sigma, n, g)
    scale = _uniform(cfg.poisson_scale, n, g)
    gray = _chance(cfg.gray_prob, n, g)
    return _split(
        x,
        gaussian,
        lambda t, i: gaussian_noise(t, sigma[i], gray=gray[i], generator=g),
        lambda t, i: poisson_noise(t, scale[i], gray=gray[i], generator=g),
    )


def _random_jpeg(x: Tensor, quality: tuple[float, float], g: torch.Generator | None) -> Tensor:
    q = _uniform(quality, x.shape[0], g)
    return jpeg(x.clamp(0, 1), q.to(x.device))


def _stage(x: Tensor, cfg: StageConfig, base: tuple[float, float], g) -> Tensor:
    x = filter2d(x, random_kernels(cfg.blur, x.shape[0], g))
    x = _random_resize(x, cfg.resize, base, g)
    return _random_noise(x, cfg.noise, g)


def _final(
    x: Tensor, cfg: SecondOrderConfig, target: tuple[int, int], g: torch.Generator | None
) -> Tensor:
    n = x.shape[0]
    resize_first = _chance(cfg.final.resize_first_prob, n, g)
    mode = cfg.final.modes[int(torch.randint(len(cfg.final.modes), (1,), generator=g))]
    kernels = final_sinc_kernels(cfg.final, n, g)
    quality = _uniform(cfg.stage2.jpeg_quality, n, g).to(x.device)

    def resize_sinc(t: Tensor, i: Tensor) -> Tensor:
        return filter2d(_resize(t, target, mode), kernels[i])

    def jpeg_last(t: Tensor, i: Tensor) -> Tensor:
        return jpeg(resize_sinc(t, i).clamp(0, 1), quality[i.to(x.device)])

    def jpeg_first(t: Tensor, i: Tensor) -> Tensor:
        return resize_sinc(jpeg(t.clamp(0, 1), quality[i.to(x.device)]), i)

    return _split(x, resize_first, jpeg_last, jpeg_first)


def _second(hr: Tensor, cfg: SecondOrderConfig, scale: int, g: torch.Generator | None) -> Tensor:
    h, w = hr.shape[-2:]
    x = _stage(hr, cfg.stage1, (float(h), float(w)), g)
    x = _random_jpeg(x, cfg.stage1.jpeg_quality, g)
    x = _stage(x, cfg.stage2, (h / scale, w / scale), g)
    return _final(x, cfg, (h // scale, w // scale), g)


def _first(hr: Tensor, cfg: SecondOrderConfig, scale: int, g: torch.Generator | None) -> Tensor:
    h, w = hr.shape[-2:]
    x = filter2d(hr, random_kernels(cfg.stage1.blur, hr.shape[0], g))
    mode = cfg.final.modes[int(torch.randint(len(cfg.final.modes), (1,), generator=g))]
    x = _random_noise(_resize(x, (h // scale, w // scale), mode), cfg.stage1.noise, g)
    return _random_jpeg(x, cfg.stage1.jpeg_quality, g)


def _checked(hr: Tensor, scale: int, config: SecondOrderConfig | Mapping[str, Any] | None,
             generator: torch.Generator | int | None, who: str,
             ) -> tuple[SecondOrderConfig, torch.Generator | None]:
    """The checked config (a mapping is read as :meth:`SecondOrderConfig.from_dict` reads it)
    and the generator (a seed makes one)."""
    check_hr(hr, scale, who)
    g = as_generator(generator)
    if config is None or isinstance(config, Mapping):
        cfg = SecondOrderConfig.from_dict(config)
    elif isinstance(config, SecondOrderConfig):
        cfg = config
    else:
        raise BlindSRError(f"{who}: config must be a SecondOrderConfig or a mapping, got "
                           f"{type(config).__name__}")
    cfg.validate()
    return cfg, g


def _to_8bit(x: Tensor) -> Tensor:
    return torch.round(x.clamp(0, 1) * 255) / 255


def first_order(
    hr: Tensor,
    scale: int,
    config: SecondOrderConfig | Mapping[str, Any] | None = None,
    generator: torch.Generator | int | None = None,
) -> Tensor:
    """The classical first-order model with the pipeline's stage-1 ranges: blur, a resize straight
    to ``(H // scale, W // scale)`` (one of ``final.modes``, one for the batch), noise, JPEG; the
    LR is clamped and rounded to 8-bit levels, as :func:`second_order`'s."""
    cfg, g = _checked(hr, scale, config, generator, "first_order")
    return _to_8bit(_first(hr, cfg, scale, g))


def second_order(
    hr: Tensor,
    scale: int,
    config: SecondOrderConfig | Mapping[str, Any] | None = None,
    generator: torch.Generator | int | None = None,
) -> Tensor:
    """Degrade HR ``(N, C, H, W)`` in [0, 1] into LR ``(N, C, H // scale, W // scale)``.

    Real-ESRGAN's second-order pipeline (see the module docstring), with a ``first_order_prob``
    share of the samples made by :func:`first_order` instead; the LR is clamped to [0, 1] and
    rounded to 8-bit levels. ``config``: the pipeline's settings (or a mapping of overrides);
    ``generator``: a CPU generator or a seed (None: the global random state).
    """
    cfg, g = _checked(hr, scale, config, generator, "second_order")
    if cfg.first_order_prob == 0:  # no draw: the pure pipeline's random stream is unchanged
        return _to_8bit(_second(hr, cfg, scale, g))
    first = _chance(cfg.first_order_prob, hr.shape[0], g)
    return _to_8bit(_split(hr, first, lambda t, i: _first(t, cfg, scale, g),
                           lambda t, i: _second(t, cfg, scale, g)))
