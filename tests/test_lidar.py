"""The LiDAR from memory: accuracy against the true street mesh after a drive, the ScanLidar RPC on a real server, and
the per-voxel surface points it stands on (saved with the map; older saves load)."""

from __future__ import annotations

import json
import math
import time
from typing import ClassVar

import numpy as np
import pytest

from worldweave.bridge.eval.scenes import Scene, make_street
from worldweave.bridge.eval.trajectories import driving
from worldweave.bridge.generators.base import Condition, GenerationResult, Generator
from worldweave.bridge.memory.spatial_memory import MemoryConfig
from worldweave.bridge.memory.voxel_map import VoxelMap
from worldweave.bridge.queries.lidar import LidarSpec, scan
from worldweave.bridge.world import Seed, World, WorldConfig
from worldweave.proto import voxel_keys
from worldweave.proto.errors import DeadlineExceededError, InvalidInputError, LimitExceededError
from worldweave.proto.geometry import Intrinsics, Pose

VOXEL_M = 0.05
RANGE_M = 30.0
STREET_FRAMES = 24
STREET_INTRINSICS = Intrinsics(160.0, 160.0, 159.5, 119.5, 320, 240)
"""The drive's cameras: 320 x 240, 90° horizontal field of view."""
OPENCV_FROM_SENSOR = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
"""Columns: the sensor's x (forward), y (left), z (up) in OpenCV camera axes."""


class TrueStreet(Generator):
    """A perfect generator: every frame is the street's exact view, with its depth, fully confident."""

    name: ClassVar[str] = "true-street"
    max_frames: ClassVar[int] = 8
    returns_depth: ClassVar[bool] = True

    def __init__(self, scene: Scene) -> None:
        self.scene = scene

    def generate(self, condition: Condition) -> GenerationResult:
        frames = [self.scene.render(pose, condition.intrinsics) for pose in condition.poses]
        return GenerationResult(tuple(f.rgb for f in frames), tuple(f.depth for f in frames),
                                confidences=tuple(np.ones(f.depth.shape, np.float32) for f in frames))


def level_sensor(camera: Pose) -> Pose:
    """``T_world_sensor`` at a camera's centre, level, facing the camera's heading (REP-103 sensor axes)."""
    yaw = math.atan2(camera.forward[1], camera.forward[0])
    rotation = np.array([[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    return Pose(rotation, camera.position)


@pytest.fixture(scope="module")
def street() -> tuple[Scene, World, list[Pose]]:
    """The street after a drive: seeded with the first view, then one lap and a revisit stepped through a perfect
    generator, at 5 cm voxels."""
    scene = make_street(0)
    poses = list(driving(scene, STREET_FRAMES).poses)
    world = World(Seed([scene.render(poses[0], STREET_INTRINSICS)]),
                  WorldConfig(memory=MemoryConfig(voxel_size_m=VOXEL_M)), generator=TrueStreet(scene))
    for start in range(1, STREET_FRAMES, 8):
        world.step(poses[start : start + 8])
    return scene, world, poses


def test_lidar_matches_the_true_street(street) -> None:
    from worldweave.bridge.open3d_import import load_open3d

    o3d = load_open3d()
    scene, world, poses = street
    sensor = level_sensor(poses[STREET_FRAMES // 3])
    spec = LidarSpec(channels=32, range_m=RANGE_M, points_per_scan=32 * 1024, upper_fov_deg=10.0, lower_fov_deg=-30.0)
    result = scan(world.queries, sensor, spec)
    directions_sensor, ring = spec.rays()
    assert len(result.hit) == spec.ray_count == 32 * 1024 and np.array_equal(result.ring, ring)
    assert not (result.hit & result.unknown).any()

    # The truth: Open3D's RaycastingScene on the street's mesh, along the same rays.
    directions = directions_sensor @ sensor.rotation.T
    rays = np.concatenate([np.broadcast_to(sensor.position, directions.shape), directions], axis=1).astype(np.float32)
    caster = o3d.t.geometry.RaycastingScene()
    caster.add_triangles(o3d.core.Tensor(scene.vertices.astype(np.float32)), o3d.core.Tensor(scene.triangles.astype(np.uint32)))
    true_t = caster.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy().astype(np.float64)
    true_hit = true_t <= RANGE_M

    hit = result.hit
    points_world = sensor.cam_to_world(result.points_m[hit].astype(np.float64))
    on_surface = float(np.mean(scene.distance_m(points_world) <= VOXEL_M))
    range_agrees = float(np.mean(np.abs(result.range_m[hit] - true_t[hit]) <= VOXEL_M))
    # Observed surface: the voxel holding the true hit, or a face neighbour, is in memory.
    true_points = sensor.position + directions * np.where(true_hit, true_t, 0.0)[:, None]
    cells = np.floor(true_points / VOXEL_M).astype(np.int64)
    voxel_map = world.memory.voxel_map
    observed = np.zeros(len(cells), bool)
    for offset in np.concatenate([np.zeros((1, 3), np.int64), np.eye(3, dtype=np.int64), -np.eye(3, dtype=np.int64)]):
        observed |= ~np.isnan(voxel_map.confidence_at(voxel_keys.pack(cells + offset)))
    observed &= true_hit
    recall = float(np.mean(hit[observed]))
    free = ~hit & ~result.unknown
    print(f"hits {hit.sum()} of {len(hit)}: on surface {on_surface:.4f}, ranges within a voxel {range_agrees:.4f}, "
          f"observed-surface rays hit {recall:.4f} ({observed.sum()} rays), refined {result.refined[hit].mean():.3f}, "
          f"free {free.sum()} (true surface in range: {(free & true_hit).sum()})")
    assert hit.sum() > 5000
    assert on_surface >= 0.99
    assert range_agrees >= 0.95
    assert recall >= 0.90
    # Never-seen space is never free: a ray reported free has no true surface within its range, up to the rays that
    # slip through unobserved gaps thinner than the free-space sampling step (four voxels).
    assert (free & true_hit).sum() <= 0.001 * len(hit)
    # Rays into the sky beyond what the drive saw end unknown, not free.
    upward = (directions_sensor[:, 2] > 0.1) & ~true_hit
    assert upward.any() and not hit[upward].any()


def test_a_scan_in_parts_equals_the_whole_scan(street) -> None:
    _, world, poses = street
    spec = LidarSpec(channels=8, range_m=RANGE_M, points_per_scan=8 * 512, upper_fov_deg=5.0, lower_fov_deg=-25.0)
    sensor = level_sensor(poses[5])
    whole = scan(world.queries, sensor, spec)
    cuts = (slice(0, 1000), slice(1000, 1001), slice(1001, None))
    parts = [scan(world.queries, sensor, spec, part=part) for part in cuts]
    assert whole.hit.sum() > 500
    for name in ("points_m", "range_m", "intensity", "ring", "hit", "unknown", "refined"):
        np.testing.assert_array_equal(np.concatenate([getattr(p, name) for p in parts]), getattr(whole, name))


def test_cached_planes_equal_fitting_every_time(street) -> None:
    """Scans through the plane cache equal scans that fit every plane (a fresh ``WorldQueries``: empty caches), bit
    for bit: unchanged, and after edits next to cached planes: new voxels, surface points moved in existing voxels
    (no voxel added), a removal, a fused frame."""
    from worldweave.bridge.queries.world_queries import WorldQueries
    from worldweave.bridge.regions import Sphere

    scene, _, poses = street  # the scene and drive; memory of its own, built here from a few views
    intrinsics = Intrinsics(80.0, 80.0, 79.5, 59.5, 160, 120)
    views = [scene.render(pose, intrinsics) for pose in poses[5:9]]
    voxel_map = VoxelMap(VOXEL_M)
    for i, frame in enumerate(views):
        voxel_map.integrate(frame, frame_id=i)
    queries = WorldQueries(voxel_map, views, max_distance_m=0.25)  # the LiDAR reads no distance field
    sensor = level_sensor(poses[7])
    spec = LidarSpec(channels=16, range_m=RANGE_M, points_per_scan=16 * 256, upper_fov_deg=0.0, lower_fov_deg=-30.0)
    planes = queries.plane_cache(queries.level())

    def assert_as_if_fitted(cached) -> None:
        fitted = scan(WorldQueries(voxel_map, views, max_distance_m=0.25), sensor, spec)
        for name in ("points_m", "range_m", "intensity", "hit", "unknown", "refined"):
            np.testing.assert_array_equal(getattr(cached, name), getattr(fitted, name), err_msg=name)

    first = scan(queries, sensor, spec)
    fits = len(planes)
    assert first.refined.sum() > 1000 and fits > 500
    again = scan(queries, sensor, spec)
    assert len(planes) == fits  # every plane came from the cache
    assert_as_if_fitted(again)

    hits = sensor.cam_to_world(first.points_m[first.refined].astype(np.float64))

    def hit_at(range_m: float) -> np.ndarray:
        return hits[np.argmin(np.abs(first.range_m[first.refined] - range_m))]

    near = hit_at(6.0)  # a road hit 6 m ahead
    grid = np.stack(np.meshgrid(*[np.linspace(-0.2, 0.2, 9)] * 2, indexing="ij"), axis=-1).reshape(-1, 2)
    voxel_map.insert(near + np.stack([grid[:, 0], grid[:, 1], 0.1 + grid[:, 0]], axis=1),  # a ramp on the road
                     np.full((len(grid), 3), 200, np.uint8))
    queries.sync()
    assert 0 < len(planes) < fits  # the planes around the ramp are dropped, the rest kept
    edited = scan(queries, sensor, spec)
    assert not np.array_equal(edited.range_m, first.range_m)
    assert_as_if_fitted(edited)

    count = len(voxel_map)
    moved = voxel_map.crop(Sphere(hit_at(8.0), 0.3)).positions_m  # points at voxel centres pull surface points there
    voxel_map.insert(moved, np.full(moved.shape, 90, np.uint8))
    assert len(voxel_map) == count  # only existing voxels changed
    before, edited = edited, scan(queries, sensor, spec)
    assert not np.array_equal(edited.range_m, before.range_m)
    assert_as_if_fitted(edited)

    voxel_map.remove(Sphere(hit_at(10.0), 0.2))
    assert_as_if_fitted(scan(queries, sensor, spec))

    fused = scene.render(poses[9], intrinsics)
    voxel_map.integrate(fused, frame_id=len(views))  # a step's fusion moves surface points of voxels seen again
    views.append(fused)
    assert_as_if_fitted(scan(queries, sensor, spec))


def test_first_return_answers_as_trace(street) -> None:
    """The scan's fused march and free-space walk (``trace_first_return``) equals ``trace`` (the Raycast's) bit for
    bit at every level, on memory whose voxels lie on both sides of the levels (views with banded pixel confidence);
    except that a ray entering unknown space before any voxel reports no voxel there (the march stopped)."""
    from dataclasses import replace

    from worldweave.bridge.queries.world_queries import WorldQueries

    scene, _, poses = street
    intrinsics = Intrinsics(56.0, 56.0, 55.5, 41.5, 112, 84)  # small views: few voxels for the level copies
    bands = np.array([1.0, 0.6, 0.3, 0.0, 1.0, 0.3, 0.6, 1.0], np.float32)
    voxel_map, views = VoxelMap(VOXEL_M), []
    for i, pose in enumerate(poses[5:9]):
        confidence = np.broadcast_to(np.roll(bands, i)[np.arange(112) * len(bands) // 112], (84, 112))
        frame = replace(scene.render(pose, intrinsics), confidence=np.ascontiguousarray(confidence, np.float32))
        voxel_map.integrate(frame, frame_id=i)
        views.append(frame)
    levels = (0.0, 0.5, 0.8)
    queries = WorldQueries(voxel_map, views, max_distance_m=0.25, confidence_levels=levels)
    sensor = level_sensor(poses[7])
    spec = LidarSpec(channels=16, range_m=RANGE_M, points_per_scan=16 * 384, upper_fov_deg=10.0, lower_fov_deg=-30.0)
    directions = spec.rays()[0] @ sensor.rotation.T
    origins = np.broadcast_to(sensor.position, directions.shape)
    for level in levels:
        t, voxels, hit, unknown = queries.trace(origins, directions, np.full(len(directions), RANGE_M), level)
        first_t, first_voxels, first_hit, first_unknown = queries.trace_first_return(sensor.position, directions,
                                                                                     RANGE_M, level)
        np.testing.assert_array_equal(first_unknown, unknown)
        marched = first_t >= 0
        cut = (t >= 0) & ~marched  # entered unknown space first: the march stopped there
        np.testing.assert_array_equal(first_t[~cut], t[~cut])
        np.testing.assert_array_equal(first_hit[~cut], hit[~cut])
        np.testing.assert_array_equal(first_voxels[marched], voxels[marched])
        assert np.all(unknown[cut] < t[cut]) and not first_hit[cut].any()
        assert cut.sum() > 20 and marched.sum() > 200, (level, cut.sum(), marched.sum())
        if level > 0:  # voxels below the level stop rays as unknown
            assert ((t >= 0) & ~hit).sum() > 10, level


def test_lidar_pattern_follows_carla_parameters() -> None:
    spec = LidarSpec(channels=4, range_m=10.0, points_per_scan=None, points_per_second=800.0, rotation_frequency_hz=20.0,
                     upper_fov_deg=15.0, lower_fov_deg=-15.0, horizontal_fov_deg=90.0)
    assert spec.points_per_channel == 10 and spec.ray_count == 40
    directions, ring = spec.rays()
    elevation = np.degrees(np.arcsin(directions[:, 2]))
    azimuth = np.degrees(np.arctan2(directions[:, 1], directions[:, 0]))
    assert np.allclose(elevation[ring == 0], 15.0) and np.allclose(elevation[ring == 3], -15.0)
    assert np.allclose(azimuth[:10], -45.0 + 4.5 + 9.0 * np.arange(10))
    assert np.allclose(np.linalg.norm(directions, axis=1), 1.0)
    for bad, named in (
        (dict(channels=0), "channels"), (dict(range_m=-1.0), "range_m"), (dict(points_per_second=5.0), "exactly one"),
        (dict(upper_fov_deg=-40.0), "vertical FOV"), (dict(horizontal_fov_deg=400.0), "horizontal_fov_deg"),
    ):
        with pytest.raises(InvalidInputError, match=named):
            LidarSpec(**bad)


def test_surface_points_are_saved_and_older_maps_load(tmp_path, room) -> None:
    intrinsics = Intrinsics.from_fov(64, 48, fov_x_deg=70.0)
    frame = room.render(Pose.look_at((0.0, 0.0, 1.4), (2.0, 0.5, 1.0)), intrinsics)
    voxel_map = VoxelMap(0.05)
    voxel_map.integrate(frame, frame_id=0)
    keys = voxel_map.voxels().keys
    surface = voxel_map.surface_at(keys)
    centres = voxel_keys.unpack(keys) * 0.05 + 0.025
    assert np.all(np.abs(surface - centres) <= 0.025 + 1e-6) and not np.allclose(surface, centres)
    # The mean of the fused points lies on the true surface (the room's flat walls), closer than voxel centres do.
    assert np.median(room.distance_m(surface)) < 0.25 * np.median(room.distance_m(centres))
    voxel_map.save(tmp_path / "map")
    assert np.array_equal(VoxelMap.load(tmp_path / "map").surface_at(keys), surface)
    # A map saved before surface points (format 2) loads; its voxels answer their centres until seen again.
    folder = tmp_path / "map"
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 2
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for name in ("surface_offset_m", "surface_weight"):
        next(folder.glob(f"{name}.*")).unlink()
    older = VoxelMap.load(folder)
    assert np.allclose(older.surface_at(keys), centres, atol=1e-6)
    older.integrate(frame, frame_id=1)
    assert np.allclose(older.surface_at(keys), surface, atol=1e-6)


def test_both_index_backends_keep_the_same_surface_points(room) -> None:
    intrinsics = Intrinsics.from_fov(64, 48, fov_x_deg=70.0)
    frames = [room.render(Pose.look_at((0.0, 0.0, 1.4), target), intrinsics) for target in ((2.0, 0.5, 1.0), (2.0, -0.5, 1.2))]
    maps = {backend: VoxelMap(0.05, backend=backend) for backend in ("numba", "torch")}
    for voxel_map in maps.values():
        for i, frame in enumerate(frames):
            voxel_map.integrate(frame, frame_id=i)
    keys = np.sort(maps["numba"].voxels().keys)
    assert np.array_equal(np.sort(maps["torch"].voxels().keys), keys)
    np.testing.assert_allclose(maps["torch"].surface_at(keys), maps["numba"].surface_at(keys), atol=1e-5)


def test_plane_eigenvectors_match_numpy() -> None:
    from worldweave.bridge.queries.lidar import _smallest_eigen

    rng = np.random.default_rng(0)
    normal = np.empty(3)
    for _ in range(200):
        a = rng.normal(size=(3, 3)) * rng.uniform(0.01, 3.0, size=3)
        matrix = a @ a.T
        smallest, middle = _smallest_eigen(matrix[0, 0], matrix[0, 1], matrix[0, 2], matrix[1, 1], matrix[1, 2],
                                           matrix[2, 2], normal)
        values, vectors = np.linalg.eigh(matrix)
        np.testing.assert_allclose([smallest, middle], values[:2], atol=1e-9 * values[2])
        if values[1] - values[0] > 1e-6 * values[2]:
            assert abs(abs(normal @ vectors[:, 0]) - 1.0) < 1e-6


# ------------------------------------------------------------------------------------------------ the RPC


def test_scan_lidar_rpc(client, world_id) -> None:
    from worldweave.sim_clients.sensors import lidar_spec, scan_lidar

    camera = client.worlds.get(world_id)  # the wall seed's camera: (0, 0, 1.5) looking along +x at a wall 3 m ahead
    assert camera.world_id == world_id
    T_world_sensor = np.eye(4)
    T_world_sensor[:3, 3] = (0.0, 0.0, 1.5)
    spec = lidar_spec(channels=8, range_m=6.0, points_per_scan=8 * 90, upper_fov_deg=5.0, lower_fov_deg=-5.0,
                      horizontal_fov_deg=90.0)
    result = scan_lidar(client, world_id, T_world_sensor, spec)
    assert len(result) == 720 and result.points_per_channel == 90
    assert np.array_equal(result.ring, np.repeat(np.arange(8), 90))
    hit = result.hit
    assert hit.sum() >= 20 and not (hit & result.unknown).any()  # 2 cm voxels from a 64 x 48 view: sparse
    # The wall is the plane x = 3 m: hits lie on it (in the sensor frame too: the sensor is axis-aligned).
    assert np.allclose(result.points_m[hit, 0], 3.0, atol=0.02)
    assert np.allclose(np.linalg.norm(result.points_m[hit], axis=1), result.range_m[hit], atol=1e-4)
    assert np.all((result.intensity[hit] > 0) & (result.intensity[hit] <= 1)) and np.all(result.intensity[~hit] == 0)
    # Rays beside the wall, which the seed never saw past, end unknown: never free.
    assert result.unknown[~hit].all()
    with pytest.raises(InvalidInputError, match="confidence levels"):
        scan_lidar(client, world_id, T_world_sensor, spec, min_confidence=0.3)
    with pytest.raises(InvalidInputError, match="channels"):
        scan_lidar(client, world_id, T_world_sensor, lidar_spec(channels=0))


def test_scan_lidar_over_the_ray_limit_is_refused(client, world_id) -> None:
    from worldweave.sim_clients.sensors import lidar_spec, scan_lidar

    from worldweave.server.limits import ServerLimits

    limit = ServerLimits().max_query_items  # the fixture's server runs with the default limits
    too_many = lidar_spec(channels=64, points_per_scan=limit + 64)
    with pytest.raises(LimitExceededError, match="max_query_items"):
        scan_lidar(client, world_id, np.eye(4), too_many)
    far = lidar_spec(channels=64, points_per_scan=64 * 1024, range_m=1e9)
    with pytest.raises(LimitExceededError, match="max_ray_voxels"):
        scan_lidar(client, world_id, np.eye(4), far)


def test_a_scan_past_its_deadline_stops_and_the_world_renders_promptly() -> None:
    """A scan far over its deadline (the most rays one request may ask, 2,097,152, at range 1e9 m: about 6 s of work on
    the 2-core development machine, 6x its deadline; 262,144 rays took ~1 s and raced it) stops between two chunks with
    DEADLINE_EXCEEDED and releases the world's lock."""
    from worldweave.bridge.eval.wall import wall_seed, yaw_poses
    from worldweave.bridge.generators.echo import EchoGenerator
    from worldweave.server.app import BackgroundServer, ServerConfig
    from worldweave.server.limits import ServerLimits
    from worldweave.sim_clients.client import WorldClient
    from worldweave.sim_clients.sensors import lidar_spec, scan_lidar

    roomy = ServerConfig(limits=ServerLimits(max_ray_voxels=1 << 60))  # let the long scan through the budget
    with BackgroundServer(config=roomy, generator=EchoGenerator()) as running, WorldClient(running.address) as client:
        frames, intrinsics = wall_seed(64, 48)
        world_id = client.worlds.create(frames, intrinsics).world_id
        T_world_sensor = np.eye(4)
        T_world_sensor[:3, 3] = (0.0, 0.0, 1.5)
        spec = lidar_spec(channels=256, points_per_scan=ServerLimits().max_query_items, range_m=1e9)
        with pytest.raises(DeadlineExceededError):
            scan_lidar(client, world_id, T_world_sensor, spec, timeout_s=1.0)
        began = time.monotonic()
        frame = client.render(world_id, yaw_poses(1)[0], timeout_s=10.0)[0]  # waits for the world's lock
        assert frame.rgb.shape == (48, 64, 3)
        print(f"Render after the cut scan answered in {time.monotonic() - began:.2f} s")
