"""Rewards for reinforcement learning on image quality: one float per sample, higher is better.

A :class:`Reward` maps ``(sr, hr | None, lr)`` (float NCHW RGB in [0, 1]) to a float32 tensor of
shape ``(N,)`` on ``sr``'s device, computed under ``torch.no_grad`` (a reward need not be
differentiable). :func:`get_reward` resolves a spec:

- ``"neg_niqe"`` (default; no reference needed): ``-NIQE(sr)`` with :func:`blindsr.metrics.niqe`
  (MATLAB conventions, gray). NIQE works on whole 96x96 blocks (and 48x48 ones at half scale):
  SR images must be at least **96x96** (LR crops of 24x24 at x4); pixels past the last whole
  block are ignored. With one block per image the image's own feature covariance is zero (one
  sample), so the score is a distance under the pristine covariance only: noisier than on large
  images but still ranked by naturalness. 192x192 (4 blocks) gives steadier rewards. A flat
  image has no finite NIQE: its reward is NaN (callers drop non-finite rewards).
  Batched: one call scores the whole batch (~12 ms per 96x96 image on one CPU core).
- ``"psnr"`` (needs HR): PSNR-Y in dB as :func:`blindsr.metrics.psnr` computes it for the
  literature (8-bit levels, MATLAB BT.601 luma, ``crop_border`` = the scale, read from the
  SR/LR size ratio). Identical images (infinite PSNR) are capped at 100 dB.
- ``"neg_lpips"`` (needs HR): ``-LPIPS(sr, hr)`` (AlexNet, v0.1, 8-bit levels).
- ``"module.path:function"``: a user callable ``fn(sr, hr, lr)`` imported with importlib; it
  gets ``hr=None`` when no HR exists and must return N numbers (a tensor, array or list).
- A :class:`Reward` or any callable with that signature is taken as is.

Rewards needing HR raise a one-line :class:`~blindsr.errors.BlindSRError` when it is missing; an
exception inside a user's callable becomes one too (``reward 'mod:fn' raised ValueError: ...``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from blindsr.errors import BlindSRError, first_line

RewardFn = Callable[[Tensor, Tensor | None, Tensor], object]
PSNR_CAP = 100.0
DEFAULT_REWARD = "neg_niqe"


@dataclass(frozen=True)
class Reward:
    """A named per-sample reward; call it as ``reward(sr, hr, lr)`` -> float32 ``(N,)``."""

    name: str
    fn: RewardFn
    needs_hr: bool = False
    user: bool = False  # a user's function: its exceptions become one-line errors

    def __call__(self, sr: Tensor, hr: Tensor | None, lr: Tensor) -> Tensor:
        """The reward of each sample (no gradients), checked to be N numbers."""
        if self.needs_hr and hr is None:
            raise BlindSRError(f"reward {self.name!r} needs the HR image, and there is none "
                               "(use neg_niqe or a callable for LR-only data)")
        with torch.no_grad():
            try:
                out = self.fn(sr, hr, lr)
            except BlindSRError:
                raise
            except Exception as e:
                if not self.user:
                    raise
                raise BlindSRError(f"reward {self.name!r} raised {type(e).__name__}: "
                                   f"{first_line(e)}") from None
        try:
            values = torch.as_tensor(out).detach()
        except (TypeError, ValueError, RuntimeError):
            raise BlindSRError(f"reward {self.name!r} returned {type(out).__name__}, "
                               "not numbers") from None
        n = sr.shape[0]
        if values.numel() != n or values.ndim > 1:
            raise BlindSRError(f"reward {self.name!r} returned shape {tuple(values.shape)}, "
                               f"expected ({n},): one number per sample")
        return values.reshape(n).to(device=sr.device, dtype=torch.float32)


def _scale_of(sr: Tensor, lr: Tensor) -> int:
    return max(1, sr.shape[-1] // max(1, lr.shape[-1]))


def psnr_y(sr: Tensor, hr: Tensor | None, lr: Tensor) -> Tensor:
    """PSNR-Y (dB) cropped by the scale, capped at :data:`PSNR_CAP`."""
    from blindsr.metrics import psnr

    value = psnr(sr, hr.to(sr.device), crop_border=_scale_of(sr, lr), y_channel=True)
    return value.clamp(max=PSNR_CAP)


def neg_niqe(sr: Tensor, hr: Tensor | None, lr: Tensor) -> Tensor:
    """``-NIQE(sr)`` (gray, MATLAB release conventions)."""
    from blindsr.metrics import niqe

    return -niqe(sr)


def neg_lpips(sr: Tensor, hr: Tensor | None, lr: Tensor) -> Tensor:
    """``-LPIPS(sr, hr)`` with AlexNet features."""
    from blindsr.metrics import lpips

    return -lpips(sr, hr.to(sr.device))


BUILTIN: dict[str, Reward] = {
    "neg_niqe": Reward("neg_niqe", neg_niqe),
    "psnr": Reward("psnr", psnr_y, needs_hr=True),
    "neg_lpips": Reward("neg_lpips", neg_lpips, needs_hr=True),
}


def _check_signature(fn: Callable, name: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: checked when called
    try:
        sig.bind(None, None, None)
    except TypeError:
        raise BlindSRError(f"reward {name!r}: {fn!r} must accept (sr, hr, lr), its signature "
                           f"is {sig}") from None


def _import(spec: str) -> Callable:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        known = ", ".join(BUILTIN)
        raise BlindSRError(f"unknown reward {spec!r}: use one of {known} or 'module.path:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # any failure inside the user's module
        raise BlindSRError(f"reward {spec!r}: cannot import module {module_name!r} "
                           f"({type(e).__name__}: {e})") from None
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BlindSRError(f"reward {spec!r}: module {module_name!r} has no attribute "
                               f"{attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise BlindSRError(f"reward {spec!r}: {attr!r} is a {type(obj).__name__}, not a function")
    return obj


def get_reward(spec: str | Reward | RewardFn = DEFAULT_REWARD) -> Reward:
    """The :class:`Reward` for a built-in name, ``"module.path:function"`` or a callable."""
    if isinstance(spec, Reward):
        return spec
    if callable(spec):
        name = getattr(spec, "__qualname__", type(spec).__name__)
        _check_signature(spec, name)
        return Reward(name, spec, user=True)
    if not isinstance(spec, str) or not spec.strip():
        raise BlindSRError(f"reward must be a name or 'module.path:function', got {spec!r}")
    text = spec.strip()
    if text.lower() in BUILTIN:
        return BUILTIN[text.lower()]
    fn = _import(text)
    _check_signature(fn, text)
    return Reward(text, fn, user=True)


__all__ = ["BUILTIN", "DEFAULT_REWARD", "PSNR_CAP", "Reward", "get_reward", "neg_lpips",
           "neg_niqe", "psnr_y"]
