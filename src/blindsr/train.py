"""The training loop: ``blindsr train CONFIG.yaml [key=value ...] [--resume] [--output-dir D]``.

One loop for every method. Per iteration it loads a batch (its rank's shard), synthesises LR for
HR-only samples on the device (random second order or a preset, seeded from (seed, step, rank)),
passes the batch through the optional pair pool and unsharp masking, then runs the strategy's
``training_step`` generator: each yielded :class:`~blindsr.strategies.Update` is backpropagated
(through the fp16 GradScaler if any), its gradients averaged across processes and clipped, and its
optimisers stepped. Then the generator's EMA is updated, and logs, validation and checkpoints
happen on their schedules (files only from rank 0).

Run folder ``output_dir/name/``: ``config.yaml`` (resolved), ``metrics.jsonl``, ``tb/``
(TensorBoard), ``checkpoints/step_XXXXXXX/`` (see :mod:`blindsr.train_state`),
``model.safetensors`` (EMA weights if EMA is on, else raw; for inference) and
``best.safetensors`` (best mean validation PSNR). A first Ctrl-C checkpoints after the current
iteration and stops; a finished run asked to train again changes nothing.

Multi-process: ``torchrun --nproc_per_node=N -m blindsr train CONFIG``; the effective batch is
``train.batch x N``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blindsr.config import (
    Config,
    OptimConfig,
    fail,
    from_plain,
    load_config,
    save_config,
)
from blindsr.errors import BlindSRError
from blindsr.optim import Scheduler, ema_decay, ema_update, make_optimizer
from blindsr.train_logs import Meter, MetricsLog, sample_grid
from blindsr.train_resume import (
    claim_run_folder,
    leave_finished_run,
    note_changes,
    release_run_folder,
    save_run,
    start_or_resume,
    summary,
)
from blindsr.train_run import EMA_KEY, Run, TrainResult, say

# torch is imported inside functions, so that `blindsr --help` stays fast.
if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from blindsr import distributed
    from blindsr.strategies import Strategy, Update

_POOL_SALT, _DEGRADE_SALT = 1, 2

# ---------------------------------------------------------------------------------------------
# Small helpers


def derive_seed(*parts: int) -> int:
    """A 32-bit seed mixed from integers (e.g. seed, step, rank, purpose)."""
    import numpy as np

    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def pick_device(name: str | None, local_rank: int, world: int) -> torch.device:
    """The training device (``None``: CUDA when available), one GPU per local rank."""
    import torch

    dev = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise fail("train.device", f"{name!r} asked for, but no CUDA device is available")
        if world > 1 and dev.index is None:
            dev = torch.device("cuda", local_rank)
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise fail("train.device", "mps asked for, but it is not available")
    return dev


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or a clear error where the device cannot do it."""
    import torch

    if amp == "none":
        return None
    if amp == "fp16" and device.type == "cpu":
        raise fail("train.amp", "fp16 is not supported on the CPU; use bf16 or none")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise fail("train.amp", f"{torch.cuda.get_device_name(device)} has no bf16; use fp16")
    return torch.float16 if amp == "fp16" else torch.bfloat16


# ---------------------------------------------------------------------------------------------
# Building the run (its state: blindsr.train_run; saving and resuming it: blindsr.train_resume)


def build_generator(cfg: Config, with_init: bool = True) -> nn.Module:
    """The generator of ``cfg.model``, initialised from ``train.seed`` (seeds torch's global
    RNG), or with the ``init`` checkpoint's weights when given (grown into the larger net
    with ``model.grow``); ``with_init=False`` skips them (a resumed run has its own)."""
    import torch

    from blindsr import archs

    torch.manual_seed(cfg.train.seed)
    m = cfg.model
    try:
        model = archs.build(m.arch, scale=m.scale, **m.kwargs)
    except BlindSRError as e:
        raise fail("model", str(e)) from None
    if m.init and with_init:
        from blindsr.checkpoint import read_checkpoint

        try:
            sd, meta = read_checkpoint(m.init_file())
        except BlindSRError as e:
            raise fail("model.init", str(e)) from None
        if m.grow:
            from blindsr.archs.grow import grow_state_dict

            try:
                sd = grow_state_dict(sd, model)
            except BlindSRError as e:
                raise fail("model.init", f"{m.init}: {e}") from None
        problem = archs.state_dict_mismatch(model, sd)
        if problem:
            init = _init_net(sd, meta, m.init_file())
            raise fail("model.init", f"{m.init} ({_describe_init(init)}) does not fit "
                                     f"{m.arch}({m.kwargs}, scale={m.scale}): {problem}"
                                     f"{_grow_hint(model, init, m.grow)}")
        model.load_state_dict(sd, strict=True)
    return model


def _init_net(sd: dict, meta: dict, path: Path) -> nn.Module | None:
    """The model an init checkpoint holds (recorded or read from its tensors), or None."""
    from blindsr.checkpoint import model_from_checkpoint

    try:
        return model_from_checkpoint(sd, meta, path)
    except BlindSRError:
        return None


def _describe_init(net: nn.Module | None) -> str:
    from blindsr.describe import architecture

    return "an unknown architecture" if net is None else architecture(net)


def _grow_hint(model: nn.Module, init: nn.Module | None, grow: bool) -> str:
    """The model.grow hint, only where growing could work: the same growable architecture,
    no growable argument larger than the model's and the others equal."""
    from blindsr import archs

    spec = archs.ARCHS.get(model.arch_name)
    if grow or init is None or spec is None or init.arch_name != model.arch_name:
        return ""
    theirs, own = init.arch_kwargs, model.arch_kwargs
    if not spec.growable or set(theirs) != set(own) or any(
            theirs[k] > own[k] if k in spec.growable else theirs[k] != own[k] for k in own):
        return ""
    return "; model.grow: true starts a larger model from a smaller one"


def resolve_optim(cfg: Config, strategy: Strategy) -> dict[str, OptimConfig]:
    """OptimConfig of the generator and of every strategy network (strategy defaults filled)."""
    names = ["generator", *strategy.networks()]
    unknown = [n for n in cfg.optim if n not in names]
    if unknown:
        raise fail(f"optim.{unknown[0]}", f"no network of that name; networks: {', '.join(names)} "
                                          f"(optim.{unknown[0]}=null drops these settings)")
    defaults = strategy.default_optim()
    out = {}
    for name in names:
        given = cfg.optim.get(name)
        out[name] = given if given is not None else from_plain(
            OptimConfig, defaults.get(name, {}), f"optim.{name}")
    return out


def _check_init_finished(init: Path) -> None:
    """Refuse to start from the weights of a run that is still training (a run rewrites its
    ``model.safetensors`` at every checkpoint): the new run would fine-tune a partial model."""
    from blindsr.train_state import unfinished_run

    if not (init.parent / "config.yaml").is_file():
        return
    why = unfinished_run(init.parent)
    if why is not None and why.startswith("unfinished"):
        raise fail("model.init", f"{init} comes from a run that is not finished ({why}); "
                   "finish it first, or copy the weights out of its folder to start from them")


def _load_own_generator(generator: nn.Module, checkpoint: Path) -> None:
    """The generator weights of a run's checkpoint, when they fit (when they do not, restoring
    the checkpoint says so)."""
    from blindsr import archs
    from blindsr.train_state import load_network

    weights = load_network(checkpoint, "generator")
    if weights and not archs.state_dict_mismatch(generator, weights):
        generator.load_state_dict(weights, strict=True)


def _build(cfg: Config, info: distributed.DistInfo, device: torch.device) -> Run:
    import torch

    from blindsr.strategies import get_strategy
    from blindsr.train_state import latest_checkpoint

    # A run that resumes needs nothing it started from (model.init, a strategy's start-up
    # files): the strategy is given the generator with the run's own weights (strategies read
    # what it records, e.g. amrl its code units) and params without their start-up sources.
    init = cfg.model.init_file()
    latest = latest_checkpoint(cfg.run_dir)
    if init is not None and latest is None:
        _check_init_finished(init)
    generator = build_generator(cfg, with_init=latest is None)
    if latest is not None:
        _load_own_generator(generator, latest)
    generator = generator.to(device)
    cls = get_strategy(cfg.strategy.name)
    params = cls.parse_params(cfg.strategy.params)
    if latest is not None:
        fresh = cls.parse_params({})  # every startup param has a default
        params = dataclasses.replace(params, **{k: getattr(fresh, k) for k in cls.startup_params})
    strategy = cls(generator, params, cfg.model.scale, device)
    extra = strategy.networks()
    if "generator" in extra or EMA_KEY in extra:
        raise BlindSRError(f"strategy {cls.name}: network names 'generator' and '{EMA_KEY}' "
                           "are reserved")
    nets = {"generator": generator, **extra}
    fmt = torch.channels_last if cfg.train.channels_last else torch.preserve_format
    for net in nets.values():
        net.to(device=device, memory_format=fmt).train()
    cfg.optim = resolve_optim(cfg, strategy)
    optimizers = {n: make_optimizer(nets[n], o) for n, o in cfg.optim.items()}
    schedulers = {
        n: Scheduler(optimizers[n], o.schedule or cfg.schedule, o.lr, cfg.train.iterations)
        for n, o in cfg.optim.items()
    }
    dtype = amp_dtype(cfg.train.amp, device)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return Run(cfg, info, device, cfg.run_dir, strategy, nets, optimizers, schedulers, None,
               scaler, autocast)


def _make_pool(run: Run) -> None:
    import torch

    from blindsr.data import PairPool

    size = run.cfg.data.pool_size
    if size:
        if size % run.cfg.train.batch:
            raise fail("data.pool_size", f"must be a multiple of train.batch "
                                         f"({run.cfg.train.batch}), got {size}")
        seed = derive_seed(run.cfg.train.seed, run.info.rank, _POOL_SALT)
        run.pool_gen = torch.Generator().manual_seed(seed)
        run.pool = PairPool(size, run.pool_gen)


# ---------------------------------------------------------------------------------------------
# Batches


def _degrade(run: Run, hr: Tensor) -> Tensor:
    import torch

    from blindsr import degrade

    d, scale, step = run.cfg.degradation, run.cfg.model.scale, run.step
    seed = derive_seed(run.cfg.train.seed, step, run.info.rank, _DEGRADE_SALT)
    with torch.no_grad():
        if d.kind == "random":
            g = torch.Generator().manual_seed(seed)
            if run.second_order is None:
                run.second_order = d.second_order()
            lr = degrade.second_order(hr, scale, run.second_order, generator=g)
            if d.preset_prob > 0:
                use_preset = (torch.rand(hr.shape[0], generator=g) < d.preset_prob).to(hr.device)
                preset = degrade.apply(hr, d.preset, scale, seed=seed)
                lr = torch.where(use_preset[:, None, None, None], preset, lr)
            return lr
        return degrade.apply(hr, d.preset, scale, seed=seed)


def prepare_batch(run: Run, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Move a loader batch to the device, sharpen HR (USM), synthesise LR where it is missing,
    then pool and set the memory format."""
    import torch

    need = (~batch["has_lr"]) & batch["has_hr"]
    batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
    if run.cfg.data.usm:  # as Real-ESRGAN: LR and the targets come from the sharpened HR; a
        from blindsr.data import usm_sharpen  # discriminator's real images stay unsharpened

        batch["hr_plain"] = batch["hr"]
        batch["hr"] = usm_sharpen(batch["hr"])
    if not run.strategy.degrades_itself() and bool(need.any()):
        if run.cfg.degradation.kind == "none":
            raise fail("degradation.kind", "is none, but the data has HR-only images: use "
                                           "paired/LR data or choose random or preset")
        if bool(need.all()):
            batch["lr"] = _degrade(run, batch["hr"]).to(batch["lr"].dtype)
        else:
            idx = need.nonzero().flatten().to(run.device)
            batch["lr"] = batch["lr"].clone()
            batch["lr"][idx] = _degrade(run, batch["hr"][idx]).to(batch["lr"].dtype)
        batch["has_lr"] = batch["has_lr"] | need.to(run.device)
    if run.pool is not None:
        batch = run.pool(batch)
    if run.cfg.train.channels_last:
        for k in ("hr", "lr", "hr_plain"):
            if k in batch:
                batch[k] = batch[k].contiguous(memory_format=torch.channels_last)
    return batch


# ---------------------------------------------------------------------------------------------
# One iteration


def _params(run: Run, names: tuple[str, ...]) -> list[nn.Parameter]:
    return [p for n in names for g in run.optimizers[n].param_groups for p in g["params"]]


def apply_update(run: Run, update: Update, meter: Meter) -> bool:
    """Backward, average, clip and step one update; False when it was skipped (NaN/Inf)."""
    import torch

    from blindsr import distributed

    names = tuple(update.optimizers)
    unknown = [n for n in names if n not in run.optimizers]
    if unknown or not names:
        raise BlindSRError(f"strategy {run.strategy.name} asked to step unknown optimiser(s) "
                           f"{unknown or '()'}; known: {', '.join(run.optimizers)}")
    loss = update.loss
    bad = not bool(torch.isfinite(loss.detach()).all())
    if distributed.any_flag(bad, run.device):
        return False
    for n in names:
        run.optimizers[n].zero_grad(set_to_none=True)
    (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
    distributed.all_reduce_grads(_params(run, names))
    clip = run.cfg.train.grad_clip
    for n in names:
        opt = run.optimizers[n]
        if run.scaler is not None:
            run.scaler.unscale_(opt)
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        if clip is not None and params:
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
            meter.add({f"grad_norm/{n}": norm})
            if run.scaler is None and not bool(torch.isfinite(norm)):
                bad = True
    if bad:
        for n in names:
            run.optimizers[n].zero_grad(set_to_none=True)
        return False
    for n in names:
        if run.scaler is not None:
            run.scaler.step(run.optimizers[n])
        else:
            run.optimizers[n].step()
    if run.scaler is not None:
        run.scaler.update()
    run.applied += 1
    return True


def run_iteration(run: Run, batch: dict[str, Tensor], meter: Meter) -> tuple[bool, dict]:
    """All updates of one iteration; returns (every update applied, this iteration's logs)."""
    from blindsr.strategies import Update

    ok, last = True, {}
    updates: Iterator[Update] = iter(run.strategy.training_step(batch, run.step))
    while True:
        with run.autocast():
            update = next(updates, None)
        if update is None:
            return ok, last
        if not isinstance(update, Update):
            raise BlindSRError(f"strategy {run.strategy.name} yielded "
                               f"{type(update).__name__}, not an Update")
        if apply_update(run, update, meter):
            meter.add(update.logs)
            last = {**last, **update.logs}
        else:
            ok = False


# ---------------------------------------------------------------------------------------------
# Logging and validation


def _log_row(run: Run, means: dict[str, float], it_s: float) -> None:
    row: dict[str, Any] = {"step": run.step, "time": round(run.wall_time, 3),
                           "it_s": round(it_s, 4)}
    for k, v in means.items():
        row[k if "/" in k else f"train/{k}"] = v
    for n, opt in run.optimizers.items():
        row[f"lr/{n}"] = opt.param_groups[0]["lr"]
    run.metrics.write(row)
    if run.writer is not None:
        for k, v in row.items():
            if k not in ("step", "time"):
                run.writer.add_scalar(k, v, run.step)


def _postfix(run: Run, logs: dict[str, Any]) -> None:
    if run.bar is None or run.bar.disable:
        return
    shown = {k: f"{float(v):.4g}" for k, v in list(logs.items())[:4]}
    shown["lr"] = f"{run.optimizers['generator'].param_groups[0]['lr']:.2e}"
    run.bar.set_postfix(shown, refresh=False)


def _shown_batch(run: Run, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The batch for the image samples: the strategy's own (LR, HR) when it degrades itself
    (the loader's LR is then a placeholder)."""
    import torch

    pair = run.strategy.sample_pair if run.strategy.degrades_itself() else None
    if pair is None:
        return batch
    lr, hr = pair
    return {"lr": lr, "hr": hr, "has_hr": torch.ones(lr.shape[0], dtype=torch.bool,
                                                     device=lr.device)}


def validate(run: Run) -> dict[str, float]:
    """Evaluate the EMA (or raw) generator on the validation sets; log; keep best.safetensors."""
    from blindsr.checkpoint import save_model
    from blindsr.evaluate import evaluate

    v = run.cfg.val
    model = run.eval_model
    was = model.training
    results = evaluate(models={"ema": model}, datasets=v.sets, degradations=v.degradations,
                       metrics=["psnr", "ssim"], scale=run.cfg.model.scale,
                       device=str(run.device), crop_border=v.crop_border, seed=v.seed,
                       max_images=v.max_images)
    model.train(was)
    row = {f"val/{r.dataset}/{r.degradation}/{r.metric}": r.value for r in results}
    psnrs = [r.value for r in results if r.metric == "psnr" and math.isfinite(r.value)]
    if psnrs:
        row["val/mean_psnr"] = sum(psnrs) / len(psnrs)
    run.metrics.write({"step": run.step, **row})
    if run.writer is not None:
        for k, value in row.items():
            run.writer.add_scalar(k, value, run.step)
    text = ", ".join(f"{k[4:]} {value:.4f}" for k, value in row.items())
    say(run, f"step {run.step}: {text}")
    mean = row.get("val/mean_psnr")
    if mean is not None and (run.best_psnr is None or mean > run.best_psnr):
        run.best_psnr = mean
        save_model(model, run.run_dir / "best.safetensors",
                   {**summary(run), "val_mean_psnr": mean, "val_sets": list(v.sets)})
    return row


def _every(step: int, n: int) -> bool:
    return n > 0 and step % n == 0


def _after_iteration(run: Run, batch: dict[str, Tensor], meter: Meter, state: dict) -> None:
    from blindsr import distributed

    cfg, main = run.cfg, run.info.is_main
    if _every(run.step, cfg.logging.every) or run.step == cfg.train.iterations:
        means = distributed.mean_across(meter.means(), run.device)  # every process's losses
        if main:
            now = time.perf_counter()
            it_s = (run.step - state["log_step"]) / max(now - state["log_time"], 1e-9)
            _log_row(run, means, it_s)
            state["log_step"], state["log_time"] = run.step, now
    paused = time.perf_counter()  # time spent below does not count in it/s
    if main and run.writer is not None and _every(run.step, cfg.logging.images_every):
        grid = sample_grid(run.eval_model, _shown_batch(run, batch), cfg.model.scale)
        run.writer.add_image("samples/lr_sr_hr", grid, run.step)
    if main and cfg.val.every and _every(run.step, cfg.val.every):
        try:
            validate(run)
        except BlindSRError:  # keep the checkpoint due at this step before stopping
            if _every(run.step, cfg.train.checkpoint_every):
                save_run(run)
            raise
    if _every(run.step, cfg.train.checkpoint_every):
        save_run(run)
    state["log_time"] += time.perf_counter() - paused


# ---------------------------------------------------------------------------------------------
# Entry points


def _open_logs(run: Run, resumed: bool, progress: bool) -> None:
    main = run.info.is_main
    if main:  # the run folder exists: claim_run_folder made it
        if resumed:
            note_changes(run)
        elif (run.run_dir / "metrics.jsonl").is_file():
            say(run, f"note: {run.run_dir} has no checkpoint to resume from: starting at "
                     "step 0 (its metrics.jsonl is started again)")
        save_config(run.cfg, run.run_dir / "config.yaml")
    run.metrics = MetricsLog(run.run_dir / "metrics.jsonl", main, run.step if resumed else None)
    if main and run.cfg.logging.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            message = "needs the tensorboard package (pip install tensorboard), or set it false"
            raise fail("logging.tensorboard", message) from None
        # events after the step we start from (left by a killed run) are discarded
        run.writer = SummaryWriter(str(run.run_dir / "tb"), purge_step=run.step + 1)
    from tqdm import tqdm

    run.bar = tqdm(total=run.cfg.train.iterations, initial=run.step, unit="it",
                   dynamic_ncols=True, disable=not (main and progress), desc=run.cfg.name,
                   mininterval=1.0, file=sys.stderr)


def _loader(run: Run) -> Iterator[dict[str, Tensor]]:
    from blindsr.data import TrainSet, make_loader, resolve_dataset

    cfg = run.cfg
    sources = []
    for i, src in enumerate(cfg.data.train):
        try:
            sources.append((resolve_dataset(src.path, cfg.model.scale), src.weight))
        except BlindSRError as e:
            raise fail(f"data.train[{i}].path", str(e)) from None
    hr_only = [spec.name for spec, _ in sources if spec.kind == "hr"]
    if hr_only and cfg.degradation.kind == "none" and not run.strategy.degrades_itself():
        raise fail("degradation.kind", f"is none, but {hr_only[0]} has HR images only: use "
                                       "paired/LR data or choose random or preset")
    total = sum(weight for _, weight in sources)
    shares: dict[str, float] = {}
    for spec, weight in sources:
        shares[spec.kind] = shares.get(spec.kind, 0.0) + weight / total
    run.strategy.check_data(shares)
    dataset = TrainSet(sources, cfg.train.patch, cfg.model.scale, seed=cfg.train.seed)
    return make_loader(dataset, cfg.train.batch, cfg.data.workers, start_step=run.step,
                       rank=run.info.rank, world=run.info.world,
                       pin_memory=run.device.type == "cuda")


def _loop(run: Run, loader: Iterator[dict[str, Tensor]]) -> None:
    cfg = run.cfg
    meter = Meter()
    state = {"log_step": run.step, "log_time": time.perf_counter(), "postfix": 0.0}
    started = time.perf_counter()
    base_wall, first_step = run.wall_time, run.step
    last_logs: dict[str, Any] = {}
    while run.step < cfg.train.iterations and not run.stop_requested:
        for sched in run.schedulers.values():
            sched.set(run.step)
        try:
            raw = next(loader)
        except Exception:
            if run.stop_requested:  # loader workers die of the same Ctrl-C
                break
            raise
        batch = prepare_batch(run, raw)
        ok, logs = run_iteration(run, batch, meter)
        if run.ema is not None:
            ema_update(run.ema, run.generator, ema_decay(cfg.train.ema, run.step))
        run.step += 1
        run.wall_time = base_wall + time.perf_counter() - started
        _handle_bad(run, ok)
        run.bar.update()
        last_logs = logs or last_logs
        if time.perf_counter() - state["postfix"] > 1.0 and last_logs:
            _postfix(run, last_logs)
            state["postfix"] = time.perf_counter()
        _after_iteration(run, batch, meter, state)
    if last_logs:  # the bar's last words are the last step's
        _postfix(run, last_logs)
    if run.step > first_step and run.applied == 0:
        _warn_no_updates(run, run.step - first_step)


def _warn_no_updates(run: Run, iterations: int) -> None:
    """Say (and log) that a run's iterations changed nothing, with the strategy's reason."""
    reason = run.strategy.idle_reason()
    run.metrics.write({"step": run.step, "event": "no_updates", "iterations": iterations})
    say(run, f"warning: {run.cfg.name}: no update was made in {iterations} iteration(s), so "
             f"the model is unchanged" + (f": {reason}" if reason else ""), run.info.is_main)


@contextmanager
def _stop_gently_on_interrupt(run: Run) -> Iterator[None]:
    """In a single process, a first Ctrl-C (SIGINT) lets the current iteration finish, then the
    loop stops and the run is checkpointed; a second one stops at once. Several processes keep
    Python's default (they could not agree on the step to stop at without a collective)."""
    if run.info.world > 1 or threading.current_thread() is not threading.main_thread():
        yield
        return

    owner = os.getpid()

    def on_interrupt(signum: int, frame: Any) -> None:
        if os.getpid() != owner:  # a forked data-loader worker: the main process stops it
            return
        if run.stop_requested:
            raise KeyboardInterrupt
        run.stop_requested = True
        say(run, "interrupted: saving a checkpoint after this iteration "
                 "(Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _handle_bad(run: Run, ok: bool) -> None:
    if ok:
        run.bad_steps = 0
        return
    run.bad_steps += 1
    run.metrics.write({"step": run.step, "event": "nonfinite_skipped",
                       "consecutive": run.bad_steps})
    say(run, f"step {run.step}: NaN/Inf loss or gradients, update skipped "
             f"({run.bad_steps} in a row)", run.info.is_main)
    if run.bad_steps >= run.cfg.train.max_bad_steps:
        raise BlindSRError(f"stopped at step {run.step}: {run.bad_steps} consecutive iterations "
                           "with NaN/Inf losses or gradients (try a lower optim lr, "
                           "train.grad_clip or train.amp none); the last checkpoint is intact")


def train(cfg: Config, resume: bool = False, progress: bool = True) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; see the module docstring."""
    from blindsr import distributed

    info = distributed.env_info()
    device = pick_device(cfg.train.device, info.local_rank, info.world)
    amp_dtype(cfg.train.amp, device)  # fail early, before joining a process group
    info = distributed.init(device.type)
    run = None
    try:
        run = _build(cfg, info, device)
        _claim_on_every_process(run)
        _make_pool(run)
        start_or_resume(run, resume)
        if run.step >= cfg.train.iterations:
            leave_finished_run(run)
        else:
            loader = _loader(run)
            _open_logs(run, run.step > 0, progress)
            with _stop_gently_on_interrupt(run):
                _loop(run, loader)
                save_run(run)
            distributed.barrier()
            run.bar.close()
            run.bar = None
            if run.stop_requested and run.step < cfg.train.iterations:
                say(run, f"{cfg.name}: stopped at step {run.step} of {cfg.train.iterations}, "
                         "checkpoint saved; run the same command again to continue")
                raise KeyboardInterrupt
            say(run, f"{cfg.name}: done, {run.step} iterations in {run.wall_time:.0f} s; "
                     f"model: {run.run_dir / 'model.safetensors'}", info.is_main)
        return TrainResult(run.run_dir, run.step, run.generator, run.ema, run.strategy,
                           dict(run.networks), run.best_psnr)
    finally:
        if run is not None:
            release_run_folder(run)
            if run.bar is not None:
                run.bar.close()
            if run.writer is not None:
                run.writer.close()
        distributed.shutdown()


def _claim_on_every_process(run: Run) -> None:
    """:func:`claim_run_folder` on the main process; the others learn whether it was refused, so
    that every process stops with the same one-line error instead of a broken collective."""
    from blindsr import distributed

    refused = None
    try:
        claim_run_folder(run)
    except BlindSRError as e:
        refused = e
    if distributed.any_flag(refused is not None, run.device):
        raise refused or BlindSRError(f"{run.run_dir}: refused by the main process (its "
                                      "message says why)")


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true",
                   help="require a checkpoint to resume from (automatic when one exists)")
    p.add_argument("--output-dir", default=None, help="parent folder of the run (output_dir)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``blindsr train``."""
    p = sub.add_parser(
        "train", help="train a model from a YAML config (resumable, multi-process)",
        usage="%(prog)s CONFIG [KEY=VALUE ...] [--resume] [--output-dir DIR] [-q]",
        description="Train from a YAML config. Overrides: key.sub=value (value parsed as YAML). "
                    "A run folder that already has checkpoints is resumed automatically. "
                    "Multi-process: torchrun --nproc_per_node=N -m blindsr train CONFIG "
                    "(effective batch = train.batch x N).")
    p.add_argument("config", nargs="?", help="YAML config file")
    _add_options(p)
    # options may also follow the overrides: the rest is parsed again in run_command
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                   help="config overrides, e.g. train.iterations=2000 optim.generator.lr=1e-4")
    p.set_defaults(run=run_command, print_help=p.print_help, usage_error=p.error)


def run_command(args: argparse.Namespace) -> int:
    """``blindsr train``: load the config with overrides, then train (or resume)."""
    rest = argparse.ArgumentParser(prog="blindsr train", add_help=False)
    _add_options(rest)
    rest.add_argument("-h", "--help", action="store_true")
    rest.add_argument("overrides", nargs="*")
    rest.error = args.usage_error  # one usage line, the command's, for every mistake
    more = rest.parse_intermixed_args(args.overrides)
    if more.help:  # `blindsr train CONFIG --help`
        args.print_help()
        return 0
    if args.config is None:
        args.usage_error("the following argument is required: config (a YAML file, e.g. "
                         "configs/tiny.yaml)")
    overrides = list(more.overrides)
    output_dir = more.output_dir if more.output_dir is not None else args.output_dir
    if output_dir is not None:
        overrides.append(f"output_dir={json.dumps(str(output_dir))}")
    cfg = load_config(args.config, overrides)
    train(cfg, resume=args.resume or more.resume, progress=not (args.quiet or more.quiet))
    return 0


__all__ = ["TrainResult", "add_parser", "apply_update", "build_generator", "derive_seed",
           "prepare_batch", "resolve_optim", "train", "validate"]
