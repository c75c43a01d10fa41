"""Saving and restoring a training run: its checkpoints (weights of every network and the EMA,
optimiser / scheduler / GradScaler / strategy / RNG / data state; files in
:mod:`blindsr.train_state`), the inference model file beside them, resuming from the newest
checkpoint, and a finished run left as it is when asked to train again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blindsr import __version__
from blindsr.config import dump_config
from blindsr.errors import BlindSRError
from blindsr.machine import device_name, machine_description
from blindsr.train_logs import flatten
from blindsr.train_run import EMA_KEY, Run, say

if TYPE_CHECKING:
    from torch import Tensor


def _state(run: Run) -> dict[str, Any]:
    from blindsr.train_state import rng_state

    pool: dict[str, Any] = {}
    if run.pool is not None:
        ps = run.pool.state_dict()
        pool = {"filled": int(ps["filled"]), "generator": run.pool_gen.get_state(),
                "pool": {k: v.cpu() for k, v in ps["pool"].items()}}
    return {
        "optimizers": {n: o.state_dict() for n, o in run.optimizers.items()},
        "schedulers": {n: s.state_dict() for n, s in run.schedulers.items()},
        "scaler": run.scaler.state_dict() if run.scaler is not None else {},
        "strategy": run.strategy.state_dict(),
        "rng": rng_state(),
        "data": {"step": run.step, "world": run.info.world, "batch": run.cfg.train.batch,
                 "seed": run.cfg.train.seed},
        "pool": pool,
        "wall_time": run.wall_time,
        "bad_steps": run.bad_steps,
        "best_psnr": run.best_psnr,
    }


def _weights(run: Run) -> dict[str, dict[str, Tensor]]:
    out = {n: net.state_dict() for n, net in run.networks.items()}
    if run.ema is not None:
        out[EMA_KEY] = run.ema.state_dict()
    return out


def _restore(run: Run, path: Path) -> None:
    from blindsr import archs
    from blindsr.train_state import STATE_KEYS, load_checkpoint, set_rng_state

    weights, state = load_checkpoint(path, need=STATE_KEYS)
    finished = int(state["step"]) >= run.cfg.train.iterations
    for name, net in [*run.networks.items(), (EMA_KEY, run.ema)]:
        if net is None:
            continue
        sd = weights.get(name, weights["generator"] if name == EMA_KEY else None)
        if sd is None:
            raise BlindSRError(f"checkpoint {path} has no weights for network {name!r}")
        mismatch = archs.state_dict_mismatch(net, sd)
        if mismatch and finished:
            raise BlindSRError(f"{run.cfg.name}: already trained for {state['step']} "
                               f"iterations with another {name} network than the configured "
                               f"one ({mismatch}); set another name= for a new run")
        if mismatch:
            raise BlindSRError(f"checkpoint {path}: the {name} weights do not fit the "
                               f"configured network ({mismatch}); this run folder holds "
                               "another model: set another name= for a new run")
        net.load_state_dict(sd, strict=True)
    for name, opt in run.optimizers.items():
        if name in state["optimizers"]:
            opt.load_state_dict(state["optimizers"][name])
        if name in state["schedulers"]:
            run.schedulers[name].load_state_dict(state["schedulers"][name])
    if run.scaler is not None and state["scaler"]:
        run.scaler.load_state_dict(state["scaler"])
    run.strategy.load_state_dict(state["strategy"])
    set_rng_state(state["rng"])
    if run.pool is not None and state["pool"]:
        run.pool_gen.set_state(state["pool"]["generator"])
        run.pool.load_state_dict({"filled": state["pool"]["filled"], "pool": {
            k: v.to(run.device) for k, v in state["pool"]["pool"].items()}})
    data = state["data"]
    changed = data["world"] != run.info.world or data["batch"] != run.cfg.train.batch
    if changed and not finished:  # a finished run trains no more: its data order is moot
        say(run, f"note: the checkpoint was made with {data['world']} process(es) x batch "
                 f"{data['batch']}; the data order differs from an uninterrupted run",
            run.info.is_main)
    run.step = int(state["step"])
    run.wall_time = float(state["wall_time"])
    run.bad_steps = int(state["bad_steps"])
    run.best_psnr = state["best_psnr"]


def summary(run: Run) -> dict[str, Any]:
    """The training summary stored in the model files' metadata."""
    import torch

    cfg = run.cfg
    return {
        "config": cfg.name,
        "strategy": cfg.strategy.name,
        "iterations": run.step,
        "wall_time_s": round(run.wall_time, 1),
        "machine": machine_description(),
        "device": device_name(run.device),
        "processes": run.info.world,
        "batch": cfg.train.batch,
        "effective_batch": cfg.train.batch * run.info.world,
        "patch": cfg.train.patch,
        "data": [s.path for s in cfg.data.train],
        "degradation": cfg.degradation.kind if cfg.degradation.kind != "preset"
        else cfg.degradation.preset,
        "ema": cfg.train.ema,
        "seed": cfg.train.seed,
        "init": cfg.model.init,
        "blindsr": __version__,
        "torch": torch.__version__,
    }


def save_run(run: Run) -> None:
    """Checkpoint the run at its step and rewrite its ``model.safetensors`` (main process)."""
    if not run.info.is_main:
        return
    from blindsr.train_state import save_checkpoint

    save_checkpoint(run.run_dir, run.step, _weights(run), _state(run),
                    run.cfg.train.keep_checkpoints)
    _write_model(run)


def _write_model(run: Run) -> None:
    """The run's inference model (its EMA when kept) with the training summary."""
    from blindsr.checkpoint import save_model

    save_model(run.eval_model, run.run_dir / "model.safetensors", summary(run))


def _make_ema(run: Run) -> None:
    import copy

    if run.cfg.train.ema > 0:
        run.ema = copy.deepcopy(run.generator).eval()
        for p in run.ema.parameters():
            p.requires_grad_(False)


LOCK = ".lock"  # in the run folder: held (flock) by the process training it


def claim_run_folder(run: Run) -> None:
    """Create the run folder and hold an exclusive lock on it while this process trains
    (main process; released when it exits or :func:`release_run_folder` runs), so that a second
    training of the same run stops with one line instead of racing this one's checkpoints."""
    import os

    from blindsr.paths import prepare_output
    from blindsr.train_state import CHECKPOINTS

    if not run.info.is_main:
        return
    prepare_output(run.run_dir, "run folder", folder=True)
    prepare_output(run.run_dir / CHECKPOINTS, "checkpoint folder", folder=True)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no guard
        return
    try:
        f = open(run.run_dir / LOCK, "a+")  # noqa: SIM115 (held for the whole run)
    except OSError as e:
        raise BlindSRError(f"cannot write in the run folder {run.run_dir}: "
                           f"{e.strerror or e}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise BlindSRError(f"{run.run_dir} is in use by another training (process {pid}); "
                           "wait for it to finish, or set another name= for a new run") from None
    except OSError as e:  # a file system without flock (some network mounts): no guard
        f.close()
        say(run, f"note: cannot lock {run.run_dir} ({e.strerror or e}): a second training of "
                 "this run would not be refused")
        return
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    run.lock = f
    # forked children (data-loader workers) share the lock: they let go of it at once, so that
    # a run killed with -9 can be restarted before its orphaned workers have noticed
    os.register_at_fork(after_in_child=f.close)


def release_run_folder(run: Run) -> None:
    """Let go of the lock :func:`claim_run_folder` took."""
    if run.lock is not None:
        run.lock.close()
        run.lock = None


def start_or_resume(run: Run, resume: bool) -> None:
    """Resume from the newest checkpoint (always when one exists), or start fresh."""
    from blindsr import distributed
    from blindsr.train_state import latest_checkpoint, remove_partial

    main = run.info.is_main
    if main:
        remove_partial(run.run_dir)
    distributed.barrier()
    ckpt = latest_checkpoint(run.run_dir)
    if resume and ckpt is None:
        raise BlindSRError(f"--resume: no checkpoint in {run.run_dir / 'checkpoints'}")
    step = int(ckpt.name.split("_")[1]) if ckpt is not None else -1
    if not distributed.all_equal(step, run.device):
        raise BlindSRError("processes see different checkpoints: the run folder must be on a "
                           "file system shared by all of them")
    if ckpt is None:  # a fresh start: every process takes rank 0's initial weights
        distributed.broadcast_modules(run.networks.values())
    _make_ema(run)
    if ckpt is not None:
        _restore(run, ckpt)
        if run.step < run.cfg.train.iterations:  # a finished run says so itself
            say(run, f"resuming {run.cfg.name} from step {run.step} ({ckpt})", main)


def _changed_keys(run: Run) -> list[str]:
    """Config keys whose values differ from the run folder's ``config.yaml``."""
    import yaml

    try:
        old = flatten(yaml.safe_load((run.run_dir / "config.yaml").read_text()) or {})
    except (OSError, yaml.YAMLError):
        return []
    new = flatten(yaml.safe_load(dump_config(run.cfg)))
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


# Settings a resumed run cannot apply: its weights come from its own checkpoint.
FIXED_ON_RESUME = ("model.init", "model.grow")


def note_changes(run: Run) -> None:
    """Tell the user which settings differ from the run folder's config; those a resumed run
    cannot apply (:data:`FIXED_ON_RESUME`) are put back to the run's own values, so that its
    config and model record what it really started from."""
    import yaml

    changed = _changed_keys(run)
    fixed = [k for k in changed if k in FIXED_ON_RESUME]
    if fixed:
        old = (yaml.safe_load((run.run_dir / "config.yaml").read_text()) or {}).get("model")
        for key in fixed:
            field = key.split(".")[1]
            setattr(run.cfg.model, field, (old or {}).get(field, {"grow": False}.get(field)))
        say(run, f"note: not applied when resuming: {', '.join(fixed)} (the run goes on from "
                 "its own checkpoint; set another name= to start from other weights)")
    applied = [k for k in changed if k not in FIXED_ON_RESUME]
    if applied:
        say(run, f"note: config changed since the last run: {', '.join(applied[:8])}")


def leave_finished_run(run: Run) -> None:
    """A finished run asked to train: its config and model stay as they are (only a model
    file that a kill kept the last run from writing is written)."""
    from blindsr.checkpoint import read_checkpoint

    cfg, main = run.cfg, run.info.is_main
    ignored = _changed_keys(run) if main else []
    note = f"; not applied: {', '.join(ignored[:8])}" if ignored else ""
    say(run, f"{cfg.name}: already trained for {run.step} iterations "
             f"(train.iterations={cfg.train.iterations}), nothing to do{note} (raise "
             "train.iterations to train on, or set another name= for a new run)", main)
    try:
        written = json.loads(read_checkpoint(run.run_dir / "model.safetensors")[1]["summary"])
        stale = written.get("iterations") != run.step
    except (BlindSRError, KeyError, ValueError, AttributeError):
        stale = True
    if stale and main:
        _write_model(run)
