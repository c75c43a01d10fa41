"""Lightweight DRN models: channel number search + dual regression channel pruning (DRC, Guo et
al., "Towards Lightweight Super-Resolution with Dual Regression Learning", arXiv 2207.07929) and a
uniform L1-norm filter pruning baseline.

- :mod:`~blindsr.compress.prune`: what is prunable in a DRN and physical channel removal;
- :mod:`~blindsr.compress.search`: channel number search (Algorithm 1);
- :mod:`~blindsr.compress.dr`: dual regression channel selection (Eq. 5);
- :mod:`~blindsr.compress.l1`: the L1-norm baseline;
- :mod:`~blindsr.compress.pipeline`: the whole run (``blindsr compress``, :func:`compress_file`);
- :mod:`~blindsr.compress.measure`: parameters, MACs, latency.

Pruned models are ordinary DRN checkpoints with per-layer widths read from tensor shapes, so
``blindsr.load_model``, ``blindsr upscale`` and ``blindsr eval`` take them unchanged.
"""

from typing import Any

_EXPORTS = {
    "CompressSettings": "pipeline", "CompressResult": "pipeline", "compress": "pipeline",
    "compress_file": "pipeline", "search_widths": "search", "dr_prune": "dr",
    "l1_prune": "l1", "prune_channels": "prune", "prunable_layers": "prune",
    "count_macs": "measure", "count_params": "measure", "latency": "measure",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # torch is imported on first use, so that `blindsr --help` stays fast
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"blindsr.compress.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'blindsr.compress' has no attribute {name!r}")
