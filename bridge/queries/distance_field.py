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

A query ``nearest(p)`` is **exact** (the nearest voxel centre, up to float rounding) at every distance up to its
range. The cells only give it a start: the parents of the 8 cells around ``p`` are real surface voxels, so the
nearest of them bounds the answer from above. It then searches the 3 x 3 x 3 blocks around ``p`` (8.5 to 16.5
voxels, i.e. 17 to 33 cm at 2 cm voxels, depending on where ``p`` sits in its block), which settles every answer
nearer than those blocks' far side. Farther out, a best-first search visits the surface chunks within the bound in
order of their distance to ``p``, in each the blocks whose box of voxel centres is still nearer than the best voxel
found, and in those the 4-voxel sub-blocks whose voxels' box is: nothing nearer is ever skipped, and the bound
shrinks as the search goes.

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
    CHUNK_VOXELS,
    NO_PARENT,
    WORDS_PER_BLOCK,
    BlockGrid,
    box_dist2,
    cached_chunk,
    chunk_is_empty,
    find_chunk,
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
"""Half width of the window the field's update searches around a cell's parent, in voxels."""
REFINE_ROUNDS = 8
"""Most times the update's local descent re-centres on a better voxel."""
_BATCH = 256
_X_LAYER = np.uint64(0xFFFF)
"""Voxels of x-layer 0 of a 4 x 4 x 4 occupancy word (bit ``16 x + 4 y + z``, ``grid.voxel_word_bit``)."""
_Y_LAYER = np.uint64(0x000F000F000F000F)
"""Voxels of y-layer 0 of a 4 x 4 x 4 occupancy word."""
_Z_LAYER = np.uint64(0x1111111111111111)
"""Voxels of z-layer 0 of a 4 x 4 x 4 occupancy word."""


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
def _layers(word, layer_mask, stride):
    """First and last of the 4 layers of a 4 x 4 x 4 occupancy word that hold a voxel, along the axis whose layer
    ``i`` is ``layer_mask << stride * i``. The word must not be 0."""
    first, last = 4, 0
    for i in range(4):
        if word & (layer_mask << np.uint64(stride * i)):
            first = min(first, i)
            last = i
    return first, last


@numba.njit(cache=True)
def _nearest_in_block_tight(bits, slot, bx, by, bz, px, py, pz, best2, best):
    """``nearest_in_block`` for far points: each 4 x 4 x 4 sub-block is bounded by the box of the voxels it holds,
    not by its whole box, so that the sub-blocks of a surface seen from afar are skipped unless they can hold a
    voxel nearer than ``sqrt(best2)`` (a flat patch's box is flat). Writes the voxel into ``best`` and returns the
    new ``best2``."""
    for w in range(WORDS_PER_BLOCK):
        word = bits[slot, w]
        if word == 0:
            continue
        ox = (bx << BLOCK_SHIFT) + ((w >> 2) & 1) * 4
        oy = (by << BLOCK_SHIFT) + ((w >> 1) & 1) * 4
        oz = (bz << BLOCK_SHIFT) + (w & 1) * 4
        x0, x1 = _layers(word, _X_LAYER, 16)
        y0, y1 = _layers(word, _Y_LAYER, 4)
        z0, z1 = _layers(word, _Z_LAYER, 1)
        lo_x, lo_y, lo_z = ox + x0 + 0.5, oy + y0 + 0.5, oz + z0 + 0.5
        if box_dist2(px, py, pz, lo_x, lo_y, lo_z, lo_x + (x1 - x0), lo_y + (y1 - y0), lo_z + (z1 - z0)) >= best2:
            continue
        for lx in range(x0, x1 + 1):
            for ly in range(y0, y1 + 1):
                for lz in range(z0, z1 + 1):
                    if not (word >> np.uint64((lx << 4) | (ly << 2) | lz)) & np.uint64(1):
                        continue
                    dx, dy, dz = ox + lx + 0.5 - px, oy + ly + 0.5 - py, oz + lz + 0.5 - pz
                    d2 = dx * dx + dy * dy + dz * dz
                    if d2 < best2:
                        best2 = d2
                        best[0], best[1], best[2] = ox + lx, oy + ly, oz + lz
    return best2


@numba.njit(cache=True)
def _search_chunks(
    table_keys, table_ids, shift, chunk_coords, block_mask, block_slot, bits, px, py, pz, best2, best, bx, by, bz,
    chunk_d2, chunk_ids,
):
    """Best-first search for a voxel centre closer to ``p`` than ``sqrt(best2)`` (voxel units) outside the blocks
    ``[b - 1, b + 1]`` (already searched): the surface chunks whose box of voxel centres lies within the bound, in
    order of that box's distance, then in each the blocks whose box is still within it, and in those the
    sub-blocks whose voxels' box is (``_nearest_in_block_tight``). Writes the voxel into ``best`` and returns the
    new ``best2``. ``chunk_d2`` (float64) and ``chunk_ids`` (int64) are
    scratch space for every chunk overlapping the bound's cube."""
    r = math.sqrt(best2)
    n = 0
    for cx in range(np.int64(math.floor((px - r) / 64.0)), np.int64(math.floor((px + r) / 64.0)) + 1):
        for cy in range(np.int64(math.floor((py - r) / 64.0)), np.int64(math.floor((py + r) / 64.0)) + 1):
            for cz in range(np.int64(math.floor((pz - r) / 64.0)), np.int64(math.floor((pz + r) / 64.0)) + 1):
                x0, y0, z0 = cx * 64 + 0.5, cy * 64 + 0.5, cz * 64 + 0.5
                d2 = box_dist2(px, py, pz, x0, y0, z0, x0 + 63.0, y0 + 63.0, z0 + 63.0)
                if d2 >= best2:
                    continue
                cid = find_chunk(table_keys, table_ids, shift, cx, cy, cz)
                if cid < 0 or chunk_is_empty(block_mask, cid):
                    continue
                # Insertion into the list sorted by distance.
                j = n
                while j > 0 and chunk_d2[j - 1] > d2:
                    chunk_d2[j], chunk_ids[j] = chunk_d2[j - 1], chunk_ids[j - 1]
                    j -= 1
                chunk_d2[j], chunk_ids[j] = d2, cid
                n += 1
    for k in range(n):
        if chunk_d2[k] >= best2:
            break
        cid = chunk_ids[k]
        ox, oy, oz = chunk_coords[cid, 0] * 8, chunk_coords[cid, 1] * 8, chunk_coords[cid, 2] * 8
        for lx in range(8):
            word = block_mask[cid, lx]
            if word == 0:
                continue
            nx = ox + lx
            gap_x = max(nx * 8 + 0.5 - px, 0.0, px - nx * 8 - 7.5)
            gap_x2 = gap_x * gap_x
            if gap_x2 >= best2:
                continue
            for ly in range(8):
                row = (word >> np.uint64(8 * ly)) & np.uint64(255)
                if row == 0:
                    continue
                ny = oy + ly
                gap_y = max(ny * 8 + 0.5 - py, 0.0, py - ny * 8 - 7.5)
                gap_xy2 = gap_x2 + gap_y * gap_y
                if gap_xy2 >= best2:
                    continue
                for lz in range(8):
                    if not (row >> np.uint64(lz)) & np.uint64(1):
                        continue
                    nz = oz + lz
                    if abs(nx - bx) <= 1 and abs(ny - by) <= 1 and abs(nz - bz) <= 1:
                        continue
                    gap_z = max(nz * 8 + 0.5 - pz, 0.0, pz - nz * 8 - 7.5)
                    if gap_xy2 + gap_z * gap_z >= best2:
                        continue
                    slot = np.int64(block_slot[cid, (lx << 6) | (ly << 3) | lz])
                    best2 = _nearest_in_block_tight(bits, slot, nx, ny, nz, px, py, pz, best2, best)
    return best2


@numba.njit(cache=True)
def nearest_voxel(
    table_keys, table_ids, shift, chunk_coords, block_mask, block_slot, bits, parent, cache, px, py, pz, limit2, best,
    chunk_d2, chunk_ids,
):
    """Nearest surface voxel to ``p`` (voxel units) closer than ``sqrt(limit2)``, exactly: returns its squared
    distance (``limit2`` when none) and writes its index into ``best``. The parents of the 8 cells around ``p``
    bound the search, the 3 x 3 x 3 blocks around ``p`` are searched first, then ``_search_chunks`` beyond them
    when they do not settle it. ``chunk_d2`` and ``chunk_ids`` are ``_search_chunks``'s scratch space."""
    bx, by, bz = np.int64(math.floor(px / 8.0)), np.int64(math.floor(py / 8.0)), np.int64(math.floor(pz / 8.0))
    best2 = limit2
    # The 8 cells whose centres surround p: their parents are surface voxels, upper bounds on the answer.
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
    if best2 <= certain * certain:
        return best2
    return _search_chunks(
        table_keys, table_ids, shift, chunk_coords, block_mask, block_slot, bits, px, py, pz, best2, best, bx, by, bz,
        chunk_d2, chunk_ids,
    )


def _chunks_in_cube(radius_vox: float) -> int:
    """Most chunks a cube of half width ``radius_vox`` (voxels) overlaps."""
    per_axis = int(2 * radius_vox) // CHUNK_VOXELS + 2
    return per_axis**3


@numba.njit(cache=True, parallel=True)
def _nearest_kernel(grid, points, limit2, max_chunks, out_d2, out_voxel):
    table_keys, table_ids, shift, chunk_coords, block_mask, block_slot, bits, _, _, parent = grid
    n = len(points)
    for batch in numba.prange((n + _BATCH - 1) // _BATCH):
        cache = new_cache()
        best = np.empty(3, dtype=np.int64)
        chunk_d2 = np.empty(max_chunks, dtype=np.float64)
        chunk_ids = np.empty(max_chunks, dtype=np.int64)
        for i in range(batch * _BATCH, min(n, (batch + 1) * _BATCH)):
            best2 = nearest_voxel(
                table_keys, table_ids, shift, chunk_coords, block_mask, block_slot, bits, parent, cache,
                points[i, 0], points[i, 1], points[i, 2], limit2[i], best, chunk_d2, chunk_ids,
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
        # The search is exact: it needs to look no farther than the range (a hair more, so that a voxel exactly
        # at the range is found, as ``found`` below counts it).
        limit2 = range_vox**2 * (1 + 1e-12) + 1e-12
        out_d2 = np.empty(n, dtype=np.float64)
        out_voxel = np.empty((n, 3), dtype=np.int64)
        if n:
            points_vox = points_m / v
            order = spatial_order(points_vox)
            sorted_d2 = np.empty(n, dtype=np.float64)
            sorted_voxel = np.empty((n, 3), dtype=np.int64)
            limit2 = np.broadcast_to(limit2, (n,))
            points_sorted, limit2_sorted = np.ascontiguousarray(points_vox[order]), np.ascontiguousarray(limit2[order])
            max_chunks = _chunks_in_cube(math.sqrt(limit2.max()))
            _nearest_kernel(self.grid.arrays(), points_sorted, limit2_sorted, max_chunks, sorted_d2, sorted_voxel)
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
