"""Model cost: parameters, multiply-accumulates (forward hooks) and CPU latency.

MACs count every ``nn.Conv2d`` and ``nn.Linear`` call of one forward pass: a conv costs
``output elements x (in_channels / groups) x kernel area`` (bias additions, activations, pixel
shuffle, pooling, interpolation and element-wise sums are not counted, as usual in SR papers).
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, lr_size: tuple[int, int] = (96, 96)) -> int:
    """MACs of one forward pass of a (1, 3, H, W) input of ``lr_size``: what inference runs
    (for DRN the final tail only; the 1x / 2x tails count in the parameters, not here)."""
    total = [0]

    def conv_hook(module: nn.Conv2d, args: tuple, out: torch.Tensor) -> None:
        k = math.prod(module.kernel_size)
        total[0] += out[0].numel() * (module.in_channels // module.groups) * k

    def linear_hook(module: nn.Linear, args: tuple, out: torch.Tensor) -> None:
        total[0] += out.numel() // out.shape[0] * module.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    p = next(model.parameters())
    x = torch.zeros(1, 3, *lr_size, device=p.device, dtype=p.dtype)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return total[0]


def latency(model: nn.Module, lr_size: tuple[int, int] = (96, 96), repeats: int = 5,
            warmup: int = 1) -> float:
    """Median wall time (seconds) of one forward pass of a (1, 3, H, W) input, no grad."""
    p = next(model.parameters())
    x = torch.rand(1, 3, *lr_size, device=p.device, dtype=p.dtype,
                   generator=torch.Generator(device=p.device).manual_seed(0))
    sync = torch.cuda.synchronize if p.device.type == "cuda" else (lambda: None)
    was = model.training
    model.eval()
    times = []
    try:
        with torch.no_grad():
            for i in range(warmup + max(repeats, 1)):
                sync()
                start = time.perf_counter()
                model(x)
                sync()
                if i >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        model.train(was)
    return statistics.median(times)


__all__ = ["count_macs", "count_params", "latency"]
