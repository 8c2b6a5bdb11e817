"""What the viewer draws, as pure numpy: which voxels to show, their colours, the camera that frames a cloud, and
conversions between viser's camera and the wire's (pose, intrinsics).

Frames: world Z up, metres; cameras OpenCV optical (x right, y down, z forward), camera-to-world, the same
convention as viser's camera and frustums, so poses pass between them unchanged.
"""

from __future__ import annotations

import math

import numpy as np

from worldweave.proto.geometry import Intrinsics, Quaternion, quaternion_from_rotation, rotation_from_quaternion

DEFAULT_MAX_POINTS = 200_000
"""Most points the viewer sends to a browser per world; bigger clouds are thinned to a stable subset."""
COLOR_MODES = ("rgb", "source", "height", "confidence")
"""How points are coloured: their RGB, their source (seed / generated / inserted), their height (Z), their
confidence (how sure the generator was of the depth that made them)."""
SOURCE_COLORS = np.array([[66, 133, 244], [255, 153, 0], [52, 168, 83]], dtype=np.uint8)
"""RGB of each voxel source flag: 0 seed (blue), 1 generated (orange), 2 inserted (green)."""
_RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float32)
"""Viridis at five stops: low -> high."""
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def stable_subset(keys: np.ndarray, max_points: int) -> np.ndarray:
    """Row indices of at most ~``max_points`` of the voxels ``keys`` (int64 (N,)), chosen by a hash of each key, so a
    voxel shown stays shown while the cloud grows or shrinks a little (no flicker between versions). All rows when
    ``N <= max_points``."""
    if len(keys) <= max_points:
        return np.arange(len(keys))
    mixed = keys.astype(np.uint64) * _GOLDEN
    mixed ^= mixed >> np.uint64(31)
    mixed *= _GOLDEN
    uniform = (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.flatnonzero(uniform < max_points / len(keys))


def point_size_m(voxel_size_m: float, shown: int, total: int) -> float:
    """Screen point size, metres: one voxel edge, grown by sqrt(total / shown) for a thinned cloud, so a surface
    (points spread over 2D) still looks closed."""
    if shown == 0 or total <= shown:
        return voxel_size_m
    return voxel_size_m * math.sqrt(total / shown)


def ramp(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """uint8 (N, 3) colours of ``values`` on a viridis ramp from ``low`` to ``high`` (clipped)."""
    t = np.clip((values - low) / max(high - low, 1e-9), 0.0, 1.0) * (len(_RAMP) - 1)
    index = np.minimum(t.astype(np.int64), len(_RAMP) - 2)
    frac = (t - index)[:, None]
    return (_RAMP[index] * (1.0 - frac) + _RAMP[index + 1] * frac).round().astype(np.uint8)


def point_colors(
    mode: str,
    colors: np.ndarray,
    flags: np.ndarray,
    positions_m: np.ndarray,
    confidence: np.ndarray,
) -> np.ndarray:
    """uint8 (N, 3) display colours of N voxels in ``mode`` (one of ``COLOR_MODES``): ``colors`` uint8 (N, 3) as
    they are; ``flags`` uint8 (N,) by ``SOURCE_COLORS``; ``positions_m`` float32 (N, 3) by Z between its 2nd and
    98th percentile; ``confidence`` float32 (N,) in [0, 1] on the same ramp (0 low, 1 high; NaN, from a server that
    sends none, as 0)."""
    if mode == "rgb":
        return colors
    if mode == "source":
        return SOURCE_COLORS[np.minimum(flags, len(SOURCE_COLORS) - 1)]
    if mode == "height":
        if not len(positions_m):
            return colors
        low, high = np.percentile(positions_m[:, 2], [2.0, 98.0])
        return ramp(positions_m[:, 2], float(low), float(high))
    if mode == "confidence":
        return ramp(np.nan_to_num(confidence, nan=0.0), 0.0, 1.0)
    raise ValueError(f"colour mode must be one of {COLOR_MODES}, got {mode!r}")


def framing(points_m: np.ndarray, fov_y_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """``(eye_m, target_m)`` of a camera that sees the whole cloud ``points_m`` (N >= 1, world metres): the target
    is the cloud's median, the camera looks along the cloud's thinnest principal axis (a wall's or a floor's
    normal), from the side of the world origin (where seed cameras usually stand) or from above for a floor, raised
    a little, and far enough back for a ``fov_y_rad`` vertical field of view."""
    target = np.median(points_m, axis=0)
    centred = points_m - target
    _, _, axes = np.linalg.svd(centred[:: max(1, len(centred) // 20_000)], full_matrices=False)
    normal = axes[-1]
    if abs(normal[2]) > 0.7:
        normal = normal * np.sign(normal[2])
    elif np.dot(-target, normal) < 0:
        normal = -normal
    direction = normal + np.array([0.0, 0.0, 0.35])
    direction /= np.linalg.norm(direction)
    radius = float(np.percentile(np.linalg.norm(centred, axis=1), 95)) or 1.0
    distance = 1.4 * radius / math.tan(fov_y_rad / 2.0)
    return target + direction * distance, target


def camera_c2w(wxyz: np.ndarray, position_m: np.ndarray) -> np.ndarray:
    """The 4x4 camera-to-world matrix (OpenCV camera) of a viser camera's ``wxyz`` and ``position`` (metres)."""
    c2w = np.eye(4)
    c2w[:3, :3] = rotation_from_quaternion(Quaternion(*(float(v) for v in wxyz)))
    c2w[:3, 3] = position_m
    return c2w


def wxyz_of(c2w: np.ndarray) -> np.ndarray:
    """The ``wxyz`` quaternion (viser's order) of a 4x4 camera-to-world matrix's rotation."""
    q = quaternion_from_rotation(np.asarray(c2w)[:3, :3])
    return np.array([q.qw, q.qx, q.qy, q.qz])


def camera_intrinsics(fov_y_rad: float, aspect: float, width: int) -> Intrinsics:
    """Intrinsics of an image ``width`` pixels wide with the browser camera's vertical field of view (radians) and
    aspect ratio (width / height); the height is rounded to a multiple of 16 (what chunked generators want)."""
    height = max(16, int(round(width / aspect / 16.0)) * 16)
    return Intrinsics.from_fov(width, height, fov_y_deg=math.degrees(fov_y_rad))


def side_by_side(left: np.ndarray, right: np.ndarray, gap_px: int = 4) -> np.ndarray:
    """Two uint8 (H, W, 3) images next to each other, a white gap between; the shorter one is padded (black)."""
    height = max(left.shape[0], right.shape[0])

    def pad(image: np.ndarray) -> np.ndarray:
        return np.pad(image, ((0, height - image.shape[0]), (0, 0), (0, 0)))

    gap = np.full((height, gap_px, 3), 255, dtype=np.uint8)
    return np.concatenate([pad(left), gap, pad(right)], axis=1)
