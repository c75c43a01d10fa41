"""``and``: Adversarial Neural Degradation (Luo, Wu, Guo, NeurIPS 2023): ANDNet and ANDGAN.

Every step the strategy makes LR from HR itself (:meth:`AND.degrade`): it re-initialises its
:class:`~blindsr.degrade.neural.NeuralDegradation` to the identity (BlurPool downsampling) with
fresh random matrices, draws the noise maps, runs ``steps`` PGD steps in parameter space that
maximise the restorer's loss inside the scaled-norm ball, and degrades the batch with the result
(clamped to [0, 1], detached). Then it yields the generator update (and, with ``gan_weight > 0``,
the discriminator update). During the attack the generator and discriminator run through
``torch.func.functional_call`` with detached weights and gradients are taken with respect to the
perturbation only, so no network gets a ``.grad`` from it. The first PGD step starts at the
identity point, where the LR is BlurPool(HR) and the gradient has a closed form
(:func:`~blindsr.degrade.neural.identity_gradients`): it never runs the degradation network.

- ANDNet (default params): L1 only.
- ANDGAN: ``perceptual_weight`` (VGG, per-layer weights ``perceptual_layers`` = c_j) and
  ``gan_weight`` (lambda = 0.1 in the paper) with a ``unet`` or ``vgg`` discriminator; start the
  generator from ANDNet with ``model.init``.

Ablations (``perturbation``):

- ``neural``: the paper's adversarial neural degradation.
- ``noise``: adversarial noise only: LR = bicubic(HR) (MATLAB, 8-bit, as the classical baseline)
  plus additive noise found by PGD inside a per-sample L2 ball of radius
  ``noise_rms * sqrt(3 h w)`` (an RMS budget), ``steps`` steps of ``alpha / epsilon`` of that radius
  (the same step-to-radius ratio as the neural attack); no neural network.
- ``random``: synthetic augmentation: the identity network perturbed by a delta drawn uniformly
  from the same ball, without attack (the restorer is not run to make LR).

The defaults are the paper's numbers (epsilon 20, alpha 6, K = 5, factors conv 1 / noise 10 /
slope 50, 64 channels). The paper does not publish the units of its parameter norm; in this
implementation's (conv deviations x sqrt(fan_in), see :class:`~blindsr.degrade.neural.Ball`)
epsilon 20 lets the attack saturate the LR into a flat colour, so ``configs/and/`` sets a
measured smaller radius. ``identity_init: false`` replaces the identity initialisation by Xavier
on every tap.
``attack_batch`` (0: all) runs the neural attack on the first samples only: the perturbation is
shared by the batch, so a sub-batch still estimates its gradient, at a fraction of the cost.
All randomness (matrices, noise maps, random deltas) comes from the strategy's own CPU generator,
seeded from ``seed`` (and the process rank) and checkpointed by :meth:`AND.state_dict`.

What the attack spends its budget on is logged as ``share_conv``, ``share_noise`` and
``share_slope`` (each kind's part of ``||delta||^2`` in the scaled norm). In the first CPU ANDNet
run (``configs/and/andnet.yaml`` at epsilon 0.1) conv weights took 99.97% and noise about
0.01-0.04% from the first steps on: the noise strengths start at 0, and at 0 a zero-mean noise
map gives the loss no expected first-order gradient, so PGD barely moves them (the norm's factor
10 shrinks them further). With the conv taps free (``keep_flat_colour: false``) the adversary
made almost nothing but global colour casts; with flat colour kept (the default, see
:mod:`blindsr.degrade.neural`) it has to act spatially.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from blindsr.errors import BlindSRError
from blindsr.losses.pixel import pixel_loss
from blindsr.schema import SEED_LIMIT, bounded, fail
from blindsr.strategies.base import Strategy, Update, process_generator

VGG16_LAYERS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_3": 1.0, "conv4_3": 1.0, "conv5_3": 1.0}


@dataclass
class ANDParams:
    perturbation: Literal["neural", "noise", "random"] = "neural"
    identity_init: bool = True  # false: Xavier on every tap (ablation)
    channels: int = bounded(64, ge=1)  # width of the degradation network
    # BlurPool binomial taps; None: 4 at even scales, 5 at odd (taps - scale must be even)
    blur_taps: int | None = bounded(None, ge=1, le=7)
    epsilon: float = bounded(20.0, gt=0)  # radius of the ball in the scaled norm
    alpha: float = bounded(6.0, gt=0)  # PGD step (in the scaled norm)
    steps: int = bounded(5, ge=0)  # PGD steps K
    conv_factor: float = bounded(1.0, gt=0)  # scaled-norm factors: larger = that kind costs more
    noise_factor: float = bounded(10.0, gt=0)
    slope_factor: float = bounded(50.0, gt=0)
    conv_units: Literal["fan_in", "raw"] = "fan_in"  # conv deviations x sqrt(fan_in), or raw
    keep_flat_colour: bool = True  # conv deviations sum to 0 over taps: no global colour casts
    noise_rms: float = bounded(0.05, ge=0)  # perturbation noise: RMS budget per sample (0..1)
    attack_batch: int = bounded(0, ge=0)  # samples the neural attack sees (0: the whole batch)
    attack_loss: Literal["full", "pixel"] = "full"  # what the attack maximises
    pixel_loss: Literal["l1", "l2", "charbonnier"] = "l1"
    pixel_weight: float = bounded(1.0, ge=0)
    perceptual_weight: float = bounded(0.0, ge=0)  # ANDGAN: 1
    perceptual_layers: dict[str, float] = field(default_factory=lambda: dict(VGG16_LAYERS))
    perceptual_arch: Literal["vgg16", "vgg19"] = "vgg16"
    perceptual_weights: str | None = None  # VGG weight file (vgg19 needs one)
    gan_weight: float = bounded(0.0, ge=0)  # ANDGAN: 0.1 (lambda)
    gan_type: str = "vanilla"  # vanilla | ragan
    discriminator: str = "unet"  # unet | vgg
    discriminator_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = bounded(0, ge=0, lt=SEED_LIMIT)

    def check(self, path: str) -> None:
        from blindsr.archs.discriminators import DISCRIMINATORS, check_discriminator
        from blindsr.losses.gan import GAN_LOSSES

        if self.gan_type not in GAN_LOSSES:
            raise fail(f"{path}.gan_type", f"must be one of {', '.join(GAN_LOSSES)}, "
                                           f"got {self.gan_type!r}")
        if self.discriminator not in DISCRIMINATORS:
            raise fail(f"{path}.discriminator", f"must be one of {', '.join(DISCRIMINATORS)}, "
                                                f"got {self.discriminator!r}")
        try:
            check_discriminator(self.discriminator, self.discriminator_kwargs)
        except BlindSRError as err:
            raise fail(f"{path}.discriminator_kwargs", str(err)) from None
        if self.discriminator == "realness" and self.discriminator_kwargs.get(
                "num_outcomes", 51) != 1:
            raise fail(f"{path}.discriminator_kwargs", "the realness discriminator gives a "
                       "distribution over outcomes, for RealnessGAN (strategy amgan); set "
                       "num_outcomes: 1 for one logit, as the vanilla and ragan losses need")
        if self.pixel_weight + self.perceptual_weight + self.gan_weight == 0:
            raise fail(f"{path}.pixel_weight", "pixel, perceptual and GAN weights are all 0")


def frozen_call(module: nn.Module, *args: Any) -> Any:
    """``module(*args)`` with detached weights: differentiable with respect to the inputs only,
    so nothing flows into (or is computed for) the module's parameters."""
    params = {n: p.detach() for n, p in module.named_parameters()}
    return functional_call(module, params, args)


def noise_pgd(clean: Tensor, loss_fn: Callable[[Tensor], Tensor], radius: float, step: float,
              steps: int) -> tuple[Tensor, list[Tensor]]:
    """PGD on additive noise: per-sample L2 ball of ``radius``, normalised-gradient steps of
    ``step``; maximises ``loss_fn(clamp(clean + n, 0, 1))``. Returns (noisy LR, losses)."""
    noise = torch.zeros_like(clean)
    losses: list[Tensor] = []
    with torch.enable_grad():
        for _ in range(steps):
            noise.requires_grad_(True)
            loss = loss_fn((clean + noise).clamp(0, 1))
            (grad,) = torch.autograd.grad(loss, noise)
            losses.append(loss.detach())
            with torch.no_grad():
                gn = grad.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, 1, 1, 1)
                noise = noise.detach() + step * grad / gn
                nn_ = noise.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, 1, 1, 1)
                noise = noise * (radius / nn_).clamp(max=1.0)
    return (clean + noise.detach()).clamp(0, 1), losses


class AND(Strategy):
    """Adversarial neural degradation training (see the module docstring)."""

    name = "and"
    Params = ANDParams

    def __init__(self, generator: nn.Module, params: ANDParams, scale: int,
                 device: torch.device) -> None:
        from blindsr.archs.discriminators import build_discriminator
        from blindsr.degrade.neural import Ball, NeuralDegradation
        from blindsr.losses.gan import get_gan_loss

        super().__init__(generator, params, scale, device)
        p = params
        self.rng = process_generator(p.seed)
        self.degradation = NeuralDegradation(scale, p.channels, taps=p.blur_taps)
        self.degradation.to(self.device).requires_grad_(False)
        self.ball = Ball(p.epsilon, p.conv_factor, p.noise_factor, p.slope_factor,
                         p.conv_units, p.keep_flat_colour)
        self.perceptual = None
        if p.perceptual_weight > 0:
            from blindsr.losses.perceptual import PerceptualLoss

            self.perceptual = PerceptualLoss(p.perceptual_layers, p.perceptual_arch,
                                             p.perceptual_weights)
        self.gan = get_gan_loss(p.gan_type) if p.gan_weight > 0 else None
        self.discriminator = None
        if self.gan is not None:
            self.discriminator = build_discriminator(p.discriminator, **p.discriminator_kwargs)
            self.discriminator.to(self.device)

    # -- the Strategy interface --------------------------------------------------------------

    def networks(self) -> dict[str, nn.Module]:
        return {"discriminator": self.discriminator} if self.discriminator is not None else {}

    def default_optim(self) -> dict[str, dict]:
        if self.discriminator is None:
            return {}
        return {"discriminator": {"type": "adam", "lr": 1e-4, "betas": [0.9, 0.99]}}

    def degrades_itself(self) -> bool:
        return True

    def training_step(self, batch: dict[str, Tensor], step: int) -> Iterator[Update]:
        hr, has_hr = batch["hr"], batch["has_hr"]
        plain = batch.get("hr_plain", hr)  # unsharpened where data.usm sharpened the HR
        if not bool(has_hr.all()):
            if not bool(has_hr.any()):
                return  # LR-only samples: nothing to degrade or supervise
            hr, plain = hr[has_hr], plain[has_hr]
        d = self.discriminator
        # D(real) is computed once: a constant for the attack and the generator's relativistic
        # loss, and (with its graph) the real half of the discriminator's update. Its real images
        # are unsharpened, as Real-ESRGAN's (gan_gt_usm: false).
        real = d(plain) if d is not None else None
        real_c = real.detach() if real is not None else None
        lr, logs = self.degrade(hr, real_c)
        self.sample_pair = (lr.detach(), hr.detach())
        sr = self.generator(lr)
        parts = self.generator_losses(sr, hr, real_c)
        loss = sum(parts.values())
        yield Update(loss, ("generator",), {**{k: v.detach() for k, v in parts.items()}, **logs})
        if d is not None:
            fake = d(sr.detach())
            l_d = self.gan.discriminator(real, fake)
            yield Update(l_d, ("discriminator",), {"l_d": l_d.detach(),
                                                   "d_real": real.detach().float().mean(),
                                                   "d_fake": fake.detach().float().mean()})

    def state_dict(self) -> dict:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"rng"}:
            raise BlindSRError(f"strategy 'and': expected state with key 'rng', got {list(state)}")
        self.rng.set_state(state["rng"])

    # -- losses ------------------------------------------------------------------------------

    def generator_losses(self, sr: Tensor, hr: Tensor, real: Tensor | None = None,
                         pixel_only: bool = False) -> dict[str, Tensor]:
        """The weighted generator losses by name (the discriminator runs with frozen weights;
        ``real``: D(hr), needed by relativistic GAN losses)."""
        p = self.params
        out = {f"l_{p.pixel_loss}": p.pixel_weight * pixel_loss(p.pixel_loss, sr.float(),
                                                                hr.float())}
        if pixel_only:
            return out
        if self.perceptual is not None:
            out["l_percep"] = p.perceptual_weight * self.perceptual(sr, hr)
        if self.gan is not None:
            if self.gan.needs_real and real is None:
                with torch.no_grad():
                    real = self.discriminator(hr)
            out["l_gan"] = p.gan_weight * self.gan.generator(frozen_call(self.discriminator, sr),
                                                             real)
        return out

    def _attack_loss(self, hr: Tensor, real: Tensor | None) -> Callable[[Tensor], Tensor]:
        pixel_only = self.params.attack_loss == "pixel"

        def loss_fn(lr: Tensor) -> Tensor:
            sr = frozen_call(self.generator, lr)
            return sum(self.generator_losses(sr, hr, real, pixel_only).values())

        return loss_fn

    # -- making LR ---------------------------------------------------------------------------

    def degrade(self, hr: Tensor, real: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """LR for HR batch ``hr`` (clamped to [0, 1], detached) and scalars to log.

        ``real``: the discriminator's (detached) outputs on ``hr``, when a relativistic GAN loss
        is part of the attacked loss.
        """
        from blindsr.degrade.neural import kind_shares, pgd, random_perturbation, run

        p = self.params
        if p.perturbation == "noise":
            return self._noise_lr(hr, real)
        net = self.degradation
        (net.identity_ if p.identity_init else net.xavier_)(self.rng)
        noise = net.sample_noise(hr, self.rng)
        logs: dict[str, Tensor] = {}
        if p.perturbation == "random":
            params = random_perturbation(net, self.ball, self.rng)
        else:
            n = p.attack_batch or hr.shape[0]
            sub = real[:n] if real is not None else None
            params, losses = pgd(net, hr[:n], self._attack_loss(hr[:n], sub), self.ball,
                                 p.steps, p.alpha, [m[:n] for m in noise],
                                 from_identity=p.identity_init)
            if losses:
                logs = {"attack_first": losses[0], "attack_last": losses[-1]}
                theta = dict(net.named_parameters())
                delta = {k: v - theta[k] for k, v in params.items()}
                shares = kind_shares(delta, self.ball.factors(net))
                logs.update({f"share_{k}": v for k, v in shares.items()})
        with torch.no_grad():
            lr = run(net, params, hr, noise).clamp(0, 1)
        return lr.detach(), logs

    def _noise_lr(self, hr: Tensor, real: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        from blindsr import degrade

        p = self.params
        with torch.no_grad():
            clean = degrade.apply(hr.float(), "bicubic", self.scale).to(hr.dtype)
        if p.steps == 0 or p.noise_rms == 0:
            return clean, {}
        radius = p.noise_rms * math.sqrt(clean[0].numel())
        lr, losses = noise_pgd(clean, self._attack_loss(hr, real), radius,
                               radius * p.alpha / p.epsilon, p.steps)
        return lr, {"attack_first": losses[0], "attack_last": losses[-1]}


__all__ = ["AND", "ANDParams", "frozen_call", "noise_pgd"]
