"""The views free-space queries read, packed once into flat kernel arrays and kept while they stay the same objects:
answers follow a view whose depth an edit replaced, a view added by a step and a view dropped, exactly as a fresh
``WorldQueries`` (which packs them anew) answers, at every level."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.memory.voxel_map import VoxelMap
from worldweave.bridge.queries.occupancy import seen_through_reference
from worldweave.bridge.queries.world_queries import WorldQueries
from worldweave.proto.geometry import Intrinsics, Pose

VOXEL_M = 0.05
LEVELS = (0.0, 0.5)
INTRINSICS = Intrinsics(40.0, 40.0, 39.5, 29.5, 80, 60)
EYE_M = np.array([0.0, 0.0, 1.5])
WALL_X_M = 4.0
"""A floor (z = 0) and a wall (x = ``WALL_X_M``), world metres: the views' exact depth (no renderer to load)."""


def _view(yaw_deg: float, confidence: np.ndarray) -> RGBDFrame:
    """The floor and wall seen from ``EYE_M``, turned ``yaw_deg`` about +z from +x and tilted 20° down."""
    yaw = np.radians(yaw_deg)
    pose = Pose.look_at(EYE_M, EYE_M + [np.cos(yaw), np.sin(yaw), -0.36])
    v, u = np.mgrid[: INTRINSICS.height, : INTRINSICS.width]
    rays = np.stack([(u - INTRINSICS.cx) / INTRINSICS.fx, (v - INTRINSICS.cy) / INTRINSICS.fy, np.ones(u.shape)], -1)
    world = rays @ pose.rotation.T  # z = 1 along the optical axis: the ray parameter is the depth
    with np.errstate(divide="ignore", invalid="ignore"):
        to_floor = np.where(world[..., 2] < 0, -EYE_M[2] / world[..., 2], np.inf)
        to_wall = np.where(world[..., 0] > 0, (WALL_X_M - EYE_M[0]) / world[..., 0], np.inf)
    depth = np.minimum(to_floor, to_wall)
    depth = np.where(depth < 10.0, depth, 0.0).astype(np.float32)
    rgb = (np.random.default_rng(int(yaw_deg) + 90).integers(0, 256, (*INTRINSICS.shape, 3))).astype(np.uint8)
    return RGBDFrame(rgb, depth, pose, INTRINSICS, confidence=confidence)


def test_packed_views_follow_replaced_added_and_dropped_views() -> None:
    bands = np.array([1.0, 0.3, 1.0, 0.6], np.float32)  # some pixels below the level 0.5
    width = INTRINSICS.width
    confidence = np.ascontiguousarray(np.broadcast_to(bands[np.arange(width) * 4 // width], INTRINSICS.shape))
    views = [_view(yaw, confidence) for yaw in (-20.0, 0.0, 20.0)]
    voxel_map = VoxelMap(VOXEL_M)
    for i, view in enumerate(views):
        voxel_map.integrate(view, frame_id=i)
    queries = WorldQueries(voxel_map, views, max_distance_m=0.25, confidence_levels=LEVELS)
    rng = np.random.default_rng(0)
    points = EYE_M + rng.uniform([-1.0, -4.0, -1.5], [5.0, 4.0, 1.0], size=(1000, 3))
    origins = np.broadcast_to(EYE_M, points.shape)
    directions = rng.normal(size=points.shape)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)

    def answers(q: WorldQueries, level: float) -> tuple[np.ndarray, np.ndarray]:
        rays = q.raycast(origins, directions, 10.0, min_confidence=level)
        return q.occupancy(points, min_confidence=level), rays.unknown_from_m

    def assert_as_fresh() -> list[np.ndarray]:
        fresh = WorldQueries(voxel_map, list(views), max_distance_m=0.25, confidence_levels=LEVELS)
        out = []
        for level in LEVELS:
            kept, packed_anew = answers(queries, level), answers(fresh, level)
            for a, b in zip(kept, packed_anew):
                np.testing.assert_array_equal(a, b)
            out.extend(kept)
        return out

    first = assert_as_fresh()
    assert all(len(np.unique(a)) > 1 for a in first)
    views[1] = replace(views[1], depth=np.zeros_like(views[1].depth))  # an edit replaces a view's depth
    blind = assert_as_fresh()
    assert any(not np.array_equal(a, b) for a, b in zip(first, blind))
    views.append(_view(40.0, confidence))  # a step adds a view
    assert_as_fresh()
    del views[0]
    assert_as_fresh()


def test_a_view_added_is_appended_to_the_packed_arrays_not_packed_anew() -> None:
    """A step's new keyframe is written after the packed views (into the same buffers' spare room, half the packed
    size: the first view added fits, no copy of the others), at every level; the arrays equal a fresh packing's."""
    bands = np.array([1.0, 0.3, 1.0, 0.6], np.float32)
    width = INTRINSICS.width
    confidence = np.ascontiguousarray(np.broadcast_to(bands[np.arange(width) * 4 // width], INTRINSICS.shape))
    views = [_view(yaw, confidence) for yaw in (-20.0, 0.0, 20.0)]
    queries = WorldQueries(VoxelMap(VOXEL_M), lambda: views, max_distance_m=0.25, confidence_levels=LEVELS)
    before = {level: queries._packed_views(level) for level in LEVELS}
    for yaw in (40.0, 60.0):
        views.append(_view(yaw, confidence))
        for level in LEVELS:
            after = queries._packed_views(level)
            fresh = WorldQueries(VoxelMap(VOXEL_M), list(views), max_distance_m=0.25,
                                 confidence_levels=LEVELS)._packed_views(level)
            assert len(after) == len(views)
            if yaw == 40.0:
                assert np.shares_memory(after.depths, before[level].depths)
                assert level == 0 or np.shares_memory(after.ranks, before[level].ranks)
            for name in ("params", "pixels", "depths", "ranks", "min_rank"):
                np.testing.assert_array_equal(getattr(after, name), getattr(fresh, name))


def test_lines_of_sight_cross_unseen_space_exactly_where_a_sample_no_view_saw_through_lies() -> None:
    """``WorldQueries.crosses_unseen_space`` against brute force: the same samples along each segment (every
    ``ray_unknown_step_m`` from the origin, short of the spared end), each asked of every view with numpy; a view's
    pixels below the level see nothing through."""
    bands = np.array([1.0, 0.3, 1.0, 0.6], np.float32)
    width = INTRINSICS.width
    confidence = np.ascontiguousarray(np.broadcast_to(bands[np.arange(width) * 4 // width], INTRINSICS.shape))
    views = [_view(yaw, confidence) for yaw in (-20.0, 0.0, 20.0)]
    voxel_map = VoxelMap(VOXEL_M)
    queries = WorldQueries(voxel_map, views, max_distance_m=0.25, confidence_levels=LEVELS)
    rng = np.random.default_rng(1)
    points = EYE_M + rng.uniform([-1.0, -4.0, -1.5], [5.0, 4.0, 1.0], size=(400, 3))
    spare, step = 0.1, queries.ray_unknown_step_m
    for origin in (EYE_M, EYE_M + [0.5, 0.2, -0.3], EYE_M - [2.0, 0.0, 0.0]):  # the last one behind every view
        for level in LEVELS:
            seen_by = [replace(v, depth=np.where(v.confidence >= level, v.depth, 0).astype(np.float32)) for v in views]
            expected = np.zeros(len(points), bool)
            for i, point in enumerate(points):
                dx, dy, dz = point - origin
                length = float(np.sqrt(dx * dx + dy * dy + dz * dz))  # as the kernel sums it
                t, samples = 0.5 * step, []
                while t < length * (1.0 - spare):
                    samples.append(origin + (t / length) * (point - origin))
                    t += step
                if samples:
                    expected[i] = not seen_through_reference(seen_by, np.array(samples), queries.free_margin_m).all()
            unseen = queries.crosses_unseen_space(origin, points, spare, min_confidence=level)
            np.testing.assert_array_equal(unseen, expected)
            assert 0 < unseen.sum() < len(points) or origin is not EYE_M
    assert queries.crosses_unseen_space(EYE_M - [2.0, 0.0, 0.0], points, spare).all()  # behind every view
