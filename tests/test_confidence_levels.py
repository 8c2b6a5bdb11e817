"""Minimum-confidence levels: every query and the point-cloud stream at each level a world declares, against brute
force on a scene that mixes sure and unsure voxels, before and after edits; the wire field over gRPC; the mirror;
the gym env's reward and termination.

The engine scene is the gym env's furnished room (exact numpy renders), fused from four views whose pixels carry
confidence 1, 0.6, 0.3 or 0 in vertical bands, so voxels land on both sides of the levels 0.5 and 0.8. Brute force:
a voxel counts at level ``c`` when ``confidence >= float32(c)``; free space comes only from pixels at or above ``c``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.generators.base import Condition, GenerationResult
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.bridge.memory.spatial_memory import MemoryConfig
from worldweave.bridge.memory.voxel_map import VoxelMap
from worldweave.bridge.queries import Occupancy, WorldQueries
from worldweave.bridge.queries.distance_field import nearest_reference
from worldweave.bridge.queries.occupancy import seen_through_reference
from worldweave.bridge.queries.raycast import raycast_reference
from worldweave.bridge.regions import Box
from worldweave.proto import voxel_keys
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose
from worldweave.sim_clients import world_state as ws
from worldweave.sim_clients.gym_env.env import surface_area_m2
from worldweave.sim_clients.gym_env.room import make_room, seed_views
from worldweave.sim_clients.mirror import PointCloudMirror

VOXEL_M = 0.05
LEVELS = (0.0, 0.5, 0.8)
BANDS = np.array([1.0, 0.6, 0.3, 0.0, 1.0, 0.3, 0.6, 1.0], dtype=np.float32)
"""Pixel confidence by vertical band of each view (8 bands across)."""
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


# ------------------------------------------------------------------------------------------------ engine scene


@dataclass
class Scene:
    voxel_map: VoxelMap
    views: list[RGBDFrame]
    queries: WorldQueries
    room: object


def banded_confidence(width: int, height: int, shift: int) -> np.ndarray:
    bands = np.roll(BANDS, shift)[np.arange(width) * len(BANDS) // width]
    return np.ascontiguousarray(np.broadcast_to(bands, (height, width)), dtype=np.float32)


@pytest.fixture(scope="module")
def scene() -> Scene:
    room = make_room(np.random.default_rng(0))
    intrinsics = Intrinsics.from_fov(64, 48, fov_x_deg=90.0)
    voxel_map = VoxelMap(VOXEL_M)
    views = []
    for k, (rgb, depth, c2w) in enumerate(seed_views(room, intrinsics, yaw_rad=0.3)):
        frame = RGBDFrame(rgb, depth, Pose.from_matrix(c2w), intrinsics, banded_confidence(64, 48, k))
        voxel_map.integrate(frame, frame_id=k)
        views.append(frame)
    queries = WorldQueries(voxel_map, views, max_distance_m=1.0, confidence_levels=LEVELS)
    return Scene(voxel_map, views, queries, room)


def segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    e = b - a
    t = np.clip(((points - a) @ e) / max(e @ e, 1e-300), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * e), axis=1)


def box_distance(points: np.ndarray, center: np.ndarray, half: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    q = np.abs((points - center) @ rotation) - half
    return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)


def expected_contacts(distances_all: np.ndarray, keep: np.ndarray, margin: float, reach: float):
    """(hit, clearance, unknown) from signed distances to every voxel centre and the mask of those at the level."""
    best = distances_all[keep].min(initial=np.inf) - margin
    clearance = best if best <= reach else np.inf
    touches_any = distances_all.min(initial=np.inf) - margin <= 0
    return clearance <= 0, clearance, bool(touches_any and not clearance <= 0)


@dataclass(frozen=True)
class MaskedView:
    """A view whose depth keeps only the pixels at or above a level: the reference's free space."""

    pose: Pose
    intrinsics: Intrinsics
    depth: np.ndarray


def check_every_query(scene: Scene, rng: np.random.Generator) -> None:
    """Every query at every level equals brute force on the current map."""
    queries, voxel_map = scene.queries, scene.voxel_map
    margin = queries.contact_margin_m
    reach = queries.max_clearance_m
    lo, hi = np.array([-3.1, -2.6, -0.1]), np.array([3.1, 2.6, 2.8])
    points = rng.uniform(lo, hi, size=(150, 3))
    voxels = voxel_map.voxels().sorted_by_key()
    centers = voxels.positions_m.astype(np.float64)
    for level in LEVELS:
        keep = voxels.confidence >= np.float32(level)
        assert 0 < keep.sum() < len(keep) or level == 0.0

        near = queries.nearest(points, 1.0, min_confidence=level)
        truth = nearest_reference(points, centers[keep], np.full(len(points), 1.0))
        np.testing.assert_array_equal(near.found, truth.found)
        np.testing.assert_allclose(near.distance_m[near.found], truth.distance_m[truth.found], atol=1e-6)

        radii = rng.uniform(0.0, 0.4, size=len(points))
        spheres = queries.collide_spheres(points, radii, min_confidence=level)
        for i in range(0, len(points), 5):
            d = np.linalg.norm(centers - points[i], axis=1) - radii[i]
            hit, clearance, unknown = expected_contacts(d, keep, margin, reach)
            assert (spheres.hit[i], spheres.unknown[i]) == (hit, unknown), (level, i)
            assert spheres.clearance_m[i] == pytest.approx(clearance, abs=1e-6)

        ends = points + rng.normal(scale=0.3, size=points.shape)
        capsules = queries.collide_capsules(points[:25], ends[:25], 0.1, min_confidence=level)
        for i in range(25):
            d = segment_distance(centers, points[i], ends[i]) - 0.1
            hit, clearance, unknown = expected_contacts(d, keep, margin, reach)
            assert (capsules.hit[i], capsules.unknown[i]) == (hit, unknown), (level, i)
            assert capsules.clearance_m[i] == pytest.approx(clearance, abs=1e-6)

        half = rng.uniform(0.05, 0.3, size=(25, 3))
        angle = rng.uniform(0, np.pi, size=25)
        rotations = np.zeros((25, 3, 3))
        rotations[:, 0, 0], rotations[:, 0, 1] = np.cos(angle), -np.sin(angle)
        rotations[:, 1, 0], rotations[:, 1, 1], rotations[:, 2, 2] = np.sin(angle), np.cos(angle), 1.0
        boxes = queries.collide_boxes(points[:25], half, rotations, min_confidence=level)
        for i in range(25):
            d = box_distance(centers, points[i], half[i], rotations[i])
            hit, clearance, unknown = expected_contacts(d, keep, margin, reach)
            assert (boxes.hit[i], boxes.unknown[i]) == (hit, unknown), (level, i)
            assert boxes.clearance_m[i] == pytest.approx(clearance, abs=1e-6)

        origins = rng.uniform([-2.0, -1.5, 0.5], [2.0, 1.5, 2.0], size=(200, 3))
        directions = rng.normal(size=(200, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        rays = queries.raycast(origins, directions, 6.0, min_confidence=level)
        t, keys = raycast_reference(voxels.keys, VOXEL_M, origins, directions, np.full(200, 6.0))
        entered = t >= 0
        rows = np.searchsorted(voxels.keys, keys)
        first_reached = entered & keep[rows.clip(max=len(keep) - 1)]
        np.testing.assert_array_equal(rays.hit, first_reached)
        np.testing.assert_allclose(rays.distance_m[rays.hit], t[first_reached], atol=1e-9)
        below = entered & ~first_reached  # stopped by a voxel below the level: unknown, not a hit, not a miss
        assert rays.ended_in_unknown[below].all() and (rays.unknown_from_m[below] <= t[below] + 1e-9).all()

        near_surface = centers[rng.choice(len(centers), 200)] + rng.uniform(-0.04, 0.04, size=(200, 3))
        probe = np.concatenate([points, near_surface])
        codes = queries.occupancy(probe, min_confidence=level)
        probe_keys = voxel_keys.pack(np.floor(probe / VOXEL_M).astype(np.int64))
        present = np.isin(probe_keys, voxels.keys)
        trusted = np.isin(probe_keys, voxels.keys[keep])
        masked = [MaskedView(v.pose, v.intrinsics, np.where(v.confidence >= np.float32(level), v.depth, 0.0)
                             .astype(np.float32)) for v in scene.views]
        free = seen_through_reference(masked, probe, queries.free_margin_m)
        expected = np.where(trusted, Occupancy.OCCUPIED,
                            np.where(present, Occupancy.UNKNOWN, np.where(free, Occupancy.FREE, Occupancy.UNKNOWN)))
        np.testing.assert_array_equal(codes, expected)
        assert (codes[present & ~trusted] == Occupancy.UNKNOWN).all()

        crop = queries.crop(Box(lo, hi), min_confidence=level)
        inside = Box(lo, hi).contains(centers) & keep
        assert sorted(map(tuple, crop.points_m.tolist())) == sorted(map(tuple, voxels.positions_m[inside].tolist()))
        assert (crop.confidence >= np.float32(level)).all()


def test_every_query_at_every_level_equals_brute_force_before_and_after_edits(scene):
    rng = np.random.default_rng(0)
    check_every_query(scene, rng)
    # Edits: remove a slab of wall and furniture, insert a cube (confidence 1), and fuse one more view that moves
    # voxels' confidence across the levels (both ways): the per-level copies follow the change log.
    scene.voxel_map.remove(Box(np.array([2.0, -1.0, 0.0]), np.array([3.1, 0.5, 1.5])))
    cube = np.stack(np.meshgrid(*[np.arange(6) * VOXEL_M] * 3, indexing="ij"), axis=-1).reshape(-1, 3) + [0.5, 0.5, 1.0]
    scene.voxel_map.insert(cube.astype(np.float32), np.full(cube.shape, 90, np.uint8))
    rgb, depth, c2w = seed_views(scene.room, scene.views[0].intrinsics, yaw_rad=0.9, count=1)[0]
    frame = RGBDFrame(rgb, depth, Pose.from_matrix(c2w), scene.views[0].intrinsics, banded_confidence(64, 48, 3))
    scene.voxel_map.integrate(frame, frame_id=10)
    scene.views.append(frame)
    check_every_query(scene, rng)


def test_points_inside_furniture_never_answer_free(scene):
    rng = np.random.default_rng(1)
    inside = np.concatenate([rng.uniform(lo + 0.1, hi - 0.1, size=(200, 3)) for lo, hi in scene.room.boxes_m
                             if np.all(hi - lo > 0.25)])
    for level in LEVELS:
        assert not (scene.queries.occupancy(inside, min_confidence=level) == Occupancy.FREE).any()


def test_a_keyframe_anchor_is_never_surer_of_its_depth_than_its_frame(scene):
    """Free space in a world comes from its anchors: their per-pixel confidence, rebuilt from their points, equals
    the fused frame's on the pixels the points were sampled from and never exceeds it (depth edges, which give no
    point, take the anchor's lowest)."""
    from worldweave.bridge.memory.anchors import Anchor, AnchorOptions
    from worldweave.bridge.queries.occupancy import view_confidence

    frame = scene.views[1]  # bands 8 pixels wide: a 4 x 4 block never straddles two
    for stride in (1, 4):
        anchor = Anchor.from_frame(frame, id=0, frame_id=0, options=AnchorOptions(stride_px=stride))
        derived = view_confidence(anchor)
        seen = anchor.depth > 0
        assert (derived[seen] <= frame.confidence[seen] + 1e-6).all()
        k, points = frame.intrinsics, anchor.points_cam
        u = np.round(k.fx * points[:, 0] / points[:, 2] + k.cx).astype(int)  # inside the point's block
        v = np.round(k.fy * points[:, 1] / points[:, 2] + k.cy).astype(int)
        np.testing.assert_allclose(derived[v, u], frame.confidence[v, u], atol=1e-6)
        assert len(points) > 0.5 * seen.sum() / stride**2


def test_an_anchor_pixel_takes_the_lowest_confidence_of_the_squares_over_it():
    """The anchor confidence's splat against numpy's ``minimum.at`` over every square's clipped pixels."""
    from worldweave.bridge.queries.occupancy import _lowest_in_squares

    rng = np.random.default_rng(9)
    height, width = 30, 40
    u0, v0 = rng.integers(-6, 44, 500), rng.integers(-6, 34, 500)
    sizes, confidence = rng.integers(1, 7, 500), rng.uniform(0.0, 1.0, 500).astype(np.float32)
    out = np.full(height * width, np.inf, np.float32)
    _lowest_in_squares(u0, v0, sizes, confidence, height, width, out)
    expected = np.full(height * width, np.inf, np.float32)
    for i in range(500):
        v, u = np.meshgrid(np.arange(v0[i], v0[i] + sizes[i]), np.arange(u0[i], u0[i] + sizes[i]), indexing="ij")
        inside = (v >= 0) & (v < height) & (u >= 0) & (u < width)
        np.minimum.at(expected, v[inside] * width + u[inside], confidence[i])
    assert np.array_equal(out, expected) and np.isinf(out).any() and np.isfinite(out).any()


def _anchor_confidence_numpy(view) -> np.ndarray:
    """The anchor confidence image in numpy array operations (how ``_anchor_confidence`` was first written)."""
    from worldweave.bridge.queries.occupancy import _MAX_FOOTPRINT_PX, _lowest_in_squares

    k = view.intrinsics
    h, w = k.shape
    out = np.full(h * w, np.inf, dtype=np.float32)
    points = np.asarray(view.points_cam, dtype=np.float64)
    front = points[:, 2] > 0
    points, confidence = points[front], np.asarray(view.point_confidence, dtype=np.float32)[front]
    z = points[:, 2]
    u, v = k.fx * points[:, 0] / z + k.cx, k.fy * points[:, 1] / z + k.cy
    half = np.asarray(view.point_size_m, dtype=np.float64)[front] * k.fx / z / 2
    u0 = np.minimum(np.ceil(u - half - 1e-6), np.round(u)).astype(np.int64)
    v0 = np.minimum(np.ceil(v - half - 1e-6), np.round(v)).astype(np.int64)
    width = np.clip(np.maximum(np.floor(u + half + 1e-6), np.round(u)).astype(np.int64) - u0 + 1, 1, _MAX_FOOTPRINT_PX)
    _lowest_in_squares(u0, v0, width, confidence, h, w, out)
    out[np.isinf(out)] = confidence.min() if len(confidence) else 0.0
    out[~view.observed.reshape(-1)] = 0.0
    return out.reshape(h, w)


@pytest.mark.parametrize("count, dtype", [(0, np.float32), (1, np.float32), (3000, np.float32), (3000, np.float64)])
def test_the_anchor_confidence_kernel_equals_numpy(count: int, dtype: type):
    """Squares from points behind the camera, on it, beside the image, on pixel centres and halfway between them
    (``rint`` rounds to even, as numpy's ``round``), and wider than the widest square: the same image bit for bit,
    for float32 points and for float64 ones (an anchor's after an insert)."""
    from types import SimpleNamespace

    from worldweave.bridge.queries.occupancy import _anchor_confidence

    rng = np.random.default_rng(11)
    k = Intrinsics(60.0, 55.0, 31.5, 23.5, 64, 48)
    z = rng.choice([-0.5, 0.0, 0.3, 1.0, 2.5], count) * rng.uniform(0.9, 1.1, count)
    u = np.floor(rng.uniform(-8, 72, count)) + rng.choice([0.0, 0.5, 0.25], count)  # centres, halves, quarters
    v = np.floor(rng.uniform(-8, 56, count)) + rng.choice([0.0, 0.5, 0.75], count)
    points = np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], axis=1).astype(dtype)
    view = SimpleNamespace(
        intrinsics=k, points_cam=points, point_size_m=rng.choice([0.001, 0.02, 0.5], count).astype(np.float32),
        point_confidence=rng.uniform(0.05, 1.0, count).astype(np.float32), observed=rng.uniform(size=k.shape) > 0.1,
    )
    derived, expected = _anchor_confidence(view), _anchor_confidence_numpy(view)
    assert derived.dtype == np.float32 and np.array_equal(derived, expected)
    if count > 1:
        assert len(np.unique(derived)) > 20  # many squares, not one fill


def test_an_undeclared_level_is_refused_naming_the_levels(scene):
    with pytest.raises(InvalidInputError, match=r"\[0.0, 0.5, 0.8\]"):
        scene.queries.nearest(np.zeros((1, 3)), 0.5, min_confidence=0.7)


def test_levels_are_validated_and_old_configs_get_the_defaults():
    assert MemoryConfig().confidence_levels == (0.0, 0.5) and MemoryConfig().default_min_confidence == 0.5
    assert MemoryConfig(confidence_levels=(0.9, 0.2)).confidence_levels == (0.2, 0.9)
    assert MemoryConfig(confidence_levels=(0.2, 0.9)).default_min_confidence == 0.9  # 0.5 undeclared: the highest
    old = MemoryConfig().to_dict()
    del old["confidence_levels"], old["default_min_confidence"]  # a world saved before levels existed
    assert MemoryConfig.from_dict(old).confidence_levels == (0.0, 0.5)
    for bad in ((), (0.5, 0.5), (1.5,), (0.1, 0.2, 0.3, 0.4, 0.6)):
        with pytest.raises(InvalidInputError, match="confidence_levels"):
            MemoryConfig(confidence_levels=bad)
    with pytest.raises(InvalidInputError, match="default_min_confidence"):
        MemoryConfig(confidence_levels=(0.0, 0.5), default_min_confidence=0.7)


def test_surface_area_counts_a_plane_once_however_thick():
    grid = np.stack(np.meshgrid(np.arange(20), np.arange(10), indexing="ij"), axis=-1).reshape(-1, 2)
    one = np.concatenate([grid, np.zeros((len(grid), 1), np.int64)], axis=1)
    two = np.concatenate([one, one + [0, 0, 1]])  # a plane on a voxel boundary, split between two layers
    sparse = one[::2] * [2, 2, 1]  # a plane sampled with gaps: lone voxels
    for voxels, faces in ((one, 200), (two, 200), (sparse, 100)):
        assert surface_area_m2(np.sort(voxel_keys.pack(voxels)), 0.05) == pytest.approx(faces * 0.05**2)


# ------------------------------------------------------------------------------------------------ over gRPC

GUESS_DEPTH_M = 4.0
GUESS_CONFIDENCE = np.float32(0.3)


class GuessingEcho(EchoGenerator):
    """``echo``, with every hole guessed: a surface ``GUESS_DEPTH_M`` ahead at confidence 0.3 (memory's own
    confidence where the render covers the pixel)."""

    name = "guessing-echo"

    def generate(self, condition: Condition) -> GenerationResult:
        result = super().generate(condition)
        holes = [depth <= 0 for depth in result.depths]
        return GenerationResult(
            frames=result.frames,
            depths=tuple(np.where(h, np.float32(GUESS_DEPTH_M), d).astype(np.float32) for h, d in zip(holes, result.depths)),
            confidences=tuple(np.where(h, GUESS_CONFIDENCE, c).astype(np.float32) for h, c in zip(holes, result.confidences)),
        )


@pytest.fixture(scope="module")
def server() -> Iterator:
    from worldweave.server.app import BackgroundServer

    with BackgroundServer(generator=GuessingEcho()) as running:
        yield running


def guessed_world(client) -> str:
    """The wall seed stepped while turning 30 degrees each way: the wall at confidence 1, guesses beside it at 0.3."""
    from worldweave.bridge.eval.wall import wall_seed, yaw_poses

    frames, intrinsics = wall_seed(64, 48)
    world = client.worlds.create(frames, intrinsics)
    for pose in yaw_poses(4, max_yaw_deg=30.0):
        client.step(world.world_id, pose)
    return world.world_id


def test_grpc_levels_default_and_unknown_answers(client):
    world_id = guessed_world(client)
    info = client.worlds.get(world_id)
    assert list(info.config.confidence_levels) == [0.0, 0.5] and info.config.default_min_confidence == 0.5

    everything = client.point_cloud.crop(world_id, [-10, -10, -10], [10, 10, 10], min_confidence=0.0)
    sure = client.point_cloud.crop(world_id, [-10, -10, -10], [10, 10, 10])  # the default level, 0.5
    assert (everything.confidence < 0.5).sum() > 100 and (sure.confidence >= 0.5).all()
    assert len(sure.points_m) == (everything.confidence >= np.float32(0.5)).sum()

    # Rays at a guessed voxel: a hit at level 0, unknown (no hit) at 0.5.
    guesses = everything.points_m[everything.confidence < 0.5][:50].astype(np.float64)
    eye = np.array([0.0, 0.0, 1.5])
    low = client.queries.raycast(world_id, np.repeat(eye[None], len(guesses), 0), guesses - eye, 10.0, min_confidence=0.0)
    high = client.queries.raycast(world_id, np.repeat(eye[None], len(guesses), 0), guesses - eye, 10.0)
    assert low.hit.mean() > 0.9 and not (high.hit & ~low.hit).any()
    stopped_by_guess = low.hit & ~high.hit
    assert stopped_by_guess.sum() > 10 and high.unknown[stopped_by_guess].all()
    # Points in guessed voxels: occupied at 0, unknown (never free) at 0.5; shapes there are unknown, not hits.
    states = client.queries.occupancy(world_id, guesses)
    assert (states.states == 1).all()  # wire OCCUPANCY_UNKNOWN
    assert (client.queries.occupancy(world_id, guesses, min_confidence=0.0).states == 3).all()
    spheres = client.queries.check_spheres(world_id, guesses, 0.01)
    assert not spheres.hit.any() and spheres.unknown.all()
    assert client.queries.check_spheres(world_id, guesses, 0.01, min_confidence=0.0).hit.all()
    assert client.queries.nearest_surface(world_id, guesses, 2.0).distance_m.min() > 0.0


@pytest.mark.parametrize("call", ["raycast", "nearest", "spheres", "capsules", "boxes", "occupancy", "crop", "stream"])
def test_grpc_undeclared_level_is_invalid_argument_naming_the_levels(client, world_id, call):
    p = np.zeros((1, 3))
    calls = {
        "raycast": lambda: client.queries.raycast(world_id, p, [[1.0, 0, 0]], 1.0, min_confidence=0.7),
        "nearest": lambda: client.queries.nearest_surface(world_id, p, 1.0, min_confidence=0.7),
        "spheres": lambda: client.queries.check_spheres(world_id, p, 0.1, min_confidence=0.7),
        "capsules": lambda: client.queries.check_capsules(world_id, p, p + 0.1, 0.1, min_confidence=0.7),
        "boxes": lambda: client.queries.check_boxes(world_id, p, p + 0.1, [[1.0, 0, 0, 0]], min_confidence=0.7),
        "occupancy": lambda: client.queries.occupancy(world_id, p, min_confidence=0.7),
        "crop": lambda: client.point_cloud.crop(world_id, [-1, -1, -1], [1, 1, 1], min_confidence=0.7),
        "stream": lambda: list(client.point_cloud.stream(world_id, min_confidence=0.7)),
    }
    with pytest.raises(InvalidInputError, match=r"min_confidence 0\.7.*\[0\.0, 0\.5\]"):
        calls[call]()


def test_grpc_declared_levels_and_bad_levels(client):
    from worldweave.bridge.eval.wall import wall_seed

    frames, intrinsics = wall_seed(32, 24)
    world = client.worlds.create(frames, intrinsics, confidence_levels=[0.9, 0.2])
    assert list(world.config.confidence_levels) == [0.2, 0.9] and world.config.default_min_confidence == 0.9
    client.point_cloud.crop(world.world_id, [-1, -1, -1], [5, 5, 5], min_confidence=0.2)
    with pytest.raises(InvalidInputError, match=r"\[0\.2, 0\.9\]"):
        client.point_cloud.crop(world.world_id, [-1, -1, -1], [5, 5, 5], min_confidence=0.5)
    client.worlds.delete(world.world_id)
    with pytest.raises(InvalidInputError, match="confidence_levels"):
        client.worlds.create(frames, intrinsics, confidence_levels=[0.1, 0.1])
    with pytest.raises(InvalidInputError, match="min_confidence"):
        ws.crop_request("w", [0, 0, 0], [1, 1, 1], min_confidence=1.5)


def test_stream_carries_confidence_and_a_filtered_mirror_equals_a_crop(server, client):
    from worldweave.bridge.eval.wall import yaw_poses

    world_id = guessed_world(client)
    everything, sure = PointCloudMirror(), PointCloudMirror()
    everything.update(client.point_cloud.stream(world_id, min_confidence=0.0))
    sure.update(client.point_cloud.stream(world_id))  # the default level, 0.5
    for pose in yaw_poses(3, max_yaw_deg=40.0):  # more guesses, and re-fused voxels whose confidence moves
        client.step(world_id, pose)
        everything.update(client.point_cloud.stream(world_id, everything.version, min_confidence=0.0))
        sure.update(client.point_cloud.stream(world_id, sure.version))
    voxels = server.server.registry.entry(world_id).world.memory.voxel_map.voxels().sorted_by_key()
    np.testing.assert_array_equal(everything.keys, voxels.keys)
    np.testing.assert_array_equal(everything.confidence, voxels.confidence)
    assert everything.min_confidence == 0.0 and sure.min_confidence == 0.5
    for level, mirror in ((0.5, everything), (0.5, sure), (0.0, everything)):
        crop = client.point_cloud.crop(world_id, [-50, -50, -50], [50, 50, 50], min_confidence=level)
        positions, colors = mirror.points(min_confidence=level)
        order = np.lexsort(crop.points_m.T[::-1])
        np.testing.assert_array_equal(positions[np.lexsort(positions.T[::-1])], crop.points_m[order])
        np.testing.assert_array_equal(colors[np.lexsort(positions.T[::-1])], crop.colors[order])
    np.testing.assert_array_equal(sure.keys, everything.keys[everything.at_or_above(0.5)])


# ------------------------------------------------------------------------------------------------ gym env


def test_agent_explore_never_covers_more_than_the_room_has(default_server, tmp_path):
    """The example's short run: covered area (at the env's level) stays within the room's true surface."""
    argv = sys.argv
    sys.argv = [str(EXAMPLES / "agent_explore.py"), "--server", default_server.address, "--out", str(tmp_path),
                "--steps", "30", "--width", "64", "--height", "48"]
    try:
        import runpy

        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(sys.argv[0], run_name="__main__")
        assert exit_info.value.code == 0
    finally:
        sys.argv = argv
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["room_surface_area_m2"] == pytest.approx(make_room(np.random.default_rng(0)).surface_area_m2)
    assert 0 < summary["start_area_m2"] <= summary["covered_area_m2"] <= summary["room_surface_area_m2"]


def test_env_counts_only_voxels_at_its_level(server):
    """Against a generator that guesses every hole at confidence 0.3: at level 0.5 the env's voxels (reward, area)
    leave the guesses out; at level 0 they are the world's every voxel."""
    from worldweave.sim_clients.gym_env.env import WorldEnv

    look_down = np.array([0.0, 0.0, 0.0, 0.0, -1.0], np.float32)  # the seed views are level: below them are holes
    for level in (0.5, 0.0):
        env = WorldEnv(address=server.address, width=32, height=24, min_confidence=level)
        try:
            env.reset(seed=0)
            for _ in range(4):
                *_, info = env.step(look_down)
            world = env.client.worlds.get(env.world_id)
            assert world.config.default_min_confidence == level
            if level == 0.0:
                assert info["voxel_count"] == world.voxel_count
            else:
                assert 0 < info["voxel_count"] < world.voxel_count
        finally:
            env.close()
