"""Data-parallel training without wrapping models: torchrun env set-up, gradient averaging and
weight broadcast by hand.

Strategies call their networks directly and never see DistributedDataParallel: after each
backward, the loop averages the gradients of the parameters it is about to step
(:func:`all_reduce_grads`, one flat buffer per dtype), so every replica takes the same step from
the same weights (broadcast from rank 0 at start, :func:`broadcast_modules`).

Each process loads its own shard of the data with ``train.batch`` samples per step, so the
effective batch of one optimiser step is ``train.batch x world size``.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from blindsr.errors import BlindSRError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (a single process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise BlindSRError(f"environment variable {name}={value!r} is not an integer") from None


def env_info() -> DistInfo:
    """Rank, world size and local rank from the torchrun variables (defaults: one process)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise BlindSRError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank, world, _env_int("LOCAL_RANK", rank))


def init(device_type: str) -> DistInfo:
    """Join the process group described by the torchrun environment (NCCL for CUDA, gloo
    otherwise); a no-op for a single process or when already initialised."""
    info = env_info()
    if not info.enabled:
        return info
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), info.local_rank)
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise BlindSRError(f"WORLD_SIZE={info.world} but {', '.join(missing)} unset: "
                           "launch with torchrun --nproc_per_node=N -m blindsr train CONFIG")
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend, init_method="env://", rank=info.rank,
                            world_size=info.world)
    return info


def shutdown() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _unique(tensors: Iterable[Tensor]) -> list[Tensor]:
    seen, out = set(), []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def all_reduce_grads(params: Iterable[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over all processes, one flat buffer per dtype.

    A parameter without a gradient counts as zero; it gets the average when any process had a
    gradient for it, and stays ``None`` when none had.
    """
    if not active():
        return
    world = dist.get_world_size()
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for p in _unique(params):
        by_dtype.setdefault(p.dtype, []).append(p)
    for group in by_dtype.values():
        ref = group[0]
        parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                 for p in group]
        present = torch.tensor([p.grad is not None for p in group], dtype=ref.dtype,
                               device=ref.device)
        flat = torch.cat([*parts, present])
        dist.all_reduce(flat)
        flat.div_(world)
        offset = 0
        had = flat[-len(group):].tolist()
        for p, seen in zip(group, had, strict=True):
            n = p.numel()
            if seen > 0:
                avg = flat[offset: offset + n].view(p.shape)
                if p.grad is None:
                    p.grad = avg.clone()
                else:
                    p.grad.copy_(avg)
            offset += n


def any_flag(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is True on any process (the local flag without a process group)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_equal(value: int, device: torch.device) -> bool:
    """True when every process holds the same integer ``value``."""
    if not active():
        return True
    t = torch.tensor([value, -value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t[0].item()) == value and int(-t[1].item()) == value


def mean_across(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Each value averaged over the processes (``values`` itself without a process group).
    Every process must hold the same keys; where they do not, the local values come back."""
    if not active():
        return values
    keys = sorted(values)
    if not all_equal(zlib.crc32("\n".join(keys).encode()), device):
        return values
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    mean = dict(zip(keys, (t / dist.get_world_size()).tolist(), strict=True))
    return {k: mean[k] for k in values}


def broadcast_modules(modules: Iterable[nn.Module]) -> None:
    """Copy rank 0's parameters and buffers to every process (one flat buffer per dtype)."""
    if not active():
        return
    tensors = _unique(t for m in modules for t in (*m.parameters(), *m.buffers()))
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    with torch.no_grad():
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.broadcast(flat, src=0)
            offset = 0
            for t in group:
                t.copy_(flat[offset: offset + t.numel()].view(t.shape))
                offset += t.numel()


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if active():
        dist.barrier()
