"""``return_normals`` on Raycast, end to end through a real server on loopback: the SDK and the ZMQ gateway get unit
surface normals in the world frame (the gateway's in the engine's axes), zero where a ray hits nothing."""

from __future__ import annotations

import numpy as np

from worldweave.bridge.eval.wall import wall_seed
from worldweave.sim_clients.conventions import UNITY
from worldweave.sim_clients.gateway.engine_client import GatewayClient


def test_normals_of_a_wall_and_of_a_tilted_plane_through_the_sdk_and_the_gateway(client, gateway):
    frames, intrinsics = wall_seed(320, 240)  # a wall 3 m ahead along +x: its normal faces -x
    world_id = client.worlds.create(frames, intrinsics).world_id
    # A plane tilted 37 degrees about x, through (1.5, 0, 0.5), from inserted points 1 cm apart.
    normal = np.array([0.0, -0.6, 0.8])
    a, b = np.meshgrid(np.linspace(-0.3, 0.3, 61), np.linspace(-0.3, 0.3, 61))
    plane = np.array([1.5, 0.0, 0.5]) + a.reshape(-1, 1) * [1.0, 0.0, 0.0] + b.reshape(-1, 1) * [0.0, 0.8, 0.6]
    client.edits.insert_points(world_id, plane, np.full((len(plane), 3), 200, np.uint8))

    origins = np.array([[0.0, 0.0, 1.5], [0.0, 0.0, 1.5], [0.0, 0.0, 1.5], [1.5, 0.0, 2.0], [0.0, 0.0, 1.5]])
    directions = np.array([[1.0, 0.0, 0.0], [1.0, 0.4, 0.1], [1.0, -0.5, -0.2], [0.0, 0.1, -1.0], [-1.0, 0.0, 0.0]])
    hits = client.queries.raycast(world_id, origins, directions, 6.0, return_normals=True)
    assert hits.hit.tolist() == [True, True, True, True, False]
    np.testing.assert_allclose(np.linalg.norm(hits.normals[:4], axis=1), 1.0, atol=1e-5)
    wall_cos = hits.normals[:3] @ [-1.0, 0.0, 0.0]
    assert (wall_cos > np.cos(np.radians(3))).all(), hits.normals[:3]
    assert hits.normals[3] @ normal > np.cos(np.radians(5)), hits.normals[3]
    np.testing.assert_array_equal(hits.normals[4], 0.0)  # no hit, no normal
    assert client.queries.raycast(world_id, origins, directions, 6.0).normals is None  # only when asked

    with GatewayClient(gateway.address, "unity") as engine:  # Unity axes: the wall's -x is Unity's -z
        reply = engine.call("raycast", world_id=world_id, return_normals=True, max_range=6.0,
                            origins=UNITY.points_from_canonical(origins).astype(np.float32).tobytes(),
                            directions=UNITY.directions_from_canonical(directions).astype(np.float32).tobytes())
    engine_normals = np.frombuffer(reply["normals"], np.float32).reshape(-1, 3)
    np.testing.assert_allclose(UNITY.directions_to_canonical(engine_normals), hits.normals, atol=1e-6)
    assert engine_normals[0] @ [0.0, 0.0, -1.0] > np.cos(np.radians(3))
    client.worlds.delete(world_id)
