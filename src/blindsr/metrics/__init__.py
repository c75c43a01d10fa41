"""Image quality metrics and a small registry describing them.

LPIPS, DISTS and NIQE load their weights (verified assets, see :mod:`blindsr.assets`)
lazily on first use and keep them per device; importing this package loads none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from blindsr.errors import BlindSRError
from blindsr.metrics.dists import dists
from blindsr.metrics.lpips import lpips
from blindsr.metrics.niqe import niqe
from blindsr.metrics.psnr_ssim import psnr, ssim


@dataclass(frozen=True)
class Metric:
    """A metric function and how to read its scores."""

    name: str
    fn: Callable
    lower_better: bool
    full_reference: bool


METRICS: dict[str, Metric] = {
    "psnr": Metric("psnr", psnr, lower_better=False, full_reference=True),
    "ssim": Metric("ssim", ssim, lower_better=False, full_reference=True),
    "lpips": Metric("lpips", lpips, lower_better=True, full_reference=True),
    "dists": Metric("dists", dists, lower_better=True, full_reference=True),
    "niqe": Metric("niqe", niqe, lower_better=True, full_reference=False),
}


def get_metric(name: str) -> Metric:
    """The registered metric called ``name`` (case-insensitive)."""
    key = name.lower() if isinstance(name, str) else None
    if key not in METRICS:
        raise BlindSRError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}")
    return METRICS[key]


__all__ = ["METRICS", "Metric", "dists", "get_metric", "lpips", "niqe", "psnr", "ssim"]
