"""Collision of capsules and oriented boxes with the voxel surface (spheres go through the distance field).

The world's surface is its voxel centres, each thickened by a contact margin (half a voxel by default, so a wall
one voxel thick is closed). For a shape S with signed distance ``sd_S`` (negative inside), the contact is the
surface voxel minimising ``sd_S``; ``clearance = min sd_S - margin``. A shape **hits** when ``clearance <= 0``,
and then ``-clearance`` is the penetration depth: how deep the deepest surface point lies inside the shape,
margin included. For a sphere this is ``distance(centre, surface) - radius - margin``.

The search is exact: it starts from surface voxels near the shape (hints from the distance field), then visits
every block overlapping the shape's box grown by the best ``sd`` so far (at most ``margin + max_clearance``),
skipping blocks and 4-voxel sub-blocks by a Lipschitz bound (``sd`` changes by at most the distance moved).
Coordinates inside the kernels are voxel units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from worldweave.bridge.queries.grid import BLOCK_SHIFT, WORDS_PER_BLOCK, block_slot_at, new_cache

SEGMENT, BOX = 0, 1
NO_HINT = np.iinfo(np.int64).min
"""Marks a missing hint voxel."""
_GROUP_HALF_DIAGONAL = math.sqrt(3.0) * 15.5 + 1e-9
"""Largest distance from the middle of a group of 4 x 4 x 4 blocks to one of its voxel centres (voxels)."""
_BLOCK_HALF_DIAGONAL = math.sqrt(3.0) * 3.5 + 1e-9
"""Largest distance from a block's middle to one of its voxel centres (voxels)."""
_SUB_HALF_DIAGONAL = math.sqrt(3.0) * 1.5 + 1e-9
"""Largest distance from a 4-voxel sub-block's middle to one of its voxel centres (voxels)."""
_BATCH = 64


@dataclass(frozen=True)
class ContactResult:
    """One contact per shape, all arrays of length N.

    ``hit``: bool, True when the shape touches or penetrates the surface (``clearance_m <= 0``).
    ``clearance_m``: float64 metres, the gap to the surface (> 0), or minus the penetration depth (<= 0); ``inf``
    when no surface lies within the query's ``max_clearance_m``.
    ``point_m``: float64 (N, 3) world metres, the contact: the centre of the surface voxel that decides the
    clearance (NaN when none within range).
    ``unknown``: bool, the shape touches no surface at or above the query's minimum confidence but touches a voxel
    below it: unknown space, neither free nor a hit (always False at a level every voxel reaches).
    """

    hit: np.ndarray
    clearance_m: np.ndarray
    point_m: np.ndarray
    unknown: np.ndarray


@numba.njit(cache=True)
def _signed_distance(kind, q, x, y, z):
    """Signed distance (voxels) from ``(x, y, z)`` to a shape. SEGMENT: ``q`` = a (3), b (3), radius.
    BOX: ``q`` = centre (3), half extents (3), rotation (9, row-major, columns = box axes in world)."""
    if kind == SEGMENT:
        ax, ay, az = q[0], q[1], q[2]
        ex, ey, ez = q[3] - ax, q[4] - ay, q[5] - az
        length2 = ex * ex + ey * ey + ez * ez
        t = 0.0
        if length2 > 0.0:
            t = min(max(((x - ax) * ex + (y - ay) * ey + (z - az) * ez) / length2, 0.0), 1.0)
        dx, dy, dz = x - (ax + t * ex), y - (ay + t * ey), z - (az + t * ez)
        return math.sqrt(dx * dx + dy * dy + dz * dz) - q[6]
    rx, ry, rz = x - q[0], y - q[1], z - q[2]
    # local = R^T (p - c): component j is the dot product with column j of R.
    lx = q[6] * rx + q[9] * ry + q[12] * rz
    ly = q[7] * rx + q[10] * ry + q[13] * rz
    lz = q[8] * rx + q[11] * ry + q[14] * rz
    qx, qy, qz = abs(lx) - q[3], abs(ly) - q[4], abs(lz) - q[5]
    ox, oy, oz = max(qx, 0.0), max(qy, 0.0), max(qz, 0.0)
    return math.sqrt(ox * ox + oy * oy + oz * oz) + min(max(qx, qy, qz), 0.0)


@numba.njit(cache=True)
def _min_signed_distance(
    table_keys, table_ids, shift, block_mask, block_slot, bits, cache, kind, q, lo, hi, limit, hints, best
):
    """Smallest ``sd`` over voxel centres below ``limit``, the shape's points lying in the box ``[lo, hi]``
    (voxel units); writes the voxel into ``best`` and returns the value (``limit`` when none is below it).
    ``hints`` (K, 3): surface voxels near the shape (``NO_HINT`` rows ignored) whose ``sd`` tightens the search."""
    best_sd = limit
    for k in range(len(hints)):
        if hints[k, 0] == NO_HINT:
            continue
        sd = _signed_distance(kind, q, hints[k, 0] + 0.5, hints[k, 1] + 0.5, hints[k, 2] + 0.5)
        if sd < best_sd:
            best_sd = sd
            best[0], best[1], best[2] = hints[k, 0], hints[k, 1], hints[k, 2]
    reach = max(best_sd, 0.0) + 0.5
    b_lo_x, b_hi_x = np.int64(math.floor((lo[0] - reach) / 8)), np.int64(math.floor((hi[0] + reach) / 8))
    b_lo_y, b_hi_y = np.int64(math.floor((lo[1] - reach) / 8)), np.int64(math.floor((hi[1] + reach) / 8))
    b_lo_z, b_hi_z = np.int64(math.floor((lo[2] - reach) / 8)), np.int64(math.floor((hi[2] + reach) / 8))
    # Groups of 4 x 4 x 4 blocks first: one bound skips 64 blocks far from the shape.
    for gx in range(b_lo_x >> 2, (b_hi_x >> 2) + 1):
        for gy in range(b_lo_y >> 2, (b_hi_y >> 2) + 1):
            for gz in range(b_lo_z >> 2, (b_hi_z >> 2) + 1):
                if _signed_distance(kind, q, gx * 32 + 16.0, gy * 32 + 16.0, gz * 32 + 16.0) - _GROUP_HALF_DIAGONAL >= best_sd:
                    continue
                for bx in range(max(gx * 4, b_lo_x), min(gx * 4 + 3, b_hi_x) + 1):
                    for by in range(max(gy * 4, b_lo_y), min(gy * 4 + 3, b_hi_y) + 1):
                        for bz in range(max(gz * 4, b_lo_z), min(gz * 4 + 3, b_hi_z) + 1):
                            base_x, base_y, base_z = bx << BLOCK_SHIFT, by << BLOCK_SHIFT, bz << BLOCK_SHIFT
                            mid = _signed_distance(kind, q, base_x + 4.0, base_y + 4.0, base_z + 4.0)
                            if mid - _BLOCK_HALF_DIAGONAL >= best_sd:
                                continue
                            slot = block_slot_at(table_keys, table_ids, shift, block_mask, block_slot, cache, bx, by, bz)
                            if slot < 0:
                                continue
                            for w in range(WORDS_PER_BLOCK):
                                word = bits[slot, w]
                                if word == 0:
                                    continue
                                ox = base_x + ((w >> 2) & 1) * 4
                                oy = base_y + ((w >> 1) & 1) * 4
                                oz = base_z + (w & 1) * 4
                                if _signed_distance(kind, q, ox + 2.0, oy + 2.0, oz + 2.0) - _SUB_HALF_DIAGONAL >= best_sd:
                                    continue
                                for b in range(64):
                                    if not (word >> np.uint64(b)) & np.uint64(1):
                                        continue
                                    vx, vy, vz = ox + ((b >> 4) & 3), oy + ((b >> 2) & 3), oz + (b & 3)
                                    sd = _signed_distance(kind, q, vx + 0.5, vy + 0.5, vz + 0.5)
                                    if sd < best_sd:
                                        best_sd = sd
                                        best[0], best[1], best[2] = vx, vy, vz
    return best_sd


@numba.njit(cache=True, parallel=True)
def _contact_kernel(grid, kind, params, lo, hi, limit, hints, out_sd, out_voxel):
    table_keys, table_ids, shift, _, block_mask, block_slot, bits, _, _, _ = grid
    n = len(params)
    for batch in numba.prange((n + _BATCH - 1) // _BATCH):
        cache = new_cache()
        best = np.zeros(3, dtype=np.int64)
        for i in range(batch * _BATCH, min(n, (batch + 1) * _BATCH)):
            out_sd[i] = _min_signed_distance(
                table_keys, table_ids, shift, block_mask, block_slot, bits, cache,
                kind, params[i], lo[i], hi[i], limit[i], hints[i], best,
            )
            out_voxel[i, 0], out_voxel[i, 1], out_voxel[i, 2] = best[0], best[1], best[2]


def shape_contacts(
    grid_arrays: tuple,
    voxel_size_m: float,
    kind: int,
    params_m: np.ndarray,
    bounds_min_m: np.ndarray,
    bounds_max_m: np.ndarray,
    margin_m: float,
    max_clearance_m: float,
    hints_m: np.ndarray,
) -> ContactResult:
    """Contacts of N shapes of one ``kind`` (SEGMENT or BOX) with parameters ``params_m`` (N, 7) or (N, 15) in
    metres (rotation entries unitless), whose points lie within ``[bounds_min_m, bounds_max_m]`` (N, 3).
    ``hints_m`` (N, K, 3): surface points near each shape (NaN where none), e.g. from the distance field; they
    only speed the search up, the answer stays exact."""
    v = float(voxel_size_m)
    n = len(params_m)
    params = np.array(params_m, dtype=np.float64)
    params[:, : 7 if kind == SEGMENT else 6] /= v
    reach = (margin_m + max_clearance_m) / v
    lo, hi = np.ascontiguousarray(bounds_min_m / v), np.ascontiguousarray(bounds_max_m / v)
    limit = np.full(n, reach * (1 + 1e-12) + 1e-12)
    hints = np.floor(np.nan_to_num(hints_m) / v).astype(np.int64)
    hints[~np.isfinite(hints_m).all(axis=2), 0] = NO_HINT
    out_sd = np.empty(n, dtype=np.float64)
    out_voxel = np.zeros((n, 3), dtype=np.int64)
    if n:
        params, hints = np.ascontiguousarray(params), np.ascontiguousarray(hints)
        _contact_kernel(grid_arrays, kind, params, lo, hi, limit, hints, out_sd, out_voxel)
    found = out_sd < limit
    clearance = np.where(found, out_sd * v - margin_m, np.inf)
    point = np.where(found[:, None], (out_voxel + 0.5) * v, np.nan)
    return ContactResult(found & (clearance <= 0), clearance, point, np.zeros(len(clearance), dtype=bool))
