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

Ties (equal test depth) go to the lower point index, so results are deterministic. Both backends z-buffer one packed
int64 key per pixel, ``(depth bits << 32) | point index`` (a positive float32's bits order as integers), with one
minimum per write. They give identical results (in ``"soft"`` mode up to float32 summation order: colours may differ
by one level): ``"torch"`` (vectorised scatter-reduce; CPU and CUDA) and ``"numba"`` (CPU, the default there). The
numba kernels project points in blocks in SIMD lanes, straight from the (N, 3) array and without a branch per point,
keep the visible ones and write their keys into one z-buffer that becomes the index image; one more pass over the
image resolves index, depth, mask, colour and confidence at once (a footprint winner's true depth and landing pixel
from a record the first pass kept per point). They release the GIL, so renders on two threads use two cores, and
reuse per-thread scratch buffers; ``threads > 1`` also splits one render over per-thread z-buffers, and on one
z-buffer the resolve pass and the soft blend pass split their pixels over the free cores (``bridge.cores``). Several
times faster than Open3D's ``project_to_rgbd_image`` on CPU (which is what justifies a numba kernel beside the torch path;
measured in ``benchmarks/bench_render.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numba
import numpy as np
import torch

from worldweave.bridge.cores import even_bands, split_call
from worldweave.bridge.frames import RenderResult
from worldweave.bridge.scratch import thread_scratch
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


class RenderBuffers(NamedTuple):
    """Arrays ``render_points`` writes one view into instead of new ones (``out=``), each C-contiguous and of the
    view's (H, W): uint8 (H, W, 3) colour, float32 (H, W) depth, bool (H, W) mask, float32 (H, W) confidence. Rows of
    stacked arrays, for instance: ``SpatialMemory.render_anchors`` renders its anchors into one stack, which the weave
    then reads without copying."""

    rgb: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    confidence: np.ndarray

    def check(self, shape: tuple[int, int]) -> None:
        """Raise ``InvalidInputError`` unless each array is C-contiguous, of its dtype, and of the view's ``shape``."""
        for name, dtype, want in (("rgb", np.uint8, (*shape, 3)), ("depth", np.float32, shape),
                                  ("mask", np.bool_, shape), ("confidence", np.float32, shape)):
            array = getattr(self, name)
            if not (isinstance(array, np.ndarray) and array.dtype == dtype and array.shape == want
                    and array.flags.c_contiguous and array.flags.writeable):
                raise InvalidInputError(f"out.{name} must be a writeable C-contiguous {np.dtype(dtype).name} array of "
                                        f"shape {want}")


def _world_to_cam_rows(pose: Pose) -> np.ndarray:
    """The 3x4 world-to-camera matrix, float32, flattened row-major (12 values)."""
    return pose.inverse_matrix()[:3].astype(np.float32).reshape(-1)


def _falloff_factor(radius: int, d2: np.ndarray, falloff: float) -> np.ndarray:
    """float32 multipliers of a point's depth at squared pixel distances ``d2`` inside a footprint of ``radius``
    (the same float64 operations as the numba kernel, so both paths agree bit for bit)."""
    scale = falloff / ((radius + 0.5) * (radius + 0.5))
    return (1.0 + scale * d2.astype(np.float64)).astype(np.float32)


_BLOCK = 256
"""Points the numba kernels project at once (SIMD, into arrays that stay in L1 cache) before their z-buffer writes."""


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _project_one(flat, i, m, cam):
    """Point ``i`` of ``flat`` ((3 N,) float32 x, y, z, ...) through the world-to-camera rows ``m`` (12,) and ``cam``
    (fx, fy, cx, cy): camera depth ``zc`` (metres), its inverse and the nearest pixel ``(uf, vf)`` as float32."""
    x, y, z = flat[3 * i], flat[3 * i + 1], flat[3 * i + 2]
    xc = x * m[0] + y * m[1] + z * m[2] + m[3]
    yc = x * m[4] + y * m[5] + z * m[6] + m[7]
    zc = x * m[8] + y * m[9] + z * m[10] + m[11]
    inv = np.float32(1.0) / zc  # zc == 0 gives inf, as in torch (error_model="numpy"); the near test culls it
    half = np.float32(0.5)
    return zc, inv, np.floor(cam[0] * xc * inv + cam[2] + half), np.floor(cam[1] * yc * inv + cam[3] + half)


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _depth_key(zc, i):
    """The z-buffer key of a positive float32 depth ``zc`` and point index ``i``: depth bits over index, so that the
    smaller key is the nearer point and, at equal depth, the lower index."""
    return (np.int64(np.float32(zc).view(np.int32)) << _INDEX_BITS) | i


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _key_depth(key):
    """The float32 depth in the high half of a z-buffer key."""
    return np.int32(key >> _INDEX_BITS).view(np.float32)


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _clamp(value, low, high):
    """``value`` clamped to ``[low, high]`` (NaN gives ``low``), with selects that vectorise (``min``/``max`` don't)."""
    value = value if value > low else low  # noqa: FURB136
    return value if value < high else high  # noqa: FURB136


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _pixels_block(flat, start, count, m, cam, near, far, width, height, pix, key):
    """One-pixel splats of points ``start .. start + count``: the visible ones' pixels (``v * width + u``) and keys
    go to the front of ``pix`` and ``key`` in point order; returns how many. The projection loop has no branch and
    runs in SIMD lanes (points in arbitrary order would mispredict a branch per point); the compaction after it
    is branch-free too."""
    block = flat[3 * start : 3 * (start + count)]  # a view indexed from 0: the loop then vectorises
    zero = np.float32(0.0)
    last_u = np.float32(width - 1)
    last_v = np.float32(height - 1)
    row = np.int32(width)  # int32 pixel arithmetic vectorises better; images have at most 16384^2 < 2^31 pixels
    visible = 0
    for j in range(count):
        zc, _, uf, vf = _project_one(block, j, m, cam)
        ok = (zc > near) & (zc <= far) & (uf >= zero) & (uf <= last_u) & (vf >= zero) & (vf <= last_v)
        ui = np.int32(_clamp(uf, zero, last_u))
        vi = np.int32(_clamp(vf, zero, last_v))
        pix[j] = vi * row + ui if ok else np.int32(-1)
        key[j] = _depth_key(zc, start + j)
        visible += ok
    if visible == 0 or visible == count:  # sorted points: whole blocks in or out of view need no compaction
        return visible
    kept = 0
    for j in range(count):
        p = pix[j]
        pix[kept] = p
        key[kept] = key[j]
        kept += p >= 0
    return kept


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _squares_block(flat, start, count, sizes, m, cam, near, far, spread, max_radius, width, height, key, centre,
                   records):
    """Footprint splats of points ``start .. start + count``: the visible ones' keys (true depth) and squares
    (``centre[k]`` = u, v, half-width in pixels) to the front of ``key`` and ``centre`` in point order; returns how
    many. ``sizes``: (1,) for all points or (N,) per point (metres). Each point's record, its true depth bits over
    the pixel it lands on (``_INDEX_MASK`` off the image), goes to ``records[start + j]`` ((N,) int64; stage 2
    reads a winner's there), unless ``records`` is empty (the blend pass, which reads none). Branch-free, as
    ``_pixels_block``, but for that loop-invariant option."""
    block = flat[3 * start : 3 * (start + count)]
    size_block = sizes[start : start + count] if sizes.shape[0] > 1 else sizes
    record_block = records[start : start + count]
    with_records = records.shape[0] > 0
    per_point = sizes.shape[0] > 1
    half = np.float32(0.5)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    top = np.float32(max_radius)
    last_u = np.float32(width - 1)
    last_v = np.float32(height - 1)
    visible = 0
    for j in range(count):
        zc, inv, uf, vf = _project_one(block, j, m, cam)
        size = size_block[j] if per_point else size_block[0]
        rf = _clamp(np.ceil((spread * size * inv - one) * half), zero, top)
        ok = ((zc > near) & (zc <= far) & (uf + rf >= zero) & (uf - rf <= last_u) & (vf + rf >= zero)
              & (vf - rf <= last_v))
        ui = np.int64(_clamp(uf, -top, last_u + top))  # no-op clamps on visible points
        vi = np.int64(_clamp(vf, -top, last_v + top))
        centre[j, 0] = ui
        centre[j, 1] = vi
        centre[j, 2] = np.int64(rf) if ok else -1
        key[j] = _depth_key(zc, start + j)
        if with_records:
            inside = (uf >= zero) & (uf <= last_u) & (vf >= zero) & (vf <= last_v)
            record_block[j] = _depth_key(zc, vi * width + ui if inside else _INDEX_MASK)
        visible += ok
    if visible == 0 or visible == count:
        return visible
    kept = 0
    for j in range(count):
        radius = centre[j, 2]
        centre[kept, 0] = centre[j, 0]
        centre[kept, 1] = centre[j, 1]
        centre[kept, 2] = radius
        key[kept] = key[j]
        kept += radius >= 0
    return kept


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _zbuffer_range(flat, start, stop, sizes, m, cam, near, far, spread, max_radius, falloff, width, height, keys,
                   records):
    """Points ``start .. stop`` into the z-buffer ``keys`` (H W,) int64: the minimum key per pixel. With ``sizes``
    empty every point covers the pixel it lands on; otherwise its footprint square, at the depth raised by the
    falloff, and its record goes to ``records`` (see ``_squares_block``)."""
    key = np.empty(_BLOCK, np.int64)
    if sizes.shape[0] == 0:
        pix = np.empty(_BLOCK, np.int32)
        for b in range(start, stop, _BLOCK):
            for j in range(_pixels_block(flat, b, min(_BLOCK, stop - b), m, cam, near, far, width, height, pix, key)):
                p = pix[j]
                keys[p] = min(keys[p], key[j])
        return
    centre = np.empty((_BLOCK, 3), np.int64)
    for b in range(start, stop, _BLOCK):
        kept = _squares_block(flat, b, min(_BLOCK, stop - b), sizes, m, cam, near, far, spread, max_radius, width,
                              height, key, centre, records)
        for j in range(kept):
            ui, vi, radius = centre[j, 0], centre[j, 1], centre[j, 2]
            if radius == 0:
                p = vi * width + ui
                keys[p] = min(keys[p], key[j])
                continue
            zc = _key_depth(key[j])
            i = key[j] & _INDEX_MASK
            scale = falloff / ((radius + 0.5) * (radius + 0.5))
            for dv in range(max(-radius, -vi), min(radius, height - 1 - vi) + 1):
                row = (vi + dv) * width + ui
                for du in range(max(-radius, -ui), min(radius, width - 1 - ui) + 1):
                    zeff = zc * np.float32(1.0 + scale * np.float64(du * du + dv * dv))
                    q = row + du
                    keys[q] = min(keys[q], _depth_key(zeff, i))


def _zbuffer(flat, sizes, m, cam, near, far, spread, max_radius, falloff, width, height, index, extra, records):
    """Stage 1: z-buffer all points. One z-buffer per thread: ``index`` (H W,) int64 (later the output) and the rows
    of ``extra`` (threads - 1, H W); thread ``t`` takes the ``t``-th share of the points in order."""
    n = flat.shape[0] // 3
    threads = extra.shape[0] + 1
    chunk = (n + threads - 1) // threads
    for t in numba.prange(threads):
        keys = index if t == 0 else extra[t - 1]
        keys[:] = _EMPTY_KEY
        _zbuffer_range(flat, min(n, t * chunk), min(n, (t + 1) * chunk), sizes, m, cam, near, far, spread, max_radius,
                       falloff, width, height, keys, records)


_ZBUFFER = {
    parallel: numba.njit(cache=not parallel, nogil=True, parallel=parallel, error_model="numpy")(_zbuffer)
    for parallel in (False, True)
}
"""Stage 1 compiled serial (``False``) and with ``prange`` parallel (``True``), both releasing the GIL. Only the
serial one is cached on disk: numba's cache key does not include ``parallel``, so both variants would share one
cache entry."""


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _merge_buffers(index, extra):
    """Before stage 2 of a render on several z-buffers: each pixel's smallest key over ``extra`` into ``index``."""
    for t in range(extra.shape[0]):
        for p in numba.prange(index.shape[0]):
            index[p] = min(index[p], extra[t, p])


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _resolve_rows(first, stop, index, records, colors, point_confidence, depth, mask, rgb, confidence):
    """Stage 2, at pixels ``first .. stop - 1``: the smallest key (``index[p]``, over every z-buffer) names the
    winning point: ``index[p]`` becomes its index (-1: none), ``depth[p]`` its true depth, ``mask[p]``, its colour in
    ``rgb`` ((H W, 3), or (H W, 0) without colours) and, when ``confidence`` is (H W,) rather than (0,), its
    ``point_confidence`` ((1,) for all points, or (N,)) where it lands on that pixel, else 0. A one-pixel splat's
    depth is its key's and it lands where it won; a footprint's (``records`` (N,), not (0,)) are in its record.
    Branch-free but for the loop-invariant options: covered and empty pixels interleave, and an empty one reads point
    0 and keeps none of it. Each pixel's values depend on that pixel alone."""
    footprint = records.shape[0] > 0
    with_colors = rgb.shape[1] == 3
    per_point = point_confidence.shape[0] > 1
    want_confidence = confidence.shape[0] > 0
    for p in range(first, stop):
        best = index[p]
        hit = best != _EMPTY_KEY
        i = best & _INDEX_MASK if hit else 0
        index[p] = i if hit else -1
        mask[p] = hit
        zc = _key_depth(best)
        at_centre = hit
        if footprint:
            record = records[i]
            zc = _key_depth(record)
            at_centre = hit & ((record & _INDEX_MASK) == p)
        depth[p] = zc if hit else np.float32(0.0)
        if with_colors:
            for c in range(3):
                color = colors[i, c]
                rgb[p, c] = color if hit else 0
        if want_confidence:
            value = point_confidence[i] if per_point else point_confidence[0]
            confidence[p] = value if at_centre else np.float32(0.0)


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _resolve_bands(bands, index, records, colors, point_confidence, depth, mask, rgb, confidence):
    """``_resolve_rows`` for the bands of pixels ``bands[t] .. bands[t + 1] - 1``, one thread each."""
    for t in numba.prange(len(bands) - 1):
        _resolve_rows(bands[t], bands[t + 1], index, records, colors, point_confidence, depth, mask, rgb, confidence)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _blend_rows(first, stop, flat, sizes, m, cam, near, far, spread, max_radius, width, height, colors, tolerance,
                depth, rgb, acc):
    """Soft mode, after stage 2, for image rows ``first .. stop - 1``: every splat (projected again by
    ``_squares_block``, as in stage 1, its records not written again) within ``tolerance``
    of a pixel's front ``depth`` adds its colour and depth there with a Gaussian weight of its distance from the
    splat centre (float32 sums in point order, in ``acc`` (H W, 5): red, green, blue, depth, weight; zeroed here);
    then each covered pixel's ``rgb`` ((H W, 3) or (H W, 0)) and ``depth`` become the weighted means. Every covered
    pixel is written: its own winner passes the depth test with a weight > 0. A pixel's sums depend on the splats
    over it alone, taken in point order, so bands of rows give the whole image's values."""
    n = flat.shape[0] // 3
    with_colors = rgb.shape[1] == 3
    sums = acc.reshape(-1)
    sums[5 * first * width : 5 * stop * width] = 0.0
    half = np.float32(0.5)
    limit_scale = np.float32(1.0) + tolerance
    key = np.empty(_BLOCK, np.int64)
    centre = np.empty((_BLOCK, 3), np.int64)
    no_records = np.empty(0, np.int64)  # stage 1 wrote them
    weights = np.empty(2 * max_radius * max_radius + 1, np.float32)
    weights_radius = -1
    for b in range(0, n, _BLOCK):
        kept = _squares_block(flat, b, min(_BLOCK, n - b), sizes, m, cam, near, far, spread, max_radius, width,
                              height, key, centre, no_records)
        for j in range(kept):
            ui, vi, radius = centre[j, 0], centre[j, 1], centre[j, 2]
            low, high = max(-radius, -vi, first - vi), min(radius, height - 1 - vi, stop - 1 - vi)
            if low > high:  # the splat misses these rows
                continue
            if radius != weights_radius:  # the weights by squared distance, for this half-width
                for d2 in range(2 * radius * radius + 1):
                    weights[d2] = np.float32(np.exp(-2.0 * np.float64(d2) / ((radius + 0.5) * (radius + 0.5))))
                weights_radius = radius
            zc = _key_depth(key[j])
            i = key[j] & _INDEX_MASK
            red = np.float32(colors[i, 0]) if with_colors else np.float32(0.0)
            green = np.float32(colors[i, 1]) if with_colors else np.float32(0.0)
            blue = np.float32(colors[i, 2]) if with_colors else np.float32(0.0)
            for dv in range(low, high + 1):
                row = (vi + dv) * width + ui
                for du in range(max(-radius, -ui), min(radius, width - 1 - ui) + 1):
                    p = row + du
                    if not (depth[p] > 0 and zc <= depth[p] * limit_scale):
                        continue
                    weight = weights[du * du + dv * dv]
                    q = 5 * p
                    sums[q] += weight * red
                    sums[q + 1] += weight * green
                    sums[q + 2] += weight * blue
                    sums[q + 3] += weight * zc
                    sums[q + 4] += weight
    for p in range(first * width, stop * width):
        total = sums[5 * p + 4]
        if total > 0:
            if with_colors:
                for c in range(3):
                    rgb[p, c] = np.uint8(min(np.floor(sums[5 * p + c] / total + half), np.float32(255.0)))
            depth[p] = sums[5 * p + 3] / total


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _blend_bands(bands, flat, sizes, m, cam, near, far, spread, max_radius, width, height, colors, tolerance, depth,
                 rgb, acc):
    """``_blend_rows`` for the bands of image rows ``bands[t] .. bands[t + 1] - 1``, one thread each, each band
    projecting every point again."""
    for t in numba.prange(len(bands) - 1):
        _blend_rows(bands[t], bands[t + 1], flat, sizes, m, cam, near, far, spread, max_radius, width, height, colors,
                    tolerance, depth, rgb, acc)


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
                 near_m: float, far_m: float, spread: float, max_radius_px: int, falloff: float
                 ) -> tuple[Splat, torch.Tensor]:
    """The z-buffer (as the numba stages), and (H W,) bool: covered pixels that their winner lands on."""
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
    safe = winner.clamp_min(0)
    depth = torch.where(hit, zc[safe], torch.zeros((), dtype=torch.float32, device=device))
    u, v = uf[safe], vf[safe]
    at_centre = hit & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    at_centre &= v.to(torch.int64) * w + u.to(torch.int64) == torch.arange(h * w, device=device)
    return Splat(depth.reshape(h, w), winner.reshape(h, w), hit.reshape(h, w)), at_centre


def _blend_torch(points: torch.Tensor, colors: torch.Tensor, sizes: torch.Tensor, m: torch.Tensor,
                 intrinsics: Intrinsics, near_m: float, far_m: float, spread: float, max_radius_px: int,
                 tolerance: float, front: Splat) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft mode's second pass (see ``_blend_rows``), vectorised; returns (depth (H, W), rgb (H, W, 3))."""
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
    splat_result, _ = _splat(
        points, pose, intrinsics, colors=colors, splat=splat, point_size_m=point_size_m,
        footprint_scale=footprint_scale, max_radius_px=max_radius_px, footprint_falloff=footprint_falloff,
        soft_tolerance=soft_tolerance, near_m=near_m, far_m=far_m, backend=backend, threads=threads,
        confidence=None, with_confidence=False, keep_index=True,
    )
    return splat_result


def _splat(
    points: torch.Tensor | np.ndarray,
    pose: Pose,
    intrinsics: Intrinsics,
    *,
    colors: torch.Tensor | np.ndarray | None,
    splat: SplatMode,
    point_size_m: float | torch.Tensor | np.ndarray | None,
    footprint_scale: float,
    max_radius_px: int,
    footprint_falloff: float,
    soft_tolerance: float,
    near_m: float,
    far_m: float,
    backend: RenderBackend | None,
    threads: int,
    confidence: np.ndarray | None,
    with_confidence: bool,
    keep_index: bool,
    out: RenderBuffers | None = None,
) -> tuple[Splat, np.ndarray | None]:
    """:func:`splat_points`, and with ``with_confidence`` the (H, W) float32 confidence image of
    :func:`render_points` (``confidence``: (N,) checked values, or ``None`` for 1). Without ``keep_index`` the numba
    path z-buffers in this thread's scratch buffer, so ``Splat.index`` is valid only until the thread's next render.
    ``out`` (checked): the numba path of a non-empty render resolves into these arrays (the colour 0 without
    ``colors``, the confidence 1 where a point lands without ``with_confidence``); the others leave them alone."""
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
        if not (sizes.min(initial=0.0) >= 0 and sizes.max(initial=0.0) < np.inf):  # NaN fails both
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
        empty = np.zeros((h, w), np.float32) if with_confidence else None
        return Splat(torch.zeros((h, w), dtype=torch.float32, device=device), index, index >= 0, rgb), empty
    if backend == "torch":
        return _splat_with_torch(points, colors, sizes, rows, intrinsics, splat=splat, near_m=near_m, far_m=far_m,
                                 spread=spread, max_radius_px=int(max_radius_px), falloff=float(footprint_falloff),
                                 tolerance=float(soft_tolerance), confidence=confidence,
                                 with_confidence=with_confidence)
    pixels = h * w
    flat = _numpy(points, np.float32).reshape(-1)
    cam = np.array([intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy], dtype=np.float32)
    zbuffer = _ZBUFFER[threads > 1]
    index = np.empty(pixels, dtype=np.int64) if keep_index else thread_scratch("index", (pixels,), np.int64)
    extra = np.empty((threads - 1, pixels), dtype=np.int64)
    records = thread_scratch("records", (0 if sizes is None else n,), np.int64)
    near, far, spread32 = np.float32(near_m), np.float32(far_m), np.float32(spread)
    size_array = np.zeros(0, np.float32) if sizes is None else sizes
    zbuffer(flat, size_array, rows, cam, near, far, spread32, int(max_radius_px), float(footprint_falloff), w, h, index,
            extra, records)
    if out is None:
        depth = np.empty(pixels, dtype=np.float32)
        mask = np.empty(pixels, dtype=np.bool_)
        rgb = np.empty((pixels, 0 if colors is None else 3), dtype=np.uint8)
        pixel_confidence = np.empty(pixels if with_confidence else 0, dtype=np.float32)
    else:  # views of the caller's arrays
        rgb, depth, mask, pixel_confidence = (out.rgb.reshape(pixels, 3), out.depth.reshape(pixels),
                                              out.mask.reshape(pixels), out.confidence.reshape(pixels))
    color_array = np.zeros((1, 3), np.uint8) if colors is None else _numpy(colors, np.uint8)
    point_confidence = np.ones(1, np.float32) if confidence is None else confidence
    resolve_args = (index, records, color_array, point_confidence, depth, mask, rgb, pixel_confidence)
    if threads > 1:  # the z-buffers merged, then their pixels split over the render's threads
        _merge_buffers(index, extra)
        _resolve_bands(even_bands(pixels, threads), *resolve_args)
    else:  # one z-buffer: its pixels split over the free cores
        split_call(_resolve_rows, _resolve_bands, pixels, *resolve_args)
    if splat == "soft":
        acc = thread_scratch("blend", (pixels, 5), np.float32)
        split_call(_blend_rows, _blend_bands, h, flat, size_array, rows, cam, near, far, spread32, int(max_radius_px),
                   w, h, color_array, np.float32(soft_tolerance), depth, rgb, acc)
    result = Splat(torch.from_numpy(depth).reshape(h, w), torch.from_numpy(index).reshape(h, w),
                   torch.from_numpy(mask).reshape(h, w), None if colors is None else torch.from_numpy(rgb).reshape(h, w, 3))
    return result, pixel_confidence.reshape(h, w) if with_confidence or out is not None else None


def _splat_with_torch(points: torch.Tensor | np.ndarray, colors: torch.Tensor | np.ndarray | None,
                      sizes: np.ndarray | None, rows: np.ndarray, intrinsics: Intrinsics, *, splat: SplatMode,
                      near_m: float, far_m: float, spread: float, max_radius_px: int, falloff: float, tolerance: float,
                      confidence: np.ndarray | None, with_confidence: bool) -> tuple[Splat, np.ndarray | None]:
    """``_splat``'s torch backend, on the points' device (checked arguments)."""
    device = _device_of(points)
    h, w = intrinsics.shape
    n = points.shape[0]
    pts = torch.as_tensor(points).to(torch.float32).contiguous()
    sizes_t = None if sizes is None else torch.from_numpy(sizes).to(device)
    m = torch.from_numpy(rows).to(device)
    result, at_centre = _splat_torch(pts, sizes_t, m, intrinsics, near_m, far_m, spread, max_radius_px, falloff)
    pixel_confidence = None
    if with_confidence:
        values = (torch.ones((), dtype=torch.float32, device=device) if confidence is None
                  else torch.from_numpy(confidence).to(device)[result.index.reshape(-1).clamp_min(0)])
        pixel_confidence = torch.where(at_centre, values, 0.0).reshape(h, w).cpu().numpy()
    if splat == "soft":
        colors_t = torch.zeros((n, 3), dtype=torch.uint8, device=device) if colors is None else torch.as_tensor(colors).to(device)
        depth, rgb = _blend_torch(pts, colors_t, sizes_t.expand(n) if len(sizes_t) == 1 else sizes_t, m, intrinsics,
                                  near_m, far_m, spread, max_radius_px, tolerance, result)
        return Splat(depth, result.index, result.mask, None if colors is None else rgb), pixel_confidence
    if colors is None:
        return result, pixel_confidence
    hit = result.mask.reshape(-1)
    rgb = torch.zeros((h * w, 3), dtype=torch.uint8, device=device)
    rgb[hit] = torch.as_tensor(colors).to(device)[result.index.reshape(-1)[hit]]
    return Splat(result.depth, result.index, result.mask, rgb.reshape(h, w, 3)), pixel_confidence


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
    out: RenderBuffers | None = None,
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
    Options as in :func:`splat_points`. ``out``: arrays to render into (``RenderBuffers``); the result then holds
    them.
    """
    n = int(points_world.shape[0])
    if out is not None:
        out.check(intrinsics.shape)
    with_confidence = confidence is not None or splat != "pixel"  # else 1 on every covered pixel: RenderResult's None
    if confidence is not None:
        confidence = _numpy(confidence, np.float32).reshape(-1)
        if confidence.shape != (n,) or not (confidence.min(initial=0.0) >= 0 and confidence.max(initial=1.0) <= 1):
            raise InvalidInputError(f"confidence must be (N,) = ({n},) values in [0, 1], got shape {confidence.shape}")
    result, pixel_confidence = _splat(
        points_world, pose, intrinsics, colors=colors, splat=splat, point_size_m=point_size_m,
        footprint_scale=footprint_scale, max_radius_px=max_radius_px, footprint_falloff=footprint_falloff,
        soft_tolerance=soft_tolerance, near_m=near_m, far_m=far_m, backend=backend, threads=threads,
        confidence=confidence, with_confidence=with_confidence, keep_index=False, out=out,
    )
    if out is not None and result.depth.data_ptr() == out.depth.ctypes.data:  # the numba kernels wrote them
        return RenderResult.unchecked(*out)
    render = RenderResult(result.rgb.cpu().numpy(), result.depth.cpu().numpy(), result.mask.cpu().numpy(),
                          pixel_confidence)
    if out is None:
        return render
    for array, values in zip(out, (render.rgb, render.depth, render.mask, render.confidence)):
        np.copyto(array, values)
    return RenderResult.unchecked(*out)
