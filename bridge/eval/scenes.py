"""Procedural ground-truth scenes made in code, rendered exactly at any pose.

A ``Scene`` is a triangle mesh of planar, axis-aligned or yawed boxes in a **Z-up world, metres**, with one
``Material`` per triangle. ``Scene.render(pose, intrinsics)`` casts one ray per pixel through the **integer pixel
centre** (``Intrinsics.pixel_rays``; not Open3D's ``create_rays_pinhole``, which samples at +0.5) with Open3D's
``RaycastingScene``: the ray direction has camera-frame z = 1, so the hit parameter *is* the depth along the optical
axis. The colour is computed in numpy from the hit point (from the primitive id and barycentrics) and the triangle's
material, so every surface point has one colour whatever the view: a perfect memory reproduces the frame exactly.
On request (``labels=True``) a view also comes with its exact label images: each triangle carries a semantic class
(``SEMANTIC_CLASSES``) and an instance id (one per box, 0 for flat surfaces).

Scenes:

* ``room``: a 7 x 6 x 2.7 m room with textured floor, walls and ceiling and furniture-like boxes along the walls
  (table, shelves, cabinet, bed, chairs), leaving the centre free for the camera.
* ``street``: a block of buildings ringed by a road (lanes, kerbs, sidewalks) with buildings outside the ring, for
  driving with turns and a revisit.

Both are seeded (``make_scene(name, seed=...)``): sizes, placement and textures vary with the seed. Open3D is
imported here only (the benchmark's edge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from worldweave.bridge.frames import RGBDFrame
from worldweave.proto.errors import InvalidInputError, NotFoundError
from worldweave.proto.geometry import Intrinsics, Pose

Pattern = Literal["checker", "stripes", "noise", "bricks", "plain"]

SKY_RGB = (150, 190, 235)
"""Colour of rays that hit nothing (their depth is 0, so they are never scored)."""
LIGHT_DIRECTION = np.array([0.3, 0.5, 0.81]) / np.linalg.norm([0.3, 0.5, 0.81])
"""Fixed directional light (world, towards the light): faces get brightness ``0.7 + 0.3 max(0, n . l)``."""
SEMANTIC_CLASSES: dict[str, int] = {
    "road": 1,
    "lane_marking": 2,
    "sidewalk": 3,
    "terrain": 4,
    "building": 5,
    "floor": 6,
    "wall": 7,
    "ceiling": 8,
    "furniture": 9,
}
"""The scenes' semantic classes, name -> id (uint16): the street's asphalt (``road``), dashed centre lines
(``lane_marking``), sidewalks, grass (``terrain``) and buildings; the room's floor, walls, ceiling and furniture.
0 is reserved for "unlabelled" (a ray that hits nothing, or a surface built without a class)."""


# ---------------------------------------------------------------------------------------------------------------
# Textures
# ---------------------------------------------------------------------------------------------------------------


def _hash01(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point (i, j) (a 64-bit integer mix)."""
    with np.errstate(over="ignore"):
        h = i.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= j.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        h ^= np.uint64((seed * 0x165667B19E3779F9) & 0xFFFFFFFFFFFFFFFF)
        h ^= h >> np.uint64(31)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(29)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def value_noise(s: np.ndarray, t: np.ndarray, cell_m: float, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1] at surface coordinates (s, t) metres, one lattice cell per ``cell_m``."""
    x, y = s / cell_m, t / cell_m
    i, j = np.floor(x), np.floor(y)
    fx, fy = x - i, y - j
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    i, j = i.astype(np.int64), j.astype(np.int64)
    a, b = _hash01(i, j, seed), _hash01(i + 1, j, seed)
    c, d = _hash01(i, j + 1, seed), _hash01(i + 1, j + 1, seed)
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


@dataclass(frozen=True)
class Material:
    """A procedural surface texture in surface coordinates (s, t), metres.

    ``pattern`` mixes ``color_a`` and ``color_b`` (RGB 0..255): ``checker`` (squares of ``scale_m``), ``stripes``
    (period ``scale_m`` along s), ``noise`` (value noise, cell ``scale_m``), ``bricks`` (rows ``scale_m`` high,
    bricks ``2 scale_m`` long, mortar in ``color_b``), ``plain`` (``color_a``). Then a low-frequency colour variation
    (value noise, cell ``4 scale_m``) scales the result by ``1 ± variation / 2`` and a fine grain (cell 3 cm) adds
    ``± grain / 2`` (0..255 units), so that errors show everywhere.
    """

    pattern: Pattern
    color_a: tuple[int, int, int]
    color_b: tuple[int, int, int] = (0, 0, 0)
    scale_m: float = 0.5
    variation: float = 0.3
    grain: float = 20.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pattern not in ("checker", "stripes", "noise", "bricks", "plain"):
            raise InvalidInputError(f"unknown texture pattern {self.pattern!r}")
        if not self.scale_m > 0:
            raise InvalidInputError(f"texture scale_m must be > 0, got {self.scale_m}")

    def shade(self, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        """(N,) surface coordinates in metres -> (N, 3) float64 RGB in 0..255 (before lighting)."""
        scale = self.scale_m
        if self.pattern == "checker":
            mix = ((np.floor(s / scale) + np.floor(t / scale)) % 2).astype(np.float64)
        elif self.pattern == "stripes":
            mix = 0.5 + 0.5 * np.tanh(3.0 * np.sin(2 * math.pi * s / scale))
        elif self.pattern == "noise":
            mix = value_noise(s, t, scale, self.seed)
        elif self.pattern == "bricks":
            row = np.floor(t / scale)
            along = s / (2 * scale) + 0.5 * (row % 2)
            in_mortar = (t / scale - row < 0.12) | (along - np.floor(along) < 0.06)
            mix = in_mortar.astype(np.float64)
        else:
            mix = np.zeros_like(s)
        a, b = np.asarray(self.color_a, np.float64), np.asarray(self.color_b, np.float64)
        rgb = a * (1 - mix[:, None]) + b * mix[:, None]
        if self.variation:
            rgb *= 1.0 + self.variation * (value_noise(s, t, 4 * scale, self.seed + 1)[:, None] - 0.5)
        if self.grain:
            rgb += self.grain * (value_noise(s, t, 0.03, self.seed + 2)[:, None] - 0.5)
        return rgb


# ---------------------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A box (furniture, building, wall slab): centre and size in metres, yaw about world +Z in radians, and its
    semantic class (a ``SEMANTIC_CLASSES`` name; None: unlabelled)."""

    center_m: tuple[float, float, float]
    size_m: tuple[float, float, float]
    material: Material
    yaw_rad: float = 0.0
    semantic: str | None = None


def semantic_class(name: str | None) -> int:
    """The id of a ``SEMANTIC_CLASSES`` name (None: 0, unlabelled); an unknown name raises listing the names."""
    if name is None:
        return 0
    if name not in SEMANTIC_CLASSES:
        raise InvalidInputError(f"unknown semantic class {name!r}; choose from {sorted(SEMANTIC_CLASSES)}")
    return SEMANTIC_CLASSES[name]


@dataclass
class MeshBuilder:
    """Collects textured rectangles and boxes (world metres) into the triangle lists a ``Scene`` is made of.

    Labels: every triangle has a semantic class id (``SEMANTIC_CLASSES``, 0 = unlabelled) and an instance id. Each
    ``block`` is one object with its own instance id (1, 2, ... in build order); a ``quad`` is "stuff" (ground, road,
    a room's shell) with instance 0 unless given one."""

    vertices: list[np.ndarray] = field(default_factory=list)
    triangles: list[np.ndarray] = field(default_factory=list)
    materials: list[Material] = field(default_factory=list)
    triangle_material: list[int] = field(default_factory=list)
    triangle_axes: list[np.ndarray] = field(default_factory=list)
    triangle_semantic: list[int] = field(default_factory=list)
    triangle_instance: list[int] = field(default_factory=list)
    count: int = 0
    blocks: int = 0

    def quad(
        self, corner: np.ndarray, edge_s: np.ndarray, edge_t: np.ndarray, material: Material, *,
        semantic: str | None = None, instance_id: int = 0,
    ) -> None:
        """A rectangle ``corner + a edge_s + b edge_t`` (a, b in [0, 1]); s and t texture axes along the edges;
        ``semantic``: its class name (``SEMANTIC_CLASSES``; None: unlabelled), ``instance_id``: its object (0: none)."""
        class_id = semantic_class(semantic)
        if material not in self.materials:
            self.materials.append(material)
        index = self.materials.index(material)
        self.vertices.append(np.stack([corner, corner + edge_s, corner + edge_s + edge_t, corner + edge_t]))
        n = self.count
        self.triangles.append(np.array([[n, n + 1, n + 2], [n, n + 2, n + 3]]))
        self.count += 4
        s_axis = edge_s / np.linalg.norm(edge_s)
        t_axis = edge_t / np.linalg.norm(edge_t)
        normal = np.cross(s_axis, t_axis)
        for _ in range(2):
            self.triangle_material.append(index)
            self.triangle_axes.append(np.stack([s_axis, t_axis, normal]))
            self.triangle_semantic.append(class_id)
            self.triangle_instance.append(instance_id)

    def block(self, block: Block, *, inward: bool = False) -> None:
        """Six faces of a box; normals point out (or into the box, for a room shell seen from inside).

        Side faces take s along the face horizontally and t = world z; top and bottom take s, t along the box axes.
        The box takes ``block.semantic`` and the next instance id (``blocks``, counting from 1).
        """
        self.blocks += 1
        c, (sx, sy, sz) = np.asarray(block.center_m, np.float64), block.size_m
        cos, sin = math.cos(block.yaw_rad), math.sin(block.yaw_rad)
        ax, ay, az = np.array([cos, sin, 0.0]) * sx, np.array([-sin, cos, 0.0]) * sy, np.array([0.0, 0.0, sz])
        lo = c - (ax + ay + az) / 2
        faces = [
            (lo, ax, az),  # -y side, outward normal -y: s along +x, t up -> n = s x t = -y
            (lo + ax + ay, -ax, az),  # +y side
            (lo + ay, -ay, az),  # -x side
            (lo + ax, ay, az),  # +x side
            (lo + az, ax, ay),  # top, normal +z
            (lo + ay, ax, -ay),  # bottom, normal -z
        ]
        for corner, edge_s, edge_t in faces:
            if inward:
                corner, edge_s = corner + edge_s, -edge_s
            self.quad(corner, edge_s, edge_t, block.material, semantic=block.semantic, instance_id=self.blocks)


class Scene:
    """A textured triangle mesh (Z-up world, metres) with an exact renderer and the camera's free space.

    ``free_space``: axis-aligned boxes (world metres) where camera centres may be (inside the room away from
    furniture; over the road); ``start``: a spawn position (metres) and heading (radians about +Z, 0 = +x) from which
    trajectories start and where real trajectories are placed.
    """

    def __init__(
        self,
        name: str,
        builder: MeshBuilder,
        *,
        free_space: tuple[tuple[np.ndarray, np.ndarray], ...],
        start_position_m: np.ndarray,
        start_heading_rad: float,
    ) -> None:
        from worldweave.bridge.open3d_import import load_open3d  # the benchmark's edge only

        o3d = load_open3d()

        self.name = name
        self.vertices = np.concatenate(builder.vertices).astype(np.float64)
        """(V, 3) float64 world metres."""
        self.triangles = np.concatenate(builder.triangles).astype(np.int64)
        """(T, 3) vertex indices."""
        self.materials = tuple(builder.materials)
        self.triangle_material = np.asarray(builder.triangle_material, np.int64)
        """(T,) index into ``materials``."""
        self.triangle_axes = np.stack(builder.triangle_axes)
        """(T, 3, 3): rows are the texture s axis, t axis and normal of each triangle (world, unit)."""
        self.triangle_semantic = np.asarray(builder.triangle_semantic, np.uint16)
        """(T,) semantic class id of each triangle (``SEMANTIC_CLASSES``, 0 = unlabelled)."""
        self.triangle_instance = np.asarray(builder.triangle_instance, np.uint32)
        """(T,) instance id of each triangle (0 = none)."""
        self.free_space = free_space
        self.start_position_m = np.asarray(start_position_m, np.float64)
        self.start_heading_rad = float(start_heading_rad)
        self._raycaster = o3d.t.geometry.RaycastingScene()
        self._raycaster.add_triangles(
            o3d.core.Tensor(self.vertices.astype(np.float32)), o3d.core.Tensor(self.triangles.astype(np.uint32))
        )
        self._o3d_core = o3d.core
        self._rays_cam: dict[Intrinsics, np.ndarray] = {}
        """Camera-frame rays through integer pixel centres (z = 1), (H W, 3) float64, per intrinsics."""

    @property
    def bounds_m(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) corners of the mesh, world metres."""
        return self.vertices.min(axis=0), self.vertices.max(axis=0)

    def distance_m(self, points_world: np.ndarray) -> np.ndarray:
        """(N, 3) world points (metres) -> (N,) float32 distance in metres to the closest point of the mesh surface
        (Open3D's closest-point query)."""
        points = np.ascontiguousarray(np.asarray(points_world, np.float32).reshape(-1, 3))
        return self._raycaster.compute_distance(self._o3d_core.Tensor(points)).numpy()

    def is_free(self, points_world: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N,) bool: inside some free-space box (where a camera centre may be)."""
        points = np.asarray(points_world, np.float64).reshape(-1, 3)
        inside = np.zeros(len(points), bool)
        for lo, hi in self.free_space:
            inside |= np.all((points >= lo) & (points <= hi), axis=1)
        return inside

    def start_pose(self, *, pitch_deg: float = 0.0) -> Pose:
        """The camera at the spawn point looking along the start heading, tilted down by ``pitch_deg``."""
        return heading_pose(self.start_position_m, self.start_heading_rad, pitch_deg=pitch_deg)

    def colors_at(self, points_world: np.ndarray, triangle_ids: np.ndarray) -> np.ndarray:
        """Exact uint8 (N, 3) colour of surface points (world metres) lying on the given triangles."""
        axes = self.triangle_axes[triangle_ids]
        s = np.einsum("ni,ni->n", points_world, axes[:, 0])
        t = np.einsum("ni,ni->n", points_world, axes[:, 1])
        light = 0.7 + 0.3 * np.clip(axes[:, 2] @ LIGHT_DIRECTION, 0.0, None)
        rgb = np.zeros((len(points_world), 3))
        material_ids = self.triangle_material[triangle_ids]
        for index in np.unique(material_ids):
            chosen = material_ids == index
            rgb[chosen] = self.materials[index].shade(s[chosen], t[chosen])
        return np.clip(np.rint(rgb * light[:, None]), 0, 255).astype(np.uint8)

    def render(self, pose: Pose, intrinsics: Intrinsics, *, labels: bool = False) -> RGBDFrame:
        """Exact RGB-D view at ``pose`` (camera-to-world, OpenCV axes): one ray per integer pixel centre.

        Depth: float32 metres along the optical axis, 0 where the ray hits nothing (sky, colour ``SKY_RGB``).
        ``labels``: also fill the frame's ``semantic`` (uint16 class ids, ``SEMANTIC_CLASSES``) and ``instance``
        (uint32) images with the labels of the triangle each ray hits, 0 where it hits nothing; off by default, so a
        frame used as a seed carries labels only when asked.
        """
        h, w = intrinsics.shape
        if intrinsics not in self._rays_cam:
            self._rays_cam[intrinsics] = intrinsics.pixel_rays(np.float64).reshape(-1, 3)
        rays = np.empty((h * w, 6), np.float32)
        rays[:, :3] = pose.position
        # einsum, not @: a (HW, 3) x (3, 3) product through BLAS threads is 10x slower on a busy CPU.
        rays[:, 3:] = np.einsum("ni,ji->nj", self._rays_cam[intrinsics], pose.rotation)
        hits = self._raycaster.cast_rays(self._o3d_core.Tensor(rays))
        t_hit = hits["t_hit"].numpy()
        hit = np.isfinite(t_hit)
        triangle_ids = hits["primitive_ids"].numpy()[hit].astype(np.int64)
        bary = hits["primitive_uvs"].numpy()[hit].astype(np.float64)
        corners = self.vertices[self.triangles[triangle_ids]]  # (N, 3 corners, 3)
        points = corners[:, 0] * (1 - bary[:, :1] - bary[:, 1:]) + corners[:, 1] * bary[:, :1] + corners[:, 2] * bary[:, 1:]
        rgb = np.empty((h * w, 3), np.uint8)
        rgb[:] = SKY_RGB
        rgb[hit] = self.colors_at(points, triangle_ids)
        depth = np.where(hit, t_hit, 0.0).astype(np.float32)  # ray z = 1 in the camera frame: t is the depth
        if not labels:
            return RGBDFrame(rgb.reshape(h, w, 3), depth.reshape(h, w), pose, intrinsics)
        semantic = np.zeros(h * w, np.uint16)
        instance = np.zeros(h * w, np.uint32)
        semantic[hit], instance[hit] = self.triangle_semantic[triangle_ids], self.triangle_instance[triangle_ids]
        return RGBDFrame(rgb.reshape(h, w, 3), depth.reshape(h, w), pose, intrinsics, semantic=semantic.reshape(h, w),
                         instance=instance.reshape(h, w))


def heading_pose(position_m: np.ndarray, heading_rad: float, *, pitch_deg: float = 0.0) -> Pose:
    """A level camera at ``position_m`` looking along ``heading_rad`` about +Z (0 = +x), pitched down ``pitch_deg``."""
    pitch = math.radians(pitch_deg)
    forward = np.array([math.cos(heading_rad) * math.cos(pitch), math.sin(heading_rad) * math.cos(pitch), -math.sin(pitch)])
    return Pose.look_at(position_m, np.asarray(position_m, np.float64) + forward)


# ---------------------------------------------------------------------------------------------------------------
# Scene makers
# ---------------------------------------------------------------------------------------------------------------


def _color(rng: np.random.Generator, low: int = 40, high: int = 230) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(low, high, size=3))


def make_room(seed: int = 0) -> Scene:
    """A furnished room, 7 x 6 x 2.7 m (x in [-3.5, 3.5], y in [-3, 3], floor at z = 0).

    Furniture stands along the walls; the camera's free space is the centre, |x| <= 2, |y| <= 1.6, z in [0.8, 2.0].
    Spawn: (-1.5, 0, 1.5) looking along +x.
    """
    rng = np.random.default_rng(seed)
    half_x, half_y, height = 3.5, 3.0, 2.7
    b = MeshBuilder()
    floor = Material("checker", _color(rng, 150, 230), _color(rng, 30, 110), scale_m=0.5, variation=0.4, seed=seed * 10 + 1)
    ceiling = Material("noise", (225, 220, 210), (170, 165, 160), scale_m=0.6, variation=0.2, seed=seed * 10 + 2)
    walls = [
        Material("stripes", _color(rng), _color(rng), scale_m=0.3, variation=0.3, seed=seed * 10 + 3),
        Material("bricks", _color(rng, 120, 200), (200, 200, 195), scale_m=0.12, variation=0.4, seed=seed * 10 + 4),
        Material("noise", _color(rng), _color(rng), scale_m=0.25, variation=0.5, seed=seed * 10 + 5),
        Material("checker", _color(rng), _color(rng), scale_m=0.35, variation=0.3, seed=seed * 10 + 6),
    ]
    b.quad(np.array([-half_x, -half_y, 0.0]), np.array([2 * half_x, 0, 0]), np.array([0, 2 * half_y, 0.0]), floor,
           semantic="floor")
    b.quad(np.array([-half_x, half_y, height]), np.array([2 * half_x, 0, 0]), np.array([0, -2 * half_y, 0.0]), ceiling,
           semantic="ceiling")
    corners = [(-half_x, -half_y), (half_x, -half_y), (half_x, half_y), (-half_x, half_y)]
    for k in range(4):
        (x0, y0), (x1, y1) = corners[k], corners[(k + 1) % 4]
        b.quad(np.array([x0, y0, 0.0]), np.array([x1 - x0, y1 - y0, 0.0]), np.array([0, 0, height]), walls[k],
               semantic="wall")
    pieces = [  # (size x, y, z), which wall (0: -y, 1: +x, 2: +y, 3: -x), pattern
        ((1.6, 0.9, 0.75), 0, "noise"),  # table
        ((0.5, 1.8, 2.0), 1, "stripes"),  # shelves
        ((1.2, 0.6, 1.1), 2, "checker"),  # cabinet
        ((2.0, 1.4, 0.5), 3, "noise"),  # bed
        ((0.5, 0.5, 0.9), 0, "plain"),  # chair
        ((0.8, 0.4, 1.6), 2, "bricks"),  # dresser
    ]
    for (sx, sy, sz), wall, pattern in pieces:
        along = rng.uniform(-0.6, 0.6)
        gap = rng.uniform(0.05, 0.2)
        if wall == 0:
            center = (along * (half_x - sx / 2), -half_y + sy / 2 + gap, sz / 2)
        elif wall == 1:
            center = (half_x - sx / 2 - gap, along * (half_y - sy / 2), sz / 2)
        elif wall == 2:
            center = (along * (half_x - sx / 2), half_y - sy / 2 - gap, sz / 2)
        else:
            center = (-half_x + sx / 2 + gap, along * (half_y - sy / 2), sz / 2)
        material = Material(pattern, _color(rng), _color(rng), scale_m=float(rng.uniform(0.08, 0.3)), variation=0.4,
                            seed=int(rng.integers(1 << 30)))
        b.block(Block(center, (sx, sy, sz), material, semantic="furniture"))
    free = ((np.array([-2.0, -1.6, 0.8]), np.array([2.0, 1.6, 2.0])),)
    return Scene(f"room-{seed}", b, free_space=free, start_position_m=np.array([-1.5, 0.0, 1.5]), start_heading_rad=0.0)


STREET_BLOCK_HALF_M = (12.0, 8.0)
"""Half sizes (x, y) of the inner block of buildings; the road's centre line is a rectangle around it."""
STREET_ROAD_WIDTH_M = 7.0
STREET_SIDEWALK_M = 2.0
STREET_CAMERA_HEIGHT_M = 1.6


def street_loop_half_m() -> tuple[float, float]:
    """Half sizes (x, y) of the rectangle that the road's centre line follows, metres."""
    gap = STREET_SIDEWALK_M + STREET_ROAD_WIDTH_M / 2
    return STREET_BLOCK_HALF_M[0] + gap, STREET_BLOCK_HALF_M[1] + gap


def make_street(seed: int = 0) -> Scene:
    """A block of buildings ringed by a road, with buildings outside the ring (Z up, ground at z = 0).

    The road's centre line is the rectangle ``street_loop_half_m()`` around the origin; sidewalks of
    ``STREET_SIDEWALK_M`` line both sides. Free space: the road band at camera heights 1.0..2.5 m. Spawn: on the
    centre line at (0, -loop_half_y, 1.6) heading +x (driving anticlockwise, turns to the left).
    """
    rng = np.random.default_rng(seed)
    bx, by = STREET_BLOCK_HALF_M
    lx, ly = street_loop_half_m()
    road_half = STREET_ROAD_WIDTH_M / 2
    outer_x, outer_y = lx + road_half + STREET_SIDEWALK_M, ly + road_half + STREET_SIDEWALK_M
    extent = 14.0
    b = MeshBuilder()
    asphalt = Material("noise", (70, 70, 75), (110, 108, 105), scale_m=0.4, variation=0.3, grain=25, seed=seed * 10 + 1)
    sidewalk = Material("checker", (170, 165, 155), (135, 130, 125), scale_m=0.5, variation=0.25, seed=seed * 10 + 2)
    grass = Material("noise", (60, 120, 50), (100, 150, 60), scale_m=0.5, variation=0.4, seed=seed * 10 + 3)
    lane = Material("stripes", (230, 230, 220), (70, 70, 75), scale_m=3.0, variation=0.05, grain=10, seed=seed * 10 + 4)
    # Ground: grass far out, then sidewalks (outer and inner ring), then the road ring (slightly above, no z-fight).
    big = outer_x + extent
    big_y = outer_y + extent
    b.quad(np.array([-big, -big_y, -0.02]), np.array([2 * big, 0, 0]), np.array([0, 2 * big_y, 0.0]), grass,
           semantic="terrain")
    b.quad(np.array([-outer_x, -outer_y, -0.01]), np.array([2 * outer_x, 0, 0]), np.array([0, 2 * outer_y, 0.0]), sidewalk,
           semantic="sidewalk")
    for y0, y1 in ((-ly - road_half, -ly + road_half), (ly - road_half, ly + road_half)):
        b.quad(np.array([-lx - road_half, y0, 0.0]), np.array([2 * (lx + road_half), 0, 0]), np.array([0, y1 - y0, 0.0]), asphalt,
               semantic="road")
    for x0, x1 in ((-lx - road_half, -lx + road_half), (lx - road_half, lx + road_half)):
        b.quad(np.array([x0, -ly + road_half, 0.0]), np.array([x1 - x0, 0, 0]), np.array([0, 2 * (ly - road_half), 0.0]), asphalt,
               semantic="road")
    # Dashed centre lines (stripes along the direction of travel), 15 cm wide, just above the asphalt.
    for sign in (-1, 1):
        b.quad(np.array([-lx, sign * ly - 0.075, 0.005]), np.array([2 * lx, 0, 0]), np.array([0, 0.15, 0.0]), lane,
               semantic="lane_marking")
        b.quad(np.array([sign * lx + 0.075, -ly, 0.005]), np.array([0, 2 * ly, 0.0]), np.array([-0.15, 0, 0]), lane,
               semantic="lane_marking")

    def facade(rng_: np.random.Generator) -> Material:
        pattern = str(rng_.choice(["bricks", "stripes", "checker", "noise"]))
        scale = {"bricks": 0.15, "stripes": 1.2, "checker": 0.9, "noise": 0.6}[pattern] * float(rng_.uniform(0.8, 1.3))
        return Material(pattern, _color(rng_, 70, 220), _color(rng_, 30, 180), scale_m=scale, variation=0.4,
                        seed=int(rng_.integers(1 << 30)))

    def row(x0: float, x1: float, y_face: float, depth: float, facing: int) -> None:
        """Buildings along x in [x0, x1] whose street face is at y = y_face, extending away from the road."""
        x = x0
        while x < x1 - 1.0:
            width = min(float(rng.uniform(3.5, 7.0)), x1 - x)
            height = float(rng.uniform(4.0, 12.0))
            cy = y_face - facing * depth / 2
            b.block(Block((x + width / 2, cy, height / 2), (width - 0.3, depth, height), facade(rng), semantic="building"))
            x += width

    def column(y0: float, y1: float, x_face: float, depth: float, facing: int) -> None:
        y = y0
        while y < y1 - 1.0:
            width = min(float(rng.uniform(3.5, 7.0)), y1 - y)
            height = float(rng.uniform(4.0, 12.0))
            cx = x_face - facing * depth / 2
            b.block(Block((cx, y + width / 2, height / 2), (depth, width - 0.3, height), facade(rng), semantic="building"))
            y += width

    inner_depth = 4.0
    row(-bx, bx, -by, inner_depth, -1)  # inner block, south face at y = -by
    row(-bx, bx, by, inner_depth, 1)
    column(-by + inner_depth, by - inner_depth, -bx, inner_depth, -1)
    column(-by + inner_depth, by - inner_depth, bx, inner_depth, 1)
    outer_depth = 6.0
    row(-outer_x, outer_x, -outer_y, outer_depth, 1)  # south row faces north (+y)
    row(-outer_x, outer_x, outer_y, outer_depth, -1)
    column(-outer_y, outer_y, -outer_x, outer_depth, 1)
    column(-outer_y, outer_y, outer_x, outer_depth, -1)
    z_lo, z_hi = 1.0, 2.5
    free = (
        (np.array([-lx - road_half, -ly - road_half, z_lo]), np.array([lx + road_half, -ly + road_half, z_hi])),
        (np.array([-lx - road_half, ly - road_half, z_lo]), np.array([lx + road_half, ly + road_half, z_hi])),
        (np.array([-lx - road_half, -ly - road_half, z_lo]), np.array([-lx + road_half, ly + road_half, z_hi])),
        (np.array([lx - road_half, -ly - road_half, z_lo]), np.array([lx + road_half, ly + road_half, z_hi])),
    )
    return Scene(f"street-{seed}", b, free_space=free, start_position_m=np.array([0.0, -ly, STREET_CAMERA_HEIGHT_M]),
                 start_heading_rad=0.0)


SCENES: dict[str, Callable[[int], Scene]] = {"room": make_room, "street": make_street}
"""Scene makers by name; each takes a seed."""


def make_scene(name: str, seed: int = 0) -> Scene:
    """Build the named scene (``SCENES``) with ``seed``; raises ``NotFoundError`` listing the names."""
    if name not in SCENES:
        raise NotFoundError(f"unknown scene {name!r}; choose from {sorted(SCENES)}")
    return SCENES[name](seed)
