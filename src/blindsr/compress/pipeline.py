"""The whole compression run: data, dual models, search, pruning, fine-tuning, files.

``method="dr"`` (DRC): channel number search for the ratio, its widths decoded by ``decode``
(skipped with ``search_steps=0``: every layer then keeps about ``c (1 - r)``), dual regression
channel selection to those widths, then fine-tuning with the dual regression loss.
``method="l1"``: uniform L1-norm filter pruning at the same ratio, then the same fine-tuning
(same steps, batch, patch, learning rate, data). ``method="none"``: no pruning, the same
fine-tuning: the reference that tells what pruning costs from what the extra training gives.

Data and choices where the papers are silent:

- Training patches come from :class:`blindsr.data.TrainSet` (sources weighted by their image
  counts, so every image is equally likely); LR = MATLAB-bicubic ``imresize(HR, 1/s)`` clamped to
  [0, 1] (paired sources keep their own LR). Every ``val_every``-th image of each source (at least
  one; all when a source has a single image) forms the validation split the search trains
  ``alpha`` on; the rest trains the weights, the selection and the fine-tuning.
- Dual models: loaded from a ``dual`` training run (``duals``) or created fresh (16 features) and
  first trained alone for ``dual_steps`` steps on the frozen primal (Adam 1e-3); then trained
  with the weights (search, fine-tuning), frozen during the channel selection.
- Fine-tuning: Adam, lr ``finetune_lr`` (1e-4, DRN's) with a cosine decay to 0 over
  ``finetune_steps``, on the primal and the dual models.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from blindsr.atomic import write_atomic
from blindsr.compress.dr import check_refit, dr_prune
from blindsr.compress.l1 import l1_prune
from blindsr.compress.measure import count_params
from blindsr.compress.objective import (
    Batches,
    DualObjective,
    LossFn,
    load_duals,
    make_duals,
    warm_up_duals,
)
from blindsr.compress.prune import (
    layer_widths,
    prunable_layers,
    removed_fraction,
    require_drn,
    split_widths,
)
from blindsr.compress.search import (
    SearchResult,
    check_decode,
    check_ratio,
    search_widths,
    uniform_widths,
)
from blindsr.errors import BlindSRError

Log = Callable[[str], None]


@dataclass
class CompressSettings:
    """Everything a compression run needs besides the model and the data."""

    ratio: float  # ignored by method "none"
    method: Literal["dr", "l1", "none"] = "dr"
    search_steps: int = 200
    alpha_lr: float = 3e-4  # Adam lr of the architecture weights (DRC's)
    decode: str = "budget"  # searched widths: "budget" (meet the ratio) or "argmax" (DRC's)
    finetune_steps: int = 1000
    batch: int = 16
    patch: int = 96  # HR patch size
    seed: int = 0
    lam: float = 0.1  # dual loss weight inside L_DR
    gamma: float = 1.0  # weight of L_DR against the feature loss in the selection (Eq. 5)
    multiple: int = 4  # widths are multiples of this (at least min(multiple, full))
    dual_steps: int = 200  # warm-up of fresh dual models
    select_batches: int = 1
    tune_steps: int = 1
    per_round: int = 1
    refit: str = "each"  # dr: least-squares consumer weights (compress.dr.REFIT_MODES)
    finetune_lr: float = 1e-4
    val_every: int = 10
    device: str | None = None

    def check(self) -> None:
        """One-line error for the first bad setting."""
        if self.method not in ("dr", "l1", "none"):
            raise BlindSRError(f"method must be dr, l1 or none, got {self.method!r}")
        if self.method != "none":
            check_ratio(self.ratio)
        check_decode(self.decode)
        check_refit(self.refit)
        for name in ("search_steps", "finetune_steps", "dual_steps", "tune_steps", "seed"):
            if getattr(self, name) < 0:
                raise BlindSRError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch", "patch", "multiple", "select_batches", "per_round", "val_every"):
            if getattr(self, name) < 1:
                raise BlindSRError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lam", "gamma", "finetune_lr", "alpha_lr"):
            if not math.isfinite(getattr(self, name)):
                raise BlindSRError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.lam < 0 or self.gamma < 0 or self.finetune_lr <= 0 or self.alpha_lr <= 0:
            raise BlindSRError("lam and gamma must be >= 0, finetune_lr and alpha_lr > 0")


@dataclass
class CompressResult:
    """The pruned model, its widths, the kept channel indices, the search and a report."""

    model: nn.Module
    widths: dict[str, int]
    kept: dict[str, list[int]]
    search: SearchResult | None
    report: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------- data


def split_trainset(dataset: Any, every: int) -> tuple[Any, Any]:
    """(train, validation) copies of a :class:`~blindsr.data.TrainSet`: every ``every``-th
    image of each source is held out (module docstring); the validation copy draws other
    patches (seed + 1)."""
    train, val = copy.copy(dataset), copy.copy(dataset)
    train.sources, val.sources = [], []
    for src in dataset.sources:
        n = max(len(src.hr), len(src.lr))
        held = [i for i in range(n) if i % every == every - 1] or [n - 1]
        rest = [i for i in range(n) if i not in held] or held

        def pick(items: list, idx: list[int]) -> list:
            return [items[i] for i in idx] if items else []

        train.sources.append(dataclasses.replace(src, hr=pick(src.hr, rest),
                                                 lr=pick(src.lr, rest)))
        val.sources.append(dataclasses.replace(src, hr=pick(src.hr, held),
                                               lr=pick(src.lr, held)))
    val.seed = dataset.seed + 1
    return train, val


def _pairs(loader: Iterator[dict[str, Tensor]], scale: int,
           device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    from blindsr.ops.resize import imresize

    for batch in loader:
        hr = batch["hr"].to(device)
        has_lr = batch["has_lr"].to(device)
        lr = batch["lr"].to(device)
        if not bool(has_lr.all()):
            bicubic = imresize(hr, 1 / scale).clamp_(0, 1)
            lr = torch.where(has_lr.view(-1, 1, 1, 1), lr, bicubic)
        yield lr, hr


def make_batches(data: Sequence[str], scale: int, patch: int, batch: int, seed: int,
                 device: torch.device, val_every: int = 10) -> tuple[Batches, Batches]:
    """Endless (LR, HR) training and validation batches from shared names or folders."""
    from blindsr.data import TrainSet, list_pairs, make_loader, resolve_dataset

    names = [str(d).strip() for d in data if str(d).strip()]
    if not names:
        raise BlindSRError("no training data given (e.g. --data T91,BSD200)")
    sources = []
    for name in names:
        spec = resolve_dataset(name, scale)
        if spec.kind == "lr":
            raise BlindSRError(f"dataset {name} has LR images only; compression needs HR images")
        sources.append((spec, float(len(list_pairs(spec)))))
    dataset = TrainSet(sources, patch, scale, seed=seed)
    train, val = split_trainset(dataset, val_every)
    return (_pairs(make_loader(train, batch, 0), scale, device),
            _pairs(make_loader(val, batch, 0), scale, device))


# ------------------------------------------------------------------------------- fine-tuning


def finetune(model: nn.Module, objective: DualObjective, batches: Batches, steps: int,
             lr: float = 1e-4, progress: Callable[[int, float], None] | None = None
             ) -> list[float]:
    """Train ``model`` (and the trainable dual models) on L_DR: Adam, cosine decay to 0."""
    params = [*model.parameters(), *objective.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        x, y = next(batches)
        loss = objective(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, losses[-1])
    return losses


# ------------------------------------------------------------------------------------ the run


def _every(log: Log | None, what: str, total: int) -> Callable[..., None] | None:
    if log is None or total == 0:
        return None
    every = max(1, total // 10)

    def report(step: int, *losses: float) -> None:
        if (step + 1) % every == 0 or step + 1 == total:
            text = " / ".join(f"{v:.4f}" for v in losses)
            log(f"{what} {step + 1}/{total}: loss {text}")

    return report


def _mean(values: list[float], n: int = 20) -> float | None:
    return round(sum(values[-n:]) / len(values[-n:]), 6) if values else None


def check_reachable(model: nn.Module, ratio: float, multiple: int) -> None:
    """A one-line error, before any work, when no widths can remove ``ratio`` of the prunable
    channels: every layer keeps at least ``min(multiple, width)`` of them."""
    widths = [layer.width for layer in prunable_layers(model)]
    most = 1 - sum(min(multiple, w) for w in widths) / sum(widths)
    if ratio > most + 1e-9:
        raise BlindSRError(f"ratio {ratio} is out of reach for this model: every layer keeps at "
                           f"least {multiple} channels (the width multiple), so at most "
                           f"{most:.0%} of its channels can go")


def compress(model: nn.Module, data: Sequence[str], settings: CompressSettings,
             duals: nn.Module | None = None, loss_fn: LossFn | None = None,
             log: Log | None = None) -> CompressResult:
    """Compress a DRN (module docstring); ``model`` and ``duals`` are left untouched.

    ``duals``: trained dual models (default: fresh ones, warmed up); ``loss_fn``: the dual
    regression loss (default: the ``dual`` strategy's).
    """
    settings.check()
    s = settings
    require_drn(model)
    if s.method != "none":
        check_reachable(model, s.ratio, s.multiple)
    from blindsr.inference import pick_device

    device = pick_device(s.device)
    torch.manual_seed(s.seed)
    model = copy.deepcopy(model).to(device).train().requires_grad_(True)
    scale = model.scale
    train, val = make_batches(data, scale, s.patch, s.batch, s.seed, device, s.val_every)
    fresh = duals is None and s.lam > 0
    if fresh:
        duals = make_duals(scale, num_feat=int(model.arch_kwargs["num_feat"]))
    if duals is not None:  # a copy: the caller's dual models stay as they are
        duals = copy.deepcopy(duals).to(device).train().requires_grad_(True)
    objective = DualObjective(duals if s.lam > 0 else None, s.lam, loss_fn)
    times: dict[str, float] = {}
    losses: dict[str, list[float]] = {}
    start = time.perf_counter()
    if fresh and s.dual_steps:
        if log:
            log(f"training fresh dual models for {s.dual_steps} steps")
        losses["dual_warmup"] = warm_up_duals(model, objective, train, s.dual_steps)
    times["duals_s"] = time.perf_counter() - start
    search = None
    start = time.perf_counter()
    if s.method == "dr":
        if s.search_steps:
            if log:
                log(f"searching channel numbers for {s.search_steps} steps")
            search = search_widths(model, s.ratio, train, val, objective, s.search_steps,
                                   s.multiple, alpha_lr=s.alpha_lr, decode=s.decode,
                                   progress=_every(log, "search", s.search_steps))
        widths = search.widths if search else uniform_widths(model, s.ratio, s.multiple)
        times["search_s"] = time.perf_counter() - start
        start = time.perf_counter()
        if log:
            log("selecting channels by dual regression (layer by layer)")
        pruned, kept = dr_prune(
            model, widths, train, objective, gamma=s.gamma, select_batches=s.select_batches,
            tune_steps=s.tune_steps, per_round=s.per_round, refit=s.refit,
            progress=(lambda name, k, c: log(f"  {name}: kept {k}/{c}")) if log else None)
    elif s.method == "l1":
        pruned, kept = l1_prune(model, s.ratio, s.multiple)
    else:  # "none": nothing pruned, the same fine-tuning (what the budget alone gives)
        pruned, kept = copy.deepcopy(model), {}
    times["prune_s"] = time.perf_counter() - start
    start = time.perf_counter()
    if log and s.finetune_steps:
        log(f"fine-tuning the pruned model for {s.finetune_steps} steps")
    losses["finetune"] = finetune(pruned, objective, train, s.finetune_steps, s.finetune_lr,
                                  _every(log, "fine-tune", s.finetune_steps))
    times["finetune_s"] = time.perf_counter() - start
    pruned.eval()
    report = _report(model, pruned, s, data, search, losses, times, device)
    return CompressResult(pruned, layer_widths(pruned), kept, search, report)


def _report(model: nn.Module, pruned: nn.Module, s: CompressSettings, data: Sequence[str],
            search: SearchResult | None, losses: dict[str, list[float]],
            times: dict[str, float], device: torch.device) -> dict[str, Any]:
    full, widths = layer_widths(model), layer_widths(pruned)
    blocks, ups = split_widths(pruned, widths)
    before, after = count_params(model), count_params(pruned)
    return {
        "method": s.method,
        "ratio": s.ratio,
        "settings": dataclasses.asdict(s),
        "data": list(data),
        "device": str(device),
        "channels_before": sum(full.values()),
        "channels_after": sum(widths.values()),
        "channels_removed": round(removed_fraction(widths, full), 4),
        "params_before": before,
        "params_after": after,
        "params_removed": round(1 - after / before, 4),
        "widths": widths,
        "block_widths": blocks,
        "up_widths": ups,
        "search": search.to_json() if search is not None else None,
        "losses": {k: {"first": _mean(v[:20]), "last": _mean(v)} for k, v in losses.items()},
        "time_s": {k: round(v, 1) for k, v in times.items()},
    }


SUMMARY_KEYS = ("method", "ratio", "channels_removed", "params_before", "params_after",
                "params_removed", "block_widths", "up_widths", "source", "duals")


def checkpoint_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The summary a pruned checkpoint carries: ``{"compress": ...}`` with the report's method,
    ratio, widths, parameter counts and (when set) source model and dual models."""
    return {"compress": {k: report[k] for k in SUMMARY_KEYS if k in report}}


def compress_file(model_path: str | Path, out: str | Path, data: Sequence[str],
                  settings: CompressSettings, duals: str | Path | None = None,
                  log: Log | None = None) -> CompressResult:
    """Compress the DRN in ``model_path`` into ``out`` (.safetensors) plus its report
    ``out``.json (both checked writable before the work; written only when every weight of the
    result is finite)."""
    from blindsr.checkpoint import load_model, save_model
    from blindsr.evaluate import strict_json
    from blindsr.paths import prepare_output

    out = Path(out)
    if out.suffix != ".safetensors":
        raise BlindSRError(f"{out}: the output must end in .safetensors")
    settings.check()
    report_file = out.with_suffix(".json")
    prepare_output(out, "output file")
    prepare_output(report_file, "report file")
    model = require_drn(load_model(model_path))
    _require_finite(model, f"{model_path}: the model")
    dual_models = load_duals(duals, model.scale) if duals is not None else None
    if dual_models is not None:
        _require_finite(dual_models, f"--duals {duals}: the dual models")
    result = compress(model, data, settings, duals=dual_models, log=log)
    _require_finite(result.model, "compression diverged: the pruned model")
    r = result.report
    r["source"] = str(model_path)
    r["duals"] = str(duals) if duals is not None else "fresh"
    save_model(result.model.cpu(), out, checkpoint_summary(r))
    write_atomic(report_file, json.dumps(strict_json(r), indent=2, allow_nan=False) + "\n")
    return result


def _require_finite(model: nn.Module, what: str) -> None:
    """A one-line error when a weight of ``model`` is NaN or infinite (nothing is written)."""
    bad = next((name for name, t in model.state_dict().items()
                if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:
        raise BlindSRError(f"{what} has non-finite weights ({bad}); nothing written")


__all__ = ["CompressResult", "CompressSettings", "checkpoint_summary", "compress", "compress_file",
           "finetune", "make_batches", "split_trainset"]
