"""A file of slots, one per process, in which cooperating processes on one machine say how many CPU cores their engine
work holds (``bridge.cores.share_node_cores``: a cluster's replicas on one node).

Each process writes only its own slot (its pid and its count, two int64s, written in place through a shared memory
map) and reads the others'; a slot whose process is gone counts nothing and is taken by the next process that joins.
Counts are read without a lock: like the cores count within a process, they are advice, never a wait. POSIX only
(``fcntl``): elsewhere joining raises ``OSError``.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

SLOTS = 256
"""Processes one file holds at once."""
SLOT_BYTES = 16
"""Bytes of one slot: the pid and the cores held, int64 each."""


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine, in this pid namespace)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class CoreSlots:
    """This process's slot in the slot file at ``path`` (created, mode 0600, where missing), taken at construction:
    the first slot that is empty or whose process is gone. ``RuntimeError`` when all ``SLOTS`` are taken by live
    processes; ``OSError`` where the file cannot be made or mapped, or the platform has no ``fcntl``."""

    def __init__(self, path: Path) -> None:
        try:
            import fcntl
        except ImportError:
            raise OSError("no fcntl on this platform: processes cannot share a core count") from None
        size = SLOTS * SLOT_BYTES
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)  # processes joining at once take different slots
            if os.fstat(descriptor).st_size < size:
                os.ftruncate(descriptor, size)
            self._map = mmap.mmap(descriptor, size)
            self._slots = np.ndarray((SLOTS, 2), np.int64, buffer=self._map)
            free = [index for index, pid in enumerate(self._slots[:, 0]) if pid == 0 or not _alive(int(pid))]
            if not free:
                raise RuntimeError(f"every one of the {SLOTS} slots of {path} is taken by a running process")
            self.index = free[0]
            self.pid = os.getpid()
            self._slots[self.index] = (self.pid, 0)
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            os.close(descriptor)  # the map stays

    def publish(self, held: int) -> None:
        """Say this process holds ``held`` cores now."""
        self._slots[self.index, 1] = held

    def others_held(self) -> int:
        """Cores the other live processes of the file say they hold now."""
        held = self._slots[:, 1]
        total = 0
        for index in np.flatnonzero(held > 0):
            if index != self.index and _alive(int(self._slots[index, 0])):
                total += int(held[index])
        return total

    def leave(self) -> None:
        """Empty this process's slot (it holds nothing and the slot is free for the next process)."""
        self._slots[self.index] = (0, 0)
