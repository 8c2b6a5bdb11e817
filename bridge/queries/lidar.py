"""A spinning LiDAR simulated from memory, with the parameters of CARLA's ray-cast LiDAR.

**Pattern.** ``LidarSpec`` holds CARLA's ``sensor.lidar.ray_cast`` attributes: ``channels`` lasers spread evenly in
elevation from ``upper_fov_deg`` (ring 0) down to ``lower_fov_deg``, each firing ``points_per_channel`` times per
scan evenly across ``horizontal_fov_deg`` centred on the sensor's forward axis (azimuths
``-h/2 + (j + 1/2) h / n``, counter-clockwise seen from above), out to ``range_m``. The density is
``points_per_scan``, or CARLA's ``points_per_second`` over ``rotation_frequency_hz`` (one full rotation per scan).

**Frames.** The sensor pose is ``T_world_sensor`` (a ``Pose``: position in world metres, rotation mapping sensor
directions to world ones). The sensor frame follows ROS REP-103 like the world: x forward, y left, z up (not the
OpenCV camera axes). Points come back in the sensor frame, metres.

**Rays.** Every ray goes through ``WorldQueries.trace_first_return`` (the raycast's voxel march and free-space
test in one pass, which stops a ray where it enters unknown space) at the query's minimum-confidence level. A ray
ends at the first of: a voxel at or above the level (``hit``); a voxel below the level, or space no view has seen
through (``unknown``, no hit: a surface behind unobserved space is not what the sensor would see first); ``range_m``
through observed free space (neither flag). Never-seen space is never reported free.

**Sub-voxel hits.** A voxel DDA stops where the ray *enters* the first occupied voxel cube, which for rays grazing a
surface (a road seen from a car) lies many voxels before the surface. Each voxel keeps the mean of the points fused
into it (``VoxelMap.surface_at``); the scan fits a plane to the surface points of the 3 x 3 x 3 voxels around the
voxel the ray stopped at, intersects the ray with it, and, when the intersection lies outside that neighbourhood,
moves there and fits again (up to ``PLANE_STEPS`` times) while memory holds surface around it. A hit whose
neighbourhood is not planar, or whose plane leads away from memory, takes the point of its voxel's surface point
along the ray, kept within the voxel's cube.

**Plane cache.** A fit depends only on the surface around its voxel, so each fit is kept per voxel in the level's
``VoxelCache`` (``WorldQueries.plane_cache``: status, centroid, normal) and made again only where a change to the map
since touched that voxel's block or a neighbouring one: a scan of an unchanged region costs about its traversal, the
first scan after a step pays for the fits the step invalidated, and the answers equal fitting every time, bit for
bit.

**Intensity** in [0, 1]: the luma of the hit voxel's colour (Rec. 601: ``(0.299 R + 0.587 G + 0.114 B) / 255``, a
stand-in for reflectance) times CARLA's atmospheric attenuation ``exp(-ATTENUATION_PER_M * range_m)``; 0 without a
hit.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numba
import numpy as np

from worldweave.bridge.memory import hash_table
from worldweave.bridge.memory.voxel_keys import check_extent
from worldweave.bridge.queries.grid import BLOCK_SHIFT, block_slot_at, is_occupied, new_cache, slot_has_voxel
from worldweave.bridge.queries.world_queries import WorldQueries
from worldweave.proto import voxel_keys
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Pose

ATTENUATION_PER_M = 0.004
"""CARLA's default ``atmosphere_attenuation_rate``, 1/metres."""
LUMA = np.array([0.299, 0.587, 0.114])
"""Rec. 601 luma weights of R, G, B."""
PLANE_STEPS = 4
"""Most plane fits per ray (the first at the voxel the ray stopped at, then where the plane led)."""
MIN_PLANE_POINTS = 5
"""Fewest surface points (of 27 voxels) a plane is fitted to."""
MIN_PLANE_SPREAD = 0.5
"""Smallest RMS spread of the surface points along the plane's second axis, in voxels: points on a line (one
scan line seen from afar) span no plane."""
MAX_PLANE_THICKNESS = 0.25
"""Largest RMS distance of the surface points from their plane, in voxels, for the plane to count."""
MIN_GRAZING_COSINE = 0.02
"""Rays closer than this cosine to parallel with the plane are not intersected with it (about 1.1°)."""
_BATCH = 64
"""Rays per parallel work item (in pattern order, so neighbouring rays often refit around the same voxel)."""
_MADE = 16
"""Fits a ray batch remembers (``_refine_batch``): a voxel the plane cache missed is often missed again a few rays
on."""
PATTERN_CACHE = 4
"""Ray patterns kept (``LidarSpec.rays``): a simulation fires a few specs over and over."""
PLANE_RECORD = 7
"""Numbers a fit keeps in the plane cache: ``_fit_plane``'s status, then the centroid (world metres) and unit
normal."""


@dataclass(frozen=True)
class LidarSpec:
    """CARLA ray-cast LiDAR parameters (``sensor.lidar.ray_cast``), with units in names.

    ``channels``: lasers (rings), 1 to 256. ``range_m``: metres, > 0. ``points_per_scan``: rays per scan over all
    channels; or ``points_per_second`` with ``rotation_frequency_hz`` (a scan is one rotation): give exactly one of
    the two densities. ``upper_fov_deg`` / ``lower_fov_deg``: elevation of the top and bottom laser, degrees in
    [-90, 90], upper >= lower. ``horizontal_fov_deg``: (0, 360].
    """

    channels: int = 32
    range_m: float = 50.0
    points_per_scan: int | None = 5600
    points_per_second: float | None = None
    rotation_frequency_hz: float = 10.0
    upper_fov_deg: float = 10.0
    lower_fov_deg: float = -30.0
    horizontal_fov_deg: float = 360.0

    def __post_init__(self) -> None:
        if isinstance(self.channels, bool) or not isinstance(self.channels, (int, np.integer)) or not 1 <= self.channels <= 256:
            raise InvalidInputError(f"LiDAR channels must be an integer from 1 to 256, got {self.channels!r}")
        if not (math.isfinite(self.range_m) and self.range_m > 0):
            raise InvalidInputError(f"LiDAR range_m must be a finite number of metres > 0, got {self.range_m!r}")
        if (self.points_per_scan is None) == (self.points_per_second is None):
            raise InvalidInputError("a LiDAR needs exactly one of points_per_scan and points_per_second")
        if self.points_per_scan is not None and not self.points_per_scan >= 1:
            raise InvalidInputError(f"LiDAR points_per_scan must be >= 1, got {self.points_per_scan!r}")
        if self.points_per_second is not None:
            if not (math.isfinite(self.points_per_second) and self.points_per_second > 0):
                raise InvalidInputError(f"LiDAR points_per_second must be > 0, got {self.points_per_second!r}")
            if not (math.isfinite(self.rotation_frequency_hz) and self.rotation_frequency_hz > 0):
                raise InvalidInputError(
                    f"LiDAR rotation_frequency_hz must be > 0 with points_per_second, got {self.rotation_frequency_hz!r}"
                )
        if not (-90 <= self.lower_fov_deg <= self.upper_fov_deg <= 90):
            raise InvalidInputError(
                f"LiDAR vertical FOV must satisfy -90 <= lower_fov_deg <= upper_fov_deg <= 90 degrees, got "
                f"lower {self.lower_fov_deg!r}, upper {self.upper_fov_deg!r}"
            )
        if not 0 < self.horizontal_fov_deg <= 360:
            raise InvalidInputError(f"LiDAR horizontal_fov_deg must be in (0, 360], got {self.horizontal_fov_deg!r}")

    @property
    def points_per_channel(self) -> int:
        """Rays each laser fires per scan (at least 1): the scan's density over the channels, rounded down."""
        per_scan = self.points_per_scan if self.points_per_scan is not None else (
            self.points_per_second / self.rotation_frequency_hz
        )
        return max(1, int(per_scan // self.channels))

    @property
    def ray_count(self) -> int:
        """Rays per scan: ``channels x points_per_channel``."""
        return self.channels * self.points_per_channel

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """(ray_count, 3) float64 unit directions in the sensor frame (x forward, y left, z up) and (ray_count,)
        uint16 ring (channel) indices, ring-major: all of ring 0 (the top laser), then ring 1, ... Built once per
        spec and shared (the last ``PATTERN_CACHE`` specs'): read-only arrays."""
        return _pattern(self)


@functools.lru_cache(maxsize=PATTERN_CACHE)
def _pattern(spec: LidarSpec) -> tuple[np.ndarray, np.ndarray]:
    """``LidarSpec.rays``, computed."""
    elevation = np.radians(np.linspace(spec.upper_fov_deg, spec.lower_fov_deg, spec.channels))
    n = spec.points_per_channel
    h = math.radians(spec.horizontal_fov_deg)
    azimuth = -h / 2 + (np.arange(n) + 0.5) * h / n
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")
    directions = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1).reshape(-1, 3)
    ring = np.repeat(np.arange(spec.channels, dtype=np.uint16), n)
    directions.flags.writeable = False
    ring.flags.writeable = False
    return directions, ring


@dataclass(frozen=True)
class LidarScan:
    """One scan, one entry per ray in ``LidarSpec.rays`` order (N = ``ray_count``).

    ``points_m``: float32 (N, 3) hit points in the sensor frame (x forward, y left, z up), metres; NaN without a
    hit. ``range_m``: float64 (N,) metres from the sensor to the hit; ``inf`` without. ``intensity``: float32 (N,) in
    [0, 1] (module docstring); 0 without a hit. ``ring``: uint16 (N,) channel, 0 = top laser. ``hit``: bool (N,).
    ``unknown``: bool (N,), the ray ended in unknown space (unobserved, or a voxel below the level); never a hit.
    ``refined``: bool (N,), the hit lies on a fitted plane (else on its voxel's surface point).
    """

    points_m: np.ndarray
    range_m: np.ndarray
    intensity: np.ndarray
    ring: np.ndarray
    hit: np.ndarray
    unknown: np.ndarray
    refined: np.ndarray


def scan(
    queries: WorldQueries, pose: Pose, spec: LidarSpec, *, min_confidence: float | None = None,
    part: slice = slice(None),
) -> LidarScan:
    """Fire ``spec``'s pattern from ``pose`` (``T_world_sensor``) into ``queries``' memory at ``min_confidence`` (a
    declared level; ``None``: the default). See the module docstring for the rules. ``part``: only these rays of the
    pattern (a slice in ``LidarSpec.rays`` order; rays are independent, so scanning the pattern part by part and
    joining the parts gives the scan of the whole)."""
    if not isinstance(pose, Pose):
        raise InvalidInputError(f"the LiDAR pose must be a Pose, got {type(pose).__name__}")
    check_extent(pose.position[None], queries.voxel_map.voxel_size_m, "LiDAR pose position")
    directions_sensor, ring = spec.rays()
    directions_sensor, ring = directions_sensor[part], ring[part]
    directions = directions_sensor @ pose.rotation.T
    n = len(directions)
    level = queries.level(min_confidence)
    t_enter, voxels, hit, unknown_from = queries.trace_first_return(pose.position, directions, spec.range_m, level)
    unknown = np.isfinite(unknown_from)
    hit &= ~unknown  # a surface behind unobserved space is not what the sensor would see first
    distance = np.full(n, np.inf)
    refined = np.zeros(n, bool)
    intensity = np.zeros(n, np.float32)
    points = np.full((n, 3), np.nan, np.float32)
    rows = np.flatnonzero(hit)
    if len(rows):
        origins = np.broadcast_to(pose.position, (len(rows), 3))
        t, on_plane = surface_ranges(queries, origins, directions[rows], t_enter[rows], voxels[rows], level)
        beyond = t > spec.range_m  # the surface lies past the range, within the voxel the ray entered
        hit[rows[beyond]] = False
        rows, t, on_plane = rows[~beyond], t[~beyond], on_plane[~beyond]
        distance[rows] = t
        refined[rows] = on_plane
        colors = queries.voxel_map.colors_at(voxel_keys.pack(voxels[rows])).astype(np.float64)
        intensity[rows] = (colors @ LUMA / 255.0 * np.exp(-ATTENUATION_PER_M * t)).astype(np.float32)
        points[rows] = directions_sensor[rows] * t[:, None]
    return LidarScan(points, distance, intensity, ring.copy(), hit, unknown, refined)


def surface_ranges(
    queries: WorldQueries, origins: np.ndarray, directions: np.ndarray, t_enter: np.ndarray, voxels: np.ndarray,
    level: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-voxel ranges (metres) of rays (``origins`` (M, 3) world metres, unit ``directions``) that entered the
    occupied voxels ``voxels`` (M, 3) at ``t_enter`` (M,); and whether each lies on a plane fitted to the surface
    points of voxels at or above ``level``. Fits are read from the level's plane cache, and the fits made here (its
    misses) are added to it. See the module docstring."""
    m = len(origins)
    out_t = np.empty(m, np.float64)
    on_plane = np.zeros(m, np.bool_)
    if m:
        grid = queries.level_grid(level).arrays()
        planes = queries.plane_cache(level)
        new_keys = np.full((m, PLANE_STEPS), -1, np.int64)  # the fits this scan made (cache misses), per ray and step
        new_planes = np.empty((m, PLANE_STEPS, PLANE_RECORD))
        _refine_kernel(
            *queries.voxel_map.surface_table(), queries.voxel_map.voxel_size_m, voxel_keys.AXIS_LIMIT,
            voxel_keys.AXIS_OFFSET, voxel_keys.AXIS_BITS, *_occupancy_arrays(grid), *planes.table(),
            np.ascontiguousarray(origins, np.float64),
            np.ascontiguousarray(directions, np.float64), np.ascontiguousarray(t_enter, np.float64),
            np.ascontiguousarray(voxels, np.int64), PLANE_STEPS, MIN_PLANE_POINTS, MIN_PLANE_SPREAD,
            MAX_PLANE_THICKNESS, MIN_GRAZING_COSINE, out_t, on_plane, new_keys, new_planes,
        )
        fitted = new_keys >= 0
        planes.add(new_keys[fitted], new_planes[fitted])
    return out_t, on_plane


def _occupancy_arrays(grid: tuple) -> tuple:
    """The arrays of a ``BlockGrid.arrays()`` tuple that the kernels below read (``is_occupied``'s), one by one:
    helpers take arrays, not the tuple (``grid``'s module docstring)."""
    chunk_keys, chunk_ids, chunk_shift, _, block_mask, block_slot, occupancy, _, _, _ = grid
    return chunk_keys, chunk_ids, chunk_shift, block_mask, block_slot, occupancy


@numba.njit(cache=True, inline="always")
def _surface_point(table_keys, table_rows, shift, surface, weight, voxel, limit, offset, bits, chunk_keys, chunk_ids,
                   chunk_shift, block_mask, block_slot, occupancy, cache, ix, iy, iz, out):
    """Write the surface point (world metres) of voxel ``(ix, iy, iz)`` into ``out``; False when it is absent from
    the level's surface copy (its occupancy arrays, ``_occupancy_arrays``, answer most absent voxels without a hash
    probe)."""
    if abs(ix) > limit or abs(iy) > limit or abs(iz) > limit:
        return False
    if not is_occupied(chunk_keys, chunk_ids, chunk_shift, block_mask, block_slot, occupancy, cache, ix, iy, iz):
        return False
    key = ((ix + offset) << (2 * bits)) | ((iy + offset) << bits) | (iz + offset)
    row = hash_table.find(table_keys, table_rows, shift, key)
    if row < 0:
        return False
    has = weight[row] > 0
    out[0] = (ix + 0.5) * voxel + (surface[row, 0] if has else 0.0)
    out[1] = (iy + 0.5) * voxel + (surface[row, 1] if has else 0.0)
    out[2] = (iz + 0.5) * voxel + (surface[row, 2] if has else 0.0)
    return True


@numba.njit(cache=True)
def _smallest_eigen(a00, a01, a02, a11, a12, a22, out_normal):
    """Eigenvalues (smallest, middle) of a symmetric 3 x 3 matrix (closed form) and the unit eigenvector of the
    smallest in ``out_normal``."""
    p1 = a01 * a01 + a02 * a02 + a12 * a12
    q = (a00 + a11 + a22) / 3.0
    p2 = (a00 - q) ** 2 + (a11 - q) ** 2 + (a22 - q) ** 2 + 2.0 * p1
    if p2 <= 1e-30:
        out_normal[0], out_normal[1], out_normal[2] = 0.0, 0.0, 1.0
        return q, q
    p = math.sqrt(p2 / 6.0)
    b00, b11, b22 = (a00 - q) / p, (a11 - q) / p, (a22 - q) / p
    b01, b02, b12 = a01 / p, a02 / p, a12 / p
    r = (b00 * (b11 * b22 - b12 * b12) - b01 * (b01 * b22 - b12 * b02) + b02 * (b01 * b12 - b11 * b02)) / 2.0
    phi = math.acos(min(1.0, max(-1.0, r))) / 3.0
    largest = q + 2.0 * p * math.cos(phi)
    smallest = q + 2.0 * p * math.cos(phi + 2.0 * math.pi / 3.0)
    middle = 3.0 * q - largest - smallest
    # The smallest's eigenvector is orthogonal to the rows of A - smallest I: the largest cross product of two rows.
    r0 = (a00 - smallest, a01, a02)
    r1 = (a01, a11 - smallest, a12)
    r2 = (a02, a12, a22 - smallest)
    best = -1.0
    for u, w in ((r0, r1), (r0, r2), (r1, r2)):
        cx = u[1] * w[2] - u[2] * w[1]
        cy = u[2] * w[0] - u[0] * w[2]
        cz = u[0] * w[1] - u[1] * w[0]
        norm = cx * cx + cy * cy + cz * cz
        if norm > best:
            best = norm
            out_normal[0], out_normal[1], out_normal[2] = cx, cy, cz
    length = math.sqrt(best)
    if length <= 0.0:
        out_normal[0], out_normal[1], out_normal[2] = 0.0, 0.0, 1.0
    else:
        out_normal[0] /= length
        out_normal[1] /= length
        out_normal[2] /= length
    return smallest, middle


@numba.njit(cache=True)
def _fit_plane(table_keys, table_rows, shift, surface, weight, voxel, limit, offset, bits, chunk_keys, chunk_ids,
               chunk_shift, block_mask, block_slot, occupancy, cache, slots, shell, ax, ay, az, min_points, min_spread,
               max_thickness, out_centroid, out_normal):
    """Fit a plane to the surface points around voxel ``(ax, ay, az)``: the 3^3, else 5^3, else 7^3 neighbourhood,
    the first with ``min_points`` points not on a line. Returns 1 for a plane (thin enough), 0 for a non-planar
    neighbourhood, -1 when none has enough points.

    The 7^3 neighbourhood spans at most 2 x 2 x 2 blocks of the level's copy: their slots are read once, and each
    voxel is then one bit of its block's occupancy, read here (not a chunk and block lookup per voxel through a
    helper: the per-voxel reads are where a fit spends its time). A shell's voxels go to ``shell`` (343 x 4 int64
    scratch: key, x, y, z) with their surface rows' hash probes started (``hash_table.prefetch``), then are summed
    in that order: the probes' cache misses overlap instead of waiting one after another."""
    bx0, by0, bz0 = (ax - 3) >> BLOCK_SHIFT, (ay - 3) >> BLOCK_SHIFT, (az - 3) >> BLOCK_SHIFT
    for b in range(8):
        slots[b] = block_slot_at(chunk_keys, chunk_ids, chunk_shift, block_mask, block_slot, cache, bx0 + (b >> 2),
                                 by0 + ((b >> 1) & 1), bz0 + (b & 1))
    cx0, cy0, cz0 = (ax + 0.5) * voxel, (ay + 0.5) * voxel, (az + 0.5) * voxel
    n = 0
    sx = sy = sz = 0.0
    sxx = sxy = sxz = syy = syz = szz = 0.0
    for radius in range(1, 4):  # each neighbourhood adds the shell around the previous one
        found = 0  # the shell's voxels in the level's copy, their surface rows' probes started (``shell``)
        for dx in range(-radius, radius + 1):
            ix = ax + dx
            for dy in range(-radius, radius + 1):
                iy = ay + dy
                for dz in range(-radius, radius + 1):
                    if radius > 1 and abs(dx) < radius and abs(dy) < radius and abs(dz) < radius:
                        continue  # inner: counted at a smaller radius
                    iz = az + dz
                    if abs(ix) > limit or abs(iy) > limit or abs(iz) > limit:
                        continue
                    slot = slots[(((ix >> BLOCK_SHIFT) - bx0) << 2) | (((iy >> BLOCK_SHIFT) - by0) << 1)
                                 | ((iz >> BLOCK_SHIFT) - bz0)]
                    if slot < 0 or not slot_has_voxel(occupancy, slot, ix, iy, iz):
                        continue
                    key = ((ix + offset) << (2 * bits)) | ((iy + offset) << bits) | (iz + offset)
                    hash_table.prefetch(table_keys, table_rows, shift, key)
                    shell[found, 0], shell[found, 1], shell[found, 2], shell[found, 3] = key, ix, iy, iz
                    found += 1
        for j in range(found):  # in the same order: the same sums, bit for bit
            row = hash_table.find(table_keys, table_rows, shift, shell[j, 0])
            if row < 0:
                continue
            ix, iy, iz = shell[j, 1], shell[j, 2], shell[j, 3]
            has = weight[row] > 0  # else the voxel's centre stands for its surface point
            x = (ix + 0.5) * voxel + (surface[row, 0] if has else 0.0) - cx0  # about the anchor: less rounding
            y = (iy + 0.5) * voxel + (surface[row, 1] if has else 0.0) - cy0
            z = (iz + 0.5) * voxel + (surface[row, 2] if has else 0.0) - cz0
            n += 1
            sx += x
            sy += y
            sz += z
            sxx += x * x
            sxy += x * y
            sxz += x * z
            syy += y * y
            syz += y * z
            szz += z * z
        if n < min_points:
            continue
        mx, my, mz = sx / n, sy / n, sz / n
        smallest, middle = _smallest_eigen(
            sxx / n - mx * mx, sxy / n - mx * my, sxz / n - mx * mz, syy / n - my * my, syz / n - my * mz,
            szz / n - mz * mz, out_normal,
        )
        if middle < (min_spread * voxel) ** 2:
            continue
        out_centroid[0], out_centroid[1], out_centroid[2] = mx + cx0, my + cy0, mz + cz0
        return 1 if smallest <= (max_thickness * voxel) ** 2 else 0
    return -1


@numba.njit(cache=True, inline="always")
def _read_plane(planes, row, centroid, normal):
    """Record ``row`` of a plane table (status, centroid xyz, normal xyz): writes ``centroid`` and ``normal``,
    returns the status as int64."""
    for k in range(3):
        centroid[k] = planes[row, 1 + k]
        normal[k] = planes[row, 4 + k]
    return np.int64(planes[row, 0])


@numba.njit(cache=True, parallel=True)
def _refine_kernel(table_keys, table_rows, shift, surface, weight, voxel, limit, offset, bits, chunk_keys, chunk_ids,
                   chunk_shift, block_mask, block_slot, occupancy, cache_keys, cache_rows, cache_shift, cache_planes,
                   origins, directions, t_enter, voxels, plane_steps, min_points, min_spread, max_thickness, min_cosine,
                   out_t, on_plane, new_keys, new_planes):
    """Per ray: up to ``plane_steps`` plane fits, moving to where the plane leads until the intersection lies next to
    the voxel the plane was fitted around; without one, the fallback (its voxel's surface point along the ray, within
    the voxel's cube). A fit is read from the plane cache (``cache_*``, a ``VoxelCache.table()``, read only)
    when it holds the voxel; a fit made here goes to ``new_keys`` / ``new_planes`` (ray, step) for the caller to
    add. Rays go in batches of ``_BATCH``, one ``_refine_batch`` call each."""
    batches = (len(origins) + _BATCH - 1) // _BATCH
    for batch in numba.prange(batches):
        _refine_batch(
            table_keys, table_rows, shift, surface, weight, voxel, limit, offset, bits, chunk_keys, chunk_ids,
            chunk_shift, block_mask, block_slot, occupancy, cache_keys, cache_rows, cache_shift, cache_planes,
            origins, directions, t_enter, voxels, plane_steps, min_points, min_spread, max_thickness, min_cosine,
            out_t, on_plane, new_keys, new_planes, batch * _BATCH, min(len(origins), (batch + 1) * _BATCH),
        )


@numba.njit(cache=True)
def _refine_batch(table_keys, table_rows, shift, surface, weight, voxel, limit, offset, bits, chunk_keys, chunk_ids,
                  chunk_shift, block_mask, block_slot, occupancy, cache_keys, cache_rows, cache_shift, cache_planes,
                  origins, directions, t_enter, voxels, plane_steps, min_points, min_spread, max_thickness, min_cosine,
                  out_t, on_plane, new_keys, new_planes, start, stop):
    """``_refine_kernel`` for rays ``start`` to ``stop``, in one loop: neighbouring rays often fit around the same
    voxel, so the last plane (``centroid``, ``normal``, fitted around ``(lx, ly, lz)`` with ``_fit_plane`` status
    ``status``) is reused without a cache probe, and a cache miss looks among the batch's last ``_MADE`` fits
    before fitting (after a step, about a quarter of a scan's misses were voxels their batch had just fitted).
    (The loop body is not a function of its own: a call hands it some 30 arrays, a reference count each, which
    cost several times a cached ray's own work.)"""
    reach = math.sqrt(3.0) * voxel
    point = np.empty(3)
    centroid = np.empty(3)
    normal = np.empty(3)
    cache = new_cache()
    slots = np.empty(8, np.int64)
    shell = np.empty((7 ** 3, 4), np.int64)
    made_keys = np.full(_MADE, -1, np.int64)
    made_planes = np.empty((_MADE, PLANE_RECORD))
    made_count = 0
    lx, ly, lz = np.iinfo(np.int64).min, np.int64(0), np.int64(0)
    status = np.int64(0)
    for i in range(start, stop):
        ox, oy, oz = origins[i, 0], origins[i, 1], origins[i, 2]
        dx, dy, dz = directions[i, 0], directions[i, 1], directions[i, 2]
        ax, ay, az = voxels[i, 0], voxels[i, 1], voxels[i, 2]
        planar = False
        for step in range(plane_steps):
            if not (lx == ax and ly == ay and lz == az):
                key = np.int64(-1)  # voxels beyond the keys' extent have no key, and are fitted every time
                row = np.int64(-1)
                if abs(ax) <= limit and abs(ay) <= limit and abs(az) <= limit:
                    key = ((ax + offset) << (2 * bits)) | ((ay + offset) << bits) | (az + offset)
                    row = hash_table.find(cache_keys, cache_rows, cache_shift, key)
                if row >= 0:
                    status = _read_plane(cache_planes, row, centroid, normal)
                else:
                    made = -1  # the batch's own fits: a voxel the cache missed is often fitted again a few rays on
                    if key >= 0:
                        for j in range(_MADE):
                            if made_keys[j] == key:
                                made = j
                                break
                    if made >= 0:
                        status = _read_plane(made_planes, made, centroid, normal)
                    else:
                        status = np.int64(_fit_plane(
                            table_keys, table_rows, shift, surface, weight, voxel, limit, offset, bits, chunk_keys,
                            chunk_ids, chunk_shift, block_mask, block_slot, occupancy, cache, slots, shell, ax, ay, az,
                            min_points, min_spread, max_thickness, centroid, normal,
                        ))
                        if key >= 0:
                            new_keys[i, step] = key
                            new_planes[i, step, 0] = status
                            made = made_count % _MADE
                            made_count += 1
                            made_keys[made] = key
                            made_planes[made, 0] = status
                            for k in range(3):
                                new_planes[i, step, 1 + k] = made_planes[made, 1 + k] = centroid[k]
                                new_planes[i, step, 4 + k] = made_planes[made, 4 + k] = normal[k]
                lx, ly, lz = ax, ay, az
            if status != 1:
                break
            denominator = dx * normal[0] + dy * normal[1] + dz * normal[2]
            if abs(denominator) < min_cosine:
                break
            t_plane = ((centroid[0] - ox) * normal[0] + (centroid[1] - oy) * normal[1]
                       + (centroid[2] - oz) * normal[2]) / denominator
            if t_plane < t_enter[i] - reach:
                break
            cx = np.int64(math.floor((ox + t_plane * dx) / voxel))
            cy = np.int64(math.floor((oy + t_plane * dy) / voxel))
            cz = np.int64(math.floor((oz + t_plane * dz) / voxel))
            if abs(cx - ax) <= 1 and abs(cy - ay) <= 1 and abs(cz - az) <= 1:
                out_t[i] = t_plane
                on_plane[i] = True
                planar = True
                break
            ax, ay, az = cx, cy, cz
        if planar:
            continue
        # No plane: the fallback, the surface point of the voxel the ray stopped at.
        t = t_enter[i] + 0.5 * voxel
        if _surface_point(table_keys, table_rows, shift, surface, weight, voxel, limit, offset, bits, chunk_keys,
                          chunk_ids, chunk_shift, block_mask, block_slot, occupancy, cache, voxels[i, 0], voxels[i, 1],
                          voxels[i, 2], point):
            t = (point[0] - ox) * dx + (point[1] - oy) * dy + (point[2] - oz) * dz
        out_t[i] = min(max(t, t_enter[i]), t_enter[i] + reach)
