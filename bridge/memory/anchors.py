"""Local anchors (AnchorWeave): one clean point set per keyframe, kept in its own camera frame.

An ``Anchor`` holds its keyframe's source image (the reference frame handed to the generator), its depth, its pose
and intrinsics, a confidence, and its points: the depth image down-sampled in ``stride`` x ``stride`` blocks
(mean depth, colour and per-pixel confidence of the block's reliable pixels, placed at the block centre), in the
anchor's own OpenCV camera frame, metres. Pixels the frame's confidence (``RGBDFrame.confidence``) marks 0 are
guesses: the anchor keeps no depth there, so they give no points and never count as seen-through space. Pixels at
depth discontinuities ("flying pixels" between a foreground edge and the background) are left out of the points.
Each point carries its footprint size, the block's width in metres at its depth, so the renderer can splat it without
holes.

A coarse ``sketch`` of the depth (one point per retrieval grid cell) is what retrieval projects into target views; it
is derived from the depth and rebuilt after every edit.

``AnchorStore`` keeps the anchors in creation order, assigns ids, applies edits to every anchor (so removed content
never comes back through an anchor) and keeps a stacked ``AnchorIndex`` of sketches, centres and bounding spheres
for retrieval. ``KeyframePolicy`` decides when a frame becomes a new anchor.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np
import torch

from worldweave.bridge.cores import split_call
from worldweave.bridge.frames import (
    RenderResult,
    RGBDFrame,
    check_depth,
    check_mask,
    check_rgb,
)
from worldweave.bridge.memory.voxel_map import Source
from worldweave.bridge.pixel_values import to_byte
from worldweave.bridge.regions import Region
from worldweave.bridge.render import (
    DEFAULT_FOOTPRINT_FALLOFF,
    RenderBackend,
    RenderBuffers,
    SplatMode,
    render_points,
    splat_points,
)
from worldweave.bridge.storage import (
    load_array,
    read_manifest,
    save_array,
    write_manifest,
)
from worldweave.proto.errors import InvalidInputError, NotFoundError, StorageError
from worldweave.proto.geometry import Intrinsics, Pose

FORMAT_VERSION = 3
"""Saved-store layout: 2 added each anchor's ``point_confidence`` array, 3 its ``observed`` image."""
READABLE_FORMATS = (1, 2, FORMAT_VERSION)
"""Layouts ``AnchorStore.read`` accepts; format-1 anchors load with point confidence 1, formats 1 and 2 with every
pixel observed."""
SKETCH_GRID = (32, 24)
"""Sketch cells across and down an anchor's image (and the retrieval grid of a target view)."""
_SKETCH_SAMPLES = 4
"""Samples per cell side when sketching: the median of 4 x 4 depth samples stands for the cell."""
_AUTO_STRIDE_WIDTH_PX = 160
"""An automatic anchor block is about 1/160 of the image width (``AnchorOptions.stride_for``)."""
_MAX_STRIDE_PX = 16


@dataclass(frozen=True)
class AnchorOptions:
    """How a keyframe becomes an anchor's points."""

    stride_px: int | None = None
    """Block size in pixels: one point per ``stride_px`` x ``stride_px`` block (1 keeps every pixel). ``None`` picks
    it from the image width (``stride_for``): 1 below 240 pixels across, 2 at 320, 4 at 640, 8 at 1280. On real
    640x480 RGB-D, blocks of 2, 3 and 4 pixels score within 0.1 dB of one another (4 best); at 320x240 the demo
    room's revisit is 24.6 dB with 1-px blocks, 22.9 with 2 and 19.5 with 4, so blocks scale with the width."""
    edge_rel: float = 0.04
    """A pixel is a depth edge when a 4-neighbour's depth differs by more than this fraction of its own depth (or
    the neighbour has no depth); edge pixels give no points."""
    min_block_fraction: float = 0.5
    """A block yields a point when at least this fraction of its pixels have reliable (valid, non-edge) depth."""
    max_depth_m: float = 8.0
    """Depth beyond this (metres) is ignored: far readings are noisy and cover little."""

    def __post_init__(self) -> None:
        if not (self.stride_px is None or (isinstance(self.stride_px, int) and 1 <= self.stride_px <= _MAX_STRIDE_PX)):
            raise InvalidInputError(f"stride_px must be None or an integer in 1..{_MAX_STRIDE_PX}, got {self.stride_px!r}")
        if not (self.edge_rel > 0 and 0 < self.min_block_fraction <= 1 and self.max_depth_m > 0):
            raise InvalidInputError(
                f"need edge_rel > 0, 0 < min_block_fraction <= 1, max_depth_m > 0; got {self.edge_rel}, "
                f"{self.min_block_fraction}, {self.max_depth_m}"
            )

    def stride_for(self, width_px: int) -> int:
        """The block size in pixels for images ``width_px`` wide: ``stride_px``, or when it is ``None``
        ``round(width_px / 160)`` clamped to 1..16."""
        if self.stride_px is not None:
            return self.stride_px
        return min(max(round(width_px / _AUTO_STRIDE_WIDTH_PX), 1), _MAX_STRIDE_PX)


@dataclass(frozen=True)
class KeyframePolicy:
    """When a fused frame becomes a new anchor.

    A frame becomes a keyframe when the store is empty, or when existing anchors cover less than ``min_coverage``
    of its valid-depth retrieval cells, or when no anchor lies within ``max_move_m`` metres *and* ``max_turn_deg``
    degrees of it (the camera moved or turned away from every anchor).

    The defaults were tuned on real 640x480 RGB-D (``worldweave eval rgbd`` on the 7-Scenes development split, frames
    every 1/6 s): denser keyframes (3 degrees, 3 cm) raise PSNR a little but lower the coverage K anchors reach; sparser
    ones (10 degrees, 0.85 coverage) lose about 0.2 dB at the same coverage.
    """

    min_coverage: float = 0.9
    """Fraction of the new view's valid-depth cells that existing anchors must cover for it not to be a keyframe."""
    max_move_m: float = 0.05
    """Camera centre distance (metres) within which an anchor counts as near."""
    max_turn_deg: float = 5.0
    """Viewing-direction angle (degrees) within which an anchor counts as near."""

    def __post_init__(self) -> None:
        if not (0 <= self.min_coverage <= 1 and self.max_move_m >= 0 and 0 <= self.max_turn_deg <= 180):
            raise InvalidInputError(
                f"need 0 <= min_coverage <= 1, max_move_m >= 0, 0 <= max_turn_deg <= 180; got {self.min_coverage}, "
                f"{self.max_move_m}, {self.max_turn_deg}"
            )

    def decide(self, pose: Pose, coverage: float, store: AnchorStore) -> tuple[bool, str]:
        """(becomes a keyframe?, the reason) for a frame at ``pose`` whose view existing anchors cover ``coverage``."""
        if len(store) == 0:
            return True, "first frame"
        if coverage < self.min_coverage:
            return True, f"anchors cover {coverage:.2f} < {self.min_coverage} of the view"
        distance_m, angle_deg = store.index().pose_distances(pose)
        if not np.any((distance_m <= self.max_move_m) & (angle_deg <= self.max_turn_deg)):
            nearest = int(np.argmin(distance_m))
            return True, (
                f"no anchor within {self.max_move_m} m and {self.max_turn_deg} deg (nearest: "
                f"{distance_m[nearest]:.2f} m, {angle_deg[nearest]:.1f} deg)"
            )
        return False, "covered by a nearby anchor"


_PAIRWISE_FROM = 8
"""numpy sums this many float32 values or more in 8 interleaved partial sums (``_numpy_order_sum``); fewer one by one."""


@numba.njit(cache=True, nogil=True)
def _numpy_order_sum(values, n):
    """The float32 sum of ``values[:n]`` (n <= 128) in the order numpy's ``sum`` adds one contiguous run: one by one
    below 8 values, else in 8 interleaved partial sums combined pairwise, then the rest one by one."""
    if n < _PAIRWISE_FROM:
        total = np.float32(0.0)
        for i in range(n):
            total += values[i]
        return total
    partial = values[:8].copy()
    i = 8
    while i < n - n % 8:
        for j in range(8):
            partial[j] += values[i + j]
        i += 8
    total = ((partial[0] + partial[1]) + (partial[2] + partial[3])) + ((partial[4] + partial[5]) + (partial[6] + partial[7]))
    for k in range(i, n):
        total += values[k]
    return total


@numba.njit(cache=True, nogil=True)
def _block_sums(first, stop, rgb, depth, confidence, has_confidence, stride, max_depth, edge_rel, count, depth_sum,
                color_sum, confidence_sum):
    """Per ``stride`` x ``stride`` block of block rows ``first .. stop - 1`` of the image (whole blocks only), in one
    pass, into the zeroed (rows, cols) outputs: the count of reliable pixels (depth in (0, ``max_depth``] whose
    4-neighbours, the border repeating at the image edge, all have such depth within ``edge_rel`` of it, float32
    throughout) and the sums of their depth, colour and ``confidence`` (when ``has_confidence``). Float32 sums in the
    order numpy reduces ``(x.reshape(blocks) * reliable).sum(axis=(1, 3))`` (each block row's run summed, then the
    runs added), so they equal numpy's bit for bit. Each image row's reliability is found first, in one branch-free
    loop over the row, then summed block by block."""
    height, width = depth.shape
    cols = count.shape[1]
    span = cols * stride
    weight = np.empty(span, np.float32)  # the image row's pixels: 1 where reliable, else 0
    short = stride < _PAIRWISE_FROM
    run_depth = np.empty(stride, np.float32)  # a long run's values, summed in numpy's order (_numpy_order_sum)
    run_confidence = np.zeros(stride, np.float32)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for i in range(first, stop):
        for a in range(stride):
            v = i * stride + a
            row = depth[v]
            up = depth[max(v - 1, 0)]
            down = depth[min(v + 1, height - 1)]
            for u in range(span):
                z = row[u]
                limit = edge_rel * z
                left = row[max(u - 1, 0)]
                right = row[min(u + 1, width - 1)]
                reliable = (zero < z) & (z <= max_depth)
                reliable &= (zero < up[u]) & (up[u] <= max_depth) & (abs(up[u] - z) <= limit)
                reliable &= (zero < down[u]) & (down[u] <= max_depth) & (abs(down[u] - z) <= limit)
                reliable &= (zero < left) & (left <= max_depth) & (abs(left - z) <= limit)
                reliable &= (zero < right) & (right <= max_depth) & (abs(right - z) <= limit)
                weight[u] = one if reliable else zero
            for j in range(cols):
                run_count = 0
                red = green = blue = zero
                run_depth_sum = run_confidence_sum = zero  # a short run's sums, added up as numpy adds up < 8 values
                for b in range(stride):
                    u = j * stride + b
                    w = weight[u]
                    run_count += w > zero
                    red += np.float32(rgb[v, u, 0]) * w  # whole numbers: exact in any order
                    green += np.float32(rgb[v, u, 1]) * w
                    blue += np.float32(rgb[v, u, 2]) * w
                    if short:
                        run_depth_sum += row[u] * w
                        if has_confidence:
                            run_confidence_sum += confidence[v, u] * w
                    else:
                        run_depth[b] = row[u] * w
                        if has_confidence:
                            run_confidence[b] = confidence[v, u] * w
                if not short:
                    run_depth_sum = _numpy_order_sum(run_depth, stride)
                    run_confidence_sum = _numpy_order_sum(run_confidence, stride)
                color_sum[i, j, 0] += red
                color_sum[i, j, 1] += green
                color_sum[i, j, 2] += blue
                count[i, j] += np.float32(run_count)
                depth_sum[i, j] += run_depth_sum
                if has_confidence:
                    confidence_sum[i, j] += run_confidence_sum


@numba.njit(cache=True, nogil=True, parallel=True)
def _block_sums_bands(bands, rgb, depth, confidence, has_confidence, stride, max_depth, edge_rel, count, depth_sum,
                      color_sum, confidence_sum):
    """``_block_sums`` for the bands of block rows ``bands[t] .. bands[t + 1] - 1``, one thread each."""
    for t in numba.prange(len(bands) - 1):
        _block_sums(bands[t], bands[t + 1], rgb, depth, confidence, has_confidence, stride, max_depth, edge_rel, count,
                    depth_sum, color_sum, confidence_sum)


def sample_points(
    rgb: np.ndarray,
    depth: np.ndarray,
    intrinsics: Intrinsics,
    options: AnchorOptions,
    confidence: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An image's anchor points: (M, 3) float32 camera-frame metres, (M, 3) uint8 colours, (M,) float32 sizes (m)
    and (M,) float32 confidences in [0, 1].

    One point per ``options.stride_for(width)`` block with enough reliable depth: the mean depth, colour and
    ``confidence`` (float32 (H, W) in [0, 1]; ``None`` = 1) of those pixels, back-projected through the block's
    centre (pixel centres at integers). Its size is the block width in metres at that depth, ``stride * z / fx``.
    Pixels with depth 0 are not reliable, so a caller leaves guesses out by zeroing their depth.
    """
    s = options.stride_for(intrinsics.width)
    has_confidence = confidence is not None
    rows, cols = np.shape(depth)[0] // s, np.shape(depth)[1] // s
    count, depth_sum, confidence_sum = (np.zeros((rows, cols), np.float32) for _ in range(3))
    color_sum = np.zeros((rows, cols, 3), np.float32)
    args = (
        np.ascontiguousarray(rgb, np.uint8), np.ascontiguousarray(depth, np.float32),
        np.ascontiguousarray(confidence, np.float32) if has_confidence else np.zeros((1, 1), np.float32),
        has_confidence, s, np.float32(options.max_depth_m), np.float32(options.edge_rel), count, depth_sum, color_sum,
        confidence_sum,
    )
    split_call(_block_sums, _block_sums_bands, rows, *args)  # a block's sums depend on its pixels alone
    min_count = np.float32(options.min_block_fraction * s * s)  # numpy compares a float32 array in float32
    kept = int(np.count_nonzero(count >= min_count))
    points = np.empty((kept, 3), np.float32)
    colors = np.empty((kept, 3), np.uint8)
    sizes = np.empty(kept, np.float32)
    point_confidence = np.empty(kept, np.float32)
    _block_points(count, depth_sum, color_sum, confidence_sum, has_confidence, s, min_count, intrinsics.fx,
                  intrinsics.fy, intrinsics.cx, intrinsics.cy, points, colors, sizes, point_confidence)
    return points, colors, sizes, point_confidence


@numba.njit(cache=True, nogil=True)
def _block_points(count, depth_sum, color_sum, confidence_sum, has_confidence, stride, min_count, fx, fy, cx, cy,
                  points, colors, sizes, confidences):
    """``sample_points``' points from the block sums (``_block_sums``), in row-major block order: each block with at
    least ``min_count`` reliable pixels gives the mean depth ``z`` (float32) back-projected through the block's centre
    (in float64, then rounded to float32), its mean colour (rounded half to even, clipped to 0..255), its size
    ``stride * z / fx`` (float32) and its mean ``confidence`` clipped to [0, 1] (1 without ``has_confidence``):
    the float32 and float64 steps numpy takes for the same expressions, so the values equal numpy's bit for bit."""
    one = np.float32(1.0)
    n = 0
    for i in range(count.shape[0]):
        for j in range(count.shape[1]):
            if not count[i, j] >= min_count:
                continue
            safe = max(count[i, j], one)
            z = depth_sum[i, j] / safe
            u = j * stride + (stride - 1) / 2.0
            v = i * stride + (stride - 1) / 2.0
            points[n, 0] = np.float32((u - cx) / fx * np.float64(z))
            points[n, 1] = np.float32((v - cy) / fy * np.float64(z))
            points[n, 2] = z
            for c in range(3):
                colors[n, c] = to_byte(color_sum[i, j, c] / safe)
            sizes[n] = np.float32(stride) * z / np.float32(fx)
            confidences[n] = min(max(confidence_sum[i, j] / safe, np.float32(0.0)), one) if has_confidence else one
            n += 1


@numba.njit(cache=True, nogil=True)
def _sketch_cells(depth, sv, su, cu, cv, cx, cy, fx, fy, cell_px, points, valid, sizes):
    """Per sketch cell (row-major over ``cv`` x ``cu``, the cells' centre pixel coordinates) from its
    ``_SKETCH_SAMPLES`` squared depth samples (rows ``sv``, columns ``su`` of float32 ``depth``): valid when at least
    a quarter are positive, then its point through the centre at their lower median (float32 depth, float64
    arithmetic rounded to float32) and its width ``z * cell_px / fx`` in float32, as numpy computed them; at depth 0
    elsewhere."""
    samples = _SKETCH_SAMPLES
    ordered = np.empty(samples * samples, np.float32)
    for i in range(len(cv)):
        for j in range(len(cu)):
            n = 0
            for a in range(samples):
                row = sv[i * samples + a]
                for b in range(samples):
                    d = depth[row, su[j * samples + b]]
                    if d > 0:  # insertion sort: ascending, a tie after its equals
                        k = n
                        while k > 0 and ordered[k - 1] > d:
                            ordered[k] = ordered[k - 1]
                            k -= 1
                        ordered[k] = d
                        n += 1
            g = i * len(cu) + j
            valid[g] = n >= samples * samples / 4
            z = ordered[(n - 1) // 2] if valid[g] else np.float32(0.0)
            points[g, 0] = np.float32((cu[j] - cx) / fx * np.float64(z))  # -0.0 left of the centre, as numpy's
            points[g, 1] = np.float32((cv[i] - cy) / fy * np.float64(z))
            points[g, 2] = z
            sizes[g] = z * cell_px / np.float32(fx)


@functools.lru_cache(maxsize=16)
def _sketch_pixels(h: int, w: int, gw: int, gh: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For an (h, w) image sketched in gw x gh cells: the int64 rows and columns of the cells' depth samples
    (``_SKETCH_SAMPLES`` a cell side, evenly spread) and the float64 pixel coordinates of the cells' centres
    (columns, rows)."""
    fu = (np.arange(gw * _SKETCH_SAMPLES) + 0.5) * (w / (gw * _SKETCH_SAMPLES)) - 0.5
    fv = (np.arange(gh * _SKETCH_SAMPLES) + 0.5) * (h / (gh * _SKETCH_SAMPLES)) - 0.5
    su = np.clip(np.round(fu), 0, w - 1).astype(np.int64)
    sv = np.clip(np.round(fv), 0, h - 1).astype(np.int64)
    cu = (np.arange(gw) + 0.5) * (w / gw) - 0.5
    cv = (np.arange(gh) + 0.5) * (h / gh) - 0.5
    for array in (sv, su, cu, cv):
        array.flags.writeable = False
    return sv, su, cu, cv


def sketch_depth(depth: np.ndarray, intrinsics: Intrinsics, grid: tuple[int, int] = SKETCH_GRID
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coarse sketch of a depth image: ``grid`` = (cells across, cells down).

    Returns (G, 3) float32 camera-frame points (metres) through each cell's centre at the median of its sampled valid
    depth, (G,) bool validity (at least a quarter of the samples valid) and (G,) float32 cell widths in metres.
    """
    gw, gh = grid
    h, w = depth.shape
    sv, su, cu, cv = _sketch_pixels(h, w, gw, gh)
    points, valid, sizes = np.empty((gw * gh, 3), np.float32), np.empty(gw * gh, bool), np.empty(gw * gh, np.float32)
    _sketch_cells(np.ascontiguousarray(depth, dtype=np.float32), sv, su, cu, cv, intrinsics.cx, intrinsics.cy,
                  intrinsics.fx, intrinsics.fy, np.float32(w / gw), points, valid, sizes)
    return points, valid, sizes


@dataclass(eq=False)
class Anchor:
    """One keyframe's local memory. Arrays are numpy; edits replace them through ``AnchorStore``.

    ``pose``: camera-to-world (OpenCV camera, metres). ``image``: uint8 (H, W, 3), the source image, with pixels of
    removed content blanked to 0 and inserted content painted in. ``depth``: float32 (H, W) metres along the optical
    axis, 0 = unknown. ``points_cam``: (M, 3) float32 metres in this anchor's camera frame, ``colors`` (M, 3) uint8,
    ``point_size_m`` (M,) float32 footprint widths. ``confidence``: in (0, 1], weighs the anchor in the weaver.
    ``point_confidence``: (M,) float32 in [0, 1], each point's mean per-pixel confidence (how sure the generator was
    of its depth); ``None`` at construction gives 1 to every point (after it, always an array). ``observed``: bool
    (H, W), the pixels whose line of sight was observed (a seed frame's, a generated frame's where memory's render
    covered it or the backend was certain: ``line_of_sight.observed_lines``): the space in front of their depth
    counts as seen through (free) at their confidence (``queries.occupancy.view_confidence``); elsewhere (a
    generator's guess at a surface where memory showed nothing) the depth is a surface only. ``None`` at
    construction: every pixel (after it, always an array).
    """

    id: int
    frame_id: int
    pose: Pose
    intrinsics: Intrinsics
    image: np.ndarray
    depth: np.ndarray
    points_cam: np.ndarray
    colors: np.ndarray
    point_size_m: np.ndarray
    confidence: float = 1.0
    source: Source = Source.GENERATED
    point_confidence: np.ndarray | None = None
    observed: np.ndarray | None = None
    sketch_cam: np.ndarray = field(init=False, repr=False)
    """(G, 3) float32 coarse points in the camera frame (see ``sketch_depth``)."""
    sketch_valid: np.ndarray = field(init=False, repr=False)
    sketch_size_m: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        shape = self.intrinsics.shape
        self.image = check_rgb(self.image, shape, "anchor image")
        self.depth = check_depth(self.depth, shape, "anchor depth")
        points = np.ascontiguousarray(self.points_cam, dtype=np.float32)
        if points.ndim != 2 or points.shape[1] != 3 or not np.all(np.isfinite(points)):
            raise InvalidInputError(f"anchor points must be finite (M, 3), got shape {points.shape}")
        colors = np.ascontiguousarray(self.colors)
        sizes = np.ascontiguousarray(self.point_size_m, dtype=np.float32)
        if colors.dtype != np.uint8 or colors.shape != points.shape or sizes.shape != (len(points),):
            raise InvalidInputError(
                f"anchor colours must be uint8 {points.shape} and sizes ({len(points)},); got {colors.dtype} "
                f"{colors.shape}, {sizes.shape}"
            )
        if not (0 < self.confidence <= 1):
            raise InvalidInputError(f"anchor confidence must be in (0, 1], got {self.confidence!r}")
        point_confidence = (
            np.ones(len(points), np.float32) if self.point_confidence is None
            else np.ascontiguousarray(self.point_confidence, dtype=np.float32)
        )
        if point_confidence.shape != (len(points),) or not np.all((point_confidence >= 0) & (point_confidence <= 1)):
            raise InvalidInputError(
                f"anchor point_confidence must be ({len(points)},) values in [0, 1], got shape {point_confidence.shape}"
            )
        observed = np.ones(shape, bool) if self.observed is None else np.asarray(self.observed)
        if observed.dtype != np.bool_ or observed.shape != shape:
            raise InvalidInputError(f"anchor observed must be bool {shape}, got {observed.dtype} {observed.shape}")
        self.points_cam, self.colors, self.point_size_m = points, colors, sizes
        self.point_confidence, self.observed = point_confidence, observed
        self._bounds: tuple[np.ndarray, np.ndarray] | None = None
        self.resketch()

    def resketch(self) -> None:
        """Rebuild the retrieval sketch from ``depth`` (after an edit)."""
        self.sketch_cam, self.sketch_valid, self.sketch_size_m = sketch_depth(self.depth, self.intrinsics)

    @classmethod
    def from_frame(
        cls,
        frame: RGBDFrame,
        *,
        id: int,
        frame_id: int,
        options: AnchorOptions = AnchorOptions(),
        confidence: float = 1.0,
        source: Source = Source.GENERATED,
        exclude_mask: np.ndarray | None = None,
        exclude_regions: Sequence[Region] = (),
        observed: np.ndarray | None = None,
    ) -> Anchor:
        """An anchor from a fused frame. Pixels under ``exclude_mask`` (bool (H, W), True = dynamic), whose points
        fall in ``exclude_regions`` (world regions) or whose ``frame.confidence`` is 0 (guesses) get depth 0, so they
        give no points and count as unknown; the others' confidence becomes the points' ``point_confidence``.
        ``observed``: bool (H, W), the pixels whose line of sight was observed (``Anchor.observed``; None: all)."""
        depth = frame.depth.copy()
        if frame.confidence is not None:
            depth[frame.confidence <= 0] = 0.0
        if exclude_mask is not None:
            depth[check_mask(exclude_mask, frame.intrinsics.shape, "exclude_mask")] = 0.0
        if exclude_regions:
            world = frame.pose.cam_to_world(frame.intrinsics.backproject(depth).reshape(-1, 3))
            inside = np.zeros(len(world), dtype=bool)
            for region in exclude_regions:
                inside |= region.contains(world)
            depth[inside.reshape(depth.shape) & (depth > 0)] = 0.0
        points, colors, sizes, point_confidence = sample_points(frame.rgb, depth, frame.intrinsics, options,
                                                                frame.confidence)
        if observed is not None:
            observed = check_mask(observed, frame.intrinsics.shape, "observed").copy()
        return cls(id, frame_id, frame.pose, frame.intrinsics, frame.rgb.copy(), depth, points, colors, sizes,
                   confidence, source, point_confidence, observed)

    def points_world(self) -> np.ndarray:
        """(M, 3) float32 anchor points in world metres."""
        return self.pose.cam_to_world(self.points_cam).astype(np.float32)

    def pose_in_anchor(self, pose: Pose) -> Pose:
        """A camera-to-world ``pose`` expressed in this anchor's camera frame (``T_anchor_cam``)."""
        rotation = self.pose.rotation.T @ pose.rotation
        return Pose(rotation, self.pose.rotation.T @ (pose.position - self.pose.position))

    def render(
        self,
        pose: Pose,
        intrinsics: Intrinsics,
        *,
        splat: SplatMode = "footprint",
        footprint_scale: float = 1.0,
        footprint_falloff: float = DEFAULT_FOOTPRINT_FALLOFF,
        device: torch.device | str = "cpu",
        backend: RenderBackend | None = None,
        out: RenderBuffers | None = None,
    ) -> RenderResult:
        """This anchor's points seen from camera-to-world ``pose``; ``splat`` is ``"footprint"`` or ``"soft"`` (both
        without see-through holes, see ``bridge.render``). The render's confidence is its points' ``point_confidence``.

        ``device``: where the splatting runs (numba on CPU by default, torch elsewhere). ``out``: arrays to render
        into (``render_points``)."""
        points = torch.from_numpy(self.points_cam).to(device)
        return render_points(
            points, self.colors, self.pose_in_anchor(pose), intrinsics, splat=splat,
            point_size_m=self.point_size_m, footprint_scale=footprint_scale, footprint_falloff=footprint_falloff,
            backend=backend, confidence=self.point_confidence, out=out,
        )

    def _pixels_in(self, region: Region) -> np.ndarray:
        """(H, W) bool: pixels with depth whose back-projected world point lies in ``region``."""
        valid = self.depth > 0
        world = self.pose.cam_to_world(self.intrinsics.backproject(self.depth)[valid])
        out = np.zeros(self.depth.shape, dtype=bool)
        out[valid] = region.contains(world)
        return out

    def content_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) world corners (metres) of an axis-aligned box holding every point and depth pixel."""
        if self._bounds is None:
            valid = self.depth > 0
            cam = self.intrinsics.backproject(self.depth)[valid]
            world = self.pose.cam_to_world(np.concatenate([cam, self.points_cam]))
            if len(world) == 0:
                self._bounds = (np.full(3, np.inf), np.full(3, -np.inf))
            else:
                self._bounds = (world.min(axis=0), world.max(axis=0))
        return self._bounds

    def _overlaps(self, region: Region) -> bool:
        lo, hi = region.bounds()
        own_lo, own_hi = self.content_bounds()
        return bool(np.all(own_lo <= hi) and np.all(lo <= own_hi))

    def _edited(self) -> None:
        self._bounds = None
        self.resketch()


@dataclass(frozen=True)
class AnchorIndex:
    """Stacked, read-only view of a store for retrieval (numpy, CPU), A anchors, G sketch cells each.

    ``ids`` (A,) int64, in store order (creation order); ``frame_ids`` (A,) int64; ``positions`` (A, 3) float64
    camera centres (world metres); ``forwards`` (A, 3) float64 unit viewing directions; ``centers`` (A, 3) and
    ``radii`` (A,) float64 bounding spheres of the sketch (metres; radius -1 for an anchor with no valid sketch);
    ``sketch_world`` (A, G, 3) float32, ``sketch_valid`` (A, G) bool, ``sketch_size_m`` (A, G) float32.
    """

    ids: np.ndarray
    frame_ids: np.ndarray
    positions: np.ndarray
    forwards: np.ndarray
    centers: np.ndarray
    radii: np.ndarray
    sketch_world: np.ndarray
    sketch_valid: np.ndarray
    sketch_size_m: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def pose_distances(self, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
        """(A,) camera-centre distances in metres and (A,) viewing-direction angles in degrees from ``pose``."""
        distance = np.linalg.norm(self.positions - pose.position, axis=1)
        angle = np.degrees(np.arccos(np.clip(self.forwards @ pose.forward, -1.0, 1.0)))
        return distance, angle


def _index_row(anchor: Anchor) -> dict[str, np.ndarray]:
    world = anchor.pose.cam_to_world(anchor.sketch_cam).astype(np.float32)
    valid = anchor.sketch_valid
    if valid.any():
        pts = world[valid].astype(np.float64)
        center = pts.mean(axis=0)
        radius = float(np.sqrt(((pts - center) ** 2).sum(axis=1).max()) + anchor.sketch_size_m[valid].max())
    else:
        center, radius = anchor.pose.position.copy(), -1.0
    return {
        "ids": np.int64(anchor.id), "frame_ids": np.int64(anchor.frame_id), "positions": anchor.pose.position,
        "forwards": anchor.pose.forward, "centers": center, "radii": np.float64(radius), "sketch_world": world,
        "sketch_valid": valid, "sketch_size_m": anchor.sketch_size_m,
    }


class AnchorStore:
    """The anchors of one memory, in creation order, with ids from 0 up; iterate for ``Anchor`` objects."""

    def __init__(self) -> None:
        self._anchors: dict[int, Anchor] = {}
        self._next_id = 0
        self._index: AnchorIndex | None = None
        self._rows: dict[int, tuple[Anchor, dict[str, np.ndarray]]] = {}
        """Anchor id -> (the anchor, its index row): a rebuild of the index only computes the rows of anchors added or
        replaced since (edits replace an anchor, ``_writable``), so a keyframe step costs one row, not one per anchor."""

    def __len__(self) -> int:
        return len(self._anchors)

    def __iter__(self) -> Iterator[Anchor]:
        return iter(list(self._anchors.values()))

    def __getitem__(self, anchor_id: int) -> Anchor:
        try:
            return self._anchors[anchor_id]
        except KeyError:
            raise NotFoundError(f"no anchor with id {anchor_id}; ids are {list(self._anchors)[:20]}") from None

    def __contains__(self, anchor_id: object) -> bool:
        return anchor_id in self._anchors

    @property
    def ids(self) -> list[int]:
        return list(self._anchors)

    def add_frame(self, frame: RGBDFrame, *, frame_id: int, **kwargs) -> Anchor:
        """Make an anchor of ``frame`` with the next id (keyword options as in ``Anchor.from_frame``)."""
        anchor = Anchor.from_frame(frame, id=self._next_id, frame_id=frame_id, **kwargs)
        self.add(anchor)
        return anchor

    def add(self, anchor: Anchor) -> None:
        """Add a built anchor; its id must be new (ids only grow)."""
        if anchor.id in self._anchors or anchor.id < self._next_id:
            raise InvalidInputError(f"anchor id {anchor.id} is not new (next free id {self._next_id})")
        self._anchors[anchor.id] = anchor
        self._next_id = anchor.id + 1
        self._index = None

    def fork(self) -> AnchorStore:
        """A store with the same anchors, sharing them (no array is copied): an edit of either store copies an anchor
        before changing it (``_writable``), so neither sees the other's edits or additions."""
        store = AnchorStore()
        store._anchors = dict(self._anchors)
        store._next_id = self._next_id
        store._index = self._index
        store._rows = dict(self._rows)
        return store

    def _writable(self, anchor: Anchor) -> Anchor:
        """A shallow copy of ``anchor`` that replaces it in this store, for an edit to change: edits replace an
        anchor's arrays rather than writing into them, so the copy shares nothing that it will change, and a fork
        (``fork``) that holds the original never sees the edit."""
        own = copy.copy(anchor)
        self._anchors[anchor.id] = own
        return own

    def index(self) -> AnchorIndex:
        """The stacked retrieval view, rebuilt lazily after adds and edits."""
        if self._index is None:
            for anchor in self._anchors.values():
                kept = self._rows.get(anchor.id)
                if kept is None or kept[0] is not anchor:
                    self._rows[anchor.id] = (anchor, _index_row(anchor))
            self._rows = {anchor_id: self._rows[anchor_id] for anchor_id in self._anchors}
            rows = [row for _, row in self._rows.values()]
            g = SKETCH_GRID[0] * SKETCH_GRID[1]
            empty = {
                "ids": np.zeros(0, np.int64), "frame_ids": np.zeros(0, np.int64), "positions": np.zeros((0, 3)),
                "forwards": np.zeros((0, 3)), "centers": np.zeros((0, 3)), "radii": np.zeros(0),
                "sketch_world": np.zeros((0, g, 3), np.float32), "sketch_valid": np.zeros((0, g), bool),
                "sketch_size_m": np.zeros((0, g), np.float32),
            }
            stacked = {k: np.stack([r[k] for r in rows]) if rows else v for k, v in empty.items()}
            self._index = AnchorIndex(**stacked)
        return self._index

    # ------------------------------------------------------------------------------------------------- edits

    def remove(self, region: Region) -> int:
        """Drop every anchor point in ``region`` and blank the pixels that saw it (rgb 0, depth 0). Returns the
        number of anchor points removed."""
        removed = 0
        for anchor in self._anchors.values():
            if not anchor._overlaps(region):
                continue
            inside = region.contains(anchor.points_world())
            pixels = anchor._pixels_in(region)
            if not inside.any() and not pixels.any():
                continue
            anchor = self._writable(anchor)
            removed += int(inside.sum())
            anchor.points_cam, anchor.colors = anchor.points_cam[~inside], anchor.colors[~inside]
            anchor.point_size_m = anchor.point_size_m[~inside]
            anchor.point_confidence = anchor.point_confidence[~inside]
            anchor.image = anchor.image.copy()
            anchor.image[pixels] = 0
            anchor.depth = np.where(pixels, 0.0, anchor.depth).astype(np.float32)
            anchor._edited()
        self._index = None
        return removed

    def recolor(self, region: Region, rgb: Sequence[int]) -> int:
        """Set the colour of every anchor point in ``region`` and of the pixels that saw it; returns points changed."""
        color = np.asarray(rgb)
        if color.shape != (3,) or not np.all((color >= 0) & (color <= 255)):
            raise InvalidInputError(f"recolor needs an RGB triple in 0..255, got {rgb!r}")
        changed = 0
        for anchor in self._anchors.values():
            if not anchor._overlaps(region):
                continue
            inside = region.contains(anchor.points_world())
            pixels = anchor._pixels_in(region)
            changed += int(inside.sum())
            if inside.any() or pixels.any():
                anchor = self._writable(anchor)
            if inside.any():
                anchor.colors = anchor.colors.copy()
                anchor.colors[inside] = color.astype(np.uint8)
            if pixels.any():
                anchor.image = anchor.image.copy()
                anchor.image[pixels] = color.astype(np.uint8)
        return changed

    def insert(self, points_m: np.ndarray, colors: np.ndarray, point_size_m: float) -> int:
        """Add world points (metres, uint8 colours, footprint ``point_size_m``) to every anchor whose view they fall
        in, and paint them into its image and depth where they are nearer than what it saw. Returns the number of
        anchors that received points."""
        points = np.asarray(points_m, dtype=np.float32)
        colors = np.asarray(colors)
        reached = 0
        for anchor in self._anchors.values():
            cam = anchor.pose.world_to_cam(points).astype(np.float32)
            z = cam[:, 2]
            safe = np.where(z > 0, z, 1.0)
            u = anchor.intrinsics.fx * cam[:, 0] / safe + anchor.intrinsics.cx
            v = anchor.intrinsics.fy * cam[:, 1] / safe + anchor.intrinsics.cy
            seen = (z > 0) & (u >= -0.5) & (u < anchor.intrinsics.width - 0.5) & (v >= -0.5)
            seen &= v < anchor.intrinsics.height - 0.5
            if not seen.any():
                continue
            reached += 1
            anchor = self._writable(anchor)
            anchor.points_cam = np.concatenate([anchor.points_cam, cam[seen]])
            anchor.colors = np.concatenate([anchor.colors, colors[seen]])
            anchor.point_size_m = np.concatenate(
                [anchor.point_size_m, np.full(int(seen.sum()), point_size_m, np.float32)]
            )
            anchor.point_confidence = np.concatenate([anchor.point_confidence, np.ones(int(seen.sum()), np.float32)])
            painted = splat_points(
                cam[seen], Pose.identity(), anchor.intrinsics, colors=colors[seen], splat="footprint",
                point_size_m=point_size_m,
            )
            depth_new = painted.depth.numpy()
            nearer = painted.mask.numpy() & ((anchor.depth == 0) | (depth_new < anchor.depth))
            anchor.observed = anchor.observed | (nearer & (anchor.depth == 0))  # a new line of sight, as before
            anchor.image = np.where(nearer[..., None], painted.rgb.numpy(), anchor.image)
            anchor.depth = np.where(nearer, depth_new, anchor.depth).astype(np.float32)
            anchor._edited()
        self._index = None
        return reached

    # ----------------------------------------------------------------------------------------------- storage

    def write(self, folder: Path) -> None:
        """Write every anchor under ``folder`` (an existing empty folder; not atomic)."""
        records = []
        for anchor in self._anchors.values():
            sub = folder / f"{anchor.id:06d}"
            sub.mkdir()
            for name in ("image", "depth", "points_cam", "colors", "point_size_m", "point_confidence", "observed"):
                save_array(sub, name, getattr(anchor, name))
            i = anchor.intrinsics
            records.append({
                "id": anchor.id, "frame_id": anchor.frame_id, "folder": sub.name,
                "pose_c2w": anchor.pose.matrix.tolist(),
                "intrinsics": {"fx": i.fx, "fy": i.fy, "cx": i.cx, "cy": i.cy, "width": i.width, "height": i.height},
                "confidence": anchor.confidence, "source": int(anchor.source),
            })
        write_manifest(folder, {
            "kind": "anchor_store", "format_version": FORMAT_VERSION, "next_id": self._next_id, "anchors": records,
            "files": {
                "image": "uint8 (H, W, 3) source image", "depth": "float32 (H, W) metres, 0 unknown",
                "points_cam": "float32 (M, 3) metres, anchor camera frame (OpenCV)", "colors": "uint8 (M, 3)",
                "point_size_m": "float32 (M,) footprint widths, metres",
                "point_confidence": "float32 (M,) in [0, 1], the points' mean pixel confidence (format 2 on)",
                "observed": "bool (H, W), pixels whose line of sight was observed (format 3 on)",
            },
        })

    @classmethod
    def read(cls, folder: Path) -> AnchorStore:
        """Read a store written by ``write`` in any of ``READABLE_FORMATS`` (format 1: point confidence 1; formats 1
        and 2: every pixel observed)."""
        manifest = read_manifest(folder, "anchor_store", READABLE_FORMATS)
        names = ("image", "depth", "points_cam", "colors", "point_size_m")
        if manifest["format_version"] >= 2:
            names += ("point_confidence",)
        if manifest["format_version"] >= 3:
            names += ("observed",)
        store = cls()
        try:
            for record in manifest["anchors"]:
                sub = folder / record["folder"]
                arrays = {n: load_array(sub, n) for n in names}
                store.add(Anchor(
                    record["id"], record["frame_id"], Pose.from_matrix(np.asarray(record["pose_c2w"])),
                    Intrinsics(**record["intrinsics"]), confidence=record["confidence"],
                    source=Source(record["source"]), **arrays,
                ))
            store._next_id = int(manifest["next_id"])
        except (KeyError, TypeError, ValueError) as error:
            raise StorageError(f"anchor store at {folder} is malformed: {error}") from error
        return store
