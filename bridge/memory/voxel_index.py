"""Key -> row indices for the voxel map, with two interchangeable backends.

* ``SortedKeyIndex`` (torch, any device): sorted keys with their rows; lookups by ``searchsorted``.
* ``HashIndex`` (numba, CPU): an open-addressing hash table with linear probing (``hash_table``). It skips the
  per-frame sort and the sorted merge, which is where the torch path spends its time on CPU (a numba kernel earns
  its place beside the torch path on a CPU hot path where it buys >= 1.5x; ``benchmarks/bench_integrate.py`` measures both).

Both assign new rows consecutively from ``next_row`` and give the same key -> row *set*, though not necessarily
the same row order; the voxel map never relies on row order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numba
import numpy as np
import torch

from worldweave.bridge.memory import hash_table, surface_points, voxel_keys

IndexBackend = Literal["torch", "numba"]

_RECENT_BITS = 4
_RECENT_MASK = (1 << _RECENT_BITS) - 1
_RECENT_SIZE = 1 << (3 * _RECENT_BITS)
"""Places in ``_fuse_pixels``' cache of recent voxels: a voxel's place is its index modulo 16 on each axis."""
_NO_CONFIDENCE = np.ones((1, 1), dtype=np.float32)
"""Stands in for the confidence image of a frame without one (the fused kernel then does not read it)."""


@dataclass(frozen=True)
class Accumulation:
    """One frame's (or one insert's) observations, summed per voxel.

    Each point weighs its confidence c in [0, 1] (1 for frames without confidence and for inserted points;
    confidence-0 points are left out before they get here). ``rows``: (U,) int64 rows touched. ``color_sums``:
    (U, 3) float32 sum of c * RGB of the points in each voxel. ``weights``: (U,) float32 sum of c (the fusion weight
    each voxel gains). ``confidence_sums``: (U,) float32 sum of c * c (weight times confidence, so
    ``confidence_sums / weights`` is the weight-averaged confidence of what was fused). ``new_keys``: (M,) keys that
    got rows ``next_row .. next_row+M-1``. ``points``: points (pixels) that entered.
    ``points_out_of_range``: points (pixels) left out because they lie beyond the key range (``voxel_keys``).
    """

    rows: torch.Tensor
    color_sums: torch.Tensor
    weights: torch.Tensor
    confidence_sums: torch.Tensor
    new_keys: torch.Tensor
    points: int
    points_out_of_range: int = 0


@dataclass(frozen=True)
class Assignment:
    """How a batch of point keys maps onto map rows.

    ``rows``: (U,) int64, the row of each distinct key in the batch. ``inverse``: (P,) int64, for each point the
    position of its key in ``rows``. ``new_keys``: (M,) int64 keys that got new rows ``next_row .. next_row+M-1``
    in this order.
    """

    rows: torch.Tensor
    inverse: torch.Tensor
    new_keys: torch.Tensor


class VoxelIndex(Protocol):
    def assign(self, point_keys: torch.Tensor, next_row: int) -> Assignment:
        """Find or create the row of every key; new keys get consecutive rows from ``next_row``."""

    def lookup(self, keys: torch.Tensor) -> torch.Tensor:
        """(N,) rows of ``keys``, -1 where a key is absent."""

    def rebuild(self, keys_by_row: torch.Tensor) -> None:
        """Forget everything and index ``keys_by_row[r]`` at row ``r`` (after rows were removed)."""


class SortedKeyIndex:
    """Sorted keys and their rows, as torch tensors on one device."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._keys = torch.empty(0, dtype=torch.int64, device=self.device)
        self._rows = torch.empty(0, dtype=torch.int64, device=self.device)

    def lookup(self, keys: torch.Tensor) -> torch.Tensor:
        if len(self._keys) == 0:
            return torch.full_like(keys, -1)
        pos = torch.searchsorted(self._keys, keys).clamp_max(len(self._keys) - 1)
        found = self._keys[pos] == keys
        return torch.where(found, self._rows[pos], torch.full_like(keys, -1))

    def assign(self, point_keys: torch.Tensor, next_row: int) -> Assignment:
        unique_keys, inverse = torch.unique(point_keys, return_inverse=True)
        rows = self.lookup(unique_keys)
        is_new = rows < 0
        new_keys = unique_keys[is_new]
        new_rows = torch.arange(next_row, next_row + len(new_keys), device=self.device)
        rows[is_new] = new_rows
        self._merge(new_keys, new_rows)
        return Assignment(rows, inverse, new_keys)

    def rebuild(self, keys_by_row: torch.Tensor) -> None:
        self._keys, order = torch.sort(keys_by_row.to(self.device))
        self._rows = order

    def _merge(self, new_keys: torch.Tensor, new_rows: torch.Tensor) -> None:
        """Insert sorted, absent ``new_keys`` keeping ``_keys`` sorted (one linear pass)."""
        if len(new_keys) == 0:
            return
        total = len(self._keys) + len(new_keys)
        slots = torch.searchsorted(self._keys, new_keys) + torch.arange(len(new_keys), device=self.device)
        old_slots = torch.ones(total, dtype=torch.bool, device=self.device)
        old_slots[slots] = False
        keys = torch.empty(total, dtype=torch.int64, device=self.device)
        rows = torch.empty(total, dtype=torch.int64, device=self.device)
        keys[slots], rows[slots] = new_keys, new_rows
        keys[old_slots], rows[old_slots] = self._keys, self._rows
        self._keys, self._rows = keys, rows


@numba.njit(cache=True, nogil=True, inline="always")
def _find_or_insert(key, table_keys, table_rows, shift, next_row, n_unique, n_new, row_seen, out_rows, out_new_keys):
    """Probe for ``key`` (inserting it with row ``next_row + n_new`` if absent) and return the position of its
    row among this batch's distinct rows, with the updated distinct and new counts."""
    row, inserted = hash_table.find_or_insert(table_keys, table_rows, shift, key, next_row + n_new)
    if inserted:
        out_new_keys[n_new] = key
        n_new += 1
    seen = row_seen[row]
    if seen < 0:
        seen = n_unique
        row_seen[row] = seen
        out_rows[n_unique] = row
        n_unique += 1
    return seen, n_unique, n_new


@numba.njit(cache=True, nogil=True)
def _assign(table_keys, table_rows, shift, point_keys, next_row, row_seen, out_rows, out_inverse, out_new_keys):
    """One pass over the points: find-or-insert each key, and collect the distinct rows in first-seen order."""
    n_unique = 0
    n_new = 0
    for p in range(len(point_keys)):
        seen, n_unique, n_new = _find_or_insert(
            point_keys[p], table_keys, table_rows, shift, next_row, n_unique, n_new, row_seen, out_rows, out_new_keys
        )
        out_inverse[p] = seen
    for u in range(n_unique):
        row_seen[out_rows[u]] = -1
    return n_unique, n_new


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _fuse_pixels(
    depth, rgb, exclude, confidence, has_confidence, rays_x, rays_y, rotation, translation, voxel, max_depth, limit,
    offset, bits, table_keys, table_rows, shift, next_row, row_seen, out_rows, out_sums, out_weights, out_conf_sums,
    out_new_keys, surface, surface_weight, max_weight,
):
    """One pass over an RGB-D frame: back-project every valid pixel, find-or-insert its voxel, sum its
    confidence-weighted colour per voxel and fold its point into the voxel's surface point.

    A pixel is valid when its depth lies in (0, ``max_depth``] metres, it is not ``exclude``d and, with
    ``has_confidence``, its ``confidence`` (float32 (H, W)) is > 0; it weighs that confidence (without, 1:
    ``confidence`` is then not read, nor ``out_conf_sums`` written: it equals ``out_weights``). Its camera point is
    ``(rays_x[u] * d, rays_y[v] * d, d)`` (``rays_x[u] = (u - cx) / fx``, ``rays_y[v] = (v - cy) / fy``, OpenCV
    camera) and its world point ``rotation @ camera point + translation`` (camera-to-world, metres), all in float64
    as ``VoxelMap``'s torch path computes it; its voxel is ``floor(world / voxel)``. Pixels whose voxel lies beyond
    +-``limit`` voxels on an axis (or is NaN) are checked before the integer cast, skipped and counted.

    Colour: ``out_sums`` (U, 3) float32 and ``out_weights`` / ``out_conf_sums`` (U,) float32 sum c * RGB, c and
    c * c per distinct voxel, in first-seen order (``out_rows``: their rows; ``out_new_keys``: keys given rows
    ``next_row ..``). Only the first U entries are written (each zeroed when its voxel is first seen), so the
    outputs need no clearing. Surface: ``surface`` (N, 3) float32 metres from the voxel centre and
    ``surface_weight`` (N,) float32 columns of the map, updated in place per pixel in row-major order by
    ``surface_points.fold_point``; a new voxel's surface weight starts at 0. The columns must have room for
    ``next_row + `` the frame's pixel count rows. Returns (distinct rows, new keys, pixels skipped, pixels fused).
    """
    height, width = depth.shape
    n_unique = 0
    n_new = 0
    n_outside = 0
    n_points = 0
    r00, r01, r02 = rotation[0, 0], rotation[0, 1], rotation[0, 2]
    r10, r11, r12 = rotation[1, 0], rotation[1, 1], rotation[1, 2]
    r20, r21, r22 = rotation[2, 0], rotation[2, 1], rotation[2, 2]
    t0, t1, t2 = translation[0], translation[1], translation[2]
    # One image row at a time: its world points and voxel indices in a branch-free (vectorised) loop into
    # row-sized buffers that stay in L1, then the per-pixel loop that probes and updates.
    world = np.empty((3, width), dtype=np.float64)
    index = np.empty((3, width), dtype=np.float64)
    # Neighbouring pixels mostly fall in one voxel, and a voxel's pixels come back row after row: remember the
    # left pixel's voxel, and the last voxel seen at each place of a 16^3 grid over space (key and its slot in
    # this frame's output; an L1-sized direct-mapped cache), and skip the hash probe, a cache miss in a large
    # table, when the key repeats (a 640x480 kitchen frame: 26k probes for 25k voxels; 49k with left and above).
    recent_key = np.full(_RECENT_SIZE, -2, dtype=np.int64)
    recent_seen = np.zeros(_RECENT_SIZE, dtype=np.int64)
    for v in range(height):
        ray_y = rays_y[v]
        for u in range(width):
            d = np.float64(depth[v, u])
            x = rays_x[u] * d
            y = ray_y * d
            wx = r00 * x + r01 * y + r02 * d + t0
            wy = r10 * x + r11 * y + r12 * d + t1
            wz = r20 * x + r21 * y + r22 * d + t2
            world[0, u] = wx
            world[1, u] = wy
            world[2, u] = wz
            index[0, u] = np.floor(wx / voxel)
            index[1, u] = np.floor(wy / voxel)
            index[2, u] = np.floor(wz / voxel)
        left_key = np.int64(-2)
        left_seen = np.int64(0)
        for u in range(width):
            d = np.float64(depth[v, u])
            if d <= 0.0 or d > max_depth or exclude[v, u]:
                continue
            c = np.float32(1.0)
            if has_confidence:
                c = confidence[v, u]
                if c <= 0.0:
                    continue
            fi, fj, fk = index[0, u], index[1, u], index[2, u]
            if not (abs(fi) <= limit and abs(fj) <= limit and abs(fk) <= limit):
                n_outside += 1
                continue
            key = ((np.int64(fi) + offset) << (2 * bits)) | ((np.int64(fj) + offset) << bits) | (np.int64(fk) + offset)
            place = (
                ((key >> (2 * bits)) & _RECENT_MASK) << (2 * _RECENT_BITS)
                | ((key >> bits) & _RECENT_MASK) << _RECENT_BITS
                | (key & _RECENT_MASK)
            )
            if key == left_key:
                seen = left_seen
            elif key == recent_key[place]:
                seen = recent_seen[place]
            else:
                first_unique = n_unique
                seen, n_unique, n_new = _find_or_insert(
                    key, table_keys, table_rows, shift, next_row, n_unique, n_new, row_seen, out_rows, out_new_keys
                )
                if n_unique > first_unique:
                    out_sums[seen, 0] = 0.0
                    out_sums[seen, 1] = 0.0
                    out_sums[seen, 2] = 0.0
                    out_weights[seen] = 0.0
                    if has_confidence:
                        out_conf_sums[seen] = 0.0
                    if out_rows[seen] >= next_row:  # a new voxel (its row may hold a removed voxel's values)
                        surface_weight[out_rows[seen]] = 0.0
                recent_key[place] = key
                recent_seen[place] = seen
            left_key = key
            left_seen = seen
            out_weights[seen] += c
            if has_confidence:  # the branch always goes one way for a frame; without confidence c is 1
                out_sums[seen, 0] += c * rgb[v, u, 0]
                out_sums[seen, 1] += c * rgb[v, u, 1]
                out_sums[seen, 2] += c * rgb[v, u, 2]
                out_conf_sums[seen] += c * c
            else:
                out_sums[seen, 0] += rgb[v, u, 0]
                out_sums[seen, 1] += rgb[v, u, 1]
                out_sums[seen, 2] += rgb[v, u, 2]
            surface_points.fold_point(
                surface, surface_weight, out_rows[seen], np.float32(world[0, u] - (fi + 0.5) * voxel),
                np.float32(world[1, u] - (fj + 0.5) * voxel), np.float32(world[2, u] - (fk + 0.5) * voxel), c,
                max_weight,
            )
            n_points += 1
    for i in range(n_unique):
        row_seen[out_rows[i]] = -1
    return n_unique, n_new, n_outside, n_points


@numba.njit(cache=True, nogil=True)
def fold_into_columns(
    keys, colors, weights, confidences, sources, first, last, rows, sums, gains, confidence_sums, new_keys, count,
    source, inserted, frame_id, max_weight,
):
    """Weighted running-mean update of the touched rows' colour and confidence (CPU twin of ``VoxelMap._apply``):
    ``sums``, ``gains`` and ``confidence_sums`` are an ``Accumulation``'s ``color_sums``, ``weights`` and
    ``confidence_sums``. An insert (``inserted``) makes its voxels ``source`` with confidence 1. Returns the rows of
    existing voxels that were touched."""
    for i in range(len(new_keys)):
        keys[count + i] = new_keys[i]
    changed = np.empty(len(rows), dtype=np.int64)
    n_changed = 0
    for i in range(len(rows)):
        row = rows[i]
        if row >= count:
            sources[row] = source
            first[row] = frame_id
            weights[row] = 0.0
            confidences[row] = 0.0
            colors[row, 0] = 0.0
            colors[row, 1] = 0.0
            colors[row, 2] = 0.0
        else:
            changed[n_changed] = row
            n_changed += 1
        old = weights[row]
        total = old + gains[i]
        for c in range(3):
            colors[row, c] = (colors[row, c] * old + sums[i, c]) / total
        if inserted:
            sources[row] = source
            confidences[row] = 1.0
        else:
            confidences[row] = (confidences[row] * old + confidence_sums[i]) / total
        weights[row] = min(total, max_weight)
        last[row] = frame_id
    return changed[:n_changed]


class HashIndex:
    """Open-addressing hash table (numba, CPU). Load factor stays <= 0.75 even if every key of a batch is new."""

    MAX_LOAD = 0.75

    def __init__(self) -> None:
        self._count = 0
        self._allocate(1 << 16)
        self._row_seen = np.full(1 << 16, -1, dtype=np.int64)

    def _allocate(self, capacity: int) -> None:
        self._table_keys, self._table_rows, self._shift = hash_table.allocate(capacity, np.int64)

    def _reserve(self, extra: int) -> None:
        needed = self._count + extra
        if needed > self.MAX_LOAD * len(self._table_keys):
            capacity = 1 << int(np.ceil(np.log2(needed / self.MAX_LOAD * 1.5)))
            self._table_keys, self._table_rows, self._shift = hash_table.rehash(
                self._table_keys, self._table_rows, capacity
            )
        if needed > len(self._row_seen):
            self._row_seen = np.full(max(needed, 2 * len(self._row_seen)), -1, dtype=np.int64)

    def table(self) -> tuple[np.ndarray, np.ndarray, np.uint64]:
        """The hash table (keys, rows, shift) for numba kernels that only look keys up (``hash_table.find``)."""
        return self._table_keys, self._table_rows, self._shift

    def lookup(self, keys: torch.Tensor) -> torch.Tensor:
        keys_np = np.ascontiguousarray(keys.cpu().numpy())
        return torch.from_numpy(hash_table.find_all(self._table_keys, self._table_rows, self._shift, keys_np))

    def assign(self, point_keys: torch.Tensor, next_row: int) -> Assignment:
        if next_row != self._count:
            raise ValueError(f"HashIndex rows must stay dense: next_row {next_row} != count {self._count}")
        keys_np = np.ascontiguousarray(point_keys.cpu().numpy())
        self._reserve(len(keys_np))
        rows = np.empty(len(keys_np), dtype=np.int64)
        inverse = np.empty(len(keys_np), dtype=np.int64)
        new_keys = np.empty(len(keys_np), dtype=np.int64)
        n_unique, n_new = _assign(
            self._table_keys, self._table_rows, self._shift, keys_np, next_row, self._row_seen, rows, inverse, new_keys
        )
        self._count += n_new
        return Assignment(
            torch.from_numpy(rows[:n_unique]), torch.from_numpy(inverse), torch.from_numpy(new_keys[:n_new].copy())
        )

    def fuse_frame(
        self,
        depth: np.ndarray,
        rgb: np.ndarray,
        exclude: np.ndarray,
        confidence: np.ndarray | None,
        intrinsics: tuple[float, float, float, float],
        rotation: np.ndarray,
        translation: np.ndarray,
        voxel_size_m: float,
        max_depth_m: float,
        next_row: int,
        surface: np.ndarray,
        surface_weight: np.ndarray,
        max_weight: float,
    ) -> Accumulation:
        """Fused CPU path of ``VoxelMap.integrate`` (``_fuse_pixels``): every valid, non-excluded pixel of one RGB-D
        frame (depth float32 (H, W) metres, ``rgb`` uint8 (H, W, 3), pinhole ``intrinsics`` ``(fx, fy, cx, cy)``,
        camera-to-world ``rotation`` (3, 3) and ``translation`` (3,) metres) whose point lies within the key range
        (the others are counted in ``points_out_of_range``), weighted by ``confidence`` (float32 (H, W) in [0, 1];
        confidence-0 pixels are left out; ``None`` weighs every pixel 1). Returns the per-voxel colour sums for
        ``fold_into_columns``, and folds each point into the map's ``surface`` / ``surface_weight`` columns (numpy
        views, room for ``next_row + depth.size`` rows) on the way, the running mean capped at ``max_weight``."""
        if next_row != self._count:
            raise ValueError(f"HashIndex rows must stay dense: next_row {next_row} != count {self._count}")
        pixels = depth.size
        self._reserve(pixels)
        # Uncleared: the kernel writes (and zeroes) only the entries of the voxels it sees.
        rows = np.empty(pixels, dtype=np.int64)
        sums = np.empty((pixels, 3), dtype=np.float32)
        weights = np.empty(pixels, dtype=np.float32)
        confidence_sums = weights if confidence is None else np.empty(pixels, dtype=np.float32)  # c * c = c at c = 1
        new_keys = np.empty(pixels, dtype=np.int64)
        fx, fy, cx, cy = intrinsics
        height, width = depth.shape
        rays_x = (np.arange(width, dtype=np.float64) - cx) / fx
        rays_y = (np.arange(height, dtype=np.float64) - cy) / fy
        n_unique, n_new, n_outside, n_points = _fuse_pixels(
            depth, rgb, exclude, _NO_CONFIDENCE if confidence is None else confidence, confidence is not None,
            rays_x, rays_y, rotation, translation, voxel_size_m, max_depth_m,
            voxel_keys.AXIS_LIMIT, voxel_keys.AXIS_OFFSET, voxel_keys.AXIS_BITS,
            self._table_keys, self._table_rows, self._shift, next_row, self._row_seen, rows, sums, weights,
            confidence_sums, new_keys, surface, surface_weight, np.float32(max_weight),
        )
        self._count += n_new
        return Accumulation(
            rows=torch.from_numpy(rows[:n_unique]), color_sums=torch.from_numpy(sums[:n_unique]),
            weights=torch.from_numpy(weights[:n_unique]), confidence_sums=torch.from_numpy(confidence_sums[:n_unique]),
            new_keys=torch.from_numpy(new_keys[:n_new].copy()), points=int(n_points),
            points_out_of_range=int(n_outside),
        )

    def rebuild(self, keys_by_row: torch.Tensor) -> None:
        keys_np = np.ascontiguousarray(keys_by_row.cpu().numpy())
        self._count = 0
        capacity = 1 << int(np.ceil(np.log2(max(len(keys_np), 1 << 15) / self.MAX_LOAD * 1.5)))
        self._allocate(capacity)
        hash_table.insert_all(self._table_keys, self._table_rows, self._shift, keys_np)
        self._count = len(keys_np)
        if len(self._row_seen) < self._count:
            self._row_seen = np.full(2 * self._count, -1, dtype=np.int64)


def make_index(backend: IndexBackend, device: torch.device) -> VoxelIndex:
    """The index for ``backend`` on ``device``; numba runs on CPU only."""
    if backend == "numba":
        if device.type != "cpu":
            raise ValueError(f"the numba voxel index runs on CPU only, not on {device}")
        return HashIndex()
    if backend == "torch":
        return SortedKeyIndex(device)
    raise ValueError(f"unknown voxel index backend {backend!r}; choose 'torch' or 'numba'")
