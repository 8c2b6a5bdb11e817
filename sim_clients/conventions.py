"""Engine pose conventions, both directions, and pinhole intrinsics from each engine's field-of-view form.

worldweave's canonical form: the world is right-handed, **Z up, metres**; the camera frame is
**OpenCV optical** (x right, y down, z forward); a pose is **camera-to-world** ``T_world_cam``, a 4x4 float64
matrix with ``p_world = R @ p_cam + t``. Quaternions have named fields ``qw, qx, qy, qz`` (Hamilton, scalar first).

Every engine convention here differs from the canonical one by exactly three things:

* ``world_to_canonical`` ``W`` (3x3): canonical axes of an engine world vector, ``v_canonical = W @ v_engine``;
* ``opencv_to_camera`` ``A`` (3x3): engine camera-local coordinates of an OpenCV camera vector,
  ``v_engine_cam = A @ v_opencv``;
* ``metres_per_unit`` ``s``: the engine's length unit in metres (Unreal: 0.01).

so, with ``R_e, t_e`` the engine's camera-local-to-world rotation and position,

    T_canonical = [ W R_e A | s W t_e ]        and back        R_e = W^T R A^T,   t_e = W^T t / s.

``W`` and ``A`` are orthonormal (signed permutations, or a 90° rotation for a Y-up USD stage), so each direction is
exact up to float rounding. An engine pose arrives in one of three forms (``Convention.pose_form``):
:class:`TransformPose` (position + quaternion), :class:`RotatorPose` (Unreal/CARLA location + rotator) or a 4x4
local-to-world matrix. The frames of each engine, with a worked example each, are in ``docs/conventions.md``.

It stands on the wire layer's geometry (``worldweave.proto.geometry``: ``Quaternion``, ``Intrinsics``) and numpy;
it never imports ``worldweave.bridge``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, NamedTuple

import numpy as np

from worldweave.proto.errors import InvalidInputError, InvalidPoseError
from worldweave.proto.geometry import (
    Quaternion,
    orthonormal_error_and_det,
    quaternion_from_rotation,
    rotation_from_quaternion,
)

ORTHONORMAL_TOLERANCE = 1e-4
"""Largest allowed ``|R^T R - I|`` entry and ``|det R - (+-1)|`` for an engine rotation to be accepted."""

PoseForm = Literal["position_quaternion", "position_rotator", "matrix"]
"""How an engine states a camera pose: :class:`TransformPose`, :class:`RotatorPose` or a 4x4 matrix."""

FovAxis = Literal["horizontal", "vertical"]


class ConventionError(InvalidInputError):
    """An engine pose or camera that cannot be converted (NaN, zero quaternion, scaled or sheared matrix, ...)."""


class Rotator(NamedTuple):
    """Unreal's ``FRotator`` (also CARLA's ``carla.Rotation``), in degrees.

    ``R = Rz(yaw) @ Ry(-pitch) @ Rx(-roll)`` in Unreal's axes (x forward, y right, z up), applied to column
    vectors: positive pitch raises the nose, positive yaw turns from +x towards +y (right, seen from above),
    positive roll lowers the right wing. Equals the transpose of ``FRotationMatrix(Rotator)``.
    """

    pitch_deg: float
    yaw_deg: float
    roll_deg: float


class TransformPose(NamedTuple):
    """Position (engine units, engine world axes) and camera-local-to-world rotation quaternion."""

    position: np.ndarray
    rotation: Quaternion


class RotatorPose(NamedTuple):
    """Location (engine units, engine world axes) and rotator (degrees) of an Unreal/CARLA camera."""

    position: np.ndarray
    rotator: Rotator


EnginePose = TransformPose | RotatorPose | np.ndarray
"""A pose in an engine's own convention: one of the two records, or a 4x4 local-to-world matrix."""


# ----------------------------------------------------------------------------------------------------------------
# Rotation helpers (numpy only)


def _finite(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ConventionError(f"{name} has a non-finite value: {values.tolist()}")
    return values


def rotation_from_rotator(rotator: Rotator) -> np.ndarray:
    """Column-vector 3x3 rotation of an Unreal rotator: columns are the local forward, right, up axes in world."""
    pitch, yaw, roll = (math.radians(v) for v in _finite(f"rotator {tuple(rotator)}", list(rotator)))
    sp, cp = math.sin(pitch), math.cos(pitch)
    sy, cy = math.sin(yaw), math.cos(yaw)
    sr, cr = math.sin(roll), math.cos(roll)
    # Rows of Unreal's FRotationMatrix (row vectors), i.e. the columns here.
    forward = [cp * cy, cp * sy, sp]
    right = [sr * sp * cy - cr * sy, sr * sp * sy + cr * cy, -sr * cp]
    up = [-(cr * sp * cy + sr * sy), cy * sr - cr * sp * sy, cr * cp]
    return np.array([forward, right, up]).T


def rotator_from_rotation(rotation: np.ndarray) -> Rotator:
    """Rotator (degrees) of a column-vector Unreal rotation, the way ``FMatrix::Rotator`` computes it.

    Pitch and yaw come from the forward axis, roll from the right and up axes against the zero-roll frame; at
    pitch ±90° (gimbal lock) the split between yaw and roll is arbitrary but the matrix is reproduced.
    """
    m = np.asarray(rotation, dtype=np.float64)
    forward, right, up = m[:, 0], m[:, 1], m[:, 2]
    pitch = math.degrees(math.atan2(forward[2], math.hypot(forward[0], forward[1])))
    yaw = math.degrees(math.atan2(forward[1], forward[0]))
    zero_roll_right = rotation_from_rotator(Rotator(pitch, yaw, 0.0))[:, 1]
    roll = math.degrees(math.atan2(float(up @ zero_roll_right), float(right @ zero_roll_right)))
    return Rotator(pitch, yaw, roll)


def _check_rotation(name: str, rotation: np.ndarray, det_sign: int) -> None:
    """Raise :class:`ConventionError` unless the finite 3x3 ``rotation`` is orthonormal with determinant
    ``det_sign``."""
    error, det = orthonormal_error_and_det(rotation.ravel().tolist())
    if not error <= ORTHONORMAL_TOLERANCE:  # NaN fails too
        raise ConventionError(
            f"{name} is not orthonormal (max |R^T R - I| = {error:.3g}, tolerance {ORTHONORMAL_TOLERANCE}): "
            f"a scaled or sheared transform? rows {np.round(rotation, 6).tolist()}"
        )
    if abs(det - det_sign) > ORTHONORMAL_TOLERANCE:
        raise ConventionError(f"{name} has determinant {det:.6g}, expected {det_sign:+d} in this convention")


def check_pose_matrix(matrix: np.ndarray, name: str = "pose matrix", det_sign: int = 1) -> np.ndarray:
    """Validate a 4x4 rigid transform and return it as float64: finite, last row ``[0, 0, 0, 1]``, orthonormal
    rotation of determinant ``det_sign``. Raises :class:`ConventionError` naming the bad value."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4):
        raise ConventionError(f"{name} must be 4x4, got shape {m.shape}")
    values = m.ravel().tolist()  # plain floats: for one 4x4 several times cheaper than numpy's per-call cost
    if not all(map(math.isfinite, values)):
        _finite(name, m)  # raises, naming the values
    if max(abs(values[12]), abs(values[13]), abs(values[14]), abs(values[15] - 1.0)) > ORTHONORMAL_TOLERANCE:
        raise ConventionError(f"the last row of {name} must be [0, 0, 0, 1], got {m[3].tolist()}")
    _check_rotation(f"rotation of {name}", m[:3, :3], det_sign)
    return m


def _position(name: str, position: np.ndarray) -> np.ndarray:
    p = np.asarray(position, dtype=np.float64).reshape(-1)
    if p.shape != (3,):
        raise ConventionError(f"{name} must have 3 values, got {p.shape[0]}")
    if not all(map(math.isfinite, p.tolist())):  # plain floats: cheaper than numpy's per-call cost for three values
        _finite(name, p)  # raises, naming the values
    return p


def _rigid(rotation: np.ndarray, position: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotation
    m[:3, 3] = position
    return m


class _Turns(NamedTuple):
    """A convention's ``W``, ``A`` and their transposes as rigid 4x4s (no translation), for :func:`_turned`."""

    w: np.ndarray
    a: np.ndarray
    w_t: np.ndarray
    a_t: np.ndarray


def _turned(left: np.ndarray, m: np.ndarray, right: np.ndarray, *, times: float | None = None,
            over: float | None = None) -> np.ndarray:
    """``[L R M | L t * times]`` (or ``/ over``) of the rigid 4x4 ``m = [R | t]``, given ``left = [L | 0]`` and
    ``right = [M | 0]`` as 4x4s: one product pair for the whole pose, cheaper than its 3x3 parts (and the same values
    for the signed permutations every built-in convention turns by). The last row is set to exactly
    ``[0, 0, 0, 1]``."""
    out = left @ m @ right
    out[3] = (0.0, 0.0, 0.0, 1.0)
    if times is not None:
        out[:3, 3] *= times
    if over is not None:
        out[:3, 3] /= over
    return out


# ----------------------------------------------------------------------------------------------------------------
# Conventions


@dataclass(frozen=True, eq=False)
class Convention:
    """One engine's pose convention: how its world axes, camera axes and length unit relate to the canonical ones.

    Class contract: ``det(world_to_canonical) * det(opencv_to_camera)`` is the determinant the engine's own
    camera rotation must have (+1 for a proper rotation, -1 for Unity's ``cameraToWorldMatrix``), so that the
    canonical rotation is always proper.
    """

    name: str
    """Registry name, also the gateway's ``convention`` field (e.g. ``"unity"``)."""
    world_to_canonical: np.ndarray
    """``W`` (3x3): canonical world axes of an engine world vector, ``v_canonical = W @ v_engine``."""
    opencv_to_camera: np.ndarray
    """``A`` (3x3): the engine camera's local coordinates of an OpenCV camera vector."""
    metres_per_unit: float
    """The engine's length unit in metres (Unreal centimetres: 0.01)."""
    pose_form: PoseForm
    """How the engine states a pose: ``position_quaternion``, ``position_rotator`` or ``matrix``."""
    fov_axis: FovAxis
    """Which field of view the engine exposes natively (Unity: vertical; Unreal, CARLA, AirSim: horizontal)."""
    summary: str = field(default="")
    """One line: world axes, camera axes, units."""

    def __post_init__(self) -> None:
        for attr in ("world_to_canonical", "opencv_to_camera"):
            m = np.array(getattr(self, attr), dtype=np.float64)
            if m.shape != (3, 3) or np.max(np.abs(m.T @ m - np.eye(3))) > 1e-9:
                raise ConventionError(f"convention {self.name!r}: {attr} must be an orthonormal 3x3, got {m.tolist()}")
            m.flags.writeable = False
            object.__setattr__(self, attr, m)
        if not (math.isfinite(self.metres_per_unit) and self.metres_per_unit > 0):
            raise ConventionError(f"convention {self.name!r}: metres_per_unit must be > 0, got {self.metres_per_unit}")

    @cached_property
    def _turns(self) -> _Turns:
        W, A = self.world_to_canonical, self.opencv_to_camera
        return _Turns(_rigid(W, 0.0), _rigid(A, 0.0), _rigid(W.T, 0.0), _rigid(A.T, 0.0))

    @cached_property
    def engine_rotation_det(self) -> int:
        """Determinant (+1 or -1) of a valid engine camera rotation in this convention."""
        return int(round(np.linalg.det(self.world_to_canonical) * np.linalg.det(self.opencv_to_camera)))

    # -- matrices ------------------------------------------------------------------------------------------------

    def matrix_to_canonical(self, engine_c2w: np.ndarray) -> np.ndarray:
        """Engine camera-local-to-world 4x4 (engine axes and units) -> canonical ``T_world_cam`` 4x4 (metres)."""
        m = check_pose_matrix(engine_c2w, f"{self.name} camera-to-world matrix", self.engine_rotation_det)
        turns = self._turns
        return _turned(turns.w, m, turns.a, times=self.metres_per_unit)

    def matrix_from_canonical(self, c2w: np.ndarray) -> np.ndarray:
        """Canonical ``T_world_cam`` 4x4 (metres) -> the engine's camera-local-to-world 4x4 (engine axes, units)."""
        m = check_pose_matrix(c2w, "canonical camera-to-world matrix", 1)
        turns = self._turns
        return _turned(turns.w_t, m, turns.a_t, over=self.metres_per_unit)

    # -- engine pose records -------------------------------------------------------------------------------------

    def to_canonical(self, pose: EnginePose) -> np.ndarray:
        """A pose in this engine's form (:attr:`pose_form`) -> canonical ``T_world_cam`` 4x4 float64, metres."""
        return self.matrix_to_canonical(self._engine_matrix(pose))

    def _engine_matrix(self, pose: EnginePose) -> np.ndarray:
        """A pose in this engine's form -> the engine's 4x4 (engine axes and units; a matrix form is checked later)."""
        if self.pose_form == "position_quaternion":
            if not isinstance(pose, TransformPose):
                raise ConventionError(f"convention {self.name!r} takes a TransformPose, got {type(pose).__name__}")
            try:
                rotation = rotation_from_quaternion(pose.rotation)
            except InvalidPoseError as error:
                raise ConventionError(str(error)) from None
            engine = _rigid(rotation, _position(f"{self.name} position", pose.position))
        elif self.pose_form == "position_rotator":
            if not isinstance(pose, RotatorPose):
                raise ConventionError(f"convention {self.name!r} takes a RotatorPose, got {type(pose).__name__}")
            engine = _rigid(rotation_from_rotator(pose.rotator), _position(f"{self.name} location", pose.position))
        else:
            if not isinstance(pose, np.ndarray):
                raise ConventionError(f"convention {self.name!r} takes a 4x4 matrix, got {type(pose).__name__}")
            engine = pose
        return engine

    def from_canonical(self, c2w: np.ndarray) -> EnginePose:
        """Canonical ``T_world_cam`` 4x4 -> this engine's pose form (the inverse of :meth:`to_canonical`)."""
        return self._engine_pose(self.matrix_from_canonical(c2w))

    def mount_to_canonical(self, mount: EnginePose) -> np.ndarray:
        """A rig camera's mount in this engine's form -> canonical ``T_body_cam`` 4x4 float64, metres.

        The engine states the camera relative to the rig's body as the engine does a child's local transform
        (``T_e = T_e_body^-1 T_e_cam``, the body's engine-local axes and units; a proper rotation in every form). With
        ``T_world_x = [W R_x A | s W t_x]`` for body and camera alike, ``T_body_cam = [A^T R_e A | s A^T t_e]``.
        """
        m = check_pose_matrix(self._engine_matrix(mount), f"{self.name} rig mount", 1)
        turns = self._turns
        return _turned(turns.a_t, m, turns.a, times=self.metres_per_unit)

    def mount_from_canonical(self, t_body_cam: np.ndarray) -> EnginePose:
        """Canonical ``T_body_cam`` 4x4 -> the engine's form of the mount (inverse of :meth:`mount_to_canonical`)."""
        m = check_pose_matrix(t_body_cam, "canonical rig mount", 1)
        turns = self._turns
        return self._engine_pose(_turned(turns.a, m, turns.a_t, over=self.metres_per_unit))

    def _engine_pose(self, engine: np.ndarray) -> EnginePose:
        """The engine's 4x4 -> its pose form (:attr:`pose_form`)."""
        if self.pose_form == "position_quaternion":
            return TransformPose(engine[:3, 3], quaternion_from_rotation(engine[:3, :3]))
        if self.pose_form == "position_rotator":
            return RotatorPose(engine[:3, 3], rotator_from_rotation(engine[:3, :3]))
        return engine

    # -- points and directions -----------------------------------------------------------------------------------

    def points_to_canonical(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) engine world points (engine units) -> (N, 3) canonical world points, metres."""
        return self.metres_per_unit * (np.asarray(points, dtype=np.float64) @ self.world_to_canonical.T)

    def points_from_canonical(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) canonical world points (metres) -> (N, 3) engine world points, engine units."""
        return (np.asarray(points, dtype=np.float64) @ self.world_to_canonical) / self.metres_per_unit

    def directions_to_canonical(self, directions: np.ndarray) -> np.ndarray:
        """(N, 3) engine world directions -> canonical world directions (no scaling; lengths kept)."""
        return np.asarray(directions, dtype=np.float64) @ self.world_to_canonical.T

    def directions_from_canonical(self, directions: np.ndarray) -> np.ndarray:
        """(N, 3) canonical world directions -> engine world directions (no scaling; lengths kept)."""
        return np.asarray(directions, dtype=np.float64) @ self.world_to_canonical


IDENTITY = np.eye(3)

UNITY_WORLD_TO_CANONICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
"""``P``: Unity (x right, y up, z forward; left-handed) -> canonical (x forward, y left, z up)."""
UNITY_OPENCV_TO_TRANSFORM = np.diag([1.0, -1.0, 1.0])
"""A Unity camera Transform's local axes are x right, y up, z forward: only OpenCV's y (down) flips."""
UNITY_OPENCV_TO_CAMERA_SPACE = np.diag([1.0, -1.0, -1.0])
"""Unity camera space (``Camera.cameraToWorldMatrix``) is OpenGL's: x right, y up, looking down -z."""

UNREAL_WORLD_TO_CANONICAL = np.diag([1.0, -1.0, 1.0])
"""``S``: Unreal (x forward, y right, z up; left-handed) -> canonical (x forward, y left, z up)."""
UNREAL_OPENCV_TO_CAMERA = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
"""``K^T``: an Unreal camera looks along local +x, y right, z up; OpenCV (right, down, forward) -> (y, -z, x)."""
CENTIMETRES_TO_METRES = 0.01

OPENGL_OPENCV_TO_CAMERA = np.diag([1.0, -1.0, -1.0])
"""OpenGL / USD / Blender / nerfstudio camera: x right, y up, looking down -z."""
USD_Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""A right-handed Y-up stage to Z up: ``(x, y, z) -> (x, -z, y)`` (a +90° turn about x)."""

ISAAC_WORLD_OPENCV_TO_CAMERA = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
"""Isaac Lab's "world" camera axes are x forward, y left, z up: OpenCV (right, down, forward) -> (z, -x, -y)."""

AIRSIM_WORLD_TO_CANONICAL = np.diag([1.0, -1.0, -1.0])
"""AirSim NED (x north, y east, z down) -> canonical (x north, y west, z up)."""
AIRSIM_OPENCV_TO_CAMERA = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
"""AirSim camera body axes are x forward, y right, z down: OpenCV (right, down, forward) -> (z, x, y)."""


CANONICAL = Convention(
    "canonical", IDENTITY, IDENTITY, 1.0, "position_quaternion", "horizontal",
    "worldweave's own: world right-handed Z up, metres; OpenCV camera (x right, y down, z forward)",
)
ROS_OPTICAL = Convention(
    "ros_optical", IDENTITY, IDENTITY, 1.0, "position_quaternion", "horizontal",
    "ROS REP-103 world (x forward, y left, z up, metres) and a REP-103 optical frame: identical to canonical",
)
UNITY = Convention(
    "unity", UNITY_WORLD_TO_CANONICAL, UNITY_OPENCV_TO_TRANSFORM, 1.0, "position_quaternion", "vertical",
    "Unity Transform: world left-handed Y up, metres; camera x right, y up, z forward; quaternion x, y, z, w",
)
UNITY_CAMERA_MATRIX = Convention(
    "unity_camera_matrix", UNITY_WORLD_TO_CANONICAL, UNITY_OPENCV_TO_CAMERA_SPACE, 1.0, "matrix", "vertical",
    "Unity Camera.cameraToWorldMatrix: world left-handed Y up, metres; camera space x right, y up, looks down -z",
)
UNREAL = Convention(
    "unreal", UNREAL_WORLD_TO_CANONICAL, UNREAL_OPENCV_TO_CAMERA, CENTIMETRES_TO_METRES, "position_rotator",
    "horizontal",
    "Unreal: world left-handed Z up (x forward, y right), centimetres; camera looks along +x; rotator in degrees",
)
CARLA = Convention(
    "carla", UNREAL_WORLD_TO_CANONICAL, UNREAL_OPENCV_TO_CAMERA, 1.0, "position_rotator", "horizontal",
    "CARLA: Unreal's axes in metres; carla.Rotation pitch, yaw, roll in degrees",
)
OPENGL = Convention(
    "opengl", IDENTITY, OPENGL_OPENCV_TO_CAMERA, 1.0, "matrix", "vertical",
    "OpenGL / Blender / nerfstudio camera (x right, y up, looks down -z) in a right-handed Z-up world, metres",
)
ISAAC_WORLD = Convention(
    "isaac_world", IDENTITY, ISAAC_WORLD_OPENCV_TO_CAMERA, 1.0, "position_quaternion", "horizontal",
    'Isaac Lab "world" camera (x forward, y left, z up) in a right-handed Z-up world, metres; quaternion w, x, y, z',
)
AIRSIM = Convention(
    "airsim", AIRSIM_WORLD_TO_CANONICAL, AIRSIM_OPENCV_TO_CAMERA, 1.0, "position_quaternion", "horizontal",
    "AirSim: world NED (x north, y east, z down), metres; camera body x forward, y right, z down",
)


def usd(up_axis: Literal["Y", "Z"] = "Z", metres_per_unit: float = 1.0) -> Convention:
    """An Isaac Sim / USD stage: OpenGL camera prims (looking down -z), the stage's up axis and metersPerUnit.

    Isaac Sim's default stage is Z up with ``metersPerUnit = 1``; a Y-up stage is turned by ``(x, y, z) ->
    (x, -z, y)``; ``metres_per_unit = 0.01`` for a centimetre stage. Read both from the stage
    (``UsdGeom.GetStageUpAxis``, ``UsdGeom.GetStageMetersPerUnit``).
    """
    if up_axis not in ("Y", "Z"):
        raise ConventionError(f"USD up axis must be 'Y' or 'Z', got {up_axis!r}")
    if isinstance(metres_per_unit, bool) or not isinstance(metres_per_unit, (int, float)):
        raise ConventionError(f"USD metres_per_unit must be a number, got {metres_per_unit!r}")
    world = IDENTITY if up_axis == "Z" else USD_Y_UP_TO_Z_UP
    return Convention(
        "usd", world, OPENGL_OPENCV_TO_CAMERA, float(metres_per_unit), "matrix", "horizontal",
        f"USD / Isaac Sim camera prim (x right, y up, looks down -z), stage {up_axis} up, {metres_per_unit} m per unit",
    )


CONVENTIONS: dict[str, Convention] = {
    c.name: c for c in (CANONICAL, ROS_OPTICAL, UNITY, UNITY_CAMERA_MATRIX, UNREAL, CARLA, OPENGL, usd(), ISAAC_WORLD, AIRSIM)
}
"""Every convention by name, with USD at its defaults (Z up, metres); :func:`get_convention` takes USD options."""


def get_convention(
    name: str, *, up_axis: Literal["Y", "Z"] | None = None, metres_per_unit: float | None = None
) -> Convention:
    """The convention called ``name``; ``up_axis`` and ``metres_per_unit`` apply to ``"usd"`` only."""
    if name not in CONVENTIONS:
        raise ConventionError(f"unknown convention {name!r}; known: {', '.join(sorted(CONVENTIONS))}")
    if name == "usd":
        return usd(up_axis or "Z", 1.0 if metres_per_unit is None else metres_per_unit)
    if up_axis is not None or metres_per_unit is not None:
        raise ConventionError(f"up_axis and metres_per_unit apply to the 'usd' convention only, not {name!r}")
    return CONVENTIONS[name]


def check_convention(convention: Convention, *, samples: int = 64, seed: int = 0) -> None:
    """Conformance check for a convention, yours included: raises :class:`ConventionError` naming what failed.

    Random canonical poses must survive ``from_canonical`` then ``to_canonical`` (to 1e-9 m and 1e-9 rad), and
    the engine pose must be of the declared form.
    """
    rng = np.random.default_rng(seed)
    for i in range(samples):
        q = rng.normal(size=4)
        c2w = _rigid(rotation_from_quaternion(Quaternion(*q)), rng.uniform(-50, 50, size=3))
        engine = convention.from_canonical(c2w)
        back = convention.to_canonical(engine)
        error = float(np.max(np.abs(back - c2w)))
        if error > 1e-9:
            raise ConventionError(
                f"convention {convention.name!r}: round trip of sample {i} is off by {error:.3g}; "
                f"is opencv_to_camera the inverse of what to_canonical expects? pose {c2w.tolist()}"
            )
