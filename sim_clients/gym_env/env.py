"""``WorldEnv``: a gymnasium environment in which an agent flies a camera through a generated world.

Each episode starts from a seed world on a worldweave server, seeded by ``seed_fn`` (default: a procedural room made
in numpy, ``room.py``): the world is built once and checkpointed, and each ``reset`` restores that checkpoint (cheap,
``RestoreWorld``) rather than building it again; ``reset(seed=...)`` builds a new seed world. ``fork``, ``checkpoint``
and ``restore`` branch and rewind an episode (tree search), and ``vector.WorldVectorEnv`` runs N forks of one seed
world side by side. Every step moves the camera by the action for ``time_step_s`` seconds and asks the server to
generate the frame at the new pose (``WorldClient.step``): the frame is fused into the world's memory, so a place
looks the same when the agent comes back.

Frames and units: world right-handed, **Z up, metres**; poses are 4x4 **camera-to-world** matrices with
an **OpenCV** camera (x right, y down, z forward); depth is metres along the optical axis, 0 = unknown.

Given no ``address``, the environment starts ``worldweave serve`` on a free loopback port and stops it on ``close``
(the SDK never imports the server; it may run one as a process).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from worldweave.proto.codecs import MAX_FLOAT16
from worldweave.proto.geometry import Intrinsics
from worldweave.proto import voxel_keys
from worldweave.proto.voxel_keys import AXIS_LIMIT
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.conversions import Frame
from worldweave.sim_clients.gym_env.local_server import LocalServer
from worldweave.sim_clients.gym_env.room import heading_c2w, make_room, seed_views
from worldweave.sim_clients.mirror import PointCloudMirror
from worldweave.sim_clients.rollouts import Rollouts

ACTION_NAMES = ("forward", "left", "up", "yaw_rate", "pitch_rate")
"""What each action component is, in [-1, 1]: velocities as fractions of ``max_speed_mps`` along the agent's heading
(level), to its left (level) and world up; turn rates as fractions of ``max_turn_rate_dps`` about world +Z (positive
turns left) and about the camera's right axis (positive looks up)."""


@dataclass(frozen=True)
class EpisodeSeed:
    """What an episode's world starts from: seed views ``(rgb uint8 (H, W, 3), depth float32 (H, W) metres, c2w 4x4)``
    at the env's intrinsics, the agent's start pose (4x4 camera-to-world; its roll is dropped) and a prompt."""

    frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    start_c2w: np.ndarray
    prompt: str = ""


def surface_area_m2(keys: np.ndarray, voxel_size_m: float) -> float:
    """The area of the surface a set of voxels stands for, square metres: per voxel, half its faces that border an
    empty voxel along the axis where it has most of them (so 1 face for a voxel of a one-voxel-thick surface or a lone
    voxel, and 1/2 for each voxel of a surface that lies on a voxel boundary and is split between two layers), times a
    face's area. Counting voxels instead counts such a split surface twice. ``keys``: sorted int64 packed voxel keys
    (``PointCloudMirror.keys``)."""
    if len(keys) == 0:
        return 0.0
    indices = voxel_keys.unpack(keys)
    exposed = np.zeros((len(keys), 3), dtype=np.int64)
    for axis in range(3):
        for step in (-1, 1):
            neighbours = indices.copy()
            neighbours[:, axis] += step
            neighbour_keys = voxel_keys.pack(neighbours)
            rows = np.searchsorted(keys, neighbour_keys).clip(max=len(keys) - 1)
            exposed[:, axis] += keys[rows] != neighbour_keys
    return float(exposed.max(axis=1).sum()) / 2 * voxel_size_m**2


@dataclass(frozen=True)
class StartPoint:
    """Where episodes start: checkpoint ``checkpoint_id`` of world ``world_id`` (a seed world just built, before any
    step) and the agent's start pose ``start_c2w`` (4x4 camera-to-world)."""

    world_id: str
    checkpoint_id: str
    start_c2w: np.ndarray


@dataclass(frozen=True)
class EnvCheckpoint:
    """A moment of an episode (``WorldEnv.checkpoint``): the world's checkpoint and the agent's state then."""

    checkpoint_id: str
    position_m: np.ndarray
    yaw_rad: float
    pitch_rad: float
    last_frame: Frame | None = field(repr=False)


SeedFn = Callable[[np.random.Generator, Intrinsics], EpisodeSeed]
"""Makes an episode's seed from the env's random generator (``env.np_random``) and its intrinsics."""


def room_seed(rng: np.random.Generator, intrinsics: Intrinsics) -> EpisodeSeed:
    """The default seed: a furnished room (layout and colours from ``rng``) seen in four level views from its
    centre at 1.4 m, the first at a random yaw; the agent starts at the first view."""
    room = make_room(rng)
    frames = seed_views(room, intrinsics, yaw_rad=float(rng.uniform(-math.pi, math.pi)))
    return EpisodeSeed(frames, frames[0][2], "a furnished room")


@dataclass(frozen=True)
class StepOutcome:
    """What one step did, for reward functions.

    ``frame``: the generated frame (``rgb``, ``depth`` metres, ``pose`` 4x4 camera-to-world, ``coverage``: the
    fraction of its pixels the memory covered before generation, ``version``). ``previous_c2w``: the pose before
    the step. ``voxels_before`` / ``voxels_after``: voxels in the world's map at or above the env's minimum
    confidence around the step; ``voxel_size_m``: their edge, metres. ``collided``: the agent's sphere, swept from
    the previous pose to the new one, touched a surface the world knows at or above that confidence;
    ``clearance_m``: the swept sphere's signed clearance, metres (gap to the nearest such surface, minus the
    penetration depth when touching, +inf when no surface is near). ``action``: the applied (clipped, normalised)
    action. ``area_before_m2`` / ``area_after_m2``: the surface those voxels stand for (``surface_area_m2``).
    """

    frame: Frame
    previous_c2w: np.ndarray
    voxels_before: int
    voxels_after: int
    voxel_size_m: float
    collided: bool
    clearance_m: float
    action: np.ndarray = field(repr=False)
    area_before_m2: float = 0.0
    area_after_m2: float = 0.0

    @property
    def new_area_m2(self) -> float:
        """Surface newly covered by memory at or above the env's minimum confidence in this step, square metres
        (``surface_area_m2`` after the step minus before); negative when voxels left memory or fell below the
        level."""
        return self.area_after_m2 - self.area_before_m2


def newly_covered_area(outcome: StepOutcome) -> float:
    """The default reward: the surface area the step added to the world's memory at or above the env's minimum
    confidence, square metres (guessed geometry pays nothing)."""
    return outcome.new_area_m2


RewardFn = Callable[[StepOutcome], float]
"""Maps a step's outcome to its reward."""


class WorldEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """A camera agent in a generated world served by worldweave.

    **Action** ``Box(-1, 1, (5,))`` float32, normalised (``ACTION_NAMES``): ``[forward, left, up]`` velocity as a
    fraction of ``max_speed_mps`` (forward and left are level, along the camera's heading and to its left; up is
    world +Z) and ``[yaw, pitch]`` rate as a fraction of ``max_turn_rate_dps`` (yaw about world +Z, positive turns
    left; pitch positive looks up, the pitch kept within ``±max_pitch_deg``). Actions outside the box are clipped; NaN
    is an error. One step lasts ``time_step_s`` seconds: the camera first moves by the velocities along its heading
    at the start of the step, then turns by rate x time step. The camera never rolls. Defaults: 1 m/s, 90°/s,
    0.1 s, so a step moves at most 0.1 m along each axis and turns at most 9°.

    **Observation** ``Dict``: ``rgb`` uint8 (H, W, 3), the generated frame; ``depth`` float32 (H, W), metres along
    the optical axis, 0 = unknown, at most 65504 (the wire's float16 saturates there); ``pose`` float64 (4, 4),
    camera-to-world (OpenCV camera, world Z up, metres); its space bounds every entry by +-``AXIS_LIMIT`` (2**20 - 1):
    a position lies within the world map's extent, +-``AXIS_LIMIT`` voxels per axis, so inside the bound for voxels
    up to 1 m.

    **Reward** ``reward_fn(StepOutcome)``; default :func:`newly_covered_area` (m² of surface newly in memory at or
    above ``min_confidence``).

    **Terminated** when the agent's sphere (``agent_radius_m`` around the camera centre), swept from the previous
    pose to the new one (a capsule collision query, so a fast step cannot tunnel through a thin wall), touches a
    surface the world knows at or above ``min_confidence`` after the step's frame is fused (unobserved space and
    voxels below the level do not collide: a generated world is unknown until generated).

    **Minimum confidence**: ``min_confidence`` (None: the world's default level, ``docs/confidence.md``) is the level
    reward and termination count: voxels whose confidence is below it are guesses, not surface. A level given here is
    declared for each episode's world (with 0). The env follows the world's point cloud at that level (a
    ``PointCloudMirror`` of the stream) to count voxels.

    **Truncated** by gymnasium's ``TimeLimit``: ``gymnasium.make`` adds it with 200 steps (``max_episode_steps=N``
    to change); a ``WorldEnv`` made directly never truncates (wrap it in ``gymnasium.wrappers.TimeLimit``).

    **Info**: ``frame_id``, ``version``, ``coverage`` (fraction of the frame's pixels memory covered before
    generation), ``voxel_count`` (voxels at or above ``min_confidence``), ``covered_area_m2`` (the surface those
    voxels stand for, :func:`surface_area_m2`), ``new_area_m2``, ``collided``, ``clearance_m`` (see
    :class:`StepOutcome`; +inf at reset).

    The episode's world is ``env.unwrapped.world_id`` (not in ``info``: ids differ between runs, infos must not).
    The first ``reset``, and every ``reset(seed=...)``, builds a seed world from ``seed_fn(env.np_random,
    intrinsics)`` (default :func:`room_seed`), deleting the previous one, and checkpoints it (``start``); a ``reset()``
    without a seed restores that checkpoint in the same world (the world's version still increases). Its observation
    is a generated frame at the start pose. ``options={"start_pose": c2w}`` starts elsewhere. Given ``start`` (a
    ``StartPoint`` of another env's seed world, as ``vector.WorldVectorEnv`` gives its envs), the first reset forks
    that checkpoint into a world of this env's own and a seed only seeds ``np_random``. ``fork()``: a new env on
    the same server in a copy of this one's world and agent, whose ``reset`` comes back to this episode's start;
    ``checkpoint()`` / ``restore(checkpoint)``: rewind an episode (world and agent). ``render_mode="rgb_array"``: ``render()`` returns the last frame.

    ``address``: ``host:port`` of a running ``worldweave serve``; None starts one on a free loopback port (with
    ``server_args`` as extra flags) that ``close()`` stops. ``width``, ``height`` (pixels), ``fov_x_deg`` (degrees):
    the camera. ``voxel_size_m``: the worlds' voxel edge, metres (None: the server's default); the default 5 cm is
    about a pixel's footprint at 3 m at the default camera, so that counting voxels measures area rather than how
    densely pixels sampled a surface. ``timeout_s``: deadline of each server call, seconds.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        render_mode: str | None = None,
        *,
        address: str | None = None,
        width: int = 128,
        height: int = 96,
        fov_x_deg: float = 90.0,
        time_step_s: float = 0.1,
        max_speed_mps: float = 1.0,
        max_turn_rate_dps: float = 90.0,
        max_pitch_deg: float = 60.0,
        agent_radius_m: float = 0.2,
        reward_fn: RewardFn = newly_covered_area,
        seed_fn: SeedFn = room_seed,
        voxel_size_m: float | None = 0.05,
        server_args: Sequence[str] = (),
        timeout_s: float = 60.0,
        min_confidence: float | None = None,
        start: StartPoint | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not supported; use None or 'rgb_array'")
        for name, value in (("time_step_s", time_step_s), ("max_speed_mps", max_speed_mps),
                            ("max_turn_rate_dps", max_turn_rate_dps), ("agent_radius_m", agent_radius_m)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not 0 < max_pitch_deg < 90:
            raise ValueError(f"max_pitch_deg must be in (0, 90) degrees, got {max_pitch_deg!r}")
        if min_confidence is not None and not (isinstance(min_confidence, (int, float)) and 0 <= min_confidence <= 1):
            raise ValueError(f"min_confidence must be a number in [0, 1] or None, got {min_confidence!r}")
        self.min_confidence = min_confidence
        self.render_mode = render_mode
        self.intrinsics = Intrinsics.from_fov(width, height, fov_x_deg=fov_x_deg)
        self.time_step_s = float(time_step_s)
        self.metadata = {**self.metadata, "render_fps": 1.0 / self.time_step_s}
        self.max_pitch_rad = math.radians(max_pitch_deg)
        self.agent_radius_m = float(agent_radius_m)
        self.reward_fn = reward_fn
        self.seed_fn = seed_fn
        self.voxel_size_m = voxel_size_m

        self.action_scale = np.array([max_speed_mps] * 3 + [max_turn_rate_dps] * 2, dtype=np.float64)
        """Multiplies an action into (m/s, m/s, m/s, deg/s, deg/s)."""
        self.action_space = spaces.Box(-1.0, 1.0, (5,), dtype=np.float32)
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (height, width, 3), dtype=np.uint8),
            "depth": spaces.Box(0.0, MAX_FLOAT16, (height, width), dtype=np.float32),
            "pose": spaces.Box(-float(AXIS_LIMIT), float(AXIS_LIMIT), (4, 4), dtype=np.float64),
        })

        self.local_server = LocalServer(server_args) if address is None else None
        self.address = self.local_server.address if address is None else address
        """``host:port`` of the server this env steps on."""
        self.timeout_s = timeout_s
        try:
            self.client = WorldClient(self.address, timeout_s=timeout_s)
        except BaseException:
            if self.local_server is not None:
                self.local_server.stop()
            raise
        self.rollouts = Rollouts(self.client)
        self.start = start
        """Where episodes start (``StartPoint``); None until the first ``reset`` builds the seed world."""
        self._shared_start = start is not None
        self.world_id: str | None = None
        self._position_m = np.zeros(3)
        self._yaw_rad = 0.0
        self._pitch_rad = 0.0
        self._voxels = 0
        self._area_m2 = 0.0
        self._world_voxel_size_m = 0.0
        self._level = 0.0
        self._mirror = PointCloudMirror()
        self._last_frame: Frame | None = None

    # --------------------------------------------------------------------------------------------- gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode in a new world; returns ``(observation, info)`` at the start pose."""
        super().reset(seed=seed)
        options = dict(options or {})
        start_pose = options.pop("start_pose", None)
        if options:
            raise ValueError(
                f"unknown reset options {sorted(options)}; WorldEnv takes 'start_pose' (4x4 camera-to-world)"
            )
        if self.start is None or (seed is not None and not self._shared_start):
            world = self._build_seed_world()
        elif self.world_id is None:  # a start shared by another env: fork it (the fork has its checkpoints)
            world = self.rollouts.fork(self.start.world_id, checkpoint_id=self.start.checkpoint_id)
            self.world_id = world.world_id
        else:
            world = self.rollouts.restore(self.world_id, self.start.checkpoint_id)
        self._world_voxel_size_m = float(world.config.voxel_size_m)
        self._level = float(world.config.default_min_confidence)
        self._mirror = PointCloudMirror()
        self._set_state(np.asarray(self.start.start_c2w if start_pose is None else start_pose, dtype=np.float64))
        frame = self._generate()
        self._voxels, self._area_m2 = self._count_voxels()
        return self._observation(frame), self._info(frame, new_area_m2=0.0, collided=False, clearance_m=math.inf)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        """Move for one time step, generate the frame there; returns ``(observation, reward, terminated, truncated,
        info)`` as the class docstring describes."""
        if self.world_id is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape} {ACTION_NAMES}, got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action has a non-finite value: {dict(zip(ACTION_NAMES, action.tolist()))}")
        action = np.clip(action, self.action_space.low, self.action_space.high)
        previous_c2w = self._c2w()
        self._move(action)
        frame = self._generate()
        voxels_before, area_before_m2 = self._voxels, self._area_m2
        self._voxels, self._area_m2 = self._count_voxels()
        # The agent's sphere swept over the step (a capsule), so a fast step cannot pass through a thin wall.
        contact = self.client.queries.check_capsules(self.world_id, previous_c2w[None, :3, 3], frame.pose[None, :3, 3],
                                             self.agent_radius_m, min_confidence=self._level)
        collided, clearance_m = bool(contact.hit[0]), float(contact.clearance_m[0])
        outcome = StepOutcome(frame, previous_c2w, voxels_before, self._voxels, self._world_voxel_size_m, collided,
                              clearance_m, action, area_before_m2, self._area_m2)
        reward = float(self.reward_fn(outcome))
        info = self._info(frame, outcome.new_area_m2, collided, clearance_m)
        return self._observation(frame), reward, collided, False, info

    # --------------------------------------------------------------------------------------------- rollouts

    def checkpoint(self) -> EnvCheckpoint:
        """This moment of the episode: a checkpoint of the world (``Checkpoint``) and the agent's state."""
        if self.world_id is None:
            raise gym.error.ResetNeeded("call reset() before checkpoint()")
        mark = self.rollouts.checkpoint(self.world_id)
        return EnvCheckpoint(mark.checkpoint_id, self._position_m.copy(), self._yaw_rad, self._pitch_rad,
                             self._last_frame)

    def restore(self, checkpoint: EnvCheckpoint) -> None:
        """Go back to ``checkpoint`` (of this env or of the env it was forked from, before the fork): world and
        agent; the next ``step`` continues from there."""
        if self.world_id is None:
            raise gym.error.ResetNeeded("call reset() before restore()")
        self.rollouts.restore(self.world_id, checkpoint.checkpoint_id)
        self._position_m, self._yaw_rad, self._pitch_rad = checkpoint.position_m.copy(), checkpoint.yaw_rad, checkpoint.pitch_rad
        self._last_frame = checkpoint.last_frame
        self._mirror = PointCloudMirror()
        self._voxels, self._area_m2 = self._count_voxels()

    def fork(self) -> WorldEnv:
        """A new env on the same server (its own connection) in a fork of this env's world, with the agent where it
        is now and this env's random generator state; stepping either never shows in the other. Its ``reset`` comes
        back to this episode's start; ``close`` it when done (it deletes its world, never the server)."""
        if self.world_id is None:
            raise gym.error.ResetNeeded("call reset() before fork()")
        child = copy.copy(self)
        child.local_server = None
        child.client = WorldClient(self.address, timeout_s=self.timeout_s)
        child.rollouts = Rollouts(child.client)
        child._np_random = copy.deepcopy(self.np_random)
        child._position_m = self._position_m.copy()
        child.world_id = child.rollouts.fork(self.world_id).world_id
        child._shared_start = True
        child._mirror = PointCloudMirror()
        child._voxels, child._area_m2 = child._count_voxels()
        return child

    def render(self) -> np.ndarray | None:
        """The last frame, uint8 (H, W, 3), with ``render_mode="rgb_array"``; None (and a warning) without one."""
        if self.render_mode is None:
            gym.logger.warn("render() needs render_mode='rgb_array' at construction, e.g. "
                            "gymnasium.make('worldweave/World-v0', render_mode='rgb_array')")
            return None
        if self._last_frame is None:
            raise gym.error.ResetNeeded("call reset() before render()")
        return np.array(self._last_frame.rgb)

    def close(self) -> None:
        """Delete the episode's world, close the connection and stop the local server (if this env started one)."""
        try:
            if getattr(self, "client", None) is not None:
                try:
                    self._delete_world()
                finally:
                    self.client.close()
                    self.client = None
        finally:
            if getattr(self, "local_server", None) is not None:
                self.local_server.stop()
                self.local_server = None

    # --------------------------------------------------------------------------------------------- motion

    def _set_state(self, c2w: np.ndarray) -> None:
        if c2w.shape != (4, 4) or not np.all(np.isfinite(c2w)):
            raise ValueError(f"a start pose must be a finite 4x4 camera-to-world matrix, got shape {c2w.shape}")
        forward = c2w[:3, 2] / np.linalg.norm(c2w[:3, 2])
        self._position_m = c2w[:3, 3].copy()
        self._yaw_rad = math.atan2(forward[1], forward[0])
        pitch = math.asin(float(np.clip(forward[2], -1.0, 1.0)))
        self._pitch_rad = float(np.clip(pitch, -self.max_pitch_rad, self.max_pitch_rad))

    def _c2w(self) -> np.ndarray:
        return heading_c2w(self._position_m, self._yaw_rad, self._pitch_rad)

    def _move(self, action: np.ndarray) -> None:
        forward_mps, left_mps, up_mps, yaw_dps, pitch_dps = (float(a) for a in action * self.action_scale)
        heading = np.array([math.cos(self._yaw_rad), math.sin(self._yaw_rad), 0.0])
        left = np.array([-math.sin(self._yaw_rad), math.cos(self._yaw_rad), 0.0])
        velocity = forward_mps * heading + left_mps * left + np.array([0.0, 0.0, up_mps])
        self._position_m = self._position_m + self.time_step_s * velocity
        self._yaw_rad = (self._yaw_rad + math.radians(yaw_dps) * self.time_step_s + math.pi) % (2 * math.pi) - math.pi
        pitch = self._pitch_rad + math.radians(pitch_dps) * self.time_step_s
        self._pitch_rad = float(np.clip(pitch, -self.max_pitch_rad, self.max_pitch_rad))

    # --------------------------------------------------------------------------------------------- server

    def _generate(self) -> Frame:
        (frame,) = self.client.step(self.world_id, self._c2w(), depth="float16_m")
        self._last_frame = frame
        return frame

    def _build_seed_world(self) -> pb.WorldInfo:
        """Build a seed world from ``seed_fn`` (deleting the previous one) and checkpoint it as ``start``."""
        episode = self.seed_fn(self.np_random, self.intrinsics)
        self._delete_world()
        levels = None if self.min_confidence is None else sorted({0.0, float(self.min_confidence)})
        world = self.client.worlds.create(
            episode.frames, self.intrinsics, prompt=episode.prompt, voxel_size_m=self.voxel_size_m,
            seed=int(self.np_random.integers(1 << 31)), confidence_levels=levels,
            default_min_confidence=self.min_confidence,
        )
        self.world_id = world.world_id
        mark = self.rollouts.checkpoint(world.world_id)
        self.start = StartPoint(world.world_id, mark.checkpoint_id, np.asarray(episode.start_c2w, dtype=np.float64))
        return world

    def _count_voxels(self) -> tuple[int, float]:
        """Voxels of the episode's world at or above the env's level and the surface they stand for (m²): the
        mirror brought up to date."""
        self._mirror.update(self.client.point_cloud.stream(self.world_id, self._mirror.version,
                                                           min_confidence=self._level))
        return len(self._mirror), surface_area_m2(self._mirror.keys, self._world_voxel_size_m)

    def _delete_world(self) -> None:
        if self.world_id is not None:
            self.client.worlds.delete(self.world_id)
            self.world_id = None

    def _observation(self, frame: Frame) -> dict[str, np.ndarray]:
        return {"rgb": np.array(frame.rgb), "depth": np.array(frame.depth, dtype=np.float32),
                "pose": np.array(frame.pose, dtype=np.float64)}

    def _info(self, frame: Frame, new_area_m2: float, collided: bool, clearance_m: float) -> dict[str, Any]:
        return {
            "frame_id": frame.frame_id,
            "version": frame.version,
            "coverage": frame.coverage,
            "voxel_count": self._voxels,
            "covered_area_m2": self._area_m2,
            "new_area_m2": new_area_m2,
            "collided": collided,
            "clearance_m": clearance_m,
        }
