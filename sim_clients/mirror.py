"""``PointCloudMirror``: a local copy of a world's voxel cloud, kept in step from the point-cloud stream.

    mirror = client.point_cloud.mirror(world_id)                             # catch up once (a snapshot first)
    for version in mirror.follow(client.point_cloud.stream(world_id, mirror.version, follow=True)):
        positions_m, colors = mirror.points()                                 # after every new version

The chunks of one version are kept as they arrive and applied together when its last chunk arrives, so the mirror
always holds the cloud of exactly ``version``. A snapshot replaces everything; a change set removes, recolours and
adds voxels. A worldweave server sends each kind of voxel in ascending key order, so the mirror joins the chunks'
columns as they come; chunks out of key order (another server) are sorted here.
Each voxel keeps its confidence (``confidence``, float32 in [0, 1]): stream at the lowest level (``min_confidence=0``)
to hold every voxel, then filter locally with ``points(min_confidence=...)``, which equals a crop at that level. A
stream filtered at a higher level sends voxels that fell below it as removed and those that rose to it as changed,
so for such a stream the mirror inserts changed voxels it lacks and ignores removals of voxels it never held.
Voxels are kept sorted by key (int64, ``proto.voxel_keys.unpack`` decodes them): equality with the server's cloud
is a comparison of sorted arrays. Transport-agnostic: ``apply`` takes decoded chunks from ``WorldClient`` or
``AsyncWorldClient``. Not thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from worldweave.proto.voxel_keys import key_centers

if TYPE_CHECKING:  # world_state imports this module (``client.point_cloud.mirror``)
    from worldweave.sim_clients.world_state import PointCloudChunk


_COLOR_ITEM = np.dtype((np.void, 3))
"""One RGB row as a single item."""


def _color_items(colors: np.ndarray) -> np.ndarray:
    """(N,) view of uint8 (N, 3) colours, each row one 3-byte item (``_colors_of`` turns it back): numpy masks and
    inserts (N, 3) rows a value at a time, about 20 times slower (2M rows: a mask 23 -> 1.2 ms, an insert 25 -> 2)."""
    return np.ascontiguousarray(colors, dtype=np.uint8).view(_COLOR_ITEM).reshape(-1)


def _colors_of(items: np.ndarray) -> np.ndarray:
    """``_color_items``' inverse: uint8 (N, 3)."""
    return items.view(np.uint8).reshape(-1, 3)


def _reorder(column: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``column[order]`` (rows), a new array; ``np.take`` for rows of several values, three times faster there."""
    return column[order] if column.ndim == 1 else np.take(column, order, axis=0)


class _Columns:
    """One kind of change (added, changed or removed voxels) of the version being received: its chunks as they
    arrive, joined into columns once the version is complete, and whether their keys are strictly ascending across
    the chunks so far (a worldweave server sends each kind in key order; then nothing needs sorting)."""

    def __init__(self) -> None:
        self.chunks: list[PointCloudChunk] = []
        self.ascending = True
        self._last_key = -1

    def append(self, chunk: PointCloudChunk) -> None:
        keys = chunk.keys
        if self.ascending and len(keys):
            self.ascending = bool(keys[0] > self._last_key and (keys[1:] > keys[:-1]).all())
            self._last_key = int(keys[-1])
        self.chunks.append(chunk)

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The kind's voxels in key order: ``keys`` int64, ``colors`` uint8 (N, 3), ``flags`` uint8 and ``confidence``
        float32 (NaN, below every level, for a chunk that carries none); only keys for removed voxels (the other
        columns empty)."""
        if not self.chunks:
            return np.empty(0, np.int64), np.empty((0, 3), np.uint8), np.empty(0, np.uint8), np.empty(0, np.float32)
        keys = np.concatenate([chunk.keys for chunk in self.chunks])
        if self.chunks[0].kind == "removed":  # removed voxels: their keys alone count
            columns = keys, np.empty((0, 3), np.uint8), np.empty(0, np.uint8), np.empty(0, np.float32)
        else:
            columns = (
                keys, np.concatenate([chunk.colors for chunk in self.chunks]),
                np.concatenate([chunk.flags for chunk in self.chunks]),
                np.concatenate([np.full(len(chunk.keys), np.nan, np.float32) if chunk.confidence is None
                                else chunk.confidence for chunk in self.chunks]),
            )
        if self.ascending:
            return columns
        order = np.argsort(keys, kind="stable")
        return tuple(_reorder(column, order) if len(column) else column for column in columns)


class MirrorError(RuntimeError):
    """The chunks do not continue the mirror's version (a missed chunk, another world, a server restart): start
    again from a snapshot (``PointCloudMirror()`` and ``since_version`` 0)."""


class PointCloudMirror:
    """A world's voxels as sorted columns: ``keys`` int64 (N,), ``colors`` uint8 (N, 3), ``flags`` uint8 (N,)
    (source: 0 seed, 1 generated, 2 inserted), ``confidence`` float32 (N,) in [0, 1], at ``version``, with
    ``voxel_size_m`` (0 before the first chunk) and ``min_confidence``, the level the stream was filtered at."""

    def __init__(self) -> None:
        self.version = 0
        self.voxel_size_m = 0.0
        self.min_confidence = 0.0
        self.keys = np.empty(0, dtype=np.int64)
        self.colors = np.empty((0, 3), dtype=np.uint8)
        self.flags = np.empty(0, dtype=np.uint8)
        self.confidence = np.empty(0, dtype=np.float32)
        self._first: PointCloudChunk | None = None
        """The first chunk of the version being received (None between versions)."""
        self._received: dict[str, _Columns] = {}
        """That version's voxels so far, by change kind."""
        self._positions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"PointCloudMirror({len(self)} voxels, version {self.version}, voxel_size_m={self.voxel_size_m})"

    def points(self, min_confidence: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Voxel centres float32 (N, 3), world metres, and colours uint8 (N, 3), in key order; with
        ``min_confidence``, only the voxels whose confidence is at least that level (compared in float32, as the
        server compares)."""
        if self._positions is None:
            self._positions = key_centers(self.keys, self.voxel_size_m)
        if min_confidence is None:
            return self._positions, self.colors
        keep = self.at_or_above(min_confidence)
        return self._positions[keep], _colors_of(_color_items(self.colors)[keep])

    def at_or_above(self, min_confidence: float) -> np.ndarray:
        """(N,) bool: the voxels whose confidence is at least ``min_confidence``, in key order."""
        return self.confidence >= np.float32(min_confidence)

    # ------------------------------------------------------------------------------------------- applying

    def apply(self, chunk: PointCloudChunk) -> int | None:
        """Take one chunk; when it completes its version, apply the version and return it (else None)."""
        first = chunk if self._first is None else self._first
        if (chunk.since_version, chunk.version, chunk.is_snapshot) != (first.since_version, first.version, first.is_snapshot):
            raise MirrorError(
                f"chunk for versions {chunk.since_version} -> {chunk.version} arrived while {first.since_version} -> "
                f"{first.version} was incomplete"
            )
        if not chunk.is_snapshot and chunk.since_version != self.version:
            raise MirrorError(f"chunk changes version {chunk.since_version}, the mirror holds version {self.version}")
        self._first = first
        self._received.setdefault(chunk.kind, _Columns()).append(chunk)
        if not chunk.last_in_version:
            return None
        received, self._first, self._received = self._received, None, {}
        self._apply_version(chunk, received)
        return self.version

    def update(self, chunks: Iterable[PointCloudChunk]) -> int:
        """Apply every chunk of a finite stream (not following); return the version reached."""
        for chunk in chunks:
            self.apply(chunk)
        if self._first is not None:
            raise MirrorError(f"the stream ended inside version {self._first.version}")
        return self.version

    def follow(self, chunks: Iterable[PointCloudChunk]) -> Iterator[int]:
        """Apply a (following) stream's chunks, yielding each version once it is applied."""
        for chunk in chunks:
            version = self.apply(chunk)
            if version is not None:
                yield version

    def _apply_version(self, last: PointCloudChunk, received: dict[str, _Columns]) -> None:
        """Apply a complete version, whose last chunk is ``last`` and whose voxels are ``received``."""
        def columns(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            return received.get(kind, _Columns()).columns()

        added = columns("added")
        # Below a level above 0 the server cannot know what the receiver held: removals and changes are lenient.
        exact = last.min_confidence <= 0.0
        if last.is_snapshot:
            self.keys, self.colors, self.flags, self.confidence = added
        else:
            self._remove(columns("removed")[0], exact)
            changed = columns("changed")
            if not exact:
                changed = self._add_missing(*changed)
            self._change(*changed)
            self._add(*added)
        self.version = last.version
        self.voxel_size_m = last.voxel_size_m
        self.min_confidence = last.min_confidence
        self._positions = None

    def _rows(self, keys: np.ndarray, what: str) -> np.ndarray:
        rows = np.searchsorted(self.keys, keys)
        present = rows < len(self.keys)
        present[present] = self.keys[rows[present]] == keys[present]
        if not present.all():
            raise MirrorError(f"{what} voxel key {int(keys[~present][0])} is not in the mirror")
        return rows

    def _held(self, keys: np.ndarray) -> np.ndarray:
        """(K,) bool: which of ``keys`` the mirror holds."""
        rows = np.searchsorted(self.keys, keys)
        held = rows < len(self.keys)
        held[held] = self.keys[rows[held]] == keys[held]
        return held

    def _remove(self, keys: np.ndarray, exact: bool) -> None:
        if not exact:
            keys = keys[self._held(keys)]
        if len(keys):
            keep = np.ones(len(self.keys), dtype=bool)
            keep[self._rows(keys, "removed")] = False
            self.keys, self.colors = self.keys[keep], _colors_of(_color_items(self.colors)[keep])
            self.flags, self.confidence = self.flags[keep], self.confidence[keep]

    def _add_missing(self, keys: np.ndarray, colors: np.ndarray, flags: np.ndarray, confidence: np.ndarray):
        """Add the changed voxels the mirror lacks (they rose to the stream's level); return the others."""
        held = self._held(keys)
        self._add(keys[~held], colors[~held], flags[~held], confidence[~held])
        return keys[held], colors[held], flags[held], confidence[held]

    def _change(self, keys: np.ndarray, colors: np.ndarray, flags: np.ndarray, confidence: np.ndarray) -> None:
        if len(keys):
            rows = self._rows(keys, "changed")
            # Copies: arrays handed out by points() stay as they were.
            self.colors, self.flags, self.confidence = self.colors.copy(), self.flags.copy(), self.confidence.copy()
            self.colors[rows], self.flags[rows], self.confidence[rows] = colors, flags, confidence

    def _add(self, keys: np.ndarray, colors: np.ndarray, flags: np.ndarray, confidence: np.ndarray) -> None:
        """Insert voxels given in key order."""
        if not len(keys):
            return
        at = np.searchsorted(self.keys, keys)
        clash = at < len(self.keys)
        clash[clash] = self.keys[at[clash]] == keys[clash]
        if clash.any():
            raise MirrorError(f"added voxel key {int(keys[clash][0])} is already in the mirror")
        self.keys = np.insert(self.keys, at, keys)
        self.colors = _colors_of(np.insert(_color_items(self.colors), at, _color_items(colors)))
        self.flags = np.insert(self.flags, at, flags)
        self.confidence = np.insert(self.confidence, at, confidence)
