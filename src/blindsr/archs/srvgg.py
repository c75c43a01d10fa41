"""SRVGGNetCompact (Real-ESRGAN's compact model): a plain stack of 3x3 convs with per-channel
PReLU at the LR size, one pixel shuffle at the end and a nearest-neighbour global skip. No
convolution runs at the HR size, so it is the fastest architecture here per parameter.

State-dict keys match Real-ESRGAN's ``SRVGGNetCompact`` with its PReLU activation (that of every
released model: ``realesr-general-x4v3`` is num_feat 64, num_conv 32; ``realesr-animevideov3``
num_conv 16): ``body.0`` the first conv, ``body.1`` its PReLU, then ``num_conv`` conv + PReLU
pairs, and the last conv ``body.{2 num_conv + 2}`` to ``num_out_ch * scale**2`` channels. So
those ``.pth`` files load in ``blindsr upscale`` / ``eval`` as they are.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BlindSRError
from .common import ArchSpec, StateDict, check_int, check_kwargs, conv3x3, shape_of

NAME = "srvgg"
SCALES = (1, 2, 3, 4, 8)
_KEY = re.compile(r"^body\.(\d+)\.(weight|bias)$")


class SRVGGNetCompact(nn.Module):
    """Conv + PReLU, ``num_conv`` times conv + PReLU, a conv to ``num_out_ch * scale**2``
    channels, pixel shuffle; plus the input enlarged by nearest neighbour."""

    arch_name = NAME

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64,
                 num_conv: int = 16, scale: int = 4) -> None:
        super().__init__()
        self.arch_kwargs: dict[str, Any] = {
            **check_kwargs(NAME, SCALES, num_in_ch=num_in_ch, num_out_ch=num_out_ch,
                           num_feat=num_feat),
            "num_conv": check_int(NAME, "num_conv", num_conv, minimum=0),
            **check_kwargs(NAME, SCALES, scale=scale)}
        if num_out_ch != num_in_ch:
            raise BlindSRError(f"{NAME}: the global skip needs num_out_ch == num_in_ch, "
                               f"got {num_out_ch} and {num_in_ch}")
        self.scale = scale
        layers: list[nn.Module] = [conv3x3(num_in_ch, num_feat), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [conv3x3(num_feat, num_feat), nn.PReLU(num_feat)]
        layers.append(conv3x3(num_feat, num_out_ch * scale * scale))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        """(N, num_in_ch, H, W) -> (N, num_out_ch, H*scale, W*scale)."""
        out = x
        for layer in self.body:
            out = layer(out)
        base = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return self.upsampler(out) + base


def detect(sd: StateDict) -> bool:
    """Only ``body.N.weight`` / ``body.N.bias`` keys and ``body.0`` a conv (``body.1`` then
    holds the PReLU's slopes; files without them are recognised, to be refused by name)."""
    first = sd.get("body.0.weight")
    return first is not None and first.ndim == 4 and all(_KEY.match(k) for k in sd)


def kwargs_from_state_dict(sd: StateDict) -> dict[str, Any]:
    """Read every constructor argument back from tensor shapes."""
    if "body.1.weight" not in sd:
        raise BlindSRError("srvgg: SRVGGNetCompact without PReLU weights (ReLU or LeakyReLU "
                           "activations) is not supported; only the PReLU variant, that of "
                           "Real-ESRGAN's released models")
    last = max(int(m.group(1)) for k in sd if (m := _KEY.match(k)))
    if last % 2:
        raise BlindSRError(f"srvgg: the last layer body.{last} is not a conv")
    num_feat, num_in_ch = shape_of(sd, "body.0.weight")[:2]
    out_channels = shape_of(sd, f"body.{last}.weight")[0]
    scale = math.isqrt(out_channels // num_in_ch)
    if scale * scale * num_in_ch != out_channels:
        raise BlindSRError(f"srvgg: the last conv has {out_channels} channels, not the "
                           f"{num_in_ch} input channels x scale^2 (the global skip needs as many "
                           "output channels as input channels)")
    return {"num_in_ch": num_in_ch, "num_out_ch": num_in_ch, "num_feat": num_feat,
            "num_conv": last // 2 - 1, "scale": scale}


SPEC = ArchSpec(
    name=NAME,
    constructor=SRVGGNetCompact,
    detect=detect,
    kwargs_from_state_dict=kwargs_from_state_dict,
    description="SRVGGNetCompact (Real-ESRGAN compact): LR-size convs + PReLU, one pixel "
                "shuffle, nearest skip; x1/x2/x3/x4/x8",
)
