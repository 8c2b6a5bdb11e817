"""Pose validation's plain-float fast path decides exactly as numpy's checks do: same accepted poses with
bit-identical stored values, same rejections with the same messages, on both sides of every threshold."""

import numpy as np
import pytest

from worldweave.proto.errors import InvalidPoseError
from worldweave.proto.geometry import (
    EXACT_ROTATION_TOLERANCE,
    ORTHONORMAL_TOLERANCE,
    Pose,
    Quaternion,
    _clearly_rigid,
    check_rotation,
    rotation_from_quaternion,
)


def numpy_pose(rotation, position) -> tuple[bytes, bytes] | str:
    """What ``Pose(rotation, position)`` stores, by numpy's checks alone (``check_rotation``, then the position, then
    SVD above ``EXACT_ROTATION_TOLERANCE``): (rotation bytes, position bytes), or the ``InvalidPoseError`` message."""
    rotation = np.array(rotation, dtype=np.float64)
    position = np.array(position, dtype=np.float64).reshape(-1)
    try:
        check_rotation(rotation)
        if position.shape != (3,):
            raise InvalidPoseError(f"position must have 3 values, got {position.shape[0]}")
        if not np.all(np.isfinite(position)):
            bad = np.argwhere(~np.isfinite(position))[0]
            raise InvalidPoseError(f"position has a non-finite value {float(position[tuple(bad)])} at index {tuple(int(i) for i in bad)}")
    except InvalidPoseError as error:
        return str(error)
    if np.max(np.abs(rotation.T @ rotation - np.eye(3))) > EXACT_ROTATION_TOLERANCE:
        u, _, vt = np.linalg.svd(rotation)
        rotation = u @ vt
    return rotation.tobytes(), position.tobytes()


def pose_outcome(rotation, position) -> tuple[bytes, bytes] | str:
    """The same, from ``Pose`` itself."""
    try:
        pose = Pose(rotation, position)
    except InvalidPoseError as error:
        return str(error)
    return pose.rotation.tobytes(), pose.position.tobytes()


def rotations(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    return [rotation_from_quaternion(Quaternion(*rng.normal(size=4))) for _ in range(count)]


def column_scaled(rotation: np.ndarray, error: float) -> np.ndarray:
    """``rotation`` with its first column scaled so that max |R^T R - I| is about ``error``."""
    scaled = rotation.copy()
    scaled[:, 0] *= np.sqrt(1.0 + error)
    return scaled


def candidates(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rotations and positions on both sides of each threshold, and bad ones of every kind."""
    rng = np.random.default_rng(seed)
    out = []
    for rotation in rotations(rng, 20):
        position = rng.normal(size=3) * 10.0
        out.append((rotation, position))
        for scale in np.logspace(-17, -1, 33):  # noise from below float64 rounding to far past the tolerance
            out.append((rotation + rng.normal(size=(3, 3)) * scale, position))
        for threshold in (EXACT_ROTATION_TOLERANCE, ORTHONORMAL_TOLERANCE):
            for relative in (-0.02, -0.01, -1e-3, -1e-6, 0.0, 1e-6, 1e-3, 0.01, 0.02):
                out.append((column_scaled(rotation, threshold * (1.0 + relative)), position))
        out.append((-rotation, position))  # a reflection
        out.append((rotation * [1.0, 1.0, -1.0], position))  # a mirrored axis
        out.append((rotation * 1e200, position))  # products overflow
        out.append((rotation.astype(np.float32), position))
        for index in range(9):
            for bad in (np.nan, np.inf, -np.inf):
                broken = rotation.copy()
                broken.flat[index] = bad
                out.append((broken, position))
        for index in range(3):
            broken = position.copy()
            broken[index] = np.nan
            out.append((rotation, broken))
        out.append((rotation, position[:2]))
        out.append((rotation[:2], position))
    return out


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # numpy's R^T R of a 1e200 matrix
@pytest.mark.parametrize("seed", range(3))
def test_pose_stores_and_refuses_exactly_what_the_numpy_checks_do(seed):
    outcomes = [(numpy_pose(r, p), pose_outcome(r, p)) for r, p in candidates(seed)]
    for i, (expected, got) in enumerate(outcomes):
        assert got == expected, f"candidate {i}"
    accepted = sum(isinstance(expected, tuple) for expected, _ in outcomes)
    refused = len(outcomes) - accepted
    assert accepted > 300 and refused > 300  # both sides exercised


def test_the_fast_path_decides_ordinary_poses_and_leaves_bad_or_borderline_ones_to_numpy():
    rng = np.random.default_rng(7)
    for rotation in rotations(rng, 50):
        assert _clearly_rigid(rotation, np.zeros(3)) is False  # float64 rotations: kept as given, no SVD
        noisy = rotation + rng.normal(size=(3, 3)) * 1e-6
        assert _clearly_rigid(noisy, np.zeros(3)) is True  # accepted, re-orthonormalised
        assert _clearly_rigid(-rotation, np.zeros(3)) is None
        assert _clearly_rigid(column_scaled(rotation, EXACT_ROTATION_TOLERANCE), np.zeros(3)) is None
        assert _clearly_rigid(column_scaled(rotation, ORTHONORMAL_TOLERANCE), np.zeros(3)) is None


def numpy_from_matrix(matrix) -> tuple[bytes, bytes] | str:
    """``Pose.from_matrix``'s matrix checks by numpy alone, then ``numpy_pose``."""
    m = np.asarray(matrix, dtype=np.float64)
    if not np.all(np.isfinite(m)):
        bad = np.argwhere(~np.isfinite(m))[0]
        return f"pose matrix has a non-finite value {float(m[tuple(bad)])} at index {tuple(int(i) for i in bad)}"
    if np.max(np.abs(m[3] - [0, 0, 0, 1])) > ORTHONORMAL_TOLERANCE:
        return f"the last row of a 4x4 pose must be [0, 0, 0, 1], got {m[3].tolist()}"
    return numpy_pose(m[:3, :3], m[:3, 3])


def test_from_matrix_checks_the_last_row_and_values_as_numpy_does():
    rng = np.random.default_rng(3)
    matrices = []
    for rotation in rotations(rng, 10):
        matrix = np.eye(4)
        matrix[:3, :3], matrix[:3, 3] = rotation, rng.normal(size=3)
        matrices.append(matrix)
        for index in range(4):
            for offset in (-2e-3, -1e-3, -0.999e-3, 0.999e-3, 1e-3, 1.001e-3, 0.5):
                off = matrix.copy()
                off[3, index] += offset
                matrices.append(off)
        for index in range(16):
            broken = matrix.copy()
            broken.flat[index] = np.inf
            matrices.append(broken)
    for i, matrix in enumerate(matrices):
        try:
            pose = Pose.from_matrix(matrix)
            got = pose.rotation.tobytes(), pose.position.tobytes()
        except InvalidPoseError as error:
            got = str(error)
        assert got == numpy_from_matrix(matrix), f"matrix {i}"
