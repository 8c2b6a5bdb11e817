"""World state over gRPC against a real server on a loopback port: the point-cloud stream keeps a mirror equal to the
server's cloud through steps and edits, follows live updates, answers an expired version with a flagged snapshot;
each spatial query over gRPC equals the in-process answer; edits show in later frames; bad requests get their
status and the server keeps serving."""

from __future__ import annotations

import re
import threading

import grpc
import numpy as np
import pytest

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.bridge.memory.voxel_map import VoxelSet
from worldweave.bridge.queries import Occupancy, WorldQueries
from worldweave.bridge.regions import Box
from worldweave.proto import errors, voxel_keys
from worldweave.proto.errors import InvalidInputError, LimitExceededError
from worldweave.proto.geometry import rotations_from_quaternions
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.server.point_cloud import MIN_CHUNK_BYTES
from worldweave.server.registry import WorldEntry
from worldweave.server.world_state import CLEARANCE_REACH_M, NEAREST_REACH_M
from worldweave.sim_clients import world_state as ws
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.mirror import PointCloudMirror

WIDTH, HEIGHT = 64, 48
EYE = np.array([0.0, 0.0, 1.5])
"""The wall seed's camera centre; the wall is 3 m ahead along +x."""


@pytest.fixture(scope="module")
def server():
    with BackgroundServer(generator=EchoGenerator()) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with WorldClient(server.address) as connected:
        yield connected


@pytest.fixture
def world_id(client):
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    world = client.worlds.create(frames, intrinsics)
    yield world.world_id
    client.worlds.delete(world.world_id)


def entry_of(server: BackgroundServer, world_id: str) -> WorldEntry:
    return server.server.registry.entry(world_id)


def server_voxels(server: BackgroundServer, world_id: str) -> VoxelSet:
    """The server's cloud, read in process (between calls: no RPC is running on the world)."""
    return entry_of(server, world_id).world.memory.voxel_map.voxels().sorted_by_key()


def assert_mirrors(mirror: PointCloudMirror, voxels: VoxelSet) -> None:
    np.testing.assert_array_equal(mirror.keys, voxels.keys)
    np.testing.assert_array_equal(mirror.colors, voxels.colors)
    np.testing.assert_array_equal(mirror.flags, voxels.sources)
    np.testing.assert_array_equal(mirror.points()[0], voxels.positions_m)


def edit(client: WorldClient, world_id: str) -> None:
    """Remove a patch of the wall, recolour another, insert a small cube of points in front of it."""
    client.edits.remove_region(world_id, ws.box_region([2.9, -0.31, 1.19], [3.1, 0.29, 1.81]))
    client.edits.recolor_region(world_id, ws.sphere_region([3.0, 0.6, 1.5], 0.25), [255, 0, 0])
    grid = np.stack(np.meshgrid(*[np.arange(5) * 0.02] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    cube = grid + [2.0, -0.45, 1.0]
    client.edits.insert_points(world_id, cube, np.full((len(cube), 3), 40, dtype=np.uint8))


# ------------------------------------------------------------------------------------------------ point cloud


def test_mirror_equals_the_server_cloud_after_steps_and_edits(server, client, world_id):
    mirror = PointCloudMirror()
    assert mirror.update(client.point_cloud.stream(world_id, mirror.version)) == 1
    assert len(mirror) > 1000 and mirror.voxel_size_m == pytest.approx(0.02)
    assert_mirrors(mirror, server_voxels(server, world_id))
    for pose in yaw_poses(3):
        client.step(world_id, pose)
    assert mirror.update(client.point_cloud.stream(world_id, mirror.version)) == 4
    assert_mirrors(mirror, server_voxels(server, world_id))
    edit(client, world_id)
    before = len(mirror)
    assert mirror.update(client.point_cloud.stream(world_id, mirror.version, max_chunk_bytes=MIN_CHUNK_BYTES)) == 7
    assert len(mirror) != before and (mirror.flags == 2).sum() == 125
    assert_mirrors(mirror, server_voxels(server, world_id))
    nothing_new = list(client.point_cloud.stream(world_id, mirror.version))
    assert [(len(c.keys), c.version, c.last_in_version) for c in nothing_new] == [(0, 7, True)]


def test_chunks_stay_under_the_requested_size_and_carry_positions(server, client, world_id):
    chunks = list(client.point_cloud.stream(world_id, include_positions=True, max_chunk_bytes=4096))
    assert len(chunks) > 10 and all(c.is_snapshot and c.kind == "added" for c in chunks)
    assert [c.last_in_version for c in chunks] == [False] * (len(chunks) - 1) + [True]
    for chunk in chunks:
        payload = chunk.keys.nbytes + chunk.positions_m.nbytes + chunk.colors.nbytes + chunk.flags.nbytes
        assert payload <= 4096
        np.testing.assert_array_equal(chunk.positions_m, voxel_keys.key_centers(chunk.keys, chunk.voxel_size_m))
    voxels = server_voxels(server, world_id)
    keys = np.concatenate([c.keys for c in chunks])
    np.testing.assert_array_equal(np.sort(keys), voxels.keys)


def test_following_receives_each_new_version(server, client, world_id):
    mirror = PointCloudMirror()
    stream = client.point_cloud.stream(world_id, follow=True, timeout_s=60)
    versions = mirror.follow(stream)
    assert next(versions) == 1
    with WorldClient(server.address) as other:
        other.step(world_id, yaw_poses(2)[1])
        assert next(versions) == 2
        assert_mirrors(mirror, server_voxels(server, world_id))
        other.edits.remove_region(world_id, ws.sphere_region([3.0, 0.0, 1.5], 0.3))
        assert next(versions) == 3
        assert_mirrors(mirror, server_voxels(server, world_id))
    stream.close()  # cancels the call on the server


def test_following_stream_ends_when_the_world_is_deleted(server, client):
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    world_id = client.worlds.create(frames, intrinsics).world_id
    stream = client.point_cloud.stream(world_id, follow=True, timeout_s=60)
    first = next(stream)
    assert first.last_in_version
    errors = []

    def drain() -> None:
        try:
            list(stream)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            errors.append(error)

    reader = threading.Thread(target=drain)
    reader.start()
    client.worlds.delete(world_id)
    reader.join(timeout=20)
    assert not reader.is_alive() and errors and errors[0].code == "NOT_FOUND"


def test_expired_version_is_answered_with_a_flagged_snapshot(tmp_path, client):
    with BackgroundServer(config=ServerConfig(data_dir=tmp_path), generator=EchoGenerator()) as server, \
            WorldClient(server.address) as saving:
        frames, intrinsics = wall_seed(WIDTH, HEIGHT)
        world_id = saving.worlds.create(frames, intrinsics).world_id
        mirror = PointCloudMirror()
        saving.step(world_id, yaw_poses(2)[1])
        mirror.update(saving.point_cloud.stream(world_id))
        assert mirror.version == 2
        saving.step(world_id, yaw_poses(4)[1])
        saving.worlds.save(world_id)
        saving.worlds.delete(world_id)
        saving.worlds.load(world_id)  # a loaded world's change log starts at its saved version
        chunks = list(saving.point_cloud.stream(world_id, mirror.version))
        assert all(c.is_snapshot and c.since_version == 2 and c.version == 3 for c in chunks)
        assert mirror.update(chunks) == 3
        assert_mirrors(mirror, server_voxels(server, world_id))
        saving.step(world_id, yaw_poses(4)[2])
        delta = list(saving.point_cloud.stream(world_id, mirror.version))
        assert not any(c.is_snapshot for c in delta)
        assert mirror.update(delta) == 4
        assert_mirrors(mirror, server_voxels(server, world_id))


def test_edits_show_in_later_frames(client, world_id):
    seed_pose = wall_seed(WIDTH, HEIGHT)[0][0][2]
    before, = client.render(world_id, seed_pose)
    removed = client.edits.remove_region(world_id, ws.box_region([2.9, -0.5, 1.0], [3.1, 0.5, 2.0]))
    assert removed.voxels > 0 and removed.version == 2
    after, = client.render(world_id, seed_pose)
    assert after.coverage < before.coverage - 0.05
    recolored = client.edits.recolor_region(world_id, ws.box_region([2.9, 0.6, 1.0], [3.1, 2.0, 2.0]), [0, 255, 0])
    assert recolored.voxels > 0
    painted, = client.render(world_id, seed_pose)
    green = (painted.rgb == [0, 255, 0]).all(axis=2)
    assert green.mean() > 0.05
    stepped, = client.step(world_id, seed_pose)  # the generated frame comes from the edited memory
    assert stepped.coverage < before.coverage - 0.05 and (stepped.rgb == [0, 255, 0]).all(axis=2).mean() > 0.05


# ------------------------------------------------------------------------------------------------ queries


@pytest.fixture
def stepped_world(server, client, world_id):
    """The wall world after a few steps and edits, and a fresh in-process ``WorldQueries`` over the same memory."""
    for pose in yaw_poses(3):
        client.step(world_id, pose)
    edit(client, world_id)
    memory = entry_of(server, world_id).world.memory
    return world_id, WorldQueries(memory.voxel_map, lambda: list(memory.anchors), max_distance_m=NEAREST_REACH_M,
                                  max_clearance_m=CLEARANCE_REACH_M, confidence_levels=memory.config.confidence_levels,
                                  default_min_confidence=memory.config.default_min_confidence)


def f32(values: np.ndarray) -> np.ndarray:
    """Values as the wire carries them (float32), back in float64 for the in-process call."""
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def test_raycast_over_grpc_equals_in_process(client, stepped_world):
    world_id, queries = stepped_world
    rng = np.random.default_rng(0)
    origins = f32(EYE + rng.normal(scale=0.2, size=(500, 3)))
    directions = f32(np.column_stack([np.ones(500), rng.uniform(-0.7, 0.7, size=(500, 2))]))
    answer = client.queries.raycast(world_id, origins, directions, 6.0)
    expected = queries.raycast(origins, directions, 6.0)
    assert 0.2 < answer.hit.mean() < 1 and answer.unknown.any()
    np.testing.assert_array_equal(answer.hit, expected.hit)
    np.testing.assert_array_equal(answer.unknown, expected.ended_in_unknown)
    np.testing.assert_array_equal(answer.distance_m, np.where(expected.hit, expected.distance_m, 6.0).astype(np.float32))
    np.testing.assert_array_equal(answer.points_m, np.where(expected.hit[:, None], expected.point_m, 0).astype(np.float32))
    np.testing.assert_array_equal(answer.colors, expected.color)
    assert answer.version == 7


def test_nearest_surface_over_grpc_equals_in_process(client, stepped_world):
    world_id, queries = stepped_world
    points = f32(np.random.default_rng(1).uniform([1.0, -1.5, 0.5], [3.5, 1.5, 2.5], size=(500, 3)))
    answer = client.queries.nearest_surface(world_id, points, 1.0)
    expected = queries.nearest(points, 1.0)
    assert 0.2 < answer.found.mean() < 1
    np.testing.assert_array_equal(answer.found, expected.found)
    np.testing.assert_array_equal(answer.distance_m, np.where(expected.found, expected.distance_m, 1.0).astype(np.float32))
    np.testing.assert_array_equal(answer.points_m, np.where(expected.found[:, None], expected.point_m, 0).astype(np.float32))


def assert_same_contacts(answer: ws.CollisionResult, expected) -> None:
    found = np.isfinite(expected.clearance_m)
    np.testing.assert_array_equal(answer.hit, expected.hit)
    np.testing.assert_array_equal(answer.clearance_m, expected.clearance_m.astype(np.float32))
    np.testing.assert_array_equal(answer.contact_points_m, np.where(found[:, None], expected.point_m, 0).astype(np.float32))
    assert answer.hit.any() and not answer.hit.all() and found.any()


def test_collisions_over_grpc_equal_in_process(client, stepped_world):
    world_id, queries = stepped_world
    rng = np.random.default_rng(2)
    centers = f32(rng.uniform([1.8, -1.0, 0.8], [3.2, 1.0, 2.2], size=(300, 3)))
    radii = f32(rng.uniform(0.0, 0.2, size=300))
    assert_same_contacts(client.queries.check_spheres(world_id, centers, radii), queries.collide_spheres(centers, radii))

    ends = f32(centers + rng.normal(scale=0.3, size=centers.shape))
    assert_same_contacts(client.queries.check_capsules(world_id, centers, ends, radii),
                         queries.collide_capsules(centers, ends, radii))

    half = f32(rng.uniform(0.01, 0.2, size=(300, 3)))
    quaternions = rng.normal(size=(300, 4))
    quaternions = f32(quaternions / np.linalg.norm(quaternions, axis=1, keepdims=True))
    rotations = rotations_from_quaternions(quaternions)
    assert_same_contacts(client.queries.check_boxes(world_id, centers, half, quaternions),
                         queries.collide_boxes(centers, half, rotations))


def test_occupancy_over_grpc_equals_in_process(client, stepped_world):
    world_id, queries = stepped_world
    points = f32(np.random.default_rng(3).uniform([0.2, -1.5, 0.5], [3.6, 1.5, 2.5], size=(2000, 3)))
    voxel_points = f32(client.point_cloud.crop(world_id, [2.5, -2, 0], [3.5, 2, 3]).points_m[:100])
    points = np.concatenate([points, voxel_points])
    answer = client.queries.occupancy(world_id, points)
    expected = queries.occupancy(points)
    wire = {Occupancy.UNKNOWN: pb.OCCUPANCY_UNKNOWN, Occupancy.FREE: pb.OCCUPANCY_FREE, Occupancy.OCCUPIED: pb.OCCUPANCY_OCCUPIED}
    np.testing.assert_array_equal(answer.states, [wire[Occupancy(code)] for code in expected])
    assert set(answer.states) == {pb.OCCUPANCY_UNKNOWN, pb.OCCUPANCY_FREE, pb.OCCUPANCY_OCCUPIED}


def test_crop_over_grpc_equals_in_process(client, stepped_world):
    world_id, queries = stepped_world
    box = ([2.5, -0.6, 1.0], [3.5, 0.8, 1.9])
    answer = client.point_cloud.crop(world_id, *box, max_chunk_bytes=MIN_CHUNK_BYTES)
    expected = queries.crop(Box(*box))
    assert len(answer.points_m) > 100
    np.testing.assert_array_equal(answer.points_m, expected.points_m)
    np.testing.assert_array_equal(answer.colors, expected.colors)
    empty = client.point_cloud.crop(world_id, [50, 50, 50], [51, 51, 51])
    assert empty.points_m.shape == (0, 3) and empty.version == answer.version


def test_empty_batches_get_empty_answers(client, world_id):
    none = np.zeros((0, 3))
    assert client.queries.raycast(world_id, none, none, 1.0).hit.shape == (0,)
    assert client.queries.nearest_surface(world_id, none, 1.0).found.shape == (0,)
    assert client.queries.check_spheres(world_id, none, 0.1).hit.shape == (0,)
    assert client.queries.occupancy(world_id, none).states.shape == (0,)


# ------------------------------------------------------------------------------------------------ bad requests

INVALID, NOT_FOUND, EXHAUSTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED
RAY = np.zeros((1, 3), "<f4").tobytes()
BAD = {
    "ragged origins": ("Raycast", lambda w: pb.RaycastRequest(world_id=w, origins_m=b"\0" * 13, directions=RAY, max_range_m=1),
                       INVALID, "origins_m has 13 bytes, not a whole number of float32 \\(N, 3\\) rows of 12 bytes"),
    "rows differ": ("Raycast", lambda w: pb.RaycastRequest(world_id=w, origins_m=RAY * 2, directions=RAY, max_range_m=1),
                    INVALID, "directions has 1 rows, origins_m has 2"),
    "zero direction": ("Raycast", lambda w: pb.RaycastRequest(world_id=w, origins_m=RAY, directions=RAY, max_range_m=1),
                       INVALID, r"directions\[0\] = \[0.0, 0.0, 0.0\] has zero length"),
    "no range": ("Raycast", lambda w: pb.RaycastRequest(world_id=w, origins_m=RAY, directions=RAY), INVALID,
                 "max_range_m must be a finite number of metres > 0, got 0.0"),
    "nan point": ("NearestSurface", lambda w: pb.NearestSurfaceRequest(
        world_id=w, points_m=np.array([[0, np.nan, 0]], "<f4").tobytes(), max_range_m=1), INVALID,
        r"points_m\[0\] has a non-finite value nan on axis y"),
    "range past the field": ("NearestSurface", lambda w: pb.NearestSurfaceRequest(world_id=w, points_m=RAY, max_range_m=50),
                             EXHAUSTED, "beyond max_distance_m"),
    "no shapes": ("CheckCollision", lambda w: pb.CheckCollisionRequest(world_id=w), INVALID,
                  "shapes is not set: send spheres, capsules or boxes"),
    "negative radius": ("CheckCollision", lambda w: pb.CheckCollisionRequest(world_id=w, spheres=pb.SphereBatch(
        centers_m=RAY, radii_m=np.array([-1], "<f4").tobytes())), INVALID, r"radii_m\[0\] must be a finite number >= 0"),
    "zero quaternion": ("CheckCollision", lambda w: pb.CheckCollisionRequest(world_id=w, boxes=pb.OrientedBoxBatch(
        centers_m=RAY, half_extents_m=RAY, rotations_wxyz=bytes(16))), INVALID, r"boxes.rotations_wxyz\[0\] .* has zero length"),
    "far point": ("QueryOccupancy", lambda w: pb.QueryOccupancyRequest(
        world_id=w, points_m=np.array([[1e6, 0, 0]], "<f4").tobytes()), INVALID, "outside the world's extent"),
    "unknown world": ("QueryOccupancy", lambda w: pb.QueryOccupancyRequest(world_id="nowhere", points_m=RAY), NOT_FOUND,
                      "no world 'nowhere'"),
    "no region": ("RemoveRegion", lambda w: pb.RemoveRegionRequest(world_id=w), INVALID, "region is not set"),
    "empty region": ("RemoveRegion", lambda w: pb.RemoveRegionRequest(world_id=w, region=pb.Region()), INVALID,
                     "region is empty: set box, oriented_box or sphere"),
    "inverted box": ("RemoveRegion", lambda w: pb.RemoveRegionRequest(world_id=w, region=ws.box_region([1, 0, 0], [0, 1, 1])),
                     INVALID, r"region.box: box min \[1.0, 0.0, 0.0\] exceeds max"),
    "negative sphere": ("RemoveRegion", lambda w: pb.RemoveRegionRequest(world_id=w, region=ws.sphere_region([0, 0, 0], -1)),
                        INVALID, "region.sphere: sphere radius must be a finite number >= 0, got -1.0"),
    "two-byte colour": ("RecolorRegion", lambda w: pb.RecolorRegionRequest(
        world_id=w, region=ws.sphere_region([0, 0, 0], 1), rgb=b"\1\2"), INVALID, "rgb must be 3 bytes"),
    "no points": ("InsertPoints", lambda w: pb.InsertPointsRequest(world_id=w), INVALID, "points_m is empty"),
    "colours short": ("InsertPoints", lambda w: pb.InsertPointsRequest(world_id=w, points_m=RAY * 2, colors=b"\0" * 3),
                      INVALID, "colors has 1 rows, points_m has 2"),
    "inf point": ("InsertPoints", lambda w: pb.InsertPointsRequest(
        world_id=w, points_m=np.array([[0, 0, np.inf]], "<f4").tobytes(), colors=b"\0" * 3), INVALID,
        r"points_m\[0\] = \[0.0, 0.0, inf\] has a non-finite value"),
    "crop without box": ("CropPointCloud", lambda w: pb.CropPointCloudRequest(world_id=w), INVALID, "box is not set"),
    "tiny chunks": ("StreamPointCloud", lambda w: pb.StreamPointCloudRequest(world_id=w, max_chunk_bytes=10), INVALID,
                    "max_chunk_bytes 10 is below the minimum 1024"),
    "huge chunks": ("StreamPointCloud", lambda w: pb.StreamPointCloudRequest(world_id=w, max_chunk_bytes=1 << 31),
                    EXHAUSTED, "does not fit the .*-byte message limit"),
    "future version": ("StreamPointCloud", lambda w: pb.StreamPointCloudRequest(world_id=w, since_version=99), INVALID,
                       "since_version 99 is newer than the world's version 1"),
    "unknown world stream": ("StreamPointCloud", lambda w: pb.StreamPointCloudRequest(world_id="nowhere"), NOT_FOUND,
                             "no world 'nowhere'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_requests_get_their_status_and_the_server_keeps_serving(server, client, world_id, case):
    rpc, make, code, message = BAD[case]
    with grpc.insecure_channel(server.address) as channel:
        method = getattr(pb_grpc.WorldServiceStub(channel), rpc)
        with pytest.raises(grpc.RpcError) as caught:
            answer = method(make(world_id), timeout=10)
            if rpc in ("StreamPointCloud", "CropPointCloud"):
                list(answer)
    assert caught.value.code() == code, caught.value.details()
    assert re.search(message, caught.value.details()), caught.value.details()
    assert client.queries.occupancy(world_id, EYE + [1.0, 0, 0]).states.tolist() == [pb.OCCUPANCY_FREE]


def test_client_side_errors_name_the_value(client, world_id):
    with pytest.raises(errors.WireFormatError, match=r"origins_m must have shape \(N, 3\), got \(2, 2\)"):
        client.queries.raycast(world_id, np.zeros((2, 2)), np.zeros((2, 2)), 1.0)
    with pytest.raises(errors.WireFormatError, match="rgb must be three integers in 0..255"):
        client.edits.recolor_region(world_id, ws.sphere_region(EYE, 1.0), [0, 0, 300])
    with pytest.raises(errors.WireFormatError, match=r"rotations\[0\] is not a rotation"):
        client.queries.check_boxes(world_id, EYE, [[0.1, 0.1, 0.1]], 2 * np.eye(3)[None])
    with pytest.raises(InvalidInputError, match=r"directions\[0\]"):
        client.queries.raycast(world_id, EYE, [0, 0, 0], 1.0)
    with pytest.raises(LimitExceededError, match="max_distance_m"):
        client.queries.check_spheres(world_id, EYE, 10.0)
