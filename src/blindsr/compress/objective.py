"""The dual regression loss L_DR as one callable for compression, and its dual models.

:class:`DualObjective` wraps :func:`blindsr.strategies.dual.dual_regression_loss`: the
multi-scale primal L1 of a DRN's ``forward_all`` outputs against MATLAB-bicubic-resized HR, plus
``lam`` x the L1 of the dual models' predictions (the closed loop). The dual models are either
loaded from a training run of the ``dual`` strategy (:func:`load_duals`) or created fresh and
trained: first alone on the frozen primal (:func:`warm_up_duals`), then jointly with the weights
wherever weights are trained (search, fine-tuning); during channel selection they are frozen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from blindsr.archs import state_dict_mismatch
from blindsr.errors import BlindSRError

Batches = Iterator[tuple[Tensor, Tensor]]  # (LR, HR) pairs on the working device
LossFn = Callable[..., tuple[Tensor, dict[str, Tensor]]]


class DualObjective:
    """``L_DR(model; lr, hr) = dual_regression_loss(model.forward_all(lr), lr, hr, duals, lam)``.

    ``loss_fn`` defaults to the ``dual`` strategy's loss (same signature).
    """

    def __init__(self, duals: nn.Module | None, lam: float = 0.1,
                 loss_fn: LossFn | None = None) -> None:
        if loss_fn is None:
            from blindsr.strategies.dual import dual_regression_loss as loss_fn
        if lam < 0:
            raise BlindSRError(f"dual loss weight must be >= 0, got {lam}")
        self.duals, self.lam, self.loss_fn = duals, float(lam), loss_fn

    def loss(self, outputs: list[Tensor], lr: Tensor, hr: Tensor) -> Tensor:
        """L_DR of given generator outputs (lowest scale first)."""
        total, _ = self.loss_fn(outputs, lr, hr, self.duals, self.lam)
        return total

    def __call__(self, model: nn.Module, lr: Tensor, hr: Tensor) -> Tensor:
        return self.loss(model.forward_all(lr), lr, hr)

    def parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of the dual models (empty without them)."""
        if self.duals is None:
            return []
        return [p for p in self.duals.parameters() if p.requires_grad]


def make_duals(scale: int, num_feat: int = 16) -> nn.Module:
    """Fresh per-stage dual models of the ``dual`` strategy for a x``scale`` DRN."""
    from blindsr.strategies.dual import DualModels

    return DualModels(scale, num_feat=num_feat, per_stage=True)


def load_duals(path: str | Path, scale: int) -> nn.Module:
    """Dual models from a ``dual``-strategy training run folder or checkpoint folder."""
    from blindsr.strategies import dual

    try:
        weights = dual.load_dual_weights(str(path))
    except BlindSRError as e:
        raise BlindSRError(f"--duals: {str(e).split(': ', 1)[-1]}") from None
    first = weights.get("blocks.0.0.weight")
    if first is None:
        raise BlindSRError(f"--duals {path}: not the weights of per-stage dual models")
    duals = make_duals(scale, int(first.shape[0]))
    problem = state_dict_mismatch(duals, weights)
    if problem:
        raise BlindSRError(f"--duals {path}: the dual weights do not fit x{scale} ({problem})")
    duals.load_state_dict(weights, strict=True)
    return duals


def warm_up_duals(model: nn.Module, objective: DualObjective, batches: Batches, steps: int,
                  lr: float = 1e-3) -> list[float]:
    """Train the dual models alone (Adam) on the frozen primal's outputs; returns the losses."""
    params = objective.parameters()
    if steps <= 0 or not params:
        return []
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        x, y = next(batches)
        with torch.no_grad():
            outputs = model.forward_all(x)
        loss = objective.loss(outputs, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        opt.step()
        losses.append(float(loss.detach()))
    return losses


__all__ = ["Batches", "DualObjective", "load_duals", "make_duals", "warm_up_duals"]
