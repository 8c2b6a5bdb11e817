"""Engine conventions: round trips, hand-checked fixtures per engine, docs/conventions.md's formulas, intrinsics.

Each fixture places an engine camera, converts it to the canonical pose, and projects engine-world points through
``worldweave.bridge``'s own ``Pose`` and ``Intrinsics``: a point straight ahead lands on the image centre at its
distance; a point to the engine camera's right lands right of centre; one above it, above centre. That checks
handedness, not just that two formulas agree.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from worldweave.proto.errors import InvalidIntrinsicsError
from worldweave.proto.geometry import (
    Intrinsics,
    Pose,
    Quaternion,
    quaternion_from_rotation,
    rotation_from_quaternion,
)
from worldweave.sim_clients import conventions as cv
from worldweave.sim_clients.conventions import (
    AIRSIM,
    CANONICAL,
    CARLA,
    CONVENTIONS,
    ISAAC_WORLD,
    OPENGL,
    ROS_OPTICAL,
    UNITY,
    UNITY_CAMERA_MATRIX,
    UNREAL,
    ConventionError,
    Rotator,
    RotatorPose,
    TransformPose,
)

INTRINSICS = Intrinsics.from_fov(640, 480, fov_y_deg=60.0)


def project(c2w: np.ndarray, points_world: np.ndarray) -> np.ndarray:
    """(N, 3) canonical world points -> (N, 3) rows (u, v, depth) through the bridge's Pose."""
    cam = Pose.from_matrix(c2w).world_to_cam(np.atleast_2d(points_world))
    u = INTRINSICS.fx * cam[:, 0] / cam[:, 2] + INTRINSICS.cx
    v = INTRINSICS.fy * cam[:, 1] / cam[:, 2] + INTRINSICS.cy
    return np.stack([u, v, cam[:, 2]], axis=1)


def assert_ahead_right_up(convention: cv.Convention, engine_pose, ahead, right, up, depth_m: float) -> None:
    """``ahead`` (engine world point) at the image centre at ``depth_m``; ``right`` right of it; ``up`` above."""
    c2w = convention.to_canonical(engine_pose)
    points = convention.points_to_canonical(np.array([ahead, right, up], dtype=np.float64))
    (u0, v0, d0), (u1, v1, _), (u2, v2, _) = project(c2w, points)
    assert (u0, v0) == pytest.approx((INTRINSICS.cx, INTRINSICS.cy), abs=1e-6)
    assert d0 == pytest.approx(depth_m, abs=1e-9)
    assert u1 > u0 + 10 and v1 == pytest.approx(v0, abs=1e-6), "engine 'right' must land right of centre"
    assert v2 < v0 - 10 and u2 == pytest.approx(u0, abs=1e-6), "engine 'up' must land above centre"


def unity_quaternion_euler_y(yaw_deg: float) -> Quaternion:
    """Unity's ``Quaternion.Euler(0, yaw, 0)``: a turn about Unity +y."""
    half = math.radians(yaw_deg) / 2
    return Quaternion(qw=math.cos(half), qx=0.0, qy=math.sin(half), qz=0.0)


# ---------------------------------------------------------------------------------------------------------------
# Hand fixtures, one or more per engine


def test_unity_identity_camera_sees_point_ahead_at_centre_depth_5():
    pose = TransformPose(np.zeros(3), Quaternion(1.0, 0.0, 0.0, 0.0))
    assert_ahead_right_up(UNITY, pose, (0, 0, 5), (1, 0, 5), (0, 1, 5), 5.0)


def test_unity_camera_turned_90_about_y_looks_along_unity_x():
    pose = TransformPose(np.array([1.0, 2.0, 3.0]), unity_quaternion_euler_y(90.0))
    # Turning right by 90° about Unity's up axis faces +x; its right is then -z.
    assert_ahead_right_up(UNITY, pose, (6, 2, 3), (6, 2, 2), (6, 3, 3), 5.0)


def test_unity_camera_to_world_matrix_identity_transform():
    # For an unscaled Transform, cameraToWorldMatrix = localToWorldMatrix * Scale(1, 1, -1).
    camera_to_world = np.diag([1.0, 1.0, -1.0, 1.0])
    assert_ahead_right_up(UNITY_CAMERA_MATRIX, camera_to_world, (0, 0, 5), (1, 0, 5), (0, 1, 5), 5.0)


def test_unity_camera_to_world_matrix_agrees_with_transform_form():
    rng = np.random.default_rng(1)
    for _ in range(50):
        q = Quaternion(*rng.normal(size=4))
        position = rng.uniform(-20, 20, size=3)
        local_to_world = np.eye(4)
        local_to_world[:3, :3] = rotation_from_quaternion(q)
        local_to_world[:3, 3] = position
        camera_to_world = local_to_world @ np.diag([1.0, 1.0, -1.0, 1.0])
        np.testing.assert_allclose(
            UNITY_CAMERA_MATRIX.to_canonical(camera_to_world), UNITY.to_canonical(TransformPose(position, q)), atol=1e-12
        )


def test_unreal_yaw_90_looks_along_unreal_y_in_centimetres():
    pose = RotatorPose(np.array([100.0, 200.0, 50.0]), Rotator(pitch_deg=0.0, yaw_deg=90.0, roll_deg=0.0))
    # Facing +y in Unreal's left-handed Z-up world, the camera's right is -x. 500 cm ahead = 5 m.
    assert_ahead_right_up(UNREAL, pose, (100, 700, 50), (0, 700, 50), (100, 700, 150), 5.0)


def test_unreal_positive_pitch_raises_the_view():
    pose = RotatorPose(np.zeros(3), Rotator(pitch_deg=30.0, yaw_deg=0.0, roll_deg=0.0))
    c2w = UNREAL.to_canonical(pose)
    ahead = UNREAL.points_to_canonical(np.array([[500 * math.cos(math.radians(30)), 0.0, 500 * math.sin(math.radians(30))]]))
    (u, v, depth), = project(c2w, ahead)
    assert (u, v, depth) == pytest.approx((INTRINSICS.cx, INTRINSICS.cy, 5.0), abs=1e-6)


def test_carla_metres_and_roll_lowers_the_right_side():
    pose = RotatorPose(np.array([1.0, 2.0, 3.0]), Rotator(pitch_deg=0.0, yaw_deg=0.0, roll_deg=90.0))
    c2w = CARLA.to_canonical(pose)
    # Rolled 90° (right wing down), the camera's image "up" is CARLA +y: a point to the world's right shows above.
    (u0, v0, d0), (u1, v1, _) = project(c2w, CARLA.points_to_canonical(np.array([[6.0, 2.0, 3.0], [6.0, 3.0, 3.0]])))
    assert (u0, v0, d0) == pytest.approx((INTRINSICS.cx, INTRINSICS.cy, 5.0), abs=1e-6)
    assert v1 < v0 - 10 and u1 == pytest.approx(u0, abs=1e-6)
    np.testing.assert_allclose(c2w[:3, 3], [1.0, -2.0, 3.0])


def test_airsim_zero_attitude_looks_north():
    pose = TransformPose(np.zeros(3), Quaternion(1.0, 0.0, 0.0, 0.0))
    # NED: north ahead, east to the right, up is -z.
    assert_ahead_right_up(AIRSIM, pose, (5, 0, 0), (5, 1, 0), (5, 0, -1), 5.0)
    np.testing.assert_allclose(AIRSIM.to_canonical(pose)[:3, 2], [1.0, 0.0, 0.0], atol=1e-12)


def test_isaac_world_camera_looks_along_x_with_z_up():
    pose = TransformPose(np.array([0.0, 0.0, 1.5]), Quaternion(1.0, 0.0, 0.0, 0.0))
    assert_ahead_right_up(ISAAC_WORLD, pose, (5, 0, 1.5), (5, -1, 1.5), (5, 0, 2.5), 5.0)


def test_opengl_camera_looks_down_minus_z():
    assert_ahead_right_up(OPENGL, np.eye(4), (0, 0, -5), (1, 0, -5), (0, 1, -5), 5.0)


def test_usd_y_up_centimetre_stage():
    stage = cv.get_convention("usd", up_axis="Y", metres_per_unit=0.01)
    assert_ahead_right_up(stage, np.eye(4), (0, 0, -500), (100, 0, -500), (0, 100, -500), 5.0)
    up_canonical = stage.directions_to_canonical(np.array([[0.0, 1.0, 0.0]]))
    np.testing.assert_allclose(up_canonical, [[0.0, 0.0, 1.0]], atol=1e-12)


def test_usd_default_is_opengl_in_metres():
    rng = np.random.default_rng(2)
    m = OPENGL.matrix_from_canonical(random_c2w(rng))
    np.testing.assert_allclose(cv.get_convention("usd").to_canonical(m), OPENGL.to_canonical(m), atol=1e-12)


@pytest.mark.parametrize("convention", [CANONICAL, ROS_OPTICAL])
def test_ros_optical_and_canonical_are_identity(convention):
    c2w = random_c2w(np.random.default_rng(3))
    pose = convention.from_canonical(c2w)
    np.testing.assert_allclose(pose.position, c2w[:3, 3])
    np.testing.assert_allclose(rotation_from_quaternion(pose.rotation), c2w[:3, :3], atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# docs/conventions.md's formulas, written out literally, against the module


def rx(deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def ry(deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rz(deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def test_design_formulas_match_the_module():
    rng = np.random.default_rng(4)
    P = np.array([[0, 0, 1], [-1, 0, 0], [0, 1, 0]])
    S = np.diag([1, -1, 1])
    K = np.array([[0, 1, 0], [0, 0, -1], [1, 0, 0]])
    for _ in range(50):
        pitch, yaw, roll = rng.uniform(-180, 180, size=3)
        location = rng.uniform(-1000, 1000, size=3)
        R_ue = rz(yaw) @ ry(-pitch) @ rx(-roll)
        got = UNREAL.to_canonical(RotatorPose(location, Rotator(pitch, yaw, roll)))
        np.testing.assert_allclose(got[:3, :3], S @ R_ue @ K.T, atol=1e-12)
        np.testing.assert_allclose(got[:3, 3], S @ location / 100.0, atol=1e-12)

        q = Quaternion(*rng.normal(size=4))
        t_u = rng.uniform(-10, 10, size=3)
        R_u = rotation_from_quaternion(q)
        got = UNITY.to_canonical(TransformPose(t_u, q))
        np.testing.assert_allclose(got[:3, :3], P @ R_u @ np.diag([1, -1, 1]), atol=1e-12)
        np.testing.assert_allclose(got[:3, 3], P @ t_u, atol=1e-12)
        M = R_u @ np.diag([1, 1, -1])  # cameraToWorldMatrix's rotation
        np.testing.assert_allclose(P @ M @ np.diag([1, -1, -1]), got[:3, :3], atol=1e-12)

        R_gl = rotation_from_quaternion(Quaternion(*rng.normal(size=4)))
        m_gl = np.eye(4)
        m_gl[:3, :3] = R_gl
        np.testing.assert_allclose(OPENGL.to_canonical(m_gl)[:3, :3], R_gl @ np.diag([1, -1, -1]), atol=1e-12)

        R_body = rotation_from_quaternion(Quaternion(*rng.normal(size=4)))
        t_ned = rng.uniform(-10, 10, size=3)
        C = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]])
        N = np.diag([1, -1, -1])
        got = AIRSIM.to_canonical(TransformPose(t_ned, quaternion_from_rotation(R_body)))
        np.testing.assert_allclose(got[:3, :3], N @ R_body @ C, atol=1e-12)
        np.testing.assert_allclose(got[:3, 3], t_ned * [1, -1, -1], atol=1e-12)

        C_isaac = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]])
        got = ISAAC_WORLD.to_canonical(TransformPose(np.zeros(3), quaternion_from_rotation(R_body)))
        np.testing.assert_allclose(got[:3, :3], R_body @ C_isaac, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Round trips


def random_c2w(rng: np.random.Generator) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotation_from_quaternion(Quaternion(*rng.normal(size=4)))
    m[:3, 3] = rng.uniform(-100, 100, size=3)
    return m


ALL = [*CONVENTIONS.values(), cv.usd("Y", 0.01), cv.usd("Z", 0.001)]


@pytest.mark.parametrize("convention", ALL, ids=[f"{c.name}-{i}" for i, c in enumerate(ALL)])
def test_round_trip_canonical_engine_canonical(convention):
    cv.check_convention(convention, samples=200, seed=5)
    rng = np.random.default_rng(6)
    for _ in range(200):
        c2w = random_c2w(rng)
        back = convention.to_canonical(convention.from_canonical(c2w))
        np.testing.assert_allclose(back, c2w, atol=1e-9)
        assert np.linalg.det(back[:3, :3]) == pytest.approx(1.0)


@pytest.mark.parametrize("convention", ALL, ids=[f"{c.name}-{i}" for i, c in enumerate(ALL)])
def test_conversions_equal_the_formulas_exactly(convention):
    """Every built-in convention turns by signed permutations, so its conversions (each one product of 4x4s) give
    exactly ``[W R A | s W t]`` and its inverse, and the mount forms ``[A^T R A | s A^T t]`` and back, bit for bit,
    with a last row of exactly [0, 0, 0, 1]."""
    W, A, s = convention.world_to_canonical, convention.opencv_to_camera, convention.metres_per_unit
    assert set(np.abs(W).ravel().tolist()) <= {0.0, 1.0} and set(np.abs(A).ravel().tolist()) <= {0.0, 1.0}
    rng = np.random.default_rng(8)
    for _ in range(50):
        m = random_c2w(rng)
        m[3, 3] = 1.0 + 1e-6  # within check_pose_matrix's tolerance: the output's last row is set, not carried
        R, t = m[:3, :3], m[:3, 3]
        engine = convention.matrix_from_canonical(m)
        mount = convention.mount_from_canonical(m)
        mount_matrix = convention._engine_matrix(mount)  # the engine's form read back (a rotator or quaternion rounds)
        cases = [
            (engine, W.T @ R @ A.T, (W.T @ t) / s),
            (convention.matrix_to_canonical(engine), W @ engine[:3, :3] @ A, s * (W @ engine[:3, 3])),
            (convention.mount_to_canonical(mount), A.T @ mount_matrix[:3, :3] @ A, s * (A.T @ mount_matrix[:3, 3])),
        ]
        if convention.pose_form == "matrix":
            cases.append((mount, A @ R @ A.T, (A @ t) / s))
        for got, rotation, position in cases:
            np.testing.assert_array_equal(got[3], [0.0, 0.0, 0.0, 1.0])
            np.testing.assert_array_equal(got[:3, :3], rotation)
            np.testing.assert_array_equal(got[:3, 3], position)


@pytest.mark.parametrize("convention", ALL, ids=[f"{c.name}-{i}" for i, c in enumerate(ALL)])
def test_round_trip_engine_canonical_engine(convention):
    rng = np.random.default_rng(7)
    for _ in range(200):
        engine = convention.matrix_from_canonical(random_c2w(rng))
        np.testing.assert_allclose(convention.matrix_from_canonical(convention.matrix_to_canonical(engine)), engine, atol=1e-9)
        points = rng.uniform(-10, 10, size=(5, 3))
        np.testing.assert_allclose(convention.points_from_canonical(convention.points_to_canonical(points)), points, atol=1e-12)
        # A point fixed in the camera's frame maps consistently through the pose and through points_to_canonical.
        p_cam_engine = convention.opencv_to_camera @ np.array([0.3, -0.2, 2.0])
        p_world_engine = engine[:3, :3] @ p_cam_engine + engine[:3, 3]
        c2w = convention.matrix_to_canonical(engine)
        p_world = convention.points_to_canonical(p_world_engine[None])[0]
        np.testing.assert_allclose(c2w[:3, :3] @ (np.array([0.3, -0.2, 2.0]) * convention.metres_per_unit) + c2w[:3, 3], p_world, atol=1e-9)


def test_rotator_round_trip_and_gimbal_lock():
    rng = np.random.default_rng(8)
    for _ in range(500):
        rotator = Rotator(rng.uniform(-89, 89), rng.uniform(-179, 179), rng.uniform(-179, 179))
        back = cv.rotator_from_rotation(cv.rotation_from_rotator(rotator))
        assert back == pytest.approx(rotator, abs=1e-9)
    locked = cv.rotation_from_rotator(Rotator(90.0, 30.0, 10.0))
    np.testing.assert_allclose(cv.rotation_from_rotator(cv.rotator_from_rotation(locked)), locked, atol=1e-7)


def test_quaternion_round_trip_is_sign_normalised():
    rng = np.random.default_rng(9)
    for _ in range(200):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        back = quaternion_from_rotation(rotation_from_quaternion(Quaternion(*q)))
        assert back.qw >= 0
        np.testing.assert_allclose(np.abs(np.dot(back, q)), 1.0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Intrinsics


def test_intrinsics_from_fov_match_the_bridge():
    for kwargs in ({"fov_y_deg": 60.0}, {"fov_x_deg": 90.0}, {"fov_x_deg": 37.5}):
        ours = Intrinsics.from_fov(640, 480, **kwargs)
        theirs = Intrinsics.from_fov(640, 480, **kwargs)
        assert (ours.fx, ours.fy, ours.cx, ours.cy, ours.width, ours.height) == pytest.approx(
            (theirs.fx, theirs.fy, theirs.cx, theirs.cy, theirs.width, theirs.height)
        )
    unity = Intrinsics.from_fov(640, 480, fov_y_deg=60.0)
    assert unity.fy == pytest.approx(240.0 / math.tan(math.radians(30.0)))
    assert (unity.cx, unity.cy) == (319.5, 239.5)
    assert unity.fov_y_deg == pytest.approx(60.0)
    unreal = Intrinsics.from_fov(640, 480, fov_x_deg=90.0)
    assert unreal.fx == pytest.approx(320.0)
    assert unreal.fov_x_deg == pytest.approx(90.0)


def test_intrinsics_from_usd_camera():
    # Isaac Sim's default camera: focal length 18.147 mm, horizontal aperture 20.955 mm.
    k = Intrinsics.from_usd_camera(1280, 720, focal_length=18.147, horizontal_aperture=20.955)
    assert k.fx == pytest.approx(18.147 / 20.955 * 1280)
    assert k.fov_x_deg == pytest.approx(math.degrees(2 * math.atan(20.955 / 2 / 18.147)))


# ---------------------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: UNITY.to_canonical(TransformPose(np.array([0, 0, np.nan]), Quaternion(1, 0, 0, 0))), "non-finite"),
        (lambda: UNITY.to_canonical(TransformPose(np.zeros(3), Quaternion(0, 0, 0, 0))), "zero length"),
        (lambda: UNITY.to_canonical(TransformPose(np.zeros(2), Quaternion(1, 0, 0, 0))), "3 values"),
        (lambda: UNITY.to_canonical(np.eye(4)), "TransformPose"),
        (lambda: UNREAL.to_canonical(TransformPose(np.zeros(3), Quaternion(1, 0, 0, 0))), "RotatorPose"),
        (lambda: UNREAL.to_canonical(RotatorPose(np.zeros(3), Rotator(float("inf"), 0, 0))), "non-finite"),
        (lambda: OPENGL.to_canonical(np.diag([2.0, 2.0, 2.0, 1.0])), "not orthonormal"),
        (lambda: OPENGL.to_canonical(np.diag([1.0, 1.0, -1.0, 1.0])), "determinant"),
        (lambda: UNITY_CAMERA_MATRIX.to_canonical(np.eye(4)), "determinant"),
        (lambda: OPENGL.to_canonical(np.eye(3)), "4x4"),
        (lambda: OPENGL.to_canonical(np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1.0]])), "last row"),
        (lambda: cv.get_convention("blender"), "unknown convention"),
        (lambda: cv.get_convention("unity", up_axis="Y"), "usd"),
        (lambda: cv.get_convention("usd", up_axis="X"), "up axis"),
    ],
)
def test_bad_input_raises_a_named_error(call, message):
    with pytest.raises(ConventionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: Intrinsics.from_fov(640, 480), "exactly one"),
        (lambda: Intrinsics.from_fov(640, 480, fov_x_deg=180.0), "(0, 180)"),
        (lambda: Intrinsics.from_fov(0, 480, fov_x_deg=90.0), "positive"),
        (lambda: Intrinsics(1.0, 1.0, 0.0, 0.0, 640, True), "positive integer"),
    ],
)
def test_bad_intrinsics_raise_a_named_error(call, message):
    with pytest.raises(InvalidIntrinsicsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_conventions_module_never_imports_the_bridge():
    code = (
        "import sys; import worldweave.sim_clients.conventions; "
        "sys.exit(1 if any(m.startswith('worldweave.bridge') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
