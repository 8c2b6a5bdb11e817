"""Per-voxel surface points: the weighted mean of the points fused into each voxel, kept beside its colour.

A voxel is a cube; the surface it stands for lies somewhere inside. ``VoxelMap`` keeps, per voxel, the running mean
of the fused points (metres from the voxel centre) and its weight, so geometry finer than a voxel survives fusion:
the LiDAR (``bridge.queries.lidar``) fits its planes to these points instead of to voxel centres.

``fold_point`` is the rule of the fused CPU path (``voxel_index._fuse_pixels``, which folds each pixel's point into
the voxel its colour went to, in the same pass); points update the mean one at a time:
``mean += w / (W + w) (p - mean)``, ``W = min(W + w, max_weight)``, the weighted mean of everything fused until the
weight reaches the cap, after which new points keep moving it.
"""

from __future__ import annotations

import numba


@numba.njit(cache=True, nogil=True, inline="always")
def fold_point(surface, surface_weight, row, offset_x, offset_y, offset_z, weight, max_weight):
    """Fold one point, ``offset_*`` float32 metres from the centre of the voxel in ``row``, weighing ``weight``
    (float32 > 0), into that voxel's surface point (``surface`` (N, 3) float32 metres from the voxel centre,
    ``surface_weight`` (N,) float32), in place: the running mean, its weight capped at ``max_weight`` (float32)."""
    total = surface_weight[row] + weight
    gain = weight / total
    surface[row, 0] += gain * (offset_x - surface[row, 0])
    surface[row, 1] += gain * (offset_y - surface[row, 1])
    surface[row, 2] += gain * (offset_z - surface[row, 2])
    surface_weight[row] = min(total, max_weight)
