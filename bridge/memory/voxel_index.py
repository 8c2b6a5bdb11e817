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

from worldweave.bridge.cores import even_bands
from worldweave.bridge.memory import hash_table, surface_points, voxel_keys
from worldweave.bridge.prefetch import PREFETCH_AHEAD, prefetch_item
from worldweave.bridge.scratch import thread_scratch

IndexBackend = Literal["torch", "numba"]

_RECENT_BITS = 4
_RECENT_MASK = (1 << _RECENT_BITS) - 1
_RECENT_SIZE = 1 << (3 * _RECENT_BITS)
"""Places in ``_pixel_probes``' cache of recent voxels: a voxel's place is its index modulo 16 on each axis."""
_INVALID_KEY = np.int64(-1)
"""``_pixel_probes``' key of a pixel that does not enter (no depth, excluded, confidence 0)."""
_OUTSIDE_KEY = np.int64(-3)
"""``_pixel_probes``' key of a pixel whose point lies beyond the key range."""
_RUNS_AHEAD = 12
"""How many runs of pixels ahead ``_accumulate_rows`` loads a voxel's surface point (a run of one voxel's pixels in an
image row averages under 3 pixels in a 640x480 kitchen frame at 2 cm voxels: 101k runs for 285k pixels)."""
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


@numba.njit(cache=True, nogil=True, parallel=True)
def _find_rows_threads(bands, table_keys, table_rows, shift, point_keys, out_rows):
    """``hash_table.find_range`` for the bands of keys ``bands[t] .. bands[t + 1] - 1``, one thread each (the table is
    only read): ``out_rows[p]``, the row of ``point_keys[p]`` or -1."""
    for t in numba.prange(len(bands) - 1):
        hash_table.find_range(table_keys, table_rows, shift, point_keys, bands[t], bands[t + 1], out_rows)


@numba.njit(cache=True, nogil=True)
def _assign(
    table_keys, table_rows, shift, point_keys, next_row, row_seen, out_rows, out_inverse, out_new_keys, found=False
):
    """Find-or-insert each key (new keys get rows ``next_row ..`` in order), and collect the distinct rows in
    first-seen order (``out_rows``; ``out_inverse[p]``: the position of point p's row there). Returns (distinct rows,
    new keys). ``row_seen`` (one entry per row, all -1) is left all -1. ``found``: ``out_inverse`` already holds
    each key's row where the table has it and -1 elsewhere (``_find_rows_threads``), so only those keys are probed.

    Two passes, each loading ``PREFETCH_AHEAD`` items ahead so that the cache misses overlap: the table probes
    (their rows kept in ``out_inverse`` meanwhile), then ``row_seen`` at those rows (as large as the map: a miss per
    row too). The rows are the same with ``found`` as without: a key the table lacks before the batch is inserted at
    its first occurrence, in order, either way."""
    n = len(point_keys)
    n_new = 0
    for p in range(n):
        if found and out_inverse[p] >= 0:
            continue
        if not found and p + PREFETCH_AHEAD < n:
            hash_table.prefetch(table_keys, table_rows, shift, point_keys[p + PREFETCH_AHEAD])
        key = point_keys[p]
        row, inserted = hash_table.find_or_insert(table_keys, table_rows, shift, key, next_row + n_new)
        if inserted:
            out_new_keys[n_new] = key
            n_new += 1
        out_inverse[p] = row
    n_unique = 0
    for p in range(n):
        if p + PREFETCH_AHEAD < n:
            prefetch_item(row_seen, out_inverse[p + PREFETCH_AHEAD])
        row = out_inverse[p]
        seen = row_seen[row]
        if seen < 0:
            seen = n_unique
            row_seen[row] = seen
            out_rows[n_unique] = row
            n_unique += 1
        out_inverse[p] = seen
    for u in range(n_unique):
        row_seen[out_rows[u]] = -1
    return n_unique, n_new


@numba.njit(cache=True, nogil=True, inline="always")
def _pose_values(rotation, translation):
    """A camera-to-world pose (``rotation`` (3, 3), ``translation`` (3,) metres) as a tuple of 12 floats, row by row
    with the translation last in each: loaded once, before a loop that writes arrays (which might alias the pose's)."""
    return (
        rotation[0, 0], rotation[0, 1], rotation[0, 2], translation[0],
        rotation[1, 0], rotation[1, 1], rotation[1, 2], translation[1],
        rotation[2, 0], rotation[2, 1], rotation[2, 2], translation[2],
    )


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _world_point(pose, x, y, d):
    """``rotation @ (x, y, d) + translation``: a camera point (OpenCV camera, metres) in the world (``pose``:
    ``_pose_values``), in float64 as ``VoxelMap``'s torch path computes it."""
    return (
        pose[0] * x + pose[1] * y + pose[2] * d + pose[3],
        pose[4] * x + pose[5] * y + pose[6] * d + pose[7],
        pose[8] * x + pose[9] * y + pose[10] * d + pose[11],
    )


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _row_points(depth, v, rays_x, rays_y, rotation, translation, voxel, indices, out):
    """The world points (``out`` (3, W) float64 metres) of every pixel of image row ``v`` or, with ``indices``, their
    voxel indices as floats (``floor(world / voxel)``, not range-checked). A pixel's camera point is
    ``(rays_x[u] * d, rays_y[v] * d, d)`` (``d`` its depth), its world point ``_world_point``'s. A branch-free loop
    the compiler vectorises (``indices`` is a constant at each call); every stage computes points with it, so they
    agree bit for bit."""
    pose = _pose_values(rotation, translation)
    ray_y = rays_y[v]
    for u in range(depth.shape[1]):
        d = np.float64(depth[v, u])
        wx, wy, wz = _world_point(pose, rays_x[u] * d, ray_y * d, d)
        if indices:
            wx, wy, wz = np.floor(wx / voxel), np.floor(wy / voxel), np.floor(wz / voxel)
        out[0, u] = wx
        out[1, u] = wy
        out[2, u] = wz


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _pixel_probes(
    depth, exclude, confidence, has_confidence, rays_x, rays_y, rotation, translation, voxel, max_depth, limit,
    offset, bits, row_start, row_stop, run_start, run_first, run_probe, row_run, row_runs, probe_keys, probe_row,
):
    """Stage 1 of a fused frame, for image rows ``row_start .. row_stop - 1``: each entering pixel's voxel key
    (points by ``_row_points``), the image rows cut into runs of pixels of one key (or none), and which probe of the
    hash table each run shares; the probes' keys (``probe_keys``) and image rows (``probe_row``) in pixel order.
    Returns (probes, pixels whose point lies beyond the key range).

    The runs of row v are ``row_run[v] .. row_run[v] + row_runs[v] - 1``, stored from ``run_start`` on, each row's
    after the last row's: run r covers pixels ``run_first[r] .. run_first[r + 1] - 1`` (after a row's last run,
    ``run_first`` holds the width) and shares probe ``run_probe[r]`` (int32, counted from 0 in these rows; -1 for a
    run of pixels that do not enter). A row takes at most W + 1 entries.

    A pixel enters when its depth lies in (0, ``max_depth``] metres, it is not ``exclude``d and, with
    ``has_confidence``, its ``confidence`` is > 0 (without, ``confidence`` is not read). The range check
    (+-``limit`` voxels per axis; NaN fails) is made on the floats, before the integer cast.

    A voxel's pixels come back row after row: the last key seen at each place of a 16^3 grid over space (an L1-sized
    direct-mapped cache) names the probe of a key seen before; every other key is a new probe. So a voxel's first
    pixel in these rows always makes a probe, the probes list the voxels in first-seen order, and a voxel evicted
    from the cache and seen again gets another probe (a 640x480 kitchen frame: 26k probes for 25k voxels, in 101k
    runs)."""
    width = depth.shape[1]
    index = np.empty((3, width), dtype=np.float64)
    keys = np.empty(width, dtype=np.int64)
    run_key = np.empty(width + 1, dtype=np.int64)
    recent_key = np.full(_RECENT_SIZE, -2, dtype=np.int64)
    recent_probe = np.zeros(_RECENT_SIZE, dtype=np.int32)
    n_probes = 0
    n_outside = 0
    base = run_start
    for v in range(row_start, row_stop):
        _row_points(depth, v, rays_x, rays_y, rotation, translation, voxel, True, index)
        for u in range(width):  # branch-free too: a key, or a marker, per pixel
            d = depth[v, u]
            valid = (d > 0.0) & (d <= max_depth) & ~exclude[v, u]
            if has_confidence:
                valid &= confidence[v, u] > 0.0
            fi, fj, fk = index[0, u], index[1, u], index[2, u]
            inside = (abs(fi) <= limit) & (abs(fj) <= limit) & (abs(fk) <= limit)
            key = ((np.int64(fi) + offset) << (2 * bits)) | ((np.int64(fj) + offset) << bits) | (np.int64(fk) + offset)
            keys[u] = key if valid & inside else (_OUTSIDE_KEY if valid else _INVALID_KEY)
        n_runs = 0
        last = np.int64(-4)  # neither a key nor a marker
        for u in range(width):  # the next run's slot is written at every pixel and kept where a run starts
            key = keys[u]
            run_first[base + n_runs] = u
            run_key[n_runs] = key
            n_runs += key != last
            n_outside += key == _OUTSIDE_KEY
            last = key
        run_first[base + n_runs] = width
        for r in range(n_runs):
            key = run_key[r]
            probe = np.int32(-1)
            if key >= 0:
                place = (
                    ((key >> (2 * bits)) & _RECENT_MASK) << (2 * _RECENT_BITS)
                    | ((key >> bits) & _RECENT_MASK) << _RECENT_BITS
                    | (key & _RECENT_MASK)
                )
                if key == recent_key[place]:
                    probe = recent_probe[place]
                else:
                    probe = np.int32(n_probes)
                    probe_keys[n_probes] = key
                    probe_row[n_probes] = v
                    n_probes += 1
                    recent_key[place] = key
                    recent_probe[place] = probe
            run_probe[base + r] = probe
        row_run[v] = base
        row_runs[v] = n_runs
        base += n_runs + 1
    return n_probes, n_outside


@numba.njit(cache=True, nogil=True, parallel=True)
def _pixel_probes_threads(
    bands, depth, exclude, confidence, has_confidence, rays_x, rays_y, rotation, translation, voxel, max_depth,
    limit, offset, bits, run_first, run_probe, row_run, row_runs, probe_keys, probe_row, counts,
):
    """``_pixel_probes`` for the bands of image rows ``bands[t] .. bands[t + 1] - 1``, one thread each: band t
    stores its runs from ``bands[t] * (W + 1)`` on, lists its probes from ``probe_keys[bands[t] * W]`` on (likewise
    ``probe_row``) and writes (probes, pixels beyond the key range) into ``counts[t]``."""
    width = depth.shape[1]
    for t in numba.prange(len(bands) - 1):
        start = bands[t] * width
        n_probes, n_outside = _pixel_probes(
            depth, exclude, confidence, has_confidence, rays_x, rays_y, rotation, translation, voxel, max_depth,
            limit, offset, bits, bands[t], bands[t + 1], bands[t] * (width + 1), run_first, run_probe, row_run,
            row_runs, probe_keys[start:], probe_row[start:],
        )
        counts[t, 0] = n_probes
        counts[t, 1] = n_outside


@numba.njit(cache=True, nogil=True)
def _start_sums(
    probe_seen, probe_row, n_probes, n_unique, has_confidence, out_sums, out_weights, out_conf_sums, first_row
):
    """Stage 3 of a fused frame (after ``_assign`` of the probes): zero the first ``n_unique`` entries of the
    per-voxel sums, and set each voxel's ``first_row``: the image row of its first pixel (that of its first
    probe)."""
    for i in range(n_unique):
        out_sums[i, 0] = 0.0
        out_sums[i, 1] = 0.0
        out_sums[i, 2] = 0.0
        out_weights[i] = 0.0
        if has_confidence:
            out_conf_sums[i] = 0.0
        first_row[i] = -1
    for p in range(n_probes):
        seen = probe_seen[p]
        if first_row[seen] < 0:
            first_row[seen] = probe_row[p]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _fold_runs(
    v, runs, band_probe, world, rgb, confidence, has_confidence, run_first, run_probe, probe_seen, probe_keys, offset,
    bits, voxel, out_rows, out_sums, out_weights, out_conf_sums, surface, surface_weight, max_weight,
):
    """Fold the runs ``runs`` (indices into ``run_first`` / ``run_probe``, ``_pixel_probes``' runs of entering
    pixels) of image row ``v`` (world points ``world``, that row's ``_row_points``), in order, each into its voxel:
    its place in the outputs ``probe_seen[band_probe + probe]`` (``band_probe`` the first probe of row v's band), its
    key ``probe_keys`` at the same place, its map row ``out_rows`` there. Returns the pixels folded.

    A run's colour sums and surface point (``surface_points.fold``, each point in metres from the voxel's centre)
    are loaded before the run and stored after it, and a loop that does nothing else folds the run in registers;
    every step rounds to float32, so each sum sees the same float32 additions in the same order as one store per
    pixel would. The surface point of the voxel a few runs on is loaded ahead (a row far off in the map). One call
    folds a row's runs: the same fold as an inlined function called per run compiled a fifth slower."""
    surface_values = surface.reshape(surface.size)  # one item per value, for prefetch_item
    mask = (np.int64(1) << bits) - 1
    n_points = 0
    for i in range(len(runs)):
        if i + _RUNS_AHEAD < len(runs):
            ahead_row = out_rows[probe_seen[band_probe + run_probe[runs[i + _RUNS_AHEAD]]]]
            prefetch_item(surface_values, 3 * ahead_row)
            prefetch_item(surface_weight, ahead_row)
        r = runs[i]
        place = band_probe + run_probe[r]
        seen = probe_seen[place]
        row = out_rows[seen]
        key = probe_keys[place]
        center_x = (np.float64(((key >> (2 * bits)) & mask) - offset) + 0.5) * voxel  # the key's indices, exact
        center_y = (np.float64(((key >> bits) & mask) - offset) + 0.5) * voxel
        center_z = (np.float64((key & mask) - offset) + 0.5) * voxel
        sum_r, sum_g, sum_b, weight = out_sums[seen, 0], out_sums[seen, 1], out_sums[seen, 2], out_weights[seen]
        conf_sum = out_conf_sums[seen]
        mean_x, mean_y, mean_z, mean_weight = surface[row, 0], surface[row, 1], surface[row, 2], surface_weight[row]
        first, stop = run_first[r], run_first[r + 1]
        for u in range(np.uint64(first), np.uint64(stop)):  # unsigned: no wraparound checks on the indices
            c = np.float32(1.0)
            if has_confidence:  # the branch always goes one way for a frame; without confidence c is 1
                c = confidence[v, u]
                sum_r = np.float32(sum_r + c * rgb[v, u, 0])
                sum_g = np.float32(sum_g + c * rgb[v, u, 1])
                sum_b = np.float32(sum_b + c * rgb[v, u, 2])
                conf_sum = np.float32(conf_sum + c * c)
            else:
                sum_r = np.float32(sum_r + rgb[v, u, 0])
                sum_g = np.float32(sum_g + rgb[v, u, 1])
                sum_b = np.float32(sum_b + rgb[v, u, 2])
            weight = np.float32(weight + c)
            mean_x, mean_y, mean_z, mean_weight = surface_points.fold(
                mean_x, mean_y, mean_z, mean_weight, np.float32(world[0, u] - center_x),
                np.float32(world[1, u] - center_y), np.float32(world[2, u] - center_z), c, max_weight,
            )
        n_points += stop - first
        out_sums[seen, 0] = sum_r
        out_sums[seen, 1] = sum_g
        out_sums[seen, 2] = sum_b
        out_weights[seen] = weight
        if has_confidence:
            out_conf_sums[seen] = conf_sum
        surface[row, 0] = mean_x
        surface[row, 1] = mean_y
        surface[row, 2] = mean_z
        surface_weight[row] = mean_weight
    return n_points


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _accumulate_rows(
    row_start, row_stop, depth, rgb, confidence, has_confidence, rays_x, rays_y, rotation, translation, voxel,
    run_first, run_probe, row_run, row_runs, row_probes, probe_seen, probe_keys, offset, bits, first_row, out_rows,
    out_sums, out_weights, out_conf_sums, surface, surface_weight, max_weight, deferred_runs, deferred_rows,
):
    """Stage 4 of a fused frame, for image rows ``row_start .. row_stop - 1``: each run of entering pixels
    (``_pixel_probes``), in row-major order, is folded into its voxel (``_fold_runs``), but for the voxels first seen
    above ``row_start`` (``first_row``): those runs go to ``deferred_runs`` (their image rows to ``deferred_rows``),
    to be folded after the rows above (``_accumulate_deferred``). So bands of rows touch disjoint voxels and may run
    at once, and every voxel still sees its pixels in row-major order. Returns (pixels fused, runs deferred)."""
    width = depth.shape[1]
    world = np.empty((3, width), dtype=np.float64)
    mine = np.empty(width, dtype=np.int64)
    n_points = 0
    n_deferred = 0
    for v in range(row_start, row_stop):
        _row_points(depth, v, rays_x, rays_y, rotation, translation, voxel, False, world)
        band_probe = row_probes[v]
        n_mine = 0
        for r in range(row_run[v], row_run[v] + row_runs[v]):
            probe = run_probe[r]
            if probe < 0:
                continue
            if first_row[probe_seen[band_probe + probe]] < row_start:
                deferred_runs[n_deferred] = r
                deferred_rows[n_deferred] = v
                n_deferred += 1
            else:
                mine[n_mine] = r
                n_mine += 1
        n_points += _fold_runs(
            v, mine[:n_mine], band_probe, world, rgb, confidence, has_confidence, run_first, run_probe, probe_seen,
            probe_keys, offset, bits, voxel, out_rows, out_sums, out_weights, out_conf_sums, surface, surface_weight,
            max_weight,
        )
    return n_points, n_deferred


@numba.njit(cache=True, nogil=True, parallel=True)
def _accumulate_threads(
    bands, depth, rgb, confidence, has_confidence, rays_x, rays_y, rotation, translation, voxel, run_first,
    run_probe, row_run, row_runs, row_probes, probe_seen, probe_keys, offset, bits, first_row, out_rows, out_sums,
    out_weights, out_conf_sums, surface, surface_weight, max_weight, deferred_runs, deferred_rows, n_done,
):
    """``_accumulate_rows`` for the bands of image rows ``bands[t] .. bands[t + 1] - 1``, one thread each: band t
    defers into ``deferred_runs[t]`` / ``deferred_rows[t]`` and writes (pixels fused, runs deferred) into
    ``n_done[t]``."""
    for t in numba.prange(len(bands) - 1):
        n_points, n_deferred = _accumulate_rows(
            bands[t], bands[t + 1], depth, rgb, confidence, has_confidence, rays_x, rays_y, rotation, translation,
            voxel, run_first, run_probe, row_run, row_runs, row_probes, probe_seen, probe_keys, offset, bits,
            first_row, out_rows, out_sums, out_weights, out_conf_sums, surface, surface_weight, max_weight,
            deferred_runs[t], deferred_rows[t],
        )
        n_done[t, 0] = n_points
        n_done[t, 1] = n_deferred


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _accumulate_deferred(
    runs, rows, depth, rgb, confidence, has_confidence, rays_x, rays_y, rotation, translation, voxel, run_first,
    run_probe, row_run, row_runs, row_probes, probe_seen, probe_keys, offset, bits, out_rows, out_sums, out_weights,
    out_conf_sums, surface, surface_weight, max_weight,
):
    """Stage 5 of a fused frame: fold the deferred runs (``runs``, in row-major order; ``rows``, their image rows)
    like ``_accumulate_rows``, a row's runs in one ``_fold_runs``. Returns the pixels fused."""
    world = np.empty((3, depth.shape[1]), dtype=np.float64)
    n_points = 0
    first = 0
    while first < len(runs):
        v = rows[first]
        stop = first + 1
        while stop < len(runs) and rows[stop] == v:
            stop += 1
        _row_points(depth, v, rays_x, rays_y, rotation, translation, voxel, False, world)
        n_points += _fold_runs(
            v, runs[first:stop], row_probes[v], world, rgb, confidence, has_confidence, run_first, run_probe,
            probe_seen, probe_keys, offset, bits, voxel, out_rows, out_sums, out_weights, out_conf_sums, surface,
            surface_weight, max_weight,
        )
        first = stop
    return n_points


def fold_into_columns(
    keys, colors, weights, confidences, sources, first, last, rows, sums, gains, confidence_sums, new_keys, count,
    source, inserted, frame_id, max_weight, threads=1,
):
    """Weighted running-mean update of the touched rows' colour and confidence (CPU twin of ``VoxelMap._apply``):
    ``sums``, ``gains`` and ``confidence_sums`` are an ``Accumulation``'s ``color_sums``, ``weights`` and
    ``confidence_sums``. An insert (``inserted``) makes its voxels ``source`` with confidence 1. Returns the keys of
    the existing voxels that were touched, in ``rows``' order (read in the same pass as their columns: the rows lie
    anywhere in the map). ``threads`` > 1 splits ``rows`` into that many bands, a thread each: the rows are distinct,
    so each row's update reads and writes that row alone and the columns come out the same bit for bit."""
    keys[count : count + len(new_keys)] = new_keys
    row_keys = np.empty(len(rows), dtype=np.int64)
    args = (keys, colors, weights, confidences, sources, first, last, rows, sums, gains, confidence_sums, count, source,
            inserted, frame_id, max_weight, row_keys)
    if threads > 1:
        _fold_bands(even_bands(len(rows), threads), *args)
    else:
        _fold_rows(0, len(rows), *args)
    return row_keys[rows < count]


@numba.njit(cache=True, nogil=True)
def _fold_rows(
    start, stop, keys, colors, weights, confidences, sources, first, last, rows, sums, gains, confidence_sums, count,
    source, inserted, frame_id, max_weight, row_keys,
):
    """``fold_into_columns`` for ``rows[start:stop]``, each row's key into ``row_keys[i]``, and each row's columns
    loaded ``PREFETCH_AHEAD`` rows ahead (the rows lie anywhere in the map)."""
    color_values = colors.reshape(colors.size)  # one item per value, for prefetch_item
    for i in range(start, stop):
        if i + PREFETCH_AHEAD < stop:
            ahead = rows[i + PREFETCH_AHEAD]
            prefetch_item(keys, ahead)
            prefetch_item(color_values, 3 * ahead)
            prefetch_item(weights, ahead)
            prefetch_item(confidences, ahead)
            prefetch_item(sources, ahead)
            prefetch_item(first, ahead)
            prefetch_item(last, ahead)
        row = rows[i]
        if row >= count:
            sources[row] = source
            first[row] = frame_id
            weights[row] = 0.0
            confidences[row] = 0.0
            colors[row, 0] = 0.0
            colors[row, 1] = 0.0
            colors[row, 2] = 0.0
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
        row_keys[i] = keys[row]


@numba.njit(cache=True, nogil=True, parallel=True)
def _fold_bands(
    bands, keys, colors, weights, confidences, sources, first, last, rows, sums, gains, confidence_sums, count, source,
    inserted, frame_id, max_weight, row_keys,
):
    """``_fold_rows`` for the bands ``rows[bands[t]:bands[t + 1]]``, one thread each."""
    for t in numba.prange(len(bands) - 1):
        _fold_rows(bands[t], bands[t + 1], keys, colors, weights, confidences, sources, first, last, rows, sums, gains,
                   confidence_sums, count, source, inserted, frame_id, max_weight, row_keys)


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
        threads: int = 1,
    ) -> Accumulation:
        """Fused CPU path of ``VoxelMap.integrate``: every valid, non-excluded pixel of one RGB-D frame (depth
        float32 (H, W) metres, ``rgb`` uint8 (H, W, 3), pinhole ``intrinsics`` ``(fx, fy, cx, cy)``, camera-to-world
        ``rotation`` (3, 3) and ``translation`` (3,) metres) whose point lies within the key range (the others are
        counted in ``points_out_of_range``), weighted by ``confidence`` (float32 (H, W) in [0, 1]; confidence-0
        pixels are left out; ``None`` weighs every pixel 1). Returns the per-voxel colour sums (c * RGB, c, c * c per
        distinct voxel, in first-seen pixel order) for ``fold_into_columns``, and folds each point into the map's
        ``surface`` / ``surface_weight`` columns (numpy views, room for ``next_row + depth.size`` rows) on the way,
        each voxel's points in row-major pixel order, the running mean capped at ``max_weight``.

        In stages, so that the hash table's cache misses overlap instead of stalling the per-pixel work: keys per
        pixel, cut into runs of one voxel's pixels, and the runs' probes (``_pixel_probes``), the probes in one
        prefetching batch (``_assign``), the sums run by run in pixel order (``_accumulate_rows``) and the runs
        deferred there (``_accumulate_deferred``). ``threads`` > 1 runs
        the first and the third on that many threads, each a band of image rows; the result is the same bit for
        bit."""
        if next_row != self._count:
            raise ValueError(f"HashIndex rows must stay dense: next_row {next_row} != count {self._count}")
        if threads < 1:
            raise ValueError(f"fuse_frame needs threads >= 1, got {threads}")
        pixels = depth.size
        height, width = depth.shape
        threads = min(threads, height)
        self._reserve(pixels)
        has_confidence = confidence is not None
        confidence = confidence if has_confidence else _NO_CONFIDENCE
        fx, fy, cx, cy = intrinsics
        rays_x = (np.arange(width, dtype=np.float64) - cx) / fx
        rays_y = (np.arange(height, dtype=np.float64) - cy) / fy
        # Uncleared: the kernels write only the first entries (one per probe, voxel, new key or row's runs).
        run_first = thread_scratch("run_first", (height * (width + 1),), np.int64)
        run_probe = thread_scratch("run_probe", (height * (width + 1),), np.int32)
        row_run = np.empty(height, dtype=np.int64)
        row_runs = np.empty(height, dtype=np.int64)
        runs = (run_first, run_probe, row_run, row_runs)
        probe_keys = np.empty(pixels, dtype=np.int64)
        probe_row = np.empty(pixels, dtype=np.int64)
        frame_args = (depth, exclude, confidence, has_confidence, rays_x, rays_y, rotation, translation, voxel_size_m)
        key_args = (max_depth_m, voxel_keys.AXIS_LIMIT, voxel_keys.AXIS_OFFSET, voxel_keys.AXIS_BITS)
        bands = even_bands(height, threads)  # image rows: band t is bands[t] .. bands[t + 1] - 1
        if threads > 1:
            counts = np.empty((threads, 2), dtype=np.int64)
            _pixel_probes_threads(bands, *frame_args, *key_args, *runs, probe_keys, probe_row, counts)
            starts = bands[:-1] * width
            probe_keys = np.concatenate([probe_keys[a : a + n] for a, n in zip(starts, counts[:, 0])])
            probe_row = np.concatenate([probe_row[a : a + n] for a, n in zip(starts, counts[:, 0])])
            n_probes, n_outside = len(probe_keys), int(counts[:, 1].sum())
            band_probes = np.concatenate([[0], np.cumsum(counts[:-1, 0])])
            row_probes = np.repeat(band_probes, np.diff(bands))  # each row's band's first probe
        else:
            n_probes, n_outside = _pixel_probes(*frame_args, *key_args, 0, height, 0, *runs, probe_keys, probe_row)
            row_probes = np.zeros(height, dtype=np.int64)
        rows = np.empty(pixels, dtype=np.int64)
        probe_seen = np.empty(n_probes, dtype=np.int64)
        new_keys = np.empty(pixels, dtype=np.int64)
        found = threads > 1
        if found:  # the lookups of keys already in the table need no order: on the threads; the inserts follow in order
            _find_rows_threads(even_bands(n_probes, threads), self._table_keys, self._table_rows, self._shift,
                               probe_keys[:n_probes], probe_seen)
        n_unique, n_new = _assign(self._table_keys, self._table_rows, self._shift, probe_keys[:n_probes], next_row,
                                  self._row_seen, rows, probe_seen, new_keys, found)
        self._count += n_new
        surface_weight[next_row : next_row + n_new] = 0.0  # a new voxel's row may hold a removed voxel's values
        sums = np.empty((n_unique, 3), dtype=np.float32)
        weights = np.empty(n_unique, dtype=np.float32)
        confidence_sums = np.empty(n_unique, dtype=np.float32) if has_confidence else weights  # c * c = c at c = 1
        first_row = np.empty(n_unique, dtype=np.int64)
        _start_sums(probe_seen, probe_row, n_probes, n_unique, has_confidence, sums, weights, confidence_sums,
                    first_row)
        run_args = (depth, rgb, confidence, has_confidence, rays_x, rays_y, rotation, translation, voxel_size_m, *runs,
                    row_probes, probe_seen, probe_keys, voxel_keys.AXIS_OFFSET, voxel_keys.AXIS_BITS)
        sum_args = (rows, sums, weights, confidence_sums, surface, surface_weight, np.float32(max_weight))
        if threads > 1:
            deferred_runs = np.empty((threads, height * width), dtype=np.int64)
            deferred_rows = np.empty((threads, height * width), dtype=np.int64)
            done = np.empty((threads, 2), dtype=np.int64)
            _accumulate_threads(bands, *run_args, first_row, *sum_args, deferred_runs, deferred_rows, done)
            later = [np.concatenate([deferred[t, : done[t, 1]] for t in range(threads)])
                     for deferred in (deferred_runs, deferred_rows)]
            n_points = int(done[:, 0].sum()) + _accumulate_deferred(*later, *run_args, *sum_args)
        else:
            nothing = np.empty(0, dtype=np.int64)
            n_points, _ = _accumulate_rows(0, height, *run_args, first_row, *sum_args, nothing, nothing)
        return Accumulation(
            rows=torch.from_numpy(rows[:n_unique]), color_sums=torch.from_numpy(sums), weights=torch.from_numpy(weights),
            confidence_sums=torch.from_numpy(confidence_sums), new_keys=torch.from_numpy(new_keys[:n_new].copy()),
            points=int(n_points), points_out_of_range=int(n_outside),
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
