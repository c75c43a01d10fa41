"""DISTS (Ding et al. 2020), deep image structure and texture similarity, as the authors release it.

VGG16 (ImageNet weights, input normalised with the ImageNet mean/std) with every max pooling
replaced by L2 pooling (a 3x3 Hann window, stride 2, on squared activations); the features are the
raw input image (stage 0) and relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (1475 channels). Per
channel, a texture term compares global means and a structure term global (co)variances, with
c1 = c2 = 1e-6; the learned alpha/beta weight them (normalised to sum to one together), and
DISTS = 1 - the weighted sum. No resizing. Lower is better; identical images score 0.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blindsr.assets import load_asset, load_weights_file
from blindsr.errors import BlindSRError
from blindsr.metrics.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGGFeatures,
    as_image_pair,
    cached,
    exact_fp32,
    freeze,
    load_features,
    weights_key,
)
from blindsr.metrics.psnr_ssim import ImageLike

_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
_CHANNELS = (3, 64, 128, 256, 512, 512)
_C1 = _C2 = 1e-6


class L2Pool2d(nn.Module):
    """L2 pooling: ``sqrt(hann3x3 * x^2 + 1e-12)``, depthwise, stride 2, padding 1."""

    def __init__(self, channels: int):
        super().__init__()
        hann = torch.tensor([0.5, 1.0, 0.5])  # np.hanning(5) without its zero end points
        window = torch.outer(hann, hann)
        window = (window / window.sum()).expand(channels, 1, 3, 3).contiguous()
        self.register_buffer("window", window, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.conv2d(x * x, self.window, stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class DISTS(nn.Module):
    """DISTS between two batches in [0, 1]; differentiable, one value per image. Built frozen
    (eval mode, no parameter gradients).

    ``vgg_weights``: a torchvision-format VGG16 state dict file instead of the VGG16 asset;
    ``weights``: a file with ``alpha`` and ``beta`` instead of the DISTS asset.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        vgg_weights: str | os.PathLike[str] | None = None,
    ):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # every weight is loaded below
            self.backbone = VGGFeatures("vgg16", pool=L2Pool2d)
        vgg_state = load_weights_file(vgg_weights) if vgg_weights else load_asset("vgg16")
        load_features(self.backbone, vgg_state, str(vgg_weights or "asset vgg16"))
        ab = load_weights_file(weights) if weights else load_asset("dists")
        total = sum(_CHANNELS)
        try:
            alpha, beta = (ab[k].reshape(1, total).to(torch.float32) for k in ("alpha", "beta"))
        except (KeyError, RuntimeError) as err:
            raise BlindSRError(f"{weights or 'asset dists'}: no usable alpha/beta {err}") from None
        norm = alpha.sum() + beta.sum()
        self.register_buffer("alpha", alpha / norm)
        self.register_buffer("beta", beta / norm)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        freeze(self)  # a metric, also as a loss: gradients flow to the inputs only

    def features(self, x: Tensor) -> list[Tensor]:
        taps = self.backbone((x - self.mean) / self.std, _TAPS)
        return [x] + [taps[n] for n in _TAPS]

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        texture, structure = [], []
        for fx, fy in zip(self.features(x), self.features(y), strict=True):
            mx, my = fx.mean(dim=(2, 3)), fy.mean(dim=(2, 3))
            vx = (fx - mx[..., None, None]).pow(2).mean(dim=(2, 3))
            vy = (fy - my[..., None, None]).pow(2).mean(dim=(2, 3))
            cov = (fx * fy).mean(dim=(2, 3)) - mx * my
            texture.append((2 * mx * my + _C1) / (mx * mx + my * my + _C1))
            structure.append((2 * cov + _C2) / (vx + vy + _C2))
        s1, s2 = torch.cat(texture, 1), torch.cat(structure, 1)
        return 1 - (s1 * self.alpha + s2 * self.beta).sum(1)


def dists_model(
    device: torch.device | str = "cpu",
    weights: str | os.PathLike[str] | None = None,
    vgg_weights: str | os.PathLike[str] | None = None,
) -> DISTS:
    """The frozen DISTS network on ``device``, built once and cached."""
    key = ("dists", weights_key(weights), weights_key(vgg_weights))
    return cached(key, device, lambda: DISTS(weights, vgg_weights))


def dists(
    x: ImageLike,
    y: ImageLike,
    crop_border: int = 0,
    weights: str | os.PathLike[str] | None = None,
    vgg_weights: str | os.PathLike[str] | None = None,
) -> Tensor:
    """DISTS between ``x`` and ``y``: one float64 value per image (lower is better).

    ``x``/``y``: uint8 HxW(xC) numpy arrays or NCHW tensors (float in [0, 1] or uint8); float
    inputs are taken at 8-bit levels. Images are used at full size (no resizing).
    """
    a, b = as_image_pair(x, y, crop_border, "dists")
    model = dists_model(a.device, weights, vgg_weights)
    with torch.no_grad(), exact_fp32(a.device):
        return model(a, b).to(torch.float64)


__all__ = ["DISTS", "L2Pool2d", "dists", "dists_model"]
