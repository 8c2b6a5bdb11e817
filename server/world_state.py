"""The spatial-query and edit RPCs, mapped one to one onto ``World.queries`` (a ``bridge.queries.WorldQueries``)
and ``World``'s edits.

=================  ==============================================  ===============================================
RPC                engine call (under the world's lock)             answer
=================  ==============================================  ===============================================
Raycast            ``WorldQueries.raycast``                         hit, distance (max range on a miss), point,
                                                                    colour, entered-unknown flag
NearestSurface     ``WorldQueries.nearest``                         found, distance (max range when not), point
CheckCollision     ``collide_spheres`` / ``collide_capsules`` /     hit, signed clearance (+inf when no surface is
                   ``collide_boxes``                                within reach), contact point
QueryOccupancy     ``WorldQueries.occupancy``                       UNKNOWN / FREE / OCCUPIED per point
CropPointCloud     ``WorldQueries.crop`` (``point_cloud.py``)       voxel centres and colours, chunked
RemoveRegion       ``World.remove``                                 version, voxels removed
RecolorRegion      ``World.recolor``                                version, voxels recoloured
InsertPoints       ``World.insert`` (with optional labels)          version, voxels added
LabelRegion        ``World.label``                                  version, voxels labelled
ScanLidar          ``bridge.queries.lidar.scan`` (on                hit, unknown, sensor-frame point, range,
                   ``WorldQueries.trace``)                          intensity, ring per ray
=================  ==============================================  ===============================================

Every query takes the request's ``min_confidence`` (unset: the world's ``default_min_confidence``), which must be
one of the world's declared ``confidence_levels`` (INVALID_ARGUMENT naming them, before the lock is taken); voxels
below it are unknown space (``bridge.queries.world_queries``). Occupancy's "free" is space some keyframe anchor's
depth at or above that level saw through (``world.memory.anchors``). Each world keeps
its ``WorldQueries`` (``World.queries``, built with this server's reaches, ``QUERY_REACH``), which follows the
world's change log lazily, so the first query after a step pays for the blocks that step touched. Answers whose
float is not finite on the engine side (no hit, nothing found) are sent as the documented stand-ins (max range, 0)
so every packed float is finite except an out-of-reach clearance (+inf). Requests are decoded and validated before
the world's lock is taken.

Each query's cost is checked against the server's work budget (``limits.ServerLimits``, ``docs/limits.md``) before
the lock is taken: items per call, rays x reach in voxels (``ray_reach_vox``), collision search volume in voxels
(``shape_search_vox``). Within the lock a query runs in chunks of at most ``QUERY_CHUNK_ITEMS`` items and
``RAY_CHUNK_VOXELS`` / ``SHAPE_CHUNK_VOXELS`` of that cost, checking between chunks that its call is still wanted
(``scheduling.checkpoint``); items are independent, so the answer is the same as in one piece.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from worldweave.bridge.queries import ContactResult, Occupancy, WorldQueries, resolve_level
from worldweave.bridge.memory.labels import check_ids
from worldweave.bridge.queries import lidar
from worldweave.bridge.queries.lidar import LidarSpec
from worldweave.bridge.world import QueryReach, World
from worldweave.proto import voxel_keys
from worldweave.proto.codecs import FLOAT32, UINT8, pack_array, unpack_array
from worldweave.proto.errors import InvalidInputError, LimitExceededError
from worldweave.proto.geometry import rotations_from_quaternions
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server import codecs
from worldweave.server.decoding import decode_off_loop
from worldweave.server.limits import ServerLimits, amount, check_budget, chunk_parts
from worldweave.server.scheduling import checkpoint

if TYPE_CHECKING:  # annotations only: the registry imports QUERY_REACH from here
    from worldweave.server.registry import WorldEntry, WorldRegistry

NEAREST_REACH_M = 2.5
"""Largest NearestSurface range, metres (the distance field's reach; world.proto states it)."""
CLEARANCE_REACH_M = 0.25
"""Collisions report clearances up to this, metres; beyond, +inf (world.proto states it)."""
QUERY_REACH = QueryReach(nearest_m=NEAREST_REACH_M, clearance_m=CLEARANCE_REACH_M)
"""The reaches above, as every world this server creates or loads is given them (``WorldRegistry``)."""
OCCUPANCY_TO_WIRE = np.zeros(max(Occupancy) + 1, dtype=np.uint8)
OCCUPANCY_TO_WIRE[[Occupancy.UNKNOWN, Occupancy.FREE, Occupancy.OCCUPIED]] = [
    pb.OCCUPANCY_UNKNOWN, pb.OCCUPANCY_FREE, pb.OCCUPANCY_OCCUPIED,
]
"""Engine occupancy code -> wire ``Occupancy`` value (the engine's UNKNOWN is 0, the wire's 1)."""
QUERY_CHUNK_ITEMS = 1 << 16
"""Most rays, points or shapes in one chunk of a query (65,536: 30 to 500 ms of work on two busy cores, by kind)."""
RAY_CHUNK_VOXELS = 1 << 28
"""Most ray reach in one chunk of a Raycast, voxels (``ray_reach_vox`` per ray)."""
SHAPE_CHUNK_VOXELS = 1 << 30
"""Most collision search volume in one chunk of a CheckCollision, voxels (``shape_search_vox`` per shape)."""
RAY_EXTENT_VOX = 2 * math.sqrt(3) * (voxel_keys.AXIS_LIMIT + 1)
"""Longest path of a ray through the voxel keys' extent, voxels: rays stop where the keys end."""

R = TypeVar("R")
M = TypeVar("M", bound=Message)


# ------------------------------------------------------------------------------------------------ decoding


def batch(data: bytes, columns: int | None, name: str, limit: int) -> np.ndarray:
    """A packed float32 field -> float64 array of (N, columns) or (N,), at most ``limit`` rows
    (``ServerLimits.max_query_items``)."""
    array = unpack_array(data, FLOAT32, columns, name)
    if len(array) > limit:
        raise LimitExceededError(
            f"{name} has {len(array)} rows; this server takes at most max_query_items = {limit} per call"
        )
    return array.astype(np.float64)


def same_length(n: int, array: np.ndarray, name: str, first: str) -> None:
    if len(array) != n:
        raise InvalidInputError(f"{name} has {len(array)} rows, {first} has {n}")


def positive_range(value: float, name: str = "max_range_m") -> float:
    """A finite distance > 0, metres."""
    if not (math.isfinite(value) and value > 0):
        raise InvalidInputError(f"{name} must be a finite number of metres > 0, got {value}")
    return float(value)


def request_level(entry: WorldEntry, request) -> float:
    """The minimum-confidence level a query or stream ``request`` asks of a loaded world (``WorldEntry``): its
    ``min_confidence`` when set, else the world's default; one the world did not declare is ``InvalidInputError``
    naming the declared levels. The levels are fixed for the world's life, so this reads them without its lock."""
    memory = entry.world.config.memory
    wanted = request.min_confidence if request.HasField("min_confidence") else None
    return resolve_level(memory.confidence_levels, memory.default_min_confidence, wanted)


def finite_or(values: np.ndarray, found: np.ndarray, fallback: float) -> np.ndarray:
    """``values`` where ``found`` (per row), ``fallback`` elsewhere (replaces the engine's inf / NaN)."""
    mask = found if values.ndim == 1 else found[:, None]
    return np.where(mask, values, fallback)


# ------------------------------------------------------------------------------------------------ budget


def voxel_size(entry: WorldEntry) -> float:
    """The voxel edge of a loaded world (``WorldEntry``), metres; fixed for the world's life, read without its lock."""
    return float(entry.world.config.memory.voxel_size_m)


def ray_reach_vox(max_range_m: float, voxel_size_m: float) -> float:
    """Voxels one ray of ``max_range_m`` metres may cross in a world of ``voxel_size_m`` voxels: its range, capped
    by the longest path through the voxel keys' extent (``RAY_EXTENT_VOX``), at least 1."""
    return float(max(1, math.ceil(min(max_range_m / voxel_size_m, RAY_EXTENT_VOX))))


def shape_search_vox(lo_m: np.ndarray, hi_m: np.ndarray, voxel_size_m: float) -> np.ndarray:
    """(N,) voxels each collision shape's search visits: its axis-aligned bounds ``lo_m``..``hi_m`` (N, 3), world
    metres, grown on every side by the clearance reach and one voxel (the contact margin is half a voxel). Shapes
    with a non-finite bound cost 0 here: the engine refuses them, naming the value."""
    pad_m = CLEARANCE_REACH_M + voxel_size_m
    with np.errstate(over="ignore", invalid="ignore"):
        sides_vox = np.maximum((hi_m - lo_m + 2 * pad_m) / voxel_size_m, 1.0)
        volume = np.prod(sides_vox, axis=1)
    finite = np.isfinite(lo_m).all(axis=1) & np.isfinite(hi_m).all(axis=1)
    return np.where(finite, volume, 0.0)


def item_parts(n: int) -> list[slice]:
    """Chunks of a query whose items cost alike (points): ``QUERY_CHUNK_ITEMS`` each."""
    return chunk_parts(np.ones(n), QUERY_CHUNK_ITEMS, QUERY_CHUNK_ITEMS)


def chunked(query: Callable[[slice], R], parts: list[slice]) -> R:
    """``query`` on each part of a batch in turn, checking before each that the call still wants it
    (``scheduling.checkpoint``); the parts' answers (arrays, or dataclasses of arrays) joined row-wise.

    The engine names a bad row by its index within the part; for a later part the message says where it starts."""
    answers = []
    for part in parts:
        checkpoint()
        try:
            answers.append(query(part))
        except InvalidInputError as error:
            if part.start == 0:
                raise
            raise type(error)(f"{error} (row indices here count from row {part.start} of the request)") from None
    if len(answers) == 1:
        return answers[0]
    if isinstance(answers[0], np.ndarray):
        return np.concatenate(answers)
    fields = dataclasses.fields(answers[0])
    return type(answers[0])(**{  # an optional output the call did not ask for stays None
        f.name: None if getattr(answers[0], f.name) is None else np.concatenate([getattr(a, f.name) for a in answers])
        for f in fields
    })


SCALAR_FIELD_TYPES = frozenset({
    FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64,
})


def engine_options(request: Message, decoded: tuple[str, ...]) -> dict[str, bool | int | float]:
    """The request's scalar fields that the adapter does not decode itself (``decoded``), by name: options the
    engine's query takes as keywords of the same name (``RaycastRequest.return_normals`` ->
    ``WorldQueries.raycast(return_normals=...)``), so a flag added to the request reaches the engine unedited here."""
    return {field.name: getattr(request, field.name) for field in request.DESCRIPTOR.fields
            if field.name not in decoded and field.type in SCALAR_FIELD_TYPES}


def with_engine_arrays(response: M, result: object) -> M:
    """``response`` with each packed-array (bytes) field it leaves empty filled from ``result``'s attribute of the same
    name when that is an array (None: an output not asked for, left empty): floats as float32, the rest as uint8,
    (N,) or (N, C) as the array is. A per-item output the engine adds to its answer travels unedited here."""
    for field in response.DESCRIPTOR.fields:
        value = getattr(result, field.name, None)
        if field.type == FieldDescriptor.TYPE_BYTES and not getattr(response, field.name) and isinstance(value, np.ndarray):
            dtype = FLOAT32 if value.dtype.kind == "f" else UINT8
            setattr(response, field.name, pack_array(value, dtype, value.shape[1] if value.ndim == 2 else None, field.name))
    return response


# ------------------------------------------------------------------------------------------------ queries


async def run_decoded(registry: WorldRegistry, request, limits: ServerLimits, work: Callable) -> object:
    """Run ``work(entry, request, limits)`` (which decodes and budgets the request and returns its locked work: the
    ``*_work`` functions below) off the event loop when the request is large (``decoding.decode_off_loop``), then its
    locked work under the world's lock."""
    entry = registry.entry(request.world_id)
    return await registry.run(entry, await decode_off_loop(lambda: work(entry, request, limits), registry.offload))


async def raycast(registry: WorldRegistry, request: pb.RaycastRequest, limits: ServerLimits) -> pb.RaycastResponse:
    return await run_decoded(registry, request, limits, raycast_work)


def raycast_work(
    entry: WorldEntry, request: pb.RaycastRequest, limits: ServerLimits
) -> Callable[[World], pb.RaycastResponse]:
    """Decode and budget the request (on the thread pool when it is large: ``decoding.decode_off_loop``); its
    locked work."""
    origins = batch(request.origins_m, 3, "origins_m", limits.max_query_items)
    directions = batch(request.directions, 3, "directions", limits.max_query_items)
    same_length(len(origins), directions, "directions", "origins_m")
    max_range = positive_range(request.max_range_m)
    level = request_level(entry, request)
    v = voxel_size(entry)
    reach = ray_reach_vox(max_range, v)
    check_budget(
        "Raycast", len(origins) * reach, limits.max_ray_voxels, "max_ray_voxels", "voxels",
        f"{len(origins)} rays x {reach:.0f} voxels of reach each (max_range_m {max_range:g} at {v:g} m voxels): send "
        "fewer rays or a shorter max_range_m",
    )
    parts = chunk_parts(np.full(len(origins), reach), RAY_CHUNK_VOXELS, QUERY_CHUNK_ITEMS)
    options = engine_options(request, ("world_id", "origins_m", "directions", "max_range_m", "min_confidence"))

    def cast(world: World) -> pb.RaycastResponse:
        hits = chunked(lambda part: world.queries.raycast(
            origins[part], directions[part], max_range, min_confidence=level, **options), parts)
        return with_engine_arrays(pb.RaycastResponse(
            version=int(world.version),
            hit=pack_array(hits.hit, UINT8, None, "hit"),
            distance_m=pack_array(finite_or(hits.distance_m, hits.hit, max_range), FLOAT32, None, "distance_m"),
            points_m=pack_array(finite_or(hits.point_m, hits.hit, 0.0), FLOAT32, 3, "points_m"),
            colors=pack_array(hits.color, UINT8, 3, "colors"),
            unknown=pack_array(hits.ended_in_unknown, UINT8, None, "unknown"),
        ), hits)

    return cast


async def nearest_surface(
    registry: WorldRegistry, request: pb.NearestSurfaceRequest, limits: ServerLimits
) -> pb.NearestSurfaceResponse:
    return await run_decoded(registry, request, limits, nearest_surface_work)


def nearest_surface_work(
    entry: WorldEntry, request: pb.NearestSurfaceRequest, limits: ServerLimits
) -> Callable[[World], pb.NearestSurfaceResponse]:
    """Decode and budget the request (on the thread pool when it is large: ``decoding.decode_off_loop``); its
    locked work."""
    points = batch(request.points_m, 3, "points_m", limits.max_query_items)
    max_range = positive_range(request.max_range_m)
    level = request_level(entry, request)
    parts = item_parts(len(points))

    def nearest(world: World) -> pb.NearestSurfaceResponse:
        result = chunked(lambda part: world.queries.nearest(points[part], max_range, min_confidence=level), parts)
        return pb.NearestSurfaceResponse(
            version=int(world.version),
            found=pack_array(result.found, UINT8, None, "found"),
            distance_m=pack_array(finite_or(result.distance_m, result.found, max_range), FLOAT32, None, "distance_m"),
            surface_points_m=pack_array(finite_or(result.point_m, result.found, 0.0), FLOAT32, 3, "surface_points_m"),
        )

    return nearest


@dataclasses.dataclass(frozen=True)
class Shapes:
    """The decoded shapes of a ``CheckCollisionRequest``."""

    name: str
    """The request's field holding them: "spheres", "capsules" or "boxes"."""
    collide: Callable[[WorldQueries, slice, float], ContactResult]
    """The engine call on a slice of them at a minimum-confidence level."""
    lo_m: np.ndarray
    """(N, 3) lower corners of their axis-aligned bounds, world metres."""
    hi_m: np.ndarray
    """(N, 3) upper corners, world metres."""


def collision_shapes(request: pb.CheckCollisionRequest, max_items: int) -> Shapes:
    """The shapes of a ``CheckCollisionRequest``, at most ``max_items`` of them."""
    shapes = request.WhichOneof("shapes")
    if shapes == "spheres":
        centers = batch(request.spheres.centers_m, 3, "spheres.centers_m", max_items)
        radii = batch(request.spheres.radii_m, None, "spheres.radii_m", max_items)
        same_length(len(centers), radii, "spheres.radii_m", "spheres.centers_m")
        return Shapes(shapes, lambda queries, part, level: queries.collide_spheres(centers[part], radii[part],
                                                                                  min_confidence=level),
                      centers - radii[:, None], centers + radii[:, None])
    if shapes == "capsules":
        starts = batch(request.capsules.starts_m, 3, "capsules.starts_m", max_items)
        ends = batch(request.capsules.ends_m, 3, "capsules.ends_m", max_items)
        radii = batch(request.capsules.radii_m, None, "capsules.radii_m", max_items)
        same_length(len(starts), ends, "capsules.ends_m", "capsules.starts_m")
        same_length(len(starts), radii, "capsules.radii_m", "capsules.starts_m")
        return Shapes(shapes, lambda queries, part, level: queries.collide_capsules(
            starts[part], ends[part], radii[part], min_confidence=level),
                      np.minimum(starts, ends) - radii[:, None], np.maximum(starts, ends) + radii[:, None])
    if shapes == "boxes":
        centers = batch(request.boxes.centers_m, 3, "boxes.centers_m", max_items)
        half = batch(request.boxes.half_extents_m, 3, "boxes.half_extents_m", max_items)
        quaternions = batch(request.boxes.rotations_wxyz, 4, "boxes.rotations_wxyz", max_items)
        same_length(len(centers), half, "boxes.half_extents_m", "boxes.centers_m")
        same_length(len(centers), quaternions, "boxes.rotations_wxyz", "boxes.centers_m")
        rotations = rotations_from_quaternions(quaternions, "boxes.rotations_wxyz")
        extent = np.einsum("nij,nj->ni", np.abs(rotations), np.abs(half))
        return Shapes(shapes, lambda queries, part, level: queries.collide_boxes(
            centers[part], half[part], rotations[part], min_confidence=level), centers - extent, centers + extent)
    raise InvalidInputError("shapes is not set: send spheres, capsules or boxes")


async def check_collision(
    registry: WorldRegistry, request: pb.CheckCollisionRequest, limits: ServerLimits
) -> pb.CheckCollisionResponse:
    return await run_decoded(registry, request, limits, check_collision_work)


def check_collision_work(
    entry: WorldEntry, request: pb.CheckCollisionRequest, limits: ServerLimits
) -> Callable[[World], pb.CheckCollisionResponse]:
    """Decode and budget the request (on the thread pool when it is large: ``decoding.decode_off_loop``); its
    locked work."""
    shapes = collision_shapes(request, limits.max_query_items)
    level = request_level(entry, request)
    costs = shape_search_vox(shapes.lo_m, shapes.hi_m, voxel_size(entry))
    largest = int(np.argmax(costs)) if len(costs) else 0
    check_budget(
        "CheckCollision", float(costs.sum()), limits.max_shape_voxels, "max_shape_voxels", "voxels",
        f"{shapes.name}[{largest}] alone searches {amount(costs.max(initial=0.0))} voxels: send fewer or smaller "
        "shapes",
    )
    parts = chunk_parts(costs, SHAPE_CHUNK_VOXELS, QUERY_CHUNK_ITEMS)

    def collide(world: World) -> pb.CheckCollisionResponse:
        contacts = chunked(lambda part: shapes.collide(world.queries, part, level), parts)
        found = np.isfinite(contacts.clearance_m)
        return pb.CheckCollisionResponse(
            version=int(world.version),
            hit=pack_array(contacts.hit, UINT8, None, "hit"),
            clearance_m=pack_array(contacts.clearance_m, FLOAT32, None, "clearance_m"),
            contact_points_m=pack_array(finite_or(contacts.point_m, found, 0.0), FLOAT32, 3, "contact_points_m"),
            unknown=pack_array(contacts.unknown, UINT8, None, "unknown"),
        )

    return collide


async def query_occupancy(
    registry: WorldRegistry, request: pb.QueryOccupancyRequest, limits: ServerLimits
) -> pb.QueryOccupancyResponse:
    return await run_decoded(registry, request, limits, query_occupancy_work)


def query_occupancy_work(
    entry: WorldEntry, request: pb.QueryOccupancyRequest, limits: ServerLimits
) -> Callable[[World], pb.QueryOccupancyResponse]:
    """Decode and budget the request (on the thread pool when it is large: ``decoding.decode_off_loop``); its
    locked work."""
    points = batch(request.points_m, 3, "points_m", limits.max_query_items)
    level = request_level(entry, request)
    parts = item_parts(len(points))

    def occupancy(world: World) -> pb.QueryOccupancyResponse:
        codes = chunked(lambda part: world.queries.occupancy(points[part], min_confidence=level), parts)
        states = OCCUPANCY_TO_WIRE[codes]
        return pb.QueryOccupancyResponse(version=int(world.version), states=pack_array(states, UINT8, None, "states"))

    return occupancy


# ------------------------------------------------------------------------------------------------ edits


def request_region(request, name: str = "region"):
    """The engine region of an edit request (``region`` must be set)."""
    if not request.HasField("region"):
        raise InvalidInputError(f"{name} is not set: give a box, oriented_box or sphere (metres)")
    return codecs.region_from_proto(request.region, name)


async def remove_region(registry: WorldRegistry, request: pb.RemoveRegionRequest) -> pb.RemoveRegionResponse:
    entry = registry.entry(request.world_id)
    region = request_region(request)

    def remove(world: World) -> pb.RemoveRegionResponse:
        removed = entry.recorder.record(world, request, world.remove(region))
        return pb.RemoveRegionResponse(version=int(world.version), voxels_removed=removed)

    return await registry.run(entry, remove)


async def recolor_region(registry: WorldRegistry, request: pb.RecolorRegionRequest) -> pb.RecolorRegionResponse:
    entry = registry.entry(request.world_id)
    region = request_region(request)
    if len(request.rgb) != 3:
        raise InvalidInputError(f"rgb must be 3 bytes (R, G, B), got {len(request.rgb)}")
    rgb = list(request.rgb)

    def recolor(world: World) -> pb.RecolorRegionResponse:
        changed = entry.recorder.record(world, request, world.recolor(region, rgb))
        return pb.RecolorRegionResponse(version=int(world.version), voxels_changed=changed)

    return await registry.run(entry, recolor)


async def insert_points(
    registry: WorldRegistry, request: pb.InsertPointsRequest, limits: ServerLimits
) -> pb.InsertPointsResponse:
    return await run_decoded(registry, request, limits, insert_points_work)


def insert_points_work(
    entry: WorldEntry, request: pb.InsertPointsRequest, limits: ServerLimits
) -> Callable[[World], pb.InsertPointsResponse]:
    """Decode and budget the request (on the thread pool when it is large: ``decoding.decode_off_loop``); its
    locked work."""
    points = unpack_array(request.points_m, FLOAT32, 3, "points_m")
    colors = unpack_array(request.colors, UINT8, 3, "colors")
    if len(points) == 0:
        raise InvalidInputError("points_m is empty: send at least one point")
    if len(points) > limits.max_insert_points:
        raise LimitExceededError(
            f"points_m has {len(points)} rows; this server takes at most max_insert_points = "
            f"{limits.max_insert_points} per call"
        )
    same_length(len(points), colors, "colors", "points_m")
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidInputError(f"points_m[{i}] = {points[i].tolist()} has a non-finite value")

    semantic_class, instance_id = check_ids(request.semantic_class, request.instance_id)

    def insert(world: World) -> pb.InsertPointsResponse:
        before = len(world.memory.voxel_map)
        touched = world.insert(points.copy(), colors.copy(), semantic_class=semantic_class, instance_id=instance_id)
        entry.recorder.record(world, request, touched)  # writable copies above: torch
        return pb.InsertPointsResponse(version=int(world.version), voxels_added=len(world.memory.voxel_map) - before)

    return insert


async def label_region(registry: WorldRegistry, request: pb.LabelRegionRequest) -> pb.LabelRegionResponse:
    entry = registry.entry(request.world_id)
    region = request_region(request)
    semantic_class, instance_id = check_ids(request.semantic_class, request.instance_id)

    def label(world: World) -> pb.LabelRegionResponse:
        changed = entry.recorder.record(world, request, world.label(region, semantic_class, instance_id))
        return pb.LabelRegionResponse(version=int(world.version), voxels_changed=changed)

    return await registry.run(entry, label)


# ------------------------------------------------------------------------------------------------ sensors


def lidar_spec_from_proto(message: pb.LidarSpec) -> LidarSpec:
    """The request's ``LidarSpec`` -> the engine's (which validates it, naming the bad value)."""
    density = message.WhichOneof("density")
    if density is None:
        raise InvalidInputError("lidar needs a density: set points_per_scan or points_per_second")
    return LidarSpec(
        channels=int(message.channels), range_m=float(message.range_m),
        points_per_scan=int(message.points_per_scan) if density == "points_per_scan" else None,
        points_per_second=float(message.points_per_second) if density == "points_per_second" else None,
        rotation_frequency_hz=float(message.rotation_frequency_hz), upper_fov_deg=float(message.upper_fov_deg),
        lower_fov_deg=float(message.lower_fov_deg), horizontal_fov_deg=float(message.horizontal_fov_deg),
    )


async def scan_lidar(registry: WorldRegistry, request: pb.ScanLidarRequest, limits: ServerLimits) -> pb.ScanLidarResponse:
    entry = registry.entry(request.world_id)
    return await registry.run(entry, scan_lidar_work(entry, request, limits))


def scan_lidar_work(
    entry: WorldEntry, request: pb.ScanLidarRequest, limits: ServerLimits
) -> Callable[[World], pb.ScanLidarResponse]:
    """Decode and budget the request (rays count like a Raycast's: ``max_query_items``, ``max_ray_voxels``); its
    locked work, which scans the pattern in a Raycast's chunks (``chunked``: a scan past its deadline stops between
    two)."""
    if not request.HasField("sensor_pose"):
        raise InvalidInputError("sensor_pose is missing: send the LiDAR's pose T_world_sensor")
    if not request.HasField("lidar"):
        raise InvalidInputError("lidar is missing: send the LiDAR's parameters (LidarSpec)")
    pose = codecs.pose_from_proto(request.sensor_pose, "sensor_pose")
    spec = lidar_spec_from_proto(request.lidar)
    rays = spec.ray_count
    if rays > limits.max_query_items:
        raise LimitExceededError(
            f"ScanLidar fires {rays} rays ({spec.channels} channels x {spec.points_per_channel} points per channel); "
            f"this server takes at most max_query_items = {limits.max_query_items} per call: lower points_per_scan "
            "(or points_per_second) or channels"
        )
    level = request_level(entry, request)
    v = voxel_size(entry)
    reach = ray_reach_vox(spec.range_m, v)
    check_budget(
        "ScanLidar", rays * reach, limits.max_ray_voxels, "max_ray_voxels", "voxels",
        f"{rays} rays x {reach:.0f} voxels of reach each (range_m {spec.range_m:g} at {v:g} m voxels): fire fewer rays "
        "or a shorter range_m",
    )

    parts = chunk_parts(np.full(rays, reach), RAY_CHUNK_VOXELS, QUERY_CHUNK_ITEMS)

    def scan(world: World) -> pb.ScanLidarResponse:
        result = chunked(lambda part: lidar.scan(world.queries, pose, spec, min_confidence=level, part=part), parts)
        return pb.ScanLidarResponse(
            version=int(world.version),
            points_per_channel=spec.points_per_channel,
            points_m=pack_array(finite_or(result.points_m, result.hit, 0.0), FLOAT32, 3, "points_m"),
            range_m=pack_array(finite_or(result.range_m, result.hit, spec.range_m), FLOAT32, None, "range_m"),
            intensity=pack_array(result.intensity, FLOAT32, None, "intensity"),
            ring=pack_array(result.ring, UINT8, None, "ring"),
            hit=pack_array(result.hit, UINT8, None, "hit"),
            unknown=pack_array(result.unknown, UINT8, None, "unknown"),
        )

    return scan
