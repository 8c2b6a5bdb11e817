"""Process memory for programs that move frames: glibc's malloc kept from mapping and unmapping every frame buffer,
and numpy's large arrays kept off transparent huge pages.

Used by the server (``worldweave serve``), the gateway (``worldweave gateway``) and the benchmarks; an SDK process
that receives many frames may call ``tune_malloc()`` too. Plain ``ctypes`` and numpy: it belongs to no layer of its
own.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np

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
    benchmarks/bench_serving.py measures the effect.

    It also stops numpy from advising transparent huge pages (``MADV_HUGEPAGE``) for every array of 4 MiB or more.
    Where the kernel's huge-page defrag setting is ``madvise`` (a common default), the first touch of such an array
    waits while the kernel compacts memory into 2 MiB pages, and in a process that has run a while that takes tens of
    milliseconds: growing a world's packed keyframe depths (a 3 MB copy into a 5 MB array) took 23-35 ms instead of
    2-4 ms, and at 640x480 a step that sees memory averaged 63-72 ms instead of 49 ms (``benchmarks/bench_world.py``
    with ``NUMPY_MADVISE_HUGEPAGE`` 1 and 0); integration into 2M voxels, whose hash probes could gain from fewer TLB
    misses, ran the same within the noise. Returns False where ``mallopt`` is unavailable (not glibc); then only
    numpy's advice changes.
    """
    np._core.multiarray._set_madvise_hugepage(False)
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name)
    if not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold_bytes))) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold_bytes))
    )
