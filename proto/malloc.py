"""Process memory for programs that move frames: glibc's malloc kept from mapping and unmapping every frame buffer.

Used by the server (``worldweave serve``), the gateway (``worldweave gateway``) and the benchmarks; an SDK process
that receives many frames may call ``tune_malloc()`` too. Plain ``ctypes``: it belongs to no layer of its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
"""glibc ``mallopt`` parameter: free memory at the top of the heap beyond this is given back to the system."""
M_MMAP_THRESHOLD = -3
"""glibc ``mallopt`` parameter: allocations at least this large get their own mmap (and munmap when freed)."""


def tune_malloc(mmap_threshold_bytes: int = 32 << 20, trim_threshold_bytes: int = 64 << 20) -> bool:
    """Keep per-frame buffers in glibc's heap instead of a fresh mmap (and page faults) per allocation.

    A 640x480 RGB frame (0.9 MB) is above glibc's default mmap threshold, so each copy of it on its way through
    gRPC is a new mapping whose pages fault in on first touch and are unmapped when freed. Raising the mmap
    threshold alone is not enough: glibc then trims the freed memory at the top of the heap right away, so the
    trim threshold is raised with it. The heap may keep up to ``trim_threshold_bytes`` of free memory per arena.
    benchmarks/bench_serving.py measures the effect. Returns False where ``mallopt`` is unavailable (not glibc);
    then nothing changes.
    """
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name)
    if not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold_bytes))) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold_bytes))
    )
