"""Shared pieces of the architectures: the registry entry type, argument checks, state-dict
shape readers, a residual block and weight initialisation."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import BlindSRError

StateDict = Mapping[str, Tensor]


@dataclass(frozen=True)
class ArchSpec:
    """One registry entry: how to build an architecture and how to recognise its weights.

    ``detect(sd)`` says whether a state dict belongs to this architecture (from its key names);
    ``kwargs_from_state_dict(sd)`` reads every constructor argument back from tensor shapes.
    """

    name: str
    constructor: type[nn.Module]
    detect: Callable[[StateDict], bool]
    kwargs_from_state_dict: Callable[[StateDict], dict[str, Any]]
    description: str = ""
    # Growth (archs.grow): the constructor arguments a grown net may increase (empty: the
    # architecture cannot be grown), and whether a parameter the larger net adds must start at
    # zero to keep the smaller net's function (e.g. the last conv of an added residual block).
    growable: tuple[str, ...] = ()
    grow_zero: Callable[[str], bool] = lambda name: False


def check_int(
    arch: str, name: str, value: object, minimum: int = 1, choices: Iterable[int] | None = None
) -> int:
    """Return ``value`` if it is an int >= ``minimum`` (and in ``choices``), else BlindSRError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BlindSRError(f"{arch}: {name} must be an integer, got {value!r}")
    allowed = tuple(choices) if choices is not None else None
    if allowed is not None and value not in allowed:
        raise BlindSRError(f"{arch}: {name} must be one of {list(allowed)}, got {value}")
    if value < minimum:
        raise BlindSRError(f"{arch}: {name} must be >= {minimum}, got {value}")
    return value


def check_kwargs(arch: str, scales: Iterable[int], **values: object) -> dict[str, Any]:
    """Check every constructor argument (positive ints; ``scale`` one of ``scales``) and return
    them as the model's ``arch_kwargs``."""
    return {name: check_int(arch, name, value, choices=scales if name == "scale" else None)
            for name, value in values.items()}


def shape_of(sd: StateDict, key: str) -> tuple[int, ...]:
    """Shape of ``sd[key]``; BlindSRError naming the key when it is absent."""
    if key not in sd:
        raise BlindSRError(f"state dict lacks '{key}'")
    return tuple(sd[key].shape)


def has_keys(sd: StateDict, *keys: str) -> bool:
    """True when every key is present."""
    return all(k in sd for k in keys)


def count_blocks(sd: StateDict, prefix: str = "body") -> int:
    """Number of blocks in a Sequential named ``prefix``: highest index in ``prefix.N.*`` + 1."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    indices = [int(m.group(1)) for k in sd if (m := pattern.match(k))]
    return max(indices) + 1 if indices else 0


def scaled_kaiming_(modules: Iterable[nn.Module], scale: float = 0.1) -> None:
    """Kaiming-normal init of conv weights times ``scale``, zero biases (stabilises deep
    residual networks at the start of training)."""
    for module in modules:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
            with torch.no_grad():
                module.weight.mul_(scale)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    """3x3 convolution, stride 1, padding 1, with bias."""
    return nn.Conv2d(in_ch, out_ch, 3, 1, 1)


class ResidualBlockNoBN(nn.Module):
    """EDSR-style residual block: ``x + res_scale * conv2(relu(conv1(x)))``, no batch norm."""

    def __init__(self, num_feat: int = 64, res_scale: float = 1.0) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = conv3x3(num_feat, num_feat)
        self.conv2 = conv3x3(num_feat, num_feat)
        self.relu = nn.ReLU(inplace=True)
        scaled_kaiming_([self.conv1, self.conv2], 0.1)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale
