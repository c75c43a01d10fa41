"""Geometric self-ensemble ("x8", the ``+`` models of EDSR+ / RCAN+ tables).

The model runs on the eight flips and transposes of its input (the dihedral group of the square),
each output is mapped back, and the eight are averaged. It costs eight forward passes and no
training; on noisy inputs the average also cancels part of the noise each pass leaves.

`SelfEnsemble` wraps any model, so every caller takes it as a model: `zoo.load` gives it for a
model name ending in ``+`` (``blindsr-x4+``), which is how ``blindsr upscale`` and ``blindsr
eval`` offer it. The eight inputs run as one batch (two for non-square inputs, whose transposes
have another shape), so tiles are batched as usual and the automatic tile size, which measures
the wrapped model's activations, shrinks to fit the larger batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

SUFFIX = "+"
# (transpose, flip height, flip width) for the eight symmetries of the square
SYMMETRIES: tuple[tuple[bool, bool, bool], ...] = tuple(
    (t, fh, fw) for t in (False, True) for fh in (False, True) for fw in (False, True))


def _flip_dims(flip_h: bool, flip_w: bool) -> list[int]:
    return [d for d, on in ((-2, flip_h), (-1, flip_w)) if on]


def transform(x: Tensor, symmetry: tuple[bool, bool, bool]) -> Tensor:
    """``x`` (..., H, W) flipped, then transposed, as ``symmetry`` says."""
    transpose, flip_h, flip_w = symmetry
    dims = _flip_dims(flip_h, flip_w)
    y = x.flip(dims) if dims else x
    return y.transpose(-2, -1) if transpose else y


def invert(y: Tensor, symmetry: tuple[bool, bool, bool]) -> Tensor:
    """The inverse of :func:`transform` (transpose back, then undo the flips)."""
    transpose, flip_h, flip_w = symmetry
    y = y.transpose(-2, -1) if transpose else y
    dims = _flip_dims(flip_h, flip_w)
    return y.flip(dims) if dims else y


class SelfEnsemble(nn.Module):
    """``model`` averaged over the eight flips and transposes of its input.

    Extra forward arguments (e.g. AMNet's kernel code) are passed on, repeated along the batch
    when they have one row per sample. ``scale``, ``size_multiple``, ``arch_name``,
    ``source_arch`` (an ONNX file's) and ``image_code`` are the wrapped model's.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        for name in ("scale", "size_multiple", "arch_name", "source_arch"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))
        if callable(getattr(model, "image_code", None)):
            self.image_code = model.image_code

    def forward(self, x: Tensor, *args: Tensor) -> Tensor:
        total = sum(invert(y, s).float() for s, y in self._passes(x, args))
        return (total / len(SYMMETRIES)).to(x.dtype)

    def _passes(self, x: Tensor, args: tuple) -> Iterator[tuple[tuple[bool, bool, bool], Tensor]]:
        """(symmetry, output of the transformed input) for each symmetry, batched by shape."""
        n, _, h, w = x.shape
        groups = [[s for s in SYMMETRIES if not s[0]], [s for s in SYMMETRIES if s[0]]]
        if h == w:  # the transposes have the same shape: one batch of eight
            groups = [list(SYMMETRIES)]
        for group in groups:
            batch = torch.cat([transform(x, s) for s in group])
            extra = [a.repeat(len(group), *[1] * (a.ndim - 1))
                     if torch.is_tensor(a) and a.ndim and a.shape[0] == n else a for a in args]
            yield from zip(group, self.model(batch, *extra).chunk(len(group)), strict=True)


def split_name(name: str) -> tuple[str, bool]:
    """``("blindsr-x4", True)`` for ``"blindsr-x4+"``; names without the suffix unchanged."""
    if name.endswith(SUFFIX) and len(name) > len(SUFFIX):
        return name[: -len(SUFFIX)], True
    return name, False


__all__ = ["SUFFIX", "SYMMETRIES", "SelfEnsemble", "invert", "split_name", "transform"]
