"""Multi-camera rigs in one step (issue 21), over a real loopback server with the ``echo`` generator (its frames are
the memory render it is conditioned on):

* a 3-camera rig step (one camera of another size) answers the three single-camera Renders of the memory taken just
  before it, pose-major with camera indices, and moves the world's version by exactly 1; two body poses by 2;
* a numbered (exactly-once) rig step sent again is replayed and the world does not move;
* bad rigs are INVALID_ARGUMENT naming the camera (a scaling, shearing or mirroring mount, bad intrinsics, a rig with
  the step's intrinsics set, a mask of the wrong size); too many cameras or pixels are RESOURCE_EXHAUSTED;
* a rig step through the ZMQ gateway in engine conventions gives the same frames, and the Isaac Sim script's rig
  request decodes to the cameras' canonical poses;
* the pieces: ``VoxelMap.one_version`` folds its changes into one logged version, and every engine convention's
  mount conversion agrees with composing the engine's own transforms.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import msgpack
import numpy as np
import pytest
from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.memory.voxel_map import VoxelMap
from worldweave.proto.codecs import pose_matrix
from worldweave.proto.errors import InvalidInputError, LimitExceededError
from worldweave.proto.geometry import Intrinsics, Pose
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server.limits import ServerLimits
from worldweave.sim_clients import conventions as cv
from worldweave.sim_clients import conversions
from worldweave.sim_clients.gateway import codec
from worldweave.sim_clients.gateway.engine_client import GatewayClient
from worldweave.sim_clients.gateway.messages import pose_from_wire, pose_to_wire
from worldweave.sim_clients.rigs import Rig, RigCamera, mount, stereo_rig
from worldweave.sim_clients.rollouts import Rollouts

WIDTH, HEIGHT = 64, 48
"""The ``world_id`` fixture's seed size (conftest's wall world)."""
BODY = yaw_poses(1)[0]
"""The body pose: the wall seed's camera, 3 m from the wall, looking along world +x."""
INTRINSICS = Intrinsics.from_fov(WIDTH, HEIGHT, fov_x_deg=70.0)
SMALL = Intrinsics.from_fov(40, 30, fov_x_deg=60.0)
ISAAC_SCRIPT = Path(__file__).resolve().parents[1] / "sim_clients" / "isaac" / "worldweave_isaac.py"


def three_cameras() -> Rig:
    """Left (turned 8 degrees left, 5 cm left), centre (the body), right (a smaller camera, turned right)."""
    return Rig((RigCamera(INTRINSICS, mount((-0.05, 0.0, 0.0), yaw_deg=-8.0)), RigCamera(INTRINSICS),
                RigCamera(SMALL, mount((0.05, 0.0, 0.0), yaw_deg=8.0))))


def camera_poses(rig: Rig, body_c2w: np.ndarray) -> list[np.ndarray]:
    return [pose.matrix for pose in rig.camera_poses(Pose.from_matrix(body_c2w))]


def version(client, world_id: str) -> int:
    return client.worlds.get(world_id).version


# ------------------------------------------------------------------------------------------------ the acceptance


def test_a_three_camera_rig_step_equals_three_renders_and_fuses_once(client, world_id):
    rig = three_cameras()
    cameras = camera_poses(rig, BODY)
    renders = [client.render(world_id, c2w, intrinsics=camera.intrinsics, depth="float16_m")[0]
               for c2w, camera in zip(cameras, rig.cameras)]
    before = version(client, world_id)

    frames = client.step(world_id, BODY, rig=rig, depth="float16_m")

    assert [(f.pose_index, f.camera_index) for f in frames] == [(0, 0), (0, 1), (0, 2)]
    for frame, render, c2w, camera in zip(frames, renders, cameras, rig.cameras):
        assert render.coverage > 0.5
        assert frame.rgb.shape == (camera.intrinsics.height, camera.intrinsics.width, 3)
        np.testing.assert_array_equal(frame.rgb, render.rgb)
        np.testing.assert_array_equal(frame.depth, render.depth)
        assert frame.coverage == pytest.approx(render.coverage)
        np.testing.assert_allclose(frame.pose, c2w, atol=1e-9)
    assert [f.version for f in frames] == [before + 1] * 3
    assert version(client, world_id) == before + 1
    assert np.diff([f.frame_id for f in frames]).tolist() == [1, 1]


def test_a_rig_step_of_two_body_poses_is_pose_major_with_one_version_per_pose(client, world_id):
    rig = stereo_rig(INTRINSICS, baseline_m=0.1)
    bodies = yaw_poses(4, max_yaw_deg=6.0)[:2]
    before = version(client, world_id)
    frames = client.step(world_id, bodies, rig=rig, depth=None)
    assert [(f.pose_index, f.camera_index) for f in frames] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [f.version for f in frames] == [before + 1, before + 1, before + 2, before + 2]
    assert version(client, world_id) == before + 2
    expected = [c2w for body in bodies for c2w in camera_poses(rig, body)]
    np.testing.assert_allclose(np.stack([f.pose for f in frames]), np.stack(expected), atol=1e-9)


def test_a_numbered_rig_step_sent_again_is_replayed_and_the_world_does_not_move(client, world_id):
    session = Rollouts(client).session(world_id)
    first = session.step(BODY, rig=three_cameras())
    after = version(client, world_id)
    session.next_sequence = 0  # the reply "was lost": the same number again
    again = session.step(BODY, rig=three_cameras())
    assert version(client, world_id) == after
    assert [f.camera_index for f in again] == [0, 1, 2]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.rgb, b.rgb)
        assert (a.frame_id, a.version) == (b.frame_id, b.version)


# ------------------------------------------------------------------------------------------------ bad rigs


def rig_request(world_id: str, mounts: list[list[float]], intrinsics: list[pb.Intrinsics | None]) -> pb.StepRequest:
    """A rig StepRequest built by hand (the SDK's ``Rig`` refuses a non-rigid mount before sending)."""
    request = conversions.step_request(world_id, BODY, conversions.frame_format())
    for values, camera in zip(mounts, intrinsics):
        added = request.rig.cameras.add(mount=pb.Pose(matrix=pb.Matrix4x4(values=values)))
        if camera is not None:
            added.intrinsics.CopyFrom(camera)
    return request


IDENTITY = np.eye(4).reshape(-1).tolist()
GOOD = conversions.intrinsics_message(INTRINSICS)


@pytest.mark.parametrize("matrix, why", [
    (np.diag([1.2, 1.2, 1.2, 1.0]), "not orthonormal"),                  # a scaling mount
    (np.array([[1, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), "not orthonormal"),  # shear
    (np.diag([-1.0, 1.0, 1.0, 1.0]), "determinant"),                      # a mirror
], ids=["scale", "shear", "mirror"])
def test_a_non_rigid_mount_is_invalid_argument_naming_the_camera(client, world_id, matrix, why):
    before = version(client, world_id)
    request = rig_request(world_id, [IDENTITY, matrix.reshape(-1).tolist()], [GOOD, GOOD])
    with pytest.raises(InvalidInputError, match=rf"rig\.cameras\[1\]\.mount.*{why}") as caught:
        client.call("Step", request)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert version(client, world_id) == before


def test_bad_rig_intrinsics_are_invalid_argument_naming_the_camera(client, world_id):
    bad = pb.Intrinsics(fx=50.0, fy=50.0, cx=1000.0, cy=23.5, width=WIDTH, height=HEIGHT)
    with pytest.raises(InvalidInputError, match=r"rig\.cameras\[2\]\.intrinsics: intrinsics cx = 1000"):
        client.call("Step", rig_request(world_id, [IDENTITY] * 3, [GOOD, None, bad]))


def test_a_rig_with_the_steps_intrinsics_set_or_no_camera_is_invalid_argument(client, world_id):
    request = rig_request(world_id, [IDENTITY], [GOOD])
    request.intrinsics.CopyFrom(GOOD)
    with pytest.raises(InvalidInputError, match=r"leave StepRequest\.intrinsics unset"):
        client.call("Step", request)
    empty = conversions.step_request(world_id, BODY, conversions.frame_format())
    empty.rig.SetInParent()
    with pytest.raises(InvalidInputError, match=r"rig\.cameras is empty"):
        client.call("Step", empty)


def test_a_dynamic_mask_of_the_wrong_camera_size_is_invalid_argument_naming_the_camera(client, world_id):
    rig = three_cameras()
    masks = [[None, None, np.zeros((HEIGHT, WIDTH), bool)]]  # camera 2 is 40 x 30
    with pytest.raises(InvalidInputError, match=r"dynamic_masks\[0\]\.mask \(rig camera 2\) is 64x48, .* 40x30"):
        client.step(world_id, BODY, rig=rig, dynamic_masks=masks)
    frames = client.step(world_id, BODY, rig=rig, dynamic_masks=[[None, None, np.ones((30, 40), bool)]])
    assert len(frames) == 3


def test_too_many_cameras_or_pixels_are_resource_exhausted_before_any_work(client, world_id):
    limit = ServerLimits().max_rig_cameras
    assert client.info.limits.max_rig_cameras == limit
    before = version(client, world_id)
    many = Rig.of([(INTRINSICS, np.eye(4))] * (limit + 1))
    with pytest.raises(LimitExceededError, match=rf"rig has {limit + 1} cameras; .*max_rig_cameras = {limit}"):
        client.step(world_id, BODY, rig=many)
    full_hd = Rig.of([(Intrinsics.from_fov(1920, 1080, fov_x_deg=70.0), np.eye(4))] * 4)
    with pytest.raises(LimitExceededError, match=r"Step costs 66355200 pixels, over .*max_pixels_per_call.*"
                                                 r"8 pose\(s\) x 4 rig cameras"):
        client.step(world_id, np.stack([BODY] * 8), rig=full_hd)
    assert version(client, world_id) == before


# ------------------------------------------------------------------------------------------------ gateway


def rgb_of(frame: dict) -> np.ndarray:
    rgb = frame["rgb"]
    return np.frombuffer(rgb["data"], np.uint8).reshape(rgb["height"], rgb["width"], 3)


@pytest.mark.parametrize("name", ["unity", "unreal", "unity_camera_matrix"])
def test_a_rig_step_through_the_gateway_equals_the_direct_renders(client, gateway, world_id, name):
    convention = cv.get_convention(name)
    rig = three_cameras()
    cameras = camera_poses(rig, BODY)
    renders = [client.render(world_id, c2w, intrinsics=camera.intrinsics)[0]
               for c2w, camera in zip(cameras, rig.cameras)]
    before = version(client, world_id)
    wire_rig = {"cameras": [
        {"intrinsics": {"fx": c.intrinsics.fx, "fy": c.intrinsics.fy, "cx": c.intrinsics.cx, "cy": c.intrinsics.cy,
                        "width": c.intrinsics.width, "height": c.intrinsics.height},
         "mount": pose_to_wire(convention.mount_from_canonical(c.mount.matrix))}
        for c in rig.cameras
    ]}
    with GatewayClient(gateway.address, name) as engine:
        replies = engine.stream("step", world_id=world_id, poses=[pose_to_wire(convention.from_canonical(BODY))],
                                rig=wire_rig)
    assert [(r["pose_index"], r["camera_index"]) for r in replies] == [(0, 0), (0, 1), (0, 2)]
    for reply, render, c2w in zip(replies, renders, cameras):
        np.testing.assert_array_equal(rgb_of(reply["frame"]), render.rgb)
        engine_pose = pose_from_wire(reply["frame"]["pose"], "pose", convention.pose_form)
        np.testing.assert_allclose(convention.to_canonical(engine_pose), c2w, atol=1e-9)
        assert reply["frame"]["version"] == before + 1
    assert version(client, world_id) == before + 1


# ------------------------------------------------------------------------------------------------ the pieces


@pytest.mark.parametrize("name", sorted(cv.CONVENTIONS))
def test_mount_conversion_matches_composing_the_engines_own_transforms(name):
    """The engine composes body and child camera transforms its own way (``E_cam = E_body @ L``); the canonical
    camera pose must be the canonical body pose times ``mount_to_canonical(L)``."""
    convention = cv.get_convention(name)
    rng = np.random.default_rng(0)
    for _ in range(5):
        body = Pose.look_at(rng.normal(size=3), rng.normal(size=3) + [5.0, 0.0, 0.0]).matrix
        t_body_cam = mount(rng.normal(size=3), yaw_deg=rng.uniform(-90, 90), pitch_deg=rng.uniform(-45, 45))
        engine_body = convention.matrix_from_canonical(body)
        engine_camera = convention.matrix_from_canonical(body @ t_body_cam)
        local = np.linalg.inv(engine_body) @ engine_camera
        as_sent = (local if convention.pose_form == "matrix"
                   else convention.from_canonical(convention.matrix_to_canonical(local)))
        np.testing.assert_allclose(convention.mount_to_canonical(as_sent), t_body_cam, atol=1e-9)
        back = convention.mount_to_canonical(convention.mount_from_canonical(t_body_cam))
        np.testing.assert_allclose(back, t_body_cam, atol=1e-9)


def test_one_version_folds_every_change_inside_into_one_logged_version():
    (rgb, depth, c2w), = wall_seed(32, 24)[0]
    intrinsics = wall_seed(32, 24)[1]
    voxel_map = VoxelMap(0.05)
    seed = RGBDFrame(rgb, depth, Pose.from_matrix(c2w), intrinsics)
    voxel_map.integrate(seed, frame_id=0)
    turned = RGBDFrame(rgb, depth * 0.9, Pose.from_matrix(yaw_poses(4, max_yaw_deg=10.0)[1]), intrinsics)
    with voxel_map.one_version():
        first = voxel_map.integrate(turned, frame_id=1)
        second = voxel_map.integrate(seed, frame_id=2)
        assert voxel_map.version == 1
    assert (first.version, second.version, voxel_map.version) == (2, 2, 2)
    changes = voxel_map.changes_since(1)
    assert changes.version == 2 and not changes.is_snapshot
    assert len(changes.added) == first.voxels_added > 0  # added by the first frame, touched again by the second
    assert len(changes.changed) > 0
    assert set(changes.added.keys.tolist()).isdisjoint(changes.changed.keys.tolist())
    with pytest.raises(RuntimeError, match="do not nest"), voxel_map.one_version(), voxel_map.one_version():
        pass
    assert voxel_map.version == 2  # an empty block does not bump


def test_one_version_around_one_change_logs_what_the_change_alone_logs():
    (rgb, depth, c2w), = wall_seed(32, 24)[0]
    intrinsics = wall_seed(32, 24)[1]
    frames = [RGBDFrame(rgb, depth * scale, Pose.from_matrix(yaw_poses(4, max_yaw_deg=10.0)[i]), intrinsics)
              for i, scale in enumerate((1.0, 0.9, 1.1))]
    plain, blocked = VoxelMap(0.05), VoxelMap(0.05)
    for frame_id, frame in enumerate(frames):
        plain.integrate(frame, frame_id=frame_id)
        with blocked.one_version():
            blocked.integrate(frame, frame_id=frame_id)
    assert plain.version == blocked.version == 3
    for since in range(3):
        expected, got = plain.changes_since(since), blocked.changes_since(since)
        assert not got.is_snapshot and len(got.changed) + len(got.added) > 0
        for part in ("added", "changed"):
            np.testing.assert_array_equal(getattr(got, part).keys, getattr(expected, part).keys, err_msg=(since, part))
        np.testing.assert_array_equal(got.removed_keys, expected.removed_keys)


def test_the_sdk_builds_rig_requests_and_refuses_bad_rigs_before_sending():
    rig = stereo_rig(INTRINSICS, baseline_m=0.2)
    masks = [[None, np.ones((HEIGHT, WIDTH), bool)], None]
    request = conversions.step_request("w", np.stack([BODY, BODY]), conversions.frame_format(), rig=rig,
                                       dynamic_masks=masks)
    assert [(m.pose_index, m.camera_index) for m in request.dynamic_masks] == [(0, 1)]
    assert [c.mount.matrix.values[3] for c in request.rig.cameras] == [-0.1, 0.1]  # x of T_body_cam, metres
    with pytest.raises(InvalidInputError, match="leave intrinsics None"):
        conversions.step_request("w", BODY, conversions.frame_format(), rig=rig, intrinsics=INTRINSICS)
    with pytest.raises(InvalidInputError, match="a rig needs at least one camera"):
        Rig(())
    with pytest.raises(InvalidInputError, match=r"rig camera 1 mount \(T_body_cam\) is not rigid"):
        Rig.of([(INTRINSICS, np.eye(4)), (INTRINSICS, np.diag([1.0, 1.0, 2.0, 1.0]))])


@pytest.mark.parametrize("up_axis, metres_per_unit", [("Z", 1.0), ("Y", 0.01)])
def test_the_isaac_script_sends_a_rig_the_gateway_turns_into_the_canonical_cameras(up_axis, metres_per_unit):
    """Isaac Sim cameras read at one instant go out as one rig step (body = first camera, mounts relative to it, in
    stage units); through the gateway's codec they are the cameras' canonical poses."""
    isaac = runpy.run_path(str(ISAAC_SCRIPT), run_name="worldweave_isaac_under_test")
    convention = cv.get_convention("usd", up_axis=up_axis, metres_per_unit=metres_per_unit)
    body = Pose.look_at([1.0, 2.0, 1.5], [4.0, 2.5, 1.2]).matrix
    c2ws = [body @ mount((0.0, 0.0, 0.0)), body @ mount((-0.2, 0.0, 0.1), yaw_deg=-70.0),
            body @ mount((0.2, -0.05, 0.1), yaw_deg=70.0, pitch_deg=-10.0)]
    stage = [convention.matrix_from_canonical(c2w) for c2w in c2ws]  # column-form local-to-world, stage units
    payload = msgpack.packb(isaac["rig_step_request"](3, "w", stage, WIDTH, HEIGHT, [50.0, 40.0, 40.0]))
    _, _, request = codec.decode_request(payload, convention=convention)
    body_c2w = pose_matrix(request.poses[0])
    assert [c.intrinsics.fx for c in request.rig.cameras] == [50.0, 40.0, 40.0]
    for camera, c2w in zip(request.rig.cameras, c2ws):
        np.testing.assert_allclose(body_c2w @ pose_matrix(camera.mount), c2w, atol=1e-9)
