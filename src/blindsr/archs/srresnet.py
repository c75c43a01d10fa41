"""MSRResNet (modified SRResNet, as in BasicSR): residual blocks without batch norm, pixel-shuffle
upsampling and a bilinear global skip. State-dict keys match BasicSR's ``MSRResNet``."""

from __future__ import annotations

import re
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BlindSRError
from .common import (
    ArchSpec,
    ResidualBlockNoBN,
    StateDict,
    check_kwargs,
    conv3x3,
    count_blocks,
    has_keys,
    scaled_kaiming_,
    shape_of,
)

NAME = "srresnet"
SCALES = (2, 3, 4)


class SRResNet(nn.Module):
    """MSRResNet for x2, x3 (one pixel-shuffle stage) and x4 (two x2 stages)."""

    arch_name = NAME

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 16,
        scale: int = 4,
    ) -> None:
        super().__init__()
        self.arch_kwargs: dict[str, Any] = check_kwargs(
            NAME, SCALES, num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat,
            num_block=num_block, scale=scale)
        self.scale = scale
        self.conv_first = conv3x3(num_in_ch, num_feat)
        self.body = nn.Sequential(*(ResidualBlockNoBN(num_feat) for _ in range(num_block)))
        stage = 2 if scale == 4 else scale
        self.upconv1 = conv3x3(num_feat, num_feat * stage * stage)
        self.upconv2 = conv3x3(num_feat, num_feat * 4) if scale == 4 else None
        self.pixel_shuffle = nn.PixelShuffle(stage)
        self.conv_hr = conv3x3(num_feat, num_feat)
        self.conv_last = conv3x3(num_feat, num_out_ch)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        heads = [self.conv_first, self.upconv1, self.upconv2, self.conv_hr, self.conv_last]
        scaled_kaiming_([m for m in heads if m is not None], 0.1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, num_in_ch, H, W) -> (N, num_out_ch, H*scale, W*scale)."""
        out = self.body(self.lrelu(self.conv_first(x)))
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        if self.upconv2 is not None:
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out + base


def detect(sd: StateDict) -> bool:
    """MSRResNet weights: conv_first, upconv1, conv_hr, conv_last, and no RRDBNet trunk."""
    return has_keys(
        sd, "conv_first.weight", "upconv1.weight", "conv_hr.weight", "conv_last.weight"
    ) and not has_keys(sd, "conv_body.weight")


def kwargs_from_state_dict(sd: StateDict) -> dict[str, Any]:
    """Read every constructor argument back from tensor shapes."""
    num_feat, num_in_ch = shape_of(sd, "conv_first.weight")[:2]
    num_out_ch = shape_of(sd, "conv_last.weight")[0]
    if "upconv2.weight" in sd:
        scale = 4
    else:
        ratio = shape_of(sd, "upconv1.weight")[0] // num_feat
        scale = {4: 2, 9: 3}.get(ratio, 0)
        if scale == 0:
            raise BlindSRError(f"upconv1 has {ratio}x num_feat channels, expected 4 (x2) or 9 (x3)")
    return {
        "num_in_ch": num_in_ch,
        "num_out_ch": num_out_ch,
        "num_feat": num_feat,
        "num_block": count_blocks(sd, "body"),
        "scale": scale,
    }


def grow_zero(name: str) -> bool:
    """An added residual block starts as the identity: its second conv is zero."""
    return re.fullmatch(r"body\.\d+\.conv2\.(weight|bias)", name) is not None


SPEC = ArchSpec(
    name=NAME,
    constructor=SRResNet,
    detect=detect,
    kwargs_from_state_dict=kwargs_from_state_dict,
    description="MSRResNet (BasicSR): residual blocks, pixel shuffle, bilinear skip; x2/x3/x4",
    growable=("num_feat", "num_block"),
    grow_zero=grow_zero,
)
