"""``WorldQueries``: batched spatial queries against a ``VoxelMap`` and the keyframes that observed it.

Numpy in, numpy out, world metres (right-handed, Z up in worlds made for simulators). Every method
takes a batch (N may be 0 or 1) and returns a result record of flat arrays of length N, so each maps one-to-one
onto a gRPC message.

The queries keep their own sparse copy of the surface and a distance field (``grid``, ``distance_field``), and
follow the map through its change log **lazily**: each query first applies the keys added and removed since the
version ``v`` it last saw (``voxel_map.changed_keys_since(v)``, in ``sync``), touching only the blocks whose voxels
were added or removed (colour changes cost nothing); a ``v`` older than the log's window rebuilds everything.
Call ``sync()`` yourself after an integrate to pay that cost up front.

Not thread-safe: the world's lock serialises integrates, edits and queries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np

from worldweave.bridge.memory.voxel_keys import check_extent
from worldweave.bridge.memory.voxel_map import VoxelMap
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
from worldweave.bridge.queries.grid import BlockGrid
from worldweave.bridge.queries.occupancy import (
    DepthView,
    PackedViews,
    occupancy_codes,
    unknown_from,
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
    """

    hit: np.ndarray
    distance_m: np.ndarray
    point_m: np.ndarray
    color: np.ndarray
    ended_in_unknown: np.ndarray
    unknown_from_m: np.ndarray


@dataclass(frozen=True)
class CropResult:
    """The surface inside a region: ``points_m`` float32 (N, 3) voxel centres, world metres; ``colors`` uint8 (N, 3)."""

    points_m: np.ndarray
    colors: np.ndarray


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
        self._reset()

    @staticmethod
    def _option(name: str, value: float, positive: bool = False) -> float:
        value = float(value)
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise InvalidInputError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
        return value

    def _reset(self) -> None:
        v = self.voxel_map.voxel_size_m
        self.grid = BlockGrid(reach_vox=field_reach_vox(v, self.max_distance_m))
        self.distance_field = DistanceField(self.grid, v, self.max_distance_m)
        self.version = 0
        """The map version the queries reflect."""

    # ---------------------------------------------------------------------------------------------- follow

    def sync(self) -> SyncStats:
        """Apply the map's changes since the last sync (every query does this first)."""
        version = self.voxel_map.version
        if version == self.version:
            return SyncStats(self.version, 0, 0, 0, False)
        changes = self.voxel_map.changed_keys_since(self.version)
        rebuilt = changes is None
        if rebuilt:
            self._reset()
            removed, added = np.zeros((0, 3), dtype=np.int64), voxel_keys.unpack(self.voxel_map.voxels().keys)
        else:
            removed, added = voxel_keys.unpack(changes.removed), voxel_keys.unpack(changes.added)
        shrunk = self.grid.apply(removed, add=False)
        grown = self.grid.apply(added, add=True)
        changed = np.concatenate([shrunk, grown])
        self.distance_field.update(changed, shrunk)
        self.version = version
        return SyncStats(version, len(added), len(removed), len(changed), rebuilt)

    def memory_bytes(self) -> int:
        """Bytes held by the surface copy and the distance field."""
        return self.grid.nbytes()

    # --------------------------------------------------------------------------------------------- helpers

    def _world_points(self, name: str, values) -> np.ndarray:
        points = _points(name, values)
        check_extent(points, self.voxel_map.voxel_size_m, name)
        return points

    def _packed_views(self) -> PackedViews:
        views = self.views() if callable(self.views) else self.views
        return PackedViews(list(views))

    def _check_range(self, name: str, ranges: np.ndarray) -> None:
        if len(ranges) and ranges.max() > self.max_distance_m:
            i = int(np.argmax(ranges))
            raise LimitExceededError(
                f"{name}[{i}] needs the distance field to reach {ranges[i]:.3f} m, beyond max_distance_m = "
                f"{self.max_distance_m} m; build WorldQueries with a larger max_distance_m"
            )

    def _hints(self, probes: np.ndarray, reach_m: np.ndarray) -> np.ndarray:
        """(N, K, 3) nearest surface points to K probe points per shape (NaN where none within ``reach_m``, capped
        at the field's reach): where the exact shape search starts."""
        n, k = probes.shape[:2]
        ranges = np.repeat(np.minimum(reach_m, self.max_distance_m), k)
        return self.distance_field.nearest(probes.reshape(-1, 3), ranges).point_m.reshape(n, k, 3)

    def _max_clearance(self, value: float | None) -> float:
        return self.max_clearance_m if value is None else self._option("max_clearance_m", value)

    # --------------------------------------------------------------------------------------------- queries

    def raycast(self, origins_m, directions, max_range_m) -> RayHits:
        """Cast rays from ``origins_m`` (N, 3) along ``directions`` (N, 3, any non-zero length; normalised here)
        up to ``max_range_m`` (a number or (N,), metres). See ``RayHits``."""
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
        self.sync()
        v = self.voxel_map.voxel_size_m
        grid = self.grid.arrays()
        t, voxels = cast_rays(grid, v, origins, directions, ranges)
        hit = t >= 0
        color = np.zeros((n, 3), dtype=np.uint8)
        if hit.any():
            color[hit] = self.voxel_map.colors_at(voxel_keys.pack(voxels[hit]))
        stop = np.where(hit, t, ranges)
        step, margin = self.ray_unknown_step_m, self.free_margin_m
        unknown = unknown_from(grid, v, self._packed_views(), origins, directions, stop, step, margin)
        distance = np.where(hit, t, np.inf)
        point = np.where(hit[:, None], origins + directions * np.where(hit, t, 0.0)[:, None], np.nan)
        return RayHits(hit, distance, point, color, np.isfinite(unknown), unknown)

    def nearest(self, points_m, max_range_m) -> NearestResult:
        """Nearest surface point (voxel centre) to each of ``points_m`` (N, 3) within ``max_range_m`` (a number or
        (N,), metres, at most ``max_distance_m``); exact up to float rounding at every distance. See
        ``NearestResult``."""
        points = self._world_points("points_m", points_m)
        ranges = _per_item("max_range_m", max_range_m, len(points))
        self._check_range("max_range_m", ranges)
        self.sync()
        return self.distance_field.nearest(points, ranges)

    def collide_spheres(self, centers_m, radii_m, *, max_clearance_m: float | None = None) -> ContactResult:
        """Spheres ``centers_m`` (N, 3) with ``radii_m`` (a number or (N,)) against the surface; see
        ``ContactResult``. Through the distance field's nearest search, so exact (up to float rounding) at every
        clearance up to ``max_clearance_m``."""
        centers = self._world_points("centers_m", centers_m)
        radii = _per_item("radii_m", radii_m, len(centers))
        margin = self.contact_margin_m
        ranges = radii + margin + self._max_clearance(max_clearance_m)
        self._check_range("radius + contact margin + max_clearance_m of sphere", ranges)
        self.sync()
        near = self.distance_field.nearest(centers, ranges)
        clearance = np.where(near.found, near.distance_m - radii - margin, np.inf)
        return ContactResult(near.found & (clearance <= 0), clearance, near.point_m)

    def collide_capsules(self, a_m, b_m, radii_m, *, max_clearance_m: float | None = None) -> ContactResult:
        """Capsules (segments ``a_m`` -> ``b_m``, each (N, 3), thickened by ``radii_m``, a number or (N,)) against
        the surface; exact. See ``ContactResult``."""
        a = self._world_points("a_m", a_m)
        b = self._world_points("b_m", b_m)
        _same_length("b_m", b, len(a))
        radii = _per_item("radii_m", radii_m, len(a))
        params = np.concatenate([a, b, radii[:, None]], axis=1)
        lo = np.minimum(a, b) - radii[:, None]
        hi = np.maximum(a, b) + radii[:, None]
        self.sync()
        clearance = self._max_clearance(max_clearance_m)
        reach = radii + np.linalg.norm(b - a, axis=1) / 2 + self.contact_margin_m + clearance
        hints = self._hints(((a + b) / 2)[:, None, :], reach)
        v = self.voxel_map.voxel_size_m
        return shape_contacts(self.grid.arrays(), v, SEGMENT, params, lo, hi, self.contact_margin_m, clearance, hints)

    def collide_boxes(self, centers_m, half_extents_m, rotations, *, max_clearance_m: float | None = None) -> ContactResult:
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
        self.sync()
        clearance = self._max_clearance(max_clearance_m)
        reach = np.linalg.norm(half, axis=1) + self.contact_margin_m + clearance
        hints = self._hints(centers[:, None, :], reach)
        v = self.voxel_map.voxel_size_m
        return shape_contacts(
            self.grid.arrays(), v, BOX, params, centers - extent, centers + extent, self.contact_margin_m, clearance, hints
        )

    def occupancy(self, points_m) -> np.ndarray:
        """(N,) uint8 ``Occupancy`` codes (UNKNOWN 0, FREE 1, OCCUPIED 2) of ``points_m`` (N, 3); see
        ``occupancy`` for the rules."""
        points = self._world_points("points_m", points_m)
        self.sync()
        v = self.voxel_map.voxel_size_m
        return occupancy_codes(self.grid.arrays(), v, self._packed_views(), points, self.free_margin_m)

    def crop(self, region: Region) -> CropResult:
        """The surface voxels whose centres lie in ``region`` (``Box``, ``OrientedBox`` or ``Sphere``)."""
        voxels = self.voxel_map.crop(region)
        return CropResult(voxels.positions_m, voxels.colors)
