"""Per-voxel surface points: the weighted mean of the points fused into each voxel, kept beside its colour.

A voxel is a cube; the surface it stands for lies somewhere inside. ``VoxelMap`` keeps, per voxel, the running mean
of the fused points (metres from the voxel centre) and its weight, so geometry finer than a voxel survives fusion:
the LiDAR (``bridge.queries.lidar``) fits its planes to these points instead of to voxel centres.

``fold`` is the rule of the fused CPU path (``voxel_index.HashIndex.fuse_frame``, which folds each pixel's point into
the voxel its colour went to, each voxel's points in pixel order); points update the mean one at a time:
``mean += w / (W + w) (p - mean)``, ``W = min(W + w, max_weight)``, the weighted mean of everything fused until the
weight reaches the cap, after which new points keep moving it. Every step rounds to float32, as a store into the
float32 columns would, so a run of points folded in registers ends where folding them one by one in the columns
would.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, inline="always")
def fold(mean_x, mean_y, mean_z, mean_weight, offset_x, offset_y, offset_z, weight, max_weight):
    """A voxel's surface point (``mean_*`` float32 metres from the voxel centre, weighing ``mean_weight``) after
    folding in one point ``offset_*`` (float32 metres from the centre) weighing ``weight`` (float32 > 0), its weight
    capped at ``max_weight`` (float32): ``(mean_x, mean_y, mean_z, mean_weight)``, all float32."""
    total = np.float32(mean_weight + weight)
    gain = np.float32(weight / total)
    return (
        np.float32(mean_x + np.float32(gain * np.float32(offset_x - mean_x))),
        np.float32(mean_y + np.float32(gain * np.float32(offset_y - mean_y))),
        np.float32(mean_z + np.float32(gain * np.float32(offset_z - mean_z))),
        min(total, max_weight),
    )
