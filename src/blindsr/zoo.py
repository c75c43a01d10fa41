"""Model names users can type: `bicubic`, shipped checkpoints with cards, or checkpoint paths."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from blindsr.checkpoint import load_model
from blindsr.ensemble import SUFFIX, SelfEnsemble, split_name
from blindsr.errors import BlindSRError
from blindsr.onnx_model import OnnxModel, is_onnx
from blindsr.ops.resize import imresize
from blindsr.paths import user_path
from blindsr.shipped import (
    DEFAULT_MODEL,
    WEIGHTS_DIR,
    ShippedModel,
    default_model_name,
    shipped_models,
)


class Bicubic(nn.Module):
    """MATLAB-style bicubic upsampling posing as a model (the universal baseline). Unclamped,
    like a network: callers clamp (as :class:`blindsr.inference.Upscaler` does)."""

    arch_name = "bicubic"

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.arch_kwargs = {"scale": scale}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return imresize(x, self.scale)


def _names_a_model(name: str) -> bool:
    """Whether ``name`` is a shipped model or an existing path as it stands."""
    return name in shipped_models() or user_path(name).exists()


def load(model: str | Path | nn.Module | None = None, scale: int = 4,
         device: str | torch.device = "cpu") -> nn.Module:
    """Resolve a model given by name, path or module into a fresh nn.Module in eval mode.

    An ``.onnx`` file runs through ONNX Runtime (:class:`blindsr.onnx_model.OnnxModel`).
    A name ending in ``+`` (``blindsr-x4+``, ``run/model.safetensors+``) is that model under
    x8 self-ensemble (:class:`blindsr.ensemble.SelfEnsemble`). ``scale`` only matters for
    ``bicubic``, which can upscale by any integer factor.
    """
    if isinstance(model, nn.Module):
        return copy.deepcopy(model).eval().to(device)  # the caller's module is never changed
    name = str(model) if model is not None else default_model_name()
    base, ensembled = split_name(name)
    if ensembled and not _names_a_model(name):
        if base == "bicubic" or split_name(base)[1] and not _names_a_model(base):
            raise BlindSRError(f"{name}: one '+' after a model that is not bicubic (bicubic "
                               "is symmetric: its eight passes are one image)")
        return SelfEnsemble(load(base, scale, device)).eval()
    if name == "bicubic":
        return Bicubic(scale).to(device)
    shipped = shipped_models()
    path = user_path(name)
    if name in shipped and not path.is_file():  # a file of that name wins, as in load_model
        return load_model(shipped[name].weights, device=device)
    if not path.exists():
        known = ", ".join(["bicubic", *shipped])
        raise BlindSRError(f"{name}: no such model file or shipped model (shipped: {known}; "
                           f"append {SUFFIX} for x8 self-ensemble)")
    if is_onnx(path):
        return OnnxModel(path).eval()
    return load_model(path, device=device)


__all__ = ["DEFAULT_MODEL", "WEIGHTS_DIR", "Bicubic", "ShippedModel", "default_model_name", "load",
           "shipped_models"]
