"""Sparse distance field and nearest-surface queries.

The field has one **cell per block** (16 cm at 2 cm voxels), stored in the hashed chunks of ``BlockGrid``. A cell
keeps a *parent*: the surface voxel nearest its centre, found by vector propagation (each cell offers its parent to
its 26 neighbours, which keep it when it is nearer than theirs; the method of voxblox and FIESTA), each offer
refined by a local search around it so that a parent is the nearest voxel of its surface patch, not only of the
sparse set of voxels that travelled. Cells exist only within reach of the surface (``max_distance_m`` plus a cell
diagonal), so memory grows with surface area times reach, never with the world's volume.

Updates are incremental and local (``DistanceField.update``, eager once per ``WorldQueries.sync``): the blocks
whose voxels an integrate or an edit added or removed are the seeds. Cells whose parent voxel was removed are
cleared and refilled from their neighbours; new voxels lower the distance of the cells around them, and the wave
stops where nothing improves. Colour-only changes cost nothing.

A query ``nearest(p)`` answers **exactly** (the nearest voxel centre) whenever that voxel lies within the 3 x 3 x 3
blocks around ``p`` (8.5 to 16.5 voxels, i.e. 17 to 33 cm at 2 cm voxels, depending on where ``p`` sits in its
block). Farther out, the parents of the 8 cells around ``p`` are candidates; one per cluster (``SEED_CLUSTER_VOX``)
among those that could still win is refined by a local descent whose window widens with the distance. The far
answer is always a real surface voxel, so it can only overestimate: within half a voxel of brute force on the
tests' scenes, and ``benchmarks/bench_queries.py`` measures it against an exact search on a 2M-voxel street.

All coordinates inside the kernels are voxel units (``metres / voxel_size_m``); voxel ``i`` has its centre at
``i + 0.5``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from worldweave.bridge.queries.grid import (
    BLOCK_SHIFT,
    BLOCK_VOXELS,
    CHUNK_SHIFT,
    NO_PARENT,
    BlockGrid,
    cached_chunk,
    is_occupied,
    local_block,
    nearest_in_block,
    nearest_in_block_range,
    new_cache,
    spatial_order,
)

CELL_HALF_DIAGONAL_VOX = math.sqrt(3.0) * BLOCK_VOXELS / 2
"""Largest distance from a point to the centre of its cell, in voxels."""
REFINE_HALF_WIDTH_VOX = BLOCK_VOXELS // 2
"""Half width of the window searched around a far candidate, in voxels."""
REFINE_ROUNDS = 8
"""Most times the far-field search re-centres on a better voxel."""
SEED_REACH_VOX = math.sqrt(3.0) * BLOCK_VOXELS
"""Farthest a query point is from the centre of one of the 8 cells around it, in voxels."""
SEED_CLUSTER_VOX = BLOCK_VOXELS
"""Seeds this close (per axis, voxels) to a refined one count as the same surface patch."""
_BATCH = 256


@dataclass(frozen=True)
class NearestResult:
    """Nearest surface point to each query point, all arrays of length N.

    ``found``: bool, True when a surface voxel lies within the query's ``max_range_m``.
    ``distance_m``: float64 metres from the query point to ``point_m`` (``inf`` when not found).
    ``point_m``: float64 (N, 3) world metres, the centre of the nearest surface voxel (NaN when not found).
    """

    found: np.ndarray
    distance_m: np.ndarray
    point_m: np.ndarray


# ------------------------------------------------------------------------------------------------- search


@numba.njit(cache=True)
def _window(d2):
    """Half width (voxels) of the descent window at squared distance ``d2``. Far from a surface, voxels almost as
    near as the nearest spread wide (those within e of it lie within about sqrt(2 d e) of it on a flat patch): the
    window widens as sqrt(d) so that small holes in a patch do not trap the descent."""
    return max(REFINE_HALF_WIDTH_VOX, np.int64(math.ceil(math.sqrt(math.sqrt(d2)))))


@numba.njit(cache=True)
def refine(table_keys, table_ids, shift, block_mask, block_slot, bits, cache, px, py, pz, best2, best):
    """Local descent from the voxel in ``best`` (at squared distance ``best2`` from ``p``, voxel units): search
    the blocks within ``REFINE_HALF_WIDTH_VOX`` of it for a nearer voxel and re-centre there, until the best voxel
    is no longer on the edge of the searched blocks (a local minimum) or ``REFINE_ROUNDS`` rounds. Turns a voxel
    of a surface patch into the patch's voxel nearest ``p``."""
    w = _window(best2)
    for _ in range(REFINE_ROUNDS):
        cx, cy, cz = best[0], best[1], best[2]
        before = best2
        lo_x, lo_y, lo_z = (cx - w) >> BLOCK_SHIFT, (cy - w) >> BLOCK_SHIFT, (cz - w) >> BLOCK_SHIFT
        hi_x, hi_y, hi_z = (cx + w) >> BLOCK_SHIFT, (cy + w) >> BLOCK_SHIFT, (cz + w) >> BLOCK_SHIFT
        best2 = nearest_in_block_range(
            table_keys, table_ids, shift, block_mask, block_slot, bits, cache,
            lo_x, lo_y, lo_z, hi_x, hi_y, hi_z, px, py, pz, best2, best,
        )
        if best2 == before:
            break
        inside = (
            lo_x * 8 < best[0] < hi_x * 8 + 7 and lo_y * 8 < best[1] < hi_y * 8 + 7 and lo_z * 8 < best[2] < hi_z * 8 + 7
        )
        if inside:
            break
    return best2


# ------------------------------------------------------------------------------------------------- update


@numba.njit(cache=True)
def _cell_coords(chunk_coords, cid, local):
    return (
        chunk_coords[cid, 0] * 8 + (local >> 6),
        chunk_coords[cid, 1] * 8 + ((local >> 3) & 7),
        chunk_coords[cid, 2] * 8 + (local & 7),
    )


@numba.njit(cache=True)
def _parent_dist2(parent, cid, local):
    """Squared distance (voxels) from a cell's centre to its parent voxel's centre; inf when it has none."""
    if parent[cid, local, 0] == NO_PARENT:
        return np.inf
    dx = 3.5 - parent[cid, local, 0]
    dy = 3.5 - parent[cid, local, 1]
    dz = 3.5 - parent[cid, local, 2]
    return dx * dx + dy * dy + dz * dz


@numba.njit(cache=True)
def _push(queue, head, tail, item):
    if tail == len(queue):
        if head > len(queue) // 2:
            queue[: tail - head] = queue[head:tail]
            tail -= head
            head = 0
        else:
            grown = np.empty(2 * len(queue), dtype=np.int64)
            grown[:tail] = queue[:tail]
            queue = grown
    queue[tail] = item
    return queue, head, tail + 1


@numba.njit(cache=True)
def _update_field(grid, queued, seeds, scan_chunks, reach2):
    """Bring the cells' parents up to date after the voxels of blocks ``seeds`` (M, 3) changed.

    ``scan_chunks``: ids of chunks where a parent may have been removed (empty when voxels were only added).
    ``reach2``: squared reach in voxels; cells farther from every surface voxel keep no parent.
    """
    table_keys, table_ids, shift, chunk_coords, block_mask, block_slot, bits, _, _, parent = grid
    cache = new_cache()
    best = np.empty(3, dtype=np.int64)
    queue = np.empty(4096, dtype=np.int64)
    head, tail = 0, 0
    # 1. Clear the parents that are no longer surface voxels.
    cleared = np.empty(1024, dtype=np.int64)
    n_cleared = 0
    for cid in scan_chunks:
        for local in range(512):
            if parent[cid, local, 0] == NO_PARENT:
                continue
            bx, by, bz = _cell_coords(chunk_coords, cid, local)
            vx = bx * 8 + parent[cid, local, 0]
            vy = by * 8 + parent[cid, local, 1]
            vz = bz * 8 + parent[cid, local, 2]
            if not is_occupied(table_keys, table_ids, shift, block_mask, block_slot, bits, cache, vx, vy, vz):
                parent[cid, local, 0] = NO_PARENT
                cleared, _, n_cleared = _push(cleared, 0, n_cleared, cid * 512 + local)
    # 2. Seeds: the cell of each changed block takes the nearest of the block's own voxels when that is nearer.
    for i in range(len(seeds)):
        bx, by, bz = seeds[i, 0], seeds[i, 1], seeds[i, 2]
        cid = cached_chunk(table_keys, table_ids, shift, cache, bx >> CHUNK_SHIFT, by >> CHUNK_SHIFT, bz >> CHUNK_SHIFT)
        local = local_block(bx, by, bz)
        slot = block_slot[cid, local]
        if slot >= 0:
            current2 = _parent_dist2(parent, cid, local)
            found2 = nearest_in_block(bits, slot, bx, by, bz, bx * 8 + 4.0, by * 8 + 4.0, bz * 8 + 4.0, current2, best)
            if found2 < current2:
                parent[cid, local, 0] = best[0] - bx * 8
                parent[cid, local, 1] = best[1] - by * 8
                parent[cid, local, 2] = best[2] - bz * 8
        if parent[cid, local, 0] != NO_PARENT and not queued[cid, local]:
            queued[cid, local] = 1
            queue, head, tail = _push(queue, head, tail, cid * 512 + local)
    # 3. Cleared cells are refilled from their neighbours that still have a parent.
    for i in range(n_cleared):
        cid, local = cleared[i] >> 9, cleared[i] & 511
        bx, by, bz = _cell_coords(chunk_coords, cid, local)
        for dx in range(-1, 2):
            for dy in range(-1, 2):
                for dz in range(-1, 2):
                    nx, ny, nz = bx + dx, by + dy, bz + dz
                    ncid = cached_chunk(
                        table_keys, table_ids, shift, cache, nx >> CHUNK_SHIFT, ny >> CHUNK_SHIFT, nz >> CHUNK_SHIFT
                    )
                    if ncid < 0:
                        continue
                    nlocal = local_block(nx, ny, nz)
                    if parent[ncid, nlocal, 0] != NO_PARENT and not queued[ncid, nlocal]:
                        queued[ncid, nlocal] = 1
                        queue, head, tail = _push(queue, head, tail, ncid * 512 + nlocal)
    # 4. Propagate: each cell refines the parent it got to the nearest voxel of that surface patch, then offers
    #    it to its 26 neighbours.
    while head < tail:
        item = queue[head]
        head += 1
        cid, local = item >> 9, item & 511
        queued[cid, local] = 0
        if parent[cid, local, 0] == NO_PARENT:
            continue
        bx, by, bz = _cell_coords(chunk_coords, cid, local)
        best[0] = bx * 8 + parent[cid, local, 0]
        best[1] = by * 8 + parent[cid, local, 1]
        best[2] = bz * 8 + parent[cid, local, 2]
        current2 = _parent_dist2(parent, cid, local)
        cx, cy, cz = bx * 8 + 4.0, by * 8 + 4.0, bz * 8 + 4.0
        if refine(table_keys, table_ids, shift, block_mask, block_slot, bits, cache, cx, cy, cz, current2, best) < current2:
            parent[cid, local, 0] = best[0] - bx * 8
            parent[cid, local, 1] = best[1] - by * 8
            parent[cid, local, 2] = best[2] - bz * 8
        sx, sy, sz = best[0], best[1], best[2]
        for dx in range(-1, 2):
            for dy in range(-1, 2):
                for dz in range(-1, 2):
                    nx, ny, nz = bx + dx, by + dy, bz + dz
                    ox, oy, oz = sx - nx * 8, sy - ny * 8, sz - nz * 8
                    cand2 = (3.5 - ox) ** 2 + (3.5 - oy) ** 2 + (3.5 - oz) ** 2
                    if cand2 >= reach2:
                        continue
                    ncid = cached_chunk(
                        table_keys, table_ids, shift, cache, nx >> CHUNK_SHIFT, ny >> CHUNK_SHIFT, nz >> CHUNK_SHIFT
                    )
                    if ncid < 0:
                        continue
                    nlocal = local_block(nx, ny, nz)
                    if cand2 >= _parent_dist2(parent, ncid, nlocal):
                        continue
                    parent[ncid, nlocal, 0], parent[ncid, nlocal, 1], parent[ncid, nlocal, 2] = ox, oy, oz
                    if not queued[ncid, nlocal]:
                        queued[ncid, nlocal] = 1
                        queue, head, tail = _push(queue, head, tail, ncid * 512 + nlocal)


# -------------------------------------------------------------------------------------------------- query


@numba.njit(cache=True)
def nearest_voxel(
    table_keys, table_ids, shift, block_mask, block_slot, bits, parent, cache, px, py, pz, limit2, best, seeds, seed_d2, scratch
):
    """Nearest surface voxel to ``p`` (voxel units) closer than ``sqrt(limit2)``: returns its squared distance
    (``limit2`` when none) and writes its index into ``best``. Exact when the answer lies in the 3 x 3 x 3 blocks
    around ``p``; beyond, the parents of the 8 cells around ``p`` are refined by local descent, one per patch
    among those that could still win. ``seeds`` (8, 3), ``seed_d2`` (8,) and ``scratch`` (8, 10) int64 are
    scratch space."""
    bx, by, bz = np.int64(math.floor(px / 8.0)), np.int64(math.floor(py / 8.0)), np.int64(math.floor(pz / 8.0))
    best2 = limit2
    n_seeds = 0
    # The 8 cells whose centres surround p.
    cx0 = np.int64(math.floor((px - 4.0) / 8.0))
    cy0 = np.int64(math.floor((py - 4.0) / 8.0))
    cz0 = np.int64(math.floor((pz - 4.0) / 8.0))
    for dx in range(2):
        for dy in range(2):
            for dz in range(2):
                nx, ny, nz = cx0 + dx, cy0 + dy, cz0 + dz
                cid = cached_chunk(
                        table_keys, table_ids, shift, cache, nx >> CHUNK_SHIFT, ny >> CHUNK_SHIFT, nz >> CHUNK_SHIFT
                    )
                if cid < 0:
                    continue
                local = local_block(nx, ny, nz)
                if parent[cid, local, 0] == NO_PARENT:
                    continue
                sx = nx * 8 + parent[cid, local, 0]
                sy = ny * 8 + parent[cid, local, 1]
                sz = nz * 8 + parent[cid, local, 2]
                d2 = (sx + 0.5 - px) ** 2 + (sy + 0.5 - py) ** 2 + (sz + 0.5 - pz) ** 2
                seeds[n_seeds, 0], seeds[n_seeds, 1], seeds[n_seeds, 2] = sx, sy, sz
                seed_d2[n_seeds] = d2
                n_seeds += 1
                if d2 < best2:
                    best2 = d2
                    best[0], best[1], best[2] = sx, sy, sz
    best2 = nearest_in_block_range(
        table_keys, table_ids, shift, block_mask, block_slot, bits, cache,
        bx - 1, by - 1, bz - 1, bx + 1, by + 1, bz + 1, px, py, pz, best2, best,
    )
    # A voxel centre outside the searched blocks is at least this far from p.
    certain = 0.5 + min(
        px - (bx - 1) * 8.0, (bx + 2) * 8.0 - px,
        py - (by - 1) * 8.0, (by + 2) * 8.0 - py,
        pz - (bz - 1) * 8.0, (bz + 2) * 8.0 - pz,
    )
    if best2 <= certain * certain or n_seeds == 0:
        return best2
    # A seed is its cell centre's nearest voxel; seen from p (up to SEED_REACH_VOX from that centre) it may be
    # off by about SEED_REACH_VOX**2 / (2 d), so every seed within that of the best may still win. Seeds closer
    # than SEED_CLUSTER_VOX to one already refined lie on the same patch and are skipped; in order of distance.
    order = scratch[:, 0]
    for i in range(n_seeds):
        order[i] = i
        j = i
        while j > 0 and seed_d2[order[j - 1]] > seed_d2[order[j]]:
            order[j - 1], order[j] = order[j], order[j - 1]
            j -= 1
    seed_best = math.sqrt(seed_d2[order[0]])
    cutoff = seed_best + 0.5 + SEED_REACH_VOX**2 / (2.0 * seed_best)
    cutoff2 = cutoff * cutoff
    starts, ends = scratch[:, 1:4], scratch[:, 4:7]
    trial = scratch[0, 7:10]
    n_refined = 0
    for k in range(n_seeds):
        i = order[k]
        if seed_d2[i] > cutoff2:
            break
        covered = False
        for j in range(n_refined):
            from_start = max(abs(seeds[i, 0] - starts[j, 0]), abs(seeds[i, 1] - starts[j, 1]), abs(seeds[i, 2] - starts[j, 2]))
            from_end = max(abs(seeds[i, 0] - ends[j, 0]), abs(seeds[i, 1] - ends[j, 1]), abs(seeds[i, 2] - ends[j, 2]))
            if from_start <= SEED_CLUSTER_VOX or from_end <= _window(seed_d2[i]):
                covered = True
                break
        if covered:
            continue
        trial[0], trial[1], trial[2] = seeds[i, 0], seeds[i, 1], seeds[i, 2]
        trial2 = refine(table_keys, table_ids, shift, block_mask, block_slot, bits, cache, px, py, pz, seed_d2[i], trial)
        starts[n_refined, 0], starts[n_refined, 1], starts[n_refined, 2] = seeds[i, 0], seeds[i, 1], seeds[i, 2]
        ends[n_refined, 0], ends[n_refined, 1], ends[n_refined, 2] = trial[0], trial[1], trial[2]
        n_refined += 1
        if trial2 < best2:
            best2 = trial2
            best[0], best[1], best[2] = trial[0], trial[1], trial[2]
    return best2


@numba.njit(cache=True, parallel=True)
def _nearest_kernel(grid, points, limit2, out_d2, out_voxel):
    table_keys, table_ids, shift, _, block_mask, block_slot, bits, _, _, parent = grid
    n = len(points)
    for batch in numba.prange((n + _BATCH - 1) // _BATCH):
        cache = new_cache()
        best = np.empty(3, dtype=np.int64)
        seeds = np.empty((8, 3), dtype=np.int64)
        seed_d2 = np.empty(8, dtype=np.float64)
        scratch = np.empty((8, 10), dtype=np.int64)
        for i in range(batch * _BATCH, min(n, (batch + 1) * _BATCH)):
            best2 = nearest_voxel(
                table_keys, table_ids, shift, block_mask, block_slot, bits, parent, cache,
                points[i, 0], points[i, 1], points[i, 2], limit2[i], best, seeds, seed_d2, scratch,
            )
            out_d2[i] = best2
            out_voxel[i, 0], out_voxel[i, 1], out_voxel[i, 2] = best[0], best[1], best[2]


def field_reach_vox(voxel_size_m: float, max_distance_m: float) -> float:
    """How far (voxels) from the surface cells keep a parent, so that a query up to ``max_distance_m`` from the
    surface finds parents in the cells around it: the distance plus one cell diagonal."""
    return max_distance_m / voxel_size_m + 2 * CELL_HALF_DIAGONAL_VOX


class DistanceField:
    """The field's cells in ``grid`` and the nearest-surface query over them.

    ``max_distance_m``: the largest ``max_range_m`` a query may ask for. ``grid.reach_vox`` must be
    ``field_reach_vox(voxel_size_m, max_distance_m)`` or more.
    """

    def __init__(self, grid: BlockGrid, voxel_size_m: float, max_distance_m: float) -> None:
        self.grid = grid
        self.voxel_size_m = float(voxel_size_m)
        self.max_distance_m = float(max_distance_m)
        self.reach_vox = field_reach_vox(self.voxel_size_m, self.max_distance_m)

    def update(self, changed_blocks: np.ndarray, shrunk_blocks: np.ndarray) -> None:
        """Follow a change of the surface: ``changed_blocks`` (M, 3) every block whose voxels changed,
        ``shrunk_blocks`` the subset that lost voxels."""
        if len(changed_blocks) == 0:
            return
        self.grid.ensure_chunks(self.grid.chunks_within_reach(changed_blocks))
        scan = np.zeros(0, dtype=np.int64)
        if len(shrunk_blocks):
            scan = self.grid.chunk_ids(self.grid.chunks_within_reach(shrunk_blocks))
            scan = np.ascontiguousarray(scan[scan >= 0])
        _update_field(
            self.grid.arrays(),
            self.grid.queued,
            np.ascontiguousarray(changed_blocks, dtype=np.int64),
            scan,
            self.reach_vox**2,
        )

    def nearest(self, points_m: np.ndarray, max_range_m: np.ndarray) -> NearestResult:
        """Nearest surface voxel centre to each point (N, 3) within ``max_range_m`` (N,), world metres.

        Inputs are validated by the caller (``WorldQueries``); ranges must not exceed ``max_distance_m``.
        """
        v = self.voxel_size_m
        n = len(points_m)
        range_vox = np.asarray(max_range_m, dtype=np.float64) / v
        # Search a little beyond the range: a seed found just outside it may refine to a voxel inside.
        limit2 = np.minimum(range_vox + 2 * CELL_HALF_DIAGONAL_VOX, self.reach_vox) ** 2
        out_d2 = np.empty(n, dtype=np.float64)
        out_voxel = np.empty((n, 3), dtype=np.int64)
        if n:
            points_vox = points_m / v
            order = spatial_order(points_vox)
            sorted_d2 = np.empty(n, dtype=np.float64)
            sorted_voxel = np.empty((n, 3), dtype=np.int64)
            limit2 = np.broadcast_to(limit2, (n,))
            points_sorted, limit2_sorted = np.ascontiguousarray(points_vox[order]), np.ascontiguousarray(limit2[order])
            _nearest_kernel(self.grid.arrays(), points_sorted, limit2_sorted, sorted_d2, sorted_voxel)
            out_d2[order], out_voxel[order] = sorted_d2, sorted_voxel
        found = out_d2 <= range_vox**2 * (1 + 1e-12)
        distance = np.where(found, np.sqrt(out_d2) * v, np.inf)
        point = np.where(found[:, None], (out_voxel + 0.5) * v, np.nan)
        return NearestResult(found, distance, point)


def nearest_reference(points_m: np.ndarray, centers_m: np.ndarray, max_range_m: np.ndarray) -> NearestResult:
    """Brute force over every voxel centre (N, 3) (the reference the field is tested against): exact nearest
    centre to each point within ``max_range_m``, metres."""
    points_m = np.asarray(points_m, dtype=np.float64).reshape(-1, 3)
    centers = np.asarray(centers_m, dtype=np.float64).reshape(-1, 3)
    n = len(points_m)
    distance = np.full(n, np.inf)
    point = np.full((n, 3), np.nan)
    if len(centers) and n:
        step = max(1, 4_000_000 // len(centers))
        for start in range(0, n, step):
            d2 = ((points_m[start : start + step, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
            nearest = d2.argmin(axis=1)
            distance[start : start + step] = np.sqrt(d2[np.arange(len(nearest)), nearest])
            point[start : start + step] = centers[nearest]
    found = distance <= np.broadcast_to(np.asarray(max_range_m, dtype=np.float64), (n,))
    return NearestResult(found, np.where(found, distance, np.inf), np.where(found[:, None], point, np.nan))
