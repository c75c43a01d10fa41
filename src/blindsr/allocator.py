"""Host memory: keep large freed tensors for reuse instead of handing them back to the OS.

glibc serves allocations above its mmap threshold (which adapts, up to 32 MiB) with a fresh
``mmap`` and unmaps them on free, and it trims the heap's free top back to the OS. A
super-resolution network at output resolution makes and frees such tensors at every layer (64
channels of a 384x384 output are 38 MB), so each forward pays thousands of page faults and the
kernel's zeroing of the new pages (`benchmarks/RESULTS.md`, "Upscaling speed"). Raising the mmap
and trim thresholds lets freed blocks stay in the heap and serve the next layer, as jemalloc or
tcmalloc preloaded into the process would. The cost: the process keeps its peak heap until it
exits. The ``blindsr`` command turns this on for itself; library users call `keep_freed_memory`
once, if they want it for their process.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap (the main thread's; other threads' arenas still map
# blocks over 64 MiB); larger ones (64 channels of a 2048x2048 output and up) are mapped on
# demand. Older glibc refuses thresholds over 32 MiB: then that is used.
LARGEST_REUSED = (1 << 30, 32 << 20)
# The heap's top goes back to the OS only when this much of it is free (the largest C int).
TRIM_ABOVE = (1 << 31) - 1
# Settings of the user's own that this must not override.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES",
                 "LD_PRELOAD")


def keep_freed_memory() -> bool:
    """Make glibc reuse freed blocks of up to 1 GiB in this process. Returns True when that is in
    effect; False, changing nothing, without glibc or when the environment already chooses the
    allocator or its thresholds (``MALLOC_*_THRESHOLD_``, ``GLIBC_TUNABLES``, ``LD_PRELOAD``)."""
    if platform.libc_ver()[0] != "glibc" or any(os.environ.get(k) for k in USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # the mmap threshold first: if no value is accepted, nothing has changed (a trim threshold
    # alone would switch off glibc's adaptive mmap threshold and make things worse)
    if not any(mallopt(M_MMAP_THRESHOLD, size) for size in LARGEST_REUSED):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE))


__all__ = ["keep_freed_memory"]
