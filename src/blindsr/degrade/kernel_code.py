"""The kernel-code degradation of the kernel-modulated SR methods (AMNet / AMGAN, IKC, DAN).

HR -> isotropic Gaussian blur (21 x 21, reflect padding, one sigma per sample) -> MATLAB bicubic
downsampling by ``scale``. This is the ``iso<sigma>`` preset of :mod:`blindsr.degrade.presets`
with a different sigma per sample; with ``quantize=True`` it also rounds to 8-bit levels after
each step exactly as that preset does, otherwise it stays in float.

Sigma ranges (IKC, Gu et al. 2019): x2 [0.2, 2.0], x3 [0.2, 3.0], x4 [0.2, 4.0]
(``SIGMA_RANGES``); ``SIGMA_RANGE`` is the x4 one.

The *kernel code* is what a kernel-modulated network is conditioned on (:class:`KernelCoder`):

- ``sigma``: one number, ``(sigma - lo) / (hi - lo)``, in [0, 1] over the range.
- ``pca``: the ``dim``-D PCA projection of the flattened 21 x 21 kernel, as IKC's PCA code. IKC
  fits its basis on random kernels it samples; here (isotropic kernels only) the basis is fitted
  on a fixed grid of 256 sigmas evenly spaced over the range, so it is deterministic and needs no
  file. The kernels are centred on the grid's mean kernel before projecting (IKC projects
  uncentred kernels; centring makes the codes of the range sit around 0). The sign of each
  principal axis is fixed (largest-magnitude entry positive), so the basis does not depend on the
  LAPACK build. ``decode`` returns the sigma of the nearest code on a dense grid of the range
  (step ~0.001), i.e. the least-squares fit of the kernel family to the code. A PCA code has at
  least 2 numbers: a 1-D code is always the sigma code (the two would otherwise be mixed up
  wherever the kind is read from the code length, as for the models' recorded units).

The *code box* (:meth:`KernelCoder.box`) is the per-dimension min / max of the codes of
``BOX_POINTS`` (256) sigmas evenly spaced over the range (``[0, 1]`` for sigma codes): the codes
a network trained on that range has seen. :func:`coder_for` gives the coder of a code length
(1: sigma, >= 2: PCA) and :func:`coder_of_model` the coder of a kernel-modulated model from its
recorded ``sigma_range`` buffer (see :mod:`blindsr.archs.amnet`).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from blindsr.errors import BlindSRError
from blindsr.ops.kernels import filter2d, gaussian_kernel
from blindsr.ops.resize import imresize

KERNEL_SIZE = 21
SIGMA_RANGES: dict[int, tuple[float, float]] = {2: (0.2, 2.0), 3: (0.2, 3.0), 4: (0.2, 4.0)}
SIGMA_RANGE: tuple[float, float] = SIGMA_RANGES[4]
PCA_FIT_POINTS = 256  # sigmas the PCA basis is fitted on
DECODE_POINTS = 3801  # sigmas of the nearest-code lookup
BOX_POINTS = 256  # sigmas whose codes define the code box

SigmaLike = float | Tensor


def sigma_range_for(scale: int) -> tuple[float, float]:
    """The IKC sigma range of ``scale`` (2, 3 or 4)."""
    if scale not in SIGMA_RANGES:
        raise BlindSRError(f"no kernel sigma range for x{scale}; known scales: 2, 3, 4")
    return SIGMA_RANGES[scale]


def _check_range(sigma_range: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in sigma_range)
    if not 0 < lo < hi:
        raise BlindSRError(f"sigma range must satisfy 0 < lo < hi, got {list(sigma_range)}")
    return lo, hi


def _q(x: Tensor) -> Tensor:
    return torch.round(x.clamp(0, 1) * 255) / 255


def blur_downsample(hr: Tensor, sigma: SigmaLike, scale: int, *,
                    quantize: bool = False) -> Tensor:
    """Blur each HR sample with a 21 x 21 isotropic Gaussian of its own sigma (reflect padding),
    then MATLAB-bicubic downsample by ``scale``.

    ``hr``: (N, C, H, W) float in [0, 1], cropped to a multiple of ``scale`` (top-left, as the
    presets). ``sigma``: a number or (N,) / (1,) tensor. ``quantize``: round to 8-bit levels
    after the blur and after the resize, as ``degrade.apply(hr, "iso<sigma>", scale)``.
    """
    from blindsr.degrade.presets import check_hr

    check_hr(hr, scale, "blur_downsample")
    sig = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1)
    if sig.numel() not in (1, hr.shape[0]):
        raise BlindSRError(f"blur_downsample: sigma must have 1 or N = {hr.shape[0]} values, "
                           f"got {sig.numel()}")
    h, w = hr.shape[-2:]
    hr = hr[..., : h - h % scale, : w - w % scale]
    kernel = gaussian_kernel(KERNEL_SIZE, sig.to(hr.device))
    blurred = filter2d(hr, kernel, padding="reflect")
    if quantize:
        blurred = _q(blurred)
    lr = imresize(blurred, size=(hr.shape[-2] // scale, hr.shape[-1] // scale))
    return _q(lr) if quantize else lr


def sample_sigma(n: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None,
                 sigma_range: tuple[float, float] = SIGMA_RANGE) -> Tensor:
    """``n`` sigmas uniform in ``sigma_range`` (float32, drawn on the CPU generator, then moved
    to ``device``, so a seed gives the same sigmas on every device)."""
    lo, hi = _check_range(sigma_range)
    u = torch.rand(int(n), generator=generator)
    return (lo + (hi - lo) * u).to(device or "cpu")


@lru_cache(maxsize=8)
def _pca(lo: float, hi: float, dim: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(mean kernel (K,), basis (K, dim), decode sigmas (M,), their codes (M, dim)), float64."""
    grid = torch.linspace(lo, hi, PCA_FIT_POINTS, dtype=torch.float64)
    kernels = gaussian_kernel(KERNEL_SIZE, grid).flatten(1)
    mean = kernels.mean(dim=0)
    _, _, vh = torch.linalg.svd(kernels - mean, full_matrices=False)
    basis = vh[:dim].T.contiguous()
    idx = basis.abs().argmax(dim=0)
    sign = torch.sign(basis[idx, torch.arange(dim)])
    basis = basis * sign
    sigmas = torch.linspace(lo, hi, DECODE_POINTS, dtype=torch.float64)
    codes = (gaussian_kernel(KERNEL_SIZE, sigmas).flatten(1) - mean) @ basis
    return mean, basis, sigmas, codes


class KernelCoder:
    """Sigma <-> kernel code (see the module docstring).

    ``kind``: "sigma" (``code_dim`` 1, ``dim`` ignored) or "pca" (``code_dim`` = ``dim`` >= 2).
    """

    def __init__(self, kind: str = "sigma", dim: int = 10,
                 sigma_range: tuple[float, float] = SIGMA_RANGE) -> None:
        if kind not in ("sigma", "pca"):
            raise BlindSRError(f"kernel code kind must be sigma or pca, got {kind!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= PCA_FIT_POINTS:
            raise BlindSRError(f"kernel code dim must be an integer in 1..{PCA_FIT_POINTS}, "
                               f"got {dim!r}")
        if kind == "pca" and dim < 2:
            raise BlindSRError("PCA kernel codes need dim >= 2 (a 1-D code is the sigma code)")
        self.kind = kind
        self.dim = dim
        self.sigma_range = _check_range(sigma_range)

    @property
    def code_dim(self) -> int:
        """Length of a code."""
        return 1 if self.kind == "sigma" else self.dim

    def __repr__(self) -> str:
        return f"KernelCoder(kind={self.kind!r}, dim={self.code_dim}, " \
               f"sigma_range={self.sigma_range})"

    def encode(self, sigma: SigmaLike) -> Tensor:
        """(N,) sigmas (or a number) -> (N, code_dim) codes, differentiable in sigma."""
        sig = torch.as_tensor(sigma)
        if not sig.is_floating_point():
            sig = sig.float()
        sig = sig.reshape(-1)
        lo, hi = self.sigma_range
        if self.kind == "sigma":
            return ((sig - lo) / (hi - lo))[:, None]
        if bool((sig <= 0).any()):
            raise BlindSRError("kernel sigmas must be > 0")
        mean, basis, _, _ = _pca(lo, hi, self.dim)
        k = gaussian_kernel(KERNEL_SIZE, sig).flatten(1)
        return (k - mean.to(k)) @ basis.to(k)

    def decode(self, code: Tensor) -> Tensor:
        """(N, code_dim) codes -> (N,) sigmas in the range (sigma codes are clamped to [0, 1];
        PCA codes map to the sigma of the nearest code on a dense grid)."""
        if not isinstance(code, Tensor) or code.ndim != 2 or code.shape[1] != self.code_dim:
            shape = tuple(code.shape) if isinstance(code, Tensor) else type(code).__name__
            raise BlindSRError(f"kernel codes must be (N, {self.code_dim}), got {shape}")
        lo, hi = self.sigma_range
        if self.kind == "sigma":
            return lo + (hi - lo) * code[:, 0].clamp(0, 1)
        _, _, sigmas, codes = _pca(lo, hi, self.dim)
        table = codes.to(code.device, torch.float64)
        nearest = torch.cdist(code.detach().to(torch.float64), table).argmin(dim=1)
        return sigmas.to(code.device)[nearest].to(code.dtype)

    def box(self) -> Tensor:
        """(2, code_dim) float32: the per-dimension min (row 0) and max (row 1) of the codes of
        ``BOX_POINTS`` sigmas evenly spaced over the range."""
        lo, hi = self.sigma_range
        if self.kind == "sigma":
            return torch.tensor([[0.0], [1.0]])
        codes = self.encode(torch.linspace(lo, hi, BOX_POINTS, dtype=torch.float64))
        return torch.stack([codes.min(dim=0).values, codes.max(dim=0).values]).float()


def coder_for(code_dim: int, sigma_range: tuple[float, float] = SIGMA_RANGE) -> KernelCoder:
    """The coder of ``code_dim``-D codes: sigma codes for 1, PCA codes for >= 2."""
    return KernelCoder("sigma" if code_dim == 1 else "pca", max(int(code_dim), 1), sigma_range)


def coder_of_model(model: torch.nn.Module) -> KernelCoder:
    """The coder a kernel-modulated model was trained with, read from its ``code_dim`` and its
    recorded ``sigma_range`` buffer (float32 noise rounded off to 6 significant digits); a
    one-line error when the model has none or never had it set (NaN)."""
    name = getattr(model, "arch_name", type(model).__name__)
    units = getattr(model, "sigma_range", None)
    dim = getattr(model, "code_dim", None)
    if not isinstance(units, Tensor) or units.shape != (2,) or not isinstance(dim, int):
        raise BlindSRError(f"{name}: not a kernel-modulated model (no code_dim / sigma_range)")
    if not bool(torch.isfinite(units).all()):
        raise BlindSRError(f"{name}: the model has no recorded kernel-code units (sigma_range "
                           "is unset): it was never trained by the amnet / amgan strategies")
    lo, hi = (float(f"{float(v):.6g}") for v in units)
    return coder_for(dim, (lo, hi))


__all__ = ["BOX_POINTS", "KERNEL_SIZE", "SIGMA_RANGE", "SIGMA_RANGES", "KernelCoder",
           "blur_downsample", "coder_for", "coder_of_model", "sample_sigma", "sigma_range_for"]
