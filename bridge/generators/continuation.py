"""``continue``: the embedded default generator. It continues the planes memory holds, with their own texture. No
weights, CPU, deterministic.

Each frame, in stages:

1. **Kept pixels**: where the woven memory render covers a pixel with depth, its colour comes back unchanged, with
   depth and confidence as ``kept_depth`` gives them: memory's where its points land; where a point's footprint
   only spreads (render confidence 0, depth off the surface), the plane through the landed pixels around it, at
   their lowest confidence, when they fit one (a street facade seen from nearer than it was fused, its points
   spread apart, is fused whole, as ``reproject`` fuses it); else depth 0: shown, never fused.
2. **Planes**: the dominant planes of the render (floors, walls, ceilings, road) are fitted to its back-projected
   depth by sequential RANSAC (seeded by ``Condition.seed``), refined by least squares, and kept only when they look
   like a surface (spread across the plane, residuals tight). Each fit is matched to a **surface** the generator
   remembers (``_Surface``: plane, texture, and which cells of it memory has shown), whose plane then stands in for
   the fit, or becomes a new one. A fit too small to continue from, or none at all, still continues a remembered
   surface when the view shows enough of it on its plane (``MIN_SHOWN_SHARE``: a sliver of a table's front at the
   image's border is that table's front, not a new guess).
3. **Where each surface stands** (``Support``), on a grid in its own coordinates: every cell memory has shown of it
   (in any view) surer than a continuation (render confidence above ``continued_confidence``: never what this
   generator continued, so a wall cannot creep past a corner frame after frame) and the cells they enclose, grown
   ``reach_m`` for continuing and ``occlusion_reach_m`` for hiding what lies behind it, never through a cell where a
   view (this one or an earlier one) saw through the plane, nor where it saw something in front of it (a wall does
   not grow above a ceiling seen in front of its plane) unless memory has shown the plane on both sides of that cell
   along one of the grid's axes (a wall seen left and right of a box runs on behind it); only what memory saw (surer
   than a continuation) stands in front: neither this generator's continuations nor a footprint's spread that no
   plane of landed pixels fits block a plane.
   The most recently seen remembered surfaces the view does not show only hide. Where a surface's edge may cross a
   cell (next to both a shown cell and a seen-through one), a finer grid (``EDGE_FINE_CELLS``) of where memory
   showed it and where a view saw through it places the edge halfway between them, to within two of the view's
   pixel footprints (``EDGE_FOOTPRINTS``).
4. **Geometry**: each hole pixel's ray meets the surfaces; the nearest one standing where it is met hides the others,
   and continues into the pixel, with its depth and confidence ``continued_confidence`` times memory's median
   confidence in the plane's shown pixels (a continuation is never surer than its base), when it is met within reach,
   within ``max_range_m`` and at a usable angle. A surface met where it has grown past what memory showed of it,
   beside a kept pixel that sees through it, ends there (its silhouette): it neither continues nor hides, and the
   next one along the ray is asked. Hole pixels nothing explains get depth 0 (unknown) and confidence 0.
5. **Texture**: each surface's colour is an exemplar tile of its seen texture in its own coordinates (``s``, ``t``
   metres, world-anchored; ``build_texture``): along an axis where the texture has a period, all seen periods are
   folded onto one and repeated in phase; along one without, the largest seen stretch is mirrored. The tile is built
   once per surface, so every later view of the continued surface sees the same texture (a checkerboard continues as
   a checkerboard, not as fog).
6. **Unknown pixels** (holes nothing continues) are a picture only, with depth 0 and confidence 0, so nothing of
   them is fused: where a large remembered surface stands (within ``occlusion_reach_m`` of what memory has shown of
   it) its texture is drawn, the rest is the push-pull fill (``reproject``'s, at half resolution) of the other
   colours. A view with nothing to draw from is mid-grey.

The generator remembers at most ``cache_size`` surfaces per world (least recently used dropped first), in the
world's ``GeneratorState``: worlds sharing one generator (a server's) never see each other's surfaces, and a world
starts with none when it is created, loaded, forked or restored, or its memory edited (a removed object's texture
must not come back). A fit is matched to a surface by plane and appearance (its colours must fall in the texture's
colour bins). What memory holds as a continuation is told apart by its confidence in the render, so it is not grown
from as if seen, also by a world that starts with no surfaces.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numba
import numpy as np

from worldweave.bridge.cores import split_call
from worldweave.bridge.frames import RenderResult
from worldweave.bridge.generators.base import Condition, GenerationResult, Generator
from worldweave.bridge.generators.kept_depth import kept_depth
from worldweave.bridge.generators.reproject import EMPTY_GREY, push_pull
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose

SEE_THROUGH_MARGIN_M = 0.05
SEE_THROUGH_MARGIN_SHARE = 0.1
"""A kept pixel sees through a plane when its surface lies behind the point where its ray crosses the plane by more
than ``SEE_THROUGH_MARGIN_M`` metres plus this share of the crossing's depth (memory renders smear a few pixels
where surfaces meet, and along a grazing ray a few pixels are tens of centimetres)."""
LOCAL_SAMPLE_CELLS = 6
"""Half the RANSAC hypotheses draw their second and third points within this many sample-grid cells of the first."""
RANSAC_SCORED_POINTS = 500
"""Free points a plane hypothesis is scored on (drawn afresh for each plane)."""
MIN_PLANE_SPREAD_M = 0.1
"""A plane continued into holes must spread at least this much (standard deviation of its inliers, metres) along its
narrower in-plane axis; one that spreads less only hides what lies behind it (a strip of ceiling)."""
MIN_STRIP_SPREAD_M = 0.03
"""A plane spreading less than this along its narrower in-plane axis is a line (an edge, the border of what memory
holds), not a surface: not used at all."""
MAX_MEDIAN_RESIDUAL = 0.4
"""A plane's inliers' median distance to it must be at most this share of the inlier tolerance (points scattered
through the tolerance slab, as clutter is, have a median near half of it)."""
EDGE_TOLERANCE_FACTOR = 2.0
"""A kept point within this many inlier tolerances of two planes lies on their edge and supports neither."""
SILHOUETTE_PROBE_SHARE = 1 / 40
"""A hole pixel is not continued with a plane that the nearest kept pixel in one of the four image directions,
within this share of the image width, sees through."""
MIN_DRAWN_AREA_M2 = 1.0
"""A surface memory has shown at least this much of (square metres) is drawn, as a picture only, where it stands in
a view's unknown pixels beyond its reach."""
MAX_HIDING_SURFACES = 16
"""Most remembered surfaces (the most recently seen) that hide what lies behind them in a view not showing them."""
MIN_SHOWN_SHARE = 0.005
"""A remembered surface that no fit of a view large enough to continue from found still continues in it when at
least this share of the view's sampled pixels show it (as ``metrics.PLANE_HELD_SHARE`` counts a plane memory holds)."""
COLOR_BIN = 32
"""Width of the colour bins (0..255 units per channel) a cached texture is recognised by."""
HIDING, CONTINUED, HELD = 1, 2, 3
"""Where a plane stands in a view (``Support.level``; 0: it does not): it only hides what lies behind it; it is
continued; memory has shown it there (its support)."""
EDGE = 8
"""Flag on a ``Support.level`` cell next to both a held and a blocked cell: the plane's edge may cross it, so the
fine grid decides where it stands in it (``EDGE_FINE_CELLS``)."""
FINE_SEEN, FINE_THROUGH = 1, 2
"""Bits of ``Support.fine``: memory showed the plane in the fine cell; a view saw through it there."""
EDGE_FINE_CELLS = 4
"""A support cell's side in cells of the fine grid that records, per surface, where memory showed it and where a
view saw through it. In a cell the plane's edge may cross (``EDGE``), a point does not stand when, within one support
cell of it, a view saw through the plane nearer than memory showed it (the edge lies halfway between them) and memory
showed it no nearer than ``EDGE_FOOTPRINTS`` of the view's pixel footprints there."""
EDGE_FOOTPRINTS = 2.0
"""Marks are only as sharp as the pixels that made them: a point within this many pixel footprints (of the view
being generated) of where memory showed the plane stands, whatever was seen through nearby (a silhouette smeared
by a pixel in a memory render must not cut the plane short)."""


@dataclass(frozen=True)
class ContinuationOptions:
    """Settings of the ``continue`` generator (its constructor's keyword options)."""

    max_planes: int = 8
    """Most planes fitted per view."""
    inlier_tolerance_m: float = 0.02
    """Largest point-to-plane distance of a plane's inlier, metres (memory renders are good to ~1 cm)."""
    min_plane_share: float = 0.02
    """Smallest share of a view's sampled pixels (covered or not) a plane must explain to be continued; a plane with
    half of it is kept only to hide what lies behind it."""
    ransac_iterations: int = 128
    """Plane hypotheses drawn per plane."""
    sample_points: int = 8000
    """Pixels of the regular grid the planes are fitted to and their support is measured from (its covered ones)."""
    reach_m: float = 0.75
    """How far past its support (in the plane) a plane is continued, metres."""
    occlusion_reach_m: float = 2.0
    """How far past its support a plane hides what lies behind it (pixels there stay unknown), metres."""
    support_cell_m: float = 0.1
    """Cell of the support grid in plane coordinates, metres."""
    max_range_m: float = 8.0
    """Farthest continued depth, metres along the optical axis (memory's anchors keep depth up to 8 m by default)."""
    min_incidence_cos: float = 0.25
    """Smallest |cos| between a pixel's ray and a plane's normal for the pixel to support the plane or be continued
    with it (memory seen at a grazing angle is smeared; a grazing hit is unstable)."""
    continued_confidence: float = 0.5
    """A continued pixel's confidence is this times memory's median confidence in the plane's shown pixels (kept
    pixels have memory's, unknown ones 0). Memory holding a pixel at this confidence or less holds a continuation:
    it is not grown from."""
    min_texel_m: float = 0.005
    max_texel_m: float = 0.04
    """Texel size bounds of a plane's texture, metres; within them it is the 30th percentile pixel footprint."""
    max_exemplar_texels: int = 512
    """Largest side of the grid a plane's seen texture is splatted into (the texel grows to fit)."""
    min_tile_texels: int = 8
    """Smallest side of an exemplar tile; a surface shown less gets no texture yet (its continued pixels are painted
    like the unknown ones until a view shows enough of it)."""
    min_period_correlation: float = 0.5
    """Normalised autocorrelation a lag needs to count as the texture's period along an axis."""
    surface_match_deg: float = 10.0
    surface_match_m: float = 0.25
    """A fit whose normal is within this angle of a remembered surface's and whose inliers lie within this distance
    (metres, on average) of its plane sees that surface when at least half of them lie on it (its plane then stands in
    for the fit); otherwise the fit is a bad view of it and is not used."""
    appearance_share: float = 0.8
    """Share of a view's seen colours that must fall in a cached tile's colour bins (or next to them) to reuse it."""
    cache_size: int = 256
    """Most surfaces remembered (least recently used dropped first)."""

    def __post_init__(self) -> None:
        for name in ("max_planes", "ransac_iterations", "sample_points", "max_exemplar_texels", "min_tile_texels",
                     "cache_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"continue option {name} must be a positive integer, got {value!r}")
        for name in ("inlier_tolerance_m", "reach_m", "occlusion_reach_m", "support_cell_m", "max_range_m",
                     "min_texel_m", "max_texel_m", "surface_match_deg", "surface_match_m"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise InvalidInputError(f"continue option {name} must be a positive number, got {value!r}")
        for name in ("min_plane_share", "min_incidence_cos", "continued_confidence", "min_period_correlation",
                     "appearance_share"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise InvalidInputError(f"continue option {name} must be in [0, 1], got {value!r}")
        if self.occlusion_reach_m < self.reach_m:
            raise InvalidInputError(f"occlusion_reach_m {self.occlusion_reach_m} is less than reach_m {self.reach_m}")
        if self.min_texel_m > self.max_texel_m:
            raise InvalidInputError(f"min_texel_m {self.min_texel_m} exceeds max_texel_m {self.max_texel_m}")


# ---------------------------------------------------------------------------------------------------------------
# Planes
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlaneFrame:
    """A world plane ``normal . x + offset = 0`` (unit normal towards the camera that saw it, metres) with its own 2D
    coordinates: a point ``x`` has ``s = (x - origin) . axis_s`` and ``t = (x - origin) . axis_t`` metres.

    The axes depend on the normal only, so they are anchored in the world (Z up): on a floor or ceiling ``s`` runs
    along world x; on a wall ``s`` runs horizontally along the wall and ``t`` along world z. ``origin`` is the plane's
    point nearest the world origin.
    """

    normal: np.ndarray
    offset_m: float
    origin: np.ndarray
    axis_s: np.ndarray
    axis_t: np.ndarray

    @classmethod
    def from_plane(cls, normal_world: np.ndarray, offset_m: float) -> PlaneFrame:
        n = np.asarray(normal_world, np.float64) / np.linalg.norm(normal_world)
        if abs(n[2]) > 0.9:
            axis_s = np.array([1.0, 0.0, 0.0]) - n[0] * n
        else:
            axis_s = np.array([-n[1], n[0], 0.0])  # world z x n: horizontal, along the wall
        axis_s /= np.linalg.norm(axis_s)
        axis_t = np.array([n[1] * axis_s[2] - n[2] * axis_s[1], n[2] * axis_s[0] - n[0] * axis_s[2],
                           n[0] * axis_s[1] - n[1] * axis_s[0]])  # n x s
        return cls(n, float(offset_m), -offset_m * n, axis_s, axis_t)

    def in_camera(self, pose: Pose) -> tuple[np.ndarray, float]:
        """The plane in the frame of the camera at camera-to-world ``pose``: ``(normal, offset_m)`` with
        ``normal . x + offset_m = 0`` for camera-frame points ``x`` (``offset_m`` > 0 when the camera is on the normal's
        side)."""
        return pose.rotation.T @ self.normal, self.offset_m + float(self.normal @ pose.position)

    def coordinates(self, points_world: np.ndarray) -> np.ndarray:
        """(N, 3) world points (on or near the plane) -> (N, 2) plane coordinates ``(s, t)``, metres."""
        relative = np.asarray(points_world, np.float64) - self.origin
        return np.stack([relative @ self.axis_s, relative @ self.axis_t], axis=1)


def _ray_cos(points_cam: np.ndarray, normal_cam: np.ndarray) -> np.ndarray:
    """(N,) cosine of the angle between each camera ray to (N, 3) camera-frame points and a plane's camera-frame unit
    normal: 1 looking straight at the plane, 0 grazing it."""
    squares = points_cam * points_cam  # the rays' lengths as np.linalg.norm(axis=1) sums them, 6x faster
    return np.abs(points_cam @ normal_cam) / np.sqrt((squares[:, 0] + squares[:, 1]) + squares[:, 2])


def _least_squares_plane(points: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The total-least-squares plane of the (N, 3) ``points`` where bool (N,) ``mask`` holds (at least one): unit
    normal, offset, and the points' spread (metres, standard deviation) along the plane's narrower in-plane axis."""
    centre, covariance = _centre_and_covariance(points, mask)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    normal = eigenvectors[:, 0]
    return normal, float(-normal @ centre), float(math.sqrt(max(eigenvalues[1], 0.0)))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _centre_and_covariance(points, mask):
    """The mean (3,) and covariance (3, 3, divided by their count) of the ``points`` where ``mask`` holds."""
    count = 0
    centre = np.zeros(3)
    for i in range(points.shape[0]):
        if mask[i]:
            count += 1
            for c in range(3):
                centre[c] += points[i, c]
    centre /= count
    xx = xy = xz = yy = yz = zz = 0.0
    for i in range(points.shape[0]):
        if mask[i]:
            x, y, z = points[i, 0] - centre[0], points[i, 1] - centre[1], points[i, 2] - centre[2]
            xx += x * x
            xy += x * y
            xz += x * z
            yy += y * y
            yz += y * z
            zz += z * z
    return centre, np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]]) / count


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _best_hypothesis(points, grid_rc, lookup, free, candidates, draws, steps, scored, tolerance):
    """The plane through three points that explains the most scored points: ``(normal, offset)`` (a degenerate
    triple has a zero normal and explains none). Triple h is ``candidates[draws[h]]`` (indices into ``points``); for
    the first ``len(steps)`` triples, the second and third points are replaced by the free points at grid cells
    ``grid_rc[first] + steps[h]`` when both exist (``lookup``: grid cell -> point, -1 where none), so that a
    small surface is drawn too. A hypothesis counts the ``candidates[scored]`` points within ``tolerance`` of its
    plane; the first with the highest count wins."""
    rows, cols = lookup.shape
    best_count, best_normal, best_offset = -1, np.zeros(3), 0.0
    scored_points = np.empty((scored.shape[0], 3))  # gathered once: every hypothesis reads them all
    for s in range(scored.shape[0]):
        for c in range(3):
            scored_points[s, c] = points[candidates[scored[s]], c]
    triple = np.empty(3, np.int64)
    near = np.empty(2, np.int64)
    for h in range(draws.shape[0]):
        for k in range(3):
            triple[k] = candidates[draws[h, k]]
        if h < steps.shape[0]:
            usable = True
            for k in range(2):
                r, c = grid_rc[triple[0], 0] + steps[h, k, 0], grid_rc[triple[0], 1] + steps[h, k, 1]
                near[k] = lookup[r, c] if 0 <= r < rows and 0 <= c < cols else -1
                usable = usable and near[k] >= 0 and free[near[k]]
            if usable:
                triple[1], triple[2] = near[0], near[1]
        p0x, p0y, p0z = points[triple[0], 0], points[triple[0], 1], points[triple[0], 2]
        ax, ay, az = points[triple[1], 0] - p0x, points[triple[1], 1] - p0y, points[triple[1], 2] - p0z
        bx, by, bz = points[triple[2], 0] - p0x, points[triple[2], 1] - p0y, points[triple[2], 2] - p0z
        nx, ny, nz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
        length = math.sqrt(nx * nx + ny * ny + nz * nz)
        count, offset = 0, 0.0
        if length > 1e-9:
            nx, ny, nz = nx / length, ny / length, nz / length
            offset = -(nx * p0x + ny * p0y + nz * p0z)
            for s in range(scored_points.shape[0]):
                count += _plane_distance(scored_points, s, nx, ny, nz, offset) < tolerance
        else:
            nx = ny = nz = 0.0
        if count > best_count:
            best_count, best_offset = count, offset
            best_normal[0], best_normal[1], best_normal[2] = nx, ny, nz
    return best_normal, best_offset


@numba.njit(cache=True, nogil=True, inline="always")
def _plane_distance(points, i, nx, ny, nz, offset):
    """The distance of ``points[i]`` to the plane ``(nx, ny, nz) . x + offset = 0`` (unit normal), metres."""
    return abs(points[i, 0] * nx + points[i, 1] * ny + points[i, 2] * nz + offset)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _plane_inliers(points, free, normal, offset, tolerance):
    """bool (N,): the ``free`` points within ``tolerance`` of the plane ``normal . x + offset = 0``; and how many."""
    inliers = np.empty(points.shape[0], np.bool_)
    count = 0
    for i in range(points.shape[0]):
        inliers[i] = free[i] and _plane_distance(points, i, normal[0], normal[1], normal[2], offset) < tolerance
        count += inliers[i]
    return inliers, count


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _median_residual(points, inliers, normal, offset):
    """The median distance of the ``inliers`` (at least one) to the plane ``normal . x + offset = 0``, metres."""
    residuals = np.empty(inliers.sum())
    k = 0
    for i in range(points.shape[0]):
        if inliers[i]:
            residuals[k] = _plane_distance(points, i, normal[0], normal[1], normal[2], offset)
            k += 1
    return np.median(residuals)


def fit_planes(points_cam: np.ndarray, grid_rc: np.ndarray, least: int, options: ContinuationOptions,
               rng: np.random.Generator) -> list[tuple[np.ndarray, float, np.ndarray, float]]:
    """Sequential RANSAC on (N, 3) camera-frame points (metres) sampled on an image grid (``grid_rc``: (N, 2) int
    row and column of each on the grid): up to ``max_planes`` planes, largest first, each explaining at least
    ``least`` points. Half the hypotheses take three points anywhere, half three points within
    ``LOCAL_SAMPLE_CELLS`` grid cells of each other (so a small surface, a strip of ceiling, is drawn too).

    Each plane is ``(normal_cam, offset_m, inliers, spread_m)``: unit normal pointing to the camera (the camera centre
    has ``offset_m > 0``), ``normal . x + offset = 0``, a bool (N,) mask of the points it explains (each point belongs
    to one plane at most), and their spread along the plane's narrower in-plane axis (standard deviation, metres). A
    consensus that is not a surface (spread less than ``MIN_STRIP_SPREAD_M``, a line; or residuals no tighter than
    chance, a slab of clutter) is set aside. The random draws are numpy's (``rng``); the hypotheses, their scores and
    the refits are numba kernels, the eigen-decompositions numpy's.
    """
    planes: list[tuple[np.ndarray, float, np.ndarray, float]] = []
    least = max(3, least)
    if len(points_cam) < least:
        return planes
    points_cam = np.ascontiguousarray(points_cam, np.float64)
    free = np.ones(len(points_cam), bool)
    tolerance = options.inlier_tolerance_m
    lookup = np.full((grid_rc[:, 0].max() + 1, grid_rc[:, 1].max() + 1), -1, np.int64)  # max(axis=0) is 20x slower
    lookup[grid_rc[:, 0], grid_rc[:, 1]] = np.arange(len(grid_rc))
    local = options.ransac_iterations // 2
    for _ in range(options.max_planes):
        candidates = np.flatnonzero(free)
        if len(candidates) < least:
            break
        draws = rng.integers(len(candidates), size=(options.ransac_iterations, 3))
        steps = rng.integers(-LOCAL_SAMPLE_CELLS, LOCAL_SAMPLE_CELLS + 1, (local, 2, 2))
        scored = rng.integers(len(candidates), size=RANSAC_SCORED_POINTS)
        normal, offset = _best_hypothesis(points_cam, grid_rc, lookup, free, candidates, draws, steps, scored,
                                          tolerance)
        spread = 0.0
        for _refine in range(2):
            inliers, count = _plane_inliers(points_cam, free, normal, offset, tolerance)
            if count < least:
                break
            normal, offset, spread = _least_squares_plane(points_cam, inliers)
        inliers, count = _plane_inliers(points_cam, free, normal, offset, tolerance)
        if count < least:
            break
        free &= ~inliers
        if spread < MIN_STRIP_SPREAD_M or _median_residual(points_cam, inliers, normal, offset) > (
                MAX_MEDIAN_RESIDUAL * tolerance):
            continue
        if offset < 0:
            normal, offset = -normal, -offset
        planes.append((normal, offset, inliers, spread))
    return planes


def _box_sum(values: np.ndarray, radius: int) -> np.ndarray:
    """Sum of a 2D array over the (2 radius + 1)^2 window centred on each cell (zero outside), same shape."""
    padded = np.pad(values, ((radius + 1, radius), (radius + 1, radius)))
    summed = padded.cumsum(axis=0).cumsum(axis=1)
    size = 2 * radius + 1
    return summed[size:, size:] - summed[:-size, size:] - summed[size:, :-size] + summed[:-size, :-size]


@numba.njit(cache=True, nogil=True)
def _support_levels(occupied, blocked, covered, reach_steps, hide_steps):
    """Where a plane stands, on its grid: from bool (A, B) ``occupied`` cells (memory holds them), ``blocked``
    cells (a view saw through the plane there) and ``covered`` cells (a view saw something in front of the plane
    there), uint8 level ``HELD`` on the region, ``CONTINUED`` within ``reach_steps`` 8-neighbour steps of it,
    ``HIDING`` within ``hide_steps``, 0 beyond. The region is the held cells (occupied, with an occupied neighbour: a
    lone cell is noise) and the open cells they enclose along both axes; the steps go only through open cells: held,
    next to a held one and not shut, or not within one cell of a shut one (the rays are sampled sparsely: the plane
    must not leak between them, but it reaches up to where a view saw past its support's edge). A
    blocked cell is shut; a covered one only where no held cells enclose it along its row or its column (the plane
    is seen on both sides of what stands in front of it there, so it runs on behind it). A standing cell within one
    cell of both a held and a blocked cell is flagged ``EDGE``: the plane's edge may cross it."""
    rows, cols = occupied.shape
    # Padded by one cell of False all round (cell (a, b) at [a + 1, b + 1]): a 3x3 window needs no bounds checks, and
    # the border, never open, stops the steps.
    occupied_p = np.zeros((rows + 2, cols + 2), np.bool_)
    blocked_p = np.zeros((rows + 2, cols + 2), np.bool_)
    occupied_p[1:-1, 1:-1] = occupied
    blocked_p[1:-1, 1:-1] = blocked
    held = np.zeros((rows + 2, cols + 2), np.bool_)
    for a in range(1, rows + 1):
        for b in range(1, cols + 1):
            if occupied_p[a, b]:
                held[a, b] = (occupied_p[a - 1, b - 1] or occupied_p[a - 1, b] or occupied_p[a - 1, b + 1]
                              or occupied_p[a, b - 1] or occupied_p[a, b + 1]
                              or occupied_p[a + 1, b - 1] or occupied_p[a + 1, b] or occupied_p[a + 1, b + 1])
    first_col = np.full(rows + 2, cols + 2, np.int64)  # padded indices throughout
    last_col = np.full(rows + 2, -1, np.int64)
    first_row = np.full(cols + 2, rows + 2, np.int64)
    last_row = np.full(cols + 2, -1, np.int64)
    for a in range(1, rows + 1):
        for b in range(1, cols + 1):
            if held[a, b]:
                first_col[a] = min(first_col[a], b)
                last_col[a] = max(last_col[a], b)
                first_row[b] = min(first_row[b], a)
                last_row[b] = max(last_row[b], a)
    shut = np.zeros((rows + 2, cols + 2), np.bool_)
    for a in range(1, rows + 1):
        for b in range(1, cols + 1):
            inside = first_col[a] < b < last_col[a] or first_row[b] < a < last_row[b]
            shut[a, b] = blocked_p[a, b] or (covered[a - 1, b - 1] and not inside)
    # 3x3 windows as a row pass then a column pass: whether a shut, a held and a blocked cell lies within one cell.
    across = np.zeros((rows + 2, cols + 2, 3), np.bool_)
    for a in range(1, rows + 1):
        for b in range(1, cols + 1):
            across[a, b, 0] = shut[a, b - 1] or shut[a, b] or shut[a, b + 1]
            across[a, b, 1] = held[a, b - 1] or held[a, b] or held[a, b + 1]
            across[a, b, 2] = blocked_p[a, b - 1] or blocked_p[a, b] or blocked_p[a, b + 1]
    open_cells = np.zeros((rows + 2, cols + 2), np.bool_)
    edge = np.zeros((rows + 2, cols + 2), np.bool_)
    for a in range(1, rows + 1):
        for b in range(1, cols + 1):
            near_shut = across[a - 1, b, 0] or across[a, b, 0] or across[a + 1, b, 0]
            near_held = across[a - 1, b, 1] or across[a, b, 1] or across[a + 1, b, 1]
            near_blocked = across[a - 1, b, 2] or across[a, b, 2] or across[a + 1, b, 2]
            open_cells[a, b] = held[a, b] or not near_shut or (near_held and not shut[a, b])
            edge[a, b] = near_held and near_blocked
    # Breadth-first steps from the region: each cell's fewest 8-neighbour steps through open cells.
    steps = np.full((rows + 2, cols + 2), -1, np.int64)
    queue_a = np.empty(rows * cols, np.int64)
    queue_b = np.empty(rows * cols, np.int64)
    tail = 0
    for a in range(1, rows + 1):
        for b in range(1, cols + 1):
            enclosed = first_col[a] <= b <= last_col[a] and first_row[b] <= a <= last_row[b] and open_cells[a, b]
            if held[a, b] or enclosed:
                steps[a, b] = 0
                queue_a[tail] = a
                queue_b[tail] = b
                tail += 1
    head = 0
    while head < tail:
        a, b = queue_a[head], queue_b[head]
        head += 1
        step = steps[a, b] + 1
        if step > hide_steps:
            continue
        for na in range(a - 1, a + 2):
            for nb in range(b - 1, b + 2):
                if steps[na, nb] < 0 and open_cells[na, nb]:
                    steps[na, nb] = step
                    queue_a[tail] = na
                    queue_b[tail] = nb
                    tail += 1
    level = np.zeros((rows, cols), np.uint8)
    for a in range(rows):
        for b in range(cols):
            cell_steps = steps[a + 1, b + 1]
            if cell_steps >= 0:
                level[a, b] = HELD if cell_steps == 0 else (CONTINUED if cell_steps <= reach_steps else HIDING)
            if level[a, b] and edge[a + 1, b + 1]:
                level[a, b] |= EDGE
    return level


@dataclass(frozen=True)
class Support:
    """Where a plane stands in one view, on a grid of ``cell_m`` cells in plane coordinates: ``level`` is ``HELD``
    on its support (memory has shown it there), ``CONTINUED`` where it is continued, ``HIDING`` where it only hides
    what lies behind it, 0 elsewhere.

    Its support is the cells memory holds of it (lone cells dropped), with the cells enclosed by them along both axes
    (a hole in the middle of a floor is floor). Cells where a view saw through the plane (a kept pixel's ray crosses
    it well before its surface) are blocked, and so are cells where a view saw something in front of it (the ray
    crosses the plane well behind its surface), except where the support lies on both sides of such a cell along its
    row or its column: the plane grows from its support through the other cells, up to ``reach_m`` for
    ``CONTINUED`` and ``occlusion_reach_m`` for ``HIDING``, never through blocked ones (a table top does not continue
    past its edge where the floor is seen beyond it, nor a wall above the ceiling seen in front of its plane; a wall
    seen on both sides of a box runs on behind it). ``low``: plane coordinates (s, t) of cell (0, 0)'s corner, metres.
    """

    level: np.ndarray
    low: np.ndarray
    cell_m: float
    fine: np.ndarray
    """uint8 (``EDGE_FINE_CELLS`` A, ``EDGE_FINE_CELLS`` B) for a (A, B) ``level`` with an ``EDGE`` cell, else
    (0, 0): on the fine grid from the same corner, ``FINE_SEEN`` where memory showed the plane, ``FINE_THROUGH`` where
    a view saw through it (both bits may be set)."""

    @classmethod
    def of(cls, held: np.ndarray, blocked: Sequence[np.ndarray], covered: Sequence[np.ndarray], seen_fine: np.ndarray,
           through_fine: Sequence[np.ndarray], options: ContinuationOptions, *, continues: bool) -> Support:
        """From the keys (``_cell_keys``, of ``support_cell_m`` cells in plane coordinates) of the cells memory holds of
        the plane (at least one), and of those where a view saw through it (``blocked``: the union of its arrays) and
        where a view saw something in front of it (``covered``, likewise); and the keys of the fine cells
        (``EDGE_FINE_CELLS`` to a support cell) memory showed it and a view saw through it (``through_fine``, a union
        too), read only where its edge may cross a cell. ``continues``: False for a plane that only hides what lies
        behind it (``HIDING`` at most, no ``EDGE`` cells)."""
        cell = options.support_cell_m
        margin = int(math.ceil(options.occlusion_reach_m / cell))
        low, high = _key_bounds(held)
        first = low - margin
        shape = tuple(high - first + margin + 1)
        occupied, shut, front = (np.zeros(shape, np.uint8) for _ in range(3))
        for sets, grid in (((held,), occupied), (blocked, shut), (covered, front)):
            for keys in sets:
                _mark_cells(keys, first[0], first[1], np.uint8(1), grid)
        level = _support_levels(occupied.view(np.bool_), shut.view(np.bool_), front.view(np.bool_),
                                int(math.ceil(options.reach_m / cell)), margin)
        if not continues:
            level = np.minimum(level & (EDGE - 1), HIDING)
        if not (level & EDGE).any():
            return cls(level, first * cell, cell, np.zeros((0, 0), np.uint8))
        fine = np.zeros((shape[0] * EDGE_FINE_CELLS, shape[1] * EDGE_FINE_CELLS), np.uint8)
        for sets, bit in (((seen_fine,), FINE_SEEN), (through_fine, FINE_THROUGH)):
            for keys in sets:
                _mark_cells(keys, first[0] * EDGE_FINE_CELLS, first[1] * EDGE_FINE_CELLS, np.uint8(bit), fine)
        return cls(level, first * cell, cell, fine)


@numba.njit(cache=True, nogil=True, inline="always")
def _key_cell(key):
    """The cell indices (s, t) of a cell key (``_cell_keys``)."""
    return (key >> 32) - CELL_KEY_OFFSET, (key & 0xFFFFFFFF) - CELL_KEY_OFFSET


@numba.njit(cache=True, nogil=True)
def _key_bounds(keys):
    """The lowest and the highest cell indices (s, t) (two int64 (2,) arrays) of the non-empty cell ``keys``
    (``_cell_keys``)."""
    low = np.empty(2, np.int64)
    high = np.empty(2, np.int64)
    for n in range(len(keys)):
        i, j = _key_cell(keys[n])
        if n == 0 or i < low[0]:
            low[0] = i
        if n == 0 or j < low[1]:
            low[1] = j
        if n == 0 or i > high[0]:
            high[0] = i
        if n == 0 or j > high[1]:
            high[1] = j
    return low, high


@numba.njit(cache=True, nogil=True)
def _mark_cells(keys, first_i, first_j, bits, grid):
    """Set ``bits`` in uint8 (A, B) ``grid`` at cell (i - ``first_i``, j - ``first_j``) for the cell (i, j) of each
    of ``keys`` (``_cell_keys``) that falls inside it."""
    rows, cols = grid.shape
    for key in keys:
        i, j = _key_cell(key)
        a, b = i - first_i, j - first_j
        if 0 <= a < rows and 0 <= b < cols:
            grid[a, b] |= bits


def _nearest_kept(kept: np.ndarray, width: int) -> np.ndarray:
    """For a flat bool (H W,) image ``width`` pixels wide: int32 (4, H W) flat index of the nearest kept pixel to the
    left, right, above and below each pixel (itself excluded), -1 where there is none. The four passes
    (``_nearest_passes``) run on the free cores, the two along rows beside the two down columns."""
    nearest = np.empty((4, kept.shape[0]), np.int32)
    split_call(_nearest_passes, _nearest_pass_bands, 4, kept, width, nearest, limit=2)
    return nearest


@numba.njit(cache=True, nogil=True)
def _nearest_passes(first, stop, kept, width, nearest):
    """Passes ``first .. stop - 1`` of ``_nearest_kept`` into ``nearest[pass]``: 0 left and 1 right along each row,
    2 above and 3 below (the last kept pixel of each column carried from row to row)."""
    size = kept.shape[0]
    height = size // width
    for direction in range(first, stop):
        if direction < 2:
            for v in range(height):
                last = -1
                for step in range(width):
                    u = step if direction == 0 else width - 1 - step
                    nearest[direction, v * width + u] = last
                    if kept[v * width + u]:
                        last = v * width + u
        else:
            column_last = np.full(width, -1, np.int32)
            for step in range(height):
                v = step if direction == 2 else height - 1 - step
                for u in range(width):
                    nearest[direction, v * width + u] = column_last[u]
                    if kept[v * width + u]:
                        column_last[u] = v * width + u


@numba.njit(cache=True, nogil=True, parallel=True)
def _nearest_pass_bands(bands, kept, width, nearest):
    """``_nearest_passes`` for the bands of passes ``bands[t] .. bands[t + 1] - 1``, one thread each."""
    for t in numba.prange(len(bands) - 1):
        _nearest_passes(bands[t], bands[t + 1], kept, width, nearest)


@numba.njit(cache=True, nogil=True)
def _seen_past(pixel, p, rays, kept_depth, nearest_kept, width, probe_px, normals, offsets):
    """Whether one of the nearest kept pixels to the right, left, below and above ``pixel`` (within ``probe_px``)
    sees through plane ``p``: its surface lies farther than the plane along its ray, by the see-through margin."""
    for direction in range(4):
        q = nearest_kept[direction, pixel]
        # Left and right of the pixel lie in its row, above and below in its column: their distance needs no division.
        if q < 0 or abs(q - pixel) > (probe_px if direction < 2 else probe_px * width):
            continue
        facing = rays[q, 0] * normals[p, 0] + rays[q, 1] * normals[p, 1] + rays[q, 2] * normals[p, 2]
        crossing = -offsets[p] / facing if facing < 0 else np.inf
        if kept_depth[q] > crossing * (1 + SEE_THROUGH_MARGIN_SHARE) + SEE_THROUGH_MARGIN_M:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _seen_past_edge(fine, i, j, rows, cols, footprint_cells):
    """Whether the plane does not stand at fine cell (``i``, ``j``) of an ``EDGE`` support cell (``fine``: its plane's
    ``Support.fine``, of (``rows``, ``cols``)): within one support cell, a view saw through it nearer than memory
    showed it, and memory showed it no nearer than ``EDGE_FOOTPRINTS`` of ``footprint_cells`` (the view's pixel
    footprint on the plane there, in fine cells)."""
    reach = EDGE_FINE_CELLS
    far = reach * reach * 2 + 1
    seen, through = far, far
    for di in range(-reach, reach + 1):
        for dj in range(-reach, reach + 1):
            a, b = i + di, j + dj
            if 0 <= a < rows and 0 <= b < cols and fine[a, b]:
                distance = di * di + dj * dj
                if fine[a, b] & FINE_SEEN:
                    seen = min(seen, distance)
                if fine[a, b] & FINE_THROUGH:
                    through = min(through, distance)
    return through < seen and seen > (EDGE_FOOTPRINTS * footprint_cells) ** 2


def _meet_planes(rays, holes, kept_depth, width, fx, probe_px, normals, offsets, to_plane, plane_origins, levels,
                 fines, level_shapes, lows, cell_m, max_range_m, min_incidence_cos):
    """For the ``holes`` (flat pixel indices) of an image ``width`` pixels wide whose (H W, 3) camera-frame rays
    (z = 1) are ``rays``: the depth (metres) and index of the plane each continues into, or depth 0 and index -1;
    then the index and depth of the nearest plane standing where the ray meets it (any level but 0), continued or
    not.

    A ray takes the nearest plane standing where the ray meets it, unless the plane has grown there (its level is
    below ``HELD``) and one of the nearest kept pixels to the right, left, below and above (within ``probe_px``) sees
    through it (``kept_depth`` (H W,), 0 where not kept: a surface farther than the plane along its ray, by the
    see-through margin): a grown plane's silhouette ends before a pixel whose neighbour memory saw past it, so it
    neither continues into that pixel nor hides what lies behind it there, and the next plane along the ray is
    asked. Where memory has shown the plane, such a neighbour only lies past its silhouette. The plane taken
    continues into the pixel when its level there is ``CONTINUED`` or ``HELD`` and the ray meets it within range at
    |cos| >= ``min_incidence_cos``.

    Per plane p: ``normals[p] . x + offsets[p] = 0`` (camera frame, camera on the positive side); a camera-frame
    point x has plane coordinates ``x @ to_plane[p] + plane_origins[p]``; ``levels[p]`` (padded) of true shape
    ``level_shapes[p]`` has cell (0, 0)'s corner at ``lows[p]``; ``fines[p]`` (padded) is its ``Support.fine``, read
    where a cell is flagged ``EDGE``.

    The holes are met in bands on the free cores (``bridge.cores.split_call``), each hole on its own: the same
    result on any number of threads.
    """
    count = holes.shape[0]
    depth = np.zeros(count, np.float64)
    plane = np.full(count, -1, np.int64)
    standing = np.full(count, -1, np.int64)
    standing_depth = np.zeros(count, np.float64)
    split_call(_meet_holes, _meet_hole_bands, count, rays, holes, kept_depth, _nearest_kept(kept_depth > 0, width),
               width, fx, probe_px, normals, offsets, to_plane, plane_origins, levels, fines, level_shapes, lows,
               cell_m, max_range_m, min_incidence_cos, depth, plane, standing, standing_depth)
    return depth, plane, standing, standing_depth


@numba.njit(cache=True, nogil=True)
def _holes_by_plane(hole_plane, standing, planes):
    """The holes (indices into ``_meet_planes``' outputs) grouped by plane, each group ascending: ``continued``, the
    holes some plane continues into (``hole_plane`` >= 0), group p ``continued[continued_at[p]:continued_at[p + 1]]``
    (as ``np.flatnonzero(hole_plane == p)``); ``drawn``, the holes no plane continues into, by the plane ``standing``
    there (>= 0), grouped likewise by ``drawn_at``. One pass to count, one to place."""
    continued_at = np.zeros(planes + 1, np.int64)
    drawn_at = np.zeros(planes + 1, np.int64)
    for j in range(len(hole_plane)):
        if hole_plane[j] >= 0:
            continued_at[hole_plane[j] + 1] += 1
        elif standing[j] >= 0:
            drawn_at[standing[j] + 1] += 1
    for p in range(planes):
        continued_at[p + 1] += continued_at[p]
        drawn_at[p + 1] += drawn_at[p]
    continued = np.empty(continued_at[planes], np.int64)
    drawn = np.empty(drawn_at[planes], np.int64)
    next_continued = continued_at[:planes].copy()
    next_drawn = drawn_at[:planes].copy()
    for j in range(len(hole_plane)):
        if hole_plane[j] >= 0:
            continued[next_continued[hole_plane[j]]] = j
            next_continued[hole_plane[j]] += 1
        elif standing[j] >= 0:
            drawn[next_drawn[standing[j]]] = j
            next_drawn[standing[j]] += 1
    return continued, continued_at, drawn, drawn_at


@numba.njit(cache=True, nogil=True)
def _points_on_rays(rays, pixels, depths):
    """(N, 3) float64 camera-frame points of flat ``pixels`` at ``depths`` (N,) metres along their (H W, 3) float64
    ``rays`` (z = 1): ``rays[pixels] * depths[:, None]``, the same products in one pass (numpy's row gather and
    broadcast product take 4x as long)."""
    points = np.empty((len(pixels), 3), np.float64)
    for i in range(len(pixels)):
        for c in range(3):
            points[i, c] = rays[pixels[i], c] * depths[i]
    return points


@numba.njit(cache=True, nogil=True, parallel=True)
def _meet_hole_bands(bands, rays, holes, kept_depth, nearest_kept, width, fx, probe_px, normals, offsets, to_plane,
                     plane_origins, levels, fines, level_shapes, lows, cell_m, max_range_m, min_incidence_cos, depth,
                     plane, standing, standing_depth):
    """``_meet_holes`` for the bands of holes ``bands[t] .. bands[t + 1] - 1``, one thread each."""
    for t in numba.prange(len(bands) - 1):
        _meet_holes(bands[t], bands[t + 1], rays, holes, kept_depth, nearest_kept, width, fx, probe_px, normals,
                    offsets, to_plane, plane_origins, levels, fines, level_shapes, lows, cell_m, max_range_m,
                    min_incidence_cos, depth, plane, standing, standing_depth)


@numba.njit(cache=True, nogil=True)
def _meet_holes(first, stop, rays, holes, kept_depth, nearest_kept, width, fx, probe_px, normals, offsets, to_plane,
                plane_origins, levels, fines, level_shapes, lows, cell_m, max_range_m, min_incidence_cos, depth, plane,
                standing, standing_depth):
    """``_meet_planes`` for holes ``first .. stop - 1``, written into ``depth``, ``plane``, ``standing`` and
    ``standing_depth`` (``nearest_kept``: ``_nearest_kept`` of the kept pixels)."""
    for k in range(first, stop):
        pixel = holes[k]
        rx, ry, rz = rays[pixel, 0], rays[pixel, 1], rays[pixel, 2]
        length = math.sqrt(rx * rx + ry * ry + rz * rz)
        nearer_than = -1.0  # planes met at or before this depth were seen past
        while True:
            best, best_plane, continues, best_level = np.inf, -1, False, 0
            for p in range(normals.shape[0]):
                facing = rx * normals[p, 0] + ry * normals[p, 1] + rz * normals[p, 2]
                if facing >= 0:
                    continue
                d = -offsets[p] / facing
                if d >= best or d <= nearer_than or d > max_range_m:
                    continue
                s = (d * (rx * to_plane[p, 0, 0] + ry * to_plane[p, 1, 0] + rz * to_plane[p, 2, 0])
                     + plane_origins[p, 0])
                t = (d * (rx * to_plane[p, 0, 1] + ry * to_plane[p, 1, 1] + rz * to_plane[p, 2, 1])
                     + plane_origins[p, 1])
                i = int(math.floor((s - lows[p, 0]) / cell_m))
                j = int(math.floor((t - lows[p, 1]) / cell_m))
                if i < 0 or j < 0 or i >= level_shapes[p, 0] or j >= level_shapes[p, 1]:
                    continue
                level = levels[p, i, j]
                if level & EDGE:
                    fine_m = cell_m / EDGE_FINE_CELLS
                    footprint_cells = d * length / (fx * max(-facing / length, min_incidence_cos)) / fine_m
                    if _seen_past_edge(fines[p], int(math.floor((s - lows[p, 0]) / fine_m)),
                                       int(math.floor((t - lows[p, 1]) / fine_m)), level_shapes[p, 0] * EDGE_FINE_CELLS,
                                       level_shapes[p, 1] * EDGE_FINE_CELLS, footprint_cells):
                        continue
                    level &= EDGE - 1
                if level == 0:
                    continue
                best, best_plane, best_level = d, p, level
                continues = level >= CONTINUED and -facing >= min_incidence_cos * length
            if best_plane < 0 or best_level == HELD or not _seen_past(
                    pixel, best_plane, rays, kept_depth, nearest_kept, width, probe_px, normals, offsets):
                break
            nearer_than = best
        if best_plane < 0:
            continue
        standing[k], standing_depth[k] = best_plane, best
        if continues:
            depth[k] = best
            plane[k] = best_plane


# ---------------------------------------------------------------------------------------------------------------
# Texture
# ---------------------------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _largest_rectangle(filled):
    """Largest all-True axis-aligned rectangle of a bool (A, B) grid: (a0, b0, a1, b1), half-open; area 0 if none."""
    rows, cols = filled.shape
    heights = np.zeros(cols + 1, np.int64)
    stack = np.empty(cols + 1, np.int64)
    best = (0, 0, 0, 0)
    best_area = 0
    for a in range(rows):
        for b in range(cols):
            heights[b] = heights[b] + 1 if filled[a, b] else 0
        top = 0
        for b in range(cols + 1):
            h = heights[b] if b < cols else 0
            while top > 0 and heights[stack[top - 1]] >= h:
                height = heights[stack[top - 1]]
                top -= 1
                left = stack[top - 1] + 1 if top > 0 else 0
                area = height * (b - left)
                if area > best_area:
                    best_area = area
                    best = (a - height + 1, left, a + 1, b)
            stack[top] = b
            top += 1
    return best


def texture_period(grey: np.ndarray, seen: np.ndarray, axis: int, min_correlation: float,
                   min_lag: int = 4) -> float | None:
    """The period (texels, fractional) along ``axis`` of a (A, B) grey canvas seen where ``seen`` is True, or None
    when it has none.

    The autocorrelation along the axis over the seen pairs of texels (summed over the other axis, normalised by the
    seen variance) is searched at lags from ``min_lag`` to half the canvas: the period is the first local maximum that
    reaches ``min_correlation`` and 85% of the best one, refined by a parabola through its neighbours. Lags that pair
    fewer than 64 texels or 5% of the seen ones are not searched.
    """
    weights = np.moveaxis(seen, axis, 0).astype(np.float64)
    values = np.moveaxis(grey, axis, 0).astype(np.float64)
    count = weights.sum()
    if count == 0:
        return None
    values = (values - (values * weights).sum() / count) * weights
    variance = (values**2).sum() / count
    length = values.shape[0]
    if variance <= 0 or length // 2 <= min_lag + 1:
        return None

    def correlate(x: np.ndarray) -> np.ndarray:
        spectrum = np.fft.rfft(x, n=2 * length, axis=0)
        return np.fft.irfft(spectrum * np.conj(spectrum), n=2 * length, axis=0)[:length].sum(axis=1)

    pairs = correlate(weights)
    correlation = correlate(values) / np.maximum(pairs, 1.0) / variance
    correlation[pairs < max(64.0, 0.05 * count)] = -1.0
    last = length // 2
    lags = np.arange(min_lag, last)
    r = correlation[min_lag - 1 : last + 1]
    peaks = lags[(r[1:-1] >= r[:-2]) & (r[1:-1] >= r[2:])]
    peaks = peaks[correlation[peaks] >= min_correlation]
    if len(peaks) == 0:
        return None
    chosen = int(peaks[np.argmax(correlation[peaks] >= 0.85 * correlation[peaks].max())])
    before, at, after = correlation[chosen - 1 : chosen + 2]
    curvature = before - 2 * at + after
    return chosen + (0.5 * (before - after) / curvature if curvature < 0 else 0.0)


def _fold(counts: np.ndarray, sums: np.ndarray, axis: int, period: float) -> tuple[np.ndarray, np.ndarray]:
    """Sum (A, B) counts and (A, B, 3) colour sums over the periods along ``axis`` (``period`` texels, fractional):
    texel i, centred at i + 0.5, goes to phase ``floor((i + 0.5) mod period)``, one of ``ceil(period)``."""
    length = counts.shape[axis]
    phase = np.floor(np.mod(np.arange(length) + 0.5, period)).astype(np.int64)
    onto = np.zeros((int(math.ceil(period)), length))
    onto[phase, np.arange(length)] = 1.0
    folded_counts = np.moveaxis(np.tensordot(onto, np.moveaxis(counts, axis, 0), axes=1), 0, axis)
    folded_sums = np.moveaxis(np.tensordot(onto, np.moveaxis(sums, axis, 0), axes=1), 0, axis)
    return folded_counts, folded_sums


@dataclass(frozen=True)
class PlaneTexture:
    """A plane's continued texture: an exemplar tile (uint8 (Nt, Ns, 3): rows along t, columns along s) of texel
    ``texel_m`` whose corner sits at plane coordinates ``low`` (s, t metres) of ``frame``. Along an axis with a
    period (``periods``: s, t in texels, fractional) the tile holds one period and repeats; along one without (None)
    it mirrors."""

    frame: PlaneFrame
    tile: np.ndarray
    texel_m: float
    low: np.ndarray
    periods: tuple[float | None, float | None]
    color_bins: np.ndarray
    """bool (B, B, B): the ``COLOR_BIN`` colour bins the tile's colours fall in or next to, to recognise the surface
    in a later view."""

    @property
    def period_values(self) -> tuple[float, float]:
        """``periods`` as floats, NaN along an axis without one (as the paint kernel and a saved state take them)."""
        return tuple(np.nan if period is None else period for period in self.periods)

    def paint(self, rgb: np.ndarray, pixels: np.ndarray, coordinates: np.ndarray) -> None:
        """Write into uint8 (H W, 3) ``rgb`` at the (N,) flat ``pixels`` the colours at their (N, 2) plane
        coordinates (s, t metres, of ``frame``)."""
        _paint_tile(rgb, pixels, coordinates, self.low, self.texel_m, self.tile, *self.period_values)

    def explains(self, colors: np.ndarray, share: float) -> bool:
        """Whether at least ``share`` of (N, 3) uint8 colours seen on the plane fall in this tile's colour bins."""
        bins = colors // COLOR_BIN
        return bool(self.color_bins[bins[:, 0], bins[:, 1], bins[:, 2]].mean() >= share)


@numba.njit(cache=True, nogil=True, inline="always")
def _texel_index(texel, period, size):
    """Index into a tile axis of ``size`` texels of fractional texel ``texel``: with a ``period`` (not NaN) its phase
    in the period (the last texel at most), without one mirrored into the tile (the tile, then the tile reversed,
    repeating)."""
    if not math.isnan(period):
        return min(np.int64(np.floor(texel % period)), size - 1)
    folded = np.int64(np.floor(texel)) % (2 * size)
    return folded if folded < size else 2 * size - 1 - folded


@numba.njit(cache=True, nogil=True)
def _paint_tile(rgb, pixels, coordinates, low, texel_m, tile, period_s, period_t):
    """``PlaneTexture.paint``: each pixel takes the tile's texel at its coordinates less ``low``, over ``texel_m``
    (``_texel_index`` along s, the tile's columns, and t, its rows)."""
    rows, cols = tile.shape[0], tile.shape[1]
    for k in range(pixels.shape[0]):
        col = _texel_index((coordinates[k, 0] - low[0]) / texel_m, period_s, cols)
        row = _texel_index((coordinates[k, 1] - low[1]) / texel_m, period_t, rows)
        for c in range(3):
            rgb[pixels[k], c] = tile[row, col, c]


def build_texture(frame: PlaneFrame, points_world: np.ndarray, colors: np.ndarray, footprints_m: np.ndarray,
                  options: ContinuationOptions) -> PlaneTexture | None:
    """The exemplar tile of a plane from its seen pixels: (N, 3) world points on it, (N, 3) uint8 colours and (N,)
    pixel footprints (metres). None when it shows less than ``min_tile_texels`` a side (or fewer pixels than a tile).

    The seen colours are splatted into a canvas of texels in the plane's coordinates. Along an axis where the canvas
    has a period (``texture_period``), every seen period is folded onto one (their texels averaged), so the tile
    repeats in phase with what was seen however little of each period the view showed. The tile is then the largest
    fully seen rectangle of the (folded) canvas; an axis it does not span a whole period of is mirrored instead.
    """
    if len(points_world) < options.min_tile_texels**2:
        return None
    coordinates = frame.coordinates(points_world)
    low = np.array([coordinates[:, 0].min(), coordinates[:, 1].min()])  # min(axis=0) of (N, 2) is 20x slower
    extent = np.array([coordinates[:, 0].max(), coordinates[:, 1].max()]) - low
    texel = float(np.clip(np.percentile(footprints_m, 30), options.min_texel_m, options.max_texel_m))
    texel = max(texel, float(extent.max()) / options.max_exemplar_texels)
    cells = np.floor((coordinates - low) / texel).astype(np.int64)
    cols, rows = cells[:, 0].max() + 1, cells[:, 1].max() + 1
    flat = cells[:, 1] * cols + cells[:, 0]
    counts = np.bincount(flat, minlength=rows * cols).astype(np.float64).reshape(rows, cols)
    sums = np.stack([np.bincount(flat, colors[:, c].astype(np.float64), rows * cols) for c in range(3)], axis=1)
    sums = sums.reshape(rows, cols, 3)
    periods: list[float | None] = [None, None]  # along s (the canvas's columns, axis 1) and t (its rows, axis 0)
    for k, axis in ((0, 1), (1, 0)):
        grey = sums.mean(axis=2) / np.maximum(counts, 1)
        period = texture_period(grey, counts > 0, axis, options.min_period_correlation)
        if period is not None and period >= options.min_tile_texels:
            counts, sums = _fold(counts, sums, axis, period)
            periods[k] = period
    # Close one-texel gaps (a far pixel covers more than a texel): an empty texel takes its 3x3 neighbours' mean.
    near_counts = _box_sum(counts, 1)
    near_sums = np.stack([_box_sum(sums[..., c], 1) for c in range(3)], axis=-1)
    seen = counts > 0
    image = np.where(seen[..., None], sums / np.maximum(counts, 1)[..., None],
                     near_sums / np.maximum(near_counts, 1)[..., None])
    r0, c0, r1, c1 = _largest_rectangle(seen | (near_counts > 0))
    if min(r1 - r0, c1 - c0) < options.min_tile_texels:
        return None
    periods = [periods[0] if (c0, c1) == (0, counts.shape[1]) else None,
               periods[1] if (r0, r1) == (0, counts.shape[0]) else None]
    tile = np.clip(np.rint(image[r0:r1, c0:c1]), 0, 255).astype(np.uint8)
    side = 256 // COLOR_BIN
    bins = tile.reshape(-1, 3) // COLOR_BIN
    color_bins = np.zeros((side + 2,) * 3, bool)
    color_bins[bins[:, 0] + 1, bins[:, 1] + 1, bins[:, 2] + 1] = True
    near = np.zeros((side,) * 3, bool)
    for da in range(3):
        for db in range(3):
            for dc in range(3):
                near |= color_bins[da : da + side, db : db + side, dc : dc + side]
    corner = low + texel * np.array([c0, r0])
    return PlaneTexture(frame, np.ascontiguousarray(tile), texel, corner, tuple(periods), near)


# ---------------------------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------------------------


CELL_KEY_OFFSET = 1 << 30
"""Added to both cell indices of a cell key, so both are non-negative and the key fits a signed 64-bit integer."""


@numba.njit(cache=True, nogil=True)
def _cell_keys(coordinates, cell_m):
    """(N, 2) plane coordinates (metres) -> (N,) int64 keys of their ``cell_m`` grid cells (``_cell_key``)."""
    keys = np.empty(coordinates.shape[0], np.int64)
    for n in range(coordinates.shape[0]):
        keys[n] = _cell_key(coordinates[n, 0], coordinates[n, 1], cell_m)
    return keys


@numba.njit(cache=True, nogil=True, inline="always")
def _cell_key(s, t, cell_m):
    """The key of the ``cell_m`` grid cell (i, j) holding plane coordinates (``s``, ``t``), metres:
    ``(i + CELL_KEY_OFFSET) << 32 | (j + CELL_KEY_OFFSET)``."""
    return ((np.int64(math.floor(s / cell_m)) + CELL_KEY_OFFSET) << 32) | (np.int64(math.floor(t / cell_m))
                                                                         + CELL_KEY_OFFSET)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _crossed_cells(points_cam, normal_cam, offset_cam_m, sure, to_plane, plane_origin, cell_m, fine_cells):
    """Where the rays of kept pixels (camera-frame points ``points_cam`` (N, 3), metres) cross the plane
    ``normal_cam . x + offset_cam_m = 0``, in the cells (``_cell_keys``) of its ``cell_m`` grid: the cells where a
    ray crosses it well before its surface (the view sees through the plane there; by ``SEE_THROUGH_MARGIN_M`` plus
    ``SEE_THROUGH_MARGIN_SHARE`` of the crossing's depth), the same crossings' cells of the ``fine_cells`` times finer
    grid, and the cells where a ``sure`` pixel's ray crosses it well behind its surface (something memory saw stands
    in front of the plane). Plane coordinates of a camera-frame point x are ``x @ to_plane + plane_origin``; keys
    as ``_cell_key`` gives them."""
    count = points_cam.shape[0]
    through = np.empty(count, np.int64)
    through_fine = np.empty(count, np.int64)
    covered = np.empty(count, np.int64)
    n_through = n_covered = 0
    fine_m = cell_m / fine_cells
    for i in range(count):
        x, y, depth = points_cam[i, 0], points_cam[i, 1], points_cam[i, 2]
        facing = (x * normal_cam[0] + y * normal_cam[1] + depth * normal_cam[2]) / depth
        if not facing < 0:
            continue  # the ray never meets the plane ahead: it crosses it nowhere
        crossing = -offset_cam_m / min(facing, -1e-12)  # finite: the ray meets the plane
        seen_through = crossing * (1 + SEE_THROUGH_MARGIN_SHARE) + SEE_THROUGH_MARGIN_M < depth
        in_front = sure[i] and depth + SEE_THROUGH_MARGIN_M < crossing
        if not (seen_through or in_front):
            continue
        cx, cy, cz = crossing * (x / depth), crossing * (y / depth), crossing  # the crossing point, camera frame
        s = cx * to_plane[0, 0] + cy * to_plane[1, 0] + cz * to_plane[2, 0] + plane_origin[0]
        t = cx * to_plane[0, 1] + cy * to_plane[1, 1] + cz * to_plane[2, 1] + plane_origin[1]
        if seen_through:
            through[n_through] = _cell_key(s, t, cell_m)
            through_fine[n_through] = _cell_key(s, t, fine_m)
            n_through += 1
        if in_front:
            covered[n_covered] = _cell_key(s, t, cell_m)
            n_covered += 1
    return through[:n_through], through_fine[:n_through], covered[:n_covered]


@numba.njit(cache=True, nogil=True)
def _merged(sorted_keys, keys):
    """The sorted unique union (int64) of the sorted unique array ``sorted_keys`` and ``keys``: the new keys sorted
    (once a run of repeats: neighbouring pixels' keys often are), then merged in one pass; ``sorted_keys`` itself when
    it lacks none of them."""
    runs = np.empty(len(keys), np.int64)
    distinct = 0
    for key in keys:
        if distinct == 0 or key != runs[distinct - 1]:
            runs[distinct] = key
            distinct += 1
    new = np.sort(runs[:distinct])
    out = np.empty(len(sorted_keys) + len(new), np.int64)
    count = 0
    i = 0
    for j in range(len(new)):
        key = new[j]
        if j > 0 and key == new[j - 1]:
            continue
        while i < len(sorted_keys) and sorted_keys[i] < key:
            out[count] = sorted_keys[i]
            count += 1
            i += 1
        if i < len(sorted_keys) and sorted_keys[i] == key:
            continue
        out[count] = key
        count += 1
    if count == i:  # every new key was stored already
        return sorted_keys
    out[count : count + len(sorted_keys) - i] = sorted_keys[i:]
    return out[: count + len(sorted_keys) - i]


@dataclass
class _Surface:
    """What the generator remembers of one plane across views: its frame, its texture (built once, from the first
    view that shows enough of it), and, as sorted int64 keys (``_cell_keys``) of its ``support_cell_m`` grid, the
    cells memory has shown of it (``seen``: kept pixels memory is surer of than of a continuation, render confidence
    above ``continued_confidence``) and those where a view showed something else (``blocked``: it saw through the
    plane there; ``covered``: it saw something in front).

    A plane grows only from its seen cells, never through blocked ones: what it continued comes back in later memory
    renders at the confidence it was continued with, and growing from that would let a wall creep past a corner
    frame after frame (memory's render carries the confidence, so this holds for a fresh generator instance too, e.g.
    a reloaded world); a ceiling seen once in front of a wall's plane keeps the wall from growing above it in a view
    that does not show the ceiling.
    """

    frame: PlaneFrame
    texture: PlaneTexture | None
    seen: np.ndarray
    blocked: np.ndarray
    covered: np.ndarray
    seen_fine: np.ndarray
    through_fine: np.ndarray
    """``seen`` and ``blocked`` (its seen-through part) on the fine grid (``EDGE_FINE_CELLS`` to a support cell)."""


_SURFACE_KEYS = tuple(field.name for field in dataclasses.fields(_Surface))[2:]
"""``_Surface``'s cell-key arrays (the fields after its frame and texture), in its field order."""


@dataclass
class _Surfaces:
    """The surfaces remembered of one world (or of the views generated outside one), by id in the order of use,
    least recently used first."""

    by_id: OrderedDict[int, _Surface] = dataclasses.field(default_factory=OrderedDict)
    next_id: int = 0


@numba.njit(cache=True, nogil=True)
def _half_resolution(rgb, paint):
    """The first level of the push-pull fill of uint8 (H, W, 3) ``rgb`` where bool (H, W) ``paint`` is set, at half
    resolution: float32 (3, ceil(H/2), ceil(W/2)) each 2x2 block's mean colour of its pixels not to paint (0 in a
    block of none), and float32 (ceil(H/2), ceil(W/2)) 1 where a block has such pixels, else 0: the level
    ``push_pull_fill_cpu`` would make of the means on those blocks, for ``push_pull`` to start from."""
    height, width = paint.shape
    half_h, half_w = (height + 1) // 2, (width + 1) // 2
    sums = np.zeros((half_h, half_w, 3), np.float32)
    counts = np.zeros((half_h, half_w), np.float32)
    for v in range(height):
        for u in range(width):
            if not paint[v, u]:
                counts[v // 2, u // 2] += 1
                for c in range(3):
                    sums[v // 2, u // 2, c] += rgb[v, u, c]
    means = np.empty((3, half_h, half_w), np.float32)
    known = np.empty((half_h, half_w), np.float32)
    for a in range(half_h):
        for b in range(half_w):
            count = counts[a, b]
            known[a, b] = np.float32(1.0) if count > 0 else np.float32(0.0)
            for c in range(3):
                means[c, a, b] = sums[a, b, c] / max(count, np.float32(1.0)) * known[a, b]
    return means, known


@numba.njit(cache=True, nogil=True)
def _upsample_into(rgb, where, small):
    """Write float (3, h, w) ``small`` (half resolution), rounded, into the ``where`` pixels of uint8 (H, W, 3)."""
    height, width = where.shape
    for v in range(height):
        for u in range(width):
            if where[v, u]:
                for c in range(3):
                    rgb[v, u, c] = min(255, max(0, int(small[c, v // 2, u // 2] + 0.5)))


@dataclass(frozen=True)
class _ViewPlane:
    """One surface in one view: its plane in the camera frame and where it stands."""

    surface: _Surface
    normal_cam: np.ndarray
    offset_cam_m: float
    """The view's fit, camera frame: ``normal_cam . x + offset_cam_m = 0``, camera on the positive side."""
    support: Support
    to_plane: np.ndarray
    plane_origin: np.ndarray
    """Surface coordinates of a camera-frame point ``x``: ``x @ to_plane + plane_origin`` ((3, 2) and (2,), metres)."""
    memory_confidence: float = 0.0
    """Median render confidence of the plane's shown pixels in this view (0 for a plane the view does not show): a
    continued pixel gets ``continued_confidence`` times it, so a continuation is never surer than its base."""

    def coordinates(self, points_cam: np.ndarray) -> np.ndarray:
        """(N, 2) surface coordinates (s, t) of (N, 3) camera-frame points, metres: ``points_cam @ to_plane +
        plane_origin``, the origin added column by column (adding a (2,) row to every row is 4x slower in numpy)."""
        coordinates = points_cam @ self.to_plane
        coordinates[:, 0] += self.plane_origin[0]
        coordinates[:, 1] += self.plane_origin[1]
        return coordinates


class ContinuationGenerator(Generator):
    """Continues the planes memory holds into the holes, with each plane's own texture; returns depth and
    confidence (memory's where kept, ``continued_confidence`` continued, 0 unknown). Keyword options: ``ContinuationOptions``.

    It remembers each surface it continued (``_Surface``: texture, shown and blocked cells), so a world's views agree:
    in the world's ``GeneratorState`` (``Condition.state``), so worlds sharing one instance (a server's) keep theirs
    apart; for a caller driving it outside a world, on the instance.
    """

    name: ClassVar[str] = "continue"
    max_frames: ClassVar[int] = 64
    returns_depth: ClassVar[bool] = True
    deterministic: ClassVar[bool] = True
    """What it keeps between a world's calls is the world's (``Condition.state``); calls for different worlds share
    nothing but the per-intrinsics ray cache, which holds the same values whoever fills it."""

    def __init__(self, **options: object) -> None:
        self.options = ContinuationOptions(**options)
        self._own = _Surfaces()
        """The surfaces of views generated outside a world (conditions without a ``GeneratorState``)."""
        self._rays: dict[Intrinsics, np.ndarray] = {}

    def generate(self, condition: Condition) -> GenerationResult:
        rng = np.random.default_rng(condition.seed)
        surfaces = self._own if condition.state is None else condition.state.values.setdefault(self.name, _Surfaces())
        frames, depths, confidences, plane_counts = [], [], [], []
        for pose, render in zip(condition.poses, condition.renders):
            rgb, depth, confidence, planes = self._continue_view(surfaces, pose, condition.intrinsics, render, rng)
            frames.append(rgb)
            depths.append(depth)
            confidences.append(confidence)
            plane_counts.append(planes)
        return GenerationResult(tuple(frames), tuple(depths), {"planes": plane_counts}, confidences=tuple(confidences))

    def state_arrays(self, value: _Surfaces) -> dict[str, np.ndarray]:
        """A world's remembered surfaces as named arrays: per surface, in the order of use, its id, plane frame, cell
        keys and texture."""
        arrays = {"next_id": np.array([value.next_id], np.int64), "ids": np.array(list(value.by_id), np.int64)}
        for index, surface in enumerate(value.by_id.values()):
            frame = surface.frame
            arrays[f"{index}.frame"] = np.concatenate([frame.normal, [frame.offset_m], frame.origin, frame.axis_s,
                                                       frame.axis_t])
            for name in _SURFACE_KEYS:
                arrays[f"{index}.{name}"] = getattr(surface, name)
            texture = surface.texture
            if texture is not None:
                arrays[f"{index}.tile"] = texture.tile
                arrays[f"{index}.texel"] = np.array([texture.texel_m, *texture.low, *texture.period_values])
                arrays[f"{index}.color_bins"] = texture.color_bins
        return arrays

    def state_from_arrays(self, arrays: dict[str, np.ndarray]) -> _Surfaces:
        """The surfaces ``state_arrays`` wrote."""
        surfaces = _Surfaces(OrderedDict(), int(arrays["next_id"][0]))
        for index, surface_id in enumerate(arrays["ids"].tolist()):
            values = arrays[f"{index}.frame"]
            frame = PlaneFrame(values[0:3], float(values[3]), values[4:7], values[7:10], values[10:13])
            texture = None
            if f"{index}.tile" in arrays:
                texel = arrays[f"{index}.texel"]
                periods = tuple(None if np.isnan(p) else float(p) for p in texel[3:5])
                texture = PlaneTexture(frame, arrays[f"{index}.tile"], float(texel[0]), texel[1:3], periods,
                                       arrays[f"{index}.color_bins"])
            keys = (arrays[f"{index}.{name}"] for name in _SURFACE_KEYS)
            surfaces.by_id[surface_id] = _Surface(frame, texture, *keys)
        return surfaces

    def _pixel_rays(self, intrinsics: Intrinsics) -> np.ndarray:
        """(H W, 3) float64 camera-frame rays through the pixel centres, z = 1 (cached per intrinsics)."""
        if intrinsics not in self._rays:
            self._rays[intrinsics] = intrinsics.pixel_rays(np.float64).reshape(-1, 3)
        return self._rays[intrinsics]

    def _continue_view(self, surfaces: _Surfaces, pose: Pose, intrinsics: Intrinsics, render: RenderResult,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """One view, with the world's remembered ``surfaces``: uint8 (H, W, 3) frame, float32 (H, W) depth (metres, 0
        unknown), float32 (H, W) confidence, and the number of planes it shows."""
        options = self.options
        shape = render.mask.shape
        rays_cam = self._pixel_rays(intrinsics)

        # 1. Kept pixels: memory's colour; its depth and confidence, a footprint's spread refitted on the plane of the
        # landed pixels around it (where none fits: colour only, depth 0 at step 6).
        kept = render.kept.reshape(-1)
        depth, confidence = (array.reshape(-1) for array in kept_depth(render))
        holes = np.flatnonzero(~kept)
        rgb = render.rgb.reshape(-1, 3).copy()
        if len(holes) == 0:  # nothing to continue or paint: an unfitted footprint's spread gets depth 0 (step 6)
            return self._fill_unknown(rgb, depth, confidence, shape, kept) + (0,)

        # 2. Planes of the render, fitted on a regular grid of its kept pixels.
        stride = max(1, int(math.sqrt(kept.size / options.sample_points)))
        grid = np.zeros(shape, bool)
        grid[stride // 2 :: stride, stride // 2 :: stride] = True
        sampled = np.flatnonzero(kept & grid.reshape(-1))
        points_cam = _points_on_rays(rays_cam, sampled, depth[sampled])
        sure = confidence[sampled] > options.continued_confidence  # memory saw it: not a continuation, not a spread
        grid_rc = np.stack([sampled // shape[1], sampled % shape[1]], axis=1) // stride
        grid_points = np.count_nonzero(grid)
        least = int(math.ceil(options.min_plane_share * grid_points))
        shown_least = max(3, math.ceil(MIN_SHOWN_SHARE * grid_points))
        fitted = fit_planes(points_cam, grid_rc, least // 2, options, rng)  # the smaller ones only hide (a ceiling)

        # 3. Where each plane stands: grown from its seen cells, away from where memory sees through it.
        normals = np.array([fit[0] for fit in fitted]).reshape(-1, 3)
        residuals = np.abs(points_cam @ normals.T + np.array([fit[1] for fit in fitted]))
        # A point near two planes lies where they meet (a floor under a wall's plane): it supports neither.
        near_count = np.zeros(len(points_cam), np.int64)
        for near in (residuals < EDGE_TOLERANCE_FACTOR * options.inlier_tolerance_m).T:  # sum(axis=1): 5x slower
            near_count += near
        near_one = near_count <= 1
        planes = []
        for normal, offset, inliers, spread in fitted:
            continues = bool(inliers.sum() >= least and spread >= MIN_PLANE_SPREAD_M)
            plane = self._view_plane(surfaces, normal, offset, inliers & near_one, sampled, points_cam, pose, rgb,
                                     confidence, continues=continues,
                                     shown_least=shown_least)
            if plane is not None and all(plane.surface is not other.surface for other in planes):
                planes.append(plane)
        # Remembered surfaces the view shows too little of for a fit (a sliver at the image's border, a table's front
        # seen past its corner) continue on their own plane.
        claimed = np.zeros(len(points_cam), bool)
        for fit in fitted:
            claimed |= fit[2]
        for surface in list(reversed(surfaces.by_id.values()))[:MAX_HIDING_SURFACES]:
            if any(surface is plane.surface for plane in planes):
                continue
            on = self._shows(surface, ~claimed & near_one, shown_least, sampled, points_cam, pose, rgb, confidence)
            if on is None:
                continue
            plane = self._seen_surface(surface, *surface.frame.in_camera(pose), on, sampled, points_cam, pose,
                                       confidence, continues=True)
            if plane is not None:
                planes.append(plane)
        shown = len(planes)
        # The most recently seen remembered surfaces this view does not show still hide what lies behind them (a
        # wall's plane does not continue below a floor the view does not show).
        for surface in list(reversed(surfaces.by_id.values()))[:MAX_HIDING_SURFACES]:
            if all(surface is not plane.surface for plane in planes):
                hiding = self._stand(surface, pose, points_cam, sure, continues=False, records=False)
                if hiding is not None:
                    planes.append(hiding)
        if not planes:
            return self._fill_unknown(rgb, depth, confidence, shape, kept) + (0,)

        # 4. Geometry: the nearest plane standing where each hole pixel's ray meets it, if it continues there.
        level_shape = np.max([plane.support.level.shape for plane in planes], axis=0)
        levels = np.zeros((len(planes), *level_shape), np.uint8)
        fines = np.zeros((len(planes), *np.max([plane.support.fine.shape for plane in planes], axis=0)), np.uint8)
        for index, plane in enumerate(planes):
            levels[index, : plane.support.level.shape[0], : plane.support.level.shape[1]] = plane.support.level
            fines[index, : plane.support.fine.shape[0], : plane.support.fine.shape[1]] = plane.support.fine
        probe_px = max(2, round(shape[1] * SILHOUETTE_PROBE_SHARE))
        hole_depth, hole_plane, standing, standing_depth = _meet_planes(
            rays_cam, holes, depth, shape[1], intrinsics.fx, probe_px, np.stack([p.normal_cam for p in planes]),
            np.array([p.offset_cam_m for p in planes]), np.stack([p.to_plane for p in planes]),
            np.stack([p.plane_origin for p in planes]), levels, fines,
            np.array([p.support.level.shape for p in planes]), np.stack([p.support.low for p in planes]),
            options.support_cell_m, options.max_range_m, options.min_incidence_cos)

        # 5. Texture: each continued pixel takes its surface's texture where its ray meets the plane (a surface shown
        # too little for a texture is painted with the unknown pixels); the surface remembers the cells it was
        # continued into.
        continued, continued_at, drawn_holes, drawn_at = _holes_by_plane(hole_plane, standing, len(planes))
        unpainted, painted = np.zeros(kept.size, bool), np.zeros(kept.size, bool)
        for index, plane in enumerate(planes[:shown]):
            chosen = continued[continued_at[index] : continued_at[index + 1]]
            if len(chosen) == 0:
                continue
            pixels = holes[chosen]
            hits = plane.coordinates(_points_on_rays(rays_cam, pixels, hole_depth[chosen]))
            surface = plane.surface
            if surface.texture is None:
                surface.texture = self._build_texture(plane, planes, pose, intrinsics, render, rays_cam)
            if surface.texture is None:
                unpainted[pixels] = True
            else:
                surface.texture.paint(rgb, pixels, hits)
            depth[pixels] = hole_depth[chosen]
            confidence[pixels] = options.continued_confidence * plane.memory_confidence

        # 6. Unknown pixels: where a large textured surface stands (not near enough to continue it) it is drawn, the
        # rest is the push-pull fill of the known colours: a picture only (depth 0, confidence 0: never fused).
        for index, plane in enumerate(planes):
            drawn = drawn_holes[drawn_at[index] : drawn_at[index + 1]]
            area_m2 = len(plane.surface.seen) * options.support_cell_m**2
            if len(drawn) and plane.surface.texture is not None and area_m2 >= MIN_DRAWN_AREA_M2:
                pixels = holes[drawn]
                hits = plane.coordinates(_points_on_rays(rays_cam, pixels, standing_depth[drawn]))
                plane.surface.texture.paint(rgb, pixels, hits)
                unpainted[pixels] = False
                painted[pixels] = True
        return self._fill_unknown(rgb, depth, confidence, shape, kept, unpainted, painted) + (shown,)

    @staticmethod
    def _fill_unknown(rgb: np.ndarray, depth: np.ndarray, confidence: np.ndarray, shape: tuple[int, int],
                      kept: np.ndarray, unpainted: np.ndarray | None = None,
                      painted: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat (H W, 3) colours, (H W,) float32 depths and confidences -> the view's arrays, with every
        confidence-0 pixel given depth 0, and those not ``kept`` (bool (H W,): memory's render covers them, so they
        show its colour even where its confidence is 0, a footprint's spread) but the ``painted`` ones, and the
        ``unpainted`` ones, the push-pull fill of the others' colours (mid-grey when there are no others)."""
        unknown = confidence == 0
        paint = unknown & ~kept
        if unpainted is not None:
            paint |= unpainted
        if painted is not None:
            paint &= ~painted
        if paint.all():  # nothing to fill from
            rgb[:] = EMPTY_GREY
        elif paint.any():
            # At half resolution (a quarter of the cost): 2x2 blocks average their pixels not to paint.
            image = rgb.reshape(*shape, 3)
            small = push_pull(_half_resolution(image, paint.reshape(shape)))
            _upsample_into(image, paint.reshape(shape), small)
        depth[unknown] = 0.0
        return rgb.reshape(*shape, 3), depth.reshape(shape), confidence.reshape(shape)

    def _view_plane(self, surfaces: _Surfaces, normal_cam: np.ndarray, offset_cam_m: float, inliers: np.ndarray,
                    sampled: np.ndarray, points_cam: np.ndarray, pose: Pose, rgb: np.ndarray,
                    memory_confidence: np.ndarray, *, continues: bool, shown_least: int) -> _ViewPlane | None:
        """A camera-frame plane fit (``inliers``: bool mask over the ``sampled`` kept pixels, whose camera-frame
        points are ``points_cam``; ``rgb`` the (H W, 3) colours, ``memory_confidence`` the (H W,) render confidence)
        as a surface of this view, continued into its holes (``continues``) or only hiding what lies behind it (a fit
        too small to continue from); None when it lies next to a remembered surface but off its plane (memory seen
        badly, e.g. smeared), or memory has never shown any of it at a usable angle (only this generator's
        continuation). Only inliers memory is surer of than a continuation (confidence above
        ``continued_confidence``) count as shown: what was continued and fused is not grown from. A fit too small to
        continue from that sees a remembered surface continues it when it shows ``shown_least`` sampled pixels of it
        (``_shows``)."""
        options = self.options
        # The remembered surface the fit sees stands in for the fit, so a view that sees it badly (smeared at a
        # grazing angle) does not move it; a fit no remembered surface explains is a new surface.
        surface = self._remembered(surfaces, normal_cam, offset_cam_m, inliers, sampled, points_cam, pose, rgb)
        if surface is False:
            return None
        if surface is None:
            normal_world = pose.rotation @ normal_cam
            offset_world = offset_cam_m - float(normal_world @ pose.position)
            surface = self._remember(surfaces, PlaneFrame.from_plane(normal_world, offset_world))
        else:
            normal_cam, offset_cam_m = surface.frame.in_camera(pose)
            inliers = inliers & (np.abs(points_cam @ normal_cam + offset_cam_m) < options.inlier_tolerance_m)
            # A fit too small to continue from continues a surface remembered from other views when it shows it
            # (a sliver of a table's front at the image's border).
            continues = continues or self._shows(surface, inliers, shown_least, sampled, points_cam, pose, rgb,
                                                 memory_confidence) is not None
        return self._seen_surface(surface, normal_cam, offset_cam_m, inliers, sampled, points_cam, pose,
                                  memory_confidence, continues=continues)

    def _seen_surface(self, surface: _Surface, normal_cam: np.ndarray, offset_cam_m: float, inliers: np.ndarray,
                      sampled: np.ndarray, points_cam: np.ndarray, pose: Pose, memory_confidence: np.ndarray, *,
                      continues: bool) -> _ViewPlane | None:
        """``surface`` (camera-frame plane ``normal_cam . x + offset_cam_m = 0``) in this view, where the ``inliers``
        of the ``sampled`` kept pixels (camera-frame points ``points_cam``) show it: the cells of those seen at a usable
        angle and not of this generator's continuation are seen; then where it stands (``_stand``)."""
        options = self.options
        frame = surface.frame
        to_plane = pose.rotation.T @ np.stack([frame.axis_s, frame.axis_t], axis=1)
        inliers = inliers & (_ray_cos(points_cam, normal_cam) >= options.min_incidence_cos)
        camera_st = frame.coordinates(pose.position[None])[0]
        sure = memory_confidence[sampled] > options.continued_confidence  # not a continuation memory holds
        inlier_confidence, shown = memory_confidence[sampled[inliers]], sure[inliers]
        coordinates = np.compress(shown, np.compress(inliers, points_cam, axis=0), axis=0) @ to_plane + camera_st
        surface.seen = _merged(surface.seen, _cell_keys(coordinates, options.support_cell_m))
        surface.seen_fine = _merged(surface.seen_fine,
                                    _cell_keys(coordinates, options.support_cell_m / EDGE_FINE_CELLS))
        view = self._stand(surface, pose, points_cam, sure, continues=continues)
        if view is None or not shown.any():
            return view
        return dataclasses.replace(view, memory_confidence=float(np.median(inlier_confidence[shown])))

    def _shows(self, surface: _Surface, free: np.ndarray, least: int, sampled: np.ndarray, points_cam: np.ndarray,
               pose: Pose, rgb: np.ndarray, memory_confidence: np.ndarray) -> np.ndarray | None:
        """Whether the view shows remembered ``surface`` enough to continue it though no fit large enough to continue
        found it: bool mask over the ``sampled`` kept pixels (camera-frame points ``points_cam``) of the ``free`` ones
        (of no other fit, not on an edge) on its plane that memory is surer of than a continuation, seen at a usable
        angle, when they are at least ``least`` (``MIN_SHOWN_SHARE`` of the sampled grid), have its colours (once it
        has a texture), spread along the plane (``MIN_STRIP_SPREAD_M``) and lie tight to it (``MAX_MEDIAN_RESIDUAL``:
        a plane crossing the view's surfaces at an angle meets them along a line, through the whole tolerance slab);
        else None."""
        options = self.options
        normal_cam, offset_cam_m = surface.frame.in_camera(pose)
        if offset_cam_m <= 0 or offset_cam_m > options.max_range_m:
            return None
        residuals = np.abs(points_cam @ normal_cam + offset_cam_m)
        on = (free & (residuals < options.inlier_tolerance_m)
              & (_ray_cos(points_cam, normal_cam) >= options.min_incidence_cos)
              & (memory_confidence[sampled] > options.continued_confidence))
        if on.sum() < least:
            return None
        if np.median(residuals[on]) > MAX_MEDIAN_RESIDUAL * options.inlier_tolerance_m:
            return None
        colors = np.take(rgb, sampled[on], axis=0)
        if surface.texture is not None and not surface.texture.explains(colors, options.appearance_share):
            return None
        if _least_squares_plane(points_cam, on)[2] < MIN_STRIP_SPREAD_M:
            return None
        return on

    def _stand(self, surface: _Surface, pose: Pose, points_cam: np.ndarray, sure: np.ndarray, *, continues: bool,
               records: bool = True) -> _ViewPlane | None:
        """Where ``surface`` stands in the view at ``pose``, whose kept sampled pixels have camera-frame points
        ``points_cam`` (``Support``): grown from every cell of it memory has shown, never through a blocked cell
        (this view's or an earlier one's). ``sure``: bool mask over those pixels, memory surer of them than of a
        continuation (render confidence above ``continued_confidence``); only they show something in front of the
        plane. ``continues``: False for a surface that only hides what lies behind it.
        ``records``: whether the surface remembers this view's blocked cells (for a surface the view shows; one it
        only hides with uses them for this view alone). None when the camera is behind
        the surface, memory has shown none of it, or all of it is out of range."""
        options = self.options
        frame = surface.frame
        normal_cam, offset_cam_m = frame.in_camera(pose)
        if len(surface.seen) == 0 or offset_cam_m <= 0:
            return None
        to_plane = pose.rotation.T @ np.stack([frame.axis_s, frame.axis_t], axis=1)
        plane_origin = frame.coordinates(pose.position[None])[0]
        low, high = _key_bounds(surface.seen)
        nearest = np.clip(plane_origin, low * options.support_cell_m,
                          (high + 1) * options.support_cell_m)  # of the seen cells' box, to the camera
        reach_m = options.max_range_m + options.occlusion_reach_m
        if offset_cam_m > options.max_range_m or np.linalg.norm(nearest - plane_origin) > reach_m:
            return None
        # Where kept pixels' rays cross the plane well before their surface, the view sees through it; where they
        # cross it behind their surface, the view shows something else in front of it (a wall's plane above the
        # ceiling, a floor's beyond a wall), if memory saw that: a continuation or an unfitted footprint's spread in
        # front of a plane is no evidence that the plane ends. The surface remembers both, and does not grow through
        # them (through what stands in front only where memory has not shown it on both sides: ``Support``).
        through_keys, through_fine_keys, covered_keys = _crossed_cells(
            points_cam, normal_cam, offset_cam_m, sure, to_plane, plane_origin, options.support_cell_m, EDGE_FINE_CELLS)
        blocked = (surface.blocked, through_keys)
        covered = (surface.covered, covered_keys)
        through_fine = (surface.through_fine,)
        if records or continues:  # else neither kept nor read (``Support.of``)
            through_fine += (through_fine_keys,)
        if records:  # merged into the surface's sets; a view that only hides uses its cells unmerged, once
            surface.blocked, surface.covered, surface.through_fine = (
                _merged(kept, new) for kept, new in (blocked, covered, through_fine))
        support = Support.of(surface.seen, blocked, covered, surface.seen_fine, through_fine, options,
                             continues=continues)
        return _ViewPlane(surface, normal_cam, offset_cam_m, support, to_plane, plane_origin)

    def _remembered(self, surfaces: _Surfaces, normal_cam: np.ndarray, offset_cam_m: float, inliers: np.ndarray,
                    sampled: np.ndarray, points_cam: np.ndarray, pose: Pose, rgb: np.ndarray) -> _Surface | None | bool:
        """The remembered surface a camera-frame plane fit sees: its normal within ``surface_match_deg`` of the
        fit's, at least half the fit's inliers within the inlier tolerance of its plane, and (once it has a texture)
        the inliers' colours in its colour bins. None when there is none; False when the fit lies near a surface of
        its colours (normals within the angle, inliers within ``surface_match_m`` of its plane on average) but off its
        plane (memory seen badly, e.g. smeared at a grazing angle): not to be used.
        """
        options = self.options
        normal_world = pose.rotation @ normal_cam
        cos_tolerance = math.cos(math.radians(options.surface_match_deg))
        points, colors = np.compress(inliers, points_cam, axis=0), np.take(rgb, sampled[inliers], axis=0)
        if len(points) == 0:
            return None
        found: _Surface | None | bool = None
        for key, surface in surfaces.by_id.items():
            frame = surface.frame
            if float(frame.normal @ normal_world) < cos_tolerance:
                continue
            normal_cam, offset_cam_m = frame.in_camera(pose)
            residuals = np.abs(points @ normal_cam + offset_cam_m)
            if residuals.mean() > options.surface_match_m:
                continue
            if surface.texture is not None and not surface.texture.explains(colors, options.appearance_share):
                continue
            if np.mean(residuals < options.inlier_tolerance_m) < 0.5:
                found = False
                continue
            surfaces.by_id.move_to_end(key)
            return surface
        return found

    def _remember(self, surfaces: _Surfaces, frame: PlaneFrame) -> _Surface:
        """A new surface on ``frame`` in ``surfaces`` (the least recently used dropped beyond ``cache_size``)."""
        empty = np.zeros(0, np.int64)
        surface = _Surface(frame, None, empty, empty, empty, empty, empty)
        surfaces.by_id[surfaces.next_id] = surface
        surfaces.next_id += 1
        while len(surfaces.by_id) > self.options.cache_size:
            surfaces.by_id.popitem(last=False)
        return surface

    def _build_texture(self, plane: _ViewPlane, planes: list[_ViewPlane], pose: Pose, intrinsics: Intrinsics,
                       render: RenderResult, rays_cam: np.ndarray) -> PlaneTexture | None:
        """A texture for ``plane``'s surface from every kept pixel of the render on the plane and not on the edge
        with another of the view's ``planes`` (where their colours mix); None when the render shows too little."""
        options = self.options
        depth, rgb = render.depth.reshape(-1), render.rgb.reshape(-1, 3)
        kept = np.flatnonzero(render.kept.reshape(-1))
        points_cam = _points_on_rays(rays_cam, kept, depth[kept])
        on_plane = np.abs(points_cam @ plane.normal_cam + plane.offset_cam_m) < options.inlier_tolerance_m
        for other in planes:
            if other is not plane:
                distance = np.abs(points_cam @ other.normal_cam + other.offset_cam_m)
                on_plane &= distance >= EDGE_TOLERANCE_FACTOR * options.inlier_tolerance_m
        pixels, points_cam = kept[on_plane], np.compress(on_plane, points_cam, axis=0)
        ray_cos = _ray_cos(np.take(rays_cam, pixels, axis=0), plane.normal_cam)
        footprints = points_cam[:, 2] / (intrinsics.fx * np.maximum(ray_cos, options.min_incidence_cos))
        colors = np.take(rgb, pixels, axis=0)
        return build_texture(plane.surface.frame, pose.cam_to_world(points_cam), colors, footprints, options)
