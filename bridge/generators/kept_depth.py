"""The depth and confidence a backend keeps from memory's render where memory's points land or only spread: one
numba fit per footprint pixel (``kept_depth``). Apart from ``base`` so that importing a backend's interface loads no
numba (the command line's help stays fast)."""

from __future__ import annotations

import numba
import numpy as np

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
    """
    covered = render.mask & (render.depth > 0)
    confidence = np.where(covered, render.confidence, np.float32(0)).astype(np.float32)
    depth = np.where(covered, render.depth, np.float32(0)).astype(np.float32)
    landed = confidence > 0
    if landed.all() or not landed.any():
        return depth, confidence
    _fit_footprints(_moment_tables(depth, confidence), covered & ~landed, LANDED_FIT_MIN_POINTS,
                    LANDED_FIT_TOLERANCE, LANDED_FIT_MAX_RADIUS_PX, depth, confidence)
    return depth, confidence


@numba.njit(cache=True)
def _moment_tables(depth, confidence):
    """Summed-area tables (10, H + 1, W + 1) float64 of the landed pixels' (confidence above 0) moments: count, u, v,
    uu, uv, vv, w, wu, wv, ww with w the inverse depth."""
    height, width = depth.shape
    tables = np.zeros((10, height + 1, width + 1))
    row = np.zeros(10)
    for v in range(height):
        row[:] = 0.0
        for u in range(width):
            if confidence[v, u] > 0:
                w = 1.0 / depth[v, u]
                row[0] += 1.0
                row[1] += u
                row[2] += v
                row[3] += u * u
                row[4] += u * v
                row[5] += v * v
                row[6] += w
                row[7] += w * u
                row[8] += w * v
                row[9] += w * w
            for k in range(10):
                tables[k, v + 1, u + 1] = tables[k, v, u + 1] + row[k]
    return tables


@numba.njit(cache=True)
def _box(table, k, v0, v1, u0, u1):
    """Sum of moment ``k`` over rows v0..v1 and columns u0..u1 (inclusive) from its summed-area table."""
    return table[k, v1 + 1, u1 + 1] - table[k, v0, u1 + 1] - table[k, v1 + 1, u0] + table[k, v0, u0]


@numba.njit(cache=True)
def _fit_footprints(tables, spread, min_points, tolerance, max_radius, depth, confidence):
    """``kept_depth``'s fit at every ``spread`` pixel, from the summed-area tables of the landed pixels' moments
    (count, u, v, uu, uv, vv, w, wu, wv, ww with w the inverse depth); writes ``depth`` and ``confidence``."""
    height, width = spread.shape
    for v in range(height):
        for u in range(width):
            if not spread[v, u]:
                continue
            found = False
            for radius in range(1, max_radius + 1):
                v0, v1, u0, u1 = max(v - radius, 0), min(v + radius, height - 1), max(u - radius, 0), min(u + radius, width - 1)
                if (_box(tables, 0, v0, v1, u0, u1) >= min_points and u0 < u and u1 > u and v0 < v and v1 > v
                        and _box(tables, 0, v0, v1, u0, u - 1) > 0 and _box(tables, 0, v0, v1, u + 1, u1) > 0
                        and _box(tables, 0, v0, v - 1, u0, u1) > 0 and _box(tables, 0, v + 1, v1, u0, u1) > 0):
                    found = True
                    break
            if not found:
                continue
            s = np.empty(10)
            for k in range(10):
                s[k] = _box(tables, k, v0, v1, u0, u1)
            n = s[0]
            # Moments about the pixel (x = u' - u, y = v' - v), for a well-conditioned fit w = a x + b y + c.
            sx, sy = s[1] - n * u, s[2] - n * v
            sxx = s[3] - 2 * u * s[1] + n * u * u
            sxy = s[4] - u * s[2] - v * s[1] + n * u * v
            syy = s[5] - 2 * v * s[2] + n * v * v
            sw, sxw, syw, sww = s[6], s[7] - u * s[6], s[8] - v * s[6], s[9]
            det = sxx * (syy * n - sy * sy) - sxy * (sxy * n - sy * sx) + sx * (sxy * sy - syy * sx)
            if abs(det) < 1e-9:
                continue
            a = (sxw * (syy * n - sy * sy) - sxy * (syw * n - sy * sw) + sx * (syw * sy - syy * sw)) / det
            b = (sxx * (syw * n - sy * sw) - sxw * (sxy * n - sy * sx) + sx * (sxy * sw - syw * sx)) / det
            c = (sxx * (syy * sw - sy * syw) - sxy * (sxy * sw - sx * syw) + sxw * (sxy * sy - syy * sx)) / det
            if c <= 0:
                continue
            residual = (sww - 2 * (a * sxw + b * syw + c * sw) + a * a * sxx + 2 * a * b * sxy + b * b * syy
                        + 2 * a * c * sx + 2 * b * c * sy + c * c * n)
            if residual > n * (tolerance * c) ** 2:
                continue
            lowest = np.float32(1.0)
            for y in range(v0, v1 + 1):
                for x in range(u0, u1 + 1):
                    if confidence[y, x] > 0 and not spread[y, x]:
                        lowest = min(lowest, confidence[y, x])
            depth[v, u] = 1.0 / c
            confidence[v, u] = lowest
