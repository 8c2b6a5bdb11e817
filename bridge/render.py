"""Z-buffered point splatting: coloured points -> ``RenderResult`` at a camera (DESIGN §5 "Rendering", §7).

Pixel centres follow DESIGN §7: a point at camera coordinates ``(x, y, z)`` (OpenCV axes, metres) projects to
``u = fx x / z + cx``, ``v = fy y / z + cy`` and lands on the nearest pixel, ``floor(u + 0.5)`` (halves round up).
The arithmetic is float32 in the same order as Open3D's ``project_to_rgbd_image`` (world-to-camera rows summed left
to right, then ``fx * x * (1 / z) + cx``), so the 1-pixel mode gives the same depth image as Open3D.

Two splat modes:

* ``"pixel"``: each point covers the one pixel it lands on; the nearest point per pixel wins. For comparison with
  Open3D and for dense clouds seen from afar.
* ``"footprint"``: each point stands for a patch of ``point_size_m`` metres (the point spacing: a voxel edge, or an
  anchor pixel's extent at its depth) and covers a square of half-width
  ``r = ceil((footprint_scale * point_size_m * f / z - 1) / 2)`` pixels (capped at ``max_radius_px``), so a surface
  seen up close has no see-through holes. Inside a square the depth used for the z-test grows by
  ``footprint_falloff * d^2 / (r + 0.5)^2`` (relative, ``d`` in pixels from the centre): on one surface the nearest
  point centre wins each pixel, while a surface more than that fraction nearer still occludes. The depth written
  out is the winning point's true ``z``.

Ties (equal test depth) go to the lower point index, so results are deterministic. Two backends give identical
results: ``"torch"`` (vectorised scatter-reduce on a packed ``(depth bits, point index)`` int64 key; CPU and CUDA) and
``"numba"`` (a compiled CPU loop, serial or with per-thread z-buffers, several times faster on CPU; DESIGN §7 allows
it for a CPU hot path, measured in ``benchmarks/bench_render.py``). The default is numba for CPU inputs and torch
elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np
import torch

from worldweave.bridge.errors import InvalidInputError
from worldweave.bridge.frames import RenderResult
from worldweave.bridge.geometry import Intrinsics, Pose

SplatMode = Literal["pixel", "footprint"]
RenderBackend = Literal["torch", "numba"]

DEFAULT_NEAR_M = 1e-3
"""Points nearer than this (metres along the optical axis) are dropped."""
DEFAULT_MAX_RADIUS_PX = 16
"""Largest footprint half-width in pixels; a 33x33 square covers a 2 cm voxel down to 0.35 m at f = 585."""
DEFAULT_FOOTPRINT_FALLOFF = 0.02
"""Relative depth penalty at a footprint's edge (see the module docstring)."""

_EMPTY_KEY = np.iinfo(np.int64).max
_INDEX_BITS = 32
_INDEX_MASK = (1 << _INDEX_BITS) - 1
_MAX_POINTS = 1 << _INDEX_BITS
_TORCH_CHUNK = 1 << 23
"""Most (point, pixel) pairs the torch path scatters at once, bounding its memory."""


@dataclass(frozen=True)
class Splat:
    """The z-buffer of one view: ``depth`` (H, W) float32 metres along the optical axis, 0 where empty; ``index``
    (H, W) int64, the point that won each pixel, -1 where empty; ``rgb`` (H, W, 3) uint8 colour of the winner (0
    where empty), present when colours were given. Tensors on the points' device."""

    depth: torch.Tensor
    index: torch.Tensor
    mask: torch.Tensor
    """(H, W) bool, True where some point landed (``index >= 0``)."""
    rgb: torch.Tensor | None = None


def _world_to_cam_rows(pose: Pose) -> np.ndarray:
    """The 3x4 world-to-camera matrix, float32, flattened row-major (12 values)."""
    return pose.inverse_matrix()[:3].astype(np.float32).reshape(-1)


def _falloff_factor(radius: int, d2: np.ndarray, falloff: float) -> np.ndarray:
    """float32 multipliers of a point's depth at squared pixel distances ``d2`` inside a footprint of ``radius``
    (the same float64 operations as the numba kernel, so both paths agree bit for bit)."""
    scale = falloff / ((radius + 0.5) * (radius + 0.5))
    return (1.0 + scale * d2.astype(np.float64)).astype(np.float32)


@numba.njit(cache=True, inline="always")
def _project_one(points, i, m, fx, fy, cx, cy):
    x, y, z = points[i, 0], points[i, 1], points[i, 2]
    xc = x * m[0] + y * m[1] + z * m[2] + m[3]
    yc = x * m[4] + y * m[5] + z * m[6] + m[7]
    zc = x * m[8] + y * m[9] + z * m[10] + m[11]
    # A point exactly in the camera plane (zc == 0) gets inf, as in torch, and is culled by the near test; numba's
    # default error model would raise ZeroDivisionError instead.
    inv = np.float32(1.0) / zc if zc != 0 else np.float32(np.inf)
    u = fx * xc * inv + cx
    v = fy * yc * inv + cy
    return zc, inv, u, v


def _splat_kernel(points, sizes, per_point_size, m, cam, near, far, spread, max_radius, falloff, width, height,
                 footprint, threads, colors, out_depth, out_index, out_rgb):
    n = points.shape[0]
    pixels = width * height
    keys = np.empty((threads, pixels), dtype=np.int64)
    chunk = (n + threads - 1) // threads
    fx, fy, cx, cy = cam[0], cam[1], cam[2], cam[3]
    half = np.float32(0.5)
    one = np.float32(1.0)
    for t in numba.prange(threads):
        buf = keys[t]
        buf[:] = _EMPTY_KEY
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            zc, inv, u, v = _project_one(points, i, m, fx, fy, cx, cy)
            if not (zc > near and zc <= far):
                continue
            uf = np.floor(u + half)
            vf = np.floor(v + half)
            radius = 0
            if footprint:
                size = sizes[i] if per_point_size else sizes[0]
                r = np.ceil((spread * size * inv - one) * half)
                radius = int(min(max(r, np.float32(0.0)), np.float32(max_radius)))
            if uf + radius < 0 or uf - radius > width - 1 or vf + radius < 0 or vf - radius > height - 1:
                continue
            ui = int(uf)
            vi = int(vf)
            if radius == 0:
                key = (np.int64(np.float32(zc).view(np.int32)) << 32) | i
                p = vi * width + ui
                if key < buf[p]:
                    buf[p] = key
                continue
            scale = falloff / ((radius + 0.5) * (radius + 0.5))
            for dv in range(max(-radius, -vi), min(radius, height - 1 - vi) + 1):
                row = (vi + dv) * width
                for du in range(max(-radius, -ui), min(radius, width - 1 - ui) + 1):
                    zeff = zc * np.float32(1.0 + scale * np.float64(du * du + dv * dv))
                    key = (np.int64(np.float32(zeff).view(np.int32)) << 32) | i
                    p = row + ui + du
                    if key < buf[p]:
                        buf[p] = key
    for p in numba.prange(pixels):
        best = keys[0, p]
        for t in range(1, threads):
            if keys[t, p] < best:
                best = keys[t, p]
        if best == _EMPTY_KEY:
            out_index[p] = -1
            out_depth[p] = 0.0
            for c in range(out_rgb.shape[1]):
                out_rgb[p, c] = 0
        else:
            i = best & _INDEX_MASK
            out_index[p] = i
            zc, inv, u, v = _project_one(points, i, m, fx, fy, cx, cy)
            out_depth[p] = zc
            for c in range(out_rgb.shape[1]):
                out_rgb[p, c] = colors[i, c]


_splat_serial = numba.njit(cache=True)(_splat_kernel)
_splat_parallel = numba.njit(cache=True, parallel=True)(_splat_kernel)


def _splat_torch(points: torch.Tensor, sizes: torch.Tensor | None, m: torch.Tensor, intrinsics: Intrinsics,
                 near_m: float, far_m: float, spread: float, max_radius_px: int, falloff: float) -> Splat:
    device = points.device
    h, w = intrinsics.shape

    def f32(value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=torch.float32, device=device)

    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    xc = x * m[0] + y * m[1] + z * m[2] + m[3]
    yc = x * m[4] + y * m[5] + z * m[6] + m[7]
    zc = x * m[8] + y * m[9] + z * m[10] + m[11]
    inv = f32(1.0) / zc
    u = f32(intrinsics.fx) * xc * inv + f32(intrinsics.cx)
    v = f32(intrinsics.fy) * yc * inv + f32(intrinsics.cy)
    uf = torch.floor(u + f32(0.5))
    vf = torch.floor(v + f32(0.5))
    if sizes is None:
        radius = torch.zeros_like(zc, dtype=torch.int64)
    else:
        r = torch.ceil((f32(spread) * sizes * inv - f32(1.0)) * f32(0.5))
        radius = r.clamp(0.0, float(max_radius_px)).to(torch.int64)
    ok = (zc > f32(near_m)) & (zc <= f32(far_m))
    ok &= (uf + radius >= 0) & (uf - radius <= w - 1) & (vf + radius >= 0) & (vf - radius <= h - 1)
    index = torch.nonzero(ok).flatten()
    keys = torch.full((h * w,), _EMPTY_KEY, dtype=torch.int64, device=device)
    radius_ok, u_ok, v_ok, z_ok = radius[index], uf[index].to(torch.int64), vf[index].to(torch.int64), zc[index]
    for r in torch.unique(radius_ok).tolist():
        group = torch.nonzero(radius_ok == r).flatten()
        span = torch.arange(-r, r + 1, device=device)
        dv, du = torch.meshgrid(span, span, indexing="ij")
        du, dv = du.reshape(-1), dv.reshape(-1)
        factor = torch.from_numpy(_falloff_factor(r, (du * du + dv * dv).cpu().numpy(), falloff)).to(device)
        per_chunk = max(1, _TORCH_CHUNK // len(du))
        for start in range(0, len(group), per_chunk):
            g = group[start : start + per_chunk]
            px = u_ok[g, None] + du[None, :]
            py = v_ok[g, None] + dv[None, :]
            inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
            zeff = z_ok[g, None] if r == 0 else z_ok[g, None] * factor[None, :]
            key = (zeff.view(torch.int32).to(torch.int64) << _INDEX_BITS) | index[g, None]
            key = key.expand_as(px)[inside]
            keys.scatter_reduce_(0, (py * w + px)[inside], key, reduce="amin")
    hit = keys != _EMPTY_KEY
    winner = torch.where(hit, keys & _INDEX_MASK, torch.full_like(keys, -1))
    depth = torch.where(hit, zc[winner.clamp_min(0)], torch.zeros((), dtype=torch.float32, device=device))
    return Splat(depth.reshape(h, w), winner.reshape(h, w), hit.reshape(h, w))


def _device_of(points: torch.Tensor | np.ndarray) -> torch.device:
    return points.device if isinstance(points, torch.Tensor) else torch.device("cpu")


def _numpy(values: torch.Tensor | np.ndarray | float, dtype: type) -> np.ndarray:
    """A CPU numpy array of ``values`` (no copy when it already is one of ``dtype``)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.ascontiguousarray(values, dtype=dtype)


def splat_points(
    points: torch.Tensor | np.ndarray,
    pose: Pose,
    intrinsics: Intrinsics,
    *,
    colors: torch.Tensor | np.ndarray | None = None,
    splat: SplatMode = "pixel",
    point_size_m: float | torch.Tensor | np.ndarray | None = None,
    footprint_scale: float = 1.0,
    max_radius_px: int = DEFAULT_MAX_RADIUS_PX,
    footprint_falloff: float = DEFAULT_FOOTPRINT_FALLOFF,
    near_m: float = DEFAULT_NEAR_M,
    far_m: float = float("inf"),
    backend: RenderBackend | None = None,
    threads: int = 1,
) -> Splat:
    """Z-buffer (N, 3) points (metres, in the frame ``pose`` maps from: usually world) at camera ``pose``.

    ``pose`` is camera-to-world (``T_world_cam``, OpenCV axes). ``colors``: optional (N, 3) uint8, gathered into
    ``Splat.rgb``. ``splat`` and the footprint options are described in the module docstring; ``point_size_m`` (a
    float, or (N,) per point, metres) is required for ``"footprint"``. Points with depth outside ``(near_m, far_m]``
    are dropped. ``backend``: ``"numba"`` (CPU only) or ``"torch"``; default numba for CPU points, torch otherwise.
    ``threads``: numba only; 1 runs the serial kernel (the default: on a machine whose cores are shared it is the
    fastest), more runs the parallel kernel with that many per-thread z-buffers (same result).
    Returns tensors on the points' device.
    """
    device = _device_of(points)
    shape = tuple(points.shape)
    if len(shape) != 2 or shape[1] != 3:
        raise InvalidInputError(f"points must have shape (N, 3), got {shape}")
    n = shape[0]
    if n >= _MAX_POINTS:
        raise InvalidInputError(f"at most {_MAX_POINTS - 1} points per render, got {n}")
    if colors is not None and (str(colors.dtype) not in ("uint8", "torch.uint8") or tuple(colors.shape) != (n, 3)):
        raise InvalidInputError(f"colors must be uint8 (N, 3) matching {n} points, got {colors.dtype} {tuple(colors.shape)}")
    if splat not in ("pixel", "footprint"):
        raise InvalidInputError(f"splat must be 'pixel' or 'footprint', got {splat!r}")
    if not (near_m > 0 and far_m > near_m):
        raise InvalidInputError(f"need 0 < near_m < far_m, got near_m={near_m}, far_m={far_m}")
    if not (isinstance(threads, (int, np.integer)) and threads >= 1):
        raise InvalidInputError(f"threads must be a positive integer, got {threads!r}")
    backend = backend or ("numba" if device.type == "cpu" else "torch")
    if backend not in ("numba", "torch"):
        raise InvalidInputError(f"unknown render backend {backend!r}; choose 'torch' or 'numba'")
    if backend == "numba" and device.type != "cpu":
        raise InvalidInputError(f"the numba renderer runs on CPU only; points are on {device}")
    sizes = None
    if splat == "footprint":
        if point_size_m is None:
            raise InvalidInputError("splat='footprint' needs point_size_m (metres, a float or one per point)")
        sizes = _numpy(point_size_m, np.float32).reshape(-1)
        if len(sizes) not in (1, n):
            raise InvalidInputError(f"point_size_m must be one value or one per point ({n}), got {len(sizes)}")
        if not np.all(np.isfinite(sizes) & (sizes >= 0)):
            raise InvalidInputError("point_size_m must be finite and >= 0")
        if not (footprint_scale > 0 and 0 <= max_radius_px <= 256 and footprint_falloff >= 0):
            raise InvalidInputError(
                f"need footprint_scale > 0, 0 <= max_radius_px <= 256, footprint_falloff >= 0; got "
                f"{footprint_scale}, {max_radius_px}, {footprint_falloff}"
            )
    spread = float(np.float32(footprint_scale * max(intrinsics.fx, intrinsics.fy)))
    rows = _world_to_cam_rows(pose)
    h, w = intrinsics.shape
    if n == 0:
        index = torch.full((h, w), -1, dtype=torch.int64, device=device)
        rgb = None if colors is None else torch.zeros((h, w, 3), dtype=torch.uint8, device=device)
        return Splat(torch.zeros((h, w), dtype=torch.float32, device=device), index, index >= 0, rgb)
    if backend == "torch":
        pts = torch.as_tensor(points).to(torch.float32).contiguous()
        sizes_t = None if sizes is None else torch.from_numpy(sizes).to(device)
        m = torch.from_numpy(rows).to(device)
        result = _splat_torch(pts, sizes_t, m, intrinsics, near_m, far_m, spread, int(max_radius_px),
                              float(footprint_falloff))
        if colors is None:
            return result
        hit = result.mask.reshape(-1)
        rgb = torch.zeros((h * w, 3), dtype=torch.uint8, device=device)
        rgb[hit] = torch.as_tensor(colors).to(device)[result.index.reshape(-1)[hit]]
        return Splat(result.depth, result.index, result.mask, rgb.reshape(h, w, 3))
    depth = np.empty(h * w, dtype=np.float32)
    index = np.empty(h * w, dtype=np.int64)
    rgb = np.empty((h * w, 0 if colors is None else 3), dtype=np.uint8)
    cam = np.array([intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy], dtype=np.float32)
    kernel = _splat_serial if threads == 1 else _splat_parallel
    kernel(
        _numpy(points, np.float32), np.zeros(1, np.float32) if sizes is None else sizes,
        sizes is not None and len(sizes) > 1, rows, cam, np.float32(near_m), np.float32(far_m), np.float32(spread),
        int(max_radius_px), float(footprint_falloff), w, h, sizes is not None, threads,
        np.zeros((1, 3), np.uint8) if colors is None else _numpy(colors, np.uint8), depth, index, rgb,
    )
    index = index.reshape(h, w)
    return Splat(torch.from_numpy(depth).reshape(h, w), torch.from_numpy(index), torch.from_numpy(index >= 0),
                 None if colors is None else torch.from_numpy(rgb).reshape(h, w, 3))


def render_points(
    points_world: torch.Tensor | np.ndarray,
    colors: torch.Tensor | np.ndarray,
    pose: Pose,
    intrinsics: Intrinsics,
    *,
    splat: SplatMode = "pixel",
    point_size_m: float | torch.Tensor | np.ndarray | None = None,
    footprint_scale: float = 1.0,
    max_radius_px: int = DEFAULT_MAX_RADIUS_PX,
    footprint_falloff: float = DEFAULT_FOOTPRINT_FALLOFF,
    near_m: float = DEFAULT_NEAR_M,
    far_m: float = float("inf"),
    backend: RenderBackend | None = None,
    threads: int = 1,
) -> RenderResult:
    """Render (N, 3) world points (metres) with (N, 3) uint8 colours at camera-to-world ``pose``.

    Returns rgb (0 where empty), depth along the optical axis in metres (0 where empty) and the coverage mask.
    Options as in :func:`splat_points`.
    """
    result = splat_points(
        points_world, pose, intrinsics, colors=colors, splat=splat, point_size_m=point_size_m,
        footprint_scale=footprint_scale, max_radius_px=max_radius_px, footprint_falloff=footprint_falloff,
        near_m=near_m, far_m=far_m, backend=backend, threads=threads,
    )
    return RenderResult(result.rgb.cpu().numpy(), result.depth.cpu().numpy(), result.mask.cpu().numpy())
