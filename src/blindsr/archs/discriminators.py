"""Discriminators for GAN training (not SR generators: they are not in ``archs.ARCHS``).

- ``unet``: :class:`UNetDiscriminatorSN`, a U-Net with spectral normalisation that judges every
  pixel (Real-ESRGAN's design): three stride-2 downsampling convs, three bilinear upsampling
  stages with skip additions, two refining convs; output (N, 1, H, W) logits. H and W must be
  multiples of 8.
- ``vgg``: :class:`VGGStyleDiscriminator`, ESRGAN's VGG-style classifier: five stages of
  [3x3 conv, 4x4 stride-2 conv] with batch norm, then two linear layers; output (N, 1) logits for
  inputs of exactly ``input_size`` (a multiple of 32).

- ``realness``: :class:`RealnessDiscriminator`, a plain strided-conv classifier for any input size:
  a 3x3 conv, ``num_down`` spectral-normalised 4x4 stride-2 convs (widths doubling from
  ``num_feat``, capped at 8x), a 3x3 conv to ``num_outcomes`` channels and global average
  pooling; output (N, num_outcomes) logits: a distribution over outcomes for RealnessGAN (51),
  or one logit (``num_outcomes=1``) for the other GAN losses (AMGAN and AMGAN*).

``build_discriminator(name, **kwargs)`` builds one by name with plain-number arguments.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from blindsr.errors import BlindSRError


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


def _check_batch(x: Tensor, name: str) -> None:
    if x.ndim != 4:
        raise BlindSRError(f"{name} expects an N,C,H,W batch, got shape {tuple(x.shape)}")


class UNetDiscriminatorSN(nn.Module):
    """Per-pixel U-Net discriminator with spectral-normalised convs."""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64,
                 skip_connection: bool = True) -> None:
        super().__init__()
        nf = num_feat
        self.skip_connection = skip_connection

        def sn(cin: int, cout: int, k: int, stride: int = 1) -> nn.Module:
            return spectral_norm(nn.Conv2d(cin, cout, k, stride, padding=1, bias=False))

        self.conv_in = nn.Conv2d(num_in_ch, nf, 3, padding=1)
        self.down = nn.ModuleList([sn(nf, 2 * nf, 4, 2), sn(2 * nf, 4 * nf, 4, 2),
                                   sn(4 * nf, 8 * nf, 4, 2)])
        self.up = nn.ModuleList([sn(8 * nf, 4 * nf, 3), sn(4 * nf, 2 * nf, 3), sn(2 * nf, nf, 3)])
        self.refine = nn.ModuleList([sn(nf, nf, 3), sn(nf, nf, 3)])
        self.conv_out = nn.Conv2d(nf, 1, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        _check_batch(x, "UNetDiscriminatorSN")
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise BlindSRError(f"UNetDiscriminatorSN needs H and W multiples of 8, got "
                               f"{x.shape[-2]}x{x.shape[-1]}")
        feats = [_lrelu(self.conv_in(x))]
        for conv in self.down:
            feats.append(_lrelu(conv(feats[-1])))
        y = feats.pop()
        for conv in self.up:
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            y = _lrelu(conv(y))
            skip = feats.pop()
            if self.skip_connection:
                y = y + skip
        for conv in self.refine:
            y = _lrelu(conv(y))
        return self.conv_out(y)


class VGGStyleDiscriminator(nn.Module):
    """ESRGAN-style VGG classifier for ``input_size`` x ``input_size`` inputs."""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, input_size: int = 128) -> None:
        super().__init__()
        if input_size < 32 or input_size % 32:
            raise BlindSRError(f"VGGStyleDiscriminator: input_size must be a positive multiple "
                               f"of 32, got {input_size}")
        self.input_size = input_size
        widths = [num_feat, 2 * num_feat, 4 * num_feat, 8 * num_feat, 8 * num_feat]
        layers: list[nn.Module] = []
        cin = num_in_ch
        for i, c in enumerate(widths):
            first = i == 0  # the first conv has a bias and no batch norm
            layers += [nn.Conv2d(cin, c, 3, 1, 1, bias=first)]
            layers += [] if first else [nn.BatchNorm2d(c)]
            layers += [nn.LeakyReLU(0.2), nn.Conv2d(c, c, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(c), nn.LeakyReLU(0.2)]
            cin = c
        self.features = nn.Sequential(*layers)
        side = input_size // 32
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * side * side, 100),
                                  nn.LeakyReLU(0.2), nn.Linear(100, 1))

    def forward(self, x: Tensor) -> Tensor:
        _check_batch(x, "VGGStyleDiscriminator")
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise BlindSRError(f"VGGStyleDiscriminator(input_size={self.input_size}) got "
                               f"{x.shape[-2]}x{x.shape[-1]} inputs; set input_size to the "
                               "training patch")
        return self.head(self.features(x))


class RealnessDiscriminator(nn.Module):
    """Strided-conv discriminator with ``num_outcomes`` globally pooled logits."""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, num_outcomes: int = 51,
                 num_down: int = 4) -> None:
        super().__init__()
        for name, value in (("num_in_ch", num_in_ch), ("num_feat", num_feat),
                            ("num_outcomes", num_outcomes), ("num_down", num_down)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BlindSRError(f"RealnessDiscriminator: {name} must be a positive integer, "
                                   f"got {value!r}")
        self.num_outcomes, self.num_down = num_outcomes, num_down
        widths = [num_feat * min(2 ** i, 8) for i in range(num_down + 1)]
        self.conv_in = nn.Conv2d(num_in_ch, widths[0], 3, 1, 1)
        self.down = nn.ModuleList(
            spectral_norm(nn.Conv2d(widths[i], widths[i + 1], 4, 2, 1)) for i in range(num_down))
        self.conv_out = nn.Conv2d(widths[-1], num_outcomes, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        _check_batch(x, "RealnessDiscriminator")
        if min(x.shape[-2:]) < 2 ** self.num_down:
            raise BlindSRError(f"RealnessDiscriminator(num_down={self.num_down}) needs inputs of "
                               f"at least {2 ** self.num_down} pixels, got "
                               f"{x.shape[-2]}x{x.shape[-1]}")
        y = _lrelu(self.conv_in(x))
        for conv in self.down:
            y = _lrelu(conv(y))
        return self.conv_out(y).mean(dim=(-2, -1))


DISCRIMINATORS: dict[str, type[nn.Module]] = {"unet": UNetDiscriminatorSN,
                                              "vgg": VGGStyleDiscriminator,
                                              "realness": RealnessDiscriminator}


def check_discriminator(name: str, kwargs: dict[str, Any]) -> None:
    """A one-line error for an unknown discriminator, an unknown argument or a bad value
    (widths and sizes are positive integers; the images judged are RGB)."""
    if name not in DISCRIMINATORS:
        raise BlindSRError(f"unknown discriminator {name!r}; known: {', '.join(DISCRIMINATORS)}")
    params = inspect.signature(DISCRIMINATORS[name].__init__).parameters
    allowed = [p for p in params if p != "self"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise BlindSRError(f"discriminator {name}: unknown argument(s) {', '.join(unknown)}; "
                           f"allowed: {', '.join(allowed)}")
    for key, value in kwargs.items():
        if isinstance(params[key].default, bool):
            if not isinstance(value, bool):
                raise BlindSRError(f"discriminator {name}: {key} must be true or false, got "
                                   f"{value!r}")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BlindSRError(f"discriminator {name}: {key} must be a positive integer, got "
                               f"{value!r}")
    if kwargs.get("num_in_ch", 3) != 3:
        raise BlindSRError(f"discriminator {name}: num_in_ch must be 3 (it judges RGB images), "
                           f"got {kwargs['num_in_ch']}")


def build_discriminator(name: str, **kwargs: Any) -> nn.Module:
    """Discriminator ``name`` (``unet``, ``vgg`` or ``realness``) with constructor ``kwargs``
    (checked by :func:`check_discriminator`)."""
    check_discriminator(name, kwargs)
    return DISCRIMINATORS[name](**kwargs)


__all__ = ["DISCRIMINATORS", "RealnessDiscriminator", "UNetDiscriminatorSN",
           "VGGStyleDiscriminator", "build_discriminator", "check_discriminator"]
