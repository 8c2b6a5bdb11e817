"""``WorldQueries``: batched spatial queries against a ``VoxelMap`` and the keyframes that observed it.

Numpy in, numpy out, world metres (right-handed, Z up in worlds made for simulators). Every method
takes a batch (N may be 0 or 1) and returns a result record of flat arrays of length N, so each maps one-to-one
onto a gRPC message.

The queries keep their own sparse copy of the surface and a distance field (``grid``, ``distance_field``), and
follow the map through its change log **lazily**: each query first applies the keys added and removed since the
version ``v`` it last saw (``voxel_map.changed_keys_since(v)``, in ``sync``), touching only the blocks whose voxels
were added or removed (colour changes cost nothing; the LiDAR's plane cache, ``VoxelCache``, drops its records next
to any changed voxel); a ``v`` older than the log's window rebuilds everything.
Call ``sync()`` yourself after an integrate to pay that cost up front.

**Confidence levels.** Every voxel has a confidence in [0, 1] (``VoxelSet.confidence``). The queries accept a few
declared minimum confidences (``confidence_levels``) and keep one surface copy and distance field per level
(``LevelCopy``, built when a level is first asked for, then kept current the same lazy way: a voxel whose confidence
crosses the level since the last sync enters or leaves that copy), never one per request. At level ``c``:

* raycast: a ray stops at the first voxel it enters; a voxel below ``c`` is no hit but unknown (``ended_in_unknown``,
  ``unknown_from_m`` there); free space along the ray comes only from depth at or above ``c``;
* nearest and collisions: only voxels at or above ``c`` count; a shape that touches only voxels below ``c`` is
  ``unknown`` (``ContactResult.unknown``), not a hit;
* occupancy: OCCUPIED for a voxel at or above ``c``, UNKNOWN for one below, FREE only where depth at or above ``c``
  saw through (``occupancy.view_confidence``);
* crop: the voxels at or above ``c``, with their confidences.

A level ``c`` is reached when ``confidence >= np.float32(c)``; level 0 holds every voxel. Where the map holds voxels
below ``c``, raycasts and collisions at ``c`` also use the level-0 copy (to find where a ray stops, and which shapes
touch only lower voxels), so it is built too; nearest, occupancy and crop need only their level's.

Not thread-safe: the world's lock serialises integrates, edits and queries.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

import numba
import numpy as np

from worldweave.bridge.memory import hash_table
from worldweave.bridge.memory.voxel_keys import check_extent
from worldweave.bridge.memory.voxel_map import VoxelMap, check_confidence_levels
from worldweave.bridge.queries.collision import (
    BOX,
    SEGMENT,
    ContactResult,
    shape_contacts,
)
from worldweave.bridge.queries.distance_field import (
    DistanceField,
    NearestResult,
    field_reach_vox,
)
from worldweave.bridge.queries.first_return import first_return
from worldweave.bridge.queries.grid import BLOCK_SHIFT, BlockGrid
from worldweave.bridge.queries.occupancy import (
    DepthView,
    Occupancy,
    PackedViews,
    confidence_ranks,
    crosses_unseen_space,
    min_rank,
    occupancy_codes,
    unknown_from,
    view_confidence,
)
from worldweave.bridge.queries.raycast import cast_rays
from worldweave.bridge.regions import Region
from worldweave.proto import voxel_keys
from worldweave.proto.errors import InvalidInputError, LimitExceededError
from worldweave.proto.geometry import ORTHONORMAL_TOLERANCE

ViewSource = Union[Sequence[DepthView], Callable[[], Sequence[DepthView]]]
"""The views occupancy projects into: a sequence, or a callable returning the current one (e.g. the anchors)."""


@dataclass(frozen=True)
class RayHits:
    """One answer per ray, all arrays of length N.

    ``hit``: bool, the ray entered an occupied voxel within its range.
    ``distance_m``: float64 metres along the (normalised) direction to where it entered that voxel (0 when the
    origin is inside one); ``inf`` without a hit.
    ``point_m``: float64 (N, 3) world metres, ``origin + distance * direction``; NaN without a hit.
    ``color``: uint8 (N, 3) RGB of the hit voxel; 0 without a hit.
    ``ended_in_unknown``: bool, the ray entered space no view has seen through before it hit anything (before its
    range when it hit nothing). A miss with ``ended_in_unknown`` False crossed only observed free space; one with
    True says nothing about what lies beyond. A hit with True lies behind unobserved space.
    ``unknown_from_m``: float64 metres along the ray where it entered unknown space (``inf`` when it did not).
    ``normals``: float32 (N, 3) unit surface normals at the hits, world frame, facing the ray's origin (0 without a
    hit; ``surface_normals``), or None when not asked for.
    """

    hit: np.ndarray
    distance_m: np.ndarray
    point_m: np.ndarray
    color: np.ndarray
    ended_in_unknown: np.ndarray
    unknown_from_m: np.ndarray
    normals: np.ndarray | None = None


NORMAL_RADIUS_VOX = 2
"""Half width of the neighbourhood a hit's surface normal is fitted over, voxels (5 x 5 x 5 voxels)."""
NORMAL_BLOCK_HITS = 4096
"""Hits whose normals are fitted at once (bounds the neighbourhood arrays to ~12 MB)."""


def surface_normals(voxel_map: VoxelMap, voxels: np.ndarray, directions: np.ndarray, level: float) -> np.ndarray:
    """Unit surface normals, world frame, float32 (N, 3), at hit voxels ``voxels`` (N, 3) int64 indices met along
    unit ``directions`` (N, 3): the normal of the least-squares plane (smallest eigenvector of the covariance)
    through the surface points of the voxels at or above ``level`` in the hit voxel's 5 x 5 x 5 neighbourhood, turned
    to face the ray's origin; the reversed ray direction where fewer than 3 such voxels fix a plane."""
    span = np.arange(-NORMAL_RADIUS_VOX, NORMAL_RADIUS_VOX + 1)
    offsets = np.stack(np.meshgrid(span, span, span, indexing="ij"), axis=-1).reshape(-1, 3)
    normals = -np.asarray(directions, dtype=np.float64).copy()
    for start in range(0, len(voxels), NORMAL_BLOCK_HITS):
        block = slice(start, start + NORMAL_BLOCK_HITS)
        keys = voxel_keys.pack((voxels[block, None, :] + offsets).reshape(-1, 3))
        held = (voxel_map.confidence_at(keys) >= np.float32(level)).reshape(-1, len(offsets))  # absent: NaN, False
        points = voxel_map.surface_at(keys).reshape(-1, len(offsets), 3)
        count = held.sum(axis=1)
        mean = np.where(held[..., None], points, 0.0).sum(axis=1) / np.maximum(count, 1)[:, None]
        centred = np.where(held[..., None], points - mean[:, None], 0.0)
        fitted = np.linalg.eigh(np.einsum("nki,nkj->nij", centred, centred))[1][:, :, 0]
        facing = np.where((np.sum(fitted * normals[block], axis=1) < 0)[:, None], -fitted, fitted)
        normals[block] = np.where((count >= 3)[:, None], facing, normals[block])
    return normals.astype(np.float32)


@dataclass(frozen=True)
class CropResult:
    """The surface inside a region at or above the query's level: ``points_m`` float32 (N, 3) voxel centres, world
    metres; ``colors`` uint8 (N, 3); ``confidence`` float32 (N,) in [0, 1]; ``sources`` uint8 (N,) (``Source``)."""

    points_m: np.ndarray
    colors: np.ndarray
    confidence: np.ndarray
    sources: np.ndarray


@dataclass(frozen=True)
class SyncStats:
    """What one ``sync`` did: the map ``version`` reached, voxels added and removed, blocks whose voxels changed,
    and whether it ``rebuilt`` from a snapshot."""

    version: int
    voxels_added: int
    voxels_removed: int
    blocks_changed: int
    rebuilt: bool


def _points(name: str, values) -> np.ndarray:
    """(N, 3) finite float64 world points within the voxel keys' extent, or raise naming the bad value."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"{name} must be (N, 3) numbers in metres: {error}") from None
    if array.ndim != 2 or array.shape[1] != 3:
        raise InvalidInputError(f"{name} must have shape (N, 3) (metres), got {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise InvalidInputError(f"{name}[{i}] has a non-finite value {float(array[i, j])} on axis {'xyz'[j]}")
    return np.ascontiguousarray(array)


def _per_item(name: str, values, n: int) -> np.ndarray:
    """A scalar or (N,) array of finite numbers >= 0 as float64 (N,), or raise naming the bad value."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"{name} must be a number or (N,) numbers in metres: {error}") from None
    if array.ndim == 0:
        array = np.full(n, float(array))
    elif array.shape != (n,):
        raise InvalidInputError(f"{name} must be a number or have shape ({n},), got {array.shape}")
    bad = ~(np.isfinite(array) & (array >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidInputError(f"{name}[{i}] must be a finite number >= 0 (metres), got {float(array[i])}")
    return np.ascontiguousarray(array)


def _same_length(name: str, array: np.ndarray, n: int) -> None:
    if len(array) != n:
        raise InvalidInputError(f"{name} has {len(array)} rows, the batch has {n}")


def _same_objects(a: Sequence, b: Sequence) -> bool:
    """Whether two sequences hold the very same objects (``is``), in order."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _same_entries(a: Sequence[tuple], b: Sequence[tuple]) -> bool:
    """Whether two sequences of tuples hold the very same objects (``is``), tuple by tuple, in order."""
    return len(a) == len(b) and all(_same_objects(x, y) for x, y in zip(a, b))


def resolve_level(levels: Sequence[float], default: float, min_confidence: float | None) -> float:
    """The declared level a query asks for: ``min_confidence`` (``None``: ``default``), which must be one of
    ``levels`` (within 1e-6, so a float32 on the wire matches), else ``InvalidInputError`` naming them."""
    if min_confidence is None:
        return default
    try:
        wanted = float(min_confidence)
    except (TypeError, ValueError):
        wanted = math.nan
    for level in levels:
        if abs(level - wanted) <= 1e-6:
            return level
    raise InvalidInputError(
        f"min_confidence {min_confidence!r} is not one of this world's confidence levels {list(levels)}; ask for "
        "one of them (a world declares its levels when it is created)"
    )


_KEY_BITS = voxel_keys.AXIS_BITS
_KEY_OFFSET = voxel_keys.AXIS_OFFSET
VOXEL_CACHE_ENTRIES = 1 << 18
"""Most records a ``VoxelCache`` keeps (with the LiDAR's 7 numbers each, at most ~35 MB with its hash table; a
32,768-ray scan of a street keeps ~14,000); a full cache starts over."""


@numba.njit(cache=True)
def _insert_keys(table_keys, table_values, shift, keys, first_value):
    """Insert the distinct, absent ``keys`` with values ``first_value``, ``first_value + 1``, ..."""
    for i in range(len(keys)):
        hash_table.find_or_insert(table_keys, table_values, shift, keys[i], first_value + i)


@numba.njit(cache=True)
def _block_key(key):
    """The packed key of the block (``BLOCK_SHIFT``) holding the voxel of packed key ``key``."""
    mask = (np.int64(1) << _KEY_BITS) - 1
    x = ((key >> (2 * _KEY_BITS)) & mask) - _KEY_OFFSET
    y = ((key >> _KEY_BITS) & mask) - _KEY_OFFSET
    z = (key & mask) - _KEY_OFFSET
    return ((((x >> BLOCK_SHIFT) + _KEY_OFFSET) << (2 * _KEY_BITS)) | (((y >> BLOCK_SHIFT) + _KEY_OFFSET) << _KEY_BITS)
            | ((z >> BLOCK_SHIFT) + _KEY_OFFSET))


@numba.njit(cache=True)
def _kept_records(changed, cached, block_keys, block_values, block_shift):
    """(len(cached),) bool: the ``cached`` voxel keys whose block is not within one block of a ``changed`` voxel's
    block. ``block_*``: an empty hash table of at least ``2 * len(changed)`` slots (the changed blocks go there)."""
    mask = (np.int64(1) << _KEY_BITS) - 1
    blocks = np.empty(len(changed), np.int64)
    n = 0
    for i in range(len(changed)):
        block = _block_key(changed[i])
        _, inserted = hash_table.find_or_insert(block_keys, block_values, block_shift, block, n)
        if inserted:
            blocks[n] = block
            n += 1
    bits = 1
    while (1 << bits) < 2 * 27 * n:
        bits += 1
    near_keys = np.full(1 << bits, hash_table.EMPTY_KEY, np.int64)
    near_values = np.full(1 << bits, -1, np.int64)
    near_shift = np.uint64(64 - bits)
    for i in range(n):
        bx, by, bz = (blocks[i] >> (2 * _KEY_BITS)) & mask, (blocks[i] >> _KEY_BITS) & mask, blocks[i] & mask
        for dx in range(-1, 2):
            for dy in range(-1, 2):
                for dz in range(-1, 2):
                    near = ((bx + dx) << (2 * _KEY_BITS)) | ((by + dy) << _KEY_BITS) | (bz + dz)
                    hash_table.find_or_insert(near_keys, near_values, near_shift, near, 0)
    keep = np.empty(len(cached), np.bool_)
    for i in range(len(cached)):
        keep[i] = hash_table.find(near_keys, near_values, near_shift, _block_key(cached[i])) < 0
    return keep


class VoxelCache:
    """Float64 records per voxel key, each a function of the surface within 3 voxels of its voxel (at most one
    block away: blocks are 8 voxels): a query keeps what it derived from the surface (the LiDAR its plane fits,
    ``lidar``) and derives it again only on a miss. ``LevelCopy.sync`` drops the records whose voxel's block or a
    neighbouring block holds a voxel the map added, changed or removed, so a record always equals what it would
    compute now.

    Kernels read ``table()``: ``(table_keys, table_rows, shift, records)``, ``hash_table.find`` giving a row of
    ``records`` (rows, width). The width is set by the first ``add``. Holds at most ``VOXEL_CACHE_ENTRIES``."""

    def __init__(self) -> None:
        self._keys = np.zeros(0, np.int64)
        self._records = np.zeros((0, 0), np.float64)
        self._count = 0
        self._table = hash_table.allocate(2, np.int64)

    def __len__(self) -> int:
        return self._count

    def nbytes(self) -> int:
        """Bytes held (table and records)."""
        return self._keys.nbytes + self._records.nbytes + self._table[0].nbytes + self._table[1].nbytes

    def table(self) -> tuple[np.ndarray, np.ndarray, np.uint64, np.ndarray]:
        """``(table_keys, table_rows, shift, records)`` for kernels (read-only to them)."""
        return (*self._table, self._records)

    def add(self, keys: np.ndarray, records: np.ndarray) -> None:
        """Keep ``records`` (K, width) float64 of voxel ``keys`` (K,) (packed, absent from the cache; repeats keep
        the first)."""
        keys, first = np.unique(np.asarray(keys, np.int64), return_index=True)
        records = np.asarray(records, np.float64)[first]
        if self._count + len(keys) > VOXEL_CACHE_ENTRIES:
            self.clear()
            keys, records = keys[:VOXEL_CACHE_ENTRIES], records[:VOXEL_CACHE_ENTRIES]
        if not len(keys):
            return
        if self._records.shape[1] != records.shape[1]:
            if self._count:
                raise ValueError(f"records of width {records.shape[1]} added to a cache of width {self._records.shape[1]}")
            self._records = np.zeros((len(self._keys), records.shape[1]), np.float64)
        n = self._count + len(keys)
        if n > len(self._keys):  # grow the rows by doubling
            capacity = 1 << (n - 1).bit_length()
            self._keys = np.concatenate([self._keys[: self._count], np.zeros(capacity - self._count, np.int64)])
            self._records = np.concatenate([self._records[: self._count], np.zeros((capacity - self._count, records.shape[1]))])
        self._keys[self._count : n] = keys
        self._records[self._count : n] = records
        if 2 * n > len(self._table[0]):  # load at most 0.5
            self._table = hash_table.allocate(1 << (2 * n).bit_length(), np.int64)
            _insert_keys(*self._table, self._keys[:n], 0)
        else:
            _insert_keys(*self._table, keys, self._count)
        self._count = n

    def clear(self) -> None:
        """Drop every record."""
        self._count = 0
        self._table = hash_table.allocate(2, np.int64)

    def invalidate(self, keys: np.ndarray) -> None:
        """Drop the records within one block of any of the voxels ``keys`` (K,) (packed keys of changed voxels)."""
        if not self._count or not len(keys):
            return
        keys = np.asarray(keys, np.int64)
        blocks = hash_table.allocate(1 << (2 * len(keys)).bit_length(), np.int64)
        keep = _kept_records(keys, self._keys[: self._count], *blocks)
        n = int(np.count_nonzero(keep))
        if n == self._count:
            return
        # Kept in place, and the table refilled at its size: the kept keys are distinct, and fewer than before.
        self._keys[:n] = self._keys[: self._count][keep]
        self._records[:n] = self._records[: self._count][keep]
        self._count = n
        self._table[0].fill(hash_table.EMPTY_KEY)
        self._table[1].fill(-1)
        _insert_keys(*self._table, self._keys[:n], 0)


class LevelCopy:
    """The surface voxels at or above one confidence ``level`` as a ``BlockGrid`` with its ``DistanceField``, a
    ``VoxelCache`` of what queries derived from that surface (``plane_cache``: the LiDAR's plane fits), and the map
    ``version`` they reflect."""

    def __init__(self, level: float, voxel_size_m: float, max_distance_m: float) -> None:
        self.level = level
        self.grid = BlockGrid(reach_vox=field_reach_vox(voxel_size_m, max_distance_m))
        self.distance_field = DistanceField(self.grid, voxel_size_m, max_distance_m)
        self.plane_cache = VoxelCache()
        self.version = 0

    def voxel_count(self) -> int:
        """Voxels in the copy."""
        return int(self.grid.arrays()[7].sum())  # block_count; emptied blocks count 0

    def sync(self, voxel_map: VoxelMap) -> SyncStats | None:
        """Apply the map's changes since ``version``; ``None`` when the change log no longer reaches it (the owner
        then starts a fresh copy and syncs that)."""
        version = voxel_map.version
        if version == self.version:
            return SyncStats(self.version, 0, 0, 0, False)
        changes = voxel_map.changed_keys_since(self.version)
        if changes is None:
            return None
        removed, added = changes.removed, changes.added
        self.plane_cache.invalidate(np.concatenate([added, changes.changed, removed]))
        if self.level > 0:  # a voxel that crossed the level since the last sync enters or leaves the copy
            touched = np.concatenate([changes.added, changes.changed])
            reached = voxel_map.confidence_at(touched) >= np.float32(self.level)
            removed, added = np.concatenate([removed, touched[~reached]]), touched[reached]
        return self._apply(voxel_keys.unpack(removed), voxel_keys.unpack(added), version, rebuilt=False)

    def fill(self, voxel_map: VoxelMap) -> SyncStats:
        """Fill an empty copy from the map's current voxels."""
        voxels = voxel_map.voxels()
        keys = voxels.keys[voxels.confidence >= np.float32(self.level)] if self.level > 0 else voxels.keys
        return self._apply(np.zeros((0, 3), dtype=np.int64), voxel_keys.unpack(keys), voxel_map.version, rebuilt=True)

    def _apply(self, removed: np.ndarray, added: np.ndarray, version: int, *, rebuilt: bool) -> SyncStats:
        shrunk = self.grid.apply(removed, add=False)
        grown = self.grid.apply(added, add=True)
        changed = np.concatenate([shrunk, grown])
        self.distance_field.update(changed, shrunk)
        self.version = version
        return SyncStats(version, len(added), len(removed), len(changed), rebuilt)


class WorldQueries:
    """Raycast, nearest surface, collision, occupancy and crop against ``voxel_map``.

    ``views``: keyframe views (``DepthView``: ``pose``, ``intrinsics``, ``depth``) for free space, or a callable
    returning them at query time (e.g. the anchor store's current anchors).
    ``max_distance_m``: how far from the surface the distance field reaches; the largest ``max_range_m`` that
    ``nearest`` accepts and the largest ``radius + contact margin + max_clearance`` for spheres. Memory grows with
    it (and with surface area), not with the world's volume.
    ``free_margin_m``: a point counts as seen through only when at least this far in front of the observed depth
    (default: one voxel).
    ``contact_margin_m``: the surface's thickness around voxel centres for collisions (default: half a voxel).
    ``max_clearance_m``: collisions report clearances up to this (default 0.25 m); farther is ``inf``. The exact
    capsule and box searches cost grows with it; for clearance far beyond contact, ask ``nearest``.
    ``ray_unknown_step_m``: spacing of the free-space samples along rays (default: four voxels). Unobserved gaps
    thinner than this along a ray can go unnoticed.
    ``confidence_levels``: the minimum confidences queries accept (``min_confidence=``), 1 to 4 distinct numbers in
    [0, 1] (default: 0 alone, every voxel); ``default_min_confidence``: the level of a query that names none (``None``:
    0.5 when declared, else the highest). See the module docstring.
    """

    def __init__(
        self,
        voxel_map: VoxelMap,
        views: ViewSource = (),
        *,
        max_distance_m: float = 2.5,
        free_margin_m: float | None = None,
        contact_margin_m: float | None = None,
        max_clearance_m: float = 0.25,
        ray_unknown_step_m: float | None = None,
        confidence_levels: Sequence[float] = (0.0,),
        default_min_confidence: float | None = None,
    ) -> None:
        v = voxel_map.voxel_size_m
        self.voxel_map = voxel_map
        self.views = views
        self.max_distance_m = self._option("max_distance_m", max_distance_m, positive=True)
        self.free_margin_m = self._option("free_margin_m", v if free_margin_m is None else free_margin_m)
        self.contact_margin_m = self._option("contact_margin_m", v / 2 if contact_margin_m is None else contact_margin_m)
        self.max_clearance_m = self._option("max_clearance_m", max_clearance_m)
        step = 4 * v if ray_unknown_step_m is None else ray_unknown_step_m
        self.ray_unknown_step_m = self._option("ray_unknown_step_m", step, positive=True)
        self.confidence_levels, self.default_min_confidence = check_confidence_levels(
            confidence_levels, default_min_confidence
        )
        self._copies: dict[float, LevelCopy] = {}
        self._ranks: dict[int, tuple[tuple, np.ndarray]] = {}
        self._packed: tuple[list, PackedViews | None, dict[int, tuple[list, PackedViews]]] = ([], None, {})

    @staticmethod
    def _option(name: str, value: float, positive: bool = False) -> float:
        value = float(value)
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise InvalidInputError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
        return value

    # ---------------------------------------------------------------------------------------------- follow

    def level(self, min_confidence: float | None = None) -> float:
        """The declared level a query asks for (``resolve_level``)."""
        return resolve_level(self.confidence_levels, self.default_min_confidence, min_confidence)

    def _copy(self, level: float) -> LevelCopy:
        """The copy of ``level`` (a declared level, or 0 for every voxel), current with the map."""
        copy = self._copies.get(level)
        if copy is None or copy.sync(self.voxel_map) is None:
            copy = LevelCopy(level, self.voxel_map.voxel_size_m, self.max_distance_m)
            copy.fill(self.voxel_map)
            self._copies[level] = copy
        return copy

    def sync(self, min_confidence: float | None = None) -> SyncStats:
        """Apply the map's changes since the last sync to the copy of a level (``None``: the default level; every
        query does this first for the levels it uses)."""
        level = self.level(min_confidence)
        copy = self._copies.get(level)
        stats = None if copy is None else copy.sync(self.voxel_map)
        if stats is None:
            copy = LevelCopy(level, self.voxel_map.voxel_size_m, self.max_distance_m)
            stats = copy.fill(self.voxel_map)
            self._copies[level] = copy
        return stats

    @property
    def grid(self) -> BlockGrid:
        """The surface copy of the default level, current with the map."""
        return self._copy(self.default_min_confidence).grid

    def level_grid(self, level: float) -> BlockGrid:
        """The surface copy of a declared ``level`` (the voxels at or above it), current with the map."""
        return self._copy(level).grid

    def plane_cache(self, level: float) -> VoxelCache:
        """The ``VoxelCache`` of a declared ``level``'s copy (records derived from its surface), current with the
        map."""
        return self._copy(level).plane_cache

    @property
    def version(self) -> int:
        """The map version the default level's copy reflects (without syncing it)."""
        copy = self._copies.get(self.default_min_confidence)
        return 0 if copy is None else copy.version

    def memory_bytes(self) -> int:
        """Bytes held by the surface copies, distance fields and caches of the levels built so far."""
        return sum(copy.grid.nbytes() + copy.plane_cache.nbytes() for copy in self._copies.values())

    def _below_level(self, copy: LevelCopy) -> bool:
        """Whether the map holds voxels below ``copy``'s level (the copy must be current)."""
        return copy.level > 0 and copy.voxel_count() < len(self.voxel_map)

    # --------------------------------------------------------------------------------------------- helpers

    def _world_points(self, name: str, values) -> np.ndarray:
        points = _points(name, values)
        check_extent(points, self.voxel_map.voxel_size_m, name)
        return points

    def _packed_views(self, level: float) -> PackedViews:
        """The current views, with the rank images a pixel's depth needs to count at ``level`` (cached per view
        until its depth or points change: an edit replaces them). Packed once while the views, their poses,
        intrinsics, depth and rank images stay the same objects (a step adds a view, an edit replaces arrays); views
        added after the packed ones (a step's keyframe) are appended to it, not packed anew."""
        views = list(self.views() if callable(self.views) else self.views)
        entries = [(view, *(getattr(view, name, None) for name in ("pose", "intrinsics", "depth"))) for view in views]
        packed_entries, packed, by_rank = self._packed
        if packed is None or not _same_entries(packed_entries, entries):
            count = len(packed_entries)
            if 0 < count < len(entries) and _same_entries(packed_entries, entries[:count]):
                packed = packed.extended(views[count:])  # ranked packings in by_rank extend below
            else:
                packed, by_rank = PackedViews(views), {}
            self._packed = (entries, packed, by_rank)
        rank = min_rank(self.confidence_levels, level)
        if rank == 0:
            return packed
        ranks, cache = [], {}
        for view in views:
            sources = tuple(getattr(view, name, None)
                            for name in ("depth", "points_cam", "point_confidence", "observed", "confidence"))
            cached = self._ranks.get(id(view))
            if cached is None or cached[0][0] is not view or any(a is not b for a, b in zip(cached[0][1:], sources)):
                cached = ((view, *sources), confidence_ranks(view_confidence(view), self.confidence_levels))
            cache[id(view)] = cached
            ranks.append(cached[1])
        self._ranks = cache
        ranked = by_rank.get(rank)
        if ranked is None or not _same_objects(ranked[0], ranks):
            count = len(ranked[0]) if ranked is not None else 0
            extending = ranked[1] if 0 < count < len(ranks) and _same_objects(ranked[0], ranks[:count]) else None
            ranked = by_rank[rank] = (ranks, packed.ranked(ranks, rank, extending=extending))
        return ranked[1]

    def _check_range(self, name: str, ranges: np.ndarray) -> None:
        if len(ranges) and ranges.max() > self.max_distance_m:
            i = int(np.argmax(ranges))
            raise LimitExceededError(
                f"{name}[{i}] needs the distance field to reach {ranges[i]:.3f} m, beyond max_distance_m = "
                f"{self.max_distance_m} m; build WorldQueries with a larger max_distance_m"
            )

    def _hints(self, copy: LevelCopy, probes: np.ndarray, reach_m: np.ndarray) -> np.ndarray:
        """(N, K, 3) nearest surface points of ``copy`` to K probe points per shape (NaN where none within
        ``reach_m``, capped at the field's reach): where the exact shape search starts."""
        n, k = probes.shape[:2]
        ranges = np.repeat(np.minimum(reach_m, self.max_distance_m), k)
        return copy.distance_field.nearest(probes.reshape(-1, 3), ranges).point_m.reshape(n, k, 3)

    def _contacts(self, level: float, search: Callable[[LevelCopy], ContactResult]) -> ContactResult:
        """``search`` against the copy of ``level``; where the map holds voxels below it, shapes that touch none at
        or above it but touch one below are marked ``unknown`` (a second search against every voxel)."""
        copy = self._copy(level)
        contacts = search(copy)
        if not self._below_level(copy):
            return contacts
        touches_any = search(self._copy(0.0)).hit
        return dataclasses.replace(contacts, unknown=touches_any & ~contacts.hit)

    def _max_clearance(self, value: float | None) -> float:
        return self.max_clearance_m if value is None else self._option("max_clearance_m", value)

    # --------------------------------------------------------------------------------------------- queries

    def raycast(
        self, origins_m, directions, max_range_m, *, min_confidence: float | None = None, return_normals: bool = False
    ) -> RayHits:
        """Cast rays from ``origins_m`` (N, 3) along ``directions`` (N, 3, any non-zero length; normalised here)
        up to ``max_range_m`` (a number or (N,), metres), at ``min_confidence`` (a declared level; ``None``: the
        default): a ray stops at the first voxel it enters, a hit when that voxel is at or above the level, unknown
        (no hit, ``ended_in_unknown``) when below. ``return_normals``: also each hit's surface normal
        (``surface_normals``). See ``RayHits``."""
        origins = self._world_points("origins_m", origins_m)
        n = len(origins)
        directions = _points("directions", directions)
        _same_length("directions", directions, n)
        lengths = np.linalg.norm(directions, axis=1)
        if n and lengths.min() < 1e-12:
            i = int(np.argmin(lengths))
            raise InvalidInputError(f"directions[{i}] = {directions[i].tolist()} has zero length")
        directions = directions / lengths[:, None] if n else directions
        ranges = _per_item("max_range_m", max_range_m, n)
        level = self.level(min_confidence)
        t, voxels, hit, unknown = self.trace(origins, directions, ranges, level)
        color = np.zeros((n, 3), dtype=np.uint8)
        if hit.any():
            color[hit] = self.voxel_map.colors_at(voxel_keys.pack(voxels[hit]))
        distance = np.where(hit, t, np.inf)
        point = np.where(hit[:, None], origins + directions * np.where(hit, t, 0.0)[:, None], np.nan)
        normals = None
        if return_normals:
            normals = np.zeros((n, 3), dtype=np.float32)
            normals[hit] = surface_normals(self.voxel_map, voxels[hit], directions[hit], level)
        return RayHits(hit, distance, point, color, np.isfinite(unknown), unknown, normals)

    def crosses_unseen_space(self, origin_m: np.ndarray, points_m: np.ndarray, spare_share: float,
                             min_confidence: float | None = None) -> np.ndarray:
        """(N,) bool: whether the segment from ``origin_m`` (3,) world metres (a camera centre) to each of the (N, 3)
        world points crosses space no view saw through with depth at ``min_confidence`` (default: the default level),
        sampled every ``ray_unknown_step_m`` up to ``spare_share`` of its length short of its point
        (``occupancy.crosses_unseen_space``). Asks only the views, never the voxel map: cheap enough for every step."""
        level = self.level(min_confidence)
        return crosses_unseen_space(self._packed_views(level), origin_m, points_m, self.ray_unknown_step_m,
                                    self.free_margin_m, spare_share)

    def trace(
        self, origins_m: np.ndarray, directions: np.ndarray, ranges_m: np.ndarray, level: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The raycast's core on checked input: ``origins_m`` (N, 3) world metres, unit ``directions`` (N, 3),
        ``ranges_m`` (N,), a declared ``level``. Returns (N,) float64 metres where each ray entered the first voxel it
        met (-1 when none), that voxel's (N, 3) int64 index, (N,) bool hit (the voxel is at or above ``level``) and
        (N,) float64 metres where the ray entered unknown space (``inf`` when it did not; a ray stopped by a voxel
        below ``level`` is unknown there)."""
        copy = self._copy(level)
        below = self._below_level(copy)
        v = self.voxel_map.voxel_size_m
        t, voxels = cast_rays((self._copy(0.0) if below else copy).grid.arrays(), v, origins_m, directions, ranges_m)
        stop = np.where(t >= 0, t, ranges_m)
        step, margin = self.ray_unknown_step_m, self.free_margin_m
        unknown = unknown_from(copy.grid.arrays(), v, self._packed_views(level), origins_m, directions, stop, step, margin)
        return self._level_stops(t, voxels, unknown, level, below)

    def trace_first_return(
        self, origin_m: np.ndarray, directions: np.ndarray, range_m: float, level: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``trace`` for a sensor that sees no farther than unknown space (a LiDAR): rays from one ``origin_m`` (3,)
        world metres along unit ``directions`` (N, 3) out to ``range_m`` metres, at a declared ``level``. A ray that
        enters unknown space before any voxel stops there (``first_return``): it reports no voxel (-1, no hit);
        every other answer equals ``trace``'s for the same rays, bit for bit."""
        copy = self._copy(level)
        below = self._below_level(copy)
        march = (self._copy(0.0) if below else copy).grid.arrays()
        t, voxels, unknown = first_return(
            march, copy.grid.arrays(), self.voxel_map.voxel_size_m, self._packed_views(level), origin_m, directions,
            range_m, self.ray_unknown_step_m, self.free_margin_m,
        )
        return self._level_stops(t, voxels, unknown, level, below)

    def _level_stops(
        self, t: np.ndarray, voxels: np.ndarray, unknown: np.ndarray, level: float, below: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``trace``'s answer from the march (``t`` metres, -1 for none; ``voxels``) and the walk (``unknown``
        metres): a voxel below ``level`` (only when the map holds some: ``below``) stops its ray as unknown, not as a
        hit."""
        entered = t >= 0
        hit = entered.copy()
        if below and entered.any():
            reached = self.voxel_map.confidence_at(voxel_keys.pack(voxels[entered])) >= np.float32(level)
            hit[entered] = reached
        return t, voxels, hit, np.where(entered & ~hit, np.minimum(unknown, t), unknown)

    def nearest(self, points_m, max_range_m, *, min_confidence: float | None = None) -> NearestResult:
        """Nearest surface point (voxel centre at or above ``min_confidence``, a declared level; ``None``: the
        default) to each of ``points_m`` (N, 3) within ``max_range_m`` (a number or (N,), metres, at most
        ``max_distance_m``); exact up to float rounding at every distance. See ``NearestResult``."""
        points = self._world_points("points_m", points_m)
        ranges = _per_item("max_range_m", max_range_m, len(points))
        self._check_range("max_range_m", ranges)
        return self._copy(self.level(min_confidence)).distance_field.nearest(points, ranges)

    def collide_spheres(
        self, centers_m, radii_m, *, max_clearance_m: float | None = None, min_confidence: float | None = None
    ) -> ContactResult:
        """Spheres ``centers_m`` (N, 3) with ``radii_m`` (a number or (N,)) against the surface; see
        ``ContactResult``. Through the distance field's nearest search, so exact (up to float rounding) at every
        clearance up to ``max_clearance_m``. Every collision counts only voxels at or above ``min_confidence`` (a
        declared level; ``None``: the default) and marks shapes touching only lower ones ``unknown``."""
        centers = self._world_points("centers_m", centers_m)
        radii = _per_item("radii_m", radii_m, len(centers))
        margin = self.contact_margin_m
        ranges = radii + margin + self._max_clearance(max_clearance_m)
        self._check_range("radius + contact margin + max_clearance_m of sphere", ranges)

        def search(copy: LevelCopy) -> ContactResult:
            near = copy.distance_field.nearest(centers, ranges)
            clearance = np.where(near.found, near.distance_m - radii - margin, np.inf)
            return ContactResult(near.found & (clearance <= 0), clearance, near.point_m, np.zeros(len(centers), bool))

        return self._contacts(self.level(min_confidence), search)

    def collide_capsules(
        self, a_m, b_m, radii_m, *, max_clearance_m: float | None = None, min_confidence: float | None = None
    ) -> ContactResult:
        """Capsules (segments ``a_m`` -> ``b_m``, each (N, 3), thickened by ``radii_m``, a number or (N,)) against
        the surface; exact. See ``ContactResult``."""
        a = self._world_points("a_m", a_m)
        b = self._world_points("b_m", b_m)
        _same_length("b_m", b, len(a))
        radii = _per_item("radii_m", radii_m, len(a))
        params = np.concatenate([a, b, radii[:, None]], axis=1)
        lo = np.minimum(a, b) - radii[:, None]
        hi = np.maximum(a, b) + radii[:, None]
        clearance = self._max_clearance(max_clearance_m)
        reach = radii + np.linalg.norm(b - a, axis=1) / 2 + self.contact_margin_m + clearance
        v = self.voxel_map.voxel_size_m

        def search(copy: LevelCopy) -> ContactResult:
            hints = self._hints(copy, ((a + b) / 2)[:, None, :], reach)
            return shape_contacts(copy.grid.arrays(), v, SEGMENT, params, lo, hi, self.contact_margin_m, clearance, hints)

        return self._contacts(self.level(min_confidence), search)

    def collide_boxes(
        self, centers_m, half_extents_m, rotations, *, max_clearance_m: float | None = None,
        min_confidence: float | None = None,
    ) -> ContactResult:
        """Oriented boxes (``centers_m`` (N, 3), ``half_extents_m`` (N, 3) metres, ``rotations`` (N, 3, 3) whose
        columns are the box axes in world) against the surface; exact. See ``ContactResult``."""
        centers = self._world_points("centers_m", centers_m)
        n = len(centers)
        half = _points("half_extents_m", half_extents_m)
        _same_length("half_extents_m", half, n)
        if (half < 0).any():
            i, j = np.argwhere(half < 0)[0]
            raise InvalidInputError(f"half_extents_m[{i}] must be >= 0, got {half[i].tolist()}")
        rotations = np.asarray(rotations, dtype=np.float64)
        if rotations.shape != (n, 3, 3):
            raise InvalidInputError(f"rotations must have shape ({n}, 3, 3), got {rotations.shape}")
        if n:
            identity_error = np.abs(np.einsum("nji,njk->nik", rotations, rotations) - np.eye(3)).max(axis=(1, 2))
            det_error = np.abs(np.linalg.det(rotations) - 1.0)
            bad = ~np.isfinite(identity_error) | (identity_error > ORTHONORMAL_TOLERANCE) | (det_error > ORTHONORMAL_TOLERANCE)
            if bad.any():
                i = int(np.argmax(bad))
                raise InvalidInputError(
                    f"rotations[{i}] is not a rotation (orthonormal, determinant +1): {rotations[i].tolist()}"
                )
        params = np.concatenate([centers, half, rotations.reshape(n, 9)], axis=1)
        extent = np.einsum("nij,nj->ni", np.abs(rotations), half)
        clearance = self._max_clearance(max_clearance_m)
        reach = np.linalg.norm(half, axis=1) + self.contact_margin_m + clearance
        v = self.voxel_map.voxel_size_m

        def search(copy: LevelCopy) -> ContactResult:
            hints = self._hints(copy, centers[:, None, :], reach)
            return shape_contacts(
                copy.grid.arrays(), v, BOX, params, centers - extent, centers + extent, self.contact_margin_m,
                clearance, hints,
            )

        return self._contacts(self.level(min_confidence), search)

    def occupancy(self, points_m, *, min_confidence: float | None = None) -> np.ndarray:
        """(N,) uint8 ``Occupancy`` codes (UNKNOWN 0, FREE 1, OCCUPIED 2) of ``points_m`` (N, 3) at
        ``min_confidence`` (a declared level; ``None``: the default): a voxel below the level is UNKNOWN, and only
        depth at or above it sees through space. See ``occupancy`` for the rules."""
        points = self._world_points("points_m", points_m)
        level = self.level(min_confidence)
        copy = self._copy(level)
        v = self.voxel_map.voxel_size_m
        codes = occupancy_codes(copy.grid.arrays(), v, self._packed_views(level), points, self.free_margin_m)
        if self._below_level(copy):
            rest = np.flatnonzero(codes != Occupancy.OCCUPIED)
            keys = voxel_keys.pack(np.floor(points[rest] / v).astype(np.int64))
            codes[rest[~np.isnan(self.voxel_map.confidence_at(keys))]] = Occupancy.UNKNOWN
        return codes

    def crop(self, region: Region, *, min_confidence: float | None = None) -> CropResult:
        """The surface voxels whose centres lie in ``region`` (``Box``, ``OrientedBox`` or ``Sphere``) and whose
        confidence is at or above ``min_confidence`` (a declared level; ``None``: the default)."""
        level = self.level(min_confidence)
        voxels = self.voxel_map.crop(region)
        keep = voxels.confidence >= np.float32(level)
        return CropResult(voxels.positions_m[keep], voxels.colors[keep], voxels.confidence[keep], voxels.sources[keep])
