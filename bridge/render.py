"""Z-buffered point splatting: coloured points -> ``RenderResult`` at a camera.

Pixel centres at integers (OpenCV): a point at camera coordinates ``(x, y, z)`` (OpenCV axes, metres) projects to
``u = fx x / z + cx``, ``v = fy y / z + cy`` and lands on the nearest pixel, ``floor(u + 0.5)`` (halves round up).
The arithmetic is float32 in the same order as Open3D's ``project_to_rgbd_image`` (world-to-camera rows summed left
to right, then ``fx * x * (1 / z) + cx``), so the 1-pixel mode gives the same depth image as Open3D.

Three splat modes:

* ``"pixel"``: each point covers the one pixel it lands on; the nearest point per pixel wins. For comparison with
  Open3D and for dense clouds seen from afar.
* ``"footprint"``: each point stands for a patch of ``point_size_m`` metres (the point spacing: a voxel edge, or an
  anchor pixel's extent at its depth) and covers a square of half-width
  ``r = ceil((footprint_scale * point_size_m * f / z - 1) / 2)`` pixels (capped at ``max_radius_px``), so a surface
  seen up close has no see-through holes. Inside a square the depth used for the z-test grows by
  ``footprint_falloff * d^2 / (r + 0.5)^2`` (relative, ``d`` in pixels from the centre): on one surface the nearest
  point centre wins each pixel, while a surface more than that fraction nearer still occludes. The depth written
  out is the winning point's true ``z``.
* ``"soft"``: the footprint squares and z-test as above, then a second pass blends, at each pixel, every splat
  whose depth is within ``soft_tolerance`` (relative) of the front surface there, weighted by
  ``exp(-2 d^2 / (r + 0.5)^2)`` (``d``: pixel distance from the splat's centre): a smooth image of the front surface
  instead of flat squares (surface splatting). Colour and depth are the weighted means. A point whose footprint is
  one pixel stays exact.

Ties (equal test depth) go to the lower point index, so results are deterministic. Two backends give identical
results (in ``"soft"`` mode up to float32 summation order: colours may differ by one level): ``"torch"``
(vectorised scatter-reduce on a packed ``(depth bits, point index)`` int64 key; CPU and CUDA) and ``"numba"``
(compiled CPU stages, serial or with per-thread z-buffers, about twice as fast as Open3D on CPU, which is
what justifies a numba kernel beside the torch path; measured in ``benchmarks/bench_render.py``). The default is numba for CPU inputs and torch
elsewhere.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np
import torch

from worldweave.bridge.frames import RenderResult
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose

SplatMode = Literal["pixel", "footprint", "soft"]
RenderBackend = Literal["torch", "numba"]

DEFAULT_NEAR_M = 1e-3
"""Points nearer than this (metres along the optical axis) are dropped."""
DEFAULT_MAX_RADIUS_PX = 16
"""Largest footprint half-width in pixels; a 33x33 square covers a 2 cm voxel down to 0.35 m at f = 585."""
DEFAULT_FOOTPRINT_FALLOFF = 0.02
"""Relative depth penalty at a footprint's edge (see the module docstring)."""
DEFAULT_SOFT_TOLERANCE = 0.03
"""``"soft"`` mode: splats within this fraction of a pixel's front depth are blended there."""

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


@numba.njit(cache=True, inline="always", error_model="numpy")
def _project_one(points, i, m, fx, fy, cx, cy):
    x, y, z = points[i, 0], points[i, 1], points[i, 2]
    xc = x * m[0] + y * m[1] + z * m[2] + m[3]
    yc = x * m[4] + y * m[5] + z * m[6] + m[7]
    zc = x * m[8] + y * m[9] + z * m[10] + m[11]
    inv = np.float32(1.0) / zc  # zc == 0 gives inf, as in torch (error_model="numpy"); the near test culls it
    u = fx * xc * inv + cx
    v = fy * yc * inv + cy
    return zc, inv, u, v


def _project_all(points, sizes, per_point_size, m, cam, near, far, spread, max_radius, width, height, footprint,
                 target, depth_bits, square):
    """Stage 1, per point and branch-free: where it lands and its depth.

    ``target[i]``: the pixel of a one-pixel splat, the spare slot ``width * height`` for a culled point, or -1 for
    a footprint wider than one pixel, whose centre and half-width go to ``square[i]``. ``depth_bits[i]``: the float32
    bits of its depth, shifted into the high half of the z-buffer key. Culling without a branch matters: on points
    in arbitrary order a branch per point mispredicts half the time, which costs more than the projection itself.
    """
    pixels = width * height
    fx, fy, cx, cy = cam[0], cam[1], cam[2], cam[3]
    half = np.float32(0.5)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    last_u = np.float32(width - 1)
    last_v = np.float32(height - 1)
    top = np.float32(max_radius)
    for i in numba.prange(points.shape[0]):
        zc, inv, u, v = _project_one(points, i, m, fx, fy, cx, cy)
        uf = np.floor(u + half)
        vf = np.floor(v + half)
        rf = zero
        if footprint:
            size = sizes[i] if per_point_size else sizes[0]
            rf = min(max(np.ceil((spread * size * inv - one) * half), zero), top)
        ok = (np.int64(zc > near) & np.int64(zc <= far) & np.int64(uf + rf >= zero) & np.int64(uf - rf <= last_u)
              & np.int64(vf + rf >= zero) & np.int64(vf - rf <= last_v))
        ui = np.int64(min(max(uf, -top), last_u + top))
        vi = np.int64(min(max(vf, -top), last_v + top))
        wide = ok & np.int64(rf > zero)
        target[i] = (ok - wide) * (vi * width + ui) + (1 - ok) * pixels - wide
        depth_bits[i] = np.int64(np.float32(zc).view(np.int32)) << 32
        if footprint:
            square[i, 0] = ui
            square[i, 1] = vi
            square[i, 2] = np.int64(rf)


def _zbuffer(target, depth_bits, square, falloff, width, height, keys):
    """Stage 2: each of ``keys.shape[0]`` z-buffers takes the minimum key per pixel over its share of the points
    (keys pack depth bits over point index). Footprint squares use the depth raised by the falloff."""
    n = target.shape[0]
    threads = keys.shape[0]
    chunk = (n + threads - 1) // threads
    for t in numba.prange(threads):
        buf = keys[t]
        buf[:] = _EMPTY_KEY
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            p = target[i]
            if p >= 0:
                buf[p] = min(buf[p], depth_bits[i] | i)
                continue
            ui, vi, radius = square[i, 0], square[i, 1], square[i, 2]
            zc = np.int32(depth_bits[i] >> 32).view(np.float32)
            scale = falloff / ((radius + 0.5) * (radius + 0.5))
            for dv in range(max(-radius, -vi), min(radius, height - 1 - vi) + 1):
                row = (vi + dv) * width
                for du in range(max(-radius, -ui), min(radius, width - 1 - ui) + 1):
                    zeff = zc * np.float32(1.0 + scale * np.float64(du * du + dv * dv))
                    key = (np.int64(np.float32(zeff).view(np.int32)) << 32) | i
                    q = row + ui + du
                    if key < buf[q]:
                        buf[q] = key


def _resolve(keys, depth_bits, colors, out_depth, out_index, out_rgb):
    """Stage 3: per pixel, the smallest key over the z-buffers gives the winning point, its true depth and colour."""
    threads = keys.shape[0]
    channels = out_rgb.shape[1]
    for p in numba.prange(out_depth.shape[0]):
        best = keys[0, p]
        for t in range(1, threads):
            best = min(best, keys[t, p])
        if best == _EMPTY_KEY:
            out_index[p] = -1
            out_depth[p] = 0.0
            for c in range(channels):
                out_rgb[p, c] = 0
        else:
            i = best & _INDEX_MASK
            out_index[p] = i
            out_depth[p] = np.int32(depth_bits[i] >> 32).view(np.float32)
            for c in range(channels):
                out_rgb[p, c] = colors[i, c]


_STAGES = {
    parallel: tuple(
        numba.njit(cache=not parallel, parallel=parallel, error_model="numpy")(stage)
        for stage in (_project_all, _zbuffer, _resolve)
    )
    for parallel in (False, True)
}
"""The three stages compiled serial (``False``) and with ``prange`` parallel (``True``). Only the serial ones are
cached on disk: numba's cache key does not include ``parallel``, so both variants would share one cache entry."""


@numba.njit(cache=True, error_model="numpy")
def _blend_pass(target, depth_bits, square, width, height, colors, tolerance, depth, rgb):
    """Soft mode, second pass over stage 1's projection (``target``, ``depth_bits``, ``square``): every splat within
    ``tolerance`` of a pixel's front depth adds its colour and depth with a Gaussian weight of its distance from the
    splat centre (float32 sums in point order)."""
    pixels = width * height
    channels = rgb.shape[1]
    acc = np.zeros((pixels, channels + 2), dtype=np.float32)
    half = np.float32(0.5)
    limit_scale = np.float32(1.0) + tolerance
    for i in range(target.shape[0]):
        if target[i] == pixels:  # culled
            continue
        zc = np.int32(depth_bits[i] >> 32).view(np.float32)
        ui, vi, radius = square[i, 0], square[i, 1], square[i, 2]
        for dv in range(max(-radius, -vi), min(radius, height - 1 - vi) + 1):
            row = (vi + dv) * width
            for du in range(max(-radius, -ui), min(radius, width - 1 - ui) + 1):
                p = row + ui + du
                if not (depth[p] > 0 and zc <= depth[p] * limit_scale):
                    continue
                weight = np.float32(np.exp(-2.0 * np.float64(du * du + dv * dv) / ((radius + 0.5) * (radius + 0.5))))
                for c in range(channels):
                    acc[p, c] += weight * np.float32(colors[i, c])
                acc[p, channels] += weight * zc
                acc[p, channels + 1] += weight
    for p in range(pixels):
        total = acc[p, channels + 1]
        if total > 0:
            for c in range(channels):
                rgb[p, c] = np.uint8(min(np.floor(acc[p, c] / total + half), np.float32(255.0)))
            depth[p] = acc[p, channels] / total


def _project_torch(points: torch.Tensor, m: torch.Tensor, intrinsics: Intrinsics
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Camera depth ``zc``, its inverse and the nearest pixel ``(uf, vf)`` of each point, in the float32 operation
    order of ``_project_one``."""
    f32 = functools.partial(torch.tensor, dtype=torch.float32, device=points.device)
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    xc = x * m[0] + y * m[1] + z * m[2] + m[3]
    yc = x * m[4] + y * m[5] + z * m[6] + m[7]
    zc = x * m[8] + y * m[9] + z * m[10] + m[11]
    inv = f32(1.0) / zc
    uf = torch.floor(f32(intrinsics.fx) * xc * inv + f32(intrinsics.cx) + f32(0.5))
    vf = torch.floor(f32(intrinsics.fy) * yc * inv + f32(intrinsics.cy) + f32(0.5))
    return zc, inv, uf, vf


def _splat_torch(points: torch.Tensor, sizes: torch.Tensor | None, m: torch.Tensor, intrinsics: Intrinsics,
                 near_m: float, far_m: float, spread: float, max_radius_px: int, falloff: float) -> Splat:
    device = points.device
    h, w = intrinsics.shape

    def f32(value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=torch.float32, device=device)

    zc, inv, uf, vf = _project_torch(points, m, intrinsics)
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


def _blend_torch(points: torch.Tensor, colors: torch.Tensor, sizes: torch.Tensor, m: torch.Tensor,
                 intrinsics: Intrinsics, near_m: float, far_m: float, spread: float, max_radius_px: int,
                 tolerance: float, front: Splat) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft mode's second pass (see ``_blend_pass``), vectorised; returns (depth (H, W), rgb (H, W, 3))."""
    device = points.device
    h, w = intrinsics.shape

    def f32(value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=torch.float32, device=device)

    zc, inv, uf, vf = _project_torch(points, m, intrinsics)
    radius = torch.ceil((f32(spread) * sizes * inv - f32(1.0)) * f32(0.5)).clamp(0.0, float(max_radius_px)).long()
    ok = (zc > f32(near_m)) & (zc <= f32(far_m))
    ok &= (uf + radius >= 0) & (uf - radius <= w - 1) & (vf + radius >= 0) & (vf - radius <= h - 1)
    index = torch.nonzero(ok).flatten()
    front_depth = front.depth.reshape(-1)
    limit = front_depth * (f32(1.0) + f32(tolerance))
    acc = torch.zeros((h * w, 5), dtype=torch.float32, device=device)
    radius_ok, u_ok, v_ok, z_ok = radius[index], uf[index].long(), vf[index].long(), zc[index]
    colors_ok = colors[index].to(torch.float32)
    for r in torch.unique(radius_ok).tolist():
        group = torch.nonzero(radius_ok == r).flatten()
        span = torch.arange(-r, r + 1, device=device)
        dv, du = (t.reshape(-1) for t in torch.meshgrid(span, span, indexing="ij"))
        d2 = (du * du + dv * dv).cpu().numpy().astype(np.float64)
        weight = torch.from_numpy(np.exp(-2.0 * d2 / ((r + 0.5) * (r + 0.5))).astype(np.float32)).to(device)
        per_chunk = max(1, _TORCH_CHUNK // len(du))
        for start in range(0, len(group), per_chunk):
            g = group[start : start + per_chunk]
            px, py = u_ok[g, None] + du, v_ok[g, None] + dv
            pixel = (py * w + px).clamp(0, h * w - 1)
            use = (px >= 0) & (px < w) & (py >= 0) & (py < h)
            use &= (front_depth[pixel] > 0) & (z_ok[g, None] <= limit[pixel])
            wgt = weight.expand_as(px)[use]
            owner = g[:, None].expand_as(px)[use]
            values = torch.cat([wgt[:, None] * colors_ok[owner], (wgt * z_ok[owner])[:, None], wgt[:, None]], dim=1)
            acc.index_add_(0, pixel[use], values)
    total = acc[:, 4]
    hit = total > 0
    rgb = torch.floor(acc[:, :3] / total.clamp_min(1e-30)[:, None] + f32(0.5)).clamp(max=255.0).to(torch.uint8)
    rgb = torch.where(hit[:, None], rgb, torch.zeros_like(rgb))
    depth = torch.where(hit, acc[:, 3] / total.clamp_min(1e-30), front_depth)
    return depth.reshape(h, w), rgb.reshape(h, w, 3)


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
    soft_tolerance: float = DEFAULT_SOFT_TOLERANCE,
    near_m: float = DEFAULT_NEAR_M,
    far_m: float = float("inf"),
    backend: RenderBackend | None = None,
    threads: int = 1,
) -> Splat:
    """Z-buffer (N, 3) points (metres, in the frame ``pose`` maps from: usually world) at camera ``pose``.

    ``pose`` is camera-to-world (``T_world_cam``, OpenCV axes). ``colors``: optional (N, 3) uint8, gathered into
    ``Splat.rgb``. ``splat`` and the footprint options are described in the module docstring; ``point_size_m`` (a
    float, or (N,) per point, metres) is required for ``"footprint"`` and ``"soft"``. Points with depth outside ``(near_m, far_m]``
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
    if splat not in ("pixel", "footprint", "soft"):
        raise InvalidInputError(f"splat must be 'pixel', 'footprint' or 'soft', got {splat!r}")
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
    if splat != "pixel":
        if point_size_m is None:
            raise InvalidInputError(f"splat={splat!r} needs point_size_m (metres, a float or one per point)")
        sizes = _numpy(point_size_m, np.float32).reshape(-1)
        if len(sizes) not in (1, n):
            raise InvalidInputError(f"point_size_m must be one value or one per point ({n}), got {len(sizes)}")
        if not np.all(np.isfinite(sizes) & (sizes >= 0)):
            raise InvalidInputError("point_size_m must be finite and >= 0")
        if not (footprint_scale > 0 and 0 <= max_radius_px <= 256 and footprint_falloff >= 0 and soft_tolerance >= 0):
            raise InvalidInputError(
                f"need footprint_scale > 0, 0 <= max_radius_px <= 256, footprint_falloff >= 0, soft_tolerance >= 0; "
                f"got {footprint_scale}, {max_radius_px}, {footprint_falloff}, {soft_tolerance}"
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
        if splat == "soft":
            colors_t = torch.zeros((n, 3), dtype=torch.uint8, device=device) if colors is None else torch.as_tensor(colors).to(device)
            depth, rgb = _blend_torch(pts, colors_t, sizes_t.expand(n) if len(sizes_t) == 1 else sizes_t, m, intrinsics,
                                      near_m, far_m, spread, int(max_radius_px), float(soft_tolerance), result)
            return Splat(depth, result.index, result.mask, None if colors is None else rgb)
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
    project, zbuffer, resolve = _STAGES[threads > 1]
    pts = _numpy(points, np.float32)
    size_array = np.zeros(1, np.float32) if sizes is None else sizes
    per_point = sizes is not None and len(sizes) > 1
    target = np.empty(n, dtype=np.int64)
    depth_bits = np.empty(n, dtype=np.int64)
    square = np.empty((n if sizes is not None else 0, 3), dtype=np.int32)
    project(pts, size_array, per_point, rows, cam, np.float32(near_m), np.float32(far_m), np.float32(spread),
            int(max_radius_px), w, h, sizes is not None, target, depth_bits, square)
    keys = np.empty((threads, h * w + 1), dtype=np.int64)
    zbuffer(target, depth_bits, square, float(footprint_falloff), w, h, keys)
    color_array = np.zeros((1, 3), np.uint8) if colors is None else _numpy(colors, np.uint8)
    resolve(keys, depth_bits, color_array, depth, index, rgb)
    if splat == "soft":
        _blend_pass(target, depth_bits, square, w, h, color_array, np.float32(soft_tolerance), depth, rgb)
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
    soft_tolerance: float = DEFAULT_SOFT_TOLERANCE,
    near_m: float = DEFAULT_NEAR_M,
    far_m: float = float("inf"),
    backend: RenderBackend | None = None,
    threads: int = 1,
    confidence: torch.Tensor | np.ndarray | None = None,
) -> RenderResult:
    """Render (N, 3) world points (metres) with (N, 3) uint8 colours at camera-to-world ``pose``.

    Returns rgb (0 where empty), depth along the optical axis in metres (0 where empty), the coverage mask and the
    confidence channel: ``confidence`` (N,) float in [0, 1] per point (a voxel's or anchor point's confidence; ``None``
    gives every point 1). The channel states how sure memory is of each pixel's *depth*: the pixel the winning point
    of its z-test lands on (its centre) takes that point's confidence (in ``"soft"`` mode too: the blend smooths
    colour and depth, never confidence); a pixel the winner covers only through its footprint's spread takes 0, as
    does an empty one. A spread pixel shows the point's depth along another ray: on a surface seen at a grazing angle
    or beside a silhouette that depth lies centimetres to decimetres off the surface, so it is shown but not fused as
    it is (a generator may refit it on the plane of the landed pixels around it: ``generators.kept_depth``).
    Options as in :func:`splat_points`.
    """
    n = int(points_world.shape[0])
    if confidence is not None:
        confidence = _numpy(confidence, np.float32).reshape(-1)
        if confidence.shape != (n,) or not np.all((confidence >= 0) & (confidence <= 1)):
            raise InvalidInputError(f"confidence must be (N,) = ({n},) values in [0, 1], got shape {confidence.shape}")
    result = splat_points(
        points_world, pose, intrinsics, colors=colors, splat=splat, point_size_m=point_size_m,
        footprint_scale=footprint_scale, max_radius_px=max_radius_px, footprint_falloff=footprint_falloff,
        soft_tolerance=soft_tolerance, near_m=near_m, far_m=far_m, backend=backend, threads=threads,
    )
    mask = result.mask.cpu().numpy()
    covered = np.flatnonzero(mask)
    winners = result.index.cpu().numpy().reshape(-1)[covered]
    at_centre = _landing_pixels(points_world, winners, pose, intrinsics) == covered
    pixel_confidence = np.zeros(mask.size, np.float32)
    pixel_confidence[covered] = np.where(at_centre, 1.0 if confidence is None else confidence[winners], 0.0)
    return RenderResult(result.rgb.cpu().numpy(), result.depth.cpu().numpy(), mask, pixel_confidence.reshape(mask.shape))


def _landing_pixels(points: torch.Tensor | np.ndarray, chosen: np.ndarray, pose: Pose, intrinsics: Intrinsics
                    ) -> np.ndarray:
    """(K,) int64 flat index (``v * width + u``) of the pixel each of the ``chosen`` points (indices into (N, 3)
    ``points``) lands on at ``pose``, in the float32 arithmetic of the splatting kernels; -1 off the image."""
    if isinstance(points, torch.Tensor) and points.device.type != "cpu":  # gather on the device, copy only those
        points, chosen = points[torch.from_numpy(chosen).to(points.device)].detach().cpu(), np.arange(len(chosen))
    if isinstance(points, torch.Tensor):
        points = points.detach().numpy()
    flat = np.empty(len(chosen), np.int64)
    cam = np.array([intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy], np.float32)
    _landing_kernel(np.asarray(points, np.float32), np.asarray(chosen, np.int64), _world_to_cam_rows(pose), cam,
                    intrinsics.width, intrinsics.height, flat)
    return flat


@numba.njit(cache=True, error_model="numpy")
def _landing_kernel(points, chosen, m, cam, width, height, out):
    """``_landing_pixels``' loop: each chosen point's centre pixel by the splatting kernels' own projection
    (``_project_one``, ``floor(u + 0.5)``), -1 off the image."""
    half = np.float32(0.5)
    for i in range(chosen.shape[0]):
        _, _, u, v = _project_one(points, chosen[i], m, cam[0], cam[1], cam[2], cam[3])
        uf = np.floor(u + half)
        vf = np.floor(v + half)
        if uf >= 0 and uf < width and vf >= 0 and vf < height:
            out[i] = np.int64(vf) * width + np.int64(uf)
        else:
            out[i] = -1
