"""``dropout``: the EATS paper's dropout baseline, for any architecture.

Channel-wise dropout (``F.dropout2d``) on the input of the generator's last conv (the conv layer
producing the output, found as the last ``nn.Conv2d`` called in a forward pass, traced once on
the first batch), then the ``plain`` pixel loss (L1 by default). The dropout is a forward
pre-hook the strategy adds to that conv, active only while the module is in training mode: in
``eval()`` (validation, inference) it does nothing, and the model's weights and state-dict keys
are those of the bare architecture. Default ``p`` by architecture, as the paper states: 0.5 for
SRResNet, 0.7 for RRDBNet; 0.5 for any other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blindsr.errors import BlindSRError
from blindsr.schema import bounded
from blindsr.strategies.base import Update
from blindsr.strategies.eats import conv_call_order
from blindsr.strategies.plain import Plain, PlainParams

DEFAULT_P = {"srresnet": 0.5, "rrdbnet": 0.7}
FALLBACK_P = 0.5


@dataclass
class DropoutParams(PlainParams):
    p: float | None = bounded(None, ge=0, lt=1)  # None: by architecture (DEFAULT_P)


def default_p(generator: nn.Module) -> float:
    """The paper's dropout rate for ``generator``'s architecture."""
    return DEFAULT_P.get(getattr(generator, "arch_name", ""), FALLBACK_P)


def channel_dropout_hook(module: nn.Module, args: tuple[Any, ...], p: float) -> tuple | None:
    """Forward pre-hook: ``dropout2d`` on the first input while ``module`` is training."""
    if not module.training or p == 0:
        return None
    return (F.dropout2d(args[0], p, training=True), *args[1:])


class ChannelDropout(Plain):
    """``plain`` with channel dropout before the last conv, in training only."""

    name = "dropout"
    Params = DropoutParams

    def __init__(self, generator: nn.Module, params: DropoutParams, scale: int,
                 device: torch.device) -> None:
        super().__init__(generator, params, scale, device)
        self.p = params.p if params.p is not None else default_p(generator)
        self.layer: str | None = None  # name of the last conv, once attached

    def attach(self, lr: Tensor) -> str:
        """Add the dropout hook to the last conv (traced on ``lr[:1]``); once. Its name."""
        if self.layer is None:
            order = conv_call_order(self.generator, lr[:1])
            if not order:
                raise BlindSRError("dropout: the generator has no nn.Conv2d layer")
            name = order[-1]
            hook = partial(channel_dropout_hook, p=self.p)
            self.generator.get_submodule(name).register_forward_pre_hook(hook)
            self.layer = name
        return self.layer

    def training_step(self, batch: dict[str, Tensor], step: int) -> Iterator[Update]:
        self.attach(batch["lr"])
        yield from super().training_step(batch, step)


__all__ = ["DEFAULT_P", "ChannelDropout", "DropoutParams", "channel_dropout_hook", "default_p"]
