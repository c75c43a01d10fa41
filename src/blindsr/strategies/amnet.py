"""``amnet``: non-blind training of AMNet (Hui et al., CVPR 2021) and supervised pretraining of its
kernel predictor, on the kernel-code degradation.

Every step the strategy makes LR from HR itself (:meth:`AMNetTraining.degrade`): one sigma per
sample, uniform in the sigma range (own CPU generator seeded from ``seed`` and the process rank,
checkpointed by :meth:`~AMNetTraining.state_dict`), LR = 21 x 21 isotropic Gaussian blur + MATLAB
bicubic (:func:`blindsr.degrade.kernel_code.blur_downsample`; ``quantize`` rounds to 8-bit as
the ``iso<sigma>`` test presets do). Then one generator update of

    pixel_weight * pixel(G(LR, code_true), HR)
    + predictor_weight * l1/l2(G.predictor(LR), code_true)

The renderer is fed the TRUE code (non-blind); the predictor learns the code from the LR alone
(its gradient never reaches the renderer and vice versa). ``train_renderer: false`` or
``train_predictor: false`` (or ``predictor_weight: 0``) drops one term, so the two can be trained
separately. ``coder``: ``sigma`` (1-D code in [0, 1]) or ``pca`` (``code_dim``-D, ``code_dim``
>= 2: a 1-D code is the sigma code); the model's ``code_dim`` must match. ``sigma_range``
defaults to IKC's range for the scale (x2 [0.2, 2], x3 [0.2, 3], x4 [0.2, 4]). Logged:
``l_<pixel>``, ``l_code`` and ``sigma_err`` (mean absolute sigma error of the predictor's decoded
code).

At construction the strategy records its coder's units in the model
(:meth:`~blindsr.archs.amnet.AMNet.record_code_units`: ``sigma_range``, ``code_box``,
``default_code`` buffers), so that the saved model says which codes it takes. A model that
already has units (``model.init`` of an earlier amnet / amgan run) must have the same range:
another one is refused with a one-line error (its codes would silently change meaning).

The ``amgan`` strategy (:mod:`blindsr.strategies.amgan`) builds on this class.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blindsr.errors import BlindSRError
from blindsr.losses.pixel import pixel_loss
from blindsr.schema import SEED_LIMIT, bounded, fail
from blindsr.strategies.base import Strategy, Update, process_generator


@dataclass
class KernelDegradationParams:
    """Settings of the kernel-code degradation shared by ``amnet`` and ``amgan``."""

    coder: Literal["sigma", "pca"] = "sigma"
    code_dim: int = bounded(10, ge=1, le=256)  # PCA only
    sigma_range: list[float] | None = None  # [lo, hi]; default: IKC's range for the scale
    quantize: bool = True  # 8-bit LR, as the iso<sigma> presets
    seed: int = bounded(0, ge=0, lt=SEED_LIMIT)

    def check(self, path: str) -> None:
        r = self.sigma_range
        if r is not None and (len(r) != 2 or not 0 < r[0] < r[1]):
            raise fail(f"{path}.sigma_range", f"must be [lo, hi] with 0 < lo < hi, got {r}")
        if self.coder == "pca" and self.code_dim < 2:
            raise fail(f"{path}.code_dim", "PCA codes need code_dim >= 2 (a 1-D code is the "
                                           "sigma code: use coder sigma)")


@dataclass
class AMNetParams(KernelDegradationParams):
    pixel_loss: Literal["l1", "l2", "charbonnier"] = "l1"
    pixel_weight: float = bounded(1.0, gt=0)
    predictor_loss: Literal["l1", "l2"] = "l1"
    predictor_weight: float = bounded(1.0, ge=0)  # 0: the predictor is not trained
    train_renderer: bool = True
    train_predictor: bool = True

    def check(self, path: str) -> None:
        super().check(path)
        if not self.train_renderer and not (self.train_predictor and self.predictor_weight > 0):
            raise fail(f"{path}.train_renderer", "false, and the predictor is not trained either "
                                                 "(train_predictor false or predictor_weight 0)")


def code_loss(kind: str, pred: Tensor, target: Tensor) -> Tensor:
    """L1 or L2 (``kind``) between predicted and true codes, in float32."""
    fn = F.l1_loss if kind == "l1" else F.mse_loss
    return fn(pred.float(), target.float())


class AMNetTraining(Strategy):
    """Non-blind AMNet + kernel-predictor training (see the module docstring)."""

    name = "amnet"
    Params = AMNetParams

    def __init__(self, generator: nn.Module, params: KernelDegradationParams, scale: int,
                 device: torch.device) -> None:
        from blindsr.degrade.kernel_code import KernelCoder, sigma_range_for

        super().__init__(generator, params, scale, device)
        p = params
        if getattr(generator, "arch_name", None) != "amnet":
            raise BlindSRError(f"strategy {self.name!r} needs model.arch amnet, got "
                               f"{getattr(generator, 'arch_name', type(generator).__name__)!r}")
        lo_hi = tuple(p.sigma_range) if p.sigma_range is not None else sigma_range_for(scale)
        self.coder = KernelCoder(p.coder, p.code_dim, lo_hi)
        if self.coder.code_dim != generator.code_dim:
            raise BlindSRError(f"strategy {self.name!r}: the {p.coder} coder gives "
                               f"{self.coder.code_dim}-D codes, the model takes "
                               f"code_dim={generator.code_dim} (set model.kwargs.code_dim)")
        if self.trains_predictor() and generator.predictor is None:
            raise BlindSRError(f"strategy {self.name!r}: the model has no predictor "
                               "(predictor_feat=0); set predictor_weight 0 or give it one")
        self.record_units(generator)
        self.rng = process_generator(p.seed)

    def record_units(self, generator: nn.Module) -> None:
        """Record the coder's units in the model, refusing a model trained on another range."""
        if generator.code_units_recorded():
            had = generator.kernel_coder().sigma_range
            if not all(math.isclose(a, b, rel_tol=1e-5) for a, b in
                       zip(had, self.coder.sigma_range, strict=True)):
                raise BlindSRError(f"strategy {self.name!r}: the model was trained on sigma range "
                                   f"{list(had)}, the strategy's is "
                                   f"{list(self.coder.sigma_range)} (set "
                                   f"strategy.params.sigma_range: {list(had)})")
        generator.record_code_units(self.coder)

    def trains_predictor(self) -> bool:
        """Whether a step includes the predictor's supervised loss."""
        p = self.params
        return getattr(p, "train_predictor", True) and p.predictor_weight > 0

    # -- the Strategy interface --------------------------------------------------------------

    def degrades_itself(self) -> bool:
        return True

    def training_step(self, batch: dict[str, Tensor], step: int) -> Iterator[Update]:
        hr = self.hr_of(batch)
        if hr is None:
            return
        lr, sigma, code = self.degrade(hr)
        hr = self.crop(hr)
        self.sample_pair = (lr.detach(), hr.detach())
        p = self.params
        parts: dict[str, Tensor] = {}
        if p.train_renderer:
            sr = self.generator(lr, code)
            parts[f"l_{p.pixel_loss}"] = p.pixel_weight * pixel_loss(p.pixel_loss, sr.float(),
                                                                     hr.float())
        logs = self.predictor_terms(lr, sigma, code, parts)
        loss = sum(parts.values())
        yield Update(loss, ("generator",), {**{k: v.detach() for k, v in parts.items()}, **logs})

    def state_dict(self) -> dict:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"rng"}:
            raise BlindSRError(f"strategy {self.name!r}: expected state with key 'rng', "
                               f"got {list(state)}")
        self.rng.set_state(state["rng"])

    # -- pieces ------------------------------------------------------------------------------

    @staticmethod
    def hr_of(batch: dict[str, Tensor], key: str = "hr") -> Tensor | None:
        """The HR samples of ``batch`` (None when it has none); ``key="hr_plain"``: their
        unsharpened versions where ``data.usm`` sharpened the HR (else the HR itself)."""
        hr, has_hr = batch.get(key, batch["hr"]), batch["has_hr"]
        if bool(has_hr.all()):
            return hr
        return hr[has_hr] if bool(has_hr.any()) else None

    def crop(self, hr: Tensor) -> Tensor:
        """HR cropped to a multiple of the scale (as the degradation crops it)."""
        h, w = hr.shape[-2:]
        return hr[..., : h - h % self.scale, : w - w % self.scale]

    def degrade(self, hr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(LR, sigmas (N,), true codes (N, code_dim)) for an HR batch; LR is detached."""
        from blindsr.degrade.kernel_code import blur_downsample, sample_sigma

        sigma = sample_sigma(hr.shape[0], self.rng, hr.device, self.coder.sigma_range)
        with torch.no_grad(), torch.autocast(hr.device.type, enabled=False):  # exact 8-bit LR
            lr = blur_downsample(hr.float(), sigma, self.scale, quantize=self.params.quantize)
        code = self.coder.encode(sigma).to(hr.device)
        return lr.to(hr.dtype), sigma, code

    def predictor_terms(self, lr: Tensor, sigma: Tensor, code: Tensor,
                        parts: dict[str, Tensor]) -> dict[str, Tensor]:
        """Add the predictor's weighted code loss to ``parts``; return extra logs."""
        if not self.trains_predictor():
            return {}
        p = self.params
        pred = self.generator.predictor(lr)
        parts["l_code"] = p.predictor_weight * code_loss(p.predictor_loss, pred, code)
        with torch.no_grad():
            err = (self.coder.decode(pred.detach().float()) - sigma).abs().mean()
        return {"sigma_err": err}


__all__ = ["AMNetParams", "AMNetTraining", "KernelDegradationParams", "code_loss"]
