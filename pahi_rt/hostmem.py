"""Host allocator tuning for CPU inference.

glibc hands every freed buffer above its mmap threshold straight back to the OS, so each UNet
call re-maps and page-faults (zero-fills) gigabytes of activations. Measured on the 2-core
machine (bench/NOTES.md): torch one-step 8.07 s -> 6.77 s (UNet 6.25 -> 5.40 s, TAESD decode
1.42 -> 0.94 s) once freed memory stays in the process. Same effect as starting the process with
MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ set.
"""
from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h
KEEP_BYTES = 2**31 - 1  # mallopt takes an int: keep buffers up to 2 GiB in the heap


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (Linux/glibc only). Returns whether both took."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...)
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and \
        bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))


def give_back_freed_memory() -> bool:
    """Return the heap's free memory to the OS now (glibc malloc_trim), e.g. between benchmark
    rows: `keep_freed_memory` keeps it in the process, where the next row's memory check (which
    reads MemAvailable) cannot see it. Returns whether anything was released."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False
