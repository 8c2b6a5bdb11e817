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
InsertPoints       ``World.insert``                                 version, voxels added
=================  ==============================================  ===============================================

Occupancy's "free" is space some keyframe anchor's depth saw through (``world.memory.anchors``). Each world keeps
its ``WorldQueries`` (``World.queries``, built with this server's reaches, ``QUERY_REACH``), which follows the
world's change log lazily, so the first query after a step pays for the blocks that step touched. Answers whose
float is not finite on the engine side (no hit, nothing found) are sent as the documented stand-ins (max range, 0)
so every packed float is finite except an out-of-reach clearance (+inf). Requests are decoded and validated before
the world's lock is taken.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from worldweave.bridge.queries import Occupancy
from worldweave.bridge.world import QueryReach, World
from worldweave.proto.codecs import FLOAT32, UINT8, pack_array, unpack_array
from worldweave.proto.errors import InvalidInputError, LimitExceededError
from worldweave.proto.geometry import rotations_from_quaternions
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server import codecs

if TYPE_CHECKING:  # annotations only: the registry imports QUERY_REACH from here
    from worldweave.server.registry import WorldRegistry

MAX_QUERY_ITEMS = 1 << 21
"""Most rays, points or shapes in one query call (2097152); more is RESOURCE_EXHAUSTED."""
MAX_INSERT_POINTS = 1 << 22
"""Most points in one InsertPoints call (4194304)."""
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


# ------------------------------------------------------------------------------------------------ decoding


def batch(data: bytes, columns: int | None, name: str, limit: int = MAX_QUERY_ITEMS) -> np.ndarray:
    """A packed float32 field -> float64 array of (N, columns) or (N,), at most ``limit`` rows."""
    array = unpack_array(data, FLOAT32, columns, name)
    if len(array) > limit:
        raise LimitExceededError(f"{name} has {len(array)} rows; this server takes at most {limit} per call")
    return array.astype(np.float64)


def same_length(n: int, array: np.ndarray, name: str, first: str) -> None:
    if len(array) != n:
        raise InvalidInputError(f"{name} has {len(array)} rows, {first} has {n}")


def positive_range(value: float, name: str = "max_range_m") -> float:
    """A finite distance > 0, metres."""
    if not (math.isfinite(value) and value > 0):
        raise InvalidInputError(f"{name} must be a finite number of metres > 0, got {value}")
    return float(value)


def finite_or(values: np.ndarray, found: np.ndarray, fallback: float) -> np.ndarray:
    """``values`` where ``found`` (per row), ``fallback`` elsewhere (replaces the engine's inf / NaN)."""
    mask = found if values.ndim == 1 else found[:, None]
    return np.where(mask, values, fallback)


# ------------------------------------------------------------------------------------------------ queries


async def raycast(registry: WorldRegistry, request: pb.RaycastRequest) -> pb.RaycastResponse:
    entry = registry.entry(request.world_id)
    origins = batch(request.origins_m, 3, "origins_m")
    directions = batch(request.directions, 3, "directions")
    same_length(len(origins), directions, "directions", "origins_m")
    max_range = positive_range(request.max_range_m)

    def cast(world: World) -> pb.RaycastResponse:
        hits = world.queries.raycast(origins, directions, max_range)
        return pb.RaycastResponse(
            version=int(world.version),
            hit=pack_array(hits.hit, UINT8, None, "hit"),
            distance_m=pack_array(finite_or(hits.distance_m, hits.hit, max_range), FLOAT32, None, "distance_m"),
            points_m=pack_array(finite_or(hits.point_m, hits.hit, 0.0), FLOAT32, 3, "points_m"),
            colors=pack_array(hits.color, UINT8, 3, "colors"),
            unknown=pack_array(hits.ended_in_unknown, UINT8, None, "unknown"),
        )

    return await registry.run(entry, cast)


async def nearest_surface(registry: WorldRegistry, request: pb.NearestSurfaceRequest) -> pb.NearestSurfaceResponse:
    entry = registry.entry(request.world_id)
    points = batch(request.points_m, 3, "points_m")
    max_range = positive_range(request.max_range_m)

    def nearest(world: World) -> pb.NearestSurfaceResponse:
        result = world.queries.nearest(points, max_range)
        return pb.NearestSurfaceResponse(
            version=int(world.version),
            found=pack_array(result.found, UINT8, None, "found"),
            distance_m=pack_array(finite_or(result.distance_m, result.found, max_range), FLOAT32, None, "distance_m"),
            surface_points_m=pack_array(finite_or(result.point_m, result.found, 0.0), FLOAT32, 3, "surface_points_m"),
        )

    return await registry.run(entry, nearest)


def collision_call(request: pb.CheckCollisionRequest):
    """The decoded shapes of a ``CheckCollisionRequest`` as a call ``(WorldQueries) -> ContactResult``."""
    shapes = request.WhichOneof("shapes")
    if shapes == "spheres":
        centers = batch(request.spheres.centers_m, 3, "spheres.centers_m")
        radii = batch(request.spheres.radii_m, None, "spheres.radii_m")
        same_length(len(centers), radii, "spheres.radii_m", "spheres.centers_m")
        return lambda queries: queries.collide_spheres(centers, radii)
    if shapes == "capsules":
        starts = batch(request.capsules.starts_m, 3, "capsules.starts_m")
        ends = batch(request.capsules.ends_m, 3, "capsules.ends_m")
        radii = batch(request.capsules.radii_m, None, "capsules.radii_m")
        same_length(len(starts), ends, "capsules.ends_m", "capsules.starts_m")
        same_length(len(starts), radii, "capsules.radii_m", "capsules.starts_m")
        return lambda queries: queries.collide_capsules(starts, ends, radii)
    if shapes == "boxes":
        centers = batch(request.boxes.centers_m, 3, "boxes.centers_m")
        half = batch(request.boxes.half_extents_m, 3, "boxes.half_extents_m")
        quaternions = batch(request.boxes.rotations_wxyz, 4, "boxes.rotations_wxyz")
        same_length(len(centers), half, "boxes.half_extents_m", "boxes.centers_m")
        same_length(len(centers), quaternions, "boxes.rotations_wxyz", "boxes.centers_m")
        rotations = rotations_from_quaternions(quaternions, "boxes.rotations_wxyz")
        return lambda queries: queries.collide_boxes(centers, half, rotations)
    raise InvalidInputError("shapes is not set: send spheres, capsules or boxes")


async def check_collision(registry: WorldRegistry, request: pb.CheckCollisionRequest) -> pb.CheckCollisionResponse:
    entry = registry.entry(request.world_id)
    call = collision_call(request)

    def collide(world: World) -> pb.CheckCollisionResponse:
        contacts = call(world.queries)
        found = np.isfinite(contacts.clearance_m)
        return pb.CheckCollisionResponse(
            version=int(world.version),
            hit=pack_array(contacts.hit, UINT8, None, "hit"),
            clearance_m=pack_array(contacts.clearance_m, FLOAT32, None, "clearance_m"),
            contact_points_m=pack_array(finite_or(contacts.point_m, found, 0.0), FLOAT32, 3, "contact_points_m"),
        )

    return await registry.run(entry, collide)


async def query_occupancy(registry: WorldRegistry, request: pb.QueryOccupancyRequest) -> pb.QueryOccupancyResponse:
    entry = registry.entry(request.world_id)
    points = batch(request.points_m, 3, "points_m")

    def occupancy(world: World) -> pb.QueryOccupancyResponse:
        states = OCCUPANCY_TO_WIRE[world.queries.occupancy(points)]
        return pb.QueryOccupancyResponse(version=int(world.version), states=pack_array(states, UINT8, None, "states"))

    return await registry.run(entry, occupancy)


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
        removed = world.remove(region)
        return pb.RemoveRegionResponse(version=int(world.version), voxels_removed=removed)

    return await registry.run(entry, remove)


async def recolor_region(registry: WorldRegistry, request: pb.RecolorRegionRequest) -> pb.RecolorRegionResponse:
    entry = registry.entry(request.world_id)
    region = request_region(request)
    if len(request.rgb) != 3:
        raise InvalidInputError(f"rgb must be 3 bytes (R, G, B), got {len(request.rgb)}")
    rgb = list(request.rgb)

    def recolor(world: World) -> pb.RecolorRegionResponse:
        changed = world.recolor(region, rgb)
        return pb.RecolorRegionResponse(version=int(world.version), voxels_changed=changed)

    return await registry.run(entry, recolor)


async def insert_points(registry: WorldRegistry, request: pb.InsertPointsRequest) -> pb.InsertPointsResponse:
    entry = registry.entry(request.world_id)
    points = unpack_array(request.points_m, FLOAT32, 3, "points_m")
    colors = unpack_array(request.colors, UINT8, 3, "colors")
    if len(points) == 0:
        raise InvalidInputError("points_m is empty: send at least one point")
    if len(points) > MAX_INSERT_POINTS:
        raise LimitExceededError(f"points_m has {len(points)} rows; this server takes at most {MAX_INSERT_POINTS} per call")
    same_length(len(points), colors, "colors", "points_m")
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidInputError(f"points_m[{i}] = {points[i].tolist()} has a non-finite value")

    def insert(world: World) -> pb.InsertPointsResponse:
        before = len(world.memory.voxel_map)
        world.insert(points.copy(), colors.copy())  # the engine's tensors need writable arrays
        return pb.InsertPointsResponse(version=int(world.version), voxels_added=len(world.memory.voxel_map) - before)

    return await registry.run(entry, insert)
