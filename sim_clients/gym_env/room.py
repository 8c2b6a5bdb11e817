"""A procedural room rendered exactly in numpy: the default seed of ``WorldEnv`` (no engine, no Open3D).

A ``Room`` is an axis-aligned box shell (floor at z = 0, Z up, metres) with axis-aligned furniture boxes standing on
the floor along the walls, every surface textured in world coordinates (a checker of 0.5 m cells with per-cell
brightness noise on a colour per surface), so a point has one colour whatever the view. ``render`` casts one ray per
integer pixel centre (OpenCV camera): exact RGB and depth, seed frames a server can fuse.

This module knows only numpy (the SDK never imports the engine): ``worldweave.bridge``'s scenes are richer, but the
SDK never imports the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from worldweave.proto.geometry import Intrinsics

CELL_M = 0.5
"""Edge of a texture checker cell, metres."""
EYE_HEIGHT_M = 1.4
"""Height of the spawn point above the floor, metres."""


@dataclass(frozen=True)
class Room:
    """A room ``[-size/2, size/2]`` in x and y, ``[0, size_z]`` in z (world metres), with furniture boxes.

    ``boxes_m``: (B, 2, 3) min and max corners of the furniture, world metres. ``colors``: (6 + B, 3) uint8, one per
    surface: the shell's six faces (-x, +x, -y, +y, floor, ceiling), then one per box. ``seed`` picks the cell noise.
    """

    size_m: tuple[float, float, float]
    boxes_m: np.ndarray
    colors: np.ndarray
    seed: int

    @property
    def surface_area_m2(self) -> float:
        """The room's surface in all, square metres: the shell's six faces plus the six faces of every furniture box
        (faces against the floor or a wall counted too, so the surface a camera can see is at most this)."""
        sizes = [float(a) for a in self.size_m]
        shell = 2 * (sizes[0] * sizes[1] + sizes[0] * sizes[2] + sizes[1] * sizes[2])
        edges = self.boxes_m[:, 1] - self.boxes_m[:, 0]
        boxes = 2 * (edges[:, 0] * edges[:, 1] + edges[:, 0] * edges[:, 2] + edges[:, 1] * edges[:, 2])
        return shell + float(boxes.sum())

    @property
    def spawn_m(self) -> np.ndarray:
        """The spawn point: the room's centre at eye height, (3,) world metres (furniture keeps clear of it)."""
        return np.array([0.0, 0.0, EYE_HEIGHT_M])

    def render(self, c2w: np.ndarray, intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
        """Exact view from ``c2w`` (4x4 camera-to-world, OpenCV camera) from inside the room.

        Returns ``(rgb uint8 (H, W, 3), depth float32 (H, W))``, depth in metres along the optical axis. The camera
        must be inside the shell (every ray then hits a wall, so no depth is 0).
        """
        c2w = np.asarray(c2w, dtype=np.float64)
        origin = c2w[:3, 3]
        half = np.array(self.size_m) / 2
        lo_room, hi_room = np.array([-half[0], -half[1], 0.0]), np.array([half[0], half[1], self.size_m[2]])
        if np.any(origin <= lo_room) or np.any(origin >= hi_room):
            raise ValueError(
                f"camera at {origin.tolist()} m is outside the room {lo_room.tolist()}..{hi_room.tolist()} m"
            )
        u, v = np.meshgrid(np.arange(intrinsics.width), np.arange(intrinsics.height))
        rays_cam = np.stack([(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy,
                             np.ones(u.shape)], axis=-1).reshape(-1, 3)
        # Camera-frame z is 1, so the ray parameter t at a hit is the depth along the optical axis.
        directions = np.einsum("ni,ji->nj", rays_cam, c2w[:3, :3])
        with np.errstate(divide="ignore"):
            inverse = 1.0 / directions
        # Shell: from inside, the exit distance along each axis; the nearest is the wall hit.
        exits = np.where(inverse > 0, (hi_room - origin) * inverse, (lo_room - origin) * inverse)
        axis = np.argmin(exits, axis=1)
        t_hit = exits[np.arange(len(exits)), axis]
        surface = 2 * axis + (directions[np.arange(len(exits)), axis] > 0)
        # Furniture: slab test, nearest entry in front of the camera.
        for index, (lo, hi) in enumerate(self.boxes_m):
            with np.errstate(invalid="ignore"):
                t1, t2 = (lo - origin) * inverse, (hi - origin) * inverse
            near, far = np.minimum(t1, t2), np.maximum(t1, t2)
            near[np.isnan(near)], far[np.isnan(far)] = -np.inf, np.inf  # ray parallel to a slab it lies in
            t_near, t_far = near.max(axis=1), far.min(axis=1)
            closer = (t_near <= t_far) & (t_near > 0) & (t_near < t_hit)
            t_hit = np.where(closer, t_near, t_hit)
            surface = np.where(closer, 6 + index, surface)
            axis = np.where(closer, np.argmax(near, axis=1), axis)
        points = origin + directions * t_hit[:, None]
        rgb = self._shade(points, axis, surface)
        shape = (intrinsics.height, intrinsics.width)
        return rgb.reshape(*shape, 3), t_hit.astype(np.float32).reshape(shape)

    def _shade(self, points: np.ndarray, axis: np.ndarray, surface: np.ndarray) -> np.ndarray:
        """Colour of surface points (N, 3 world metres) on faces normal to ``axis``, of the given ``surface``."""
        in_plane = np.stack([points[np.arange(len(points)), (axis + 1) % 3],
                             points[np.arange(len(points)), (axis + 2) % 3]], axis=1)
        cells = np.floor(in_plane / CELL_M).astype(np.int64)
        checker = (cells.sum(axis=1) % 2).astype(np.float64)
        mixed = (cells[:, 0] * 73856093) ^ (cells[:, 1] * 19349663) ^ (surface * 83492791) ^ (self.seed * 2654435761)
        noise = (mixed % 1000) / 1000.0
        face_light = np.array([0.85, 0.75, 1.0])[axis]  # faces of each axis lit differently: edges show
        brightness = (0.65 + 0.2 * checker + 0.15 * noise) * face_light
        return np.clip(np.rint(self.colors[surface] * brightness[:, None]), 0, 255).astype(np.uint8)


def make_room(rng: np.random.Generator, *, size_m: tuple[float, float, float] = (6.0, 5.0, 2.7),
              furniture: int = 4) -> Room:
    """A room of ``size_m`` (x, y, z metres) with ``furniture`` boxes standing against the walls, colours and layout
    from ``rng``. Boxes are at most 0.7 m deep and the room at least 3 m wide, so its centre (the spawn) is free."""
    if min(size_m) <= 0 or min(size_m[:2]) < 3.0:
        raise ValueError(f"a room needs positive sizes and at least 3 m in x and y, got {size_m} m")
    half_x, half_y = size_m[0] / 2, size_m[1] / 2
    boxes = []
    for index in range(furniture):
        width, depth, height = rng.uniform(0.6, 1.4), rng.uniform(0.4, 0.7), rng.uniform(0.5, 2.0)
        wall = index % 4  # -x, +x, -y, +y: the box stands against that wall
        along = rng.uniform(-1.0, 1.0)
        if wall < 2:
            x0 = -half_x if wall == 0 else half_x - depth
            y0 = along * (half_y - width) - width / 2
            boxes.append([[x0, y0, 0.0], [x0 + depth, y0 + width, height]])
        else:
            y0 = -half_y if wall == 2 else half_y - depth
            x0 = along * (half_x - width) - width / 2
            boxes.append([[x0, y0, 0.0], [x0 + width, y0 + depth, height]])
    colors = rng.integers(60, 230, size=(6 + furniture, 3)).astype(np.uint8)
    return Room(size_m, np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 3), colors, int(rng.integers(1 << 30)))


def heading_c2w(position_m: np.ndarray, yaw_rad: float, pitch_rad: float = 0.0) -> np.ndarray:
    """4x4 camera-to-world (OpenCV camera, world Z up) at ``position_m`` looking along yaw (about +Z, 0 = +x,
    counter-clockwise seen from above) and pitch (positive looks up), with no roll."""
    forward = np.array([math.cos(pitch_rad) * math.cos(yaw_rad), math.cos(pitch_rad) * math.sin(yaw_rad),
                        math.sin(pitch_rad)])
    right = np.array([math.sin(yaw_rad), -math.cos(yaw_rad), 0.0])
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, down, forward], axis=1)
    c2w[:3, 3] = position_m
    return c2w


def seed_views(room: Room, intrinsics: Intrinsics, *, yaw_rad: float = 0.0,
               count: int = 4) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``count`` level views from the spawn point, evenly spaced in yaw starting at ``yaw_rad``: the
    ``(rgb, depth_m, c2w)`` triples ``WorldClient.worlds.create`` takes."""
    views = []
    for k in range(count):
        c2w = heading_c2w(room.spawn_m, yaw_rad + 2 * math.pi * k / count)
        rgb, depth = room.render(c2w, intrinsics)
        views.append((rgb, depth, c2w))
    return views
