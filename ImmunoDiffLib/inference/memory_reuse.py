"""Keep freed tensor memory in the process for reuse (glibc on Linux), instead of returning
every large buffer to the operating system.

glibc serves allocations above its mmap threshold (128 KiB to 32 MiB, adaptive) with a fresh
mmap and unmaps them on free; each denoising step allocates and frees hundreds of activation
buffers of several MB, so every step pays the kernel again to map and zero the same pages.
Raising the mmap and trim thresholds makes the buffers come from the heap and stay there: the
per-step time falls by 10-15 % at the default model size on the development CPU
(benchmarks/inference_speed.py). Buffers above 64 MiB (whole CT volumes) are still unmapped
on free, which keeps the whole lung2 run at 2.48 GB peak memory (2.43 GB without; 3.7 GB
with a 1 GiB threshold). Elsewhere (macOS, Windows, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD_BYTES = 64 << 20  # buffers up to 64 MiB come from the heap
TRIM_THRESHOLD_BYTES = 256 << 20  # free space above 256 MiB at the heap top goes back

_applied: bool | None = None


def reuse_freed_memory() -> bool:
    """Set the thresholds once per process; True where they are in effect (glibc)."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc
            return _applied
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _applied
