"""The plain baseline: uniform L1-norm filter pruning (Li et al., "Pruning Filters for Efficient
ConvNets", ICLR 2017) of a DRN's prunable layers.

Every prunable layer keeps about the same fraction ``1 - r`` of its channels
(:func:`~blindsr.compress.search.uniform_widths`: multiples of ``multiple``, some layers one
multiple more so that ``1 - r`` of all channels are kept): the channels whose producer filters
have the largest L1 norm (sum of absolute weights, bias excluded). For a pixel-shuffle channel
the producer filters are the upsampler conv's four outputs ``4c .. 4c+3``, whose norms are
summed. The pruned network is then fine-tuned with the same budget as dual regression pruning.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from blindsr.compress.prune import prunable_layers, prune_channels, require_drn
from blindsr.compress.search import uniform_widths


def filter_norms(model: nn.Module) -> dict[str, Tensor]:
    """Per prunable layer, the L1 norm of each channel's producer filter(s), shape (C,)."""
    out = {}
    for layer in prunable_layers(require_drn(model)):
        weight = model.get_submodule(layer.producer).weight.detach()
        out[layer.name] = weight.abs().sum(dim=(1, 2, 3)).view(-1, layer.group).sum(dim=1)
    return out


def l1_keep(model: nn.Module, widths: Mapping[str, int]) -> dict[str, list[int]]:
    """Per layer, the ``widths[layer]`` channels of largest filter norm (sorted indices)."""
    norms = filter_norms(model)
    return {name: sorted(n.topk(int(widths[name])).indices.tolist())
            for name, n in norms.items()}


def l1_prune(model: nn.Module, ratio: float, multiple: int = 4
             ) -> tuple[nn.Module, dict[str, list[int]]]:
    """Uniform L1-norm filter pruning at ``ratio``: (smaller DRN, kept indices per layer)."""
    keep = l1_keep(model, uniform_widths(model, ratio, multiple))
    return prune_channels(model, keep), keep


__all__ = ["filter_norms", "l1_keep", "l1_prune"]
