"""How the weights are stepped: learning-rate schedules, optimisers and the generator's EMA.

Pure helpers of the training loop (:mod:`blindsr.train`); a schedule is a pure function of the
iteration, so resuming needs no hidden scheduler state.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING, Any

from blindsr.config import OptimConfig, ScheduleConfig
from blindsr.errors import BlindSRError

if TYPE_CHECKING:
    import torch
    from torch import nn


def schedule_lr(s: ScheduleConfig, base: float, step: int, total: int) -> float:
    """Learning rate of iteration ``step`` (0-based) out of ``total``: a pure function."""
    lr = base
    if s.type == "cosine":
        periods = list(s.periods) or [total]
        weights = list(s.restart_weights) or [1.0] * len(periods)
        start = 0
        lr = s.eta_min
        for period, weight in zip(periods, weights, strict=True):
            if step < start + period:
                phase = (step - start) / period
                lr = s.eta_min + weight * (base - s.eta_min) * 0.5 * (1 + math.cos(math.pi * phase))
                break
            start += period
    elif s.type == "multistep":
        lr = base * s.gamma ** bisect.bisect_right(list(s.milestones), step)
    if s.warmup and step < s.warmup:
        lr *= (step + 1) / s.warmup
    return lr


class Scheduler:
    """Sets an optimiser's learning rate from the schedule at each iteration (no hidden state)."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: ScheduleConfig,
                 base_lr: float, total: int) -> None:
        self.optimizer, self.schedule = optimizer, schedule
        self.base_lr, self.total, self.last_step = base_lr, total, -1

    def set(self, step: int) -> float:
        lr = schedule_lr(self.schedule, self.base_lr, step, self.total)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.last_step = step
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "base_lr": self.base_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = int(state["last_step"])


def make_optimizer(net: nn.Module, o: OptimConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over the trainable parameters of ``net``."""
    import torch

    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise BlindSRError(f"{type(net).__name__} has no trainable parameters")
    cls = torch.optim.AdamW if o.type == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def ema_decay(decay: float, step: int) -> float:
    """The EMA decay used after iteration ``step`` (0-based): ``min(decay, (1+step)/(10+step))``,
    so that the average forgets the random initialisation within the first few hundred steps."""
    return min(decay, (1 + step) / (10 + step))


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` over parameters and float buffers."""
    import torch

    with torch.no_grad():
        _lerp_all(ema, model, decay)


def _lerp_all(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        if e.is_floating_point():
            e.lerp_(b, 1.0 - decay)
        else:
            e.copy_(b)


__all__ = ["Scheduler", "ema_decay", "ema_update", "make_optimizer", "schedule_lr"]
