"""Perceptual training losses on frozen ImageNet networks: VGG feature loss, LPIPS, DISTS.

All take float NCHW RGB batches in [0, 1] (prediction, target), are differentiable with respect
to the prediction, and return a scalar. The networks are frozen, shared per device and held
outside the module (a loss has no parameters and adds nothing to a checkpoint); each applies its
own input normalisation (ImageNet mean/std for VGG and DISTS, the LPIPS scaling layer for LPIPS).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blindsr.errors import BlindSRError
from blindsr.metrics.backbones import IMAGENET_MEAN, IMAGENET_STD, vgg, vgg_layer_names
from blindsr.metrics.dists import dists_model
from blindsr.metrics.lpips import lpips_model

_CRITERIA = {"l1": F.l1_loss, "l2": F.mse_loss, "mse": F.mse_loss}
_DEFAULT_LAYER = {"vgg16": "conv5_3", "vgg19": "conv5_4"}


def _check_pair(pred: Tensor, target: Tensor, name: str) -> None:
    if not (isinstance(pred, Tensor) and isinstance(target, Tensor)):
        raise BlindSRError(f"{name}: expected two tensors")
    if pred.ndim != 4 or pred.shape[1] != 3 or pred.shape != target.shape:
        raise BlindSRError(
            f"{name}: expected two N x 3 x H x W batches of one shape, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )


class PerceptualLoss(nn.Module):
    """Weighted distance between VGG features of prediction and target.

    ``layer_weights`` maps layer names to weights: ``convB_I`` is a convolution's output before
    its ReLU (pre-activation, as ESRGAN), ``reluB_I`` after it (post-activation, as SRGAN),
    ``poolB`` after pooling. Default: ``{"conv5_3": 1}`` for VGG16, ``{"conv5_4": 1}`` for VGG19.
    ``arch``: "vgg16" (weights from the assets unless ``weights`` is given) or "vgg19" (needs
    ``weights``: a torchvision-format state dict file). ``criterion``: "l1" or "l2" (mean over
    elements). Inputs are normalised with the ImageNet mean/std and computed in float32 (autocast
    still applies inside); the target's features carry no gradient.
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float] | None = None,
        arch: str = "vgg16",
        weights: str | os.PathLike[str] | None = None,
        criterion: str = "l1",
    ):
        super().__init__()
        names = vgg_layer_names(arch)
        layer_weights = dict(layer_weights or {_DEFAULT_LAYER[arch]: 1.0})
        unknown = sorted(set(layer_weights) - set(names))
        if unknown:
            raise BlindSRError(
                f"perceptual loss: {arch} has no layer(s) {', '.join(unknown)} (layers: "
                f"conv1_1 ... {names[-2]}, relu*, pool*)"
            )
        if criterion not in _CRITERIA:
            raise BlindSRError(f"perceptual loss: criterion must be l1 or l2, got {criterion!r}")
        if arch == "vgg19" and weights is None:
            vgg(arch)  # raises the clear "VGG19 needs weights" error now, not at the first step
        self.layer_weights = layer_weights
        self.arch, self.weights, self.criterion = arch, weights, criterion
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_pair(pred, target, "perceptual loss")
        net = vgg(self.arch, pred.device, self.weights)
        x, y = pred.float(), target.detach().to(pred.device, torch.float32)
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        layers = list(self.layer_weights)
        fp = net((x - mean) / std, layers)
        with torch.no_grad():
            ft = net((y - mean) / std, layers)
        dist = _CRITERIA[self.criterion]
        return sum(w * dist(fp[k], ft[k]) for k, w in self.layer_weights.items())

    def extra_repr(self) -> str:
        return f"arch={self.arch}, layers={self.layer_weights}, criterion={self.criterion}"


class LPIPSLoss(nn.Module):
    """Mean LPIPS v0.1 over the batch (``net``: "vgg" by default, or "alex")."""

    def __init__(self, net: str = "vgg", weights: str | os.PathLike[str] | None = None):
        super().__init__()
        if net not in ("alex", "vgg"):
            raise BlindSRError(f"LPIPS loss: net must be alex or vgg, got {net!r}")
        self.net, self.weights = net, weights

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_pair(pred, target, "LPIPS loss")
        model = lpips_model(self.net, pred.device, self.weights)
        return model(pred.float(), target.detach().to(pred.device, torch.float32)).mean()


class DISTSLoss(nn.Module):
    """Mean DISTS over the batch."""

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        vgg_weights: str | os.PathLike[str] | None = None,
    ):
        super().__init__()
        self.weights, self.vgg_weights = weights, vgg_weights

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_pair(pred, target, "DISTS loss")
        model = dists_model(pred.device, self.weights, self.vgg_weights)
        return model(pred.float(), target.detach().to(pred.device, torch.float32)).mean()


__all__ = ["DISTSLoss", "LPIPSLoss", "PerceptualLoss"]
