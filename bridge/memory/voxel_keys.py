"""Voxel keys on torch tensors (any device): the layout of ``worldweave.proto.voxel_keys`` (its one definition,
numpy, shared with the client SDK) applied to tensors, bit for bit the same results.

Voxel ``(i, j, k)`` holds world points with ``i = floor(x / voxel_size_m)`` (likewise y, z) and has its centre at
``(i + 0.5) * voxel_size_m`` metres; a key spans +-``AXIS_LIMIT`` voxels per axis; keys sort by x, then y, then z.
"""

from __future__ import annotations

import torch

from worldweave.proto.voxel_keys import AXIS_BITS, AXIS_LIMIT, AXIS_MASK, AXIS_OFFSET


def pack(indices: torch.Tensor) -> torch.Tensor:
    """(N, 3) int64 voxel indices (each within +-AXIS_LIMIT) -> (N,) int64 keys."""
    shifted = indices + AXIS_OFFSET
    return (shifted[:, 0] << (2 * AXIS_BITS)) | (shifted[:, 1] << AXIS_BITS) | shifted[:, 2]


def unpack(keys: torch.Tensor) -> torch.Tensor:
    """(N,) int64 keys -> (N, 3) int64 voxel indices."""
    return torch.stack(
        [(keys >> (2 * AXIS_BITS)) & AXIS_MASK, (keys >> AXIS_BITS) & AXIS_MASK, keys & AXIS_MASK], dim=1
    ) - AXIS_OFFSET


def point_keys(points_m: torch.Tensor, voxel_size_m: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3) world points in metres -> (keys of the points inside the key range, boolean mask of those points)."""
    indices = torch.floor(points_m / voxel_size_m).to(torch.int64)
    inside = (indices.abs() <= AXIS_LIMIT).all(dim=1)
    return pack(indices[inside]), inside


def key_centers(keys: torch.Tensor, voxel_size_m: float) -> torch.Tensor:
    """(N,) keys -> (N, 3) float32 voxel centres in world metres."""
    return ((unpack(keys).to(torch.float64) + 0.5) * voxel_size_m).to(torch.float32)
