"""The strategy interface: what differs between training methods, and nothing else.

A strategy computes the losses of one training step. The loop (``blindsr.train``) owns optimiser
stepping, mixed precision, distributed gradient averaging, gradient clipping, EMA, schedules,
checkpoints and logging; strategies never see any of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from blindsr.errors import BlindSRError


def process_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and this process's rank (0 without
    torch.distributed), so that every process of a distributed run draws its own randomness."""
    dist = torch.distributed
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    return torch.Generator().manual_seed(seed + 1_000_003 * rank)


@dataclass
class Update:
    """One optimiser update requested by a strategy.

    The loop zeroes the grads of ``optimizers``, backpropagates ``loss``, averages the gradients
    across processes, clips them, and steps those optimisers (names: ``"generator"`` or a key of
    :meth:`Strategy.networks`). ``logs`` are scalars (floats or 0-dim tensors) to report.
    """

    loss: Tensor
    optimizers: tuple[str, ...] = ("generator",)
    logs: dict[str, float | Tensor] = field(default_factory=dict)


@dataclass
class NoParams:
    """Params of a strategy without settings."""


class Strategy:
    """Base class: subclasses set ``name`` and ``Params`` and implement :meth:`training_step`.

    ``training_step`` is a Python generator: it yields :class:`Update` objects; the loop applies
    each one before resuming the generator, so code after a ``yield`` sees the updated weights
    (e.g. a discriminator update after the generator's). Extra trainable networks are returned by
    :meth:`networks` (created on ``device`` in ``__init__``); non-network state (replay buffers,
    counters, generators' states) goes through :meth:`state_dict` as tensors and primitives.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    # Whether LR-only samples (no HR) teach the strategy anything; if not, check_data refuses
    # them rather than let the loop skip them without a word.
    learns_from_lr_only: ClassVar[bool] = False
    # Params naming what a fresh run starts from (e.g. dual's dual_init): a resumed run gets
    # their defaults instead, as its checkpoint holds what they gave, and need not find them.
    startup_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, generator: nn.Module, params: Any, scale: int,
                 device: torch.device) -> None:
        self.generator = generator
        self.params = params
        self.scale = scale
        self.device = torch.device(device)
        # (LR, HR) of the last step, detached, set by strategies that degrade themselves: the
        # loop's image samples show these instead of the batch's placeholder LR.
        self.sample_pair: tuple[Tensor, Tensor] | None = None

    @classmethod
    def parse_params(cls, raw: Mapping[str, Any] | Any, path: str = "strategy.params") -> Any:
        """Validate a plain mapping into ``cls.Params`` (one-line error listing allowed keys)."""
        from blindsr.schema import from_plain

        return from_plain(cls.Params, raw, path)

    def networks(self) -> dict[str, nn.Module]:
        """Extra trainable networks by optimiser name (never ``"generator"``)."""
        return {}

    def default_optim(self) -> dict[str, dict]:
        """Default optimiser settings (OptimConfig fields) for the networks above."""
        return {}

    def degrades_itself(self) -> bool:
        """True when the strategy makes LR from HR itself (the loop leaves ``lr`` alone)."""
        return False

    def check_data(self, shares: Mapping[str, float]) -> None:
        """A one-line config error when the strategy cannot use the training data; ``shares``:
        the share of the samples each kind of data ("hr", "paired", "lr") gets by the
        data.train weights. Called once before training starts."""
        if "lr" in shares and not self.learns_from_lr_only:
            from blindsr.schema import fail

            users = "dual (DRN-Adapt) and amrl (with a no-reference reward)"
            raise fail("data.train", f"has LR-only images, which strategy {self.name} cannot "
                                     f"learn from (they have no HR targets); {users} use them")

    def training_step(self, batch: dict[str, Tensor], step: int) -> Iterator[Update]:
        """Yield the updates of training iteration ``step`` (0-based) on ``batch``."""
        raise NotImplementedError

    def idle_reason(self) -> str | None:
        """Why no update was yielded so far, if the strategy knows (said when a whole run
        made none)."""
        return None

    def state_dict(self) -> dict:
        """Non-network state to checkpoint (tensors and primitives only)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise BlindSRError(f"strategy {self.name!r} has no state to load, got {list(state)}")
