"""Pixel losses: L1, L2 (MSE) and Charbonnier, mean over every element."""

from __future__ import annotations

import torch
from torch import Tensor

from blindsr.errors import BlindSRError


def _check(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise BlindSRError(f"loss inputs differ in shape: {tuple(pred.shape)} vs "
                           f"{tuple(target.shape)}")


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error."""
    _check(pred, target)
    return (pred - target).abs().mean()


def l2_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error."""
    _check(pred, target)
    return (pred - target).square().mean()


def charbonnier_loss(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Mean of ``sqrt((pred - target)^2 + eps^2)``: a smooth L1 (LapSRN's convention)."""
    _check(pred, target)
    return torch.sqrt((pred - target).square() + eps * eps).mean()


PIXEL_LOSSES = {"l1": l1_loss, "l2": l2_loss, "charbonnier": charbonnier_loss}


def pixel_loss(name: str, pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """The pixel loss called ``name`` (l1, l2, charbonnier); ``eps`` is Charbonnier's."""
    if name not in PIXEL_LOSSES:
        raise BlindSRError(f"unknown pixel loss {name!r}; known: {', '.join(PIXEL_LOSSES)}")
    if name == "charbonnier":
        return charbonnier_loss(pred, target, eps)
    return PIXEL_LOSSES[name](pred, target)
