"""One training run's live state, shared by the loop (:mod:`blindsr.train`) and its
persistence (:mod:`blindsr.train_resume`): networks, optimisers, schedules, counters, logs, and
how the run speaks to the user."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blindsr.config import Config
from blindsr.optim import Scheduler
from blindsr.train_logs import MetricsLog

if TYPE_CHECKING:  # torch is imported on use, so that `blindsr --help` stays fast
    import torch
    from torch import nn

    from blindsr import distributed
    from blindsr.strategies import Strategy

EMA_KEY = "generator_ema"  # = train_state.GENERATOR_EMA (that module imports torch)


@dataclass
class TrainResult:
    """What :func:`train` leaves behind (for tests and scripts)."""

    run_dir: Path
    step: int
    generator: nn.Module
    ema: nn.Module | None
    strategy: Strategy
    networks: dict[str, nn.Module] = field(default_factory=dict)
    best_psnr: float | None = None


@dataclass
class Run:
    """Everything one process of a training run holds while it trains."""

    cfg: Config
    info: distributed.DistInfo
    device: torch.device
    run_dir: Path
    strategy: Strategy
    networks: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Scheduler]
    ema: nn.Module | None
    scaler: Any
    autocast: Any
    second_order: Any = None
    pool: Any = None
    pool_gen: torch.Generator | None = None
    step: int = 0
    wall_time: float = 0.0
    bad_steps: int = 0
    applied: int = 0  # updates this process applied since it started (not checkpointed)
    best_psnr: float | None = None
    writer: Any = None
    metrics: MetricsLog | None = None
    bar: Any = None
    stop_requested: bool = False  # set by a first Ctrl-C: checkpoint and stop
    lock: Any = None  # the open lock file of the run folder (main process)

    @property
    def generator(self) -> nn.Module:
        return self.networks["generator"]

    @property
    def eval_model(self) -> nn.Module:
        return self.ema if self.ema is not None else self.generator


def say(run: Run | None, message: str, main: bool = True) -> None:
    """Print a line for the user (above the progress bar), from the main process only."""
    if not main:
        return
    if run is not None and run.bar is not None:
        run.bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)
