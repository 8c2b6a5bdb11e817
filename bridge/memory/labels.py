"""Labels in memory: a semantic class and an instance id per voxel, and the label and normal images rendered from it.

Ids are the user's: a semantic class is any integer 1..65535 (uint16) and an instance id any integer 1..2**32-1
(uint32); 0 is reserved for "unlabelled" in both. The server keeps no class list, so an id it has never seen is
allowed and simply carried.

Where labels come from (``VoxelMap``):

* seed frames with label images (``RGBDFrame.semantic`` / ``.instance``): each labelled pixel (label > 0) that is
  fused labels the voxel it lands in;
* ``insert`` with a class and / or instance id: every voxel the points touch takes it (0 leaves labels as they were);
* ``label`` (the LabelRegion edit): every voxel whose centre lies in a region takes the class and instance id given
  (0 unlabels).

Fusion rule for a frame's labelled pixels over existing voxels (``fold``): per voxel, among the frame's labelled
pixels that land in it, the pixel with the highest confidence wins (ties: the last in row-major order), and its label
replaces the voxel's: the last confident labelled observation wins. Unlabelled pixels (0) never clear a label, and
frames without label images (every generated frame) leave labels as they are. Semantic and instance images are folded
independently.

Images from memory (``render_labels``): the voxel map is splatted at the pose exactly as ``SpatialMemory.render_global``
does (same splat mode, footprint and falloff), and each covered pixel takes the labels of the voxel that won its
z-test (0 where nothing covers it or the voxel is unlabelled), as it takes that voxel's colour and confidence;
where an unlabelled voxel wins within ``LABEL_SEE_THROUGH_VOXELS`` voxel edges in front of a labelled one, the
labelled one gives the labels (generated frames carry no labels, and re-fusing them adds unlabelled voxels just in
front of labelled surfaces).
Normals are world-frame unit vectors from the sub-voxel surface points (``VoxelMap.surface_at``, the mean of the
points fused into each voxel), not from the rendered depth (flat splats make it a staircase): each covered pixel
takes its winning voxel's surface point, and its normal is the direction of least spread (PCA) of those points in a
3 x 3 pixel window on the same surface (widened up to 7 x 7 where those points are collinear), turned to face the
camera (``surface_normals``); (0, 0, 0) where nothing covers the pixel or the points stay collinear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from worldweave.bridge.render import RenderBackend, SplatMode, splat_points
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose

if TYPE_CHECKING:
    from worldweave.bridge.memory.voxel_map import VoxelMap

MAX_SEMANTIC_CLASS = np.iinfo(np.uint16).max
"""Largest semantic class (uint16); 0 means unlabelled."""
MAX_INSTANCE_ID = np.iinfo(np.uint32).max
"""Largest instance id (uint32); 0 means none."""
NORMAL_WINDOW_RADIUS_PX = 1
"""Half-width of the pixel window whose surface points give a pixel's normal (1: 3 x 3)."""
NORMAL_MAX_WINDOW_RADIUS_PX = 3
"""Where a window's points are collinear (a surface seen at a grazing angle, sparse voxels) the window widens, up
to this half-width (7 x 7), before the normal is given up as unknown."""
NORMAL_DEPTH_TOLERANCE_REL = 0.1
"""Window pixels whose depth differs from the centre's by more than this fraction belong to another surface."""
NORMAL_MIN_SPREAD = 0.1
"""A normal needs the window's points spread over at least this fraction of a voxel edge in two directions."""
_INDEX_MASK = (1 << 32) - 1


def check_ids(semantic_class: int, instance_id: int) -> tuple[int, int]:
    """``(semantic_class, instance_id)`` as ints, or ``InvalidInputError`` naming one outside 0..65535 / 0..2**32-1."""
    semantic_class, instance_id = int(semantic_class), int(instance_id)
    if not 0 <= semantic_class <= MAX_SEMANTIC_CLASS:
        raise InvalidInputError(f"semantic_class must be in 0..{MAX_SEMANTIC_CLASS} (uint16, 0 = unlabelled), got {semantic_class}")
    if not 0 <= instance_id <= MAX_INSTANCE_ID:
        raise InvalidInputError(f"instance_id must be in 0..{MAX_INSTANCE_ID} (uint32, 0 = none), got {instance_id}")
    return semantic_class, instance_id


def fold(column: torch.Tensor, rows: torch.Tensor, values: torch.Tensor, confidence: torch.Tensor | None) -> None:
    """Fold labelled observations into a label column in place (the rule in the module docstring).

    ``rows`` (P,) int64 voxel rows (-1: no voxel, skipped), ``values`` (P,) int64 labels > 0, ``confidence`` (P,)
    float32 in (0, 1] (``None``: 1), in observation order. Per row the observation with the highest confidence wins,
    ties to the later one; deterministic on every device (a max over packed (confidence bits, position) keys)."""
    present = rows >= 0
    rows, values = rows[present], values[present]
    if len(rows) == 0:
        return
    if confidence is None:
        confidence = torch.ones(len(present), dtype=torch.float32, device=rows.device)
    confidence = confidence[present].to(torch.float32).contiguous()
    position = torch.arange(len(rows), dtype=torch.int64, device=rows.device)
    packed = (confidence.view(torch.int32).to(torch.int64) << 32) | position  # confidence > 0: bits order as values
    unique_rows, inverse = torch.unique(rows, return_inverse=True)
    best = torch.full((len(unique_rows),), -1, dtype=torch.int64, device=rows.device)
    best.scatter_reduce_(0, inverse, packed, reduce="amax")
    column[unique_rows] = values[best & _INDEX_MASK].to(column.dtype)


@dataclass(frozen=True)
class LabelRequest:
    """Which images to render from memory beside a frame (all off by default: nothing is computed then)."""

    semantic: bool = False
    """Semantic class per pixel."""
    instance: bool = False
    """Instance id per pixel."""
    normals: bool = False
    """Surface normal per pixel (world frame)."""

    def __bool__(self) -> bool:
        return self.semantic or self.instance or self.normals


@dataclass(frozen=True)
class LabelImages:
    """Images rendered from memory at one pose (``render_labels``); those not asked for are ``None``.

    ``semantic``: uint16 (H, W) class of the voxel seen at each pixel, 0 = unlabelled or not covered. ``instance``:
    uint32 (H, W) instance id, 0 = none. ``normals``: float32 (H, W, 3) unit surface normals in the world frame,
    facing the camera, (0, 0, 0) where unknown.
    """

    semantic: np.ndarray | None = None
    instance: np.ndarray | None = None
    normals: np.ndarray | None = None


def _window_moments(
    points_world: torch.Tensor, valid: torch.Tensor, depth_m: torch.Tensor, vs: torch.Tensor, us: torch.Tensor,
    radius: int, depth_tolerance_rel: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For pixels (``vs``, ``us``): how many window pixels are on the same surface, and the sum and sum of outer
    products of their points' offsets from the pixel's own point (float64: (P,), (P, 3), (P, 3, 3)). The whole image
    is shifted when most pixels are asked for (slices are cheaper than gathers), else the window is gathered."""
    h, w = valid.shape
    by_image = len(vs) > (h * w) // 4
    if by_image:
        pad = (radius,) * 4
        all_points = torch.nn.functional.pad(points_world.permute(2, 0, 1), pad).permute(1, 2, 0)
        all_valid, all_depth = torch.nn.functional.pad(valid, pad), torch.nn.functional.pad(depth_m, pad)
        centre, centre_depth, centre_valid = points_world, depth_m, valid
        shape: tuple[int, ...] = (h, w)
    else:
        centre, centre_depth, centre_valid = points_world[vs, us], depth_m[vs, us], valid[vs, us]
        shape = (len(vs),)
    count = torch.zeros(shape, dtype=torch.float64, device=valid.device)
    first = torch.zeros((*shape, 3), dtype=torch.float64, device=valid.device)
    second = torch.zeros((*shape, 3, 3), dtype=torch.float64, device=valid.device)
    for dv in range(-radius, radius + 1):
        for du in range(-radius, radius + 1):
            if by_image:
                rows, cols = slice(radius + dv, radius + dv + h), slice(radius + du, radius + du + w)
                near, points, depth = all_valid[rows, cols], all_points[rows, cols], all_depth[rows, cols]
            else:
                v, u = vs + dv, us + du
                inside = (v >= 0) & (v < h) & (u >= 0) & (u < w)
                v, u = v.clamp(0, h - 1), u.clamp(0, w - 1)
                near, points, depth = valid[v, u] & inside, points_world[v, u], depth_m[v, u]
            near = near & centre_valid & ((depth - centre_depth).abs() <= depth_tolerance_rel * centre_depth)
            offset = (points - centre) * near[..., None]  # relative to the pixel's own point: no cancellation
            count += near
            first += offset
            second += offset[..., :, None] * offset[..., None, :]
    if by_image:
        return count[vs, us], first[vs, us], second[vs, us]
    return count, first, second


def surface_normals(
    points_world: torch.Tensor, valid: torch.Tensor, depth_m: torch.Tensor, eye_world: np.ndarray, voxel_size_m: float,
    *, depth_tolerance_rel: float = NORMAL_DEPTH_TOLERANCE_REL,
) -> torch.Tensor:
    """Per-pixel normals from an image of surface points: (H, W, 3) float32 world-frame unit vectors facing the
    camera at ``eye_world``, (0, 0, 0) where unknown.

    ``points_world`` (H, W, 3) float64 metres: the surface point seen at each pixel; ``valid`` (H, W) bool;
    ``depth_m`` (H, W) depth along the optical axis. Each pixel's normal is the direction of least spread (PCA) of
    the points in its (2 r + 1)^2 window whose depth is within ``depth_tolerance_rel`` of its own (so a nearer
    object's edge does not bend the surface behind it), r = ``NORMAL_WINDOW_RADIUS_PX``, widened up to
    ``NORMAL_MAX_WINDOW_RADIUS_PX`` where the window's distinct points are (nearly) collinear: the middle eigenvalue
    below (``NORMAL_MIN_SPREAD`` x voxel edge)^2. Still collinear at the widest: unknown."""
    h, w = valid.shape
    normals = torch.zeros((h, w, 3), dtype=torch.float64, device=valid.device)
    pending = torch.nonzero(valid)
    eye = torch.tensor(eye_world, dtype=torch.float64, device=valid.device)
    for radius in range(NORMAL_WINDOW_RADIUS_PX, NORMAL_MAX_WINDOW_RADIUS_PX + 1):
        if len(pending) == 0:
            break
        vs, us = pending[:, 0], pending[:, 1]
        count, first, second = _window_moments(points_world, valid, depth_m, vs, us, radius, depth_tolerance_rel)
        centre = points_world[vs, us]
        mean = first / count[:, None]  # the centre itself is always near: count >= 1
        covariance = second / count[:, None, None] - mean[:, :, None] * mean[:, None, :]
        values, vectors = torch.linalg.eigh(covariance)  # ascending: column 0 is the direction of least spread
        found = values[:, 1] >= (NORMAL_MIN_SPREAD * voxel_size_m) ** 2
        normal = vectors[found, :, 0]
        facing = (normal * (eye - centre[found])).sum(dim=1) < 0
        normals[vs[found], us[found]] = torch.where(facing[:, None], -normal, normal)
        pending = pending[~found]
    return normals.to(torch.float32)


LABEL_SEE_THROUGH_VOXELS = 1.5
"""An unlabelled voxel that wins a pixel hides a labelled surface only if it lies more than this many voxel edges in
front of it along the pixel's depth: re-fused generated frames (which carry no labels) add unlabelled voxels up to a
voxel in front of a labelled surface, and they must not erase its labels from the images."""


def _labelled_behind(
    voxel_map: VoxelMap, points: torch.Tensor, result, index: torch.Tensor, semantic_column: torch.Tensor,
    instance_column: torch.Tensor, pose: Pose, intrinsics: Intrinsics, *, splat: SplatMode, footprint_scale: float,
    options: dict, backend: RenderBackend | None,
) -> torch.Tensor:
    """Flat winner rows (-1 where empty), with each pixel won by an unlabelled voxel handed to the labelled voxel
    that wins it among labelled voxels alone, when that one lies within ``LABEL_SEE_THROUGH_VOXELS`` behind."""
    labelled = (semantic_column > 0) | (instance_column > 0)
    if not bool(labelled.any()) or bool(labelled.all()):
        return index
    rows = torch.nonzero(labelled).flatten()
    behind = splat_points(points[rows], pose, intrinsics, splat=splat,
                          point_size_m=voxel_map.voxel_size_m * footprint_scale, backend=backend, **options)
    behind_index = behind.index.to(index.device).reshape(-1)
    gap = (behind.depth - result.depth).to(index.device).reshape(-1)
    front = index.clamp(min=0)
    take = ((index >= 0) & (behind_index >= 0) & ~labelled[front]
            & (gap <= LABEL_SEE_THROUGH_VOXELS * voxel_map.voxel_size_m))
    out = index.clone()
    out[take] = rows[behind_index[take]]
    return out


def render_labels(
    voxel_map: VoxelMap,
    pose: Pose,
    intrinsics: Intrinsics,
    request: LabelRequest,
    *,
    splat: SplatMode = "footprint",
    footprint_scale: float = 1.0,
    footprint_falloff: float | None = None,
    backend: RenderBackend | None = None,
) -> LabelImages:
    """The images ``request`` asks for, rendered from ``voxel_map`` at camera-to-world ``pose`` (see the module
    docstring). ``splat`` / ``footprint_scale`` / ``footprint_falloff``: as ``SpatialMemory.render_global`` uses
    them (each voxel splats its edge times ``footprint_scale``); ``backend``: the renderer's (default numba on CPU,
    torch elsewhere; both give the same winners)."""
    if not request:
        return LabelImages()
    points, _ = voxel_map.points_tensor()
    options = {} if footprint_falloff is None else {"footprint_falloff": footprint_falloff}
    result = splat_points(points, pose, intrinsics, splat=splat, point_size_m=voxel_map.voxel_size_m * footprint_scale,
                          backend=backend, **options)
    index = result.index.to(voxel_map.device).reshape(-1)
    hit = index >= 0
    h, w = intrinsics.shape
    semantic_column, instance_column = voxel_map.label_tensors()
    if request.semantic or request.instance:
        index = _labelled_behind(voxel_map, points, result, index, semantic_column, instance_column, pose, intrinsics,
                                 splat=splat, footprint_scale=footprint_scale, options=options, backend=backend)
    winners = index[hit]

    def gather(column: torch.Tensor, dtype: type) -> np.ndarray:
        image = torch.zeros(h * w, dtype=column.dtype, device=column.device)
        image[hit] = column[winners]
        return image.cpu().numpy().astype(dtype).reshape(h, w)

    normals = None
    if request.normals:
        surface = torch.zeros((h * w, 3), dtype=torch.float64, device=voxel_map.device)
        unique_rows, inverse = torch.unique(winners, return_inverse=True)
        keys = voxel_map.keys_tensor()[unique_rows].cpu().numpy()
        surface[hit] = torch.from_numpy(voxel_map.surface_at(keys)).to(surface)[inverse]
        depth = result.depth.to(voxel_map.device).to(torch.float64)
        normals = surface_normals(surface.reshape(h, w, 3), hit.reshape(h, w), depth, pose.position,
                                  voxel_map.voxel_size_m).cpu().numpy()
    return LabelImages(
        semantic=gather(semantic_column, np.uint16) if request.semantic else None,
        instance=gather(instance_column, np.uint32) if request.instance else None,
        normals=normals,
    )
