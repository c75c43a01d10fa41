"""Checks of user-given values: image tensors (one-line errors for the usual mistakes, values on
another scale than blindsr's [0, 1] (0..255, -1..1) and NaN, which would otherwise give a
silently wrong result after clamping) and whole-number settings."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

from blindsr.errors import BlindSRError

if TYPE_CHECKING:  # torch is imported on use: light modules (evaluate) import is_whole
    from torch import Tensor

def is_whole(value: object, low: int, high: int | None = None) -> bool:
    """Whether ``value`` is an int (a bool is not) with ``low <= value`` and ``value < high``."""
    return (isinstance(value, int) and not isinstance(value, bool) and value >= low
            and (high is None or value < high))


def check_crop_border(crop_border: object, who: str) -> int:
    """``crop_border`` as an int; a one-line error naming ``who`` unless it is a whole number
    >= 0 (a numpy integer too)."""
    if (not isinstance(crop_border, numbers.Integral) or isinstance(crop_border, bool)
            or crop_border < 0):
        raise BlindSRError(f"{who}: crop_border must be a whole number >= 0, got {crop_border!r}")
    return int(crop_border)


# Past these bounds a value is no network's overshoot of [0, 1] but a sign of another scale.
LOWEST, HIGHEST = -0.5, 1.5


def check_unit_range(img: Tensor, who: str) -> None:
    """A one-line error unless the float tensor ``img`` is a non-empty image on the [0, 1] scale
    (an overshoot to [-0.5, 1.5], as unclamped networks make, is accepted)."""
    import torch

    if img.numel() == 0:
        raise BlindSRError(f"{who}: the image is empty ({tuple(img.shape)})")
    low, high = (float(v) for v in torch.aminmax(img.detach()))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise BlindSRError(f"{who}: the image holds NaN or infinite values")
    if high > HIGHEST:
        raise BlindSRError(f"{who}: values reach {high:.4g}, but images are floats in [0, 1] "
                           "(divide 0..255 values by 255)")
    if low < LOWEST:
        raise BlindSRError(f"{who}: values go down to {low:.4g}, but images are floats in [0, 1] "
                           "(map -1..1 values with (x + 1) / 2)")
