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

- ``realness`` (:class:`RealnessGAN`, Xiangli et al., ICLR 2020; not in ``GAN_LOSSES``: it needs a
  discriminator with ``num_outcomes`` outputs, e.g. ``build_discriminator("realness")``): D
  outputs logits over N outcomes (dim 1), its softmax is a distribution ``D(x)``; anchors ``A1``
  (real) and ``A0`` (fake); D: ``KL(A1 || D(real)) + KL(A0 || D(fake))``. G objective
  (``generator_objective``): ``paper`` ``KL(D(real) || D(fake)) - KL(A0 || D(fake))`` (the
  paper's Eq. 19, default), ``relative`` ``KL(D(real) || D(fake))`` (the official code's
  default), ``anchor`` ``KL(A1 || D(fake)) - KL(A0 || D(fake))``. D(real) enters G's loss as a
  constant. Anchors are discretised densities on N bin centres of [-1, 1] (deterministic, not
  histograms of random draws as the official code): ``gaussian`` N(0, (1/3)^2) and ``uniform``.
  ``real_anchor`` says which is A1 (default ``gaussian``; the official code's train.py uses the
  uniform one for real images, so ``real_anchor="uniform"`` reproduces it).

Values are means over every element; no weight is applied (the caller multiplies).
"""

from __future__ import annotations

from typing import ClassVar

import torch
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


def realness_anchor(shape: str, num_outcomes: int) -> Tensor:
    """A discretised anchor distribution (num_outcomes,): ``gaussian`` or ``uniform``."""
    if shape == "uniform":
        return torch.full((num_outcomes,), 1.0 / num_outcomes, dtype=torch.float64)
    if shape == "gaussian":
        centres = torch.linspace(-1, 1, num_outcomes, dtype=torch.float64)
        density = torch.exp(-0.5 * (centres * 3) ** 2)
        return density / density.sum()
    raise BlindSRError(f"realness anchor must be gaussian or uniform, got {shape!r}")


def _kl(p: Tensor, log_q: Tensor) -> Tensor:
    """Mean over samples (and any dims after 1) of ``KL(p || q)`` over dim 1."""
    return (torch.xlogy(p, p) - p * log_q).sum(dim=1).mean()


class RealnessGAN(GANLoss):
    """RealnessGAN: D outputs a distribution over ``num_outcomes`` outcomes (see the module
    docstring for the objectives and anchors)."""

    name = "realness"
    OBJECTIVES: ClassVar[tuple[str, ...]] = ("paper", "relative", "anchor")

    def __init__(self, num_outcomes: int = 51, generator_objective: str = "paper",
                 real_anchor: str = "gaussian") -> None:
        if isinstance(num_outcomes, bool) or not isinstance(num_outcomes, int) \
                or num_outcomes < 2:
            raise BlindSRError(f"realness GAN: num_outcomes must be an integer >= 2, "
                               f"got {num_outcomes!r}")
        if generator_objective not in self.OBJECTIVES:
            raise BlindSRError(f"realness GAN: generator_objective must be one of "
                               f"{', '.join(self.OBJECTIVES)}, got {generator_objective!r}")
        fake_anchor = {"gaussian": "uniform", "uniform": "gaussian"}.get(real_anchor)
        if fake_anchor is None:
            raise BlindSRError(f"realness GAN: real_anchor must be gaussian or uniform, "
                               f"got {real_anchor!r}")
        self.num_outcomes = num_outcomes
        self.objective = generator_objective
        self.needs_real = generator_objective != "anchor"
        self.a1 = realness_anchor(real_anchor, num_outcomes).float()
        self.a0 = realness_anchor(fake_anchor, num_outcomes).float()

    def _log_probs(self, logits: Tensor, who: str) -> Tensor:
        if logits.ndim < 2 or logits.shape[1] != self.num_outcomes:
            raise BlindSRError(f"realness GAN: D({who}) must have {self.num_outcomes} outcomes "
                               f"along dim 1, got shape {tuple(logits.shape)}")
        return F.log_softmax(logits.float(), dim=1)

    def anchor(self, which: int, like: Tensor) -> Tensor:
        """Anchor ``A1`` (which=1) or ``A0`` (which=0) shaped to broadcast against ``like``."""
        a = (self.a1 if which else self.a0).to(like.device)
        return a.view(1, -1, *([1] * (like.ndim - 2)))

    def generator(self, fake: Tensor, real: Tensor | None = None) -> Tensor:
        log_fake = self._log_probs(fake, "fake")
        away = _kl(self.anchor(0, log_fake), log_fake)
        if self.objective == "anchor":
            return _kl(self.anchor(1, log_fake), log_fake) - away
        p_real = self._log_probs(self._need_real(real), "real").detach().exp()
        if p_real.shape[0] != log_fake.shape[0]:
            p_real = p_real.mean(dim=0, keepdim=True)  # unpaired batches: the mean D(real)
        toward = _kl(p_real, log_fake)
        return toward - away if self.objective == "paper" else toward

    def discriminator(self, real: Tensor, fake: Tensor) -> Tensor:
        log_real = self._log_probs(real, "real")
        log_fake = self._log_probs(fake, "fake")
        return _kl(self.anchor(1, log_real), log_real) + _kl(self.anchor(0, log_fake), log_fake)


GAN_LOSSES: dict[str, type[GANLoss]] = {cls.name: cls for cls in (VanillaGAN,
                                                                   RelativisticAverageGAN)}


def get_gan_loss(name: str) -> GANLoss:
    """The GAN loss called ``name`` (see ``GAN_LOSSES``)."""
    if name not in GAN_LOSSES:
        raise BlindSRError(f"unknown GAN loss {name!r}; known: {', '.join(GAN_LOSSES)}")
    return GAN_LOSSES[name]()


__all__ = ["GAN_LOSSES", "GANLoss", "RealnessGAN", "RelativisticAverageGAN", "VanillaGAN",
           "get_gan_loss", "realness_anchor"]
