"""``PointCloudMirror``: a local copy of a world's voxel cloud, kept in step from the point-cloud stream.

    mirror = PointCloudMirror()
    mirror.update(client.stream_point_cloud(world_id, mirror.version))      # catch up once (a snapshot first)
    for version in mirror.follow(client.stream_point_cloud(world_id, mirror.version, follow=True)):
        positions_m, colors = mirror.points()                                 # after every new version

Chunks of one version are buffered and applied together when its last chunk arrives, so the mirror always holds
the cloud of exactly ``version``. A snapshot replaces everything; a change set removes, recolours and adds voxels.
Voxels are kept sorted by key (int64, ``proto.voxel_keys.unpack`` decodes them): equality with the server's cloud
is a comparison of sorted arrays. Transport-agnostic: ``apply`` takes decoded chunks from ``WorldClient`` or
``AsyncWorldClient``. Not thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from worldweave.proto.voxel_keys import key_centers
from worldweave.sim_clients.world_state import PointCloudChunk


class MirrorError(RuntimeError):
    """The chunks do not continue the mirror's version (a missed chunk, another world, a server restart): start
    again from a snapshot (``PointCloudMirror()`` and ``since_version`` 0)."""


class PointCloudMirror:
    """A world's voxels as sorted columns: ``keys`` int64 (N,), ``colors`` uint8 (N, 3), ``flags`` uint8 (N,)
    (source: 0 seed, 1 generated, 2 inserted), at ``version``, with ``voxel_size_m`` (0 before the first chunk)."""

    def __init__(self) -> None:
        self.version = 0
        self.voxel_size_m = 0.0
        self.keys = np.empty(0, dtype=np.int64)
        self.colors = np.empty((0, 3), dtype=np.uint8)
        self.flags = np.empty(0, dtype=np.uint8)
        self._pending: list[PointCloudChunk] = []
        self._positions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"PointCloudMirror({len(self)} voxels, version {self.version}, voxel_size_m={self.voxel_size_m})"

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """Voxel centres float32 (N, 3), world metres, and colours uint8 (N, 3), in key order."""
        if self._positions is None:
            self._positions = key_centers(self.keys, self.voxel_size_m)
        return self._positions, self.colors

    # ------------------------------------------------------------------------------------------- applying

    def apply(self, chunk: PointCloudChunk) -> int | None:
        """Take one chunk; when it completes its version, apply the version and return it (else None)."""
        first = self._pending[0] if self._pending else chunk
        if (chunk.since_version, chunk.version, chunk.is_snapshot) != (first.since_version, first.version, first.is_snapshot):
            raise MirrorError(
                f"chunk for versions {chunk.since_version} -> {chunk.version} arrived while {first.since_version} -> "
                f"{first.version} was incomplete"
            )
        if not chunk.is_snapshot and chunk.since_version != self.version:
            raise MirrorError(f"chunk changes version {chunk.since_version}, the mirror holds version {self.version}")
        self._pending.append(chunk)
        if not chunk.last_in_version:
            return None
        chunks, self._pending = self._pending, []
        self._apply_version(chunks)
        return self.version

    def update(self, chunks: Iterable[PointCloudChunk]) -> int:
        """Apply every chunk of a finite stream (not following); return the version reached."""
        for chunk in chunks:
            self.apply(chunk)
        if self._pending:
            raise MirrorError(f"the stream ended inside version {self._pending[0].version}")
        return self.version

    def follow(self, chunks: Iterable[PointCloudChunk]) -> Iterator[int]:
        """Apply a (following) stream's chunks, yielding each version once it is applied."""
        for chunk in chunks:
            version = self.apply(chunk)
            if version is not None:
                yield version

    def _apply_version(self, chunks: list[PointCloudChunk]) -> None:
        def gather(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            parts = [c for c in chunks if c.kind == kind]
            keys = np.concatenate([c.keys for c in parts]) if parts else np.empty(0, dtype=np.int64)
            if kind == "removed":
                return keys, np.empty((0, 3), np.uint8), np.empty(0, np.uint8)
            colors = np.concatenate([c.colors for c in parts]) if parts else np.empty((0, 3), np.uint8)
            flags = np.concatenate([c.flags for c in parts]) if parts else np.empty(0, np.uint8)
            return keys, colors, flags

        last = chunks[-1]
        added = gather("added")
        if last.is_snapshot:
            order = np.argsort(added[0], kind="stable")
            self.keys, self.colors, self.flags = added[0][order], added[1][order], added[2][order]
        else:
            self._remove(gather("removed")[0])
            self._change(*gather("changed"))
            self._add(*added)
        self.version = last.version
        self.voxel_size_m = last.voxel_size_m
        self._positions = None

    def _rows(self, keys: np.ndarray, what: str) -> np.ndarray:
        rows = np.searchsorted(self.keys, keys)
        present = rows < len(self.keys)
        present[present] = self.keys[rows[present]] == keys[present]
        if not present.all():
            raise MirrorError(f"{what} voxel key {int(keys[~present][0])} is not in the mirror")
        return rows

    def _remove(self, keys: np.ndarray) -> None:
        if len(keys):
            keep = np.ones(len(self.keys), dtype=bool)
            keep[self._rows(keys, "removed")] = False
            self.keys, self.colors, self.flags = self.keys[keep], self.colors[keep], self.flags[keep]

    def _change(self, keys: np.ndarray, colors: np.ndarray, flags: np.ndarray) -> None:
        if len(keys):
            rows = self._rows(keys, "changed")
            self.colors, self.flags = self.colors.copy(), self.flags.copy()  # arrays handed out by points() stay as they were
            self.colors[rows], self.flags[rows] = colors, flags

    def _add(self, keys: np.ndarray, colors: np.ndarray, flags: np.ndarray) -> None:
        if not len(keys):
            return
        order = np.argsort(keys, kind="stable")
        keys, colors, flags = keys[order], colors[order], flags[order]
        at = np.searchsorted(self.keys, keys)
        clash = at < len(self.keys)
        clash[clash] = self.keys[at[clash]] == keys[clash]
        if clash.any():
            raise MirrorError(f"added voxel key {int(keys[clash][0])} is already in the mirror")
        self.keys = np.insert(self.keys, at, keys)
        self.colors = np.insert(self.colors, at, colors, axis=0)
        self.flags = np.insert(self.flags, at, flags)
