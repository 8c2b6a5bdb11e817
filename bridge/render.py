"""Z-buffered point splatting: colored world points -> ``RenderResult`` at a camera (DESIGN §5 "Rendering").

Pixel centres follow DESIGN §7: a point projects to ``u = fx x / z + cx`` and lands on the nearest pixel
``round(u)``. The nearest point per pixel wins. Vectorised with torch scatter-reduce, so it runs on CPU and CUDA.
"""

from __future__ import annotations

import numpy as np
import torch

from worldweave.bridge.frames import RenderResult
from worldweave.bridge.geometry import Intrinsics, Pose


def render_points(
    points_world: torch.Tensor,
    colors: torch.Tensor,
    pose: Pose,
    intrinsics: Intrinsics,
    *,
    near_m: float = 1e-3,
) -> RenderResult:
    """Splat (N, 3) float world points with (N, 3) uint8 colours at ``pose``, one pixel per point.

    Returns rgb (0 where empty), depth along the optical axis in metres (0 where empty) and the coverage mask.
    Points nearer than ``near_m`` or off-image are dropped.
    """
    device = points_world.device
    h, w = intrinsics.shape
    rotation = torch.tensor(pose.rotation, dtype=points_world.dtype, device=device)
    position = torch.tensor(pose.position, dtype=points_world.dtype, device=device)
    points_cam = (points_world - position) @ rotation
    uv, z = intrinsics.project(points_cam)
    u = torch.round(uv[:, 0]).to(torch.int64)
    v = torch.round(uv[:, 1]).to(torch.int64)
    visible = (z > near_m) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    pixel = (v * w + u)[visible]
    z = z[visible].to(torch.float32)
    zbuf = torch.full((h * w,), float("inf"), dtype=torch.float32, device=device)
    zbuf.scatter_reduce_(0, pixel, z, reduce="amin")
    winner = z == zbuf[pixel]
    rgb = torch.zeros((h * w, 3), dtype=torch.uint8, device=device)
    rgb[pixel[winner]] = colors[visible][winner]
    mask = torch.isfinite(zbuf)
    depth = torch.where(mask, zbuf, torch.zeros_like(zbuf))
    return RenderResult(
        rgb.reshape(h, w, 3).cpu().numpy(),
        depth.reshape(h, w).cpu().numpy().astype(np.float32),
        mask.reshape(h, w).cpu().numpy(),
    )
