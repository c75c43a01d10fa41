"""Dual regression channel pruning (DRC, Guo et al., arXiv 2207.07929, Eq. 5).

Layer by layer in forward order, each prunable layer (the input channels of its consumer conv,
see :mod:`blindsr.compress.prune`) keeps ``widths[layer]`` channels, chosen greedily as in
discrimination-aware channel pruning (the authors' ``dcp`` selection):

1. the consumer's weight is replaced by a copy ``W'`` that is zero on every input channel (no
   channel selected yet);
2. repeat until enough channels are selected: accumulate over ``select_batches`` batches the
   gradient of ``L = L_M + gamma * L_DR`` with respect to ``W'``, where ``L_M`` is the MSE between
   the consumer's output in the network being pruned and in the original network (feature
   reconstruction) and ``L_DR`` the dual regression loss of the final outputs; select the
   unselected channel(s) with the largest ``sum_out ||dL/dW'[out, c]||_F``; set the selected
   channels' weights (below); fine-tune ``W'`` on the selected channels only (and the consumer's
   bias) for ``tune_steps`` steps on ``L``;
3. the layer is frozen with its weights, and the next layer sees the pruned features.

The selected channels' weights, by ``refit``:

- ``"each"`` (default): after every round, the weights on all selected channels and the bias
  are solved by least squares so that the consumer's output, fed the pruned network's features,
  matches the original network's (:class:`ConsumerFit`, over ``select_batches`` batches fixed
  for the layer; a small ridge keeps it stable), and before the first round the bias alone. This
  is the feature term of the selection's sub-problem solved exactly where the authors run SGD to
  convergence, so each gradient is that of the error the selected channels leave: the greedy
  selection becomes orthogonal matching pursuit, and a channel that repeats a selected one
  scores nothing. With the original weights instead (``"last"`` / ``"none"``), the residual still
  holds every unselected channel's whole contribution, so copies of a selected channel keep
  scoring.
- ``"last"``: warm start from the original weights; after the last round, the kept weights
  (not the bias) by least squares (:func:`refit_consumer`).
- ``"none"``: the original weights, as warm-started.

``criterion="newton"`` (with ``"each"``) scores a channel by the loss decrease of a Newton step
on its weights alone (:meth:`ConsumerFit.newton_scores`) instead of the gradient's norm; on
DRN-S-cpu-long it selected worse (benchmarks/RESULTS.md), so the paper's norm stays the default.

Finally the unselected channels (zero weights in their consumer) are removed physically together
with the producer outputs that make them (:func:`~blindsr.compress.prune.prune_channels`), which
leaves the network's function unchanged.

Choices where the paper is silent: ``gamma`` = 1; the sub-problem fine-tuning uses Adam
(lr ``tune_lr`` = 1e-4, the DRN learning rate) instead of the authors' SGD with momentum;
``select_batches`` / ``tune_steps`` (default 1 / 1) stand for the authors' passes over the whole
training set, which are out of reach on a CPU; ``per_round`` > 1 selects that many channels per
gradient evaluation (1 = the paper's one-at-a-time greedy selection). The dual models are frozen
throughout.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blindsr.compress.objective import Batches, DualObjective
from blindsr.compress.prune import PrunableLayer, prunable_layers, prune_channels, require_drn
from blindsr.errors import BlindSRError

REFIT_MODES = ("each", "last", "none")
CRITERIA = ("gradient", "newton")


def check_refit(refit: str) -> str:
    """``refit`` if it is one of :data:`REFIT_MODES`, else a one-line error."""
    if refit not in REFIT_MODES:
        raise BlindSRError(f"refit must be one of {', '.join(REFIT_MODES)}, got {refit!r}")
    return refit


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted feature is captured."""


def _run_to(model: nn.Module, path: str, x: Tensor, what: str) -> Tensor:
    """The ``what`` ("input" or "output") of submodule ``path`` when ``model`` runs on ``x``;
    the forward pass stops there."""
    found: list[Tensor] = []

    def grab(value: Tensor) -> None:
        found.append(value)
        raise _Stop

    module = model.get_submodule(path)
    handle = (module.register_forward_pre_hook(lambda m, args: grab(args[0])) if what == "input"
              else module.register_forward_hook(lambda m, args, out: grab(out)))
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not found:
        raise BlindSRError(f"module {path} did not run in the forward pass")
    return found[0]


def capture(model: nn.Module, path: str, x: Tensor) -> Tensor:
    """The output of submodule ``path`` when ``model`` runs on ``x`` (the rest is skipped)."""
    return _run_to(model, path, x, "output")


def consumer_input(model: nn.Module, path: str, x: Tensor) -> Tensor:
    """The input of submodule ``path`` when ``model`` runs on ``x`` (the rest is skipped)."""
    return _run_to(model, path, x, "input")


class _LayerLoss:
    """``L_M + gamma * L_DR`` for one layer: feature MSE against the original network's
    consumer output plus the dual regression loss of the whole network being pruned."""

    def __init__(self, work: nn.Module, original: nn.Module, layer: PrunableLayer,
                 objective: DualObjective, gamma: float) -> None:
        self.work, self.original, self.layer = work, original, layer
        self.objective, self.gamma = objective, gamma
        self.feature: list[Tensor] = []
        conv = work.get_submodule(layer.consumer)
        self.handle = conv.register_forward_hook(lambda m, a, out: self.feature.append(out))

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            target = capture(self.original, self.layer.consumer, x)
        self.feature.clear()
        loss_dr = self.objective(self.work, x, y)
        loss_m = F.mse_loss(self.feature[-1].float(), target.float())
        self.feature.clear()
        return loss_m + self.gamma * loss_dr

    def close(self) -> None:
        self.handle.remove()


class ConsumerFit:
    """The least-squares normal equations of one consumer conv of ``work`` over ``n_batches``
    fixed batches: its inputs (every channel, as the pruned network ahead of it makes them)
    against the original network's output of that conv. :meth:`solve` then gives, for any set
    of kept input channels, the weights (and, with ``fit_bias``, the bias) that reproduce the
    original output best; ``ridge`` is relative to the mean diagonal of the kept block."""

    @torch.no_grad()
    def __init__(self, work: nn.Module, original: nn.Module, layer: PrunableLayer,
                 batches: Batches, n_batches: int, ridge: float = 1e-4) -> None:
        conv = work.get_submodule(layer.consumer)
        if (conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1
                or conv.padding_mode != "zeros" or isinstance(conv.padding, str)):
            raise BlindSRError(f"{layer.consumer}: refit needs a plain stride-1 zero-padded conv")
        self.conv, self.ridge = conv, ridge
        self.taps = conv.kernel_size[0] * conv.kernel_size[1]
        gram = rhs = 0.0  # sums over the batches; float64 on the CPU (MPS has no float64)
        for _ in range(n_batches):
            x, _y = next(batches)
            inputs = consumer_input(work, layer.consumer, x).cpu()
            target = capture(original, layer.consumer, x).cpu()
            for i in range(0, len(x), 4):  # a few images at a time: the columns are large
                cols = F.unfold(inputs[i:i + 4].double(), conv.kernel_size,
                                padding=conv.padding)  # (n, C*kh*kw, H*W)
                cols = cols.transpose(1, 2).reshape(-1, cols.shape[1])
                cols = torch.cat([cols, cols.new_ones(len(cols), 1)], dim=1)  # the bias
                out = target[i:i + 4].double().flatten(2).transpose(1, 2)
                out = out.reshape(-1, target.shape[1])
                gram = gram + cols.T @ cols
                rhs = rhs + cols.T @ out
        self.gram, self.rhs = gram, rhs

    def solve(self, keep: Tensor, fit_bias: bool = True) -> tuple[Tensor, Tensor | None]:
        """(weight on the ``keep`` inputs, shape (out, len(keep), kh, kw); bias, shape (out,));
        without ``fit_bias`` the conv's own bias is kept and returned."""
        conv, taps = self.conv, self.taps
        keep = torch.as_tensor(keep, dtype=torch.long).cpu()
        cols = (keep[:, None] * taps + torch.arange(taps)).flatten()
        n, ones = len(cols), self.gram.shape[0] - 1  # ones: the constant (bias) column
        fixed = conv.bias.detach().cpu().double() if conv.bias is not None else None
        fit_bias = fit_bias and fixed is not None
        if fit_bias:
            cols = torch.cat([cols, torch.tensor([ones])])
        gram, rhs = self.gram[cols][:, cols], self.rhs[cols]
        if fixed is not None and not fit_bias:  # fit what the kept bias leaves
            rhs = rhs - self.gram[cols, ones][:, None] * fixed[None, :]
        damp = torch.zeros(len(cols), dtype=gram.dtype)
        if n:
            damp[:n] = self.ridge * gram.diagonal()[:n].mean().clamp_min(1e-12)
        solution = torch.linalg.solve(gram + torch.diag(damp), rhs)  # (cols, out)
        weight = solution[:n].T.reshape(conv.out_channels, len(keep), *conv.kernel_size)
        bias = solution[n] if fit_bias else fixed
        like = conv.weight
        return weight.to(like), None if bias is None else bias.to(like)

    def newton_scores(self, grad: Tensor, selected: Tensor) -> Tensor:
        """Per input channel ``c``: ``sum_out g[out, c]^T S_c^-1 g[out, c]``, ``g`` the gradient
        of the selection loss w.r.t. the consumer weight (out, C, kh, kw) and ``S_c`` the Gram
        block of ``c``'s taps conditioned on the ``selected`` channels and the bias (a Schur
        complement): the loss decrease of a Newton step on ``c``'s weights alone, the feature
        term's curvature being exact. Up to a constant factor shared by every channel."""
        taps, out_ch, channels = self.taps, grad.shape[0], grad.shape[1]
        width = channels * taps
        sel = selected.nonzero().flatten().cpu()
        cols = torch.cat([(sel[:, None] * taps + torch.arange(taps)).flatten(),
                          torch.tensor([self.gram.shape[0] - 1])])  # and the bias column
        g_ss = self.gram[cols][:, cols]
        mean_diag = self.gram.diagonal()[:width].mean().clamp_min(1e-12)
        g_ss = g_ss + torch.diag(torch.full((len(cols),), float(self.ridge * mean_diag),
                                            dtype=g_ss.dtype))
        g_as = self.gram[:width, cols]
        cond = self.gram[:width, :width] - g_as @ torch.linalg.solve(g_ss, g_as.T)
        idx = torch.arange(channels)
        blocks = cond.view(channels, taps, channels, taps)[idx, :, idx, :]  # (C, taps, taps)
        blocks = blocks + self.ridge * mean_diag * torch.eye(taps, dtype=blocks.dtype)
        g = grad.detach().double().cpu().reshape(out_ch, channels, taps).permute(1, 2, 0)
        return (g * torch.linalg.solve(blocks, g)).sum(dim=(1, 2)).to(grad.device, torch.float32)


@torch.no_grad()
def refit_consumer(work: nn.Module, original: nn.Module, layer: PrunableLayer, keep: Tensor,
                   batches: Batches, n_batches: int, ridge: float = 1e-4) -> None:
    """Least-squares consumer weights on the ``keep`` input channels: the consumer conv of
    ``work`` (its other input columns are zero) reproduces, as well as a linear map of the kept
    inputs can, the original network's consumer output (:class:`ConsumerFit`); the bias stays."""
    fit = ConsumerFit(work, original, layer, batches, n_batches, ridge)
    weight, _ = fit.solve(keep, fit_bias=False)
    work.get_submodule(layer.consumer).weight[:, keep] = weight


def channel_scores(grad: Tensor) -> Tensor:
    """Per input channel: ``sum over outputs of the Frobenius norm of the kernel gradient``."""
    return grad.float().pow(2).sum(dim=(2, 3)).sqrt().sum(dim=0)


def _select_layer(work: nn.Module, original: nn.Module, layer: PrunableLayer, keep: int,
                  batches: Batches, objective: DualObjective, settings: dict) -> Tensor:
    """Greedy selection for one layer; leaves the masked weight in ``work``; returns the kept
    channel indices."""
    conv = work.get_submodule(layer.consumer)
    w0 = conv.weight.detach().clone()
    pw = nn.Parameter(torch.zeros_like(w0))
    conv.weight = pw
    conv.bias.requires_grad_(True)
    params = [pw, conv.bias]
    loss_fn = _LayerLoss(work, original, layer, objective, settings["gamma"])
    opt = torch.optim.Adam(params, lr=settings["tune_lr"])
    selected = torch.zeros(layer.width, dtype=torch.bool, device=w0.device)
    fit = (ConsumerFit(work, original, layer, batches, settings["select_batches"])
           if settings["refit"] == "each" else None)
    if fit is not None:  # nothing selected yet: the bias alone, fitted
        with torch.no_grad():
            conv.bias.copy_(fit.solve(torch.zeros(0, dtype=torch.long))[1])
    try:
        while int(selected.sum()) < keep:
            grad = torch.zeros_like(w0)
            for _ in range(settings["select_batches"]):
                loss = loss_fn(*next(batches))
                (g,) = torch.autograd.grad(loss, [pw])
                grad += g
            scores = (fit.newton_scores(grad, selected) if settings["criterion"] == "newton"
                      else channel_scores(grad)).masked_fill(selected, -float("inf"))
            n = min(settings["per_round"], keep - int(selected.sum()))
            pick = scores.topk(n).indices
            selected[pick] = True
            with torch.no_grad():
                if fit is None:  # warm start from the original weights
                    pw[:, pick] = w0[:, pick]
                else:  # the feature term of the sub-problem, solved exactly
                    idx = selected.nonzero().flatten()
                    weight, bias = fit.solve(idx)
                    pw.zero_()
                    pw[:, idx] = weight
                    conv.bias.copy_(bias)
            mask = selected.to(pw.dtype).view(1, -1, 1, 1)
            for _ in range(settings["tune_steps"]):
                loss = loss_fn(*next(batches))
                opt.zero_grad(set_to_none=True)
                loss.backward(inputs=params)
                pw.grad.mul_(mask)
                opt.step()
    finally:
        loss_fn.close()
    pw.requires_grad_(False)
    conv.bias.requires_grad_(False)
    kept = selected.nonzero().flatten()
    if settings["refit"] == "last":
        refit_consumer(work, original, layer, kept, batches, settings["select_batches"])
    return kept


def dr_prune(model: nn.Module, widths: Mapping[str, int], batches: Batches,
             objective: DualObjective, gamma: float = 1.0, select_batches: int = 1,
             tune_steps: int = 1, tune_lr: float = 1e-4, per_round: int = 1,
             refit: str = "each", criterion: str = "gradient",
             progress: Callable[[str, int, int], None] | None = None,
             ) -> tuple[nn.Module, dict[str, list[int]]]:
    """Prune ``model`` to ``widths`` (channels kept per layer name) by dual regression channel
    selection (module docstring). Returns the smaller DRN and the kept indices per layer.

    ``progress(layer_name, kept, full)`` is called after each layer.
    """
    require_drn(model)
    names = [layer.name for layer in prunable_layers(model)]
    unknown = sorted(set(widths) - set(names))
    if unknown:  # a misspelt or foreign layer name must not silently keep a layer whole
        raise BlindSRError(f"widths name layer(s) this model does not have: "
                           f"{', '.join(unknown[:3])} (prunable: {', '.join(names[:3])}, ...)")
    check_refit(refit)
    for name, value in (("select_batches", select_batches), ("per_round", per_round)):
        if value < 1:
            raise BlindSRError(f"{name} must be >= 1, got {value}")
    if tune_steps < 0 or gamma < 0:
        raise BlindSRError("tune_steps and gamma must be >= 0")
    if criterion not in CRITERIA or (criterion == "newton" and refit != "each"):
        raise BlindSRError(f"criterion must be one of {', '.join(CRITERIA)} (newton needs "
                           f"refit each), got {criterion!r} with refit {refit!r}")
    settings = {"criterion": criterion, "gamma": gamma, "select_batches": select_batches,
                "tune_steps": tune_steps, "tune_lr": tune_lr, "per_round": per_round,
                "refit": refit}
    original = copy.deepcopy(model).eval().requires_grad_(False)
    work = copy.deepcopy(model).train().requires_grad_(False)
    trainable = objective.parameters()
    for p in trainable:
        p.requires_grad_(False)
    kept: dict[str, list[int]] = {}
    try:
        for layer in prunable_layers(work):
            keep = int(widths.get(layer.name, layer.width))  # absent: kept whole
            if not 1 <= keep <= layer.width:
                raise BlindSRError(f"layer {layer.name}: cannot keep {keep} of "
                                   f"{layer.width} channels")
            if keep == layer.width:
                idx = torch.arange(layer.width)
            else:
                idx = _select_layer(work, original, layer, keep, batches, objective, settings)
            kept[layer.name] = idx.tolist()
            if progress is not None:
                progress(layer.name, keep, layer.width)
    finally:
        for p in trainable:
            p.requires_grad_(True)
    pruned = prune_channels(work, kept)
    return pruned.requires_grad_(True), kept


__all__ = ["CRITERIA", "REFIT_MODES", "ConsumerFit", "capture", "channel_scores", "check_refit",
           "consumer_input", "dr_prune", "refit_consumer"]
