"""Camera trajectories for the benchmark: procedural ones made for a scene, and real ones loaded from files.

Every trajectory is a sequence of camera-to-world ``Pose``s (OpenCV camera axes, metres) in the scene's Z-up world.

Procedural (``make_trajectory(kind, scene, frames, seed=...)``):

* ``loop``: a closed loop that leaves the start view and comes back to it: one lap of an ellipse inscribed in the
  scene's first free-space box, looking along the direction of travel, then a slow dolly back and forth at the start
  so that several frames revisit it.
* ``look-around``: standing at the spawn point, a full 360° turn to the left and the same turn back.
* ``driving``: (street scenes) along the road ring with its four left turns, one lap and then on past the start
  again, every frame of the second pass at exactly the place of a first-pass frame (a revisit).
* ``random-walk``: a seeded smooth random walk with momentum inside the first free-space box, yaw wandering.

Real (``load_tum``, ``load_kitti``, ``load_realestate10k``; formats in the module docstrings of each loader) are
placed in a scene by ``fit_into_scene``, whose rule is stated there (re-orient mean camera up to +Z, heading to the
scene's start heading, scale only scale-free paths to a stated length, start at the spawn point, crop the longest
prefix that stays in free space).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from worldweave.bridge.eval.scenes import (
    STREET_ROAD_WIDTH_M,
    Scene,
    heading_pose,
    street_loop_half_m,
)
from worldweave.proto.errors import InvalidInputError, NotFoundError
from worldweave.proto.geometry import Pose, Quaternion

PITCH_DEG = 10.0
"""Procedural cameras look this many degrees below the horizon, so floors and roads are in view."""


@dataclass(frozen=True)
class Trajectory:
    """A named sequence of camera-to-world poses (OpenCV camera axes, world metres)."""

    name: str
    poses: tuple[Pose, ...]

    def __post_init__(self) -> None:
        if len(self.poses) == 0:
            raise InvalidInputError(f"trajectory {self.name!r} has no poses")
        object.__setattr__(self, "poses", tuple(self.poses))

    def __len__(self) -> int:
        return len(self.poses)


# ---------------------------------------------------------------------------------------------------------------
# Procedural trajectories
# ---------------------------------------------------------------------------------------------------------------


def _check_frames(frames: int, minimum: int) -> None:
    if not isinstance(frames, int) or frames < minimum:
        raise InvalidInputError(f"this trajectory needs at least {minimum} frames, got {frames!r}")


def closed_loop(scene: Scene, frames: int, *, settle_fraction: float = 0.25) -> Trajectory:
    """One lap of an ellipse in the scene's first free-space box, then a slow dolly at the start view.

    The ellipse's semi-axes are 80% of the box's half sizes (x, y), at the spawn height; the lap starts at the
    ellipse's -y vertex heading +x and turns left (anticlockwise), the camera looking along the direction of travel.
    The last ``settle_fraction`` of the frames dolly 0.15 m back and forth along the start heading, ending at the
    start pose, so they revisit the first frames.
    """
    _check_frames(frames, 8)
    lo, hi = scene.free_space[0]
    centre = (lo[:2] + hi[:2]) / 2
    ax, ay = 0.8 * (hi[0] - lo[0]) / 2, 0.8 * (hi[1] - lo[1]) / 2
    height = float(scene.start_position_m[2])
    lap = max(int(round(frames * (1 - settle_fraction))), 4)
    poses = []
    for i in range(lap):
        theta = 2 * math.pi * i / lap - math.pi / 2
        position = np.array([centre[0] + ax * math.cos(theta), centre[1] + ay * math.sin(theta), height])
        tangent = np.array([-ax * math.sin(theta), ay * math.cos(theta)])
        poses.append(heading_pose(position, math.atan2(tangent[1], tangent[0]), pitch_deg=PITCH_DEG))
    start = np.array([centre[0], centre[1] - ay, height])
    settle = frames - lap
    for k in range(1, settle + 1):
        offset = 0.15 * math.sin(2 * math.pi * k / settle)
        poses.append(heading_pose(start + np.array([offset, 0.0, 0.0]), 0.0, pitch_deg=PITCH_DEG))
    return Trajectory("loop", tuple(poses))


def look_around(scene: Scene, frames: int) -> Trajectory:
    """At the spawn point: yaw from the start heading through 360° to the left in ``frames // 2`` steps, then back."""
    _check_frames(frames, 4)
    out = frames // 2
    yaws = [2 * math.pi * i / out for i in range(out + 1)]
    yaws += yaws[-2::-1]
    yaws = yaws[:frames]
    poses = [heading_pose(scene.start_position_m, scene.start_heading_rad + yaw, pitch_deg=PITCH_DEG) for yaw in yaws]
    return Trajectory("look-around", tuple(poses))


def _ring_point(s: float, half_x: float, half_y: float, radius: float) -> tuple[np.ndarray, float]:
    """Point and heading at arclength ``s`` on a rounded rectangle (corner ``radius``) driven anticlockwise from
    the middle of its -y side, heading +x."""
    straight_x, straight_y = 2 * (half_x - radius), 2 * (half_y - radius)
    arc = math.pi / 2 * radius
    segments = [straight_x / 2, arc, straight_y, arc, straight_x, arc, straight_y, arc, straight_x / 2]
    s = s % sum(segments)
    corners = [(half_x - radius, -half_y + radius), (half_x - radius, half_y - radius),
               (-half_x + radius, half_y - radius), (-half_x + radius, -half_y + radius)]
    x, y, heading = 0.0, -half_y, 0.0
    for index, length in enumerate(segments):
        if s <= length or index == len(segments) - 1:
            if index % 2 == 0:  # straight, along the current heading
                return np.array([x + s * math.cos(heading), y + s * math.sin(heading)]), heading
            cx, cy = corners[index // 2]
            angle = heading - math.pi / 2 + s / radius
            return np.array([cx + radius * math.cos(angle), cy + radius * math.sin(angle)]), heading + s / radius
        if index % 2 == 0:
            x, y = x + length * math.cos(heading), y + length * math.sin(heading)
        else:
            heading += math.pi / 2
            cx, cy = corners[index // 2]
            x, y = cx + radius * math.cos(heading - math.pi / 2), cy + radius * math.sin(heading - math.pi / 2)
        s -= length
    raise AssertionError("unreachable: the last segment always returns")


def driving(scene: Scene, frames: int, *, revisit_fraction: float = 0.2, lane_offset_m: float = 1.75) -> Trajectory:
    """Drive the street's road ring anticlockwise (four left turns), in the right-hand lane.

    One lap takes ``frames (1 - revisit_fraction)`` frames; the rest drive past the start again. The step length is
    the lap length over that count, so the second pass lands exactly on first-pass positions.
    """
    _check_frames(frames, 8)
    if not scene.name.startswith("street"):
        raise InvalidInputError(f"driving needs a street scene, got {scene.name!r}")
    half_x, half_y = street_loop_half_m()
    # The right-hand lane of an anticlockwise lap lies outside the centre line.
    half_x, half_y = half_x + lane_offset_m, half_y + lane_offset_m
    radius = STREET_ROAD_WIDTH_M / 2 + lane_offset_m
    lap_length = 2 * (2 * (half_x - radius) + 2 * (half_y - radius)) + 2 * math.pi * radius
    lap = max(int(round(frames * (1 - revisit_fraction))), 4)
    height = float(scene.start_position_m[2])
    poses = []
    for i in range(frames):
        xy, heading = _ring_point(lap_length * i / lap, half_x, half_y, radius)
        poses.append(heading_pose(np.array([xy[0], xy[1], height]), heading, pitch_deg=PITCH_DEG / 2))
    return Trajectory("driving", tuple(poses))


def random_walk(scene: Scene, frames: int, *, seed: int = 0, step_m: float = 0.06, turn_deg: float = 4.0) -> Trajectory:
    """A seeded smooth random walk inside the scene's first free-space box (reflected at its walls).

    Each frame moves ``step_m`` metres along a direction that wanders with momentum, and the heading turns by a
    smoothed random amount of about ``turn_deg`` degrees.
    """
    _check_frames(frames, 1)
    rng = np.random.default_rng(seed)
    lo, hi = scene.free_space[0]
    margin = 0.1 * (hi - lo)
    lo, hi = lo + margin, hi - margin
    position = np.clip(scene.start_position_m.copy(), lo, hi)
    direction, heading, turn = scene.start_heading_rad, scene.start_heading_rad, 0.0
    poses = []
    for _ in range(frames):
        poses.append(heading_pose(position, heading, pitch_deg=PITCH_DEG))
        direction += rng.normal(0.0, 0.3)
        step = step_m * np.array([math.cos(direction), math.sin(direction), 0.0])
        nxt = position + step
        for axis in range(2):
            if not lo[axis] <= nxt[axis] <= hi[axis]:
                step[axis] = -step[axis]
                direction = math.atan2(step[1], step[0])
        position = np.clip(position + step, lo, hi)
        turn = 0.8 * turn + 0.2 * rng.normal(0.0, math.radians(turn_deg) * 2.5)
        heading += turn
    return Trajectory(f"random-walk-{seed}", tuple(poses))


TRAJECTORIES: dict[str, Callable[..., Trajectory]] = {
    "loop": lambda scene, frames, seed=0: closed_loop(scene, frames),
    "look-around": lambda scene, frames, seed=0: look_around(scene, frames),
    "driving": lambda scene, frames, seed=0: driving(scene, frames),
    "random-walk": lambda scene, frames, seed=0: random_walk(scene, frames, seed=seed),
}
"""Procedural trajectory makers by name: ``(scene, frames, seed=0) -> Trajectory``."""


def make_trajectory(kind: str, scene: Scene, frames: int, *, seed: int = 0) -> Trajectory:
    """The named procedural trajectory (``TRAJECTORIES``) in ``scene`` with ``frames`` poses."""
    if kind not in TRAJECTORIES:
        raise NotFoundError(f"unknown trajectory {kind!r}; choose from {sorted(TRAJECTORIES)}")
    return TRAJECTORIES[kind](scene, frames, seed=seed)


# ---------------------------------------------------------------------------------------------------------------
# Real trajectory files
# ---------------------------------------------------------------------------------------------------------------


def _numbers(path: Path, line_number: int, line: str, count: int, sep: str | None = None) -> np.ndarray:
    try:
        values = np.array([float(x) for x in line.replace(",", " ").split(sep)], dtype=np.float64)
    except ValueError as error:
        raise InvalidInputError(f"{path}:{line_number}: not numbers: {line.strip()[:80]!r} ({error})") from None
    if values.size != count:
        raise InvalidInputError(f"{path}:{line_number}: expected {count} values, got {values.size}")
    return values


def _data_lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise NotFoundError(f"trajectory file {path} does not exist")
    return [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip() and not line.startswith("#")]


def load_tum(path: str | Path) -> Trajectory:
    """TUM RGB-D ground truth: ``timestamp tx ty tz qx qy qz qw`` per line (``#`` comments).

    Camera-to-world, the colour camera's optical frame (OpenCV axes), metres, mocap world (not re-oriented here).
    """
    path = Path(path)
    poses = []
    for n, line in _data_lines(path):
        _, tx, ty, tz, qx, qy, qz, qw = _numbers(path, n, line, 8)
        poses.append(Pose.from_position_quaternion(np.array([tx, ty, tz]), Quaternion(qw=qw, qx=qx, qy=qy, qz=qz)))
    return Trajectory(path.stem, tuple(poses))


def save_tum(path: str | Path, poses: Sequence[Pose], timestamps_s: Sequence[float]) -> None:
    """Write camera-to-world poses as TUM lines ``timestamp tx ty tz qx qy qz qw`` (the format ``load_tum`` reads)."""
    if len(poses) != len(timestamps_s):
        raise InvalidInputError(f"{len(poses)} poses but {len(timestamps_s)} timestamps")
    lines = ["# timestamp tx ty tz qx qy qz qw (camera-to-world, OpenCV camera, metres)"]
    for stamp, pose in zip(timestamps_s, poses):
        q, p = pose.quaternion, pose.position
        lines.append(f"{stamp:.6f} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f} {q.qx:.8f} {q.qy:.8f} {q.qz:.8f} {q.qw:.8f}")
    Path(path).write_text("\n".join(lines) + "\n")


def load_kitti(path: str | Path) -> Trajectory:
    """KITTI odometry poses: 12 numbers per line, a 3x4 row-major cam0-to-world matrix (OpenCV axes, metres; the
    world is cam0 at the first frame, so world y points down)."""
    path = Path(path)
    poses = [Pose.from_matrix(_numbers(path, n, line, 12).reshape(3, 4)) for n, line in _data_lines(path)]
    return Trajectory(path.stem, tuple(poses))


def load_realestate10k(path: str | Path) -> Trajectory:
    """A RealEstate10K camera file: line 1 the video URL, then per frame ``t_us fx fy cx cy k1 k2`` (normalised
    intrinsics, ignored here: the benchmark renders at its own intrinsics) and a 3x4 row-major **world-to-camera**
    matrix (OpenCV axes). Scale-free: ``fit_into_scene`` scales it to a stated path length."""
    path = Path(path)
    lines = _data_lines(path)
    if lines and not lines[0][1].split()[0].replace(".", "", 1).isdigit():
        lines = lines[1:]  # the URL line
    poses = []
    for n, line in lines:
        values = _numbers(path, n, line, 19)
        T_cam_world = values[7:].reshape(3, 4)
        rotation = T_cam_world[:, :3].T
        poses.append(Pose(rotation, -rotation @ T_cam_world[:, 3]))
    return Trajectory(path.stem, tuple(poses))


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector ``a`` to unit vector ``b`` (Rodrigues)."""
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -1 + 1e-9:  # opposite: half a turn about any axis perpendicular to a
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def path_length_m(poses: Sequence[Pose]) -> float:
    """Sum of the distances between consecutive camera centres (in the poses' units)."""
    centres = np.stack([p.position for p in poses])
    return float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum())


def fit_into_scene(
    trajectory: Trajectory,
    scene: Scene,
    *,
    stride: int = 1,
    max_frames: int | None = None,
    scale_to_length_m: float | None = None,
) -> Trajectory:
    """Place a real trajectory in ``scene`` by this rule:

    1. **Subsample**: keep every ``stride``-th pose, starting with the first.
    2. **Re-orient**: rotate the world so the mean camera "up" (camera -y, OpenCV) becomes +Z (smallest rotation),
       then about +Z so the first camera's forward, projected on the ground, points along the scene's start heading.
    3. **Scale**: only scale-free paths (RealEstate10K) are scaled, to a path length of ``scale_to_length_m``; metric
       paths (TUM, KITTI) keep their metres (leave ``scale_to_length_m`` as ``None``).
    4. **Place**: translate so the first camera centre is the scene's spawn point.
    5. **Crop**: keep the longest prefix whose camera centres stay in the scene's free space, at most ``max_frames``.

    Raises ``InvalidInputError`` when not even the first pose fits.
    """
    if stride < 1:
        raise InvalidInputError(f"stride must be >= 1, got {stride}")
    poses = list(trajectory.poses[::stride])
    up = np.mean([-p.rotation[:, 1] for p in poses], axis=0)
    if np.linalg.norm(up) < 1e-6:
        raise InvalidInputError(f"trajectory {trajectory.name!r} has no mean up direction (cameras point every way)")
    align = _rotation_between(up / np.linalg.norm(up), np.array([0.0, 0.0, 1.0]))
    forward = align @ poses[0].forward
    if math.hypot(forward[0], forward[1]) < 1e-6:
        raise InvalidInputError(f"trajectory {trajectory.name!r} starts looking straight up or down; no heading")
    yaw = scene.start_heading_rad - math.atan2(forward[1], forward[0])
    c, s = math.cos(yaw), math.sin(yaw)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ align
    scale = 1.0
    if scale_to_length_m is not None:
        length = path_length_m(poses)
        if length <= 0:
            raise InvalidInputError(f"trajectory {trajectory.name!r} does not move; it cannot be scaled")
        scale = scale_to_length_m / length
    origin = poses[0].position
    placed = []
    for pose in poses:
        position = scale * rotation @ (pose.position - origin) + scene.start_position_m
        if not scene.is_free(position[None])[0] or (max_frames is not None and len(placed) >= max_frames):
            break
        placed.append(Pose(rotation @ pose.rotation, position))
    if not placed:
        raise InvalidInputError(f"trajectory {trajectory.name!r} does not start in {scene.name}'s free space")
    return Trajectory(trajectory.name, tuple(placed))
