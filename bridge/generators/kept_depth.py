"""The depth and confidence a backend keeps from memory's render where memory's points land or only spread: one
numba fit per footprint pixel (``kept_depth``). Apart from ``base`` so that importing a backend's interface loads no
numba (the command line's help stays fast)."""

from __future__ import annotations

import numba
import numpy as np

from worldweave.bridge.cores import split_call
from worldweave.bridge.frames import RenderResult


LANDED_FIT_MIN_POINTS = 8
"""A footprint pixel takes the plane of the landed pixels around it (``kept_depth``) only when at least this many
of them lie in its window, on all four sides of it."""
LANDED_FIT_TOLERANCE = 0.002
"""... and when they lie on one plane: the RMS residual of their inverse depths to it at most this share of the
pixel's inverse depth (a window across a silhouette or a crease fits no plane)."""
LANDED_FIT_MAX_RADIUS_PX = 8
"""Largest half-width of the window (pixels) searched for landed pixels."""


def kept_depth(render: RenderResult) -> tuple[np.ndarray, np.ndarray]:
    """float32 (H, W) depth (metres, 0 where not covered) and confidence a backend returns for the pixels it keeps
    from ``render``.

    Where a memory point lands (render confidence above 0), memory's depth and confidence. Where a point's footprint
    only spreads (render confidence 0, ``bridge.render``), the render shows the point's depth along another ray: off
    the surface. Such a pixel takes the depth of the plane through the landed pixels around it instead (inverse depth
    is affine in pixel coordinates on a plane: a least-squares fit over the smallest square window, up to
    ``LANDED_FIT_MAX_RADIUS_PX``, holding ``LANDED_FIT_MIN_POINTS`` landed pixels on all four sides of it), with
    the lowest confidence of the landed pixels in that window, when they fit one plane
    (``LANDED_FIT_TOLERANCE``); otherwise the render's depth with
    confidence 0 (shown, never fused). So a wall between sparse memory points is fused whole, while a footprint
    spread past a silhouette or across a crease is not.

    The fits run on the calling thread's core and the cores no other engine work holds (``bridge.cores.split_call``,
    bands of rows holding about as many fits each), with the same result on any number of threads.
    """
    shape = render.mask.shape
    depth, confidence = np.empty(shape, np.float32), np.empty(shape, np.float32)
    spread = np.empty(shape, np.bool_)
    landed = _covered(render.mask, render.depth, render.confidence, depth, confidence, spread)
    if landed in (0, render.mask.size):
        return depth, confidence
    split_call(_fit_rows, _fit_bands, depth.shape[0], depth, confidence, spread, _landed_counts(confidence),
               LANDED_FIT_MIN_POINTS, LANDED_FIT_TOLERANCE, LANDED_FIT_MAX_RADIUS_PX,
               bands=lambda rows, threads: _bands(spread, threads))
    return depth, confidence


@numba.njit(cache=True, nogil=True)
def _covered(mask, render_depth, render_confidence, depth, confidence, spread):
    """One pass over the render: ``depth`` and ``confidence`` (float32) are the render's where it covers the pixel
    with depth above 0 and 0 elsewhere; ``spread`` marks the covered pixels whose confidence is not above 0 (a
    footprint's spread). Returns how many covered pixels have confidence above 0 (landed)."""
    height, width = mask.shape
    zero = np.float32(0.0)
    landed = 0
    for v in range(height):
        for u in range(width):
            covered = mask[v, u] and render_depth[v, u] > 0
            z = np.float32(render_depth[v, u]) if covered else zero
            c = np.float32(render_confidence[v, u]) if covered else zero
            depth[v, u] = z
            confidence[v, u] = c
            spread[v, u] = covered and not c > 0
            landed += c > 0
    return landed


def _bands(spread: np.ndarray, threads: int) -> np.ndarray:
    """int64 (threads + 1,) first image row of each of ``threads`` bands of rows holding about as many ``spread``
    pixels (the fits) each, then the row count."""
    per_row = np.cumsum(spread.sum(axis=1))
    shares = per_row[-1] * np.arange(1, threads) / threads
    return np.concatenate([[0], np.searchsorted(per_row, shares, side="right"), [spread.shape[0]]]).astype(np.int64)


@numba.njit(cache=True, nogil=True, inline="always")
def _box(sat, slot, k, v0, v1, u0, u1):
    """Sum of moment ``k`` over rows v0..v1 and columns u0..u1 (inclusive) from the summed-area table rows kept in
    the ring ``sat`` (table row i in slot ``slot[i]``)."""
    bottom, top = slot[v1 + 1], slot[v0]
    return sat[bottom, u1 + 1, k] - sat[top, u1 + 1, k] - sat[bottom, u0, k] + sat[top, u0, k]


@numba.njit(cache=True, nogil=True, inline="always")
def _count(counts, v0, v1, u0, u1):
    """Landed pixels in rows v0..v1 and columns u0..u1 (inclusive), from their summed-area table ``counts``."""
    return counts[v1 + 1, u1 + 1] - counts[v0, u1 + 1] - counts[v1 + 1, u0] + counts[v0, u0]


@numba.njit(cache=True, nogil=True, inline="always")
def _window(v, u, radius, height, width):
    """The rows v0..v1 and columns u0..u1 (inclusive) of the window of half-width ``radius`` around pixel (v, u),
    clipped to the image."""
    return max(v - radius, 0), min(v + radius, height - 1), max(u - radius, 0), min(u + radius, width - 1)


@numba.njit(cache=True, nogil=True, inline="always")
def _fits_window(counts, v, u, radius, height, width, min_points):
    """Whether the window of half-width ``radius`` around pixel (v, u), clipped to the image, holds ``min_points``
    landed pixels with some on all four sides of the pixel. Holds for every larger radius once it holds (the
    windows nest), so the smallest such radius can be searched from any start."""
    v0, v1, u0, u1 = _window(v, u, radius, height, width)
    return (u0 < u and u1 > u and v0 < v and v1 > v and _count(counts, v0, v1, u0, u1) >= min_points
            and _count(counts, v0, v1, u0, u - 1) > 0 and _count(counts, v0, v1, u + 1, u1) > 0
            and _count(counts, v0, v - 1, u0, u1) > 0 and _count(counts, v + 1, v1, u0, u1) > 0)


@numba.njit(cache=True, nogil=True)
def _landed_counts(confidence):
    """int32 (H + 1, W + 1) summed-area table of the landed pixels (confidence above 0)."""
    height, width = confidence.shape
    counts = np.zeros((height + 1, width + 1), np.int32)
    for v in range(height):
        running = 0
        for u in range(width):
            running += confidence[v, u] > 0
            counts[v + 1, u + 1] = counts[v, u + 1] + running
    return counts


@numba.njit(cache=True, nogil=True, parallel=True)
def _fit_bands(bands, depth, confidence, spread, counts, min_points, tolerance, max_radius):
    """``_fit_rows`` for the bands of image rows ``bands[t] .. bands[t + 1] - 1``, one thread each."""
    for t in numba.prange(len(bands) - 1):
        _fit_rows(bands[t], bands[t + 1], depth, confidence, spread, counts, min_points, tolerance, max_radius)


@numba.njit(cache=True, nogil=True)
def _fit_rows(first, stop, depth, confidence, spread, counts, min_points, tolerance, max_radius):
    """``kept_depth``'s fit at every ``spread`` pixel of image rows ``first .. stop - 1``, in place on ``depth`` and
    ``confidence``; landed pixels are those with confidence above 0 that are not ``spread`` (so a band reads the same
    landed pixels whether or not another band has written its fits yet), ``counts`` their count table
    (``_landed_counts``).

    The landed pixels' moments (count, u, v, uu, uv, vv, w, wu, wv, ww with w the inverse depth) are read from their
    summed-area table, of which only the rows the current image row's windows reach are kept, in a ring of
    2 ``max_radius`` + 2 rows (each table row is made from the one above it, from the image's first row: a band that
    starts lower makes the rows above it too, the same float64 sums in the same order, so every band of any split
    reads the same table). A pixel's window radius is searched in the landed pixels' int32 count table from the
    previous pixel's (the test holds for every radius above the smallest, so this finds the smallest). A row's
    windows are found first and their fits solved together (``_solve_fits``, a loop the compiler vectorises). The lowest
    landed confidence in a window is the minimum over its columns of per-radius column minima of the current row.
    Same float64 operations as full tables and a window scan (equal results, ``tests/test_step_kernels.py``), in a
    fraction of the memory traffic."""
    height, width = depth.shape
    ring = 2 * max_radius + 2
    slot = np.arange(height + 1) % ring
    sat = np.zeros((ring, width + 1, 10))
    row = np.zeros(10)
    made = 1  # table rows 0..made-1 are in the ring (row 0: zeros)
    minima = np.empty((max_radius, width), np.float32)
    sums = np.empty((10, width))
    fit_u = np.empty(width, np.int64)
    fit_radius = np.empty(width, np.int64)
    fit_c = np.empty(width)
    fit_kept = np.empty(width, np.bool_)
    start = 1
    for v in range(first, stop):
        while made <= min(v + max_radius + 1, height):  # table row ``made`` sums image rows 0..made-1
            y = made - 1
            current, previous = sat[slot[made]], sat[slot[made - 1]]
            row[:] = 0.0
            for u in range(width):
                if confidence[y, u] > 0 and not spread[y, u]:
                    w = 1.0 / depth[y, u]
                    row[0] += 1.0
                    row[1] += u
                    row[2] += y
                    row[3] += u * u
                    row[4] += u * y
                    row[5] += y * y
                    row[6] += w
                    row[7] += w * u
                    row[8] += w * y
                    row[9] += w * w
                for k in range(10):
                    current[u + 1, k] = previous[u + 1, k] + row[k]
            made += 1
        found = 0  # this row's fits with a window: pixel, radius and moments (``fit_u``, ``fit_radius``, ``sums``)
        for u in range(width):
            if not spread[v, u]:
                continue
            radius = min(max(start, 1), max_radius)
            if _fits_window(counts, v, u, radius, height, width, min_points):
                while radius > 1 and _fits_window(counts, v, u, radius - 1, height, width, min_points):
                    radius -= 1
            else:
                radius += 1
                while radius <= max_radius and not _fits_window(counts, v, u, radius, height, width, min_points):
                    radius += 1
                if radius > max_radius:
                    continue
            start = radius
            v0, v1, u0, u1 = _window(v, u, radius, height, width)
            for k in range(10):
                sums[k, found] = _box(sat, slot, k, v0, v1, u0, u1)
            fit_u[found] = u
            fit_radius[found] = radius
            found += 1
        _solve_fits(sums, fit_u, v, found, tolerance, fit_c, fit_kept)
        minima_done = 0
        for i in range(found):
            if not fit_kept[i]:
                continue
            u, radius = fit_u[i], fit_radius[i]
            while minima_done < radius:  # row v's minimum of landed confidence over rows v - r..v + r, per column
                minima_done += 1
                _column_minima(confidence, spread, v, minima_done, minima)
            lowest = np.float32(1.0)
            _, _, u0, u1 = _window(v, u, radius, height, width)
            for x in range(u0, u1 + 1):
                lowest = min(lowest, minima[radius - 1, x])
            depth[v, u] = 1.0 / fit_c[i]
            confidence[v, u] = lowest


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _solve_fits(sums, fit_u, v, count, tolerance, fit_c, fit_kept):
    """The plane fits of ``count`` pixels (``fit_u``, in image row ``v``) from their windows' landed moments
    (``sums`` (10, N), ``_fit_rows``' order): ``fit_c`` the fitted inverse depth at the pixel, ``fit_kept`` whether
    the fit holds (a solvable system, c above 0, the RMS residual within ``tolerance`` of c). Every fit is solved,
    branch-free, so the compiler vectorises the loop; a fit that does not hold only reads ``fit_kept`` False."""
    for i in range(count):
        u = np.float64(fit_u[i])
        n = sums[0, i]
        # Moments about the pixel (x = u' - u, y = v' - v), for a well-conditioned fit w = a x + b y + c.
        sx, sy = sums[1, i] - n * u, sums[2, i] - n * v
        sxx = sums[3, i] - 2 * u * sums[1, i] + n * u * u
        sxy = sums[4, i] - u * sums[2, i] - v * sums[1, i] + n * u * v
        syy = sums[5, i] - 2 * v * sums[2, i] + n * v * v
        sw, sxw, syw, sww = sums[6, i], sums[7, i] - u * sums[6, i], sums[8, i] - v * sums[6, i], sums[9, i]
        det = sxx * (syy * n - sy * sy) - sxy * (sxy * n - sy * sx) + sx * (sxy * sy - syy * sx)
        a = (sxw * (syy * n - sy * sy) - sxy * (syw * n - sy * sw) + sx * (syw * sy - syy * sw)) / det
        b = (sxx * (syw * n - sy * sw) - sxw * (sxy * n - sy * sx) + sx * (sxy * sw - syw * sx)) / det
        c = (sxx * (syy * sw - sy * syw) - sxy * (sxy * sw - sx * syw) + sxw * (sxy * sy - syy * sx)) / det
        residual = (sww - 2 * (a * sxw + b * syw + c * sw) + a * a * sxx + 2 * a * b * sxy + b * b * syy
                    + 2 * a * c * sx + 2 * b * c * sy + c * c * n)
        fit_c[i] = c
        fit_kept[i] = not abs(det) < 1e-9 and not c <= 0 and not residual > n * (tolerance * c) ** 2


@numba.njit(cache=True, nogil=True)
def _column_minima(confidence, spread, v, radius, minima):
    """``minima[radius - 1]``: per column, the lowest landed confidence (above 0, not a footprint spread, so never one
    the fit already wrote; +inf where none) over rows v - radius..v + radius clipped to the image, from
    ``minima[radius - 2]`` (radius 2 and up)."""
    height, width = spread.shape
    for x in range(width):
        lowest = minima[radius - 2, x] if radius > 1 else np.float32(np.inf)
        for y in (v - radius, v + radius) if radius > 1 else (v - 1, v + 1):
            if 0 <= y < height and confidence[y, x] > 0 and not spread[y, x]:
                lowest = min(lowest, confidence[y, x])
        if radius == 1 and confidence[v, x] > 0 and not spread[v, x]:
            lowest = min(lowest, confidence[v, x])
        minima[radius - 1, x] = lowest
