"""Pose and Intrinsics: round trips, projection, validation messages."""

import math

import numpy as np
import pytest

from worldweave.proto.errors import InvalidIntrinsicsError, InvalidPoseError
from worldweave.proto.geometry import (
    Intrinsics,
    Pose,
    Quaternion,
    quaternion_from_rotation,
    rotation_from_quaternion,
)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return rotation_from_quaternion(Quaternion(*q))


@pytest.mark.parametrize("seed", range(20))
def test_quaternion_matrix_round_trip(seed):
    rng = np.random.default_rng(seed)
    rotation = random_rotation(rng)
    pose = Pose(rotation, rng.normal(size=3))
    again = Pose.from_position_quaternion(pose.position, pose.quaternion)
    np.testing.assert_allclose(again.matrix, pose.matrix, atol=1e-12)
    assert pose.quaternion.qw >= 0
    assert Pose.from_matrix(pose.matrix) == pose


def test_rotation_from_quaternion_is_the_numpy_formula_bit_for_bit():
    """Plain-float maths, normalised by the norm ``np.linalg.norm`` computes: the same matrix as numpy's formula."""
    rng = np.random.default_rng(3)
    for _ in range(500):
        q = rng.normal(size=4) * 10.0 ** rng.uniform(-3, 3)
        w, x, y, z = q / np.linalg.norm(q)
        expected = np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ])
        np.testing.assert_array_equal(rotation_from_quaternion(Quaternion(*q)), expected)
        assert tuple(quaternion_from_rotation(expected)) == pytest.approx(tuple(q / np.linalg.norm(q) * np.sign(w)))


def test_quaternion_of_known_rotation():
    # 90 degrees about z: x -> y.
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    q = quaternion_from_rotation(rotation)
    assert q.qw == pytest.approx(math.sqrt(0.5)) and q.qz == pytest.approx(math.sqrt(0.5))
    assert q.qx == pytest.approx(0.0) and q.qy == pytest.approx(0.0)


@pytest.mark.parametrize("seed", range(10))
def test_inverse_and_point_maps(seed):
    rng = np.random.default_rng(seed)
    pose = Pose(random_rotation(rng), rng.normal(size=3))
    points = rng.normal(size=(50, 3))
    np.testing.assert_allclose(pose.world_to_cam(pose.cam_to_world(points)), points, atol=1e-12)
    np.testing.assert_allclose(pose.inverse_matrix() @ pose.matrix, np.eye(4), atol=1e-12)


def test_look_at_points_camera_at_target_with_image_down_along_minus_z():
    pose = Pose.look_at([0, 0, 1], [5, 0, 1])
    np.testing.assert_allclose(pose.forward, [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(pose.rotation[:, 1], [0, 0, -1], atol=1e-12)  # image y (down) is world -z
    centre = pose.world_to_cam(np.array([[5.0, 0.0, 1.0]]))[0]
    np.testing.assert_allclose(centre, [0, 0, 5], atol=1e-12)


@pytest.mark.parametrize(
    "matrix, fragment",
    [
        (np.diag([1.0, 1.0, 1.0, 1.0]) * np.nan, "non-finite"),
        (np.diag([2.0, 1.0, 1.0, 1.0]), "not orthonormal"),
        (np.diag([-1.0, 1.0, 1.0, 1.0]), "determinant"),
        (np.ones((3, 3)), "4x4 or 3x4"),
    ],
)
def test_bad_matrices_are_rejected_with_a_message(matrix, fragment):
    with pytest.raises(InvalidPoseError, match=fragment):
        Pose.from_matrix(matrix)


def test_bad_quaternion_and_position():
    with pytest.raises(InvalidPoseError, match="zero length"):
        Pose.from_position_quaternion(np.zeros(3), Quaternion(0, 0, 0, 0))
    with pytest.raises(InvalidPoseError, match="non-finite"):
        Pose.from_position_quaternion(np.zeros(3), Quaternion(1, float("nan"), 0, 0))
    with pytest.raises(InvalidPoseError, match="position has a non-finite value inf"):
        Pose(np.eye(3), [0.0, float("inf"), 0.0])


def test_pose_is_immutable():
    pose = Pose.identity()
    with pytest.raises(ValueError):
        pose.position[0] = 1.0


def test_intrinsics_projection_and_backprojection_round_trip():
    k = Intrinsics(500.0, 480.0, 319.5, 239.5, 640, 480)
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 5.0, size=(480, 640)).astype(np.float32)
    points = k.backproject(depth).reshape(-1, 3)
    uv, z = k.project(points)
    v, u = np.meshgrid(np.arange(480), np.arange(640), indexing="ij")
    np.testing.assert_allclose(uv[:, 0], u.ravel(), atol=2e-3)
    np.testing.assert_allclose(uv[:, 1], v.ravel(), atol=2e-3)
    np.testing.assert_allclose(z, depth.ravel(), rtol=1e-6)


def test_intrinsics_from_fov_puts_the_optical_axis_at_the_image_centre():
    k = Intrinsics.from_fov(640, 480, fov_x_deg=90.0)
    assert k.fx == pytest.approx(320.0) and k.fy == k.fx
    assert (k.cx, k.cy) == (319.5, 239.5)
    assert k.fov_x_deg == pytest.approx(90.0)
    vertical = Intrinsics.from_fov(640, 480, fov_y_deg=60.0)
    assert vertical.fov_y_deg == pytest.approx(60.0)
    uv, _ = vertical.project(np.array([[0.0, 0.0, 5.0]]))
    assert tuple(uv[0].tolist()) == (319.5, 239.5)


def test_intrinsics_scaling_keeps_pixel_centres_consistent():
    k = Intrinsics(500.0, 500.0, 319.5, 239.5, 640, 480)
    half = k.scaled(320, 240)
    assert (half.cx, half.cy, half.fx) == (159.5, 119.5, 250.0)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(fx=0.0), "positive"),
        (dict(fy=float("nan")), "finite"),
        (dict(width=0), "positive integer"),
        (dict(height=2.5), "positive integer"),
    ],
)
def test_bad_intrinsics(kwargs, fragment):
    values = dict(fx=500.0, fy=500.0, cx=320.0, cy=240.0, width=640, height=480) | kwargs
    with pytest.raises(InvalidIntrinsicsError, match=fragment):
        Intrinsics(**values)
    with pytest.raises(InvalidIntrinsicsError, match="exactly one"):
        Intrinsics.from_fov(640, 480)
