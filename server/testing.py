"""Helpers for testing and benchmarking against a real server: a zero-cost generator and a synthetic seed.

``EchoGenerator`` returns the memory's woven renders as the generated frames (and their depth), so a step costs
only memory work: what remains of a round trip is serving. ``wall_seed`` makes seed frames of a textured wall in a
Z-up world, as numpy triples the client sends.
"""

from __future__ import annotations

import numpy as np

from worldweave.bridge.generators.base import Condition, GenerationResult, Generator
from worldweave.sim_clients.conventions import CameraIntrinsics


class EchoGenerator(Generator):
    """Zero-cost generator: frames are the condition's renders (holes stay black, depth 0 there)."""

    name = "echo"
    max_frames = 64
    max_width = 1920
    max_height = 1080
    returns_depth = True

    def generate(self, condition: Condition) -> GenerationResult:
        return GenerationResult(
            frames=tuple(render.rgb for render in condition.renders),
            depths=tuple(render.depth for render in condition.renders),
        )


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """4x4 camera-to-world matrix (OpenCV camera, world Z up) of a camera at ``eye`` looking at ``target``."""
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, down, forward], axis=1)
    c2w[:3, 3] = eye
    return c2w


def wall_seed(
    width: int, height: int, *, distance_m: float = 3.0, fov_x_deg: float = 70.0, seed: int = 0
) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], CameraIntrinsics]:
    """One seed frame of a wall ``distance_m`` ahead, textured with coloured noise blocks, seen by a camera at
    (0, 0, 1.5) m looking along world +x. Returns ``([(rgb, depth_m, c2w)], intrinsics)``."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=((height + 7) // 8, (width + 7) // 8, 3), dtype=np.uint8)
    rgb = np.ascontiguousarray(np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)[:height, :width])
    intrinsics = CameraIntrinsics.from_fov(width, height, fov_x_deg=fov_x_deg)
    depth = np.full((height, width), distance_m, dtype=np.float32)
    c2w = look_at((0.0, 0.0, 1.5), (distance_m, 0.0, 1.5))
    return [(rgb, depth, c2w)], intrinsics


def yaw_poses(count: int, *, max_yaw_deg: float = 10.0) -> np.ndarray:
    """(count, 4, 4) camera-to-world poses at the wall seed's camera, turning left and right up to ``max_yaw_deg``."""
    yaws = np.radians(max_yaw_deg) * np.sin(np.linspace(0.0, 2.0 * np.pi, count, endpoint=False))
    return np.stack([look_at((0.0, 0.0, 1.5), (3.0 * np.cos(a), 3.0 * np.sin(a), 1.5)) for a in yaws])
