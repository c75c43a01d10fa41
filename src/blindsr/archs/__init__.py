"""Architectures: plain ``nn.Module`` classes and one registry table.

Adding an architecture = one new module defining ``SPEC = ArchSpec(...)`` plus one entry in
``_MODULES`` below. Every built model carries ``scale``, ``arch_name`` and ``arch_kwargs``.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import torch
from torch import nn

from ..errors import BlindSRError
from . import amnet, drn, han, rrdbnet, srresnet, srvgg
from .common import ArchSpec, StateDict

_MODULES = (srresnet, rrdbnet, han, amnet, drn, srvgg)

ARCHS: dict[str, ArchSpec] = {m.SPEC.name: m.SPEC for m in _MODULES}

# Preset names: alias -> (architecture, constructor kwargs by scale); explicit kwargs win.
ALIASES: dict[str, tuple[str, dict[int, dict[str, Any]]]] = {
    name: (drn.NAME, presets) for name, presets in drn.PRESETS.items()
}

__all__ = ["ARCHS", "ArchSpec", "arch_names", "build", "detect_arch", "from_state_dict",
           "state_dict_mismatch", "strip_wrapper_prefixes"]

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP and torch.compile wrappers


def strip_wrapper_prefixes(sd: StateDict) -> dict:
    """``sd`` with the key prefixes of DataParallel / DDP (``module.``) and torch.compile
    (``_orig_mod.``) removed, however nested."""
    out = {}
    for key, value in sd.items():
        stripped = None
        while stripped != key:
            stripped = key
            for prefix in WRAPPER_PREFIXES:
                key = key.removeprefix(prefix)
        out[key] = value
    return out


def arch_names() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(ARCHS)


def _spec(name: str) -> ArchSpec:
    if name not in ARCHS:
        raise BlindSRError(f"unknown architecture '{name}'; known: {', '.join(arch_names())}")
    return ARCHS[name]


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build architecture ``name`` (or a preset alias such as ``drn-s``) with constructor
    ``kwargs`` (plain numbers)."""
    if name in ALIASES:
        name, presets = ALIASES[name]
        scale = kwargs.get("scale", 4)
        kwargs = {**(presets.get(scale, {}) if isinstance(scale, int) else {}), **kwargs}
    spec = _spec(name)
    params = inspect.signature(spec.constructor.__init__).parameters
    allowed = [p for p in params if p != "self"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise BlindSRError(
            f"{name}: unknown argument(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    return spec.constructor(**kwargs)


def detect_arch(sd: StateDict) -> str:
    """Name of the one registered architecture whose keys match ``sd``."""
    found = [name for name, spec in ARCHS.items() if spec.detect(sd)]
    if len(found) == 1:
        return found[0]
    if found:
        raise BlindSRError(f"state dict matches several architectures: {', '.join(found)}")
    sample = ", ".join(list(sd)[:3]) or "no keys"
    raise BlindSRError(
        f"state dict matches no known architecture ({', '.join(arch_names())}); keys: {sample}..."
    )


def state_dict_mismatch(model: nn.Module, sd: StateDict) -> str:
    """Why ``sd`` cannot be loaded strictly into ``model``, in one line ('' when it can):
    missing and unexpected keys and shape mismatches, the first three of each."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
             for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            problems.append(f"{label}: {', '.join(keys[:3])}{more}")
    return "; ".join(problems)


def _check_match(model: nn.Module, sd: StateDict, what: str) -> None:
    """One-line BlindSRError when keys or shapes of ``sd`` differ from ``model``'s."""
    problem = state_dict_mismatch(model, sd)
    if problem:
        raise BlindSRError(f"weights do not fit {what}: {problem}")


def from_state_dict(
    sd: StateDict, arch: str | None = None, kwargs: dict[str, Any] | None = None
) -> nn.Module:
    """Build the model ``sd`` belongs to and load it strictly (torch's global RNG untouched).

    ``arch`` is detected from key names when not given; ``kwargs`` are read from tensor shapes
    when not given. Keys saved from a DDP or torch.compile wrapper are accepted.
    """
    sd = strip_wrapper_prefixes(sd)
    name = arch if arch is not None else detect_arch(sd)
    spec = _spec(name)
    if kwargs is None:
        kwargs = spec.kwargs_from_state_dict(sd)
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the
        model = build(name, **kwargs)       # caller's random stream where it was
    _check_match(model, sd, f"{name}({json.dumps(kwargs, sort_keys=True)})")
    model.load_state_dict(dict(sd), strict=True)
    return model
