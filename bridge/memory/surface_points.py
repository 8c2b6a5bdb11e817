"""Per-voxel surface points: the weighted mean of the points fused into each voxel, kept beside its colour.

A voxel is a cube; the surface it stands for lies somewhere inside. ``VoxelMap`` keeps, per voxel, the running mean
of the fused points (metres from the voxel centre) and its weight, so geometry finer than a voxel survives fusion:
the LiDAR (``bridge.queries.lidar``) fits its planes to these points instead of to voxel centres.

``fold_frame`` is the fused CPU path for one RGB-D frame against the numba hash index (``voxel_index.pixel_voxel``,
the back-projection its colour kernel uses, so a pixel lands in the voxel its colour went to); points update the
mean one at a time: ``mean += w / (W + w) (p - mean)``, ``W = min(W + w, max_weight)``, the weighted mean of
everything fused until the weight reaches the cap, after which new points keep moving it.
"""

from __future__ import annotations

import numba
import numpy as np

from worldweave.bridge.memory import hash_table
from worldweave.bridge.memory.voxel_index import pixel_voxel


@numba.njit(cache=True)
def fold_frame(
    depth, exclude, confidence, has_confidence, fx, fy, cx, cy, rotation, translation, voxel, max_depth, limit, offset,
    bits, table_keys, table_rows, shift, surface, surface_weight, max_weight,
):
    """Fold every valid pixel's world point (depth in (0, ``max_depth``], not ``exclude``d, confidence > 0 when
    ``has_confidence``) into its voxel's surface point (``surface`` (N, 3) float32 metres from the voxel centre,
    ``surface_weight`` (N,) float32), in place. The voxels must exist in the table (the frame was merged first);
    pixels beyond +-``limit`` voxels are skipped as the merge skipped them."""
    height, width = depth.shape
    for v in range(height):
        left_key = np.int64(-2)
        left_row = np.int64(-1)
        for u in range(width):
            d = np.float64(depth[v, u])
            if d <= 0.0 or d > max_depth or exclude[v, u]:
                continue
            c = np.float32(1.0)
            if has_confidence:
                c = confidence[v, u]
                if c <= 0.0:
                    continue
            wx, wy, wz, key = pixel_voxel(u, v, d, fx, fy, cx, cy, rotation, translation, voxel, limit, offset, bits)
            if key < 0:
                continue
            if key == left_key:
                row = left_row
            else:
                row = hash_table.find(table_keys, table_rows, shift, key)
                left_key, left_row = key, row
            if row < 0:
                continue
            total = surface_weight[row] + c
            gain = c / total
            surface[row, 0] += gain * (np.float32(wx - (np.floor(wx / voxel) + 0.5) * voxel) - surface[row, 0])
            surface[row, 1] += gain * (np.float32(wy - (np.floor(wy / voxel) + 0.5) * voxel) - surface[row, 1])
            surface[row, 2] += gain * (np.float32(wz - (np.floor(wz / voxel) + 0.5) * voxel) - surface[row, 2])
            surface_weight[row] = min(total, max_weight)
