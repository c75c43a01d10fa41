"""``plain``: the generator trained with one pixel loss (L1, L2 or Charbonnier)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from blindsr.losses.pixel import pixel_loss
from blindsr.schema import bounded
from blindsr.strategies.base import Strategy, Update


@dataclass
class PlainParams:
    loss: Literal["l1", "l2", "charbonnier"] = "l1"
    weight: float = bounded(1.0, gt=0)
    eps: float = bounded(1e-3, gt=0)  # Charbonnier only


class Plain(Strategy):
    """SR = G(LR); minimise ``weight * loss(SR, HR)`` over the samples that have an HR."""

    name = "plain"
    Params = PlainParams

    def training_step(self, batch: dict[str, Tensor], step: int) -> Iterator[Update]:
        lr, hr, has_hr = batch["lr"], batch["hr"], batch["has_hr"]
        if not bool(has_hr.all()):
            if not bool(has_hr.any()):
                return  # nothing to supervise in this batch
            lr, hr = lr[has_hr], hr[has_hr]
        sr = self.generator(lr)
        p = self.params
        loss = p.weight * pixel_loss(p.loss, sr.float(), hr.float(), eps=p.eps)
        yield Update(loss, ("generator",), {f"l_{p.loss}": loss.detach()})
