"""Image and trajectory metrics of the benchmarks, defined once, here.

* ``psnr``: MSE over the masked pixels (all three channels) of 8-bit RGB, ``10 log10(255^2 / MSE)`` dB. The caller
  passes the pixels to score (covered ∩ valid depth). Identical images give ``PSNR_MAX_DB`` (a cap, so means and
  differences stay finite); an empty mask gives ``nan``.
* ``ssim``: the SSIM map (Gaussian window 11 x 11, sigma 1.5, data range 255, K1 = 0.01, K2 = 0.03) computed on
  each RGB channel over the whole image (reflect padding at the border) and averaged over the channels, then
  averaged over the masked pixels. Unmasked pixels still enter the windows of masked pixels near them.
* ``coverage``: ``|covered ∩ valid| / |valid|``.
* ``mean_psnr``: the mean of per-frame PSNR, skipping ``nan`` (frames with nothing to score).
* ``revisits``: a frame whose camera centre is within 0.3 m and viewing direction within 20° of a frame at least
  30 frames earlier.
* ``warping_error``: mean absolute difference (8-bit units, over RGB) between frame t and frame t-1 warped into t
  with ground-truth depth and poses (``warp_to_view``), on valid, non-occluded pixels.
* ``provenance_shares``: the share of a generated frame's pixels kept from memory (covered by memory's render, fused:
  confidence > 0 and depth > 0), generated with geometry (not covered, fused) and unknown (depth 0 or confidence 0);
  they sum to 1.
* ``score_map`` (a fused voxel map against the exact scene): the **phantom rate**, the share of voxels whose centre
  lies farther than ``SURFACE_TOLERANCE_M`` from the true surface (Open3D's closest-point distance to the scene
  mesh); the **confident-inside share**, the share of confident voxels (confidence >= ``CONFIDENT_MIN``) whose
  centre lies inside the scene's bounds (the room) widened by ``INSIDE_MARGIN_M``; and the **confident-surface
  recall**, the share of the true surface seen along a trajectory (``SeenSurface``: one exact surface point per
  ``SURFACE_CELL_M`` cell hit by the exact renders' pixels) that has a confident voxel centre within
  ``SURFACE_TOLERANCE_M``.
* ``points_inside_solids``: points drawn uniformly inside a scene's boxes (furniture, buildings), at least
  ``SOLID_INSET_M`` from every face: a world whose queries answer FREE at one of them has carved free space through
  something real.

Target RGB and depth enter these functions only to score.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from worldweave.bridge.eval.scenes import Scene
from worldweave.bridge.frames import RGBDFrame, check_confidence, check_depth, check_mask, check_rgb
from worldweave.proto import voxel_keys
from worldweave.proto.errors import InvalidFrameError, InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose

if TYPE_CHECKING:
    from worldweave.bridge.queries.world_queries import WorldQueries

PSNR_MAX_DB = 100.0
"""PSNR of two identical images (MSE 0): a cap, reached when MSE <= 255^2 * 1e-10, so every PSNR is finite."""

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_DATA_RANGE = 255.0
SSIM_K1 = 0.01
SSIM_K2 = 0.03

OCCLUSION_TOLERANCE_REL = 0.02
"""Warping error: a warped pixel is non-occluded when each of the four frame t-1 pixels it is interpolated from has
depth within this fraction (plus ``OCCLUSION_TOLERANCE_M``) of the point's depth in camera t-1."""
OCCLUSION_TOLERANCE_M = 0.01

SURFACE_TOLERANCE_M = 0.05
"""A voxel centre within this distance (metres) of the true surface lies on it (phantom rate); a surface point with
a confident voxel centre within it is recalled."""
SURFACE_CELL_M = 0.05
"""Edge (metres) of the grid cells that thin the seen surface to one sample point each (``SeenSurface``), so that
recall weighs surface by area, not by how many pixels saw it."""
CONFIDENT_MIN = 0.5
"""A voxel of at least this confidence is confident (the inside share and the recall count only those)."""
INSIDE_MARGIN_M = 0.15
"""The confident-inside share counts voxel centres within the scene's bounds widened by this (metres)."""


def _image_pair(pred_rgb: np.ndarray, target_rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    target_rgb = np.asarray(target_rgb)
    if target_rgb.ndim != 3:
        raise InvalidFrameError(f"target_rgb must be (H, W, 3) uint8, got shape {target_rgb.shape}")
    shape = target_rgb.shape[:2]
    return (
        check_rgb(pred_rgb, shape, "pred_rgb"),
        check_rgb(target_rgb, shape, "target_rgb"),
        check_mask(mask, shape, "mask"),
    )


def psnr(pred_rgb: np.ndarray, target_rgb: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB of uint8 (H, W, 3) ``pred_rgb`` against ``target_rgb`` over the pixels where bool (H, W) ``mask``.

    Returns ``nan`` when the mask is empty and ``PSNR_MAX_DB`` when the masked pixels are identical.
    """
    pred, target, mask = _image_pair(pred_rgb, target_rgb, mask)
    count = int(np.count_nonzero(mask))
    if not count:
        return math.nan
    diff = pred.astype(np.int32) - target
    # Squared errors summed as integers: exact, as a float64 sum of them is while below 2^53 (any image), so this is
    # the float mean of the masked squares to the bit, without gathering the masked pixels first.
    mse = int(np.einsum("hwc,hwc->hw", diff, diff)[mask].sum(dtype=np.int64)) / (3 * count)
    if mse <= SSIM_DATA_RANGE**2 * 10.0 ** (-PSNR_MAX_DB / 10.0):
        return PSNR_MAX_DB
    return 10.0 * math.log10(SSIM_DATA_RANGE**2 / mse)


def _gaussian_kernel() -> np.ndarray:
    offsets = np.arange(SSIM_WINDOW, dtype=np.float64) - (SSIM_WINDOW - 1) / 2.0
    kernel = np.exp(-(offsets**2) / (2.0 * SSIM_SIGMA**2))
    return kernel / kernel.sum()


def _blur(images: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur of (C, H, W) float64 images, reflect padding (edge pixel not repeated), same size.

    Written as shifted weighted sums in numpy: on a busy shared CPU this beats a threaded convolution by far.
    """
    kernel = _gaussian_kernel()
    pad = SSIM_WINDOW // 2
    out = images
    for axis in (2, 1):
        mode = "reflect" if out.shape[axis] > pad else "edge"
        widths = [(0, 0)] * 3
        widths[axis] = (pad, pad)
        padded = np.pad(out, widths, mode=mode)
        length = out.shape[axis]
        out = sum(weight * padded.take(np.arange(tap, tap + length), axis=axis) for tap, weight in enumerate(kernel))
    return out


def ssim_map(pred_rgb: np.ndarray, target_rgb: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM, float64 (H, W), averaged over the three RGB channels (see the module docstring)."""
    target_rgb = np.asarray(target_rgb)
    if target_rgb.ndim != 3:
        raise InvalidFrameError(f"target_rgb must be (H, W, 3) uint8, got shape {target_rgb.shape}")
    pred = check_rgb(pred_rgb, target_rgb.shape[:2], "pred_rgb").transpose(2, 0, 1).astype(np.float64)
    target = check_rgb(target_rgb, target_rgb.shape[:2], "target_rgb").transpose(2, 0, 1).astype(np.float64)
    c1 = (SSIM_K1 * SSIM_DATA_RANGE) ** 2
    c2 = (SSIM_K2 * SSIM_DATA_RANGE) ** 2
    mu_x, mu_y = _blur(pred), _blur(target)
    var_x = _blur(pred * pred) - mu_x * mu_x
    var_y = _blur(target * target) - mu_y * mu_y
    cov = _blur(pred * target) - mu_x * mu_y
    numerator = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (numerator / denominator).mean(axis=0)


def ssim(pred_rgb: np.ndarray, target_rgb: np.ndarray, mask: np.ndarray) -> float:
    """SSIM of uint8 (H, W, 3) ``pred_rgb`` against ``target_rgb``: the SSIM map averaged over bool (H, W) ``mask``.

    Returns ``nan`` when the mask is empty; 1.0 for identical images.
    """
    pred, target, mask = _image_pair(pred_rgb, target_rgb, mask)
    if not mask.any():
        return math.nan
    return float(ssim_map(pred, target)[mask].mean())


def coverage(covered_mask: np.ndarray, valid_depth_mask: np.ndarray) -> float:
    """Fraction of valid-depth pixels that are covered: ``|covered ∩ valid| / |valid|``; ``nan`` if none is valid."""
    valid = np.asarray(valid_depth_mask)
    valid = check_mask(valid, valid.shape, "valid_depth_mask")
    covered = check_mask(covered_mask, valid.shape, "covered_mask")
    count = int(valid.sum())
    if count == 0:
        return math.nan
    return float((covered & valid).sum()) / count


def mean_psnr(per_frame: Iterable[float]) -> float:
    """Mean of per-frame PSNR values in dB, skipping ``nan``; ``nan`` when no frame has a value."""
    values = np.asarray(list(per_frame), dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def revisits(
    poses: Sequence[Pose],
    *,
    max_distance_m: float = 0.3,
    max_angle_deg: float = 20.0,
    min_gap: int = 30,
) -> list[tuple[int, int]]:
    """Frames that come back to a place seen before, as ``(i, j)`` pairs with ``j <= i - min_gap``.

    Frame ``i`` is a revisit when some frame ``j`` at least ``min_gap`` frames earlier has its camera centre within
    ``max_distance_m`` metres and its viewing direction (camera +z) within ``max_angle_deg`` degrees. Each revisit
    frame appears once, paired with the qualifying ``j`` of smallest centre distance (ties: the earliest). Pairs are
    sorted by ``i``.
    """
    if max_distance_m < 0 or not 0 <= max_angle_deg <= 180 or min_gap < 1:
        raise InvalidInputError(
            f"revisits needs max_distance_m >= 0, max_angle_deg in [0, 180], min_gap >= 1; got "
            f"{max_distance_m}, {max_angle_deg}, {min_gap}"
        )
    if len(poses) == 0:
        return []
    centres = np.stack([p.position for p in poses])
    forwards = np.stack([p.forward for p in poses])
    cos_limit = math.cos(math.radians(max_angle_deg))
    pairs: list[tuple[int, int]] = []
    for i in range(min_gap, len(poses)):
        earlier = slice(0, i - min_gap + 1)
        distance = np.linalg.norm(centres[earlier] - centres[i], axis=1)
        cos = forwards[earlier] @ forwards[i]
        ok = (distance <= max_distance_m) & (cos >= cos_limit - 1e-12)
        if ok.any():
            candidates = np.flatnonzero(ok)
            pairs.append((i, int(candidates[np.argmin(distance[candidates])])))
    return pairs


def warp_to_view(
    rgb_src: np.ndarray,
    depth_src: np.ndarray,
    pose_src: Pose,
    depth_dst: np.ndarray,
    pose_dst: Pose,
    intrinsics: Intrinsics,
) -> tuple[np.ndarray, np.ndarray]:
    """Image ``rgb_src`` (seen from ``pose_src``) warped into the view at ``pose_dst`` with ground-truth depths.

    Every pixel of the destination view with ``depth_dst > 0`` (metres along the optical axis) is lifted to world with
    ``pose_dst`` (camera-to-world), projected into the source camera (pixel centres at integer coordinates), and
    ``rgb_src`` is sampled there bilinearly. A pixel is **visible** when the projection lies in front of the source
    camera and inside its image, and it is **not occluded**: each of its four bilinear neighbours has ground-truth
    ``depth_src > 0`` within ``OCCLUSION_TOLERANCE_REL * z + OCCLUSION_TOLERANCE_M`` of the point's depth ``z`` in the
    source camera (so a point hidden behind a nearer surface, or one straddling a depth edge, is left out).

    Returns float64 (H, W, 3) warped colours in 0..255 (0 where not visible) and the bool (H, W) visible mask.
    """
    shape = intrinsics.shape
    rgb_src = check_rgb(rgb_src, shape, "rgb_src").astype(np.float64)
    depth_src = check_depth(depth_src, shape, "depth_src").astype(np.float64)
    depth_dst = check_depth(depth_dst, shape, "depth_dst").astype(np.float64)
    h, w = shape
    v, u = np.nonzero(depth_dst > 0)
    z_dst = depth_dst[v, u]
    points_dst = np.stack([(u - intrinsics.cx) / intrinsics.fx * z_dst, (v - intrinsics.cy) / intrinsics.fy * z_dst, z_dst], axis=1)
    # Source-from-destination rigid transform; einsum, not @ (BLAS threads are slow on a busy CPU).
    rotation = pose_src.rotation.T @ pose_dst.rotation
    offset = pose_src.rotation.T @ (pose_dst.position - pose_src.position)
    points_src = np.einsum("ij,nj->ni", rotation, points_dst) + offset
    z = points_src[:, 2]
    front = z > 1e-6
    safe_z = np.where(front, z, 1.0)
    x = intrinsics.fx * points_src[:, 0] / safe_z + intrinsics.cx
    y = intrinsics.fy * points_src[:, 1] / safe_z + intrinsics.cy
    inside = front & (x >= 0) & (y >= 0) & (x <= w - 1) & (y <= h - 1)
    v, u, x, y, z = v[inside], u[inside], x[inside], y[inside], z[inside]
    # Left/top neighbour, clamped so that a point on the last row or column interpolates with weight 1 on it.
    x0 = np.clip(np.floor(x), 0, max(w - 2, 0)).astype(np.int64)
    y0 = np.clip(np.floor(y), 0, max(h - 2, 0)).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    tolerance = OCCLUSION_TOLERANCE_REL * z + OCCLUSION_TOLERANCE_M
    visible = np.ones(z.shape, dtype=bool)
    for yy, xx in ((y0, x0), (y0, x1), (y1, x0), (y1, x1)):
        neighbour_depth = depth_src[yy, xx]
        visible &= (neighbour_depth > 0) & (np.abs(neighbour_depth - z) <= tolerance)
    ax, ay = (x - x0)[:, None], (y - y0)[:, None]
    colours = (
        rgb_src[y0, x0] * (1 - ax) * (1 - ay)
        + rgb_src[y0, x1] * ax * (1 - ay)
        + rgb_src[y1, x0] * (1 - ax) * ay
        + rgb_src[y1, x1] * ax * ay
    )
    warped = np.zeros((h, w, 3))
    mask = np.zeros((h, w), dtype=bool)
    warped[v[visible], u[visible]] = colours[visible]
    mask[v[visible], u[visible]] = True
    return warped, mask


def warping_error(
    frame_t: np.ndarray,
    frame_prev: np.ndarray,
    depth_t: np.ndarray,
    pose_t: Pose,
    pose_prev: Pose,
    intrinsics: Intrinsics,
    depth_prev: np.ndarray,
) -> float:
    """Mean absolute RGB difference (8-bit units, over the three channels) between ``frame_t`` and ``frame_prev``
    warped into camera t with ground-truth depths and poses (``warp_to_view``), on valid (``depth_t > 0``),
    visible, non-occluded pixels (the occlusion test is ``warp_to_view``'s). Returns ``nan`` when no pixel counts.
    """
    rgb_t = check_rgb(frame_t, intrinsics.shape, "frame_t").astype(np.float64)
    warped, visible = warp_to_view(frame_prev, depth_prev, pose_prev, depth_t, pose_t, intrinsics)
    if not visible.any():
        return math.nan
    return float(np.mean(np.abs(warped[visible] - rgb_t[visible])))


class Provenance(NamedTuple):
    """Shares of a generated frame's pixels, each in [0, 1], summing to 1."""

    kept: float
    """Kept from memory: memory's render covered the pixel, and it was fused (confidence > 0, depth > 0)."""
    generated: float
    """Generated with geometry: memory did not cover the pixel, and it was fused (confidence > 0, depth > 0)."""
    unknown: float
    """No geometry: depth 0 or confidence 0."""


def provenance_shares(confidence: np.ndarray, depth: np.ndarray, kept_mask: np.ndarray) -> Provenance:
    """Where a generated frame's pixels come from, from the generator's float (H, W) ``confidence`` in [0, 1], the
    float32 (H, W) ``depth`` in metres (0 = unknown) that was fused and bool (H, W) ``kept_mask``, the pixels memory's
    render covered with depth (a kept pixel carries memory's confidence, which may be below 1): shares of kept /
    generated / unknown pixels."""
    depth = np.asarray(depth)
    depth = check_depth(depth, depth.shape, "depth")
    confidence = check_confidence(confidence, depth.shape)
    kept_mask = check_mask(kept_mask, depth.shape, "kept_mask")
    known = (depth > 0) & (confidence > 0)
    kept = int((known & kept_mask).sum())
    generated = int((known & ~kept_mask).sum())
    return Provenance(kept / depth.size, generated / depth.size, (depth.size - kept - generated) / depth.size)


class SeenSurface:
    """The true surface seen along a trajectory: every pixel with depth of exact RGB-D views (``add``), thinned to
    one exact surface point per ``cell_m`` grid cell (the first seen), so each patch of surface counts once."""

    def __init__(self, cell_m: float = SURFACE_CELL_M) -> None:
        if not (math.isfinite(cell_m) and cell_m > 0):
            raise InvalidInputError(f"SeenSurface cell_m must be a finite number of metres > 0, got {cell_m!r}")
        self.cell_m = float(cell_m)
        self._keys: list[np.ndarray] = []
        self._points: list[np.ndarray] = []
        self._rays_cam: dict[Intrinsics, np.ndarray] = {}
        """Camera-frame rays through pixel centres (z = 1), (H W, 3) float64, per intrinsics."""

    def add(self, frame: RGBDFrame) -> None:
        """Add the surface points behind ``frame``'s pixels with depth > 0 (world metres, via its pose)."""
        if frame.intrinsics not in self._rays_cam:
            self._rays_cam[frame.intrinsics] = frame.intrinsics.pixel_rays(np.float64).reshape(-1, 3)
        depth = frame.depth.reshape(-1)
        valid = depth > 0
        points_cam = self._rays_cam[frame.intrinsics][valid] * depth[valid, None]
        # einsum, not @: a (N, 3) x (3, 3) product through BLAS threads is several times slower on a busy CPU.
        points = np.einsum("ij,nj->ni", frame.pose.rotation, points_cam) + frame.pose.position
        keys, first = np.unique(voxel_keys.pack(np.floor(points / self.cell_m)), return_index=True)
        self._keys.append(keys)
        self._points.append(points[first])

    @property
    def points_m(self) -> np.ndarray:
        """(M, 3) float64 world points, metres: one per grid cell of surface seen so far."""
        if not self._keys:
            return np.empty((0, 3))
        _, first = np.unique(np.concatenate(self._keys), return_index=True)
        return np.concatenate(self._points)[first]


def _has_neighbour(queries_m: np.ndarray, candidates_m: np.ndarray, radius_m: float) -> np.ndarray:
    """(N,) bool: which (N, 3) query points have one of the (M, 3) candidate points within ``radius_m`` metres."""
    queries = np.ascontiguousarray(queries_m, np.float32).reshape(-1, 3)
    candidates = np.ascontiguousarray(candidates_m, np.float32).reshape(-1, 3)
    if len(queries) == 0 or len(candidates) == 0:
        return np.zeros(len(queries), bool)
    from worldweave.bridge.open3d_import import load_open3d  # the benchmark's edge only

    o3d = load_open3d()
    # A radius search, not a nearest-neighbour one: k-d tree descents for far queries cost seconds.
    search = o3d.core.nns.NearestNeighborSearch(o3d.core.Tensor(candidates))
    search.hybrid_index(radius_m)
    _, _, found = search.hybrid_search(o3d.core.Tensor(queries), radius_m, 1)
    return found.numpy().reshape(-1) > 0


@dataclass(frozen=True)
class MapScores:
    """A fused voxel map scored against the exact scene (see the module docstring)."""

    voxels: int
    confident_voxels: int
    """Voxels of confidence >= the ``min_confidence`` scored with."""
    phantom_rate: float
    """Share of all voxels farther than the tolerance from the true surface; nan for an empty map."""
    confident_inside_share: float
    """Share of confident voxels inside the scene's bounds (+ margin); nan when none is confident."""
    confident_surface_recall: float
    """Share of the seen surface's points with a confident voxel within the tolerance; nan when no surface was seen."""


def score_map(
    scene: Scene,
    positions_m: np.ndarray,
    confidence: np.ndarray,
    surface_points_m: np.ndarray,
    *,
    min_confidence: float = CONFIDENT_MIN,
    tolerance_m: float = SURFACE_TOLERANCE_M,
    margin_m: float = INSIDE_MARGIN_M,
) -> MapScores:
    """Score voxel centres ``positions_m`` (N, 3) world metres with float (N,) ``confidence`` in [0, 1] against
    ``scene``'s mesh and the seen surface ``surface_points_m`` (M, 3) (``SeenSurface.points_m``)."""
    positions = np.asarray(positions_m, np.float32).reshape(-1, 3)
    confidence = np.asarray(confidence, np.float32).reshape(-1)
    if len(confidence) != len(positions):
        raise InvalidInputError(f"score_map needs one confidence per voxel: {len(positions)} voxels, "
                                f"{len(confidence)} confidences")
    distance = scene.distance_m(positions)
    on_surface = distance <= tolerance_m
    confident = confidence >= min_confidence
    lo, hi = scene.bounds_m
    inside = np.all((positions >= lo - margin_m) & (positions <= hi + margin_m), axis=1)
    surface = np.asarray(surface_points_m, np.float32).reshape(-1, 3)
    # A voxel within the tolerance of a surface point is within it of the surface: only those can be recalled.
    candidates = positions[confident & on_surface]
    recall = float(np.mean(_has_neighbour(surface, candidates, tolerance_m))) if len(surface) else math.nan
    count, confident_count = len(positions), int(confident.sum())
    return MapScores(
        voxels=count,
        confident_voxels=confident_count,
        phantom_rate=float(np.mean(~on_surface)) if count else math.nan,
        confident_inside_share=float(np.mean(inside[confident])) if confident_count else math.nan,
        confident_surface_recall=recall,
    )


SOLID_INSET_M = 0.05
"""``points_inside_solids`` keeps its points at least this far (metres) inside every face of their box."""


def points_inside_solids(scene: Scene, per_solid: int, rng: np.random.Generator) -> np.ndarray:
    """(N, 3) float64 world points (metres): ``per_solid`` drawn uniformly inside each of ``scene``'s boxes (every
    instance but 0, the room's or street's flat surfaces) at least ``SOLID_INSET_M`` inside each of its faces, box
    after box; a box too thin for that gets none (or fewer, when 16 rounds of draws do not find them). A box is
    convex and its faces' normals point out, so a point is inside when it lies behind every face's plane."""
    chunks = []
    for instance in np.unique(scene.triangle_instance):
        if instance == 0:
            continue
        faces = np.flatnonzero(scene.triangle_instance == instance)
        normals = scene.triangle_axes[faces, 2]
        offsets = -np.einsum("ti,ti->t", normals, scene.vertices[scene.triangles[faces, 0]])
        corners = scene.vertices[scene.triangles[faces].reshape(-1)]
        low, high = corners.min(axis=0) + SOLID_INSET_M, corners.max(axis=0) - SOLID_INSET_M
        if np.any(high <= low):
            continue
        kept: list[np.ndarray] = []
        # Rejection from the box's bounding box (all accepted for an unrotated box); a yawed one keeps over half.
        for _ in range(16):
            if sum(len(k) for k in kept) >= per_solid:
                break
            candidates = rng.uniform(low, high, size=(2 * per_solid, 3))
            inside = (candidates @ normals.T + offsets).max(axis=1) <= -SOLID_INSET_M
            kept.append(candidates[inside])
        chunks.append(np.concatenate(kept)[:per_solid])
    return np.concatenate(chunks) if chunks else np.zeros((0, 3))


def free_inside_solids(scene: Scene, queries: WorldQueries, per_solid: int, seed: int) -> tuple[int, int]:
    """(points, free): how many points ``points_inside_solids`` draws (``per_solid`` per box, seeded by ``seed``)
    and how many of them ``queries`` (a world's) answers FREE at its default confidence level."""
    from worldweave.bridge.queries.occupancy import Occupancy  # numba: loaded only when a world is scored

    points = points_inside_solids(scene, per_solid, np.random.default_rng(seed))
    return len(points), int(np.count_nonzero(queries.occupancy(points) == Occupancy.FREE))


PLANE_ON_M = 0.01
"""A true surface point within this distance (metres) of one of the scene's planes lies on it."""
PLANE_HELD_ON_M = 0.02
"""A point of memory's render within this distance (metres) of a scene plane shows that plane."""
PLANE_HELD_SHARE = 0.005
"""Memory's render of a view holds a plane when at least this share of the view's pixels show it."""
PLANE_REACH_M = 0.75
"""A hole pixel views a held plane when its true surface point lies on the plane within this distance (metres) of a
point of it that memory's render shows."""


class PlaneCounts(NamedTuple):
    """Pixel counts of one generated frame's continuation of the planes memory holds (``PlaneScorer.score``)."""

    target: int
    """Hole pixels (memory's render did not cover them) that view a plane memory holds in this view (render
    confidence above ``CONFIDENT_MIN``), within ``PLANE_REACH_M`` of what it shows of it."""
    continued: int
    """Of those, the ones fused (confidence > 0, depth > 0) at a depth within ``SURFACE_TOLERANCE_M`` of the truth."""
    generated: int
    """Hole pixels fused with geometry (confidence > 0, depth > 0), on planes or not."""
    beyond: int
    """Of those, the ones whose depth lies more than ``SURFACE_TOLERANCE_M`` beyond the true surface (or where the
    truth has no surface): a guessed surface behind something real (its line of sight, never observed, makes no free
    space at a level above 0)."""


class PlaneScorer:
    """Scores how a generator continues the planes memory holds, against a procedural scene's exact planes.

    The scene's planes are the distinct (infinite) planes of its triangles: walls, floor, ceiling, road, facades,
    furniture faces. A pixel of the exact render views plane P when its true surface point lies within
    ``PLANE_ON_M`` of P. Memory's render of the same view holds P when at least ``PLANE_HELD_SHARE`` of the view's
    pixels are covered, with confidence above ``CONFIDENT_MIN``, by points within ``PLANE_HELD_ON_M`` of P: memory
    holds P as observed, not only as a continuation (a continuation is fused at half its base's confidence, so a
    plane continued once from observation is at most ``CONFIDENT_MIN`` sure; the target does not grow from it).
    """

    def __init__(self, scene: Scene) -> None:
        normals = scene.triangle_axes[:, 2].copy()
        normals *= np.sign(normals[np.arange(len(normals)), np.abs(normals).argmax(axis=1)])[:, None]  # one sign each
        offsets = -np.einsum("ti,ti->t", normals, scene.vertices[scene.triangles[:, 0]])
        keys = np.rint(np.concatenate([normals * 1e3, offsets[:, None] * 1e3], axis=1)).astype(np.int64)
        first = np.sort(np.unique(keys, axis=0, return_index=True)[1])
        self.normals = normals[first]
        """(P, 3) unit normals (world)."""
        self.offsets = offsets[first]
        """(P,) offsets: ``normal . x + offset = 0`` on the plane, metres."""
        # Planes grouped by normal (a room's or a street's dozens of planes share three): one dot product per group,
        # and each group's offsets sorted, so the nearest plane of a group is found by bisection.
        self._group_normals, group = np.unique(self.normals, axis=0, return_inverse=True)
        self._groups: list[tuple[np.ndarray, np.ndarray]] = []
        """Per row of ``_group_normals``: its planes' offsets, ascending, and those planes' indices."""
        for g in range(len(self._group_normals)):
            planes = np.flatnonzero(group.reshape(-1) == g)
            order = np.argsort(self.offsets[planes], kind="stable")
            self._groups.append((self.offsets[planes][order], planes[order]))
        self._rays_cam: dict[Intrinsics, np.ndarray] = {}
        """Camera-frame rays through pixel centres (z = 1), (H W, 3) float64, per intrinsics."""

    def labels(self, points_m: np.ndarray, tolerance_m: float) -> np.ndarray:
        """(N,) int64 index of a plane (N, 3) world points lie within ``tolerance_m`` of (the nearest, the lowest index
        among equally near ones); -1 for none."""
        nearest = np.zeros(len(points_m), np.int64)
        best = np.full(len(points_m), np.inf)
        # einsum, not @: a thin product through BLAS threads is several times slower on a busy CPU.
        dots = np.einsum("ni,gi->gn", points_m, self._group_normals)
        for dot, (offsets, planes) in zip(dots, self._groups):
            # residual = |dot + offset| grows with the offset's distance from -dot, so a group's nearest plane is
            # one of the two offsets around -dot.
            above = np.searchsorted(offsets, -dot)
            for candidate in (np.maximum(above - 1, 0), np.minimum(above, len(offsets) - 1)):
                residual = np.abs(dot + offsets[candidate])
                plane = planes[candidate]
                better = (residual < best) | ((residual == best) & (plane < nearest))
                best[better], nearest[better] = residual[better], plane[better]
        return np.where(best <= tolerance_m, nearest, -1)

    def _within_reach(self, plane: int, points_m: np.ndarray, held_m: np.ndarray) -> np.ndarray:
        """(N,) bool: which (N, 3) points on ``plane`` lie within ``PLANE_REACH_M`` of one of the (M, 3) ``held_m``
        points on it, measured in the plane on a grid of cells of 2 ``PLANE_ON_M`` (so within a cell of exact)."""
        normal = self.normals[plane]
        axis_s = np.cross(normal, [1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0])
        axes = np.stack([axis_s / np.linalg.norm(axis_s), np.cross(normal, axis_s / np.linalg.norm(axis_s))], axis=1)
        cell, radius = 2 * PLANE_ON_M, int(math.ceil(PLANE_REACH_M / (2 * PLANE_ON_M)))
        held = np.floor(np.einsum("ni,ij->nj", held_m, axes) / cell).astype(np.int64)
        cells = np.floor(np.einsum("ni,ij->nj", points_m, axes) / cell).astype(np.int64)
        low = held.min(axis=0) - radius
        shape = tuple(held.max(axis=0) - low + radius + 1)  # every cell within reach of a held one lies inside
        # gap[i, j]: the column distance from cell (i, j) to the nearest held cell of row i (``far`` for none), with
        # ``radius`` rows of ``far`` above and below, so that a cell is within reach when dy^2 + gap[i + dy, j]^2 <=
        # radius^2 for one row offset dy: the disk, exactly.
        far = 1 << 20
        grid = np.zeros(shape, bool)
        grid[held[:, 0] - low[0], held[:, 1] - low[1]] = True
        columns = np.arange(shape[1])
        before = np.maximum.accumulate(np.where(grid, columns, -far), axis=1)
        after = np.minimum.accumulate(np.where(grid, columns, 2 * far)[:, ::-1], axis=1)[:, ::-1]
        gap = np.full((shape[0] + 2 * radius, shape[1]), far)
        gap[radius:-radius] = np.minimum(columns - before, after - columns)
        index = cells - low
        inside = np.flatnonzero(np.all((index >= 0) & (index < shape), axis=1))
        linear, inverse = np.unique(index[inside, 0] * shape[1] + index[inside, 1], return_inverse=True)
        row, column = np.divmod(linear, shape[1])
        offsets = np.arange(-radius, radius + 1)
        near = (offsets**2 + gap[row[:, None] + offsets + radius, column[:, None]] ** 2 <= radius**2).any(axis=1)
        out = np.zeros(len(points_m), bool)
        out[inside] = near[inverse.reshape(-1)]
        return out

    def score(self, truth: RGBDFrame, kept_mask: np.ndarray, memory_depth: np.ndarray, memory_confidence: np.ndarray,
              depth: np.ndarray, confidence: np.ndarray) -> PlaneCounts:
        """Count one generated frame's plane continuation. ``truth``: the exact view at the frame's pose;
        ``kept_mask``: bool (H, W), pixels memory's render covered with depth; ``memory_depth`` and
        ``memory_confidence``: float32 (H, W), that render's depth (metres) and confidence (only pixels above
        ``CONFIDENT_MIN`` show what memory holds); ``depth`` and ``confidence``: float32 (H, W), what the generator
        fused (metres, 0 unknown; in [0, 1])."""
        shape = truth.depth.shape
        kept_mask = check_mask(kept_mask, shape, "kept_mask")
        if truth.intrinsics not in self._rays_cam:
            self._rays_cam[truth.intrinsics] = truth.intrinsics.pixel_rays(np.float64).reshape(-1, 3)
        rays = self._rays_cam[truth.intrinsics]

        def world(depth_m: np.ndarray, pixels: np.ndarray) -> np.ndarray:
            points_cam = rays[pixels] * depth_m.reshape(-1)[pixels, None].astype(np.float64)
            return np.einsum("ij,nj->ni", truth.pose.rotation, points_cam) + truth.pose.position

        kept = np.flatnonzero(kept_mask.reshape(-1) & (memory_depth.reshape(-1) > 0)
                              & (np.asarray(memory_confidence).reshape(-1) > CONFIDENT_MIN))
        held_points = world(memory_depth, kept)
        held_labels = self.labels(held_points, PLANE_HELD_ON_M)
        counts = np.bincount(held_labels[held_labels >= 0], minlength=len(self.offsets))
        held = np.flatnonzero(counts >= PLANE_HELD_SHARE * truth.depth.size)
        true_depth = truth.depth.reshape(-1)
        holes = np.flatnonzero(~kept_mask.reshape(-1) & (true_depth > 0))
        hole_points = world(truth.depth, holes)
        hole_labels = self.labels(hole_points, PLANE_ON_M)
        target = np.zeros(len(holes), bool)
        for plane in held:
            on = np.flatnonzero(hole_labels == plane)
            if len(on):
                target[on] = self._within_reach(plane, hole_points[on], held_points[held_labels == plane])
        fused = ((np.asarray(depth) > 0) & (np.asarray(confidence) > 0)).reshape(-1)
        error = np.asarray(depth, np.float64).reshape(-1) - true_depth
        right = fused & (np.abs(error) <= SURFACE_TOLERANCE_M)
        generated = np.flatnonzero(fused & ~kept_mask.reshape(-1))
        beyond = (true_depth[generated] == 0) | (error[generated] > SURFACE_TOLERANCE_M)
        return PlaneCounts(int(target.sum()), int(right[holes[target]].sum()), len(generated), int(beyond.sum()))
