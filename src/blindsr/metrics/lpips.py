"""LPIPS v0.1 (Zhang et al. 2018), AlexNet or VGG16, with the released linear heads.

Images in [0, 1] are mapped to [-1, 1] and through the LPIPS scaling layer; each tapped ReLU
output is unit-normalised over channels, the squared difference is weighted by a 1x1 linear head,
averaged over space and summed over the five layers. Lower is better.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from blindsr.errors import BlindSRError
from blindsr.metrics.backbones import (
    AlexNetFeatures,
    VGGFeatures,
    as_image_pair,
    cached,
    exact_fp32,
    freeze,
    load_features,
    weights_key,
    weights_state,
)
from blindsr.metrics.psnr_ssim import ImageLike

_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_NETS = {"alex": ("alexnet", (64, 192, 384, 256, 256)), "vgg": ("vgg16", (64, 128, 256, 512, 512))}
_VGG_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
_MIN_SIDE = {"alex": 31, "vgg": 16}  # the smallest input whose five taps are not empty


def _unit(f: Tensor, eps: float = 1e-10) -> Tensor:
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance between two batches in [0, 1]; differentiable, one value per image.
    Built frozen (eval mode, no parameter gradients); inputs are not range-checked here (a loss
    sees unclamped network outputs), :func:`lpips` checks them.

    ``weights``: a file holding ``features.*`` (torchvision layout) and ``lpips.lin{0-4}.weight``
    (the asset format) to use instead of the verified asset.
    """

    def __init__(self, net: str = "alex", weights: str | os.PathLike[str] | None = None):
        super().__init__()
        if net not in _NETS:
            raise BlindSRError(f"lpips: net must be one of {', '.join(_NETS)}, got {net!r}")
        asset, widths = _NETS[net]
        self.net = net
        with torch.random.fork_rng(devices=[]):  # every weight is loaded below
            self.backbone = AlexNetFeatures() if net == "alex" else VGGFeatures("vgg16")
            self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in widths)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        state = weights_state(asset, weights)
        source = str(weights) if weights is not None else f"asset {asset}"
        load_features(self.backbone, state, source)
        try:
            for k, lin in enumerate(self.lins):
                lin.weight.data.copy_(state[f"lpips.lin{k}.weight"].reshape(lin.weight.shape))
        except (KeyError, RuntimeError) as err:
            raise BlindSRError(f"{source}: no usable LPIPS head {err}") from None
        freeze(self)  # a metric, also as a loss: gradients flow to the inputs only

    def features(self, x: Tensor) -> list[Tensor]:
        h = (x * 2 - 1 - self.shift) / self.scale
        if self.net == "alex":
            return self.backbone(h)
        taps = self.backbone(h, _VGG_TAPS)
        return [taps[n] for n in _VGG_TAPS]

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        total = x.new_zeros(x.shape[0])
        for fx, fy, lin in zip(self.features(x), self.features(y), self.lins, strict=True):
            total = total + lin((_unit(fx) - _unit(fy)).pow(2)).mean(dim=(1, 2, 3))
        return total


def lpips_model(
    net: str = "alex",
    device: torch.device | str = "cpu",
    weights: str | os.PathLike[str] | None = None,
) -> LPIPS:
    """The frozen LPIPS network for ``net`` on ``device``, built once and cached."""
    return cached(("lpips", net, weights_key(weights)), device, lambda: LPIPS(net, weights))


def lpips(
    x: ImageLike,
    y: ImageLike,
    net: str = "alex",
    crop_border: int = 0,
    weights: str | os.PathLike[str] | None = None,
) -> Tensor:
    """LPIPS v0.1 between ``x`` and ``y``: one float64 value per image (lower is better).

    ``x``/``y``: uint8 HxW(xC) numpy arrays or NCHW tensors (float in [0, 1] or uint8); float
    inputs are taken at 8-bit levels. ``net``: "alex" (the usual metric) or "vgg".
    """
    a, b = as_image_pair(x, y, crop_border, f"lpips ({net})", _MIN_SIDE.get(net, 1))
    model = lpips_model(net, a.device, weights)
    with torch.no_grad(), exact_fp32(a.device):
        return model(a, b).to(torch.float64)


__all__ = ["LPIPS", "lpips", "lpips_model"]
