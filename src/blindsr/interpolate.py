"""Network interpolation (``blindsr interpolate``): one model whose every weight is
``(1 - weight) * A + weight * B``, for two models of the same architecture.

ESRGAN introduced it to trade fidelity for texture between a PSNR-trained network and its GAN
fine-tune; Real-ESRGAN's "denoise strength" is the same blend between a model trained with and
one trained without strong noise. It is meaningful when both models descend from one training
(a fine-tune, or two continuations of the same weights), as the shipped pairs
``andnet-x4`` / ``andgan-x4`` and ``blindsr-x4-classical`` / ``blindsr-x4`` do; for unrelated
models of one architecture the blend is allowed but rarely useful. The result is an ordinary
checkpoint of the shared architecture, at the same cost as either model.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from blindsr.errors import BlindSRError
from blindsr.paths import prepare_output, user_path
from blindsr.shipped import shipped_models

if TYPE_CHECKING:  # torch is imported on use, so that `blindsr --help` stays light
    from torch import nn


def _load(model: str | os.PathLike[str] | nn.Module) -> nn.Module:
    """The network behind a shipped name, a checkpoint path or a module (not changed)."""
    import copy

    from torch import nn

    from blindsr import archs
    from blindsr.checkpoint import load_model

    if not isinstance(model, nn.Module):
        if str(model) == "bicubic":
            raise BlindSRError("bicubic has no weights to interpolate")
        if _file_of(model) is None and not str(model).endswith("+"):
            if user_path(model).is_dir():
                raise BlindSRError(f"{model} is a folder, not a model file (a run's model is "
                                   f"{Path(model) / 'model.safetensors'})")
            known = ", ".join(shipped_models())
            raise BlindSRError(f"{model}: no such model file or shipped model (shipped: {known})")
        return load_model(model)
    spec = archs.ARCHS.get(getattr(model, "arch_name", None))
    if spec is None or not isinstance(model, spec.constructor):
        raise BlindSRError(f"{type(model).__name__} is not a blindsr architecture with weights "
                           "(wrapped models: pass the network inside)")
    return copy.deepcopy(model).eval()


def _check_same_architecture(a: nn.Module, b: nn.Module) -> None:
    from blindsr.describe import architecture

    if (a.arch_name, a.arch_kwargs) != (b.arch_name, b.arch_kwargs):
        raise BlindSRError(f"the models have different architectures ({architecture(a)} and "
                           f"{architecture(b)}): only models of one architecture interpolate")
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        raise BlindSRError("the models hold different tensors; they cannot be interpolated")
    for key, ta in sa.items():
        tb = sb[key]
        if ta.shape != tb.shape or ta.dtype != tb.dtype:
            raise BlindSRError(f"the models differ in {key} ({tuple(ta.shape)} {ta.dtype} and "
                               f"{tuple(tb.shape)} {tb.dtype}); they cannot be interpolated")
        if not ta.is_floating_point() and not bool((ta == tb).all()):
            raise BlindSRError(f"the models differ in {key}, which is not a float tensor "
                               "and cannot be interpolated")


def check_weight(weight: float) -> float:
    """``weight`` as a float in [0, 1], or a one-line error."""
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise BlindSRError(f"weight must be a number in [0, 1], got {weight!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise BlindSRError(f"weight must be in [0, 1] (the share of the second model), "
                           f"got {weight}")
    return value


def interpolate(a: str | os.PathLike[str] | nn.Module, b: str | os.PathLike[str] | nn.Module,
                weight: float) -> nn.Module:
    """A new model with ``(1 - weight) * A + weight * B`` in every float tensor.

    ``a`` and ``b``: shipped names, checkpoint paths or modules of one architecture (same
    registered ``arch_name``, arguments and tensor shapes); ``weight`` in [0, 1] is B's share,
    so 0 gives A and 1 gives B. Integer buffers must be equal and are kept. The inputs are not
    changed; the result is in eval mode on the CPU.
    """
    import torch

    weight = check_weight(weight)
    net_a, net_b = _load(a).cpu(), _load(b).cpu()
    _check_same_architecture(net_a, net_b)
    sb = net_b.state_dict()
    blended = {}
    with torch.no_grad():
        for key, ta in net_a.state_dict().items():
            tb = sb[key]
            blended[key] = torch.lerp(ta, tb, weight) if ta.is_floating_point() else ta
    net_a.load_state_dict(blended)
    return net_a.eval()


def _source(model: str | os.PathLike[str] | nn.Module) -> str:
    from torch import nn

    from blindsr.checkpoint import weights_digest

    if isinstance(model, nn.Module):
        return f"module {weights_digest(model)}"
    return str(model)


def _file_of(model: str | os.PathLike[str] | nn.Module) -> Path | None:
    """The file behind a model name or path (shipped names included); None for a module or
    a name that is neither."""
    from torch import nn

    if isinstance(model, nn.Module):
        return None
    shipped = shipped_models()
    path = Path(shipped[str(model)].weights) if str(model) in shipped else Path(model)
    return path if path.is_file() else None


def _same_file(path: Path, model: str | os.PathLike[str] | nn.Module) -> bool:
    source = _file_of(model)
    return source is not None and path.exists() and os.path.samefile(path, source)


def interpolate_to_file(a: str | os.PathLike[str] | nn.Module,
                        b: str | os.PathLike[str] | nn.Module, weight: float,
                        output: str | os.PathLike[str]) -> Path:
    """Write :func:`interpolate`'s model to ``output`` (``.safetensors``); its metadata names
    the two sources and the weight. Refuses to overwrite either source."""
    from blindsr.checkpoint import save_model

    output = Path(output)
    if output.suffix != ".safetensors":
        raise BlindSRError(f"{output}: model files must end in .safetensors")
    if any(_same_file(output, m) for m in (a, b)):
        raise BlindSRError(f"{output} is one of the models being interpolated; write elsewhere")
    prepare_output(output, "output file")
    weight = check_weight(weight)
    net = interpolate(a, b, weight)
    summary = {"interpolation": {"a": _source(a), "b": _source(b), "weight": weight}}
    return save_model(net, output, summary=summary)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``blindsr interpolate``."""
    p = sub.add_parser(
        "interpolate", help="blend two models of one architecture weight by weight",
        description="Network interpolation: write a model whose weights are "
                    "(1 - W) * A + W * B, e.g. between a PSNR model and its GAN fine-tune "
                    "(andnet-x4, andgan-x4) or a classical and a blind model "
                    "(blindsr-x4-classical, blindsr-x4).")
    p.add_argument("a", metavar="A", help="first model: shipped name or checkpoint path")
    p.add_argument("b", metavar="B", help="second model, of the same architecture")
    p.add_argument("-w", "--weight", type=float, required=True,
                   help="share of B, in [0, 1] (0: A, 1: B)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="the .safetensors file to write")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``blindsr interpolate``."""
    path = interpolate_to_file(args.a, args.b, args.weight, args.output)  # checks the weight
    print(f"wrote {path}: {1 - args.weight:.6g} x {args.a} + {args.weight:.6g} x {args.b}",
          file=sys.stderr)
    return 0


__all__ = ["add_parser", "check_weight", "interpolate", "interpolate_to_file", "run"]
