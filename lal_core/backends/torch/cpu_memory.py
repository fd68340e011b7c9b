"""Freed memory kept for the next training step, on Linux with glibc.

glibc hands a freed block over its mmap threshold back to the OS (the threshold grows with the
blocks freed, to 32 MB at most), and the next block of that size is faulted in again, a page
fault per 4 KB. A training step frees and allocates the same large tensors every step: small's
(V, C) gradients alone are 77 MB each in float32, and at batch 16 a step page-faulted about
250,000 times (1 GB), medium's 2.4 million. With both thresholds raised, freed blocks stay in
the heap for the next step: small's step went 1.07-1.20x faster, medium's 1.7-1.8x, for a peak
RSS 1-10% higher (bench/README.md, Training). The process then keeps its memory until it ends;
so this is for training processes, which reach their peak every step anyway.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_LIMIT = 2**31 - 1  # mallopt takes an int: blocks over 2 GB are still mapped apart


def keep_freed_memory() -> bool:
    """Ask the C library to keep freed blocks for reuse rather than return them to the OS.
    True where it took (Linux with glibc); elsewhere (macOS, musl's stub) nothing changes."""
    return set_malloc_thresholds(_LIMIT, _LIMIT)


def set_malloc_thresholds(mmap_bytes: int, trim_bytes: int) -> bool:
    """glibc's mmap threshold (blocks from this size up are mapped apart and unmapped when
    freed) and trim threshold (free memory at the heap's top over this is returned), fixed from
    now on. True where they took."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_bytes)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_bytes)
    )
