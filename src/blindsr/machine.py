"""One-line descriptions of the machine and device a run or benchmark used."""

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


__all__ = ["device_name", "machine_description"]
