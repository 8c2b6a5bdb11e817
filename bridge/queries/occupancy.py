"""Occupancy of world points: occupied, free or unknown.

* **OCCUPIED**: the point's voxel is in the voxel map.
* **FREE**: not occupied, and some view's depth saw through it: the point lies in front of the camera, projects
  to a pixel ``(round(u), round(v))`` inside the image whose depth is valid (> 0), and its depth along the optical
  axis is at least ``free_margin_m`` short of that pixel's depth (a point that close to the observed surface is
  the surface's thickness, not seen-through space).
* **UNKNOWN**: everything else. A generated world is unobserved until generated; points behind surfaces, outside
  every view or under a pixel without depth stay unknown.

At a minimum confidence (``WorldQueries``' levels) only depth at or above it sees through space: each view's pixels
carry a confidence (``view_confidence``), and the kernels take, per view, a uint8 *rank* image (how many of the
declared levels each pixel's confidence reaches, ``confidence_ranks``) and the rank a pixel needs (``min_rank``; 0
skips the test). Points in voxels below the level are never free either (``WorldQueries.occupancy``).

Views are any objects with ``pose`` (camera-to-world ``Pose``), ``intrinsics`` (``Intrinsics``) and ``depth``
(float32 (H, W) metres along the optical axis, 0 = unknown): keyframe anchors, or ``RGBDFrame``. Depth values are
not scanned per call (a NaN or negative depth simply never counts as seen-through).

Rays use the same test (``unknown_from``): samples every ``step_m`` along the ray up to the hit (or the range);
the first sample that no view saw through, and that is not within the surface's thickness (``free_margin_m``) of
an occupied voxel, marks where the ray entered unknown space.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from enum import IntEnum
from typing import Protocol, runtime_checkable

import numba
import numpy as np

from worldweave.bridge.queries.grid import is_occupied, new_cache, spatial_order
from worldweave.proto.errors import InvalidFrameError
from worldweave.proto.geometry import Intrinsics, Pose

_BATCH = 256
_NO_RANKS = np.zeros(1, dtype=np.uint8)
"""Stands in for the rank images when a query needs none (``min_rank`` 0): the kernels never read it."""
_MAX_FOOTPRINT_PX = 32
"""Widest square an anchor point's confidence covers in its own image, pixels (wider footprints are clipped)."""


class Occupancy(IntEnum):
    """State of a point. ``UNKNOWN`` is 0 so that zero-filled arrays (and proto3 defaults) mean "not known"."""

    UNKNOWN = 0
    FREE = 1
    OCCUPIED = 2


@runtime_checkable
class DepthView(Protocol):
    """A camera view with metric depth: what occupancy projects points into."""

    pose: Pose
    intrinsics: Intrinsics
    depth: np.ndarray


class _Store:
    """A buffer that packings append to: its first ``end`` items are written and never change again, so every
    packing holding a prefix of it stays valid while later views are appended."""

    def __init__(self, size: int, dtype: type) -> None:
        self.buffer = np.empty(size, dtype)
        self.end = 0


def _appended(store: _Store | None, used: int, parts: Sequence[np.ndarray], dtype: type) -> tuple[_Store, np.ndarray]:
    """(store, array): the first ``used`` items of ``store`` followed by the flattened ``parts``. Written in place
    when the store's writing ends at ``used`` and it has room; else the ``used`` items and the parts go to a new
    store with half their size again spare (so views appended one by one cost their own size, amortised, and the
    spare room is at most half the packed size)."""
    size = used + sum(part.size for part in parts)
    if store is None or store.end != used or len(store.buffer) < size:
        grown = _Store(size + size // 2, dtype)
        if used:
            grown.buffer[:used] = store.buffer[:used]
        store = grown
    at = used
    for part in parts:
        store.buffer[at : at + part.size] = part.reshape(-1)
        at += part.size
    store.end = size
    return store, store.buffer[:size]


class PackedViews:
    """Views as flat kernel arrays (the kernels read them per sample, so no per-view containers to fetch from):
    ``params`` float64 (K, 16) = world-to-camera rotation (9, row-major), camera centre (3), fx, fy, cx, cy;
    ``pixels`` int64 (K, 3) = index of the view's first pixel in ``depths`` / ``ranks``, height, width; ``depths``
    float32 (P,) every view's (H, W) depth map, row-major, one after the other; ``ranks`` uint8 (P,) the views'
    rank images (``confidence_ranks``) laid out alike, read only when ``min_rank`` > 0 (else one unread zero): a
    pixel sees through space only when its rank is at least ``min_rank``.

    Views added later (a step's new keyframe) are appended (``extended``, ``ranked(..., extending=)``) into spare
    room of the same buffers, not packed anew: the packings before stay valid."""

    def __init__(self, views: Sequence[DepthView]) -> None:
        """``views`` packed, without rank images (``ranked`` adds them)."""
        self.params = np.zeros((0, 16), dtype=np.float64)
        self.pixels = np.zeros((0, 3), dtype=np.int64)
        self.depths = np.zeros(0, np.float32)
        self._depths: _Store | None = None
        self.min_rank = 0
        self.ranks = _NO_RANKS
        self._ranks: _Store | None = None
        self._add(views)

    def _add(self, views: Sequence[DepthView]) -> None:
        """Append ``views`` (checked) to this packing's arrays."""
        params = np.zeros((len(views), 16), dtype=np.float64)
        pixels = np.zeros((len(views), 3), dtype=np.int64)
        depths, first_pixel = [], len(self.depths)
        for i, view in enumerate(views):
            k = len(self) + i
            if not isinstance(view, DepthView):
                raise InvalidFrameError(f"view {k} ({type(view).__name__}) lacks pose, intrinsics or depth")
            intrinsics = view.intrinsics
            depth = np.asarray(view.depth)
            if depth.shape != intrinsics.shape or depth.dtype != np.float32:
                raise InvalidFrameError(
                    f"view {k}: depth must be float32 {intrinsics.shape} (H, W) to match its intrinsics, "
                    f"got {depth.dtype} {depth.shape}"
                )
            params[i, :9] = view.pose.rotation.T.reshape(-1)
            params[i, 9:12] = view.pose.position
            params[i, 12:] = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
            pixels[i] = first_pixel, *depth.shape
            first_pixel += depth.size
            depths.append(depth)
        self.params = np.concatenate([self.params, params])
        self.pixels = np.concatenate([self.pixels, pixels])
        self._depths, self.depths = _appended(self._depths, len(self.depths), depths, np.float32)

    def __len__(self) -> int:
        return len(self.params)

    def extended(self, views: Sequence[DepthView]) -> PackedViews:
        """These views followed by ``views``, without rank images; this packing is unchanged."""
        packed = copy.copy(self)
        packed.ranks, packed._ranks, packed.min_rank = _NO_RANKS, None, 0
        packed._add(views)
        return packed

    def ranked(self, ranks: Sequence[np.ndarray], min_rank: int, extending: PackedViews | None = None) -> PackedViews:
        """These views with rank images ``ranks`` (one per view, in order, each the view's (H, W)) and ``min_rank``;
        the view arrays are shared, not copied. ``extending``: a ranked packing of this one's first views whose rank
        images are the first of ``ranks``, at the same ``min_rank``: only the images after them are appended."""
        if len(ranks) != len(self):
            raise InvalidFrameError(f"{len(ranks)} rank images for {len(self)} views")
        start = len(extending) if extending is not None else 0
        images = []
        for k in range(start, len(ranks)):
            rank_image, shape = np.asarray(ranks[k], dtype=np.uint8), tuple(self.pixels[k, 1:].tolist())
            if rank_image.shape != shape:
                raise InvalidFrameError(f"view {k}: rank image {rank_image.shape} differs from its depth {shape}")
            images.append(rank_image)
        packed = copy.copy(self)
        # Rank images lie like the depth maps: the first views' take as many items as their depths.
        store, used = (extending._ranks, len(extending.depths)) if extending is not None else (None, 0)
        packed._ranks, packed.ranks = _appended(store, used, images, np.uint8)
        if len(packed.ranks) == 0:
            packed.ranks = _NO_RANKS
        packed.min_rank = int(min_rank)
        return packed


def _anchor_confidence(view) -> np.ndarray:
    """float32 (H, W): an anchor's per-pixel depth confidence, from its points. Each point stands for the square of
    pixels its footprint (``point_size_m``) covers in the anchor's own image, which for sampled points is exactly
    the block of pixels it was averaged from; a pixel covered by several points takes the lowest confidence, one
    covered by none (a depth edge, a sparse block: its depth is the least sure) the lowest of all the anchor's points
    (0 when it has none); 0 on the pixels whose line of sight the anchor did not observe (``Anchor.observed``: a
    guessed surface makes no free space in front of it)."""
    k = view.intrinsics
    h, w = k.shape
    out = np.full(h * w, np.inf, dtype=np.float32)
    points = np.ascontiguousarray(view.points_cam, dtype=np.float64)  # float32, or float64 after an insert
    sizes = np.ascontiguousarray(view.point_size_m, dtype=np.float64)
    confidence = np.ascontiguousarray(view.point_confidence, dtype=np.float32)
    u0, v0, width, front_confidence = _footprint_squares(points, sizes, confidence, k.fx, k.fy, k.cx, k.cy)
    _lowest_in_squares(u0, v0, width, front_confidence, h, w, out)
    lowest = front_confidence.min() if len(front_confidence) else np.float32(0.0)
    _uncovered_and_unobserved(out, lowest, np.ascontiguousarray(view.observed).reshape(-1))
    return out.reshape(h, w)


@numba.njit(cache=True, nogil=True)
def _uncovered_and_unobserved(out, lowest, observed):
    """In one pass over flat float32 ``out``: ``lowest`` where no square covered a pixel (still +inf), then 0 where
    the bool ``observed`` is False."""
    for i in range(out.shape[0]):
        if np.isinf(out[i]):
            out[i] = lowest
        if not observed[i]:
            out[i] = 0.0


@numba.njit(cache=True, nogil=True)
def _footprint_squares(points_cam, sizes_m, confidence, fx, fy, cx, cy):
    """The square of pixels each anchor point in front of its camera (float64 (N, 3) camera-frame ``points_cam``,
    metres, z > 0) covers in its own image (pinhole ``fx`` ``fy`` ``cx`` ``cy``): first column and row and width,
    from its footprint ``sizes_m`` (float64, metres), always holding the pixel its centre rounds to, at most
    ``_MAX_FOOTPRINT_PX`` wide; with its ``confidence``. Returns (first columns, first rows, widths, confidences),
    one per point in front, in point order. Float64 arithmetic, in numpy's order for the same arrays
    (``tests/test_confidence_levels.py``)."""
    n = points_cam.shape[0]
    out_u0, out_v0, out_width = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    out_confidence = np.empty(n, np.float32)
    count = 0
    for i in range(points_cam.shape[0]):
        z = points_cam[i, 2]
        if not z > 0:
            continue
        u = fx * points_cam[i, 0] / z + cx
        v = fy * points_cam[i, 1] / z + cy
        half = sizes_m[i] * fx / z / 2
        u0 = np.int64(min(np.ceil(u - half - 1e-6), np.rint(u)))
        out_u0[count] = u0
        out_v0[count] = np.int64(min(np.ceil(v - half - 1e-6), np.rint(v)))
        out_width[count] = min(max(np.int64(max(np.floor(u + half + 1e-6), np.rint(u))) - u0 + 1, 1), _MAX_FOOTPRINT_PX)
        out_confidence[count] = confidence[i]
        count += 1
    return out_u0[:count], out_v0[:count], out_width[:count], out_confidence[:count]


@numba.njit(cache=True, nogil=True)
def _lowest_in_squares(u0, v0, width, confidence, height, image_width, out):
    """Lower the flat (H W,) float32 ``out`` to ``confidence[i]`` over each point i's square of ``width[i]`` pixels
    from column ``u0[i]``, row ``v0[i]``, clipped to the image (a pixel keeps the lowest of the squares over it)."""
    for i in range(len(confidence)):
        for v in range(max(v0[i], 0), min(v0[i] + width[i], height)):
            for u in range(max(u0[i], 0), min(u0[i] + width[i], image_width)):
                at = v * image_width + u
                out[at] = min(out[at], confidence[i])


def view_confidence(view: DepthView) -> np.ndarray:
    """float32 (H, W) in [0, 1]: how sure a view is, per pixel, that it saw through the space in front of its depth.
    A keyframe anchor's comes from its points' ``point_confidence``, 0 where it did not observe the line of sight
    (``_anchor_confidence``); a frame's is its ``confidence`` array (``RGBDFrame.confidence``); a view without either
    counts as sure (1)."""
    if hasattr(view, "point_confidence"):
        return _anchor_confidence(view)
    confidence = getattr(view, "confidence", None)
    if isinstance(confidence, np.ndarray) and confidence.shape == view.intrinsics.shape:
        return confidence.astype(np.float32, copy=False)
    return np.ones(view.intrinsics.shape, dtype=np.float32)


def confidence_ranks(confidence: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """uint8 (H, W): how many of ``levels`` (ascending) each pixel's confidence reaches (``>=``, in float32)."""
    ranks = np.zeros(confidence.shape, dtype=np.uint8)
    for level in levels:
        ranks += confidence >= np.float32(level)
    return ranks


def min_rank(levels: Sequence[float], level: float) -> int:
    """The rank a pixel needs to count at ``level`` (one of ``levels``, ascending); 0 (no test) at a level of 0."""
    return 0 if level <= 0 else list(levels).index(level) + 1


@numba.njit(cache=True, inline="always")
def free_view(params, pixels, depths, ranks, min_rank, x, y, z, margin, first):
    """Index of a view (``PackedViews`` arrays) that saw through world point ``(x, y, z)`` (metres) with depth at a
    rank of at least ``min_rank``, -1 when none did; tries view ``first`` (the last one that did, for the previous
    point) first. Inlined into the kernels (numba IR): a call would count a reference per array per point."""
    k = len(params)
    for j in range(k):
        view = first + j if first + j < k else first + j - k  # (first + j) % k, without an integer division
        rx, ry, rz = x - params[view, 9], y - params[view, 10], z - params[view, 11]
        zc = params[view, 6] * rx + params[view, 7] * ry + params[view, 8] * rz
        if zc <= 0.0:
            continue
        xc = params[view, 0] * rx + params[view, 1] * ry + params[view, 2] * rz
        yc = params[view, 3] * rx + params[view, 4] * ry + params[view, 5] * rz
        u = np.floor(params[view, 12] * xc / zc + params[view, 14] + 0.5)
        v = np.floor(params[view, 13] * yc / zc + params[view, 15] + 0.5)
        h, w = pixels[view, 1], pixels[view, 2]
        if not (0.0 <= u < w and 0.0 <= v < h):
            continue
        pixel = pixels[view, 0] + np.int64(v) * w + np.int64(u)
        observed = depths[pixel]
        if not (observed > 0.0 and zc <= observed - margin):
            continue
        if min_rank == 0 or ranks[pixel] >= min_rank:
            return view
    return -1


@numba.njit(cache=True, parallel=True)
def _occupancy_kernel(grid, voxel_size, params, pixels, depths, ranks, min_rank, points, margin, out):
    table_keys, table_ids, shift, _, block_mask, block_slot, bits, _, _, _ = grid
    n = len(points)
    for batch in numba.prange((n + _BATCH - 1) // _BATCH):
        cache = new_cache()
        first = 0
        for i in range(batch * _BATCH, min(n, (batch + 1) * _BATCH)):
            x, y, z = points[i, 0], points[i, 1], points[i, 2]
            ix = np.int64(np.floor(x / voxel_size))
            iy = np.int64(np.floor(y / voxel_size))
            iz = np.int64(np.floor(z / voxel_size))
            if is_occupied(table_keys, table_ids, shift, block_mask, block_slot, bits, cache, ix, iy, iz):
                out[i] = 2
                continue
            view = free_view(params, pixels, depths, ranks, min_rank, x, y, z, margin, first)
            if view >= 0:
                first = view
                out[i] = 1
            else:
                out[i] = 0


@numba.njit(cache=True)
def near_surface(table_keys, table_ids, shift, block_mask, block_slot, bits, cache, voxel_size, x, y, z, radius):
    """True when a voxel within ``radius`` voxels (per axis) of the point's voxel is occupied."""
    ix = np.int64(np.floor(x / voxel_size))
    iy = np.int64(np.floor(y / voxel_size))
    iz = np.int64(np.floor(z / voxel_size))
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            for dz in range(-radius, radius + 1):
                if is_occupied(table_keys, table_ids, shift, block_mask, block_slot, bits, cache, ix + dx, iy + dy, iz + dz):
                    return True
    return False


@numba.njit(cache=True, parallel=True)
def _unknown_from_kernel(
    grid, voxel_size, params, pixels, depths, ranks, min_rank, origins, directions, stop, step, margin, radius, out
):
    table_keys, table_ids, shift, _, block_mask, block_slot, bits, _, _, _ = grid
    n = len(origins)
    for batch in numba.prange((n + _BATCH - 1) // _BATCH):
        cache = new_cache()
        first = 0
        for i in range(batch * _BATCH, min(n, (batch + 1) * _BATCH)):
            out[i] = np.inf
            t = 0.5 * step
            while t < stop[i]:
                x = origins[i, 0] + t * directions[i, 0]
                y = origins[i, 1] + t * directions[i, 1]
                z = origins[i, 2] + t * directions[i, 2]
                view = free_view(params, pixels, depths, ranks, min_rank, x, y, z, margin, first)
                if view >= 0:
                    first = view
                elif not near_surface(
                    table_keys, table_ids, shift, block_mask, block_slot, bits, cache, voxel_size, x, y, z, radius
                ):
                    out[i] = t
                    break
                t += step


@numba.njit(cache=True, parallel=True, nogil=True)
def _crosses_unseen_kernel(params, pixels, depths, ranks, min_rank, origin, points, step, margin, spare_share, out):
    n = len(points)
    for batch in numba.prange((n + _BATCH - 1) // _BATCH):
        first = 0
        for i in range(batch * _BATCH, min(n, (batch + 1) * _BATCH)):
            dx, dy, dz = points[i, 0] - origin[0], points[i, 1] - origin[1], points[i, 2] - origin[2]
            length = np.sqrt(dx * dx + dy * dy + dz * dz)
            stop = length * (1.0 - spare_share)
            out[i] = False
            t = 0.5 * step
            while t < stop:
                f = t / length
                view = free_view(params, pixels, depths, ranks, min_rank, origin[0] + f * dx, origin[1] + f * dy,
                                 origin[2] + f * dz, margin, first)
                if view < 0:
                    out[i] = True
                    break
                first = view
                t += step


def occupancy_codes(
    grid_arrays: tuple, voxel_size_m: float, views: PackedViews, points_m: np.ndarray, free_margin_m: float
) -> np.ndarray:
    """(N,) uint8 ``Occupancy`` codes of world points (N, 3) metres."""
    out = np.empty(len(points_m), dtype=np.uint8)
    if len(points_m):
        order = spatial_order(points_m / voxel_size_m)
        sorted_out = np.empty(len(points_m), dtype=np.uint8)
        points = np.ascontiguousarray(points_m[order])
        v, margin = float(voxel_size_m), float(free_margin_m)
        _occupancy_kernel(grid_arrays, v, views.params, views.pixels, views.depths, views.ranks, views.min_rank, points,
                          margin, sorted_out)
        out[order] = sorted_out
    return out


def surface_radius(free_margin_m: float, voxel_size_m: float) -> int:
    """Voxels (per axis, at least 1) around a sample that ``near_surface`` searches: ``free_margin_m`` rounded up
    to whole voxels."""
    return max(1, int(np.ceil(free_margin_m / voxel_size_m - 1e-9)))


def unknown_from(
    grid_arrays: tuple,
    voxel_size_m: float,
    views: PackedViews,
    origins_m: np.ndarray,
    directions: np.ndarray,
    stop_m: np.ndarray,
    step_m: float,
    free_margin_m: float,
) -> np.ndarray:
    """(N,) distance in metres along each ray (unit ``directions``) of the first sample (at the middle of each
    ``step_m`` from the origin, short of ``stop_m``; a camera centre itself is never seen through) that no view
    saw through and that is not within ``free_margin_m`` (rounded up
    to whole voxels) of an occupied voxel: the surface's own thickness is not unknown space. ``inf`` when none."""
    out = np.empty(len(origins_m), dtype=np.float64)
    radius = surface_radius(free_margin_m, voxel_size_m)
    if len(origins_m):
        _unknown_from_kernel(
            grid_arrays,
            float(voxel_size_m),
            views.params,
            views.pixels,
            views.depths,
            views.ranks,
            views.min_rank,
            np.ascontiguousarray(origins_m),
            np.ascontiguousarray(directions),
            np.ascontiguousarray(stop_m, dtype=np.float64),
            float(step_m),
            float(free_margin_m),
            radius,
            out,
        )
    return out


def crosses_unseen_space(views: PackedViews, origin_m: np.ndarray, points_m: np.ndarray, step_m: float,
                         free_margin_m: float, spare_share: float) -> np.ndarray:
    """(N,) bool: whether the segment from ``origin_m`` (3,) to each of the (N, 3) world points (metres) crosses
    space no view saw through (``free_view``): sampled at the middle of each ``step_m`` from the origin, up to
    ``spare_share`` of the segment's length short of its point (the surface's own thickness, and space a view
    grazing the surface could not see, are not counted). No voxel map is asked: space next to another surface counts
    as unseen."""
    out = np.zeros(len(points_m), dtype=np.bool_)
    if len(points_m):
        _crosses_unseen_kernel(views.params, views.pixels, views.depths, views.ranks, views.min_rank,
                               np.asarray(origin_m, np.float64), np.ascontiguousarray(points_m, dtype=np.float64),
                               float(step_m), float(free_margin_m), float(spare_share), out)
    return out


def seen_through_reference(views: Sequence[DepthView], points_m: np.ndarray, free_margin_m: float) -> np.ndarray:
    """(N,) bool: some view saw through each point (numpy, view by view; the reference for the kernels)."""
    points = np.asarray(points_m, dtype=np.float64).reshape(-1, 3)
    free = np.zeros(len(points), dtype=bool)
    for view in views:
        cam = view.pose.world_to_cam(points)
        k = view.intrinsics
        z = cam[:, 2]
        front = z > 0
        safe_z = np.where(front, z, 1.0)
        u = np.floor(k.fx * cam[:, 0] / safe_z + k.cx + 0.5)
        v = np.floor(k.fy * cam[:, 1] / safe_z + k.cy + 0.5)
        inside = front & (u >= 0) & (u < k.width) & (v >= 0) & (v < k.height)
        observed = np.zeros(len(points), dtype=np.float64)
        observed[inside] = view.depth[v[inside].astype(np.int64), u[inside].astype(np.int64)]
        free |= inside & (observed > 0) & (z <= observed - free_margin_m)
    return free
