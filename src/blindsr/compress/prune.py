"""What can be pruned in a DRN, and physical channel removal.

A prunable layer is a set of channels produced by one conv and consumed by the next one:

- ``rcab``: an RCAB's inner channels: outputs of ``conv1`` (weight rows + bias), inputs of
  ``conv2`` (weight columns). ``group`` 1.
- ``up``: an up stage's pixel-shuffle channels: channel ``c`` after ``PixelShuffle(2)`` is made
  of the upsampler conv's outputs ``4c .. 4c+3``, and is input ``c`` of the 1x1 reduction.
  ``group`` 4.

Trunk channels are never pruned, nor are the down blocks' inner channels (DRC searches those
too; in the CPU-scale DRN-S they carry about 1.5 % of the MACs). Removing a channel = removing
its producer rows (``group`` of them) and its consumer column; the result is an ordinary
:class:`~blindsr.archs.drn.DRN` with smaller ``block_widths`` / ``up_widths``. When the
removed channels carry no signal into the consumer (zero consumer weights, or zero inputs), the
smaller network computes exactly the same function (:func:`mask_channels` gives that masked
reference).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from blindsr.archs.drn import DRN
from blindsr.errors import BlindSRError


@dataclass(frozen=True)
class PrunableLayer:
    """One prunable set of channels (see the module docstring)."""

    name: str  # "up.S.blocks.B" (rcab) or "up.S" (up)
    kind: Literal["rcab", "up"]
    producer: str  # module path of the conv whose outputs are the channels
    consumer: str  # module path of the conv that takes them as inputs
    group: int  # producer outputs per channel
    width: int  # channels now


def require_drn(model: nn.Module) -> DRN:
    """``model`` if it is a DRN, else a one-line error."""
    if not isinstance(model, DRN):
        name = getattr(model, "arch_name", type(model).__name__)
        raise BlindSRError(f"compression works on DRN models only, got {name}")
    return model


def prunable_layers(model: DRN) -> list[PrunableLayer]:
    """The prunable layers of ``model`` in forward order (each stage's RCABs, then its
    upsampler)."""
    require_drn(model)
    layers = []
    for s, stage in enumerate(model.up):
        for b, block in enumerate(stage.blocks):
            p = f"up.{s}.blocks.{b}"
            layers.append(PrunableLayer(p, "rcab", f"{p}.conv1", f"{p}.conv2", 1,
                                        block.conv1.out_channels))
        layers.append(PrunableLayer(f"up.{s}", "up", f"up.{s}.upconv", f"up.{s}.reduce", 4,
                                    stage.reduce.in_channels))
    return layers


def split_widths(model: DRN, widths: Mapping[str, int]) -> tuple[list[int], list[int]]:
    """Per-layer widths (by layer name) -> ``(block_widths, up_widths)`` constructor lists."""
    layers = prunable_layers(model)
    missing = [layer.name for layer in layers if layer.name not in widths]
    if missing:
        raise BlindSRError(f"no width given for layer(s) {', '.join(missing[:3])}")
    blocks = [int(widths[x.name]) for x in layers if x.kind == "rcab"]
    ups = [int(widths[x.name]) for x in layers if x.kind == "up"]
    return blocks, ups


def layer_widths(model: DRN) -> dict[str, int]:
    """Current width of every prunable layer, by name."""
    return {layer.name: layer.width for layer in prunable_layers(model)}


def removed_fraction(widths: Mapping[str, int], full: Mapping[str, int]) -> float:
    """Fraction of the prunable channels removed: ``1 - sum(widths) / sum(full)``."""
    return 1.0 - sum(widths[k] for k in full) / sum(full.values())


def _index(keep: Sequence[int] | Tensor, width: int, name: str) -> Tensor:
    idx = torch.as_tensor(keep, dtype=torch.long).flatten().unique(sorted=True)
    if idx.numel() == 0:
        raise BlindSRError(f"layer {name}: at least one channel must be kept")
    if int(idx[0]) < 0 or int(idx[-1]) >= width:
        raise BlindSRError(f"layer {name}: channel indices must be in [0, {width}), "
                           f"got {int(idx[0])}..{int(idx[-1])}")
    return idx


def prune_channels(model: DRN, keep: Mapping[str, Sequence[int] | Tensor]) -> DRN:
    """A new, smaller DRN that keeps channels ``keep[layer]`` (indices, any order) of each named
    layer (layers not named keep every channel); weights are copied, the order of the kept
    channels is preserved."""
    require_drn(model)
    layers = {layer.name: layer for layer in prunable_layers(model)}
    unknown = [k for k in keep if k not in layers]
    if unknown:
        raise BlindSRError(f"not a prunable layer: {unknown[0]} (known: up.S.blocks.B, up.S)")
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    widths = {name: layer.width for name, layer in layers.items()}
    for name, indices in keep.items():
        layer = layers[name]
        idx = _index(indices, layer.width, name).to(sd[f"{layer.consumer}.weight"].device)
        rows = (idx[:, None] * layer.group + torch.arange(layer.group, device=idx.device))
        rows = rows.flatten()
        for key in (f"{layer.producer}.weight", f"{layer.producer}.bias"):
            sd[key] = sd[key][rows].contiguous()
        sd[f"{layer.consumer}.weight"] = sd[f"{layer.consumer}.weight"][:, idx].contiguous()
        widths[name] = idx.numel()
    blocks, ups = split_widths(model, widths)
    kw = model.arch_kwargs
    pruned = DRN(kw["scale"], kw["num_block"], kw["num_feat"], blocks, ups)
    pruned.load_state_dict(sd, strict=True)
    p = next(model.parameters())
    return pruned.to(device=p.device, dtype=p.dtype).train(model.training)


@contextmanager
def mask_channels(model: DRN, masks: Mapping[str, Tensor]) -> Iterator[None]:
    """Within the block, multiply the inputs of each named layer's consumer conv by
    ``masks[layer]`` (a (C,) tensor; differentiable), by forward pre-hooks."""
    layers = {layer.name: layer for layer in prunable_layers(model)}
    handles = []
    try:
        for name, mask in masks.items():
            if name not in layers:
                raise BlindSRError(f"not a prunable layer: {name}")
            if mask.shape != (layers[name].width,):
                raise BlindSRError(f"layer {name}: mask must have shape ({layers[name].width},), "
                                   f"got {tuple(mask.shape)}")
            conv = model.get_submodule(layers[name].consumer)
            handles.append(conv.register_forward_pre_hook(_scale_input(mask)))
        yield
    finally:
        for h in handles:
            h.remove()


def _scale_input(mask: Tensor):
    def hook(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x = args[0]
        return (x * mask.to(x.dtype).view(1, -1, 1, 1), *args[1:])

    return hook


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy with every parameter frozen, in eval mode."""
    clone = copy.deepcopy(model).eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


__all__ = ["PrunableLayer", "frozen_copy", "layer_widths", "mask_channels", "prune_channels",
           "prunable_layers", "removed_fraction", "require_drn", "split_widths"]
