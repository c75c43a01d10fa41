"""Facts about the machine: one-line descriptions of it and of the device a run or benchmark
used, and the memory free for a job."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def machine_description() -> str:
    """One line naming the OS, CPU model and logical CPU count (for run summaries)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs"


def device_name(device: torch.device) -> str:
    """The device in words: CUDA with its model name, the CPU with its torch thread count."""
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type != "cpu":
        return device.type
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' * (n != 1)})"


def available_memory(meminfo: Path = Path("/proc/meminfo"),
                     cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes of host memory a new allocation can take now: Linux ``MemAvailable``, capped by a
    cgroup v2 limit when there is one (less what the group uses, not counting the page cache
    it can drop); None where the system does not say."""
    try:
        info = dict(line.split(":", 1) for line in meminfo.read_text().splitlines())
        free = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text())
            stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
            free = min(free, int(limit) - used + int(stat.get("inactive_file", 0)))
    except (OSError, ValueError):
        pass
    return max(free, 0)


__all__ = ["available_memory", "device_name", "machine_description"]
