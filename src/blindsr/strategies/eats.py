"""``eats``: the erase-and-awaken training strategy (EATS), for any convolutional SR network.

Each step picks a conv layer ``l`` uniformly among the eligible ones, ``filters`` erased filters
``j`` in it and, for each, a disruptor ``k != j`` (drawn among the filters not erased), all from
a ``torch.Generator`` owned by the strategy. The *erased network* ``f'`` is the generator with
output channel ``j`` of ``l`` replaced by a copy of channel ``k`` (kernel and bias). One update
minimises ``||f(LR) - HR||_1 + erased_weight * ||f'(LR) - Bicubic(LR)||_1`` (MATLAB bicubic);
the gradients of both terms reach the shared parameters, nothing is modified in place and
nothing carries over to the next step.

``erased_weight`` (default 1, the paper's sum) has a trivial optimum when it is large: f = f' =
Bicubic(LR) zeroes the awakening term. Since f' differs from f by one filter, the term costs a
trained network about ``erased_weight x ||f - Bicubic(LR)||_1``; when that exceeds the network's
gain over bicubic (in L1 against HR), bicubic is the cheaper answer and training drifts to it.
It did at CPU scale (SRResNet 32x8, 4000 iterations of the random pipeline: a gain of 0.005
against a residual of 0.022, ``benchmarks/bicubic_gap.py``, so bicubic is cheaper above a
weight of about 0.23). ``configs/eats/eats_w0.1.yaml`` uses 0.1; ``eats.yaml`` keeps 1
for reference. Watch ``l_erased``: a value that falls toward zero means the network has become
bicubic.

Eligible layers: every ``nn.Conv2d`` of the generator in the order of its first call in a
forward pass (traced once on one sample), except the last one (the output conv: its filters
are colour channels, not interchangeable "players"), grouped convs (copying an output channel
is not a filter copy there) and convs with fewer than ``filters + 1`` outputs. ``layer_ratio``
(paper Table 6) keeps the first ``ceil(ratio * L)`` of them from the input side (``layer_pick:
shallow``, our reading of the paper: a larger ratio adds deeper layers), or the deepest ones
(``deep``), or evenly spaced ones (``spread``). With ``filters > 1`` (Table 7) the erased
filters are distinct and all in the same layer, one erased network per step.

The branched pass (``branch: replay``, the default). Because the erased layer sees the same
input in both networks, its erased output is exactly ``y_l`` with channel ``j`` replaced by
channel ``k``: the layers before ``l`` need not run twice. Generically, by hooks, knowing only
the module tree:

1. pass 1 is the ordinary ``f(LR)``; forward hooks on the *frontier* modules (the children of
   ``l``'s ancestors in the module tree, e.g. ``conv_first``, ``body.0``..``body.4`` for
   ``body.5.conv1``, and their descendants, for containers that are iterated rather than
   called) record a copy of the output of every outermost call that ends before ``l``
   first runs, and a hook on ``l`` records ``y_l[:, src]`` (``src``: channel ``j`` -> ``k``);
2. pass 2 runs ``f(LR)`` again while those modules' ``forward`` is intercepted (an instance
   attribute set for the pass and removed afterwards): recorded calls return their copies, so
   only the glue code of the ancestors (a concatenation, a bilinear skip) runs again before
   ``l``; ``l``'s first call returns the erased output; everything after runs normally, later
   calls of ``l`` (weight sharing) get their channel replaced on the output.

Copies are taken at return time, so in-place ops on module outputs (``LeakyReLU(inplace=True)``,
``h.mul_()``) cannot corrupt them, and gradients from pass 2 flow through the copies into the
prefix (whose backward runs once, with both contributions summed). The call sequence of pass 2
is checked against pass 1 (a network whose module calls change between two passes on the same
input, e.g. random or stateful routing, gets a clear error; use ``branch: full`` for it).
``branch: full`` is the reference: ``torch.func.functional_call`` with the erased weights, a
complete second forward pass.

Cost: pass 2 costs the layers from ``l`` on, forward and backward, so a step costs
``1 + mean_l share(l..end)`` plain steps; the alternatives (``full``, or one forward of the
batch twice with a hook erasing in the second half) cost 2x. For SRResNet most of the conv
work is at the output resolution after the upsampler, which every suffix contains: for the CPU
configs (32 features, 8 blocks) the model predicts 1.82x and one run of
``benchmarks/eats_overhead.py`` measured replay 1.74x, full 1.94x, batched 2.20x at batch 16,
HR patch 96 (one thread, compute only; ``benchmarks/RESULTS.md``); RRDBNet saves more (1.54x
predicted at 64 features, 23 blocks). The paper's ~1.4x / the target 1.25x are not reachable
exactly with a uniform layer choice on SRResNet; per loop iteration the data and degradation
time dilute the ratio. ``erased_batch: b`` runs the erased pass on the first ``b`` samples of
the batch only (the awakening term is then a mean over ``b`` samples; the L1 term to HR keeps
the whole batch; ``b`` >= the batch means all of it): a step costs ``1 + (b / batch) mean_l
share(l..end)``, 1.19x for ``b = 4`` of 16 in the same run. It needs the module outputs before
the erased layer to be batch-first tensors (checked).
On a tiny model (8 features, 2 blocks), where per-op overhead dominates, ``batched`` measured
1.30x against replay 1.58x: launch-bound GPUs with small patches may favour it (not measured on
a GPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from blindsr.errors import BlindSRError
from blindsr.losses.pixel import l1_loss
from blindsr.ops import imresize
from blindsr.schema import SEED_LIMIT, bounded
from blindsr.strategies.base import Strategy, Update

_SEED_SALT = 0xEA75


@dataclass
class EATSParams:
    filters: int = bounded(1, ge=1)  # erased filters per step (paper Table 7: 1, 3, 5)
    layer_ratio: float = bounded(1.0, gt=0, le=1)  # fraction of eligible layers (Table 6)
    layer_pick: Literal["shallow", "deep", "spread"] = "shallow"  # which fraction
    erased_weight: float = bounded(1.0, ge=0)  # weight of the awakening term
    branch: Literal["replay", "full"] = "replay"  # how the erased pass is computed
    # the first erased_batch samples of each batch make the awakening term (None: all of them):
    # the erased pass then costs erased_batch / batch of a full one
    erased_batch: int | None = bounded(None, ge=1)
    seed: int | None = bounded(None, ge=0, lt=SEED_LIMIT)  # None: torch.initial_seed()


@dataclass(frozen=True)
class Erasure:
    """One erased network: in conv ``layer``, output channel ``erased[i]`` becomes a copy of
    channel ``disruptors[i]``."""

    layer: str
    erased: tuple[int, ...]
    disruptors: tuple[int, ...]

    def source(self, channels: int, device: torch.device | str = "cpu") -> Tensor:
        """Index map ``src`` with ``erased_output = output[:, src]`` (identity elsewhere)."""
        src = torch.arange(channels)
        src[list(self.erased)] = torch.tensor(self.disruptors, dtype=torch.long)
        return src.to(device)


# ---------------------------------------------------------------------------------------------
# Layers


def conv_call_order(model: nn.Module, x: Tensor) -> list[str]:
    """Names of the ``nn.Conv2d`` modules of ``model`` in the order of their first call during
    ``model(x)`` (run without gradients; the training mode is left as it was)."""
    names = {id(m): n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    order: list[str] = []

    def record(module: nn.Module, args: Any) -> None:
        name = names[id(module)]
        if name not in order:
            order.append(name)

    with ExitStack() as stack:
        for _, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                stack.callback(module.register_forward_pre_hook(record).remove)
        with torch.no_grad():
            model(x)
    return order


def pick_layers(names: list[str], ratio: float, pick: str) -> list[str]:
    """The ``ceil(ratio * len(names))`` names kept by ``pick`` (shallow, deep or spread)."""
    n = max(1, math.ceil(ratio * len(names) - 1e-9))
    if pick == "shallow":
        return names[:n]
    if pick == "deep":
        return names[len(names) - n:]
    if pick == "spread":
        idx = sorted({round(i * (len(names) - 1) / max(n - 1, 1)) for i in range(n)})
        return [names[i] for i in idx]
    raise BlindSRError(f"layer_pick must be shallow, deep or spread, got {pick!r}")


def eligible_layers(model: nn.Module, x: Tensor, filters: int = 1, ratio: float = 1.0,
                    pick: str = "shallow") -> list[str]:
    """The conv layers EATS may erase in, shallow to deep (see the module docstring)."""
    order = conv_call_order(model, x)
    convs = [n for n in order[:-1] if _erasable(model.get_submodule(n), filters)]
    if not convs:
        name = getattr(model, "arch_name", type(model).__name__)
        raise BlindSRError(f"eats: {name} has no conv layer (before the output conv) with at "
                           f"least {filters + 1} output channels to erase {filters} filter(s) in")
    return pick_layers(convs, ratio, pick)


def _erasable(conv: nn.Module, filters: int) -> bool:
    return isinstance(conv, nn.Conv2d) and conv.groups == 1 and conv.out_channels > filters


def sample_erasure(model: nn.Module, layers: list[str], filters: int,
                   generator: torch.Generator) -> Erasure:
    """A layer uniformly among ``layers``, ``filters`` distinct erased channels and, for each, a
    disruptor drawn uniformly among the channels not erased."""
    layer = layers[int(torch.randint(len(layers), (1,), generator=generator))]
    channels = model.get_submodule(layer).out_channels
    perm = torch.randperm(channels, generator=generator)
    erased, rest = perm[:filters], perm[filters:]
    disruptors = rest[torch.randint(len(rest), (filters,), generator=generator)]
    return Erasure(layer, tuple(erased.tolist()), tuple(disruptors.tolist()))


# ---------------------------------------------------------------------------------------------
# The erased forward pass


def erased_weights(model: nn.Module, erasure: Erasure) -> dict[str, Tensor]:
    """Parameters of the erased network that differ (out-of-place copies), by name."""
    conv = model.get_submodule(erasure.layer)
    src = erasure.source(conv.out_channels, conv.weight.device)
    out = {f"{erasure.layer}.weight": conv.weight.index_select(0, src)}
    if conv.bias is not None:
        out[f"{erasure.layer}.bias"] = conv.bias.index_select(0, src)
    return out


def full_forward(model: nn.Module, x: Tensor, erasure: Erasure,
                 rows: int | None = None) -> tuple[Tensor, Tensor]:
    """``(f(x), f'(x[:rows]))`` by two complete passes (the reference)."""
    out = model(x)
    erased = torch.func.functional_call(model, erased_weights(model, erasure), (x[:rows],))
    return out, erased


def _frontier(model: nn.Module, layer: str) -> list[nn.Module]:
    """Children of ``layer``'s ancestors, other than the ancestors and ``layer`` itself, and
    all their descendants: a container that its parent never calls as a whole (a ``for block
    in self.body`` loop) has its children's calls recorded instead; inside a called module
    only the outermost call is kept (the recorder's depth count)."""
    parts = layer.split(".")
    ancestors = [model.get_submodule(".".join(parts[:i])) for i in range(len(parts))]
    skip = {id(m) for m in ancestors} | {id(model.get_submodule(layer))}
    out: list[nn.Module] = []
    for parent in ancestors:
        for child in parent.children():
            for module in child.modules():
                if id(module) not in skip:
                    skip.add(id(module))
                    out.append(module)
    return out


def select_channels(y: Tensor, src: Tensor) -> Tensor:
    """``y[:, src]`` (a new tensor), keeping the channels-last layout when ``y`` has it."""
    out = y.index_select(1, src)
    if y.ndim == 4 and not y.is_contiguous() and y.is_contiguous(
            memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def _copy(value: Any, rows: int | None = None, batch: int = 0) -> Any:
    """A copy of a module output (tensors in tuples, lists, dicts); with ``rows``, of its first
    ``rows`` samples, which needs batch-first tensors (``batch`` samples) in those containers."""
    if isinstance(value, Tensor):
        if rows is None:
            return value.clone()
        if value.dim() == 0 or value.shape[0] != batch:
            raise _not_batch_first(f"a tensor of shape {tuple(value.shape)}")
        return value[:rows].clone()
    if type(value) in (tuple, list):
        return type(value)(_copy(v, rows, batch) for v in value)
    if type(value) is dict:
        return {k: _copy(v, rows, batch) for k, v in value.items()}
    if rows is not None and value is not None and not isinstance(value, (int, float, bool, str)):
        raise _not_batch_first(f"a {type(value).__name__}")
    return value


def _not_batch_first(what: str) -> BlindSRError:
    return BlindSRError(f"eats: erased_batch needs module outputs whose tensors are batch-first, "
                        f"got {what} before the erased layer; unset erased_batch for this "
                        "network")


@contextmanager
def _intercept(module: nn.Module, forward: Callable[..., Any]) -> Iterator[None]:
    """Calls of ``module`` go to ``forward`` (an instance attribute) inside the block."""
    had = "forward" in module.__dict__
    old = module.__dict__.get("forward")
    module.forward = forward
    try:
        yield
    finally:
        if had:
            module.forward = old
        else:
            del module.__dict__["forward"]


def _mismatch(layer: str) -> BlindSRError:
    return BlindSRError(f"eats: the network's module calls before {layer} differ between two "
                        "forward passes (data-dependent control flow?); use branch: full")


class _Recorder:
    """Pass 1: outputs of the outermost frontier calls that end before ``layer`` first runs,
    and ``layer``'s erased output."""

    def __init__(self, src: Tensor, rows: int | None, batch: int) -> None:
        self.src = src
        self.rows = rows
        self.batch = batch
        self.calls: list[tuple[nn.Module, Any]] = []
        self.depth = 0
        self.erased: Tensor | None = None

    def enter(self, module: nn.Module, args: Any) -> None:
        self.depth += 1

    def leave(self, module: nn.Module, args: Any, out: Any) -> None:
        self.depth -= 1
        if self.depth == 0 and self.erased is None:
            self.calls.append((module, _copy(out, self.rows, self.batch)))

    def layer(self, module: nn.Module, args: Any, out: Tensor) -> None:
        if self.erased is None:
            self.erased = select_channels(out[: self.rows], self.src)


def _record(model: nn.Module, x: Tensor, erasure: Erasure, frontier: list[nn.Module],
            rows: int | None) -> tuple[Tensor, _Recorder]:
    conv = model.get_submodule(erasure.layer)
    rec = _Recorder(erasure.source(conv.out_channels, x.device), rows, len(x))
    with ExitStack() as stack:
        for m in frontier:
            stack.callback(m.register_forward_pre_hook(rec.enter).remove)
            stack.callback(m.register_forward_hook(rec.leave).remove)
        stack.callback(conv.register_forward_hook(rec.layer).remove)
        out = model(x)
    if rec.erased is None:
        raise BlindSRError(f"eats: layer {erasure.layer} was not called in the forward pass")
    return out, rec


def _replay(model: nn.Module, x: Tensor, erasure: Erasure, frontier: list[nn.Module],
            rec: _Recorder) -> Tensor:
    conv = model.get_submodule(erasure.layer)
    state = {"pos": 0, "reached": False}

    def replayed(module: nn.Module) -> Callable[..., Any]:
        original = module.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            if state["reached"] or state["pos"] >= len(rec.calls):
                return original(*args, **kwargs)
            recorded, out = rec.calls[state["pos"]]
            if recorded is not module:
                raise _mismatch(erasure.layer)
            state["pos"] += 1
            return out

        return forward

    original_conv = conv.forward

    def erased_conv(*args: Any, **kwargs: Any) -> Tensor:
        if state["reached"]:  # a later call of a shared layer
            return select_channels(original_conv(*args, **kwargs), rec.src)
        if state["pos"] != len(rec.calls):
            raise _mismatch(erasure.layer)
        state["reached"] = True
        return rec.erased

    with ExitStack() as stack:
        for m in frontier:
            stack.enter_context(_intercept(m, replayed(m)))
        stack.enter_context(_intercept(conv, erased_conv))
        out = model(x)
    if not state["reached"]:
        raise _mismatch(erasure.layer)
    return out


def branched_forward(model: nn.Module, x: Tensor, erasure: Erasure,
                     rows: int | None = None) -> tuple[Tensor, Tensor]:
    """``(f(x), f'(x[:rows]))``, running the layers before the erased one only once (see
    above); with ``rows``, the recorded module outputs must hold batch-first tensors (a clear
    error otherwise)."""
    frontier = _frontier(model, erasure.layer)
    out, rec = _record(model, x, erasure, frontier, rows)
    return out, _replay(model, x[:rows], erasure, frontier, rec)


# ---------------------------------------------------------------------------------------------
# The strategy


def _mix_seed(seed: int) -> int:
    return int(np.random.SeedSequence([int(seed), _SEED_SALT]).generate_state(1)[0])


class EATS(Strategy):
    """Erase-and-awaken: L1 to HR plus L1 of a randomly erased network to Bicubic(LR)."""

    name = "eats"
    Params = EATSParams

    def __init__(self, generator: nn.Module, params: EATSParams, scale: int,
                 device: torch.device) -> None:
        super().__init__(generator, params, scale, device)
        seed = params.seed if params.seed is not None else torch.initial_seed()
        self.rng = torch.Generator().manual_seed(_mix_seed(seed))
        self.layers: list[str] | None = None  # traced on the first batch
        self.last: Erasure | None = None  # the erasure of the latest step

    def eligible(self, lr: Tensor) -> list[str]:
        """The eligible layers (traced once, on the first sample of ``lr``)."""
        if self.layers is None:
            p = self.params
            self.layers = eligible_layers(self.generator, lr[:1], p.filters, p.layer_ratio,
                                          p.layer_pick)
        return self.layers

    def sample(self, lr: Tensor) -> Erasure:
        """Draw the next erasure from the strategy's generator."""
        return sample_erasure(self.generator, self.eligible(lr), self.params.filters, self.rng)

    def forward_pair(self, lr: Tensor, erasure: Erasure) -> tuple[Tensor, Tensor]:
        """``(f(lr), f'(lr[:erased_batch]))`` by the configured branch method."""
        rows = self.params.erased_batch
        rows = rows if rows is not None and rows < len(lr) else None  # None: the whole batch
        if self.params.branch == "full":
            return full_forward(self.generator, lr, erasure, rows)
        return branched_forward(self.generator, lr, erasure, rows)

    def loss(self, lr: Tensor, hr: Tensor, erasure: Erasure) -> tuple[Tensor, dict[str, Tensor]]:
        """The EATS loss of one batch and its logged terms (``erased_weight`` 0: plain L1, no
        erased pass)."""
        if self.params.erased_weight == 0:
            l_hr = l1_loss(self.generator(lr).float(), hr.float())
            return l_hr, {"l_l1": l_hr.detach()}
        sr, sr_erased = self.forward_pair(lr, erasure)
        with torch.no_grad(), torch.autocast(lr.device.type, enabled=False):
            bicubic = imresize(lr[: self.params.erased_batch].float(), scale=self.scale)
        l_hr = l1_loss(sr.float(), hr.float())
        l_erased = l1_loss(sr_erased.float(), bicubic)
        total = l_hr + self.params.erased_weight * l_erased
        return total, {"l_l1": l_hr.detach(), "l_erased": l_erased.detach()}

    def training_step(self, batch: dict[str, Tensor], step: int) -> Iterator[Update]:
        lr, hr, has_hr = batch["lr"], batch["hr"], batch["has_hr"]
        if not bool(has_hr.all()):
            if not bool(has_hr.any()):
                return  # nothing to supervise in this batch
            lr, hr = lr[has_hr], hr[has_hr]
        self.last = self.sample(lr)
        loss, logs = self.loss(lr, hr, self.last)
        yield Update(loss, ("generator",), logs)

    def state_dict(self) -> dict:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "rng" not in state:
            raise BlindSRError(f"strategy eats: checkpoint state lacks 'rng' (got {list(state)})")
        self.rng.set_state(state["rng"])


__all__ = ["EATS", "EATSParams", "Erasure", "branched_forward", "conv_call_order",
           "eligible_layers", "erased_weights", "full_forward", "pick_layers", "sample_erasure",
           "select_channels"]
