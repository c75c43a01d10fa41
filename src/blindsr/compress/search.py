"""Channel number search (DRC, Guo et al., arXiv 2207.07929, Algorithm 1).

For every prunable layer ``l`` (full width ``c_l``) and target ratio ``r`` the candidate widths
are ``k_v = c_l (1 - r) v`` for ``v`` in ``V = {0.5, 0.6, 0.7, 0.8, 0.9, 1.0}``. Architecture
weights ``alpha_l`` (one per candidate, initialised to 0) mix the candidates (Eq. 3): the layer's
output is ``sum_v softmax(alpha_l)_v conv(x restricted to its first k_v channels)``. The conv is
linear in its input, so this equals ``conv(x * m_l)`` with the per-channel weight
``m_l[j] = sum_v softmax(alpha_l)_v [rank(j) < k_v]``, which is what is computed (one forward).
"First" channels = highest L1 norm of the consumer conv's weights over that input channel,
re-ranked every step, as in the authors' code. Alternating steps: ``alpha`` on a batch of the
validation split (Adam, lr 3e-4), then the weights (and trainable dual models) on a batch of the
training split (Adam, lr 1e-4), both on the dual regression loss. The result is, per layer, the
candidate with the largest ``alpha`` (``decode="argmax"``, the paper's rule), or
(``decode="budget"``, the default) widths proportional to ``c_l E[v]`` under ``softmax(alpha)``
that together keep ``floor((1 - r) C)`` of the ``C`` prunable channels, as near as the width
multiple allows (:func:`allocate`). No candidate exceeds ``c_l (1 - r)`` (unless that is below
the minimum width), so the argmax removes more than ``r`` unless every layer picks ``v = 1``;
after a short search, whose ``alpha`` barely leaves 0, which candidate wins is noise. The budget
rule keeps the search's relative preferences, meets the ratio asked for, and gives
:func:`uniform_widths` when the search has learnt nothing (a flat softmax). The search runs on a
copy: its trained weights are discarded (pruning starts again from the given model, as the
authors do).

Choices where the paper is silent or that differ from the authors' code:

- First-order alternation (DARTS' first-order variant) instead of the unrolled second-order
  architecture gradient of the authors' code; Adam betas (0.5, 0.999) and weight decay 1e-3 for
  ``alpha`` (DARTS' settings).
- Candidate widths are rounded DOWN to a multiple of ``multiple`` (the authors round to the
  nearest multiple of 4, for NC4HW4 mobile kernels), so that no candidate exceeds
  ``c_l (1 - r)``; never below ``min(multiple, c_l)`` channels. Budget-decoded widths are
  multiples too, but a layer may get more than ``c_l (1 - r)`` when the search prefers it.
- "Ratio" = the fraction of prunable channels removed (RCAB inner + pixel-shuffle channels);
  the real parameter reduction is reported separately (trunk channels are never pruned).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from blindsr.compress.objective import Batches, DualObjective
from blindsr.compress.prune import PrunableLayer, mask_channels, prunable_layers, require_drn
from blindsr.errors import BlindSRError

V = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DECODE_RULES = ("budget", "argmax")


def check_ratio(ratio: float) -> float:
    """``ratio`` if it is a number in (0, 1), else a one-line error."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise BlindSRError(f"pruning ratio must be a number in (0, 1), got {ratio!r}")
    return float(ratio)


def round_width(value: float, full: int, multiple: int = 4) -> int:
    """``value`` rounded down to a multiple of ``multiple``, within [min(multiple, full), full]."""
    if multiple < 1:
        raise BlindSRError(f"channel multiple must be >= 1, got {multiple}")
    down = math.floor(value / multiple + 1e-6) * multiple
    return int(min(full, max(down, min(multiple, full))))


def check_decode(rule: str) -> str:
    """``rule`` if it is a width decoding rule (:data:`DECODE_RULES`), else a one-line error."""
    if rule not in DECODE_RULES:
        raise BlindSRError(f"width decoding must be budget or argmax, got {rule!r}")
    return rule


def candidate_widths(full: int, ratio: float, multiple: int = 4) -> list[int]:
    """The searched widths ``c (1 - r) v`` of a layer of ``full`` channels, one per ``v`` in V."""
    keep = full * (1 - check_ratio(ratio))
    return [round_width(keep * v, full, multiple) for v in V]


def allocate(preference: Mapping[str, float], full: Mapping[str, int], ratio: float,
             multiple: int = 4) -> dict[str, int]:
    """Widths proportional to ``preference`` (per layer, > 0) that keep ``floor((1 - r) C)`` of
    all ``C`` channels in ``full``, as near as multiples of ``multiple`` allow: scaled (no layer
    above its full width), rounded down to multiples (at least ``min(multiple, c)``), then what
    rounding left goes one multiple (or the rest of a layer) at a time to the layers that lost
    most to it (ties: first layer first). Never above the budget unless the minimum widths alone
    are; below it by less than ``multiple`` when the steps do not fit."""
    check_ratio(ratio)
    names = list(full)
    if not names or any(preference.get(n, 0) <= 0 for n in names):
        raise BlindSRError("allocate needs a positive preference for every layer")
    budget = math.floor((1 - ratio) * sum(full.values()) + 1e-6)
    capped: set[str] = set()
    scale = 0.0
    for _ in range(len(names) + 1):  # water-filling: layers that hit their full width stay there
        free = [n for n in names if n not in capped]
        room = budget - sum(full[n] for n in capped)
        scale = room / sum(preference[n] for n in free) if free else 0.0
        over = {n for n in free if scale * preference[n] > full[n]}
        if not over:
            break
        capped |= over
    target = {n: full[n] if n in capped else scale * preference[n] for n in names}
    widths = {n: round_width(target[n], full[n], multiple) for n in names}
    left = budget - sum(widths.values())
    while left < 0:  # minimum widths pushed the total over: take back from the largest surplus
        above = [n for n in names if widths[n] - multiple >= min(multiple, full[n])]
        if not above:
            break
        n = max(above, key=lambda n: widths[n] - target[n])
        widths[n] -= multiple
        left += multiple
    while left > 0:  # what rounding left: one step to the largest shortfall (ties: first layer)
        step = {n: min(multiple, full[n] - widths[n]) for n in names}
        open_ = [n for n in names if 0 < step[n] <= left]
        if not open_:
            break
        n = min(open_, key=lambda n: widths[n] - target[n])
        widths[n] += step[n]
        left -= step[n]
    return widths


def uniform_widths(model: nn.Module, ratio: float, multiple: int = 4) -> dict[str, int]:
    """Every layer at about ``c (1 - r)`` channels, together keeping ``1 - r`` of them
    (:func:`allocate` with equal preference per channel): the search-free default and the L1
    baseline's widths."""
    full = {layer.name: layer.width for layer in prunable_layers(require_drn(model))}
    return allocate({n: float(c) for n, c in full.items()}, full, ratio, multiple)


def decode_widths(probs: Tensor, candidates: Tensor, full: Mapping[str, int], ratio: float,
                  multiple: int = 4, rule: str = "budget") -> dict[str, int]:
    """Per-layer widths from the search's ``softmax(alpha)`` (layers x V) and candidate widths
    (module docstring): ``"argmax"`` (the paper's: each layer's most likely candidate) or
    ``"budget"`` (:func:`allocate` by ``c_l E[v]``)."""
    names = list(full)
    if check_decode(rule) == "argmax":
        best = probs.argmax(dim=-1).tolist()
        return {n: int(candidates[i][best[i]]) for i, n in enumerate(names)}
    # budget: by the expected v (unrounded), so that a flat softmax gives uniform_widths
    mean_v = (probs * torch.tensor(V, dtype=probs.dtype)).sum(dim=-1).tolist()
    preference = {n: full[n] * v for n, v in zip(names, mean_v, strict=True)}
    return allocate(preference, full, ratio, multiple)


@dataclass
class SearchResult:
    """Searched widths per layer, the candidates and their final softmax(alpha)."""

    widths: dict[str, int]
    candidates: dict[str, list[int]]
    probs: dict[str, list[float]]
    losses: dict[str, list[float]] = field(default_factory=dict)  # "alpha" / "weights"

    def to_json(self) -> dict:
        """Plain data for a JSON report."""
        return {"widths": self.widths, "candidates": self.candidates,
                "probs": {k: [round(p, 4) for p in v] for k, v in self.probs.items()},
                "losses": self.losses}


def channel_weights(net: nn.Module, layers: list[PrunableLayer], alpha: Tensor,
                    candidates: Tensor) -> dict[str, Tensor]:
    """Per-layer channel weights ``m_l`` (see the module docstring); differentiable in alpha."""
    probs = alpha.softmax(dim=-1)
    out = {}
    for i, layer in enumerate(layers):
        weight = net.get_submodule(layer.consumer).weight.detach()
        order = weight.abs().sum(dim=(0, 2, 3)).argsort(descending=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=order.device)
        inside = (rank[:, None] < candidates[i][None, :]).to(probs.dtype)
        out[layer.name] = inside @ probs[i]
    return out


def search_widths(model: nn.Module, ratio: float, train: Batches, val: Batches,
                  objective: DualObjective, steps: int, multiple: int = 4,
                  weight_lr: float = 1e-4, alpha_lr: float = 3e-4, decode: str = "budget",
                  progress: Callable[[int, float, float], None] | None = None) -> SearchResult:
    """Search per-layer widths for ``ratio`` in ``steps`` alternating steps, decoded by the
    ``decode`` rule (module docstring).

    ``progress(step, alpha_loss, weight_loss)`` is called after every step.
    """
    require_drn(model)
    if steps < 1:
        raise BlindSRError(f"search steps must be >= 1 (0 steps: use uniform_widths), got {steps}")
    check_decode(decode)  # before the long search, not after it
    objective = copy.deepcopy(objective)  # the search's dual weights are thrown away too
    net = copy.deepcopy(model).train()
    for p in net.parameters():
        p.requires_grad_(True)
    layers = prunable_layers(net)
    device = next(net.parameters()).device
    cands = [candidate_widths(layer.width, ratio, multiple) for layer in layers]
    cand_t = torch.tensor(cands, device=device)
    alpha = nn.Parameter(torch.zeros(len(layers), len(V), device=device))
    a_opt = torch.optim.Adam([alpha], lr=alpha_lr, betas=(0.5, 0.999), weight_decay=1e-3)
    weights = [*net.parameters(), *objective.parameters()]
    w_opt = torch.optim.Adam(weights, lr=weight_lr)
    losses: dict[str, list[float]] = {"alpha": [], "weights": []}
    for step in range(steps):
        x, y = next(val)
        with mask_channels(net, channel_weights(net, layers, alpha, cand_t)):
            a_loss = objective(net, x, y)
        a_opt.zero_grad(set_to_none=True)
        a_loss.backward(inputs=[alpha])
        a_opt.step()
        x, y = next(train)
        with torch.no_grad():
            masks = channel_weights(net, layers, alpha, cand_t)
        with mask_channels(net, masks):
            w_loss = objective(net, x, y)
        w_opt.zero_grad(set_to_none=True)
        w_loss.backward(inputs=weights)
        w_opt.step()
        losses["alpha"].append(float(a_loss.detach()))
        losses["weights"].append(float(w_loss.detach()))
        if progress is not None:
            progress(step, float(a_loss.detach()), float(w_loss.detach()))
    probs = alpha.detach().softmax(dim=-1).cpu()
    full = {layer.name: layer.width for layer in layers}
    return SearchResult(
        widths=decode_widths(probs, cand_t.cpu(), full, ratio, multiple, decode),
        candidates={layer.name: cands[i] for i, layer in enumerate(layers)},
        probs={layer.name: probs[i].tolist() for i, layer in enumerate(layers)},
        losses=losses)


__all__ = ["DECODE_RULES", "SearchResult", "V", "allocate", "candidate_widths", "channel_weights",
           "check_decode", "check_ratio", "decode_widths", "round_width", "search_widths",
           "uniform_widths"]
