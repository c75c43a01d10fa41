"""Host memory: keep large freed tensors for reuse instead of handing them back to the OS.

glibc serves every allocation above its mmap threshold (at most 32 MiB by default) with a fresh
``mmap`` and unmaps it on free. A super-resolution network at output resolution makes and frees
such tensors at every layer (64 channels of a 384x384 output are 38 MB), so each layer pays
thousands of page faults and the kernel's zeroing of the new pages: a third of the forward time of
SRResNet x4 on a 96x96 input on the CPU (`benchmarks/upscale_speed.py`). Raising the mmap and trim
thresholds lets freed blocks stay in the heap and serve the next layer, which is what jemalloc or
tcmalloc preloaded into the process would do. The cost: the process keeps its peak heap until it
exits. The ``blindsr`` command turns this on for itself; library users call
`keep_freed_memory` once, if they want it for their process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap; larger ones (64 channels of a 2048x2048 output and
# up) are still mapped on demand. The heap's top is never given back (the largest C int).
LARGEST_REUSED = 1 << 30
TRIM_NEVER = (1 << 31) - 1


def keep_freed_memory() -> bool:
    """Make glibc reuse freed blocks up to 1 GiB for this process; False where that is unavailable
    (not Linux with glibc), True when it is in effect."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # trim first: a trim threshold below the mmap threshold would give the heap's top back at once
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_NEVER)
                and mallopt(M_MMAP_THRESHOLD, LARGEST_REUSED))


__all__ = ["keep_freed_memory"]
