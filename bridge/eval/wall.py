"""A synthetic seed for tests and benchmarks against a real server: a textured wall in a Z-up world and poses that
look at it.

``wall_seed`` makes the seed frame as the numpy triple a client sends (``WorldClient.create_world``); ``yaw_poses``
turns the seed's camera left and right, so most of every view is the wall memory already holds.
"""

from __future__ import annotations

import numpy as np

from worldweave.proto.geometry import Intrinsics, Pose

EYE_M = (0.0, 0.0, 1.5)
"""The seed camera's centre, metres (world Z up)."""


def wall_seed(
    width: int, height: int, *, distance_m: float = 3.0, fov_x_deg: float = 70.0, seed: int = 0
) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], Intrinsics]:
    """One seed frame of a wall ``distance_m`` ahead, textured with coloured noise blocks, seen by a camera at
    (0, 0, 1.5) m looking along world +x. Returns ``([(rgb, depth_m, c2w)], intrinsics)``."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=((height + 7) // 8, (width + 7) // 8, 3), dtype=np.uint8)
    rgb = np.ascontiguousarray(np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)[:height, :width])
    intrinsics = Intrinsics.from_fov(width, height, fov_x_deg=fov_x_deg)
    depth = np.full((height, width), distance_m, dtype=np.float32)
    c2w = Pose.look_at(EYE_M, (distance_m, 0.0, EYE_M[2])).matrix
    return [(rgb, depth, c2w)], intrinsics


def yaw_poses(count: int, *, max_yaw_deg: float = 10.0) -> np.ndarray:
    """(count, 4, 4) camera-to-world poses at the wall seed's camera, turning left and right up to ``max_yaw_deg``."""
    yaws = np.radians(max_yaw_deg) * np.sin(np.linspace(0.0, 2.0 * np.pi, count, endpoint=False))
    return np.stack([Pose.look_at(EYE_M, (3.0 * np.cos(a), 3.0 * np.sin(a), EYE_M[2])).matrix for a in yaws])
