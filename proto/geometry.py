"""Camera geometry on both sides of the wire: the one ``Pose``, ``Quaternion`` and ``Intrinsics``.

Conventions, everywhere in worldweave (``docs/conventions.md`` has every engine's):

* A pose is **camera-to-world** (``T_world_cam``), metres. The camera frame is **OpenCV optical**: x right,
  y down, z forward. ``points_world = R @ points_cam + t``. The world is right-handed, Z up.
* Quaternions have **named** components ``qw, qx, qy, qz`` (Hamilton, scalar first). Never pass an unnamed
  4-tuple.
* Pixel ``(u, v)`` has its centre at integer coordinates: ``u = fx * x / z + cx``, ``v = fy * y / z + cy``.
  Splatting rounds to the nearest pixel.

This module is part of the wire layer: it imports numpy only. Every check raises an ``InvalidInputError``
subclass naming the bad value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from worldweave.proto.errors import InvalidIntrinsicsError, InvalidPoseError

ORTHONORMAL_TOLERANCE = 1e-3
"""Largest allowed ``|R^T R - I|`` entry and ``|det R - 1|`` for a rotation to count as orthonormal (real pose
files, e.g. KinectFusion output, carry ~2e-4); accepted rotations are re-orthonormalised."""
EXACT_ROTATION_TOLERANCE = 1e-12
"""Largest ``|R^T R - I|`` entry of an accepted rotation that ``Pose`` stores as given; above it, the nearest
rotation (by SVD) is stored instead."""
DECISION_MARGIN = 0.01
"""How close, relative to a threshold above, ``|R^T R - I|`` or ``|det R - 1|`` may come to it before ``Pose`` leaves
its plain-float check to the numpy one. For a matrix near orthonormal, summation order and fused multiply-adds move
``R^T R`` by under 1e-15 and the determinant by under 1e-13 (1e-14 and 1e-5 are 1% of the thresholds), so outside
this band both checks decide alike."""


class Quaternion(NamedTuple):
    """Unit quaternion, scalar first, with named fields (Hamilton convention)."""

    qw: float
    qx: float
    qy: float
    qz: float


def _check_finite(name: str, values: np.ndarray) -> None:
    if not all(map(math.isfinite, values.ravel().tolist())):  # plain floats: cheaper than numpy for a few values
        bad = np.argwhere(~np.isfinite(values))[0]
        raise InvalidPoseError(f"{name} has a non-finite value {float(values[tuple(bad)])} at index {tuple(int(i) for i in bad)}")


def rotation_from_quaternion(q: Quaternion) -> np.ndarray:
    """3x3 rotation matrix from a quaternion; the quaternion is normalised first (it must not be zero)."""
    array = np.array([q.qw, q.qx, q.qy, q.qz], dtype=np.float64)
    values = array.tolist()  # plain floats from here: cheaper than numpy's per-call cost for a few values
    if not all(map(math.isfinite, values)):
        _check_finite("quaternion (qw, qx, qy, qz)", array)  # raises, naming the value
    norm = math.sqrt(array.dot(array))  # as np.linalg.norm computes it, bit for bit
    if norm < 1e-8:
        raise InvalidPoseError(f"quaternion (qw={q.qw}, qx={q.qx}, qy={q.qy}, qz={q.qz}) has zero length")
    w, x, y, z = (v / norm for v in values)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotations_from_quaternions(quaternions_wxyz: np.ndarray, name: str = "quaternions") -> np.ndarray:
    """(N, 4) quaternions, columns qw, qx, qy, qz (each normalised here) -> (N, 3, 3) rotations: the batch form of
    :func:`rotation_from_quaternion`. A zero or non-finite row raises ``InvalidPoseError`` naming its index."""
    q = np.asarray(quaternions_wxyz, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 4:
        raise InvalidPoseError(f"{name} must have shape (N, 4) (qw, qx, qy, qz), got {q.shape}")
    bad = ~np.isfinite(q).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidPoseError(f"{name}[{i}] = {q[i].tolist()} has a non-finite value")
    norm = np.linalg.norm(q, axis=1)
    if len(q) and norm.min() < 1e-8:
        i = int(np.argmin(norm))
        raise InvalidPoseError(f"{name}[{i}] = {q[i].tolist()} has zero length")
    w, x, y, z = (q / norm[:, None] if len(q) else q).T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=-1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=-1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1),
        ],
        axis=1,
    )


def quaternion_from_rotation(rotation: np.ndarray) -> Quaternion:
    """Quaternion of a 3x3 rotation matrix, with ``qw >= 0`` (Shepperd's method, numerically stable)."""
    m = np.asarray(rotation, dtype=np.float64).tolist()  # plain floats: cheaper than numpy's per-item cost
    trace = m[0][0] + m[1][1] + m[2][2]
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        w, x, y, z = 0.25 * s, (m[2][1] - m[1][2]) / s, (m[0][2] - m[2][0]) / s, (m[1][0] - m[0][1]) / s
    elif m[0][0] > m[1][1] and m[0][0] > m[2][2]:
        s = 2.0 * math.sqrt(1.0 + m[0][0] - m[1][1] - m[2][2])
        w, x, y, z = (m[2][1] - m[1][2]) / s, 0.25 * s, (m[0][1] + m[1][0]) / s, (m[0][2] + m[2][0]) / s
    elif m[1][1] > m[2][2]:
        s = 2.0 * math.sqrt(1.0 + m[1][1] - m[0][0] - m[2][2])
        w, x, y, z = (m[0][2] - m[2][0]) / s, (m[0][1] + m[1][0]) / s, 0.25 * s, (m[1][2] + m[2][1]) / s
    else:
        s = 2.0 * math.sqrt(1.0 + m[2][2] - m[0][0] - m[1][1])
        w, x, y, z = (m[1][0] - m[0][1]) / s, (m[0][2] + m[2][0]) / s, (m[1][2] + m[2][1]) / s, 0.25 * s
    if w < 0:
        w, x, y, z = -w, -x, -y, -z
    return Quaternion(float(w), float(x), float(y), float(z))


def check_rotation(rotation: np.ndarray, name: str = "rotation") -> None:
    """Raise ``InvalidPoseError`` unless ``rotation`` is a finite, orthonormal, right-handed 3x3 matrix."""
    rotation = np.asarray(rotation, dtype=np.float64)
    if rotation.shape != (3, 3):
        raise InvalidPoseError(f"{name} must be 3x3, got shape {rotation.shape}")
    _check_finite(name, rotation)
    error = float(np.max(np.abs(rotation.T @ rotation - np.eye(3))))
    if error > ORTHONORMAL_TOLERANCE:
        raise InvalidPoseError(
            f"{name} is not orthonormal: max |R^T R - I| = {error:.3g} (tolerance {ORTHONORMAL_TOLERANCE}); rows {rotation.tolist()}"
        )
    det = float(np.linalg.det(rotation))
    if abs(det - 1.0) > ORTHONORMAL_TOLERANCE:
        raise InvalidPoseError(f"{name} has determinant {det:.6g}, not +1 (a reflection, not a rotation)")


def orthonormal_error_and_det(values: list[float]) -> tuple[float, float]:
    """(max ``|R^T R - I|``, ``det R``) of a 3x3 ``R`` given as its 9 values row by row (``R.ravel().tolist()``),
    in plain float maths: for one small matrix several times cheaper than numpy's per-call cost."""
    a, b, c, d, e, f, g, h, i = values  # rows (a, b, c), (d, e, f), (g, h, i)
    error = max(
        abs(a * a + d * d + g * g - 1.0), abs(b * b + e * e + h * h - 1.0), abs(c * c + f * f + i * i - 1.0),
        abs(a * b + d * e + g * h), abs(a * c + d * f + g * i), abs(b * c + e * f + h * i),
    )
    return error, a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)


def _clearly_rigid(rotation: np.ndarray, position: np.ndarray) -> bool | None:
    """``Pose``'s checks in plain float math, cheaper than numpy's per-call cost for a 3x3: for a finite (3, 3)
    rotation, orthonormal and right-handed within ``ORTHONORMAL_TOLERANCE`` by ``DECISION_MARGIN``, and a finite (3,)
    position, whether the rotation is to be re-orthonormalised (max ``|R^T R - I|`` over
    ``EXACT_ROTATION_TOLERANCE``). None for anything else (a check fails, or a value lies within the margin of a
    threshold): the numpy checks then decide, exactly as they always have, and name the bad value."""
    if rotation.shape != (3, 3) or position.shape != (3,):
        return None
    values = rotation.ravel().tolist()
    if not all(map(math.isfinite, values + position.tolist())):
        return None
    # An off-diagonal NaN (inf - inf) needs an entry over 1e154, whose column's diagonal term is then inf: the
    # maximum is inf or NaN, and both fail the comparison below.
    error, det = orthonormal_error_and_det(values)
    limit = ORTHONORMAL_TOLERANCE * (1.0 - DECISION_MARGIN)
    if not (error <= limit and abs(det - 1.0) <= limit):
        return None
    if abs(error - EXACT_ROTATION_TOLERANCE) <= DECISION_MARGIN * EXACT_ROTATION_TOLERANCE:
        return None
    return error > EXACT_ROTATION_TOLERANCE


def _last_row_error(row: list[float]) -> float:
    """Largest ``|row - [0, 0, 0, 1]|`` of a 4x4 pose matrix's last row (finite values)."""
    return max(abs(row[0]), abs(row[1]), abs(row[2]), abs(row[3] - 1.0))


@dataclass(frozen=True, eq=False)
class Pose:
    """A camera-to-world rigid transform ``T_world_cam`` (OpenCV camera axes, metres).

    Build one with :meth:`from_matrix`, :meth:`from_position_quaternion` or :meth:`look_at`; each validates
    (finite values, orthonormal right-handed rotation) and raises ``InvalidPoseError`` naming the bad value.
    The stored rotation is re-orthonormalised, so composing many poses does not drift.
    """

    rotation: np.ndarray
    """3x3 float64, columns are the camera's x (right), y (down), z (forward) axes in world coordinates."""
    position: np.ndarray
    """(3,) float64, the camera centre in world coordinates, metres."""

    def __post_init__(self) -> None:
        rotation = np.array(self.rotation, dtype=np.float64)
        position = np.array(self.position, dtype=np.float64).reshape(-1)
        inexact = _clearly_rigid(rotation, position)
        if inexact is None:  # invalid, or near a threshold: numpy's checks decide and name the bad value
            check_rotation(rotation)
            if position.shape != (3,):
                raise InvalidPoseError(f"position must have 3 values, got {position.shape[0]}")
            _check_finite("position", position)
            inexact = np.max(np.abs(rotation.T @ rotation - np.eye(3))) > EXACT_ROTATION_TOLERANCE
        if inexact:
            u, _, vt = np.linalg.svd(rotation)
            rotation = u @ vt
        rotation.flags.writeable = False
        position.flags.writeable = False
        object.__setattr__(self, "rotation", rotation)
        object.__setattr__(self, "position", position)

    @classmethod
    def identity(cls) -> Pose:
        """The camera at the world origin, looking along world +z."""
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> Pose:
        """From a 4x4 (or 3x4) camera-to-world matrix; a 4x4 must end in the row ``[0, 0, 0, 1]``."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape not in ((4, 4), (3, 4)):
            raise InvalidPoseError(f"a pose matrix must be 4x4 or 3x4, got shape {m.shape}")
        _check_finite("pose matrix", m)
        if m.shape == (4, 4) and _last_row_error(m[3].tolist()) > ORTHONORMAL_TOLERANCE:
            raise InvalidPoseError(f"the last row of a 4x4 pose must be [0, 0, 0, 1], got {m[3].tolist()}")
        return cls(m[:3, :3], m[:3, 3])

    @classmethod
    def from_position_quaternion(cls, position: np.ndarray, quaternion: Quaternion) -> Pose:
        """From a camera centre (metres, world) and a camera-to-world rotation quaternion (normalised here)."""
        return cls(rotation_from_quaternion(quaternion), position)

    @classmethod
    def look_at(cls, eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0)) -> Pose:
        """A camera at ``eye`` looking at ``target``, image "up" as close to world ``up`` as possible.

        World is Z up by default. Raises when ``eye == target`` or the view is parallel to ``up``.
        """
        eye = np.asarray(eye, dtype=np.float64)
        forward = np.asarray(target, dtype=np.float64) - eye
        if np.linalg.norm(forward) < 1e-9:
            raise InvalidPoseError(f"look_at: eye {eye.tolist()} and target coincide")
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, np.asarray(up, dtype=np.float64))
        if np.linalg.norm(right) < 1e-9:
            raise InvalidPoseError(f"look_at: view direction {forward.tolist()} is parallel to up {list(up)}")
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        return cls(np.stack([right, down, forward], axis=1), eye)

    @property
    def matrix(self) -> np.ndarray:
        """4x4 float64 camera-to-world matrix ``T_world_cam`` (a new array)."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.position
        return m

    @property
    def quaternion(self) -> Quaternion:
        """Camera-to-world rotation as a named quaternion, ``qw >= 0``."""
        return quaternion_from_rotation(self.rotation)

    @property
    def forward(self) -> np.ndarray:
        """Unit viewing direction (camera +z) in world coordinates."""
        return self.rotation[:, 2].copy()

    def inverse_matrix(self) -> np.ndarray:
        """4x4 world-to-camera matrix ``T_cam_world``."""
        m = np.eye(4)
        m[:3, :3] = self.rotation.T
        m[:3, 3] = -self.rotation.T @ self.position
        return m

    def compose(self, other: Pose) -> Pose:
        """``self @ other``: ``other`` expressed in this pose's frame, mapped to world."""
        return Pose(self.rotation @ other.rotation, self.rotation @ other.position + self.position)

    def cam_to_world(self, points_cam: np.ndarray) -> np.ndarray:
        """Map (N, 3) camera-frame points to world coordinates."""
        return np.asarray(points_cam) @ self.rotation.T + self.position

    def world_to_cam(self, points_world: np.ndarray) -> np.ndarray:
        """Map (N, 3) world points to this camera's frame."""
        return (np.asarray(points_world) - self.position) @ self.rotation

    def distance_to(self, other: Pose) -> tuple[float, float]:
        """(centre distance in metres, angle between viewing directions in degrees)."""
        distance = float(np.linalg.norm(self.position - other.position))
        cos = float(np.clip(np.dot(self.forward, other.forward), -1.0, 1.0))
        return distance, math.degrees(math.acos(cos))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pose):
            return NotImplemented
        return bool(np.array_equal(self.rotation, other.rotation) and np.array_equal(self.position, other.position))

    def __hash__(self) -> int:
        return hash((self.rotation.tobytes(), self.position.tobytes()))

    def __repr__(self) -> str:
        q = self.quaternion
        p = self.position
        return (
            f"Pose(position=({p[0]:.4f}, {p[1]:.4f}, {p[2]:.4f}), "
            f"qw={q.qw:.5f}, qx={q.qx:.5f}, qy={q.qy:.5f}, qz={q.qz:.5f})"
        )


MIN_FOCAL_IMAGES = 1e-3
"""Smallest focal length accepted, in image sizes: ``fx >= 1e-3 * width`` and ``fy >= 1e-3 * height`` pixels (a field
of view under 179.9 degrees). Relative, so that a valid camera stays valid at any resolution (``scaled``)."""
MAX_FOCAL_PX = 1e7
"""Largest focal length ``fx``, ``fy`` accepted, pixels (a 1-degree field of view across 16384 pixels is ~9.4e5)."""
MAX_IMAGE_SIDE_PX = 16384
"""Largest image ``width`` or ``height``, pixels."""
PRINCIPAL_POINT_MARGIN = 1.0
"""How far the principal point may lie beyond the image's edges, in image sizes: ``-width <= cx + 0.5 <= 2 * width``
(``cx + 0.5`` is measured from the image's left edge), likewise ``cy`` with ``height``. Off-centre crops and shifted
lenses fit; a wrong unit does not."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels for an image of ``width`` x ``height``; pixel ``(u, v)`` has its centre at
    integer coordinates (OpenCV), so a camera with a centred principal point has ``cx = (width - 1) / 2``.

    Validated up front (``InvalidIntrinsicsError`` naming the value): ``width``, ``height`` integers in 1 ..
    ``MAX_IMAGE_SIDE_PX`` (16384) pixels; ``fx`` within ``1e-3 * width`` .. ``1e7`` pixels and ``fy`` within
    ``1e-3 * height`` .. ``1e7`` (``MIN_FOCAL_IMAGES``, ``MAX_FOCAL_PX``); the principal point within one image size
    beyond the image's edges, ``-width - 0.5 <= cx <= 2 * width - 0.5`` and likewise ``cy`` with ``height``
    (``PRINCIPAL_POINT_MARGIN``). The ranges scale with the image, so ``scaled`` keeps a camera valid."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("fx", "fy", "cx", "cy"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
                raise InvalidIntrinsicsError(f"intrinsics {name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise InvalidIntrinsicsError(f"intrinsics {name} must be a positive integer, got {value!r}")
            if value > MAX_IMAGE_SIDE_PX:
                raise InvalidIntrinsicsError(f"intrinsics {name} {value} is over the largest image side, {MAX_IMAGE_SIDE_PX} px")
            object.__setattr__(self, name, int(value))
        if self.fx <= 0 or self.fy <= 0:
            raise InvalidIntrinsicsError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        for name, size in (("fx", self.width), ("fy", self.height)):
            value, smallest = getattr(self, name), MIN_FOCAL_IMAGES * size
            if not smallest <= value <= MAX_FOCAL_PX:
                raise InvalidIntrinsicsError(
                    f"intrinsics {name} = {value!r} px is outside {smallest:g}..{MAX_FOCAL_PX:g} px for an image {size} px "
                    "across (focal lengths are in pixels: focal_mm / sensor_width_mm * width_px)"
                )
        for name, size in (("cx", self.width), ("cy", self.height)):
            value, margin = getattr(self, name), PRINCIPAL_POINT_MARGIN * size
            if not -margin <= value + 0.5 <= size + margin:
                raise InvalidIntrinsicsError(
                    f"intrinsics {name} = {value!r} px is outside {-margin - 0.5:g}..{size + margin - 0.5:g} px, more "
                    f"than {PRINCIPAL_POINT_MARGIN:g} image size beyond an image {size} px across (pixels, not normalised)"
                )

    @classmethod
    def from_fov(
        cls, width: int, height: int, *, fov_x_deg: float | None = None, fov_y_deg: float | None = None
    ) -> Intrinsics:
        """Square pixels and a centred principal point from one field of view in degrees.

        Give exactly one: ``fov_x_deg`` (horizontal: Unreal's ``FOVAngle``, CARLA's ``fov``, AirSim's
        ``FOV_Degrees``) or ``fov_y_deg`` (vertical: Unity's ``Camera.fieldOfView``).
        """
        if (fov_x_deg is None) == (fov_y_deg is None):
            raise InvalidIntrinsicsError("give exactly one of fov_x_deg (horizontal) or fov_y_deg (vertical)")
        fov, extent = (fov_x_deg, width) if fov_x_deg is not None else (fov_y_deg, height)
        if isinstance(fov, bool) or not isinstance(fov, (int, float, np.number)) or not (0.0 < fov < 180.0):
            raise InvalidIntrinsicsError(f"field of view must be a number in (0, 180) degrees, got {fov!r}")
        if isinstance(extent, bool) or not isinstance(extent, (int, np.integer)) or extent <= 0:
            raise InvalidIntrinsicsError(f"image size must be positive integers, got {width!r} x {height!r}")
        focal = 0.5 * extent / math.tan(math.radians(fov) / 2.0)
        return cls(focal, focal, (width - 1) / 2.0, (height - 1) / 2.0, width, height)

    @classmethod
    def from_usd_camera(cls, width: int, height: int, *, focal_length: float, horizontal_aperture: float) -> Intrinsics:
        """From a USD camera's ``focalLength`` and ``horizontalAperture`` (same unit, e.g. mm): square pixels,
        ``fx = focal_length / horizontal_aperture * width``, principal point centred (aperture offsets 0)."""
        for name, value in (("focal_length", focal_length), ("horizontal_aperture", horizontal_aperture)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise InvalidIntrinsicsError(f"USD camera {name} must be a positive number, got {value!r}")
        focal = focal_length / horizontal_aperture * width
        return cls(focal, focal, (width - 1) / 2.0, (height - 1) / 2.0, width, height)

    @property
    def matrix(self) -> np.ndarray:
        """3x3 calibration matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width), the shape of an image of this camera."""
        return self.height, self.width

    @property
    def fov_x_deg(self) -> float:
        """Horizontal field of view in degrees (what Unreal, CARLA and AirSim take)."""
        return math.degrees(2.0 * math.atan(0.5 * self.width / self.fx))

    @property
    def fov_y_deg(self) -> float:
        """Vertical field of view in degrees (what Unity's ``Camera.fieldOfView`` takes)."""
        return math.degrees(2.0 * math.atan(0.5 * self.height / self.fy))

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera at another resolution (pixel centres stay consistent: ``c' = (c + 0.5) s - 0.5``)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, width, height
        )

    def project(self, points_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) camera-frame points -> (N, 2) pixel coordinates ``(u, v)`` (float) and (N,) depth ``z``.

        Points with ``z <= 0`` get meaningless ``uv``; callers mask them with ``z > 0``.
        """
        points_cam = np.asarray(points_cam)
        z = points_cam[:, 2]
        safe_z = np.where(z > 0, z, np.ones_like(z))
        u = self.fx * points_cam[:, 0] / safe_z + self.cx
        v = self.fy * points_cam[:, 1] / safe_z + self.cy
        return np.stack([u, v], axis=1), z

    def pixel_rays(self, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """(H, W, 3) camera-frame ray directions through integer pixel centres, with ``z = 1``."""
        v, u = np.meshgrid(np.arange(self.height, dtype=dtype), np.arange(self.width, dtype=dtype), indexing="ij")
        return np.stack([(u - self.cx) / self.fx, (v - self.cy) / self.fy, np.ones_like(u)], axis=-1)

    def backproject(self, depth: np.ndarray) -> np.ndarray:
        """(H, W) depth in metres along the optical axis -> (H, W, 3) camera-frame points (0 depth -> origin),
        in the depth's float dtype."""
        depth = np.asarray(depth)
        if tuple(depth.shape) != self.shape:
            raise InvalidIntrinsicsError(f"depth of shape {tuple(depth.shape)} does not match intrinsics {self.shape}")
        return self.pixel_rays(depth.dtype) * depth[..., None]
