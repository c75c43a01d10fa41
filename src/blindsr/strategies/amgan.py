"""``amgan``: AMGAN and AMGAN* (Hui et al., CVPR 2021, supplementary): AMNet fine-tuned with
perceptual and adversarial losses on the kernel-code degradation.

Same self-degradation as ``amnet`` (:mod:`blindsr.strategies.amnet`: one sigma per sample, the
renderer fed the TRUE code, non-blind). Generator loss, every weight a param:

    pixel_weight (1) * L1 + vgg_weight (15) * L_vgg + gan_weight (0.01) * L_gan
    + dists_weight (10) * L_DISTS [+ predictor_weight (0) * code loss]

- ``L_vgg``: per-element L1 (mean over elements) between the relu1_1, relu2_1, relu3_1, relu4_1
  and relu5_1 activations of SR and HR, each weighted ``1e3 / C_l^2`` (C_l = 64, 128, 256, 512,
  512). VGG16 from the verified assets by default (``blindsr assets fetch vgg16``); VGG19, the
  usual choice, when ``vgg_weights`` names a torchvision-format VGG19 file.
- ``L_DISTS``: :class:`~blindsr.losses.perceptual.DISTSLoss` (DISTS weights from the assets).
- ``gan: realness`` (AMGAN): RealnessGAN (:class:`~blindsr.losses.gan.RealnessGAN`) with a
  ``realness`` discriminator of ``num_outcomes`` (51) outputs. The supplementary's exact
  L_realness is not available to us; the default ``generator_objective: paper`` is RealnessGAN's
  Eq. 19, ``KL(D(HR) || D(SR)) - KL(A0 || D(SR))`` (the HR and SR of a sample are paired).
  Anchors: A1 (real) Gaussian-shaped, A0 (fake) uniform-shaped (``real_anchor``).
- ``gan: relativistic`` (AMGAN*): the relativistic average GAN
  (:class:`~blindsr.losses.gan.RelativisticAverageGAN`) with the same discriminator trunk and
  one logit.

The discriminator is an extra network (optimiser ``discriminator``, Adam 1e-4 by default); its
update (``KL(A1 || D(HR)) + KL(A0 || D(SR))`` for realness) follows the generator's in the same
iteration, on the detached SR. The generator's GAN term sees the discriminator with frozen
weights. Spectral norm: D(HR) runs in train mode (one power iteration per training step); the
generator's pass through D and D(SR) for D's loss run in eval mode (mode restored after), so
they do not advance the u / v estimates and D(HR) and D(SR) in D's loss use the same one.
Start from an ``amnet`` model with ``model.init`` (its recorded sigma range must match).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from blindsr.errors import BlindSRError
from blindsr.losses.pixel import pixel_loss
from blindsr.schema import bounded, fail
from blindsr.strategies.amnet import AMNetTraining, KernelDegradationParams
from blindsr.strategies.base import Update

VGG_CHANNELS = {"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}
VGG_LAYERS = {name: 1e3 / c**2 for name, c in VGG_CHANNELS.items()}


@dataclass
class AMGANParams(KernelDegradationParams):
    pixel_loss: Literal["l1", "l2", "charbonnier"] = "l1"
    pixel_weight: float = bounded(1.0, ge=0)
    vgg_weight: float = bounded(15.0, ge=0)
    vgg_weights: str | None = None  # a VGG19 weight file; None: VGG16 from the assets
    dists_weight: float = bounded(10.0, ge=0)
    gan: Literal["realness", "relativistic"] = "realness"
    gan_weight: float = bounded(0.01, ge=0)
    num_outcomes: int = bounded(51, ge=2)  # realness only
    generator_objective: Literal["paper", "relative", "anchor"] = "paper"
    real_anchor: Literal["gaussian", "uniform"] = "gaussian"
    discriminator_kwargs: dict[str, Any] = field(default_factory=dict)  # num_feat, num_down
    predictor_loss: Literal["l1", "l2"] = "l1"
    predictor_weight: float = bounded(0.0, ge=0)  # >0: keep training the predictor too

    def check(self, path: str) -> None:
        super().check(path)
        from blindsr.archs.discriminators import check_discriminator

        if "num_outcomes" in self.discriminator_kwargs:
            raise fail(f"{path}.discriminator_kwargs", "set num_outcomes as a strategy param")
        try:
            check_discriminator("realness", self.discriminator_kwargs)
        except BlindSRError as err:
            raise fail(f"{path}.discriminator_kwargs", str(err)) from None
        weights = (self.pixel_weight, self.vgg_weight, self.dists_weight, self.gan_weight)
        if sum(weights) == 0:
            raise fail(f"{path}.pixel_weight", "pixel, VGG, DISTS and GAN weights are all 0")


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside the block; its previous mode restored after."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


class AMGAN(AMNetTraining):
    """AMGAN (RealnessGAN) / AMGAN* (relativistic GAN) fine-tuning; see the module docstring."""

    name = "amgan"
    Params = AMGANParams

    def __init__(self, generator: nn.Module, params: AMGANParams, scale: int,
                 device: torch.device) -> None:
        from blindsr.archs.discriminators import build_discriminator
        from blindsr.losses.gan import RealnessGAN, RelativisticAverageGAN
        from blindsr.losses.perceptual import DISTSLoss, PerceptualLoss

        super().__init__(generator, params, scale, device)
        p = params
        self.perceptual = None
        if p.vgg_weight > 0:
            arch = "vgg19" if p.vgg_weights else "vgg16"
            self.perceptual = PerceptualLoss(VGG_LAYERS, arch, p.vgg_weights, criterion="l1")
        self.dists = DISTSLoss() if p.dists_weight > 0 else None
        if p.gan == "realness":
            self.gan = RealnessGAN(p.num_outcomes, p.generator_objective, p.real_anchor)
            outcomes = p.num_outcomes
        else:
            self.gan, outcomes = RelativisticAverageGAN(), 1
        self.discriminator = build_discriminator("realness", num_outcomes=outcomes,
                                                 **p.discriminator_kwargs).to(self.device)

    # -- the Strategy interface --------------------------------------------------------------

    def networks(self) -> dict[str, nn.Module]:
        return {"discriminator": self.discriminator}

    def default_optim(self) -> dict[str, dict]:
        return {"discriminator": {"type": "adam", "lr": 1e-4, "betas": [0.9, 0.99]}}

    def training_step(self, batch: dict[str, Tensor], step: int) -> Iterator[Update]:
        hr = self.hr_of(batch)
        if hr is None:
            return
        lr, sigma, code = self.degrade(hr)
        hr = self.crop(hr)
        self.sample_pair = (lr.detach(), hr.detach())
        d = self.discriminator
        real = d(self.crop(self.hr_of(batch, "hr_plain")))  # unsharpened, as Real-ESRGAN's;
        # its graph serves the discriminator's update below
        sr = self.generator(lr, code)
        parts = self.generator_losses(sr, hr, real.detach())
        logs = self.predictor_terms(lr, sigma, code, parts)
        loss = sum(parts.values())
        yield Update(loss, ("generator",), {**{k: v.detach() for k, v in parts.items()}, **logs})
        with eval_mode(d):  # the spectral-norm estimate of D(real)
            fake = d(sr.detach())
        l_d = self.gan.discriminator(real, fake)
        yield Update(l_d, ("discriminator",), {"l_d": l_d.detach()})

    # -- losses ------------------------------------------------------------------------------

    def generator_losses(self, sr: Tensor, hr: Tensor, real: Tensor | None) -> dict[str, Tensor]:
        """The weighted generator losses by name (``real``: D(HR), detached)."""
        from blindsr.strategies.and_ import frozen_call

        p = self.params
        out: dict[str, Tensor] = {}
        if p.pixel_weight > 0:
            out[f"l_{p.pixel_loss}"] = p.pixel_weight * pixel_loss(p.pixel_loss, sr.float(),
                                                                   hr.float())
        if self.perceptual is not None:
            out["l_vgg"] = p.vgg_weight * self.perceptual(sr, hr)
        if self.dists is not None:
            out["l_dists"] = p.dists_weight * self.dists(sr, hr)
        if p.gan_weight > 0:
            if real is None and self.gan.needs_real:
                raise BlindSRError("amgan: the GAN loss needs D(HR)")
            with eval_mode(self.discriminator):  # leaves spectral-norm u / v alone
                fake = frozen_call(self.discriminator, sr)
            out["l_gan"] = p.gan_weight * self.gan.generator(fake, real)
        return out


__all__ = ["AMGAN", "AMGANParams", "VGG_LAYERS", "eval_mode"]
