"""Tiled inference: overlapping tiles, feathered blending, batches of tiles on the device.

The image stays in host memory; only batches of equally sized tile windows travel to the device.
Each tile window is its core region plus ``pad`` pixels of context on each side (shifted inward at
the image border so every window has the same size and tiles can be stacked into one batch).
Neighbouring tiles are blended across a band of width ``pad`` centred on their shared boundary
with complementary linear ramps, so the weights of all tiles sum to exactly one everywhere and no
normalisation pass is needed. The remaining context outside the band is discarded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Span:
    """One tile along one axis: the core ``[start, stop)`` and the window ``[win, win + size)``."""

    start: int
    stop: int
    win: int
    size: int


def spans(length: int, tile: int, pad: int) -> list[Span]:
    """Cut ``length`` pixels into cores of ``tile`` pixels with windows of ``tile + 2 * pad``."""
    if tile <= 0:
        raise ValueError("tile must be positive")
    size = min(tile + 2 * pad, length)
    out = []
    for start in range(0, length, tile):
        stop = min(start + tile, length)
        win = min(max(start - pad, 0), length - size)
        out.append(Span(start, stop, win, size))
    return out


def ramp(span: Span, length: int, pad: int, scale: int) -> torch.Tensor:
    """Blend weights of one tile along one axis, at output resolution (window-sized)."""
    half = pad / 2
    pos = torch.arange(span.win * scale, (span.win + span.size) * scale, dtype=torch.float64) + 0.5
    weight = torch.ones_like(pos)
    if span.start > 0:
        left = (span.start - half) * scale
        weight = torch.minimum(weight, ((pos - left) / (pad * scale)).clamp(0, 1)
                               if pad else (pos >= span.start * scale).double())
    if span.stop < length:
        right = (span.stop + half) * scale
        weight = torch.minimum(weight, ((right - pos) / (pad * scale)).clamp(0, 1)
                               if pad else (pos < span.stop * scale).double())
    return weight.float()


@dataclass(frozen=True)
class Tile:
    """A 2-D tile: spans along y and x."""

    y: Span
    x: Span


def tiles(height: int, width: int, tile: int, pad: int) -> list[Tile]:
    """All tiles of an image, row by row."""
    return [Tile(y, x) for y in spans(height, tile, pad) for x in spans(width, tile, pad)]


def batched(items: list[Tile], batch: int) -> Iterator[list[Tile]]:
    """Consecutive groups of at most ``batch`` tiles."""
    for i in range(0, len(items), batch):
        yield items[i:i + batch]


def run_tiled(
    forward: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    scale: int,
    tile: int,
    pad: int,
    batch: int = 1,
    on_tiles: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Apply ``forward`` (NCHW -> NCHW at ``scale``) to a (1, C, H, W) host image, tile by tile.

    ``forward`` receives host tensors batched along N and returns host float tensors; it is
    responsible for device transfer and dtype. ``on_tiles(n)`` is called after each batch.
    """
    _, channels, height, width = image.shape
    out = torch.zeros(1, channels, height * scale, width * scale, dtype=torch.float32)
    all_tiles = tiles(height, width, tile, pad)
    for group in batched(all_tiles, batch):
        windows = torch.cat([
            image[:, :, t.y.win:t.y.win + t.y.size, t.x.win:t.x.win + t.x.size] for t in group
        ])
        result = forward(windows).float()
        for t, sr in zip(group, result, strict=True):
            weight = ramp(t.y, height, pad, scale)[:, None] * ramp(t.x, width, pad, scale)[None, :]
            ys = slice(t.y.win * scale, (t.y.win + t.y.size) * scale)
            xs = slice(t.x.win * scale, (t.x.win + t.x.size) * scale)
            out[0, :, ys, xs] += sr * weight
        if on_tiles is not None:
            on_tiles(len(group))
    return out
