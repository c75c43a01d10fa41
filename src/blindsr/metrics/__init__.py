"""Image quality metrics and a small registry describing them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from blindsr.errors import BlindSRError
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
}


def get_metric(name: str) -> Metric:
    """The registered metric called ``name`` (case-insensitive)."""
    key = name.lower() if isinstance(name, str) else None
    if key not in METRICS:
        raise BlindSRError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}")
    return METRICS[key]


__all__ = ["METRICS", "Metric", "get_metric", "psnr", "ssim"]
