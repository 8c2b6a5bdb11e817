"""End to end against the real server (``worldweave serve``'s ``WorldServer`` with its default generator,
``reproject``): a Python reference engine drives the gateway in every convention, and a pose sent in an engine's
convention comes back as the same frame as the canonical pose sent straight over gRPC -- for renders of one world,
and for steps of two identically seeded worlds (one stepped through the gateway, one directly)."""

from __future__ import annotations

import numpy as np
import pytest

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.proto.geometry import Intrinsics, Quaternion
from worldweave.sim_clients import conventions as cv
from worldweave.sim_clients.gateway import messages as m
from worldweave.sim_clients.gateway.engine_client import GatewayClient

WIDTH, HEIGHT = 64, 48
CONVENTIONS = [(name, {}) for name in cv.CONVENTIONS] + [("usd", {"up_axis": "Y", "metres_per_unit": 0.01})]
IDS = [f"{n}{'-y-cm' if o else ''}" for n, o in CONVENTIONS]


@pytest.fixture(scope="module")
def server(reproject_server):
    """The default-generator server: conftest's ``gateway`` and ``client`` connect to it."""
    assert reproject_server.server.config.generator == "reproject"
    return reproject_server


def rgb_of(frame: m.WireFrame) -> np.ndarray:
    assert frame.rgb.encoding == "raw_rgb8"
    return np.frombuffer(frame.rgb.data, np.uint8).reshape(frame.rgb.height, frame.rgb.width, 3)


@pytest.mark.parametrize("name, options", CONVENTIONS, ids=IDS)
def test_engine_convention_gives_the_canonical_frames(client, gateway, name, options):
    convention = cv.get_convention(name, **options)
    seed_frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    (rgb, depth, seed_c2w), = seed_frames
    direct_world = client.create_world(seed_frames, intrinsics).world_id
    poses = yaw_poses(3, max_yaw_deg=8.0)
    with GatewayClient(gateway.address, name, **options) as engine:
        # The seed itself goes through the gateway in the engine's convention.
        view = m.SeedView(m.WireImage(WIDTH, HEIGHT, "raw_rgb8", rgb.tobytes()),
                          m.WireDepth(WIDTH, HEIGHT, "float16_m", depth.astype("<f2").tobytes()),
                          convention.from_canonical(seed_c2w))
        engine_world = engine.create_world([view], intrinsics).world_id

        rendered = engine.render(direct_world, [convention.from_canonical(p) for p in poses], camera=intrinsics)
        expected = client.render(direct_world, poses, intrinsics=intrinsics)
        for frame, reference, pose in zip(rendered, expected, poses):
            assert reference.coverage > 0.5
            np.testing.assert_array_equal(rgb_of(frame), reference.rgb)
            np.testing.assert_allclose(convention.to_canonical(frame.pose), pose, atol=1e-9)

        for pose in poses:
            stepped, = engine.step(engine_world, [convention.from_canonical(pose)], camera=intrinsics)
            reference, = client.step(direct_world, pose, intrinsics=intrinsics)
            np.testing.assert_array_equal(rgb_of(stepped), reference.rgb)
            assert stepped.memory_version == reference.version and stepped.frame_id == reference.frame_id
            np.testing.assert_allclose(convention.to_canonical(stepped.pose), pose, atol=1e-9)
        engine.delete_world(engine_world)
    client.delete_world(direct_world)


def test_unity_camera_at_the_seed_sees_the_seed_wall(client, gateway):
    """A Unity camera placed where the canonical seed camera was (Unity (0, 1.5, 0), facing Unity +z = canonical +x)
    renders the seed wall, 3 m ahead, as the direct canonical render does."""
    seed_frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    world = client.create_world(seed_frames, intrinsics).world_id
    with GatewayClient(gateway.address, "unity") as engine:
        frame, = engine.render(world, [cv.TransformPose(np.array([0.0, 1.5, 0.0]), Quaternion(1.0, 0.0, 0.0, 0.0))],
                               camera=Intrinsics.from_fov(WIDTH, HEIGHT, fov_x_deg=70.0), depth_encoding="float16_m")
    reference, = client.render(world, seed_frames[0][2], intrinsics=intrinsics, depth="float16_m")
    np.testing.assert_array_equal(rgb_of(frame), reference.rgb)
    depth = np.frombuffer(frame.depth.data, "<f2").reshape(HEIGHT, WIDTH)
    assert np.median(depth[depth > 0]) == pytest.approx(3.0, rel=1e-2)
    client.delete_world(world)
