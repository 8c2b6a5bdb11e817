"""The voxel map's change log: which voxels each version added, changed or removed.

Entries are kept for a window of versions and a cap on the total number of keys, so memory stays bounded.
``net_since(v)`` folds the retained entries into the net difference between the map at version ``v`` and now;
when ``v`` is older than the window it returns ``None`` and the caller answers with a full snapshot.

The log holds keys only; the values travel at query time: every voxel a fused frame touches is logged (added or
changed), and its colour, weight and confidence change together, so ``VoxelMap.changes_since`` gathers each changed
voxel's current values, ``VoxelSet.confidence`` included, and a follower that filters by confidence sees a voxel cross
its level.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

ADDED, CHANGED, REMOVED = 0, 1, 2


@dataclass(frozen=True)
class NetChanges:
    """Keys that differ between version ``since`` and the current version, as int64 arrays."""

    added: np.ndarray
    changed: np.ndarray
    removed: np.ndarray


@dataclass(frozen=True)
class _Entry:
    version: int
    keys: np.ndarray
    events: np.ndarray


class ChangeLog:
    """Per-version key events with a retention window.

    ``retention_versions``: how many recent versions can be asked about exactly. ``max_keys``: a cap on the keys
    held in all entries together (old entries are dropped first when it is exceeded).
    """

    def __init__(self, retention_versions: int = 256, max_keys: int = 20_000_000) -> None:
        if retention_versions < 1:
            raise ValueError(f"retention_versions must be >= 1, got {retention_versions}")
        self.retention_versions = retention_versions
        self.max_keys = max_keys
        self._entries: deque[_Entry] = deque()
        self._total_keys = 0
        self._oldest_exact = 0

    @property
    def total_keys(self) -> int:
        """Keys held in all retained entries together (an int64 key and an int8 event each)."""
        return self._total_keys

    @property
    def oldest_exact_version(self) -> int:
        """The oldest ``v`` for which ``net_since(v)`` is exact."""
        return self._oldest_exact

    def record(self, version: int, added: np.ndarray, changed: np.ndarray, removed: np.ndarray) -> None:
        """Log what ``version`` did (it must be newer than every logged version)."""
        keys = np.concatenate([added, changed, removed]).astype(np.int64, copy=False)
        events = np.repeat(np.array([ADDED, CHANGED, REMOVED], np.int8), [len(added), len(changed), len(removed)])
        self._entries.append(_Entry(version, keys, events))
        self._total_keys += len(keys)
        while self._entries and (
            len(self._entries) > self.retention_versions or (self._total_keys > self.max_keys and len(self._entries) > 1)
        ):
            dropped = self._entries.popleft()
            self._total_keys -= len(dropped.keys)
            self._oldest_exact = dropped.version

    def net_since(self, version: int) -> NetChanges | None:
        """The net change from ``version`` to now, or ``None`` when ``version`` is older than the window."""
        if version < self._oldest_exact:
            return None
        entries = [e for e in self._entries if e.version > version]
        if not entries:
            empty = np.empty(0, np.int64)
            return NetChanges(empty, empty, empty)
        keys = np.concatenate([e.keys for e in entries])
        events = np.concatenate([e.events for e in entries])
        unique, first = np.unique(keys, return_index=True)
        last_from_end = np.unique(keys[::-1], return_index=True)[1]
        last = len(keys) - 1 - last_from_end
        existed_before = events[first] != ADDED
        exists_now = events[last] != REMOVED
        return NetChanges(
            added=unique[~existed_before & exists_now],
            changed=unique[existed_before & exists_now],
            removed=unique[existed_before & ~exists_now],
        )

    def clear(self, version: int) -> None:
        """Forget all entries; only ``version`` and later can be asked about exactly (after a load)."""
        self._entries.clear()
        self._total_keys = 0
        self._oldest_exact = version
