"""``WorldQueries`` on a room fused from rendered RGB-D views: occupancy (free vs unknown), rays into unknown space,
answers that follow integrates and edits, snapshots, crop, and the facade's contracts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.memory.voxel_map import VoxelMap
from worldweave.bridge.queries import Occupancy, WorldQueries
from worldweave.bridge.queries.distance_field import nearest_reference
from worldweave.bridge.queries.occupancy import seen_through_reference
from worldweave.bridge.queries.raycast import raycast_reference
from worldweave.bridge.regions import Box, Sphere
from worldweave.proto.errors import InvalidFrameError
from worldweave.proto.geometry import Intrinsics, Pose

VOXEL = 0.02
ROOM_MIN, ROOM_MAX = np.array([-2.0, -2.0, 0.0]), np.array([2.0, 2.0, 2.5])
BOX_MIN, BOX_MAX = np.array([0.4, -0.6, 0.0]), np.array([1.2, 0.2, 0.7])
INTRINSICS = Intrinsics.from_fov(160, 120, fov_x_deg=60.0)


def render(pose: Pose, intrinsics: Intrinsics = INTRINSICS) -> RGBDFrame:
    """Exact depth of the room's inner walls and the box, seen from ``pose`` inside the room."""
    rays = intrinsics.pixel_rays().reshape(-1, 3).astype(np.float64)
    directions = rays @ pose.rotation.T
    origin = pose.position
    with np.errstate(divide="ignore", invalid="ignore"):
        t_room = np.where(directions > 0, (ROOM_MAX - origin) / directions, (ROOM_MIN - origin) / directions).min(axis=1)
        t1, t2 = (BOX_MIN - origin) / directions, (BOX_MAX - origin) / directions
        enter, leave = np.minimum(t1, t2).max(axis=1), np.maximum(t1, t2).min(axis=1)
    t = np.where((enter <= leave) & (enter > 0) & (enter < t_room), enter, t_room)
    points = origin + directions * t[:, None]
    rgb = (np.abs(np.sin(points * 7.0)) * 255).astype(np.uint8)
    h, w = intrinsics.shape
    return RGBDFrame(rgb.reshape(h, w, 3), (t * rays[:, 2]).astype(np.float32).reshape(h, w), pose, intrinsics)


def views(count: int) -> list[RGBDFrame]:
    frames = []
    for i in range(count):
        angle = 2 * np.pi * i / count
        eye = np.array([-0.8 * np.cos(angle), -0.8 * np.sin(angle), 1.3])
        frames.append(render(Pose.look_at(eye, eye + [np.cos(angle), np.sin(angle), -0.3])))
    return frames


def fused(frames: list[RGBDFrame], voxel_map: VoxelMap | None = None) -> VoxelMap:
    voxel_map = VoxelMap(VOXEL) if voxel_map is None else voxel_map
    for frame in frames:
        voxel_map.integrate(frame, frame_id=voxel_map.version)
    return voxel_map


def check_against_brute_force(queries: WorldQueries, rng) -> None:
    voxel_map = queries.voxel_map
    centers = voxel_map.points()[0].astype(np.float64)
    points = rng.uniform(ROOM_MIN, ROOM_MAX, size=(300, 3))
    near = queries.nearest(points, 1.0)
    truth = nearest_reference(points, centers, 1.0)
    np.testing.assert_array_equal(near.found, truth.found)
    assert np.abs(near.distance_m[truth.found] - truth.distance_m[truth.found]).max() < VOXEL / 2
    directions = rng.normal(size=(300, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    hits = queries.raycast(points, directions, 3.0)
    ref_t, _ = raycast_reference(np.sort(voxel_map.voxels().keys), VOXEL, points, directions, 3.0)
    np.testing.assert_array_equal(hits.hit, ref_t >= 0)
    np.testing.assert_allclose(hits.distance_m[hits.hit], ref_t[ref_t >= 0], atol=1e-9)


# ----------------------------------------------------------------------------------------------- occupancy


def test_occupancy_in_front_of_a_wall_is_free_behind_it_unknown():
    camera = Pose.look_at([-1.5, 0.0, 1.2], [2.0, 0.0, 1.2])  # looks along +x at the wall x = 2
    frame = render(camera)
    queries = WorldQueries(fused([frame]), [frame])
    wall = queries.raycast([camera.position], [camera.forward], 5.0).point_m[0] + camera.forward * VOXEL / 2
    points = np.array(
        [
            [0.0, 0.0, 1.2],  # in front of the wall, seen through
            [1.95, 0.0, 1.2],  # 5 cm in front of the wall
            wall,  # in the wall's voxel
            [2.3, 0.0, 1.2],  # behind the wall
            [-1.9, 0.0, 1.2],  # behind the camera
            [1.3, -0.2, 0.35],  # behind the box, hidden from the camera
            [0.0, 0.0, 1.2 + 3.0],  # outside the room, above the image
        ]
    )
    codes = queries.occupancy(points)
    expected = [Occupancy.FREE, Occupancy.FREE, Occupancy.OCCUPIED] + [Occupancy.UNKNOWN] * 4
    np.testing.assert_array_equal(codes, expected)


def test_occupancy_without_views_is_occupied_or_unknown():
    camera = Pose.look_at([-1.5, 0.0, 1.2], [2.0, 0.0, 1.2])
    queries = WorldQueries(fused([render(camera)]))
    wall = queries.raycast([camera.position], [camera.forward], 5.0).point_m[0] + camera.forward * VOXEL / 2
    codes = queries.occupancy([[0.0, 0.0, 1.2], wall])
    np.testing.assert_array_equal(codes, [Occupancy.UNKNOWN, Occupancy.OCCUPIED])


def test_occupancy_kernel_matches_numpy_reference():
    frames = views(4)
    queries = WorldQueries(fused(frames), frames)
    rng = np.random.default_rng(0)
    points = rng.uniform(ROOM_MIN - 0.3, ROOM_MAX + 0.3, size=(4000, 3))
    codes = queries.occupancy(points)
    occupied = queries.nearest(points, 0.05).found & (codes == Occupancy.OCCUPIED)
    np.testing.assert_array_equal(codes == Occupancy.OCCUPIED, occupied)
    free = seen_through_reference(frames, points, queries.free_margin_m) & ~occupied
    np.testing.assert_array_equal(codes == Occupancy.FREE, free)
    assert 0.2 < free.mean() < 0.8 and (codes == Occupancy.UNKNOWN).mean() > 0.1


def test_views_may_be_a_callable_read_at_query_time():
    frame = render(Pose.look_at([-1.5, 0.0, 1.2], [2.0, 0.0, 1.2]))
    known: list[RGBDFrame] = []
    queries = WorldQueries(fused([frame]), lambda: known)
    assert queries.occupancy([[0.0, 0.0, 1.2]])[0] == Occupancy.UNKNOWN
    known.append(frame)
    assert queries.occupancy([[0.0, 0.0, 1.2]])[0] == Occupancy.FREE


def test_a_bad_view_is_named():
    frame = render(Pose.look_at([-1.5, 0.0, 1.2], [2.0, 0.0, 1.2]))
    bad = RGBDFrame(frame.rgb, frame.depth, frame.pose, frame.intrinsics)
    object.__setattr__(bad, "depth", frame.depth.astype(np.float64))
    queries = WorldQueries(fused([frame]), [frame, bad])
    with pytest.raises(InvalidFrameError, match="view 1: depth must be float32"):
        queries.occupancy(np.zeros((1, 3)))


# ----------------------------------------------------------------------------------------------- rays


def test_a_ray_into_unknown_space_reports_unknown_not_a_miss():
    camera = Pose.look_at([-1.5, 0.0, 1.2], [2.0, 0.0, 1.2])
    frame = render(camera)
    half_seen = frame.depth.copy()
    half_seen[:, INTRINSICS.width // 2 :] = 0.0  # the right half of the image has no depth: nothing known there
    frame = RGBDFrame(frame.rgb, half_seen, camera, INTRINSICS)
    queries = WorldQueries(fused([frame]), [frame])
    right = camera.rotation[:, 0]
    forward = camera.forward
    directions = np.array([forward - 0.3 * right, forward + 0.3 * right, forward - 0.1 * right, -forward])
    origins = np.tile(camera.position, (4, 1))
    hits = queries.raycast(origins, directions, [6.0, 6.0, 1.0, 6.0])
    # Left: through seen free space onto the wall. Right: into unseen space, where the wall was never fused.
    np.testing.assert_array_equal(hits.hit, [True, False, False, False])
    np.testing.assert_array_equal(hits.ended_in_unknown, [False, True, False, True])
    # Forward, short of the wall: a true miss through observed free space. Backward: unknown at once.
    assert np.isinf(hits.unknown_from_m[[0, 2]]).all()
    assert 0.0 < hits.unknown_from_m[1] < 1.0 and hits.unknown_from_m[3] <= queries.ray_unknown_step_m
    assert abs(hits.distance_m[0] - 3.5 / np.cos(np.arctan(0.3))) < 2 * VOXEL


# --------------------------------------------------------------------------------------------- updates


def test_answers_follow_integrates_and_edits():
    rng = np.random.default_rng(1)
    frames = views(6)
    voxel_map = fused(frames[:2])
    queries = WorldQueries(voxel_map, frames)
    check_against_brute_force(queries, rng)
    fused(frames[2:], voxel_map)
    stats = queries.sync()
    assert stats.voxels_added > 0 and not stats.rebuilt
    check_against_brute_force(queries, rng)
    removed = voxel_map.remove(Box(BOX_MIN - 0.05, BOX_MAX + 0.05))
    assert removed > 0
    stats = queries.sync()
    assert stats.voxels_removed == removed
    check_against_brute_force(queries, rng)
    voxel_map.insert(rng.uniform(-0.3, 0.3, size=(500, 3)).astype(np.float32), np.zeros((500, 3), np.uint8))
    check_against_brute_force(queries, rng)
    # The incrementally kept field answers like one built from scratch.
    fresh = WorldQueries(voxel_map)
    points = rng.uniform(ROOM_MIN, ROOM_MAX, size=(2000, 3))
    np.testing.assert_allclose(queries.nearest(points, 2.0).distance_m, fresh.nearest(points, 2.0).distance_m, atol=VOXEL / 2)


def _box_shell(lo, hi, step=VOXEL / 2):
    axes = [np.arange(a, b + 1e-9, step) for a, b in zip(lo, hi)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    on_face = np.isclose(grid, lo).any(axis=1) | np.isclose(grid, hi).any(axis=1)
    return grid[on_face].astype(np.float32)


def test_a_removed_box_stops_colliding():
    floor = _box_shell([-1.0, -1.0, 0.0], [1.0, 1.0, 0.0])
    box = _box_shell([-0.2, -0.2, 0.1], [0.2, 0.2, 0.5])
    voxel_map = VoxelMap(VOXEL)
    voxel_map.insert(np.concatenate([floor, box]), np.full((len(floor) + len(box), 3), 120, np.uint8))
    queries = WorldQueries(voxel_map)

    def probes():
        spheres = queries.collide_spheres([[0.0, 0.0, 0.3], [0.0, 0.0, 0.6]], [0.25, 0.12], max_clearance_m=0.5)
        capsules = queries.collide_capsules([[-0.5, 0.0, 0.3]], [[0.5, 0.0, 0.3]], 0.05)
        boxes = queries.collide_boxes([[0.3, 0.0, 0.55]], [[0.2, 0.1, 0.1]], np.eye(3)[None])
        ray = queries.raycast([[0.0, 0.0, 1.0]], [[0.0, 0.0, -1.0]], 3.0)
        return spheres, capsules, boxes, ray

    spheres, capsules, boxes, ray = probes()
    assert spheres.hit.all() and capsules.hit[0] and boxes.hit[0]
    assert abs(ray.point_m[0, 2] - 0.52) < 1e-6  # the box top's voxels span z 0.50..0.52
    removed = voxel_map.remove(Box([-0.25, -0.25, 0.05], [0.25, 0.25, 0.55]))
    assert removed > 0
    spheres, capsules, boxes, ray = probes()
    assert not spheres.hit.any() and not capsules.hit[0] and not boxes.hit[0]
    assert abs(ray.point_m[0, 2] - 0.02) < 1e-6  # falls through to the floor (voxels z 0..0.02)
    floor_distance = np.sqrt((np.array([0.3, 0.6]) - 0.01) ** 2 + 2 * 0.01**2)  # to the floor voxel centres below
    np.testing.assert_allclose(spheres.clearance_m, floor_distance - [0.25, 0.12] - queries.contact_margin_m, atol=1e-6)


def test_an_expired_version_rebuilds_from_a_snapshot():
    frames = views(4)
    voxel_map = VoxelMap(VOXEL, retention_versions=2)
    fused(frames[:1], voxel_map)
    queries = WorldQueries(voxel_map)
    queries.sync()
    fused(frames[1:], voxel_map)
    stats = queries.sync()
    assert stats.rebuilt and stats.version == voxel_map.version == 4
    check_against_brute_force(queries, np.random.default_rng(2))


def test_the_field_stays_near_the_surface():
    voxel_map = VoxelMap(VOXEL)
    voxel_map.insert(np.array([[10.0, -3.0, 1.0]], np.float32), np.zeros((1, 3), np.uint8))
    queries = WorldQueries(voxel_map, max_distance_m=0.5)
    queries.sync()
    chunk_m = 64 * VOXEL
    lows = queries.grid.chunk_coords * chunk_m
    gaps = np.maximum(np.maximum(lows - [10.0, -3.0, 1.0], [10.0, -3.0, 1.0] - (lows + chunk_m)), 0)
    reach_m = queries.grid.reach_vox * VOXEL  # max_distance_m and a cell's diagonal
    assert reach_m < 0.8 and (np.linalg.norm(gaps, axis=1) < reach_m).all()
    assert queries.grid.n_chunks <= 27 and queries.memory_bytes() < 4 * 2**20
    assert queries.nearest([[10.0, -3.0, 1.4]], 0.5).found[0]
    assert not queries.nearest([[10.0, -3.0, 1.6]], 0.5).found[0]


# ------------------------------------------------------------------------------------------------- misc


def test_crop_returns_the_voxels_in_the_region():
    voxel_map = fused(views(3))
    queries = WorldQueries(voxel_map)
    region = Sphere([0.8, -0.2, 0.4], 0.5)
    crop = queries.crop(region)
    expected = voxel_map.crop(region)
    assert len(crop.points_m) == len(expected) > 0
    assert (np.linalg.norm(crop.points_m - [0.8, -0.2, 0.4], axis=1) <= 0.5 + 1e-6).all()
    np.testing.assert_array_equal(crop.colors, expected.colors)
    assert len(queries.crop(Box([5, 5, 5], [6, 6, 6])).points_m) == 0


def test_the_queries_import_without_open3d():
    code = "import sys, worldweave.bridge.queries; assert 'open3d' not in sys.modules, 'open3d was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_cache_drops_exactly_the_records_within_one_block_of_a_change():
    """``VoxelCache.invalidate`` (one numba pass) against the rule written with numpy set operations, on keys on
    both sides of the origin."""
    from worldweave.bridge.queries.grid import BLOCK_SHIFT
    from worldweave.bridge.queries.world_queries import VoxelCache
    from worldweave.proto import voxel_keys

    rng = np.random.default_rng(5)
    for _ in range(20):
        cached = np.unique(voxel_keys.pack(rng.integers(-40, 40, size=(300, 3))))
        changed = voxel_keys.pack(rng.integers(-40, 40, size=(int(rng.integers(1, 12)), 3)))
        cache = VoxelCache()
        cache.add(cached, np.arange(len(cached), dtype=np.float64)[:, None])  # each record: its key's index
        cache.invalidate(changed)
        blocks = np.unique(voxel_keys.unpack(changed) >> BLOCK_SHIFT, axis=0)
        span = np.arange(-1, 2)
        around = np.stack(np.meshgrid(span, span, span, indexing="ij"), axis=-1).reshape(-1, 3)
        near = voxel_keys.pack((blocks[:, None, :] + around).reshape(-1, 3))
        expected = cached[~np.isin(voxel_keys.pack(voxel_keys.unpack(cached) >> BLOCK_SHIFT), near)]
        table_keys, table_rows, shift, records = cache.table()
        held = table_keys[table_rows >= 0]
        assert len(cache) == len(expected) and set(held.tolist()) == set(expected.tolist())
        assert set(cached[records[: len(cache), 0].astype(np.int64)].tolist()) == set(expected.tolist())
