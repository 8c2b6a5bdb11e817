"""Rays from one origin traced to their first return: the voxel march and the free-space walk in one pass.

``WorldQueries.trace`` answers a Raycast, which reports the voxel each ray enters even when the ray crossed unknown
space on the way: it marches every ray to that voxel (``raycast.cast_ray``), then walks its free-space samples up to
there (``occupancy.unknown_from``). A LiDAR return needs less: a ray that enters unknown space ends there (a surface
behind it is not what the sensor would see first), so marching it on is wasted. ``first_return`` steps the march and
the walk of each ray together: a sample is tested as soon as the march has passed it (no voxel before it), and a ray
stops at its first unknown sample without marching further (about half the rays of a scan after a drive, most of the
march's distance).

The answers are ``trace``'s, bit for bit (the same samples and the same arithmetic: ``raycast.march_step``,
``occupancy.free_view``), wherever the ray did not end in unknown space before the voxel it enters; a ray that did
reports no entered voxel (-1). All rays start at one origin, so the start voxel is found once, and they go in the
caller's order (a scan's pattern: neighbouring rays walk the same memory), with no spatial sort.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from worldweave.bridge.queries.grid import new_cache
from worldweave.bridge.queries.occupancy import PackedViews, free_view, near_surface, surface_radius
from worldweave.bridge.queries.raycast import march_step
from worldweave.proto import voxel_keys

_BATCH = 64
"""Rays per parallel work item."""
_LIMIT = voxel_keys.AXIS_LIMIT


@numba.njit(cache=True, parallel=True)
def _first_return_kernel(march_grid, walk_grid, voxel_size, params, pixels, depths, ranks, min_rank, origin, directions,
                         range_m, step, margin, radius, out_t, out_voxel, out_unknown):
    """Per ray: ``out_unknown`` the first unknown sample (metres, ``inf`` when none), and unless that came first,
    ``out_t`` (metres, -1 when none) and ``out_voxel`` the voxel of ``march_grid`` the ray enters. The walk tests its
    samples against ``walk_grid`` (``near_surface``) and the views; see the module docstring."""
    m_keys, m_ids, m_shift, _, m_mask, m_slot, m_bits, _, _, _ = march_grid
    w_keys, w_ids, w_shift, _, w_mask, w_slot, w_bits, _, _, _ = walk_grid
    ox, oy, oz = origin[0] / voxel_size, origin[1] / voxel_size, origin[2] / voxel_size  # voxel units
    t_max = range_m / voxel_size
    start_x, start_y, start_z = np.int64(math.floor(ox)), np.int64(math.floor(oy)), np.int64(math.floor(oz))
    n = len(directions)
    for batch in numba.prange((n + _BATCH - 1) // _BATCH):
        march_cache = new_cache()
        walk_cache = new_cache()
        first = 0
        for i in range(batch * _BATCH, min(n, (batch + 1) * _BATCH)):
            dx, dy, dz = directions[i, 0], directions[i, 1], directions[i, 2]
            inv_x = 1.0 / dx if dx != 0 else 0.0
            inv_y = 1.0 / dy if dy != 0 else 0.0
            inv_z = 1.0 / dz if dz != 0 else 0.0
            ix, iy, iz = start_x, start_y, start_z
            t = 0.0  # the march: no voxel before parameter t (voxel units), voxel (ix, iy, iz) entered there
            marching = True
            stop = range_m  # metres: where the walk ends, once the march has ended
            out_t[i] = -1.0
            out_voxel[i, 0], out_voxel[i, 1], out_voxel[i, 2] = 0, 0, 0
            out_unknown[i] = np.inf
            s = 0.5 * step
            while True:
                while marching and not (s < t * voxel_size and s < range_m):  # march past the sample, or to the end
                    if t > t_max or abs(ix) > _LIMIT or abs(iy) > _LIMIT or abs(iz) > _LIMIT:
                        marching = False
                        break
                    occupied, ix, iy, iz, t = march_step(m_keys, m_ids, m_shift, m_mask, m_slot, m_bits, march_cache,
                                                         ox, oy, oz, dx, dy, dz, inv_x, inv_y, inv_z, ix, iy, iz, t)
                    if occupied:
                        marching = False
                        stop = t * voxel_size
                        out_t[i] = stop
                        out_voxel[i, 0], out_voxel[i, 1], out_voxel[i, 2] = ix, iy, iz
                if not marching and not s < stop:
                    break
                x = origin[0] + s * dx
                y = origin[1] + s * dy
                z = origin[2] + s * dz
                view = free_view(params, pixels, depths, ranks, min_rank, x, y, z, margin, first)
                if view >= 0:
                    first = view
                elif not near_surface(w_keys, w_ids, w_shift, w_mask, w_slot, w_bits, walk_cache, voxel_size, x, y, z,
                                      radius):
                    out_unknown[i] = s
                    break
                s += step


def first_return(
    march_grid: tuple, walk_grid: tuple, voxel_size_m: float, views: PackedViews, origin_m: np.ndarray,
    directions: np.ndarray, range_m: float, step_m: float, free_margin_m: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rays from ``origin_m`` (3,) world metres along unit ``directions`` (N, 3) out to ``range_m`` metres: each
    marched through ``march_grid`` (``BlockGrid.arrays()``) while its free-space samples (every ``step_m`` metres,
    ``unknown_from``'s rule) are tested against ``views`` and ``walk_grid``. Returns (N,) float64 metres where the ray
    entered a voxel (-1 when it entered none, or entered unknown space first), the (N, 3) int64 voxel (0s when
    none), and (N,) float64 metres where it entered unknown space (``inf`` when it did not)."""
    n = len(directions)
    out_t = np.empty(n, np.float64)
    out_voxel = np.empty((n, 3), np.int64)
    out_unknown = np.empty(n, np.float64)
    if n:
        _first_return_kernel(
            march_grid, walk_grid, float(voxel_size_m), views.params, views.pixels, views.depths, views.ranks,
            views.min_rank, np.ascontiguousarray(origin_m, np.float64), np.ascontiguousarray(directions, np.float64),
            float(range_m), float(step_m), float(free_margin_m), surface_radius(free_margin_m, voxel_size_m), out_t,
            out_voxel, out_unknown,
        )
    return out_t, out_voxel, out_unknown
