"""DRN: the primal network of "Closed-loop Matters: Dual Regression Networks for Single Image
Super-Resolution" (Guo et al., CVPR 2020), with prunable widths for :mod:`blindsr.compress`.

Structure (as the authors' ``model/drn.py``): the LR input is upsampled to the target size by
bicubic interpolation (``F.interpolate``, ``align_corners=False``; not clamped) and has a fixed RGB
mean subtracted; a 3x3 head conv (3 -> F); ``log2(s)`` down blocks, block ``p`` = stride-2 3x3 conv
(``F 2^p -> F 2^p``, no bias), LeakyReLU 0.2, 3x3 conv (``F 2^p -> F 2^(p+1)``, no bias), whose
inputs are kept as skips; then ``log2(s)`` up stages, each = ``num_block`` RCABs (3x3 conv, ReLU,
3x3 conv, channel attention with reduction 16, residual), a x2 pixel-shuffle upsampler (3x3 conv
``C -> 4u``, ``PixelShuffle(2)``, no activation), a 1x1 channel reduction (``u -> C_skip``) and the
concatenation with the matching skip. A 3x3 tail conv per scale gives RGB at 1x (before the
first up stage), 2x, ..., sx the LR size; the mean is added back to every output.

Trunk widths at x4 are 4F (both stages); at x8 they are 8F, 8F, 4F. Presets ``(num_block,
num_feat)``: DRN-S (30, 16) x4 / (30, 8) x8 and DRN-L (40, 20) x4 / (36, 10) x8: 4.8M / 9.8M and
5.4M / 10.0M parameters (``archs.build("drn-s", scale=4)``).

Choices where the paper is silent or where this port differs:

- Inputs are in [0, 1], so the mean shift subtracts DRN's DIV2K mean (0.4488, 0.4371, 0.4040)
  (DRN works in [0, 255] with ``rgb_range`` 255); the shift is a constant, not a parameter (DRN's
  ``MeanShift`` convs are registered parameters, which makes its checkpoints 24 numbers larger).
  Checkpoints of the authors' code therefore do not load here (other key names and value range).
- The channel attention squeezes to ``max(1, C // 16)`` channels (DRN: ``C // 16``, which would
  be 0 for the tiny widths used in tests).
- Prunable widths: ``block_widths`` lists the inner width (conv1 outputs = conv2 inputs) of every
  RCAB in forward order (stage by stage), ``up_widths`` the pixel-shuffle width ``u`` of every up
  stage. ``None`` means full (the trunk width of that stage). Trunk channels are never pruned
  (they meet in residual sums and concatenations). Both lists are read back from tensor shapes
  and appear in ``arch_kwargs`` only when they differ from the full widths.

Key names: ``head``, ``down.P.{0,2}``, ``up.S.blocks.B.{conv1,conv2,ca.attention.{1,3}}``,
``up.S.upconv``, ``up.S.reduce``, ``tail.K`` (all weights and biases; the down convs have no bias).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BlindSRError
from .common import ArchSpec, StateDict, check_kwargs, conv3x3, count_blocks, has_keys, shape_of
from .han import ChannelAttention

NAME = "drn"
SCALES = (4, 8)
RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DRN's DIV2K mean, in [0, 1]
REDUCTION = 16  # channel attention squeeze ratio
PRESETS: dict[str, dict[int, dict[str, int]]] = {
    "drn-s": {4: {"num_block": 30, "num_feat": 16}, 8: {"num_block": 30, "num_feat": 8}},
    "drn-l": {4: {"num_block": 40, "num_feat": 20}, 8: {"num_block": 36, "num_feat": 10}},
}


def num_stages(scale: int) -> int:
    """Number of down blocks = up stages: ``log2(scale)``."""
    return scale.bit_length() - 1


def trunk_widths(scale: int, num_feat: int) -> list[int]:
    """Trunk width (RCAB channels = upsampler input) of every up stage."""
    phase = num_stages(scale)
    return [num_feat * 2 ** (phase - max(i - 1, 0)) for i in range(phase)]


def full_widths(scale: int, num_block: int, num_feat: int) -> tuple[list[int], list[int]]:
    """Unpruned ``(block_widths, up_widths)``."""
    trunks = trunk_widths(scale, num_feat)
    return [w for w in trunks for _ in range(num_block)], list(trunks)


def _check_widths(name: str, value: object, length: int) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise BlindSRError(f"{NAME}: {name} must be a list of {length} integers, got {value!r}")
    items = list(value)
    if len(items) != length:
        raise BlindSRError(f"{NAME}: {name} must have {length} entries, got {len(items)}")
    for i, w in enumerate(items):
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise BlindSRError(f"{NAME}: {name}[{i}] must be an integer >= 1, got {w!r}")
    return items


class RCAB(nn.Module):
    """Residual channel-attention block ``x + CA(conv2(relu(conv1(x))))`` with an inner width
    ``inner`` (conv1 outputs, conv2 inputs) that may be smaller than ``num_feat``."""

    def __init__(self, num_feat: int, inner: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(num_feat, inner)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(inner, num_feat)
        self.ca = ChannelAttention(num_feat, max(1, num_feat // REDUCTION))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        return x + self.ca(self.conv2(self.relu(self.conv1(x))))


class UpStage(nn.Module):
    """RCABs, then a x2 pixel-shuffle upsampler of width ``up_width`` and a 1x1 reduction."""

    def __init__(self, num_feat: int, inner: Sequence[int], up_width: int, out_ch: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(RCAB(num_feat, w) for w in inner))
        self.upconv = conv3x3(num_feat, 4 * up_width)
        self.shuffle = nn.PixelShuffle(2)
        self.reduce = nn.Conv2d(up_width, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, out_ch, 2H, 2W)."""
        return self.reduce(self.shuffle(self.upconv(self.blocks(x))))


def _down_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, stride=2, padding=1, bias=False),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
    )


class DRN(nn.Module):
    """DRN primal network for x4 or x8 (see the module docstring).

    ``forward(lr)`` returns the final SR image; ``forward_all(lr)`` returns the outputs of every
    scale, from 1x (LR size) to ``scale``x.
    """

    arch_name = NAME

    def __init__(
        self,
        scale: int = 4,
        num_block: int = 30,
        num_feat: int = 16,
        block_widths: Sequence[int] | None = None,
        up_widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        kwargs: dict[str, Any] = check_kwargs(
            NAME, SCALES, scale=scale, num_block=num_block, num_feat=num_feat)
        phase = num_stages(scale)
        full_blocks, full_ups = full_widths(scale, num_block, num_feat)
        blocks = _check_widths("block_widths", block_widths, len(full_blocks))
        ups = _check_widths("up_widths", up_widths, len(full_ups))
        if blocks is not None and blocks != full_blocks:
            kwargs["block_widths"] = blocks
        if ups is not None and ups != full_ups:
            kwargs["up_widths"] = ups
        self.arch_kwargs = kwargs
        self.scale = scale
        self.block_widths = blocks or full_blocks
        self.up_widths = ups or full_ups
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = conv3x3(3, num_feat)
        self.down = nn.ModuleList(
            _down_block(num_feat * 2**p, num_feat * 2 ** (p + 1)) for p in range(phase))
        trunks = trunk_widths(scale, num_feat)
        self.up = nn.ModuleList(
            UpStage(trunks[i], self.block_widths[i * num_block:(i + 1) * num_block],
                    self.up_widths[i], num_feat * 2 ** (phase - i - 1))
            for i in range(phase))
        tails = [num_feat * 2**phase] + [num_feat * 2 ** (phase - i) for i in range(phase)]
        self.tail = nn.ModuleList(conv3x3(c, 3) for c in tails)

    def _run(self, lr: Tensor, every_scale: bool) -> list[Tensor]:
        x = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        mean = self.mean.to(x.dtype)
        x = self.head(x - mean)
        skips = []
        for down in self.down:
            skips.append(x)
            x = down(x)
        outputs = [self.tail[0](x) + mean] if every_scale else []
        for i, stage in enumerate(self.up):
            x = torch.cat((stage(x), skips[-1 - i]), dim=1)
            if every_scale or i == len(self.up) - 1:
                outputs.append(self.tail[i + 1](x) + mean)
        return outputs

    def forward_all(self, lr: Tensor) -> list[Tensor]:
        """Outputs at 1x, 2x, ..., ``scale``x the LR size (N, 3, H*k, W*k), lowest first."""
        return self._run(lr, every_scale=True)

    def forward(self, lr: Tensor) -> Tensor:
        """(N, 3, H, W) -> (N, 3, H*scale, W*scale)."""
        return self._run(lr, every_scale=False)[-1]


def detect(sd: StateDict) -> bool:
    """DRN weights: a head, down blocks, up stages with an upsampler and a 1x1 reduction, tails."""
    return has_keys(sd, "head.weight", "down.0.0.weight", "up.0.upconv.weight",
                    "up.0.reduce.weight", "tail.0.weight")


def kwargs_from_state_dict(sd: StateDict) -> dict[str, Any]:
    """Read every constructor argument back from tensor shapes (pruned widths only when they
    differ from the full ones)."""
    phase = count_blocks(sd, "down")
    scale = 2**phase
    if scale not in SCALES:
        raise BlindSRError(f"{NAME}: {phase} down blocks (x{scale}); expected 2 (x4) or 3 (x8)")
    num_feat = shape_of(sd, "head.weight")[0]
    num_block = count_blocks(sd, "up.0.blocks")
    blocks = [shape_of(sd, f"up.{i}.blocks.{b}.conv1.weight")[0]
              for i in range(phase) for b in range(num_block)]
    ups = [shape_of(sd, f"up.{i}.reduce.weight")[1] for i in range(phase)]
    full_blocks, full_ups = full_widths(scale, num_block, num_feat)
    kwargs: dict[str, Any] = {"scale": scale, "num_block": num_block, "num_feat": num_feat}
    if blocks != full_blocks:
        kwargs["block_widths"] = blocks
    if ups != full_ups:
        kwargs["up_widths"] = ups
    return kwargs


SPEC = ArchSpec(
    name=NAME,
    constructor=DRN,
    detect=detect,
    kwargs_from_state_dict=kwargs_from_state_dict,
    description="DRN (dual regression networks, CVPR 2020) primal net, x4/x8; prunable widths",
)
