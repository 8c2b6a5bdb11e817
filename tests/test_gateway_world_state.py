"""Point cloud, queries and edits through the gateway, end to end against a real server: in every engine
convention the gateway's answers are the direct gRPC answers converted into the engine's axes and units; edits
made in engine coordinates land where the canonical region says; malformed world-state messages get error replies.
"""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.proto.errors import WorldweaveError
from worldweave.proto.geometry import (
    quaternion_from_rotation,
    rotations_from_quaternions,
)
from worldweave.sim_clients import conventions as cv
from worldweave.sim_clients import world_state as ws
from worldweave.proto.codecs import FLOAT32, INT64, UINT8, unpack_array
from worldweave.sim_clients.gateway import codec
from worldweave.sim_clients.gateway.engine_client import GatewayClient
from worldweave.sim_clients.mirror import PointCloudMirror

CONVENTIONS = [(name, {}) for name in cv.CONVENTIONS] + [("usd", {"up_axis": "Y", "metres_per_unit": 0.01})]
IDS = [f"{n}{'-y-cm' if o else ''}" for n, o in CONVENTIONS]
EYE = np.array([0.0, 0.0, 1.5])


@pytest.fixture(scope="module")
def world_id(client):
    """The wall world after three steps, shared by the module (conftest's ``server``, ``client``, ``gateway``)."""
    frames, intrinsics = wall_seed(64, 48)
    world_id = client.worlds.create(frames, intrinsics).world_id
    for pose in yaw_poses(3):
        client.step(world_id, pose)
    return world_id


def test_every_convention_is_a_signed_permutation_of_the_canonical_axes():
    for name, options in CONVENTIONS:
        w = cv.get_convention(name, **options).world_to_canonical
        assert np.array_equal(np.abs(w), np.abs(w).round()) and np.array_equal(np.abs(w).sum(axis=0), [1, 1, 1]), name


def f32(values) -> bytes:
    return np.ascontiguousarray(values, dtype=FLOAT32).tobytes()


def points(data: bytes) -> np.ndarray:
    return unpack_array(data, FLOAT32, 3, "points")


def floats(data: bytes) -> np.ndarray:
    return unpack_array(data, FLOAT32, None, "values")


def flags(data: bytes) -> np.ndarray:
    return unpack_array(data, UINT8, None, "flags").astype(bool)


@pytest.mark.parametrize("name, options", CONVENTIONS, ids=IDS)
def test_queries_through_the_gateway_are_the_direct_answers_in_engine_units(client, gateway, world_id, name, options):
    convention = cv.get_convention(name, **options)
    mpu = convention.metres_per_unit
    rng = np.random.default_rng(0)
    origins = (EYE + rng.normal(scale=0.1, size=(200, 3))).astype(np.float32)
    directions = np.column_stack([np.ones(200), rng.uniform(-0.6, 0.6, size=(200, 2))]).astype(np.float32)
    near = rng.uniform([2.0, -1.0, 1.0], [3.4, 1.0, 2.0], size=(200, 3)).astype(np.float32)
    radii = rng.uniform(0.0, 0.2, size=200).astype(np.float32)
    to_engine, to_canonical = convention.points_from_canonical, convention.points_to_canonical

    with GatewayClient(gateway.address, name, **options) as engine:
        chunks = engine.stream("stream_point_cloud", world_id=world_id, max_chunk_bytes=8192, include_positions=True)
        direct = list(client.point_cloud.stream(world_id, include_positions=True, max_chunk_bytes=8192))
        assert len(chunks) == len(direct) > 1
        for got, want in zip(chunks, direct):
            np.testing.assert_array_equal(unpack_array(got["keys"], INT64, None, "keys"), want.keys)
            np.testing.assert_array_equal(unpack_array(got["colors"], UINT8, 3, "colors"), want.colors)
            np.testing.assert_allclose(to_canonical(points(got["positions"])), want.positions_m, atol=1e-5)
            assert got["voxel_size"] == pytest.approx(0.02 / mpu) and got["version"] == want.version

        ray = engine.call("raycast", world_id=world_id, origins=f32(to_engine(origins)),
                          directions=f32(convention.directions_from_canonical(directions)), max_range=5.0 / mpu)
        want_ray = client.queries.raycast(world_id, origins, directions, 5.0)
        assert 0 < want_ray.hit.sum() < 200
        np.testing.assert_array_equal(flags(ray["hit"]), want_ray.hit)
        np.testing.assert_array_equal(flags(ray["unknown"]), want_ray.unknown)
        np.testing.assert_allclose(floats(ray["distance"]) * mpu, want_ray.distance_m, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(to_canonical(points(ray["points"])), want_ray.points_m, atol=1e-5)

        nearest = engine.call("nearest_surface", world_id=world_id, points=f32(to_engine(near)), max_range=0.5 / mpu)
        want_nearest = client.queries.nearest_surface(world_id, near, 0.5)
        np.testing.assert_array_equal(flags(nearest["found"]), want_nearest.found)
        np.testing.assert_allclose(floats(nearest["distance"]) * mpu, want_nearest.distance_m, rtol=1e-5, atol=1e-5)

        spheres = engine.call("check_collision", world_id=world_id,
                              spheres={"centers": f32(to_engine(near)), "radii": f32(radii / mpu)})
        want_spheres = client.queries.check_spheres(world_id, near, radii)
        assert want_spheres.hit.any() and not want_spheres.hit.all()
        np.testing.assert_array_equal(flags(spheres["hit"]), want_spheres.hit)
        np.testing.assert_allclose(floats(spheres["clearance"]) * mpu, want_spheres.clearance_m, rtol=1e-5, atol=1e-5)

        capsules = engine.call("check_collision", world_id=world_id, capsules={
            "starts": f32(to_engine(near)), "ends": f32(to_engine(near + 0.2)), "radii": f32(radii / mpu)})
        want_capsules = client.queries.check_capsules(world_id, near, near + 0.2, radii)
        np.testing.assert_array_equal(flags(capsules["hit"]), want_capsules.hit)
        np.testing.assert_allclose(floats(capsules["clearance"]) * mpu, want_capsules.clearance_m, rtol=1e-5, atol=1e-5)
        # Contact points agree up to ties: another voxel at the same distance may decide (Unreal's centimetres
        # round the inputs differently).
        ties = np.linalg.norm(to_canonical(points(capsules["contact_points"])) - want_capsules.contact_points_m, axis=1) > 1e-5
        assert ties.mean() < 0.05

        # Boxes: canonical rotations R_c, sent as the engine rotation R_e = W^T R_c D (a proper rotation).
        quaternions = rng.normal(size=(200, 4))
        canonical_rotations = rotations_from_quaternions(quaternions)
        w = convention.world_to_canonical
        flip = np.diag([np.sign(np.linalg.det(w)), 1.0, 1.0])
        engine_quaternions = np.array([tuple(quaternion_from_rotation(w.T @ r @ flip)) for r in canonical_rotations])
        half = rng.uniform(0.02, 0.2, size=(200, 3))
        boxes = engine.call("check_collision", world_id=world_id, boxes={
            "centers": f32(to_engine(near)), "half_extents": f32(half / mpu), "rotations_wxyz": f32(engine_quaternions)})
        want_boxes = client.queries.check_boxes(world_id, near, half, canonical_rotations)
        assert want_boxes.hit.any() and not want_boxes.hit.all()
        np.testing.assert_array_equal(flags(boxes["hit"]), want_boxes.hit)
        np.testing.assert_allclose(floats(boxes["clearance"]) * mpu, want_boxes.clearance_m, rtol=1e-4, atol=1e-4)

        occupancy = engine.call("query_occupancy", world_id=world_id, points=f32(to_engine(origins + directions)))
        np.testing.assert_array_equal(unpack_array(occupancy["states"], UINT8, None, "states"),
                                      client.queries.occupancy(world_id, origins + directions).states)

        lo, hi = np.array([2.5, -0.5, 1.0]), np.array([3.5, 0.5, 2.0])
        corners = to_engine(np.stack([lo, hi]))
        crop = engine.stream("crop_point_cloud", world_id=world_id,
                             box={"min": corners.min(axis=0).tolist(), "max": corners.max(axis=0).tolist()})
        want_crop = client.point_cloud.crop(world_id, lo, hi)
        assert len(want_crop.points_m) > 100
        np.testing.assert_allclose(to_canonical(np.concatenate([points(c["points"]) for c in crop])), want_crop.points_m, atol=1e-5)
        np.testing.assert_array_equal(np.concatenate([unpack_array(c["colors"], UINT8, 3, "colors") for c in crop]),
                                      want_crop.colors)


@pytest.mark.parametrize("name, options", [("unity", {}), ("unreal", {})], ids=["unity", "unreal"])
def test_edits_in_engine_coordinates_land_on_the_canonical_region(client, gateway, name, options):
    convention = cv.get_convention(name, **options)
    mpu = convention.metres_per_unit
    frames, intrinsics = wall_seed(64, 48)
    world_id = client.worlds.create(frames, intrinsics).world_id
    box_lo, box_hi = np.array([2.9, -0.5, 1.0]), np.array([3.1, 0.0, 1.6])
    inside = len(client.point_cloud.crop(world_id, box_lo, box_hi).points_m)
    corners = convention.points_from_canonical(np.stack([box_lo, box_hi]))
    with GatewayClient(gateway.address, name, **options) as engine:
        mirror_chunks = engine.stream("stream_point_cloud", world_id=world_id)
        removed = engine.call("remove_region", world_id=world_id,
                              region={"box": {"min": corners.min(axis=0).tolist(), "max": corners.max(axis=0).tolist()}})
        assert removed["voxels_removed"] == inside > 0 and removed["version"] == 2
        assert len(client.point_cloud.crop(world_id, box_lo, box_hi).points_m) == 0

        center = np.array([3.0, 0.6, 1.3])
        sphere = {"sphere": {"center": convention.points_from_canonical(center[None])[0].tolist(), "radius": 0.2 / mpu}}
        recolored = engine.call("recolor_region", world_id=world_id, region=sphere, rgb=bytes([1, 2, 3]))
        crop = client.point_cloud.crop(world_id, center - 0.2, center + 0.2)
        in_sphere = np.linalg.norm(crop.points_m - center, axis=1) <= 0.2 - 1e-6
        assert recolored["voxels_changed"] >= in_sphere.sum() > 0 and (crop.colors[in_sphere] == [1, 2, 3]).all()

        cube = np.array([1.5, 0.0, 1.0]) + np.stack(np.meshgrid(*[np.arange(3) * 0.02 + 0.01] * 3), -1).reshape(-1, 3)
        inserted = engine.call("insert_points", world_id=world_id, points=f32(convention.points_from_canonical(cube)),
                               colors=bytes([200]) * 81)
        assert inserted["voxels_added"] == 27
        np.testing.assert_allclose(np.sort(client.point_cloud.crop(world_id, [1.49, -0.01, 0.99], [1.61, 0.07, 1.07]).points_m, axis=0),
                                   np.sort(cube, axis=0), atol=1e-6)

        # The engine follows the edits with deltas since the version of its first snapshot.
        delta = engine.stream("stream_point_cloud", world_id=world_id, since_version=mirror_chunks[-1]["version"])
        assert {c["kind"] for c in delta} == {"removed", "changed", "added"} and delta[-1]["version"] == 4
        mirror = PointCloudMirror()
        for chunk in mirror_chunks + delta:
            mirror.apply(ws.PointCloudChunk(
                chunk["since_version"], chunk["version"], chunk["is_snapshot"], chunk["kind"],
                unpack_array(chunk["keys"], INT64, None, "keys"), None, unpack_array(chunk["colors"], UINT8, 3, "colors"),
                unpack_array(chunk["flags"], UINT8, None, "flags"), chunk["voxel_size"] * mpu, chunk["last_in_version"]))
        direct = PointCloudMirror()
        direct.update(client.point_cloud.stream(world_id))
        np.testing.assert_array_equal(mirror.keys, direct.keys)
        np.testing.assert_array_equal(mirror.colors, direct.colors)
    client.worlds.delete(world_id)


def test_server_errors_and_malformed_world_state_messages_get_error_replies(gateway, world_id):
    with GatewayClient(gateway.address, "unity") as engine:
        ray = {"origins": f32([[0, 0, 0]]), "directions": f32([[0, 0, 1]]), "max_range": 1.0}
        with pytest.raises(WorldweaveError, match="no world 'nowhere'") as caught:
            engine.call("raycast", world_id="nowhere", **ray)
        assert caught.value.code == "NOT_FOUND"
        with pytest.raises(WorldweaveError, match="zero length") as caught:
            engine.call("raycast", world_id=world_id, **{**ray, "directions": f32([[0, 0, 0]])})
        assert caught.value.code == "INVALID_ARGUMENT"
        with pytest.raises(WorldweaveError, match="beyond max_distance_m") as caught:
            engine.call("nearest_surface", world_id=world_id, points=f32([[0, 0, 0]]), max_range=1000.0)
        assert caught.value.code == "RESOURCE_EXHAUSTED"
        with pytest.raises(WorldweaveError, match=r"remove_region.region.box: min \[1.0, 0.0, 0.0\] exceeds max"):
            engine.call("remove_region", world_id=world_id, region={"box": {"min": [1.0, 0, 0], "max": [0.0, 1, 1]}})
        with pytest.raises(WorldweaveError, match=r"check_collision.boxes.rotations_wxyz\[0\] .* has zero length"):
            engine.call("check_collision", world_id=world_id, boxes={
                "centers": f32([[0, 0, 0]]), "half_extents": f32([[1, 1, 1]]), "rotations_wxyz": f32([[0, 0, 0, 0]])})
        rng = np.random.default_rng(5)
        good = codec.encode("raycast", {"world_id": world_id, "origins": f32(np.zeros((3, 3))),
                                        "directions": f32(np.ones((3, 3))), "max_range": 2.0}, 9)
        for _ in range(100):
            bad = bytearray(good)
            for i in rng.integers(0, len(bad), size=3):
                bad[i] = int(rng.integers(0, 256))
            engine.socket.send(bytes(bad))
            _, reply_type, _ = engine.receive()  # an answer or an error, never silence
            assert reply_type in ("raycast_reply", "error")
        assert len(engine.call("query_occupancy", world_id=world_id, points=f32([[0.0, 1.5, 1.0]]))["states"]) == 1


def test_point_cloud_over_a_req_socket(gateway, world_id):
    context = zmq.Context()
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(gateway.address)
    try:
        def call(record_type: str, **body) -> dict:
            socket.send(codec.encode(record_type, body, 1))
            assert socket.poll(20000)
            return msgpack.unpackb(socket.recv(), raw=False)

        assert call("hello", convention="canonical")["type"] == "hello_reply"
        one = call("stream_point_cloud", world_id=world_id, max_chunk_bytes=64 << 20)
        assert one["type"] == "stream_point_cloud_reply" and one["body"]["last_in_version"]
        many = call("stream_point_cloud", world_id=world_id, max_chunk_bytes=4096)
        assert many["type"] == "error" and many["body"]["code"] == "RESOURCE_EXHAUSTED"
        assert "use a DEALER socket" in many["body"]["message"]
    finally:
        socket.close()
        context.term()
