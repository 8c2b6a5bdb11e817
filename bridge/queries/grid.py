"""Sparse, block-hashed copy of the voxel map's surface that the spatial queries walk.

Layout, in voxel units (voxel ``(i, j, k)`` spans ``[i, i+1) * voxel_size_m``, see ``voxel_keys``):

* a **block** is 8 x 8 x 8 voxels (16 cm at 2 cm voxels). Its occupancy is 8 ``uint64`` words, one per 4 x 4 x 4
  sub-block, so a block costs 64 bytes whatever it holds;
* a **chunk** is 8 x 8 x 8 blocks (1.28 m at 2 cm). Chunks are the only hashed level (``hash_table``, keyed by
  the chunk coordinates packed like voxel keys): a chunk holds a 512-bit mask of its blocks that hold voxels (one
  cache line: empty space is skipped without touching more), the slot of each of its 512 blocks (-1 when empty)
  and, for the distance field, one *cell* per block: the voxel nearest the block centre (``parent``, stored as an
  int16 offset from the block's first voxel, ``NO_PARENT`` when none lies within the field's reach).

Chunks exist where there is surface or where the distance field reaches (every chunk within ``reach_vox`` of a
surface block), so memory grows with surface area times reach, not with the world's volume. Chunks are never
dropped; emptied blocks return their slot to a free list.

The kernels spell this layout out as literals where it keeps them readable (``* 8`` and ``+ 4.0`` for a block's
first voxel and centre, ``3.5`` for the offset from a block centre to its first voxel's centre, ``>> 9`` and
``& 511`` for a cell within a chunk); the constants below name it.

Kernels take the arrays as one plain tuple (``BlockGrid.arrays``; numba caches functions of plain tuples, not of
named ones) and unpack it once; helpers take the arrays one by one, since handing a tuple of arrays to a function
costs a reference count per array per call.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from worldweave.bridge.memory import hash_table
from worldweave.proto import voxel_keys

BLOCK_SHIFT = 3
BLOCK_VOXELS = 1 << BLOCK_SHIFT
"""Voxels per block edge."""
CHUNK_SHIFT = 3
CHUNK_BLOCKS = 1 << CHUNK_SHIFT
"""Blocks per chunk edge."""
CHUNK_VOXELS = BLOCK_VOXELS * CHUNK_BLOCKS
"""Voxels per chunk edge."""
CELLS_PER_CHUNK = CHUNK_BLOCKS**3
WORDS_PER_BLOCK = 8
"""uint64 occupancy words per block: one per 4 x 4 x 4-voxel sub-block."""
MASK_WORDS = CELLS_PER_CHUNK // 64
"""uint64 words of a chunk's block mask: word ``x`` holds the blocks of x-slice ``x``, bit ``8 * y + z``."""
NO_PARENT = np.int16(-32768)
_KEY_BITS = voxel_keys.AXIS_BITS
_KEY_OFFSET = voxel_keys.AXIS_OFFSET
_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
_DEBRUIJN_INDEX = np.zeros(64, dtype=np.int64)
for _bit in range(64):
    _DEBRUIJN_INDEX[int(((1 << _bit) * int(_DEBRUIJN) % (1 << 64)) >> 58)] = _bit
_U1 = np.uint64(1)
_U58 = np.uint64(58)
MAX_LOAD = 0.5
"""Largest fill of the chunk hash table before it doubles."""


# ------------------------------------------------------------------------------------------- kernel helpers


@numba.njit(cache=True)
def chunk_key(cx, cy, cz):
    """Packed int64 key (always >= 0) of chunk ``(cx, cy, cz)``: ``voxel_keys.pack`` of one coordinate triple."""
    return (
        ((np.int64(cx) + _KEY_OFFSET) << (2 * _KEY_BITS))
        | ((np.int64(cy) + _KEY_OFFSET) << _KEY_BITS)
        | (np.int64(cz) + _KEY_OFFSET)
    )


@numba.njit(cache=True)
def find_chunk(table_keys, table_ids, shift, cx, cy, cz):
    """Id of chunk ``(cx, cy, cz)``, or -1 when it does not exist."""
    return hash_table.find(table_keys, table_ids, shift, chunk_key(cx, cy, cz))


@numba.njit(cache=True)
def cached_chunk(table_keys, table_ids, shift, cache, cx, cy, cz):
    """``find_chunk`` through a 4-entry cache ``[cx, cy, cz, id]`` (one per thread): rays and searches stay in a
    chunk for many steps."""
    if cache[0] == cx and cache[1] == cy and cache[2] == cz:
        return cache[3]
    cid = find_chunk(table_keys, table_ids, shift, cx, cy, cz)
    cache[0], cache[1], cache[2], cache[3] = cx, cy, cz, cid
    return cid


@numba.njit(cache=True)
def new_cache():
    cache = np.empty(4, dtype=np.int64)
    cache[0] = np.iinfo(np.int64).min
    return cache


@numba.njit(cache=True)
def local_block(bx, by, bz):
    """Index (0..511) of block ``(bx, by, bz)`` inside its chunk."""
    return ((bx & 7) << 6) | ((by & 7) << 3) | (bz & 7)


@numba.njit(cache=True)
def block_present(block_mask, cid, local):
    """True when block ``local`` (0..511) of chunk ``cid`` holds voxels."""
    return ((block_mask[cid, local >> 6] >> np.uint64(local & 63)) & _U1) != 0


@numba.njit(cache=True)
def block_slot_at(table_keys, table_ids, shift, block_mask, block_slot, cache, bx, by, bz):
    """Slot of block ``(bx, by, bz)``, or -1 when it holds no voxel."""
    cid = cached_chunk(table_keys, table_ids, shift, cache, bx >> CHUNK_SHIFT, by >> CHUNK_SHIFT, bz >> CHUNK_SHIFT)
    if cid < 0:
        return np.int64(-1)
    local = local_block(bx, by, bz)
    if not block_present(block_mask, cid, local):
        return np.int64(-1)
    return np.int64(block_slot[cid, local])


@numba.njit(cache=True)
def chunk_is_empty(block_mask, cid):
    """True when chunk ``cid`` holds no surface block."""
    for w in range(MASK_WORDS):
        if block_mask[cid, w]:
            return False
    return True


@numba.njit(cache=True)
def voxel_word_bit(ix, iy, iz):
    """(word, bit) of voxel ``(ix, iy, iz)`` inside its block's occupancy words."""
    lx, ly, lz = ix & 7, iy & 7, iz & 7
    word = ((lx >> 2) << 2) | ((ly >> 2) << 1) | (lz >> 2)
    bit = ((lx & 3) << 4) | ((ly & 3) << 2) | (lz & 3)
    return word, bit


@numba.njit(cache=True)
def slot_has_voxel(bits, slot, ix, iy, iz):
    word, bit = voxel_word_bit(ix, iy, iz)
    return ((bits[slot, word] >> np.uint64(bit)) & _U1) != 0


@numba.njit(cache=True)
def is_occupied(table_keys, table_ids, shift, block_mask, block_slot, bits, cache, ix, iy, iz):
    """True when voxel ``(ix, iy, iz)`` is in the surface."""
    bx, by, bz = ix >> BLOCK_SHIFT, iy >> BLOCK_SHIFT, iz >> BLOCK_SHIFT
    slot = block_slot_at(table_keys, table_ids, shift, block_mask, block_slot, cache, bx, by, bz)
    if slot < 0:
        return False
    return slot_has_voxel(bits, slot, ix, iy, iz)


@numba.njit(cache=True)
def box_dist2(px, py, pz, lox, loy, loz, hix, hiy, hiz):
    """Squared distance from a point to the box ``[lo, hi]`` (0 inside)."""
    dx = max(lox - px, 0.0, px - hix)
    dy = max(loy - py, 0.0, py - hiy)
    dz = max(loz - pz, 0.0, pz - hiz)
    return dx * dx + dy * dy + dz * dz


@numba.njit(cache=True)
def nearest_in_block(bits, slot, bx, by, bz, px, py, pz, best2, best):
    """Search block ``slot`` (at block coordinates ``bx, by, bz``) for a voxel centre closer to ``p`` than
    ``sqrt(best2)`` (voxel units); sub-blocks whose box is already farther are skipped. Writes the voxel index
    into ``best`` (3 int64) and returns the new ``best2``."""
    base_x, base_y, base_z = bx << BLOCK_SHIFT, by << BLOCK_SHIFT, bz << BLOCK_SHIFT
    for w in range(WORDS_PER_BLOCK):
        word = bits[slot, w]
        if word == 0:
            continue
        ox = base_x + ((w >> 2) & 1) * 4
        oy = base_y + ((w >> 1) & 1) * 4
        oz = base_z + (w & 1) * 4
        if box_dist2(px, py, pz, ox + 0.5, oy + 0.5, oz + 0.5, ox + 3.5, oy + 3.5, oz + 3.5) >= best2:
            continue
        while word:
            low = word & (~word + _U1)
            b = _DEBRUIJN_INDEX[(low * _DEBRUIJN) >> _U58]
            word ^= low
            vx, vy, vz = ox + ((b >> 4) & 3), oy + ((b >> 2) & 3), oz + (b & 3)
            dx, dy, dz = vx + 0.5 - px, vy + 0.5 - py, vz + 0.5 - pz
            d2 = dx * dx + dy * dy + dz * dz
            if d2 < best2:
                best2 = d2
                best[0], best[1], best[2] = vx, vy, vz
    return best2


@numba.njit(cache=True)
def nearest_in_block_range(
    table_keys, table_ids, shift, block_mask, block_slot, bits, cache,
    lo_x, lo_y, lo_z, hi_x, hi_y, hi_z, px, py, pz, best2, best,
):
    """``nearest_in_block`` over every block with coordinates in ``[lo, hi]`` (inclusive); blocks whose box of
    voxel centres is already farther than ``sqrt(best2)`` are skipped before their memory is read."""
    for bx in range(lo_x, hi_x + 1):
        for by in range(lo_y, hi_y + 1):
            for bz in range(lo_z, hi_z + 1):
                x0, y0, z0 = bx * BLOCK_VOXELS + 0.5, by * BLOCK_VOXELS + 0.5, bz * BLOCK_VOXELS + 0.5
                if box_dist2(px, py, pz, x0, y0, z0, x0 + 7.0, y0 + 7.0, z0 + 7.0) >= best2:
                    continue
                slot = block_slot_at(table_keys, table_ids, shift, block_mask, block_slot, cache, bx, by, bz)
                if slot >= 0:
                    best2 = nearest_in_block(bits, slot, bx, by, bz, px, py, pz, best2, best)
    return best2


# ------------------------------------------------------------------------------------------ maintenance kernels


@numba.njit(cache=True)
def _insert_chunks(table_keys, table_ids, shift, chunk_coords, coords, next_id):
    """Insert chunks ``coords`` (K, 3) that are absent; return the next free id. Capacity is the caller's job."""
    for i in range(len(coords)):
        key = chunk_key(coords[i, 0], coords[i, 1], coords[i, 2])
        _, inserted = hash_table.find_or_insert(table_keys, table_ids, shift, key, next_id)
        if inserted:
            chunk_coords[next_id, 0], chunk_coords[next_id, 1], chunk_coords[next_id, 2] = (
                coords[i, 0],
                coords[i, 1],
                coords[i, 2],
            )
            next_id += 1
    return next_id


@numba.njit(cache=True)
def _apply_voxels(grid, voxels, add, free_slots, n_free, next_slot, touched_flag, touched):
    """Set (``add``) or clear the occupancy bit of each voxel (N, 3). Returns (touched count, n_free, next_slot);
    ``touched[:count]`` gets the block coordinates whose voxel set changed. Blocks emptied by a clear give their
    slot back to ``free_slots``. The chunks of added voxels must exist and block capacity must suffice."""
    table_keys, table_ids, shift, chunk_coords, block_mask, block_slot, bits, block_count, block_coords, parent = grid
    touched_slots = np.empty(len(voxels), dtype=np.int64)
    n_touched = 0
    for i in range(len(voxels)):
        ix, iy, iz = voxels[i, 0], voxels[i, 1], voxels[i, 2]
        bx, by, bz = ix >> BLOCK_SHIFT, iy >> BLOCK_SHIFT, iz >> BLOCK_SHIFT
        cid = find_chunk(table_keys, table_ids, shift, bx >> CHUNK_SHIFT, by >> CHUNK_SHIFT, bz >> CHUNK_SHIFT)
        if cid < 0:
            continue
        local = local_block(bx, by, bz)
        slot = np.int64(block_slot[cid, local])
        word, bit = voxel_word_bit(ix, iy, iz)
        mask = _U1 << np.uint64(bit)
        if add:
            if slot < 0:
                if n_free > 0:
                    n_free -= 1
                    slot = free_slots[n_free]
                else:
                    slot = next_slot
                    next_slot += 1
                block_slot[cid, local] = slot
                bits[slot, :] = 0
                block_count[slot] = 0
                block_coords[slot, 0], block_coords[slot, 1], block_coords[slot, 2] = bx, by, bz
                block_mask[cid, local >> 6] |= _U1 << np.uint64(local & 63)
            if bits[slot, word] & mask:
                continue
            bits[slot, word] |= mask
            block_count[slot] += 1
        else:
            if slot < 0 or not (bits[slot, word] & mask):
                continue
            bits[slot, word] &= ~mask
            block_count[slot] -= 1
        if not touched_flag[slot]:
            touched_flag[slot] = 1
            touched_slots[n_touched] = slot
            touched[n_touched, 0], touched[n_touched, 1], touched[n_touched, 2] = bx, by, bz
            n_touched += 1
    for t in range(n_touched):
        slot = touched_slots[t]
        touched_flag[slot] = 0
        if block_count[slot] == 0:
            bx, by, bz = block_coords[slot, 0], block_coords[slot, 1], block_coords[slot, 2]
            cid = find_chunk(table_keys, table_ids, shift, bx >> CHUNK_SHIFT, by >> CHUNK_SHIFT, bz >> CHUNK_SHIFT)
            local = local_block(bx, by, bz)
            block_slot[cid, local] = -1
            block_mask[cid, local >> 6] &= ~(_U1 << np.uint64(local & 63))
            free_slots[n_free] = slot
            n_free += 1
    return n_touched, n_free, next_slot


# ------------------------------------------------------------------------------------------------- storage


def _next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 1).bit_length()


def spatial_order(points_vox: np.ndarray) -> np.ndarray:
    """Permutation that sorts points (N, 3) in voxel units chunk by chunk, then block by block: queries near each
    other then touch the same memory, which is most of the cost of a query on a large map."""
    blocks = np.floor(np.asarray(points_vox) / BLOCK_VOXELS).astype(np.int64)
    # Chunk coordinates of points within the voxel keys' extent fit in 16 bits each.
    chunks = (blocks >> CHUNK_SHIFT) + (1 << 15)
    local = ((blocks[:, 0] & 7) << 6) | ((blocks[:, 1] & 7) << 3) | (blocks[:, 2] & 7)
    keys = (((chunks[:, 0] << 32) | (chunks[:, 1] << 16) | chunks[:, 2]) << 9) | local
    return np.argsort(keys, kind="stable")


def unique_coords(coords: np.ndarray) -> np.ndarray:
    """Distinct rows of (N, 3) int64 coordinates within +-2**20 (block or chunk coordinates), sorted; packed as
    voxel keys, which sort like the rows."""
    return voxel_keys.unpack(np.unique(voxel_keys.pack(coords)))


class BlockGrid:
    """The surface as occupancy bits in hashed chunks of blocks, plus the distance field's per-block cells.

    ``reach_vox``: how far (voxel units) from a surface block chunks are created for the distance field.
    Not thread-safe: the owner (``WorldQueries``) serialises updates and queries.
    """

    def __init__(self, reach_vox: float) -> None:
        self.reach_vox = float(reach_vox)
        self._n_chunks = 0
        self._next_slot = 0
        self._n_free = 0
        self._allocate_table(1 << 10)
        self._chunk_coords = np.zeros((0, 3), dtype=np.int32)
        self._block_mask = np.zeros((0, MASK_WORDS), dtype=np.uint64)
        self._block_slot = np.zeros((0, CELLS_PER_CHUNK), dtype=np.int32)
        self._parent = np.zeros((0, CELLS_PER_CHUNK, 3), dtype=np.int16)
        self.queued = np.zeros((0, CELLS_PER_CHUNK), dtype=np.uint8)
        """Per-cell flag the field's propagation uses; all zero between updates."""
        self._bits = np.zeros((0, WORDS_PER_BLOCK), dtype=np.uint64)
        self._block_count = np.zeros(0, dtype=np.int32)
        self._block_coords = np.zeros((0, 3), dtype=np.int32)
        self._touched_flag = np.zeros(0, dtype=np.uint8)
        self._free_slots = np.zeros(0, dtype=np.int64)
        self._reserve_chunks(64)
        self._reserve_blocks(1024)

    # ---------------------------------------------------------------------------------------------- capacity

    def _allocate_table(self, capacity: int) -> None:
        self._table_keys, self._table_ids, self._shift = hash_table.allocate(capacity, np.int32)

    def _reserve_chunks(self, extra: int) -> None:
        needed = self._n_chunks + extra
        if needed > MAX_LOAD * len(self._table_keys):
            self._table_keys, self._table_ids, self._shift = hash_table.rehash(
                self._table_keys, self._table_ids, _next_pow2(int(needed / MAX_LOAD) + 1)
            )
        capacity = len(self._block_mask)
        if needed <= capacity:
            return
        capacity = max(needed, capacity + capacity // 2)

        def grow(array: np.ndarray, fill) -> np.ndarray:
            out = np.empty((capacity, *array.shape[1:]), dtype=array.dtype)
            out[: self._n_chunks] = array[: self._n_chunks]
            out[self._n_chunks :] = fill
            return out

        self._chunk_coords = grow(self._chunk_coords, 0)
        self._block_mask = grow(self._block_mask, 0)
        self._block_slot = grow(self._block_slot, -1)
        self._parent = grow(self._parent, NO_PARENT)
        self.queued = grow(self.queued, 0)

    def _reserve_blocks(self, extra: int) -> None:
        needed = self._next_slot + extra
        capacity = len(self._block_count)
        if needed <= capacity:
            return
        capacity = max(needed, capacity + capacity // 2)

        def grow(array: np.ndarray) -> np.ndarray:
            out = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
            out[: len(array)] = array
            return out

        self._bits, self._block_count = grow(self._bits), grow(self._block_count)
        self._block_coords, self._touched_flag = grow(self._block_coords), grow(self._touched_flag)
        self._free_slots = grow(self._free_slots)

    # ------------------------------------------------------------------------------------------------ access

    def arrays(self) -> tuple:
        """The tuple every kernel takes: ``(table_keys, table_ids, shift, chunk_coords, block_mask, block_slot,
        bits, block_count, block_coords, parent)``. Fetch it again after an update: growth replaces arrays."""
        return (
            self._table_keys,
            self._table_ids,
            self._shift,
            self._chunk_coords,
            self._block_mask,
            self._block_slot,
            self._bits,
            self._block_count,
            self._block_coords,
            self._parent,
        )

    @property
    def n_chunks(self) -> int:
        return self._n_chunks

    @property
    def n_blocks(self) -> int:
        """Blocks holding at least one voxel."""
        return self._next_slot - self._n_free

    @property
    def chunk_coords(self) -> np.ndarray:
        """(n_chunks, 3) int32 coordinates of the existing chunks, by id."""
        return self._chunk_coords[: self._n_chunks]

    def nbytes(self) -> int:
        """Bytes held by the grid's arrays (capacity included)."""
        arrays = (
            self._table_keys,
            self._table_ids,
            self._chunk_coords,
            self._block_mask,
            self._block_slot,
            self._parent,
            self.queued,
            self._bits,
            self._block_count,
            self._block_coords,
            self._touched_flag,
            self._free_slots,
        )
        return int(sum(a.nbytes for a in arrays))

    # ------------------------------------------------------------------------------------------------ update

    def ensure_chunks(self, coords: np.ndarray) -> None:
        """Create the chunks ``coords`` (K, 3) that do not exist yet."""
        coords = np.ascontiguousarray(coords, dtype=np.int64)
        if len(coords) == 0:
            return
        self._reserve_chunks(len(coords))
        self._n_chunks = int(
            _insert_chunks(self._table_keys, self._table_ids, self._shift, self._chunk_coords, coords, self._n_chunks)
        )

    def apply(self, voxels: np.ndarray, *, add: bool) -> np.ndarray:
        """Set (``add``) or clear voxels (N, 3) int64 indices; return the (M, 3) block coordinates that changed."""
        voxels = np.ascontiguousarray(voxels, dtype=np.int64)
        if len(voxels) == 0:
            return np.zeros((0, 3), dtype=np.int64)
        if add:
            blocks = unique_coords(voxels >> BLOCK_SHIFT)
            self.ensure_chunks(unique_coords(blocks >> CHUNK_SHIFT))
            self._reserve_blocks(len(blocks))
        touched = np.empty((len(voxels), 3), dtype=np.int64)
        n_touched, self._n_free, self._next_slot = _apply_voxels(
            self.arrays(), voxels, add, self._free_slots, self._n_free, self._next_slot, self._touched_flag, touched
        )
        return touched[:n_touched]

    def chunks_within_reach(self, blocks: np.ndarray) -> np.ndarray:
        """(K, 3) coordinates of every chunk whose box lies within ``reach_vox`` of a block in ``blocks`` (M, 3)."""
        if len(blocks) == 0:
            return np.zeros((0, 3), dtype=np.int64)
        blocks = np.asarray(blocks, dtype=np.int64)
        # Per chunk holding some of the blocks, the box (voxels) around those blocks.
        chunks, inverse = np.unique(voxel_keys.pack(blocks >> CHUNK_SHIFT), return_inverse=True)
        lo = np.full((len(chunks), 3), np.iinfo(np.int64).max)
        hi = np.full((len(chunks), 3), np.iinfo(np.int64).min)
        np.minimum.at(lo, inverse, blocks * BLOCK_VOXELS)
        np.maximum.at(hi, inverse, (blocks + 1) * BLOCK_VOXELS)
        radius = int(math.ceil(self.reach_vox / CHUNK_VOXELS))
        steps = np.arange(-radius, radius + 1)
        offsets = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 3)
        candidates = (voxel_keys.unpack(chunks)[:, None, :] + offsets[None, :, :]).reshape(-1, 3)
        c_lo, c_hi = candidates * CHUNK_VOXELS, (candidates + 1) * CHUNK_VOXELS
        lo, hi = np.repeat(lo, len(offsets), axis=0), np.repeat(hi, len(offsets), axis=0)
        gap = np.maximum(np.maximum(c_lo - hi, lo - c_hi), 0).astype(np.float64)
        return unique_coords(candidates[(gap**2).sum(axis=1) < self.reach_vox**2])

    def chunk_ids(self, coords: np.ndarray) -> np.ndarray:
        """Ids of chunks ``coords`` (K, 3), -1 where absent."""
        return hash_table.find_all(self._table_keys, self._table_ids, self._shift, voxel_keys.pack(coords))
