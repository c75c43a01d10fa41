"""Freed host memory is kept for reuse: repeated forwards stop faulting in fresh pages."""

import os
import platform
import subprocess
import sys

import pytest

from blindsr import allocator, cli

# Page faults of the quietest of forwards 3-8 of a small network at output resolution (16
# channels of a 384x384 image: 9 MB tensors), in a fresh interpreter with or without
# keep_freed_memory(). (One forward can still fault while the heap settles; every default one
# does.)
PROBE = """
import resource, sys, torch
from blindsr.allocator import keep_freed_memory
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    assert keep_freed_memory()
nn = torch.nn
net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.LeakyReLU(0.1),
                    nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 3, 3, padding=1))
x = torch.rand(1, 3, 384, 384)
counts = []
with torch.inference_mode():
    for _ in range(8):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net(x)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(counts[2:]))
"""


def faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, env=env)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_kept_memory_serves_the_next_forward_without_new_pages():
    default, kept = faults("default"), faults("keep")
    assert default > 1000  # by default glibc trims the heap and faults the pages in again
    assert kept < default / 20


def test_the_users_own_allocator_settings_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert not allocator.keep_freed_memory()


def test_the_command_line_keeps_freed_memory(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True))
    assert cli.main(["models"]) == 0
    assert calls == [True]
