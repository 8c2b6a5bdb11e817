"""End to end against the real server (``worldweave serve``'s ``WorldServer`` with its default generator,
``continue``): a Python reference engine drives the gateway in every convention, and a pose sent in an engine's
convention comes back as the same frame as the canonical pose sent straight over gRPC -- for renders of one world,
and for steps of two identically seeded worlds (one stepped through the gateway, one directly)."""

from __future__ import annotations

import numpy as np
import pytest

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.proto.geometry import Intrinsics, Quaternion
from worldweave.sim_clients import conventions as cv
from worldweave.sim_clients.gateway.engine_client import GatewayClient
from worldweave.sim_clients.gateway.messages import pose_from_wire, pose_to_wire

WIDTH, HEIGHT = 64, 48
CONVENTIONS = [(name, {}) for name in cv.CONVENTIONS] + [("usd", {"up_axis": "Y", "metres_per_unit": 0.01})]
IDS = [f"{n}{'-y-cm' if o else ''}" for n, o in CONVENTIONS]


@pytest.fixture(scope="module")
def server(default_server):
    """The default-generator server: conftest's ``gateway`` and ``client`` connect to it."""
    assert default_server.server.config.generator == "continue"
    return default_server


def rgb_of(frame: dict) -> np.ndarray:
    assert frame["rgb"]["encoding"] == "raw"
    return np.frombuffer(frame["rgb"]["data"], np.uint8).reshape(frame["rgb"]["height"], frame["rgb"]["width"], 3)


def camera(intrinsics: Intrinsics) -> dict:
    return {"fx": intrinsics.fx, "fy": intrinsics.fy, "cx": intrinsics.cx, "cy": intrinsics.cy,
            "width": intrinsics.width, "height": intrinsics.height}


@pytest.mark.parametrize("name, options", CONVENTIONS, ids=IDS)
def test_engine_convention_gives_the_canonical_frames(client, gateway, name, options):
    convention = cv.get_convention(name, **options)
    seed_frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    (rgb, depth, seed_c2w), = seed_frames
    direct_world = client.worlds.create(seed_frames, intrinsics).world_id
    poses = yaw_poses(3, max_yaw_deg=8.0)

    def engine_pose(c2w: np.ndarray) -> dict:
        return pose_to_wire(convention.from_canonical(c2w))

    def canonical(frame: dict) -> np.ndarray:
        return convention.to_canonical(pose_from_wire(frame["pose"], "pose", convention.pose_form))

    with GatewayClient(gateway.address, name, **options) as engine:
        # The seed itself goes through the gateway in the engine's convention.
        view = {"rgb": {"width": WIDTH, "height": HEIGHT, "encoding": "raw", "data": rgb.tobytes()},
                "depth": {"width": WIDTH, "height": HEIGHT, "encoding": "float16_m", "data": depth.astype("<f2").tobytes()},
                "pose": engine_pose(seed_c2w)}
        engine_world = engine.call("create_world", seed={"frames": [view], "intrinsics": camera(intrinsics)})["world"]["world_id"]

        rendered = engine.call("render", world_id=direct_world, poses=[engine_pose(p) for p in poses],
                               intrinsics=camera(intrinsics))["frames"]
        expected = client.render(direct_world, poses, intrinsics=intrinsics)
        for frame, reference, pose in zip(rendered, expected, poses):
            assert reference.coverage > 0.5
            np.testing.assert_array_equal(rgb_of(frame), reference.rgb)
            np.testing.assert_allclose(canonical(frame), pose, atol=1e-9)

        for pose in poses:
            reply, = engine.stream("step", world_id=engine_world, poses=[engine_pose(pose)], intrinsics=camera(intrinsics))
            reference, = client.step(direct_world, pose, intrinsics=intrinsics)
            stepped = reply["frame"]
            np.testing.assert_array_equal(rgb_of(stepped), reference.rgb)
            assert stepped["version"] == reference.version and stepped["frame_id"] == reference.frame_id
            np.testing.assert_allclose(canonical(stepped), pose, atol=1e-9)
        engine.call("delete_world", world_id=engine_world)
    client.worlds.delete(direct_world)


def test_unity_camera_at_the_seed_sees_the_seed_wall(client, gateway):
    """A Unity camera placed where the canonical seed camera was (Unity (0, 1.5, 0), facing Unity +z = canonical +x)
    renders the seed wall, 3 m ahead, as the direct canonical render does."""
    seed_frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    world = client.worlds.create(seed_frames, intrinsics).world_id
    with GatewayClient(gateway.address, "unity") as engine:
        pose = pose_to_wire(cv.TransformPose(np.array([0.0, 1.5, 0.0]), Quaternion(1.0, 0.0, 0.0, 0.0)))
        frame, = engine.call("render", world_id=world, poses=[pose],
                             intrinsics={"width": WIDTH, "height": HEIGHT, "fov_x_deg": 70.0},
                             format={"depth_encoding": "float16_m"})["frames"]
    reference, = client.render(world, seed_frames[0][2], intrinsics=intrinsics, depth="float16_m")
    np.testing.assert_array_equal(rgb_of(frame), reference.rgb)
    depth = np.frombuffer(frame["depth"]["data"], "<f2").reshape(HEIGHT, WIDTH)
    assert np.median(depth[depth > 0]) == pytest.approx(3.0, rel=1e-2)
    client.worlds.delete(world)
