"""HAN-lite: the holistic attention network (Niu et al., ECCV 2020) at about 1/20 of its size.

Structure as in HAN: a head conv; residual groups of RCABs (residual channel-attention blocks), each
group closed by a conv and a skip; a conv after the groups; the layer attention module (LAM) over
the stacked outputs of every group and of that conv, fused by a conv; the channel-spatial attention
module (CSAM, one 3x3x3 conv over the feature volume) on the conv's output; both branches
concatenated, fused by a conv and added to the head features; a pixel-shuffle upsampler and a last
conv. Inputs have a fixed mean subtracted (added back to the output), as in HAN.

Sizes: HAN uses 10 groups x 20 RCABs x 64 features (about 16.1M parameters at x4). The defaults
here are 3 groups x 3 RCABs x 48 features with the same channel reduction 16: about 0.75M at x4.

Key names follow BasicSR's RCAN (``conv_first``, ``body.G.residual_group.B.rcab.*``,
``body.G.conv``, ``conv_after_body``, ``upsample.*``, ``conv_last``) plus ``lam.gamma``,
``conv_lam``, ``csam.weight`` / ``bias`` / ``gamma`` and ``conv_fuse``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BlindSRError
from .common import (
    ArchSpec,
    StateDict,
    check_kwargs,
    conv3x3,
    count_blocks,
    has_keys,
    shape_of,
)

NAME = "han-lite"
SCALES = (2, 3, 4)
RGB_MEAN = (0.4488, 0.4371, 0.4040)  # the DIV2K mean HAN subtracts (0.5 for non-RGB images)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average pool, 1x1 down to C/reduction, ReLU, 1x1 up,
    sigmoid; the input is scaled by the result."""

    def __init__(self, num_feat: int, squeeze: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, squeeze, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(squeeze, num_feat, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the attention."""
        return x * self.attention(x)


class RCAB(nn.Module):
    """Residual channel-attention block: ``x + CA(conv(relu(conv(x))))``."""

    def __init__(self, num_feat: int, squeeze: int) -> None:
        super().__init__()
        self.rcab = nn.Sequential(
            conv3x3(num_feat, num_feat),
            nn.ReLU(inplace=True),
            conv3x3(num_feat, num_feat),
            ChannelAttention(num_feat, squeeze),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        return x + self.rcab(x)


class ResidualGroup(nn.Module):
    """``num_block`` RCABs and a conv, with a skip over the whole group."""

    def __init__(self, num_feat: int, squeeze: int, num_block: int) -> None:
        super().__init__()
        self.residual_group = nn.Sequential(*(RCAB(num_feat, squeeze) for _ in range(num_block)))
        self.conv = conv3x3(num_feat, num_feat)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the group."""
        return x + self.conv(self.residual_group(x))


class LayerAttention(nn.Module):
    """HAN's layer attention module: ``(N, L, C, H, W)`` layer features re-weighted by an L x L
    attention between layers (softmax of ``max(energy) - energy``, energy = Gram matrix of the
    flattened layers), scaled by a learned ``gamma`` (zero at start) and added to the input;
    returns the layers concatenated along channels, ``(N, L*C, H, W)``."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, feats: Tensor) -> Tensor:
        """Apply the attention."""
        n, layers, c, h, w = feats.shape
        flat = feats.reshape(n, layers, -1)
        # The energies are sums over C*H*W products: beyond fp16's range on large inputs, so
        # they are computed in float32 whatever the model's dtype or autocast.
        with torch.autocast(feats.device.type, enabled=False):
            f32 = flat.float()
            energy = f32 @ f32.transpose(1, 2)
            attention = (energy.amax(dim=-1, keepdim=True) - energy).softmax(dim=-1)
        out = (attention.to(flat.dtype) @ flat).view(n, layers, c, h, w)
        return (self.gamma * out + feats).reshape(n, layers * c, h, w)


class ChannelSpatialAttention(nn.Module):
    """HAN's channel-spatial attention module: a 3x3x3 convolution (one input and one output
    channel) over the ``(C, H, W)`` feature volume gives a sigmoid mask; the output is
    ``x + x * gamma * mask`` with a learned ``gamma`` (zero at start).

    The 3-D kernel is stored as ``weight`` (3, 3, 3) = (channel tap, height, width) with ``bias``
    (1,), i.e. HAN's ``Conv3d(1, 1, 3, padding=1)`` parameters without their unit dimensions, and
    applied as three 2-D taps summed across neighbouring channels: no 5-D parameter, so the model
    converts to channels_last like any other.
    """

    def __init__(self) -> None:
        super().__init__()
        bound = 1 / 27**0.5  # PyTorch's default Conv3d initialisation for 27 inputs per output
        self.weight = nn.Parameter(torch.empty(3, 3, 3).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(1).uniform_(-bound, bound))
        self.gamma = nn.Parameter(torch.zeros(1))

    def volume_conv(self, x: Tensor) -> Tensor:
        """The 3x3x3 convolution of the (N, C, H, W) volume, zero padded: (N, C, H, W)."""
        n, c, h, w = x.shape
        taps = F.conv2d(x.reshape(n * c, 1, h, w), self.weight.unsqueeze(1), padding=1)
        taps = F.pad(taps.reshape(n, c, 3, h, w), (0, 0, 0, 0, 0, 0, 1, 1))  # pad channels
        # out[c] = tap0(x[c-1]) + tap1(x[c]) + tap2(x[c+1]); index c+1 in the padded axis is c
        return taps[:, :-2, 0] + taps[:, 1:-1, 1] + taps[:, 2:, 2] + self.bias

    def forward(self, x: Tensor) -> Tensor:
        """Apply the attention."""
        return x + x * (self.gamma * torch.sigmoid(self.volume_conv(x)))


def _upsampler(num_feat: int, scale: int) -> nn.Sequential:
    """Conv + pixel shuffle: one x2/x3 stage, or two x2 stages for x4 (keys upsample.0, .2)."""
    stage = 2 if scale == 4 else scale
    layers: list[nn.Module] = []
    for _ in range(2 if scale == 4 else 1):
        layers += [conv3x3(num_feat, num_feat * stage * stage), nn.PixelShuffle(stage)]
    return nn.Sequential(*layers)


class HANLite(nn.Module):
    """Holistic attention network (RCAB groups + LAM + CSAM) for x2, x3 and x4."""

    arch_name = NAME

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 48,
        num_group: int = 3,
        num_block: int = 3,
        reduction: int = 16,
        scale: int = 4,
    ) -> None:
        super().__init__()
        self.arch_kwargs: dict[str, Any] = check_kwargs(
            NAME, SCALES, num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat,
            num_group=num_group, num_block=num_block, reduction=reduction, scale=scale)
        if num_feat % reduction:
            raise BlindSRError(
                f"{NAME}: num_feat ({num_feat}) must be a multiple of reduction ({reduction})"
            )
        self.scale = scale
        squeeze = num_feat // reduction
        mean = RGB_MEAN if num_in_ch == 3 else (0.5,) * num_in_ch
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.conv_first = conv3x3(num_in_ch, num_feat)
        self.body = nn.Sequential(
            *(ResidualGroup(num_feat, squeeze, num_block) for _ in range(num_group))
        )
        self.conv_after_body = conv3x3(num_feat, num_feat)
        self.lam = LayerAttention()
        self.conv_lam = conv3x3(num_feat * (num_group + 1), num_feat)
        self.csam = ChannelSpatialAttention()
        self.conv_fuse = conv3x3(num_feat * 2, num_feat)
        self.upsample = _upsampler(num_feat, scale)
        self.conv_last = conv3x3(num_feat, num_out_ch)

    def forward(self, x: Tensor) -> Tensor:
        """(N, num_in_ch, H, W) -> (N, num_out_ch, H*scale, W*scale)."""
        mean = self.mean.to(x.dtype)
        head = self.conv_first(x - mean)
        feats = []
        res = head
        for group in self.body:
            res = group(res)
            feats.append(res)
        res = self.conv_after_body(res)
        feats.append(res)
        lam = self.conv_lam(self.lam(torch.stack(feats, dim=1)))
        fused = self.conv_fuse(torch.cat([self.csam(res), lam], dim=1)) + head
        out = self.conv_last(self.upsample(fused))
        return out + mean if out.shape[1] == mean.shape[1] else out


def detect(sd: StateDict) -> bool:
    """HAN-lite weights: RCAN-style keys plus the layer and channel-spatial attention modules."""
    return has_keys(
        sd,
        "conv_first.weight",
        "conv_after_body.weight",
        "lam.gamma",
        "conv_lam.weight",
        "csam.weight",
        "conv_fuse.weight",
        "upsample.0.weight",
        "conv_last.weight",
    )


def kwargs_from_state_dict(sd: StateDict) -> dict[str, Any]:
    """Read every constructor argument back from tensor shapes."""
    num_feat, num_in_ch = shape_of(sd, "conv_first.weight")[:2]
    num_out_ch = shape_of(sd, "conv_last.weight")[0]
    squeeze = shape_of(sd, "body.0.residual_group.0.rcab.3.attention.1.weight")[0]
    if "upsample.2.weight" in sd:
        scale = 4
    else:
        ratio = shape_of(sd, "upsample.0.weight")[0] // num_feat
        scale = {4: 2, 9: 3}.get(ratio, 0)
        if scale == 0:
            raise BlindSRError(
                f"upsample.0 has {ratio}x num_feat channels, expected 4 (x2) or 9 (x3)"
            )
    return {
        "num_in_ch": num_in_ch,
        "num_out_ch": num_out_ch,
        "num_feat": num_feat,
        "num_group": count_blocks(sd, "body"),
        "num_block": count_blocks(sd, "body.0.residual_group"),
        "reduction": num_feat // squeeze,
        "scale": scale,
    }


SPEC = ArchSpec(
    name=NAME,
    constructor=HANLite,
    detect=detect,
    kwargs_from_state_dict=kwargs_from_state_dict,
    description="HAN-lite: holistic attention (RCAB groups, LAM, CSAM), ~1/20 of HAN; x2/x3/x4",
)
