"""The world-state RPCs (point cloud, spatial queries, edits), described once: request builders (numpy in, messages
out), result records and decoders, and the sub-APIs built on them (``client.queries``: ``Queries``,
``client.edits``: ``Edits``, ``client.point_cloud``: ``PointCloud``).

The sub-APIs hand each request to the client's ``Transport`` (``transport.py``), so ``WorldClient`` and
``AsyncWorldClient`` share them; everything else here is pure (no network, no engine). Arrays
travel as packed little-endian fields (``proto.codecs.pack_array``); every coordinate is canonical world metres
(right-handed, Z up). Every function raises ``WireFormatError`` naming the bad value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from worldweave.sim_clients.mirror import PointCloudMirror
from worldweave.sim_clients.transport import Answer, Stream, Transport

import numpy as np

from worldweave.proto.codecs import FLOAT32, INT64, UINT8, pack_array, unpack_array
from worldweave.proto.errors import WireFormatError
from worldweave.proto.geometry import quaternion_from_rotation
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.sim_clients.conversions import label_ids, vec3_message

ChangeKind = Literal["added", "changed", "removed"]
CHANGE_KIND_NAMES: dict[int, ChangeKind] = {
    pb.CHANGE_KIND_ADDED: "added",
    pb.CHANGE_KIND_CHANGED: "changed",
    pb.CHANGE_KIND_REMOVED: "removed",
}
"""Wire change kinds of point-cloud chunks and their names."""
SourceName = Literal["seed", "generated", "inserted"]
SOURCE_NAMES: dict[int, SourceName] = {0: "seed", 1: "generated", 2: "inserted"}
"""Values of a voxel's flags byte (``StreamPointCloudResponse.flags``): where its content came from."""
OccupancyName = Literal["unknown", "free", "occupied"]
OCCUPANCY_NAMES: dict[int, OccupancyName] = {
    pb.OCCUPANCY_UNKNOWN: "unknown", pb.OCCUPANCY_FREE: "free", pb.OCCUPANCY_OCCUPIED: "occupied",
}
"""Wire occupancy codes (``QueryOccupancyResponse.states``) and their names."""


# ------------------------------------------------------------------------------------------------ arrays


def points_array(values, name: str) -> np.ndarray:
    """(N, 3) numbers -> float64 (N, 3) (a single point (3,) becomes (1, 3))."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise WireFormatError(f"{name} must be (N, 3) numbers: {error}") from None
    if array.shape == (3,):
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 3:
        raise WireFormatError(f"{name} must have shape (N, 3), got {array.shape}")
    return array


def per_item(values, n: int, name: str) -> np.ndarray:
    """A number or (N,) numbers -> float64 (N,)."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise WireFormatError(f"{name} must be a number or (N,) numbers: {error}") from None
    if array.ndim == 0:
        return np.full(n, float(array))
    if array.shape != (n,):
        raise WireFormatError(f"{name} must be a number or have shape ({n},), got {array.shape}")
    return array


def same_rows(n: int, name: str, array: np.ndarray, first: str) -> None:
    """Raise unless ``array`` has ``n`` rows (as ``first`` has)."""
    if len(array) != n:
        raise WireFormatError(f"{name} has {len(array)} rows, {first} has {n}")


def quaternions_wxyz(rotations, n: int, name: str) -> np.ndarray:
    """(N, 4) quaternions (qw, qx, qy, qz) or (N, 3, 3) rotation matrices -> float64 (N, 4) quaternions."""
    array = np.asarray(rotations, dtype=np.float64)
    if array.shape == (n, 4):
        return array
    if array.shape == (n, 3, 3):
        error = np.abs(np.einsum("nji,njk->nik", array, array) - np.eye(3)).max(axis=(1, 2)) if n else np.zeros(0)
        bad = ~(error < 1e-6) | ~(np.linalg.det(array) > 0) if n else np.zeros(0, bool)
        if bad.any():
            i = int(np.argmax(bad))
            raise WireFormatError(f"{name}[{i}] is not a rotation (orthonormal, determinant +1): {array[i].tolist()}")
        return np.array([tuple(quaternion_from_rotation(r)) for r in array]).reshape(n, 4)
    raise WireFormatError(f"{name} must be ({n}, 4) quaternions (qw, qx, qy, qz) or ({n}, 3, 3) matrices, got {array.shape}")


def rows(data: bytes, columns: int = 3) -> int:
    """Rows of a packed float32 (N, ``columns``) field."""
    return len(data) // (4 * columns)


def min_confidence_value(value: float | None) -> float | None:
    """A request's minimum confidence: None (the world's default level) or a number in [0, 1]; the server checks
    that it is one of the world's declared levels (``WorldInfo.config.confidence_levels``)."""
    if value is None:
        return None
    try:
        level = float(value)
    except (TypeError, ValueError):
        raise WireFormatError(f"min_confidence must be a number in [0, 1] or None, got {value!r}") from None
    if not 0.0 <= level <= 1.0:
        raise WireFormatError(f"min_confidence must be in [0, 1] (one of the world's confidence_levels), got {value!r}")
    return level


def _with_min_confidence(request, value: float | None):
    """``request`` with its ``min_confidence`` set, unless ``value`` is None (then the world's default applies)."""
    level = min_confidence_value(value)
    if level is not None:
        request.min_confidence = level
    return request


def _field(message, name: str, dtype: str, columns: int | None, n: int, what: str) -> np.ndarray:
    array = unpack_array(getattr(message, name), dtype, columns, f"{what}.{name}")
    if len(array) != n:
        raise WireFormatError(f"{what}.{name} has {len(array)} rows, expected {n}")
    return array


# ------------------------------------------------------------------------------------------------ point cloud


@dataclass(frozen=True)
class PointCloudChunk:
    """One decoded ``StreamPointCloudResponse``.

    ``since_version`` -> ``version``: the versions the chunk's change set goes between. ``is_snapshot``: the set
    is the whole map (drop what you held). ``kind``: what the arrays list. ``keys`` int64 (N,) packed voxel keys
    (``proto.voxel_keys.key_centers`` decodes them). ``positions_m`` float32 (N, 3) voxel centres, world metres, when
    asked for (else None). ``colors`` uint8 (N, 3), ``flags`` uint8 (N,) (``SOURCE_NAMES``) and ``confidence``
    float32 (N,) in [0, 1] except for removed voxels (None). ``voxel_size_m`` voxel edge, metres.
    ``last_in_version``: the change set is complete. ``min_confidence``: the level the server filtered the stream at
    (voxels below it were not sent, or were sent as removed when they fell below it).
    """

    since_version: int
    version: int
    is_snapshot: bool
    kind: ChangeKind
    keys: np.ndarray
    positions_m: np.ndarray | None
    colors: np.ndarray | None
    flags: np.ndarray | None
    voxel_size_m: float
    last_in_version: bool
    confidence: np.ndarray | None = None
    min_confidence: float = 0.0


def point_cloud_request(
    world_id: str, since_version: int = 0, *, follow: bool = False, max_chunk_bytes: int = 0,
    include_positions: bool = False, min_confidence: float | None = None,
) -> pb.StreamPointCloudRequest:
    """A ``StreamPointCloudRequest``: changes since ``since_version`` (0: a snapshot), optionally following, of the
    voxels at or above ``min_confidence`` (None: the world's default level; 0 sends every voxel)."""
    if since_version < 0:
        raise WireFormatError(f"since_version must be >= 0, got {since_version}")
    if max_chunk_bytes < 0:
        raise WireFormatError(f"max_chunk_bytes must be >= 0 (0: the server's default), got {max_chunk_bytes}")
    return _with_min_confidence(pb.StreamPointCloudRequest(
        world_id=world_id, since_version=since_version, follow=follow, max_chunk_bytes=max_chunk_bytes,
        include_positions=include_positions,
    ), min_confidence)


def decode_point_cloud_chunk(message: pb.StreamPointCloudResponse) -> PointCloudChunk:
    """``StreamPointCloudResponse`` -> ``PointCloudChunk``; every array must hold ``count`` rows."""
    if message.kind not in CHANGE_KIND_NAMES:
        raise WireFormatError(f"point-cloud chunk kind {message.kind} is not a ChangeKind (1..3)")
    kind = CHANGE_KIND_NAMES[message.kind]
    n = int(message.count)
    what = f"point-cloud chunk (version {message.version})"
    keys = _field(message, "keys", INT64, None, n, what)
    # An empty chunk has (0, 3) positions whether or not they were asked for: no row lacks one.
    positions = _field(message, "positions_m", FLOAT32, 3, n, what) if message.positions_m or n == 0 else None
    colors = flags = confidence = None
    if kind != "removed":
        colors = _field(message, "colors", UINT8, 3, n, what)
        flags = _field(message, "flags", UINT8, None, n, what)
        confidence = _field(message, "confidence", FLOAT32, None, n, what)
    return PointCloudChunk(
        int(message.since_version), int(message.version), bool(message.is_snapshot), kind, keys, positions, colors,
        flags, float(message.voxel_size_m), bool(message.last_in_version), confidence, float(message.min_confidence),
    )


# ------------------------------------------------------------------------------------------------ queries


@dataclass(frozen=True)
class RaycastResult:
    """One answer per ray. ``hit`` bool; ``distance_m`` float32 metres (``max_range_m`` without a hit);
    ``points_m`` float32 (N, 3) hit points, world metres (0 without a hit); ``colors`` uint8 (N, 3) (0 without a
    hit); ``unknown`` bool: the ray entered unobserved space before hitting anything (a miss there is not free
    space), or reached a voxel below the request's minimum confidence (then ``hit`` is False). ``normals`` float32
    (N, 3) unit surface normals at the hits, world frame, facing the ray's origin (0 without a hit), or None unless
    asked for (``return_normals``). ``version``: the memory version answered."""

    version: int
    hit: np.ndarray
    distance_m: np.ndarray
    points_m: np.ndarray
    colors: np.ndarray
    unknown: np.ndarray
    normals: np.ndarray | None = None


@dataclass(frozen=True)
class NearestSurfaceResult:
    """One answer per point. ``found`` bool (a surface within range); ``distance_m`` float32 metres
    (``max_range_m`` when not found); ``points_m`` float32 (N, 3) nearest surface points (0 when not found)."""

    version: int
    found: np.ndarray
    distance_m: np.ndarray
    points_m: np.ndarray


@dataclass(frozen=True)
class CollisionResult:
    """One answer per shape. ``hit`` bool; ``clearance_m`` float32 metres: gap to the surface (> 0) or minus the
    penetration depth (<= 0), +inf when no surface is within the server's clearance reach; ``contact_points_m``
    float32 (N, 3) surface point deciding the clearance, world metres (0 when none). Only voxels at or above the
    request's minimum confidence count; ``unknown`` bool: the shape touches a voxel below it (unknown space, neither
    free nor a hit)."""

    version: int
    hit: np.ndarray
    clearance_m: np.ndarray
    contact_points_m: np.ndarray
    unknown: np.ndarray


@dataclass(frozen=True)
class OccupancyResult:
    """``states`` uint8 (N,) wire ``Occupancy`` codes (``OCCUPANCY_NAMES``: 1 unknown, 2 free, 3 occupied)."""

    version: int
    states: np.ndarray


@dataclass(frozen=True)
class CropResult:
    """The voxels inside a box at or above the request's minimum confidence: ``points_m`` float32 (N, 3) voxel
    centres, world metres; ``colors`` uint8 (N, 3); ``confidence`` float32 (N,) in [0, 1]."""

    version: int
    points_m: np.ndarray
    colors: np.ndarray
    confidence: np.ndarray


def raycast_request(
    world_id: str, origins_m, directions, max_range_m: float, *, min_confidence: float | None = None,
    return_normals: bool = False,
) -> pb.RaycastRequest:
    """Rays from ``origins_m`` (N, 3) along ``directions`` (N, 3, any non-zero length) up to ``max_range_m``, against
    the voxels at or above ``min_confidence`` (None: the world's default level); ``return_normals``: with the
    surface normal at each hit."""
    origins = points_array(origins_m, "origins_m")
    directions = points_array(directions, "directions")
    same_rows(len(origins), "directions", directions, "origins_m")
    return _with_min_confidence(pb.RaycastRequest(
        world_id=world_id, origins_m=pack_array(origins, FLOAT32, 3, "origins_m"),
        directions=pack_array(directions, FLOAT32, 3, "directions"), max_range_m=float(max_range_m),
        return_normals=bool(return_normals),
    ), min_confidence)


def decode_raycast(message: pb.RaycastResponse, n: int) -> RaycastResult:
    what = "RaycastResponse"
    return RaycastResult(
        int(message.version), _field(message, "hit", UINT8, None, n, what).astype(bool),
        _field(message, "distance_m", FLOAT32, None, n, what), _field(message, "points_m", FLOAT32, 3, n, what),
        _field(message, "colors", UINT8, 3, n, what), _field(message, "unknown", UINT8, None, n, what).astype(bool),
        _field(message, "normals", FLOAT32, 3, n, what) if message.normals else None,
    )


def nearest_surface_request(
    world_id: str, points_m, max_range_m: float, *, min_confidence: float | None = None
) -> pb.NearestSurfaceRequest:
    """Nearest surface at or above ``min_confidence`` (None: the world's default level) to each of ``points_m``
    (N, 3) within ``max_range_m`` metres."""
    points = points_array(points_m, "points_m")
    return _with_min_confidence(pb.NearestSurfaceRequest(
        world_id=world_id, points_m=pack_array(points, FLOAT32, 3, "points_m"), max_range_m=float(max_range_m)
    ), min_confidence)


def decode_nearest_surface(message: pb.NearestSurfaceResponse, n: int) -> NearestSurfaceResult:
    what = "NearestSurfaceResponse"
    return NearestSurfaceResult(
        int(message.version), _field(message, "found", UINT8, None, n, what).astype(bool),
        _field(message, "distance_m", FLOAT32, None, n, what), _field(message, "surface_points_m", FLOAT32, 3, n, what),
    )


def sphere_collision_request(
    world_id: str, centers_m, radii_m, *, min_confidence: float | None = None
) -> pb.CheckCollisionRequest:
    """Spheres: ``centers_m`` (N, 3), ``radii_m`` a number or (N,), metres; against the voxels at or above
    ``min_confidence`` (None: the world's default level), as for every collision request."""
    centers = points_array(centers_m, "centers_m")
    radii = per_item(radii_m, len(centers), "radii_m")
    return _with_min_confidence(pb.CheckCollisionRequest(world_id=world_id, spheres=pb.SphereBatch(
        centers_m=pack_array(centers, FLOAT32, 3, "centers_m"), radii_m=pack_array(radii, FLOAT32, None, "radii_m"))),
        min_confidence)


def capsule_collision_request(
    world_id: str, starts_m, ends_m, radii_m, *, min_confidence: float | None = None
) -> pb.CheckCollisionRequest:
    """Capsules: segments ``starts_m`` -> ``ends_m`` (each (N, 3)) thickened by ``radii_m`` (a number or (N,))."""
    starts = points_array(starts_m, "starts_m")
    ends = points_array(ends_m, "ends_m")
    same_rows(len(starts), "ends_m", ends, "starts_m")
    radii = per_item(radii_m, len(starts), "radii_m")
    return _with_min_confidence(pb.CheckCollisionRequest(world_id=world_id, capsules=pb.CapsuleBatch(
        starts_m=pack_array(starts, FLOAT32, 3, "starts_m"), ends_m=pack_array(ends, FLOAT32, 3, "ends_m"),
        radii_m=pack_array(radii, FLOAT32, None, "radii_m"))), min_confidence)


def box_collision_request(
    world_id: str, centers_m, half_extents_m, rotations, *, min_confidence: float | None = None
) -> pb.CheckCollisionRequest:
    """Oriented boxes: ``centers_m`` and ``half_extents_m`` (N, 3) metres; ``rotations`` box-to-world, as (N, 4)
    quaternions (qw, qx, qy, qz) or (N, 3, 3) matrices (columns = box axes in world)."""
    centers = points_array(centers_m, "centers_m")
    half = points_array(half_extents_m, "half_extents_m")
    same_rows(len(centers), "half_extents_m", half, "centers_m")
    quaternions = quaternions_wxyz(rotations, len(centers), "rotations")
    return _with_min_confidence(pb.CheckCollisionRequest(world_id=world_id, boxes=pb.OrientedBoxBatch(
        centers_m=pack_array(centers, FLOAT32, 3, "centers_m"),
        half_extents_m=pack_array(half, FLOAT32, 3, "half_extents_m"),
        rotations_wxyz=pack_array(quaternions, FLOAT32, 4, "rotations_wxyz"))), min_confidence)


def decode_collision(message: pb.CheckCollisionResponse, n: int) -> CollisionResult:
    what = "CheckCollisionResponse"
    return CollisionResult(
        int(message.version), _field(message, "hit", UINT8, None, n, what).astype(bool),
        _field(message, "clearance_m", FLOAT32, None, n, what), _field(message, "contact_points_m", FLOAT32, 3, n, what),
        _field(message, "unknown", UINT8, None, n, what).astype(bool),
    )


def occupancy_request(world_id: str, points_m, *, min_confidence: float | None = None) -> pb.QueryOccupancyRequest:
    """Occupancy of each of ``points_m`` (N, 3), world metres, at ``min_confidence`` (None: the world's default
    level): voxels below it and space only lower-confidence depth saw through are unknown."""
    points = points_array(points_m, "points_m")
    request = pb.QueryOccupancyRequest(world_id=world_id, points_m=pack_array(points, FLOAT32, 3, "points_m"))
    return _with_min_confidence(request, min_confidence)


def decode_occupancy(message: pb.QueryOccupancyResponse, n: int) -> OccupancyResult:
    states = _field(message, "states", UINT8, None, n, "QueryOccupancyResponse")
    bad = ~np.isin(states, list(OCCUPANCY_NAMES))
    if bad.any():
        raise WireFormatError(f"QueryOccupancyResponse.states[{int(np.argmax(bad))}] is not an Occupancy code (1..3)")
    return OccupancyResult(int(message.version), states)


def box_message(min_m, max_m) -> pb.Box:
    """An axis-aligned ``Box`` from its corners, metres."""
    return pb.Box(min_m=vec3_message(min_m, "box min_m"), max_m=vec3_message(max_m, "box max_m"))


def crop_request(
    world_id: str, min_m, max_m, *, max_chunk_bytes: int = 0, min_confidence: float | None = None
) -> pb.CropPointCloudRequest:
    """The voxels at or above ``min_confidence`` (None: the world's default level) inside the axis-aligned box
    ``[min_m, max_m]`` (metres), in chunks."""
    if max_chunk_bytes < 0:
        raise WireFormatError(f"max_chunk_bytes must be >= 0 (0: the server's default), got {max_chunk_bytes}")
    request = pb.CropPointCloudRequest(world_id=world_id, box=box_message(min_m, max_m), max_chunk_bytes=max_chunk_bytes)
    return _with_min_confidence(request, min_confidence)


def decode_crop(messages: Iterable[pb.CropPointCloudResponse]) -> CropResult:
    """The chunks of one crop, in order -> one ``CropResult`` (the last chunk must say ``last``)."""
    points, colors, confidence, version, last = [], [], [], 0, False
    for i, message in enumerate(messages):
        what = f"CropPointCloudResponse[{i}]"
        n = int(message.count)
        points.append(_field(message, "points_m", FLOAT32, 3, n, what))
        colors.append(_field(message, "colors", UINT8, 3, n, what))
        confidence.append(_field(message, "confidence", FLOAT32, None, n, what))
        version, last = int(message.version), bool(message.last)
    if not last:
        raise WireFormatError("the crop stream ended before its last chunk")
    return CropResult(version, np.concatenate(points), np.concatenate(colors), np.concatenate(confidence))


# ------------------------------------------------------------------------------------------------ edits


@dataclass(frozen=True)
class EditResult:
    """What an edit did: ``version`` memory version after it; ``voxels`` how many voxels it removed, recoloured or
    added (by the call)."""

    version: int
    voxels: int


def box_region(min_m, max_m) -> pb.Region:
    """An axis-aligned box region ``[min_m, max_m]``, world metres (boundaries inside)."""
    return pb.Region(box=box_message(min_m, max_m))


def sphere_region(center_m, radius_m: float) -> pb.Region:
    """A ball region, world metres."""
    return pb.Region(sphere=pb.Sphere(center_m=vec3_message(center_m, "sphere center_m"), radius_m=float(radius_m)))


def oriented_box_region(center_m, half_extents_m, rotation) -> pb.Region:
    """An oriented box region: centre and half extents (metres), box-to-world rotation as a 3x3 matrix or a
    (qw, qx, qy, qz) quaternion."""
    q = quaternions_wxyz(np.asarray(rotation, dtype=np.float64)[None], 1, "rotation")[0]
    return pb.Region(oriented_box=pb.OrientedBox(
        center_m=vec3_message(center_m, "oriented box center_m"),
        half_extents_m=vec3_message(half_extents_m, "oriented box half_extents_m"),
        rotation=pb.Quaternion(qw=q[0], qx=q[1], qy=q[2], qz=q[3])))


def _region(region: pb.Region) -> pb.Region:
    if not isinstance(region, pb.Region):
        raise WireFormatError(f"region must be a Region message (box_region, sphere_region, oriented_box_region), "
                              f"got {type(region).__name__}")
    return region


def remove_region_request(world_id: str, region: pb.Region) -> pb.RemoveRegionRequest:
    return pb.RemoveRegionRequest(world_id=world_id, region=_region(region))


def recolor_region_request(world_id: str, region: pb.Region, rgb) -> pb.RecolorRegionRequest:
    """Recolour a region with ``rgb``: three integers 0..255."""
    color = np.asarray(rgb)
    if color.shape != (3,) or color.dtype.kind not in "iu" or not np.all((color >= 0) & (color <= 255)):
        raise WireFormatError(f"rgb must be three integers in 0..255, got {rgb!r}")
    return pb.RecolorRegionRequest(world_id=world_id, region=_region(region), rgb=color.astype(np.uint8).tobytes())


def insert_points_request(
    world_id: str, points_m, colors, *, semantic_class: int = 0, instance_id: int = 0
) -> pb.InsertPointsRequest:
    """Insert ``points_m`` (N, 3) world metres with ``colors`` uint8 (N, 3), labelling the voxels they touch with
    ``semantic_class`` / ``instance_id`` (0: leave their labels)."""
    points = points_array(points_m, "points_m")
    colors = np.asarray(colors)
    if colors.dtype != np.uint8:
        raise WireFormatError(f"colors must be uint8 (N, 3), got {colors.dtype}")
    packed_colors = pack_array(colors, UINT8, 3, "colors")
    same_rows(len(points), "colors", colors, "points_m")
    semantic_class, instance_id = label_ids(semantic_class, instance_id)
    return pb.InsertPointsRequest(world_id=world_id, points_m=pack_array(points, FLOAT32, 3, "points_m"),
                                  colors=packed_colors, semantic_class=semantic_class, instance_id=instance_id)


def label_region_request(world_id: str, region: pb.Region, semantic_class: int, instance_id: int = 0) -> pb.LabelRegionRequest:
    """Tag a region with ``semantic_class`` and ``instance_id`` (0: unlabel)."""
    semantic_class, instance_id = label_ids(semantic_class, instance_id)
    return pb.LabelRegionRequest(world_id=world_id, region=_region(region), semantic_class=semantic_class,
                                 instance_id=instance_id)


# ------------------------------------------------------------------------------------------------ worlds


def with_confidence_levels(
    config: pb.WorldConfig, levels: Iterable[float] | None, default_min_confidence: float | None
) -> pb.WorldConfig:
    """``config`` with the world's declared minimum-confidence ``levels`` (None: the server's default levels) and
    the ``default_min_confidence`` its queries use when a request names none (None: the server's rule)."""
    if levels is not None:
        values = [min_confidence_value(level) for level in levels]
        if not values:
            raise WireFormatError("confidence_levels must hold at least one level in [0, 1] (None: the server's default)")
        config.confidence_levels.extend(values)
    default = min_confidence_value(default_min_confidence)
    if default is not None:
        config.default_min_confidence = default
    return config


# ------------------------------------------------------------------------------------------------ sub-APIs


class Queries:
    """``client.queries``: batched spatial queries against a world's voxel map, world metres.

    Every query takes ``min_confidence``: one of the world's ``confidence_levels`` (``client.worlds.get(...).config``),
    None for the world's default level. Voxels below it are unknown space: never a hit, never free. Every answer
    carries the memory ``version`` it is for.
    """

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def raycast(
        self, world_id: str, origins_m: np.ndarray, directions: np.ndarray, max_range_m: float, *,
        return_normals: bool = False, min_confidence: float | None = None, timeout_s: float | None = None,
    ) -> Answer[RaycastResult]:
        """Cast rays from ``origins_m`` (N, 3) along ``directions`` (N, 3, any non-zero length), up to
        ``max_range_m`` metres; ``return_normals``: with the surface normal at each hit (``RaycastResult.normals``)."""
        request = raycast_request(world_id, origins_m, directions, max_range_m, min_confidence=min_confidence,
                                  return_normals=return_normals)
        return self._transport.unary("Raycast", request, lambda r: decode_raycast(r, rows(request.origins_m)), timeout_s)

    def nearest_surface(
        self, world_id: str, points_m: np.ndarray, max_range_m: float, *, min_confidence: float | None = None,
        timeout_s: float | None = None,
    ) -> Answer[NearestSurfaceResult]:
        """The nearest surface point to each of ``points_m`` (N, 3) within ``max_range_m`` metres."""
        request = nearest_surface_request(world_id, points_m, max_range_m, min_confidence=min_confidence)
        n = rows(request.points_m)
        return self._transport.unary("NearestSurface", request, lambda r: decode_nearest_surface(r, n), timeout_s)

    def check_spheres(
        self, world_id: str, centers_m: np.ndarray, radii_m: float | np.ndarray, *,
        min_confidence: float | None = None, timeout_s: float | None = None,
    ) -> Answer[CollisionResult]:
        """Collision of spheres (``centers_m`` (N, 3), ``radii_m`` a number or (N,), metres) with the world."""
        request = sphere_collision_request(world_id, centers_m, radii_m, min_confidence=min_confidence)
        return self._collide(request, rows(request.spheres.centers_m), timeout_s)

    def check_capsules(
        self, world_id: str, starts_m: np.ndarray, ends_m: np.ndarray, radii_m: float | np.ndarray, *,
        min_confidence: float | None = None, timeout_s: float | None = None,
    ) -> Answer[CollisionResult]:
        """Collision of capsules (segments ``starts_m`` -> ``ends_m`` (N, 3), radii ``radii_m``, metres)."""
        request = capsule_collision_request(world_id, starts_m, ends_m, radii_m, min_confidence=min_confidence)
        return self._collide(request, rows(request.capsules.starts_m), timeout_s)

    def check_boxes(
        self, world_id: str, centers_m: np.ndarray, half_extents_m: np.ndarray, rotations: np.ndarray, *,
        min_confidence: float | None = None, timeout_s: float | None = None,
    ) -> Answer[CollisionResult]:
        """Collision of oriented boxes (centres and half extents (N, 3) metres; box-to-world ``rotations`` as (N, 4)
        quaternions qw, qx, qy, qz or (N, 3, 3) matrices) with the world."""
        request = box_collision_request(world_id, centers_m, half_extents_m, rotations, min_confidence=min_confidence)
        return self._collide(request, rows(request.boxes.centers_m), timeout_s)

    def _collide(self, request: pb.CheckCollisionRequest, n: int, timeout_s: float | None) -> Answer[CollisionResult]:
        return self._transport.unary("CheckCollision", request, lambda r: decode_collision(r, n), timeout_s)

    def occupancy(
        self, world_id: str, points_m: np.ndarray, *, min_confidence: float | None = None,
        timeout_s: float | None = None,
    ) -> Answer[OccupancyResult]:
        """Occupancy of each of ``points_m`` (N, 3): ``OCCUPANCY_NAMES`` codes (unknown / free / occupied)."""
        request = occupancy_request(world_id, points_m, min_confidence=min_confidence)
        n = rows(request.points_m)
        return self._transport.unary("QueryOccupancy", request, lambda r: decode_occupancy(r, n), timeout_s)


class Edits:
    """``client.edits``: change a world's memory inside a region (``box_region``, ``sphere_region``,
    ``oriented_box_region``) or add points; removed content does not come back in later frames. Each returns an
    ``EditResult`` (the version after the edit, the voxels it touched)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def remove_region(self, world_id: str, region: pb.Region, *, timeout_s: float | None = None) -> Answer[EditResult]:
        """Remove the memory inside ``region``."""
        request = remove_region_request(world_id, region)
        decode = lambda r: EditResult(int(r.version), int(r.voxels_removed))  # noqa: E731
        return self._transport.unary("RemoveRegion", request, decode, timeout_s)

    def recolor_region(
        self, world_id: str, region: pb.Region, rgb: Sequence[int], *, timeout_s: float | None = None
    ) -> Answer[EditResult]:
        """Recolour the memory inside ``region`` with ``rgb`` (three integers 0..255)."""
        request = recolor_region_request(world_id, region, rgb)
        decode = lambda r: EditResult(int(r.version), int(r.voxels_changed))  # noqa: E731
        return self._transport.unary("RecolorRegion", request, decode, timeout_s)

    def insert_points(
        self, world_id: str, points_m: np.ndarray, colors: np.ndarray, *, semantic_class: int = 0,
        instance_id: int = 0, timeout_s: float | None = None,
    ) -> Answer[EditResult]:
        """Insert ``points_m`` (N, 3) world metres with ``colors`` uint8 (N, 3); ``voxels`` counts new voxels.
        ``semantic_class`` (1..65535) / ``instance_id`` (1..2**32-1) label every voxel the points touch; 0 leaves
        labels as they are (docs/sensors.md, "Labels and normals")."""
        request = insert_points_request(world_id, points_m, colors, semantic_class=semantic_class, instance_id=instance_id)
        decode = lambda r: EditResult(int(r.version), int(r.voxels_added))  # noqa: E731
        return self._transport.unary("InsertPoints", request, decode, timeout_s)

    def label_region(
        self, world_id: str, region: pb.Region, semantic_class: int, instance_id: int = 0, *,
        timeout_s: float | None = None,
    ) -> Answer[EditResult]:
        """Tag the memory inside ``region`` with ``semantic_class`` and ``instance_id`` (0: unlabel); label images
        show it from then on."""
        request = label_region_request(world_id, region, semantic_class, instance_id)
        decode = lambda r: EditResult(int(r.version), int(r.voxels_changed))  # noqa: E731
        return self._transport.unary("LabelRegion", request, decode, timeout_s)


class PointCloud:
    """``client.point_cloud``: the world's voxel cloud, streamed (snapshot, then changes), cropped, or mirrored."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def stream(
        self,
        world_id: str,
        since_version: int = 0,
        *,
        follow: bool = False,
        include_positions: bool = False,
        max_chunk_bytes: int = 0,
        min_confidence: float | None = None,
        timeout_s: float | None = None,
    ) -> Stream[PointCloudChunk]:
        """The world's voxel cloud as chunks: a snapshot (``since_version`` 0, or one the server no longer holds:
        ``is_snapshot``), else the added, changed and removed voxels since ``since_version``. With ``follow`` the
        stream stays open and brings each new version's changes until the iteration stops (or ``timeout_s``
        seconds pass; None: no deadline). ``PointCloudMirror.apply`` takes the chunks. ``min_confidence``: only
        voxels at or above this level (None: the world's default; 0: all, to filter locally with
        ``PointCloudMirror.points(min_confidence=...)``)."""
        request = point_cloud_request(world_id, since_version, follow=follow, max_chunk_bytes=max_chunk_bytes,
                                      include_positions=include_positions, min_confidence=min_confidence)
        return self._transport.stream("StreamPointCloud", request, decode_point_cloud_chunk, timeout_s)

    def crop(
        self, world_id: str, min_m: np.ndarray, max_m: np.ndarray, *, max_chunk_bytes: int = 0,
        min_confidence: float | None = None, timeout_s: float | None = None,
    ) -> Answer[CropResult]:
        """The voxels whose centres lie in the axis-aligned box ``[min_m, max_m]`` (world metres) and whose
        confidence is at least ``min_confidence`` (None: the world's default level)."""
        request = crop_request(world_id, min_m, max_m, max_chunk_bytes=max_chunk_bytes, min_confidence=min_confidence)
        return self._transport.collect("CropPointCloud", request, decode_crop, timeout_s)

    def mirror(
        self, world_id: str, mirror: PointCloudMirror | None = None, *, min_confidence: float | None = None,
        timeout_s: float | None = None,
    ) -> Answer[PointCloudMirror]:
        """Bring ``mirror`` (None: a new, empty one) up to the world's current version: the changes since its
        version (a snapshot for a new one), applied; returns it. To keep it current as the world changes, use
        ``mirror.follow(client.point_cloud.stream(world_id, mirror.version, follow=True))``."""
        held = PointCloudMirror() if mirror is None else mirror
        request = point_cloud_request(world_id, held.version, min_confidence=min_confidence)

        def apply(responses: list[pb.StreamPointCloudResponse]) -> PointCloudMirror:
            held.update(decode_point_cloud_chunk(response) for response in responses)
            return held

        return self._transport.collect("StreamPointCloud", request, apply, timeout_s)
