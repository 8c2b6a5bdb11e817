"""The point-cloud RPCs: ``StreamPointCloud`` (a snapshot or the changes since a version, optionally following the
world) and ``CropPointCloud`` (the voxels inside a box), both in chunks well under the message limit.

Chunks carry packed little-endian arrays (``proto.codecs.packed_array``), never repeated floats, per voxel:
an int64 key (8 bytes), and unless removed uint8 RGB (3), a uint8 source flag (1) and a float32 confidence (4),
plus float32 centres (12) when asked for: 16 or 28 bytes a voxel, so a 1 MiB chunk holds 65536 or 37449 voxels. A change set goes out as its
removed voxels, then changed, then added, the last chunk flagged ``last_in_version``; an empty set is one empty
chunk, so a receiver always learns the version it reached. ``since_version`` 0, or one older than the world's change
log (``World.changes_since``), is answered with the whole map flagged ``is_snapshot``.

Following: after the first change set the stream waits for the world's version to move (``WorldRegistry.
wait_for_change``) and sends the net changes since the version it last sent. A follower that reads slowly gets
several versions folded into one change set (and a snapshot when it fell behind the change log), never a backlog.
The map is read under the world's lock: a change set is gathered there, a snapshot's columns read once, packed for
the sort and without voxel centres (``read_changes``). Off the lock, on one thread kept for it (``CUTTER``), each
kind of voxel is put in ascending key order (``bridge.memory.key_order``: a map's rows are in the order its voxels
were first fused), so that a receiver keeps its copy sorted without sorting, and cut into chunks.

Both RPCs take the request's ``min_confidence`` (a level the world declared; unset: its default). A crop sends the
voxels at or above it. A stream sends the voxels at or above it too (``filter_changes``): since the server does not
know which voxels a receiver held below the level, a voxel whose confidence fell below the level goes out as removed
and one at or above it that existed before as changed, whether or not the receiver held it; at level 0 (every
voxel) the change set is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from worldweave.bridge.memory import voxel_keys
from worldweave.bridge.memory.key_order import PackedVoxels, sorted_columns, sorted_keys
from worldweave.bridge.memory.voxel_map import VoxelChanges, VoxelSet
from worldweave.bridge.world import World
from worldweave.proto.codecs import FLOAT32, INT64, UINT8, pack_array, packed_array
from worldweave.proto.errors import InvalidInputError, LimitExceededError
from worldweave.proto.splice import serialize_with_fields
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server import codecs
from worldweave.server.registry import WorldRegistry
from worldweave.server.world_state import request_level

DEFAULT_CHUNK_BYTES = 1 << 20
"""Chunk payload when a request leaves ``max_chunk_bytes`` at 0, bytes (~1 MiB)."""
MIN_CHUNK_BYTES = 1024
"""Smallest ``max_chunk_bytes`` a request may ask for, bytes."""
MESSAGE_OVERHEAD_BYTES = 4096
"""Room kept under the message limit for a chunk's fields besides its arrays, bytes."""
KEY_BYTES, COLOR_BYTES, FLAG_BYTES, CONFIDENCE_BYTES, POSITION_BYTES = 8, 3, 1, 4, 12
"""Bytes per voxel of each packed array."""
CROP_POINT_BYTES = POSITION_BYTES + COLOR_BYTES + CONFIDENCE_BYTES
CUTTER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worldweave-cut")
"""The one thread that sorts and cuts every stream's change sets (``cut_changes``), off the world's lock. Always the
same thread, because glibc gives each thread a malloc arena of its own: a 2M-voxel snapshot's sort and chunks take
about 100 MB of fresh arrays, and on a thread whose arena has not held such arrays lately their pages fault in one by
one. Sorting 2M voxels took 21 ms on a thread that had just done it and 46 ms on its first time on a thread; in the
server, on whichever of the pool's threads the work landed, 42-71 ms in about half the snapshots, 23-30 ms on this
thread. Snapshots of several streams take turns here; each sort splits over the free cores."""


def chunk_bytes(requested: int, max_message_bytes: int) -> int:
    """The chunk payload to use, bytes: ``requested`` (0: the default), within [MIN_CHUNK_BYTES, message limit]."""
    largest = max_message_bytes - MESSAGE_OVERHEAD_BYTES
    if requested == 0:
        return min(DEFAULT_CHUNK_BYTES, largest)
    if requested < MIN_CHUNK_BYTES:
        raise InvalidInputError(f"max_chunk_bytes {requested} is below the minimum {MIN_CHUNK_BYTES} (0: the default)")
    if requested > largest:
        raise LimitExceededError(
            f"max_chunk_bytes {requested} does not fit the {max_message_bytes}-byte message limit; ask for at most {largest}"
        )
    return requested


def voxel_bytes(kind: int, include_positions: bool) -> int:
    """Bytes one voxel takes in a chunk of ``kind``."""
    if kind == pb.CHANGE_KIND_REMOVED:
        return KEY_BYTES
    return KEY_BYTES + COLOR_BYTES + FLAG_BYTES + CONFIDENCE_BYTES + (POSITION_BYTES if include_positions else 0)


def _slices(count: int, per_chunk: int) -> Iterator[slice]:
    for start in range(0, count, per_chunk):
        yield slice(start, min(start + per_chunk, count))


@dataclass(frozen=True)
class StreamVoxels:
    """The columns of voxels a stream sends, numpy on CPU, all of length N: ``keys`` int64 (N,), ``colors`` uint8
    (N, 3) RGB, ``sources`` uint8 (N,) (``Source``), ``confidence`` float32 (N,) in [0, 1], and ``positions_m``
    float32 (N, 3) voxel centres, world metres, when the stream asks for them (else None)."""

    keys: np.ndarray
    colors: np.ndarray
    sources: np.ndarray
    confidence: np.ndarray
    positions_m: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def empty(cls) -> StreamVoxels:
        """No voxels (the changed set of a snapshot)."""
        return cls(np.empty(0, np.int64), np.empty((0, 3), np.uint8), np.empty(0, np.uint8), np.empty(0, np.float32))

    @classmethod
    def of(cls, voxels: VoxelSet | PackedVoxels) -> StreamVoxels:
        """The streamed columns of a gathered ``VoxelSet`` (its centres included), or of voxels packed for a sort
        (``PackedVoxels``: no centres), in their order."""
        if isinstance(voxels, PackedVoxels):
            return cls(*voxels.columns())
        return cls(voxels.keys, voxels.colors, voxels.sources, voxels.confidence, voxels.positions_m)

    @classmethod
    def in_key_order_of(cls, voxels: StreamVoxels | PackedVoxels) -> StreamVoxels:
        """``voxels`` in ascending key order (``in_key_order``; packed voxels are sorted as packed)."""
        if isinstance(voxels, PackedVoxels):
            return cls(*voxels.in_key_order())
        return voxels.in_key_order()

    def in_key_order(self) -> StreamVoxels:
        """These voxels in ascending key order (new arrays, without centres: ``with_positions`` adds them), or these
        voxels themselves when they already are in key order."""
        columns = sorted_columns(self.keys, self.colors, self.sources, self.confidence)
        return self if columns is None else StreamVoxels(*columns)

    def subset(self, keep: np.ndarray) -> StreamVoxels:
        """The rows where ``keep`` (bool (N,)) is set (these voxels themselves, uncopied, when it is set everywhere)."""
        if keep.all():
            return self
        return StreamVoxels(self.keys[keep], self.colors[keep], self.sources[keep], self.confidence[keep],
                            None if self.positions_m is None else self.positions_m[keep])


@dataclass(frozen=True)
class StreamChanges:
    """``VoxelChanges`` (same fields and meaning) with only the columns a stream sends (``StreamVoxels``); a
    snapshot's voxels, as read from the map, are packed for the sort (``PackedVoxels``, ``read_changes``)."""

    since_version: int
    version: int
    is_snapshot: bool
    added: StreamVoxels | PackedVoxels
    changed: StreamVoxels
    removed_keys: np.ndarray
    min_confidence: float = 0.0
    """The level the voxels are at or above already: a snapshot's stream level (``read_changes`` reads only those
    voxels), 0 for a change set gathered whole (``filter_changes`` filters it)."""

    @classmethod
    def of(cls, changes: VoxelChanges) -> StreamChanges:
        """The streamed columns of a gathered change set (its centres included)."""
        return cls(changes.since_version, changes.version, changes.is_snapshot, StreamVoxels.of(changes.added),
                   StreamVoxels.of(changes.changed), changes.removed_keys)


def with_positions(voxels: StreamVoxels, voxel_size_m: float) -> StreamVoxels:
    """``voxels`` with their centres (``positions_m``), computed from the keys as the map computes them."""
    positions = voxel_keys.key_centers(torch.from_numpy(voxels.keys), voxel_size_m).numpy()
    return StreamVoxels(voxels.keys, voxels.colors, voxels.sources, voxels.confidence, positions)


def read_changes(world: World, since_version: int, level: float = 0.0) -> tuple[StreamChanges, float]:
    """The changes a stream filtered at ``level`` sends after ``since_version`` (``World.changes_since``), and the
    voxel edge, metres; call under the world's lock. A snapshot (version 0, or one older than the change log) is the
    map's voxels at or above ``level`` read once, packed for the sort, without voxel centres (``VoxelMap.packed``):
    the lock's only work for it. A change set is gathered whole, for ``filter_changes`` off the lock."""
    voxel_map = world.memory.voxel_map
    since = int(since_version)
    if since <= voxel_map.version and (since == 0 or since < voxel_map.oldest_exact_version):
        changes = StreamChanges(since, int(voxel_map.version), True, voxel_map.packed(level), StreamVoxels.empty(),
                                np.empty(0, np.int64), max(level, 0.0))
    else:
        changes = StreamChanges.of(world.changes_since(since))
    return changes, voxel_map.voxel_size_m


def filter_changes(changes: StreamChanges, level: float) -> StreamChanges:
    """The change set a stream filtered at ``level`` sends: added and changed voxels at or above it (``confidence >=
    float32(level)``); changed voxels below it join the removed keys. A set read at ``level`` already (a snapshot,
    ``read_changes``), and level 0, keep everything; a set read at a higher level cannot be (``ValueError``)."""
    level = max(level, 0.0)
    if level < changes.min_confidence:
        raise ValueError(f"changes read at level {changes.min_confidence} cannot be sent at the lower level {level}")
    if level == changes.min_confidence:
        return changes
    threshold = np.float32(level)
    reached = changes.changed.confidence >= threshold
    removed = np.concatenate([changes.removed_keys, changes.changed.keys[~reached]])
    added = changes.added if isinstance(changes.added, StreamVoxels) else StreamVoxels.of(changes.added)
    return StreamChanges(
        changes.since_version, changes.version, changes.is_snapshot,
        added.subset(added.confidence >= threshold), changes.changed.subset(reached), removed, level,
    )


def change_chunks(
    changes: StreamChanges | VoxelChanges, voxel_size_m: float, max_chunk_bytes: int, *, include_positions: bool,
    min_confidence: float = 0.0,
) -> list[codecs.EncodedMessage]:
    """One change set as ``StreamPointCloudResponse`` chunks of at most ``max_chunk_bytes`` array bytes each, each
    serialized here (``codecs.EncodedMessage``: the event loop only sends the bytes): removed, changed, added, each
    kind in ascending key order across its chunks (sorted here: ``StreamVoxels.in_key_order``); each chunk states the
    ``min_confidence`` the set was filtered at. With ``include_positions`` the voxels' centres go out too. A chunk's
    arrays are copied once, from the sorted columns into its serialization (``proto.splice.serialize_with_fields``)."""
    if isinstance(changes, VoxelChanges):
        changes = StreamChanges.of(changes)
    added, changed = StreamVoxels.in_key_order_of(changes.added), changes.changed.in_key_order()
    if include_positions:
        added, changed = (voxels if voxels.positions_m is not None else with_positions(voxels, voxel_size_m)
                          for voxels in (added, changed))
    parts: list[tuple[int, StreamVoxels | np.ndarray]] = [
        (pb.CHANGE_KIND_REMOVED, sorted_keys(changes.removed_keys)),
        (pb.CHANGE_KIND_CHANGED, changed),
        (pb.CHANGE_KIND_ADDED, added),
    ]
    cuts: list[tuple[int, int, dict[str, np.ndarray]]] = []  # kind, voxels, arrays by field name
    for kind, voxels in parts:
        per_chunk = max(1, max_chunk_bytes // voxel_bytes(kind, include_positions))
        for rows in _slices(len(voxels), per_chunk):
            if kind == pb.CHANGE_KIND_REMOVED:
                arrays = {"keys": packed_array(voxels[rows], INT64, None, "keys")}
            else:
                arrays = {
                    "keys": packed_array(voxels.keys[rows], INT64, None, "keys"),
                    "colors": packed_array(voxels.colors[rows], UINT8, 3, "colors"),
                    "flags": packed_array(voxels.sources[rows], UINT8, None, "flags"),
                    "confidence": packed_array(voxels.confidence[rows], FLOAT32, None, "confidence"),
                }
                if include_positions:
                    arrays["positions_m"] = packed_array(voxels.positions_m[rows], FLOAT32, 3, "positions_m")
            cuts.append((kind, rows.stop - rows.start, arrays))
    if not cuts:
        cuts.append((pb.CHANGE_KIND_ADDED, 0, {}))
    return [
        codecs.EncodedMessage(serialize_with_fields(pb.StreamPointCloudResponse(
            since_version=changes.since_version, version=changes.version, is_snapshot=changes.is_snapshot, kind=kind,
            count=count, voxel_size_m=voxel_size_m, last_in_version=index == len(cuts) - 1,
            min_confidence=min_confidence,
        ), arrays))
        for index, (kind, count, arrays) in enumerate(cuts)
    ]


async def cut_changes(
    changes: StreamChanges, voxel_size_m: float, max_chunk_bytes: int, *, include_positions: bool,
    min_confidence: float,
) -> list[codecs.EncodedMessage]:
    """The chunks a stream sends for ``changes``: the set filtered at ``min_confidence`` (``filter_changes``),
    sorted and cut (``change_chunks``) on the ``CUTTER`` thread."""
    return await asyncio.get_running_loop().run_in_executor(CUTTER, lambda: change_chunks(
        filter_changes(changes, min_confidence), voxel_size_m, max_chunk_bytes, include_positions=include_positions,
        min_confidence=min_confidence,
    ))


async def stream_point_cloud(
    registry: WorldRegistry, request: pb.StreamPointCloudRequest, max_message_bytes: int
) -> AsyncIterator[codecs.EncodedMessage]:
    """The responses of one ``StreamPointCloud`` call (see the module docstring); errors are engine errors."""
    entry = registry.entry(request.world_id)
    max_chunk = chunk_bytes(request.max_chunk_bytes, max_message_bytes)
    level = request_level(entry, request)
    since = int(request.since_version)
    while True:
        changes, voxel_size_m = await registry.run(entry, lambda world: read_changes(world, since, level))
        chunks = await cut_changes(changes, voxel_size_m, max_chunk, include_positions=request.include_positions,
                                   min_confidence=level)
        for chunk in chunks:
            yield chunk
        if not request.follow:
            return
        since = changes.version
        await registry.wait_for_change(entry, since)


def crop_chunks(
    version: int, points_m: np.ndarray, colors: np.ndarray, confidence: np.ndarray, max_chunk_bytes: int
) -> list[pb.CropPointCloudResponse]:
    """Cropped voxels as chunks of at most ``max_chunk_bytes`` array bytes; at least one, the last flagged."""
    chunks = [
        pb.CropPointCloudResponse(
            version=version, count=rows.stop - rows.start,
            points_m=pack_array(points_m[rows], FLOAT32, 3, "points_m"), colors=pack_array(colors[rows], UINT8, 3, "colors"),
            confidence=pack_array(confidence[rows], FLOAT32, None, "confidence"),
        )
        for rows in _slices(len(points_m), max(1, max_chunk_bytes // CROP_POINT_BYTES))
    ] or [pb.CropPointCloudResponse(version=version)]
    chunks[-1].last = True
    return chunks


async def crop_point_cloud(
    registry: WorldRegistry, request: pb.CropPointCloudRequest, max_message_bytes: int
) -> list[pb.CropPointCloudResponse]:
    """The chunks of one ``CropPointCloud`` call: ``WorldQueries.crop`` of the request's box at its level."""
    entry = registry.entry(request.world_id)
    max_chunk = chunk_bytes(request.max_chunk_bytes, max_message_bytes)
    if not request.HasField("box"):
        raise InvalidInputError("box is not set: give the crop's min_m and max_m corners (metres)")
    box = codecs.box_from_proto(request.box, "box")
    level = request_level(entry, request)

    def crop(world: World) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        result = world.queries.crop(box, min_confidence=level)
        return int(world.version), result.points_m, result.colors, result.confidence

    version, points, colors, confidence = await registry.run(entry, crop)
    return await registry.offload(lambda: crop_chunks(version, points, colors, confidence, max_chunk))
