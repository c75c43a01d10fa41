"""What a training run logs: running means of scalars, ``metrics.jsonl`` rows, the LR | SR | HR
image grid, and flattened config keys (to report what a resumed run changed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blindsr.atomic import write_atomic

if TYPE_CHECKING:
    from torch import Tensor, nn


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": value}."""
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


class Meter:
    """Running sums of logged scalars (tensors stay on device until read)."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def add(self, logs: dict[str, Any]) -> None:
        """Add one value per key (a tensor or a number)."""
        from torch import Tensor

        for k, v in logs.items():
            v = v.detach().float() if isinstance(v, Tensor) else float(v)
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        """The mean of each key since the last call, then start over."""
        out = {k: float(v) / self.counts[k] for k, v in self.sums.items()}
        self.sums, self.counts = {}, {}
        return out


class MetricsLog:
    """``metrics.jsonl``: one JSON object per row, each with ``step``; rank 0 only. A resumed
    run keeps the rows up to its step (and drops a line cut by a kill); a fresh one starts
    empty."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None) -> None:
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        rows = []
        if resume_step is not None and path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                if isinstance(row, dict) and row.get("step", 0) <= resume_step:
                    rows.append(line)
        write_atomic(path, "".join(r + "\n" for r in rows))

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (nothing when disabled)."""
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row, sort_keys=False) + "\n")


def sample_grid(model: nn.Module, batch: dict[str, Tensor], scale: int, n: int = 4) -> Tensor:
    """(3, n*P, 3*P) image: rows of LR (nearest-upsampled) | SR | HR for the first samples
    with an HR (the first samples, HR black, when the batch is all LR-only)."""
    import torch
    import torch.nn.functional as F

    keep = batch["has_hr"].nonzero().flatten()[:n]
    if keep.numel() == 0:
        keep = torch.arange(min(n, batch["lr"].shape[0]), device=batch["lr"].device)
    lr, hr = batch["lr"][keep].float(), batch["hr"][keep].float()
    hr = hr[..., : lr.shape[-2] * scale, : lr.shape[-1] * scale]
    was = model.training
    model.eval()
    with torch.no_grad():
        sr = model(lr.contiguous()).float().clamp(0, 1)
    model.train(was)
    up = F.interpolate(lr, scale_factor=scale, mode="nearest")
    rows = torch.cat([up, sr, hr], dim=-1)
    return torch.cat(list(rows), dim=-2).cpu()


__all__ = ["Meter", "MetricsLog", "flatten", "sample_grid"]
