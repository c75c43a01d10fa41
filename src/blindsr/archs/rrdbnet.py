"""ESRGAN's RRDBNet with BasicSR / Real-ESRGAN key names: residual-in-residual dense blocks,
two nearest x2 upsampling stages. x4 is native; x2 and x1 pixel-unshuffle the input first
(by 2 and 4), as Real-ESRGAN's x2 model does."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import (
    ArchSpec,
    StateDict,
    check_kwargs,
    conv3x3,
    count_blocks,
    has_keys,
    scaled_kaiming_,
    shape_of,
)

NAME = "rrdbnet"
UNSHUFFLE = {4: 1, 2: 2, 1: 4}  # scale -> pixel-unshuffle factor of the input


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; the output is scaled by 0.2 and added to the input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = conv3x3(num_feat, num_grow_ch)
        self.conv2 = conv3x3(num_feat + num_grow_ch, num_grow_ch)
        self.conv3 = conv3x3(num_feat + 2 * num_grow_ch, num_grow_ch)
        self.conv4 = conv3x3(num_feat + 3 * num_grow_ch, num_grow_ch)
        self.conv5 = conv3x3(num_feat + 4 * num_grow_ch, num_feat)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        scaled_kaiming_([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(self.lrelu(conv(torch.cat(feats, 1))))
        return x + 0.2 * self.conv5(torch.cat(feats, 1))


class RRDB(nn.Module):
    """Three dense blocks in sequence, residual-scaled by 0.2 around the whole."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """RRDBNet generator (ESRGAN / Real-ESRGAN) for x1, x2 and x4."""

    arch_name = NAME

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        scale: int = 4,
    ) -> None:
        super().__init__()
        self.arch_kwargs: dict[str, Any] = check_kwargs(
            NAME, sorted(UNSHUFFLE), num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat,
            num_block=num_block, num_grow_ch=num_grow_ch, scale=scale)
        self.scale = scale
        self.unshuffle = UNSHUFFLE[scale]
        self.conv_first = conv3x3(num_in_ch * self.unshuffle**2, num_feat)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = conv3x3(num_feat, num_feat)
        self.conv_up1 = conv3x3(num_feat, num_feat)
        self.conv_up2 = conv3x3(num_feat, num_feat)
        self.conv_hr = conv3x3(num_feat, num_feat)
        self.conv_last = conv3x3(num_feat, num_out_ch)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """(N, num_in_ch, H, W) -> (N, num_out_ch, H*scale, W*scale), any H and W."""
        h, w = x.shape[-2:]
        f = self.unshuffle
        if f > 1:
            # Replicate-pad to a multiple of the unshuffle factor; the excess is cropped below.
            x = F.pad(x, (0, -w % f, 0, -h % f), mode="replicate")
            x = F.pixel_unshuffle(x, f)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        out = self.conv_last(self.lrelu(self.conv_hr(feat)))
        return out[..., : h * self.scale, : w * self.scale]


def detect(sd: StateDict) -> bool:
    """RRDBNet weights: conv_first, conv_body, conv_up1/2, conv_hr, conv_last."""
    return has_keys(
        sd,
        "conv_first.weight",
        "conv_body.weight",
        "conv_up1.weight",
        "conv_up2.weight",
        "conv_hr.weight",
        "conv_last.weight",
    )


def kwargs_from_state_dict(sd: StateDict) -> dict[str, Any]:
    """Read every constructor argument back from tensor shapes.

    The scale comes from conv_first's input channels (num_in_ch * unshuffle**2). That is ambiguous
    in principle (12 inputs: 3 channels at x2, or 12 channels at x4); it is resolved by taking the
    unshuffle factor for which num_in_ch equals num_out_ch, else x4 with no unshuffle.
    """
    num_feat, in_ch = shape_of(sd, "conv_first.weight")[:2]
    num_out_ch = shape_of(sd, "conv_last.weight")[0]
    num_grow_ch = shape_of(sd, "body.0.rdb1.conv1.weight")[0]
    scale = next((s for s, f in UNSHUFFLE.items() if in_ch == num_out_ch * f * f), 4)
    f = UNSHUFFLE[scale]
    return {
        "num_in_ch": in_ch // (f * f),
        "num_out_ch": num_out_ch,
        "num_feat": num_feat,
        "num_block": count_blocks(sd, "body"),
        "num_grow_ch": num_grow_ch,
        "scale": scale,
    }


SPEC = ArchSpec(
    name=NAME,
    constructor=RRDBNet,
    detect=detect,
    kwargs_from_state_dict=kwargs_from_state_dict,
    description="ESRGAN RRDBNet (BasicSR/Real-ESRGAN keys); x4 native, x2/x1 via pixel-unshuffle",
)
