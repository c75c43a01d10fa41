"""Adversarial (GAN) losses on raw discriminator outputs (logits of any shape).

Each loss is a :class:`GANLoss` with two methods, ``generator(fake, real)`` and
``discriminator(real, fake)``; a new type joins by subclassing it and adding its class to
``GAN_LOSSES``. ``needs_real`` says whether the generator's loss uses the discriminator's output on
real images (relativistic losses): callers may skip computing it otherwise.

- ``vanilla``: the non-saturating GAN (Goodfellow 2014), binary cross-entropy on logits:
  G: ``-log sigmoid(D(fake))``; D: ``-log sigmoid(D(real)) - log(1 - sigmoid(D(fake)))``.
- ``ragan``: relativistic average GAN (Jolicoeur-Martineau 2018; ESRGAN), with
  ``Ra(a, b) = a - mean(b)`` (the mean over every element of the other batch):
  G: ``(BCE(Ra(real, fake), 0) + BCE(Ra(fake, real), 1)) / 2``;
  D: ``(BCE(Ra(real, fake), 1) + BCE(Ra(fake, real), 0)) / 2``, with gradients through both
  means (the exact gradient of this loss).

Values are means over every element; no weight is applied (the caller multiplies).
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from blindsr.errors import BlindSRError


def _bce_ones(logits: Tensor) -> Tensor:
    """Mean ``-log sigmoid(logits)`` (binary cross-entropy against 1), in float32."""
    return F.softplus(-logits.float()).mean()


def _bce_zeros(logits: Tensor) -> Tensor:
    """Mean ``-log(1 - sigmoid(logits))`` (binary cross-entropy against 0), in float32."""
    return F.softplus(logits.float()).mean()


class GANLoss:
    """Base class of the adversarial losses."""

    name: ClassVar[str] = ""
    needs_real: ClassVar[bool] = False

    def generator(self, fake: Tensor, real: Tensor | None = None) -> Tensor:
        """The generator's loss from D's outputs on generated (and, if needed, real) images."""
        raise NotImplementedError

    def discriminator(self, real: Tensor, fake: Tensor) -> Tensor:
        """The discriminator's loss from its outputs on real and generated images."""
        raise NotImplementedError

    def _need_real(self, real: Tensor | None) -> Tensor:
        if real is None:
            raise BlindSRError(f"{self.name} GAN loss: the generator's loss needs D(real) too")
        return real


class VanillaGAN(GANLoss):
    """Non-saturating GAN with binary cross-entropy on logits."""

    name = "vanilla"
    needs_real = False

    def generator(self, fake: Tensor, real: Tensor | None = None) -> Tensor:
        return _bce_ones(fake)

    def discriminator(self, real: Tensor, fake: Tensor) -> Tensor:
        return _bce_ones(real) + _bce_zeros(fake)


class RelativisticAverageGAN(GANLoss):
    """Relativistic average GAN (ESRGAN's)."""

    name = "ragan"
    needs_real = True

    def generator(self, fake: Tensor, real: Tensor | None = None) -> Tensor:
        real = self._need_real(real).float()
        fake = fake.float()
        return 0.5 * (_bce_zeros(real - fake.mean()) + _bce_ones(fake - real.mean()))

    def discriminator(self, real: Tensor, fake: Tensor) -> Tensor:
        real, fake = real.float(), fake.float()
        return 0.5 * (_bce_ones(real - fake.mean()) + _bce_zeros(fake - real.mean()))


GAN_LOSSES: dict[str, type[GANLoss]] = {cls.name: cls for cls in (VanillaGAN,
                                                                   RelativisticAverageGAN)}


def get_gan_loss(name: str) -> GANLoss:
    """The GAN loss called ``name`` (see ``GAN_LOSSES``)."""
    if name not in GAN_LOSSES:
        raise BlindSRError(f"unknown GAN loss {name!r}; known: {', '.join(GAN_LOSSES)}")
    return GAN_LOSSES[name]()


__all__ = ["GAN_LOSSES", "GANLoss", "RelativisticAverageGAN", "VanillaGAN", "get_gan_loss"]
