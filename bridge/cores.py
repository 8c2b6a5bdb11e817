"""The CPU cores one engine call may spread its work over: this process's cores less those other engine work holds.

Engine work holds one core while it runs (``holding_core``: ``World.step`` holds one for the whole step, and a
splittable kernel holds one for itself when called outside a step). A kernel that can split its work over threads
asks ``threads_for`` and holds the extra cores it takes until it returns: ``VoxelMap.integrate`` with
``integrate_threads=None``, and through ``split_call`` (bands of rows, pixels or passes) ``generators.kept_depth``'s
footprint fits, the weave's per-pixel kernels, anchor sampling, the push-pull fill and ``continue``'s ray-plane meeting
and nearest-kept-pixel passes; each gives the same result on any number of threads. So one world stepping alone on a
2-core machine runs them on 2 threads, and worlds stepping at once on one thread each: their threads would only take
turns on the same cores, paying the split's overhead.

The count is advisory (nothing waits for a core) and process-wide; threads outside the engine are not counted, nor
are other processes. The cores a process counts are those it may run on (its affinity mask) and no more than its
cgroup's CPU quota allows (``cgroup_quota``: a container's CPU limit, as Docker's ``--cpus`` and Kubernetes'
``limits.cpu`` set it, leaves the affinity mask at every core of the host). A process that shares the machine with
others by agreement counts only its share (``limit_cores``). Processes that share it more closely count together
(``share_node_cores``: a cluster's replicas on one node): each says in a file what its engine work holds
(``core_slots``), and a split takes the machine's cores less what all of them hold. So a world stepping alone in one
replica splits its kernels over the node's cores, and worlds stepping at once in two replicas on two cores take one
thread each.

numpy's BLAS runs on the calling thread only, from the first engine call on (``holding_core``): the engine's matrix
products are points against 3-vectors and 3x3 rotations, too small to gain from a second thread, and OpenBLAS's
worker thread spins for a while after each call it shares, taking a core the count says is free. In the room walk of
``benchmarks/bench_world.py`` at 320x240 the spinning was a tenth of the process's CPU time and the step's median
fell from 12.8 to 11.7 ms without it (``docs/performance.md``).
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from worldweave.bridge.cgroup_quota import cgroup_cpu_quota
from worldweave.bridge.core_slots import CoreSlots

logger = logging.getLogger(__name__)

MAX_SPLIT_THREADS = 4
"""Most threads one ``split_call`` takes."""

_lock = threading.Lock()
_held = 0
"""Cores engine work holds now, over all threads."""
_depth = threading.local()
"""Per thread: how many ``holding_core`` blocks it is inside (a thread holds one core however deep)."""
_blas_on_one_thread = False
"""Whether numpy's BLAS has been limited to the calling thread (``holding_core``)."""
_share: int | None = None
"""The most cores this process counts (``limit_cores``); None: every core it may run on."""
_node: CoreSlots | None = None
"""This process's slot in the node's count (``share_node_cores``); None: it counts alone."""


@functools.cache
def _quota_cores() -> int | None:
    """Whole CPUs this process's cgroup quota allows (``cgroup_cpu_quota`` rounded down, at least 1), read once;
    None: no quota."""
    quota = cgroup_cpu_quota()
    return None if quota is None else max(1, math.floor(quota))


def _usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which ``taskset`` and cpusets narrow;
    ``os.cpu_count()`` where the platform has none), at most the whole CPUs its cgroup's quota allows
    (``cgroup_cpu_quota``, read once), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _quota_cores()
    return max(1, cores if quota is None else min(cores, quota))


def machine_cores() -> int:
    """CPU cores this process counts: those it may run on, at most the whole CPUs its cgroup's quota allows
    (``cgroup_cpu_quota``) and its share (``limit_cores``), at least 1. The server's default engine threads."""
    cores = _usable_cores()
    return cores if _share is None else min(cores, _share)


def default_node_file() -> Path:
    """The file the processes of one user on this machine count their cores in (``share_node_cores``): in
    ``/dev/shm`` where there is one (memory, never written to disk), else the temporary folder."""
    folder = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    user = os.getuid() if hasattr(os, "getuid") else "user"  # not POSIX: no node count (``CoreSlots``) anyway
    return folder / f"worldweave-cores-{user}"


def share_node_cores(path: Path | None = None) -> None:
    """Count engine work's cores together with the other processes on this machine that share the file at ``path``
    (``default_node_file()`` when None), from now on: a split takes the cores this process may run on less those
    engine work holds in all of them, not this process's share (``limit_cores``, which still sets its default engine
    threads). The slot is given up when the process exits; a process forked from this one counts alone. Where the
    file cannot be made or read, or has no free slot, the process counts alone and says so in a warning."""
    global _node
    path = default_node_file() if path is None else path
    with _lock:
        if _node_slots() is None:
            try:
                _node = CoreSlots(path)
            except (OSError, RuntimeError) as error:
                logger.warning("counting cores alone, not with the node's other processes (%s): %s", path, error)
                return
            _node.publish(_held)
            atexit.register(_node.leave)


def _node_slots() -> CoreSlots | None:
    """This process's slot in the node's count, None where it counts alone (or is a fork of a process that joined)."""
    return _node if _node is not None and _node.pid == os.getpid() else None


def _split_cores() -> int:
    """Cores a split may spread over, before what engine work holds: the cores this process may run on where it
    counts with the node (``share_node_cores``), else those it counts (``machine_cores``)."""
    return _usable_cores() if _node_slots() is not None else machine_cores()


def limit_cores(share: int | None) -> None:
    """Count at most ``share`` cores from now on, process-wide (None: every core the process may run on): for a
    process that shares the machine with others by agreement. What is counted sets how far splittable kernels
    split and the server's default engine threads (``server.scheduling.default_engine_threads``)."""
    global _share
    if share is not None and not (isinstance(share, int) and share >= 1):
        raise ValueError(f"a core share must be a whole number >= 1 (or None), got {share!r}")
    _share = share


def held_cores() -> int:
    """Cores engine work holds now, over all threads."""
    return _held


def _keep_blas_on_calling_thread() -> None:
    """Limit numpy's BLAS libraries to one thread, process-wide (``threadpoolctl``), once."""
    global _blas_on_one_thread
    if not _blas_on_one_thread:
        threadpool_limits(limits=1, user_api="blas")
        _blas_on_one_thread = True


def _add(count: int) -> None:
    global _held
    with _lock:
        _held += count
        _publish()


def _publish() -> None:
    """Say in the node's count what this process holds now (under ``_lock``), where it counts with the node."""
    node = _node_slots()
    if node is not None:
        node.publish(_held)


@contextmanager
def holding_core() -> Iterator[None]:
    """Count the calling thread as engine work holding one core for the block; nested blocks count once. The first
    block limits numpy's BLAS to the calling thread (see the module's docstring)."""
    depth = getattr(_depth, "value", 0)
    if depth == 0:
        _keep_blas_on_calling_thread()
        _add(1)
    _depth.value = depth + 1
    try:
        yield
    finally:
        _depth.value = depth
        if depth == 0:
            _add(-1)


@contextmanager
def threads_for(requested: int | None, limit: int) -> Iterator[int]:
    """Threads for one splittable call, the calling thread holding a core (``holding_core``) for the block:
    ``requested`` when given, else its own core plus the cores no engine work holds (at most ``limit`` in all),
    which it holds until the block ends."""
    global _held
    with holding_core():
        if requested is not None:
            yield requested
            return
        with _lock:
            node = _node_slots()
            free = _split_cores() - _held - (0 if node is None else node.others_held())
            extra = max(0, min(limit - 1, free))
            _held += extra
            _publish()
        try:
            yield 1 + extra
        finally:
            _add(-extra)


@contextmanager
def holding_every_core() -> Iterator[None]:
    """Hold every core for the block (``threads_for``), so that the splittable kernels the calling thread runs in it
    take one thread each, as when other engine work holds the other cores."""
    with threads_for(None, _split_cores()):
        yield


def even_bands(count: int, parts: int) -> np.ndarray:
    """int64 (parts + 1,) bounds of ``parts`` bands of ``count`` items (rows, pixels) as even as whole items allow:
    band t is ``bounds[t] .. bounds[t + 1] - 1``."""
    return np.arange(parts + 1, dtype=np.int64) * count // parts


def split_call(serial: Callable[..., None], banded: Callable[..., None], count: int, *args: object,
               limit: int = MAX_SPLIT_THREADS, bands: Callable[[int, int], np.ndarray] = even_bands) -> None:
    """Run a kernel over items ``0 .. count - 1`` (rows, pixels) on the threads ``threads_for(None, limit)`` gives:
    ``serial(0, count, *args)`` on one, else ``banded(bands(count, threads), *args)``, whose bands of items run a
    thread each (``serial`` over each band)."""
    with threads_for(None, limit) as threads:
        if threads == 1:
            serial(0, count, *args)
        else:
            banded(bands(count, threads), *args)
