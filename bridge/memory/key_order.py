"""Voxel columns put in ascending order of their packed keys (``proto.voxel_keys``), by a radix sort in numba.

The point-cloud stream sends each kind of voxel in key order, so that a receiver keeps its copy sorted without
sorting it. A map's rows are in the order its voxels were first fused, far from key order. On a 2-core VM, numpy's
argsort of 2 million such keys takes about 190 ms, and gathering the columns by it (every row a cache miss) as much
again; read once (``pack_voxels``, 5-6 ms on two threads), keys, colours, sources and confidences sort in 12-17 ms
(23-30 on one thread).

How: ``pack_voxels`` reads the columns once, into the keys and one int64 per voxel holding its other columns
(confidence bits, source, RGB: the payload), noting the bounds of the keys' axis fields and whether they ascend; a
map's float colours are rounded there, so a snapshot is read straight from the map. Each key's three axis fields,
less their minima, are packed tight into one compact integer ``c`` (which keeps the keys' order; at most 63 bits),
and ``c`` moves together with the payload in a radix sort with no random reads: one counting-sort pass through
memory by ``c``'s top 8 bits puts the voxels into 256 buckets, then each bucket, small enough to stay in cache, is
sorted by the lower bits in counting-sort passes of 10 bits, least significant first. The read, the first pass and
the buckets split over the cores no other engine work holds (``bridge.cores``), each part a band of rows or buckets
with the same result on any number of threads. The keys come back from ``c`` at the end. Keys already made of a
few long ascending runs are merged instead (``MERGE_BELOW_BITS``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from worldweave.bridge.cores import MAX_SPLIT_THREADS, even_bands, split_call, threads_for
from worldweave.proto.voxel_keys import AXIS_BITS, AXIS_MASK

DIGIT_BITS = 8
"""Bits of the first, bucketing pass through memory (256 buckets: fewer write streams beat bigger buckets here)."""
_RADIX = 1 << DIGIT_BITS
LOW_DIGIT_BITS = 10
"""Bits per counting-sort pass inside a bucket (in cache: 10 bits, so fewer passes, beat 8 there)."""
_LOW_RADIX = 1 << LOW_DIGIT_BITS


MERGE_BELOW_BITS = 2.0
"""Keys made of few long ascending runs (the entropy of their run lengths below this many bits a key, as when sorted
batches were inserted one after another) are sorted by numpy's stable argsort, a merge of the runs, and gathered:
for 2 million keys in three long runs after 3,000 short ones that takes about 12 ms, against 20 ms for the radix
sort, whose cost does not depend on the order. A merge costs about 10 ms a bit of entropy there."""


def sorted_keys(keys: np.ndarray) -> np.ndarray:
    """``keys`` (int64 (N,) packed voxel keys) in ascending order: a new array, or ``keys`` itself when they already
    are strictly ascending."""
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    lo, hi, descents = _key_runs(keys)
    if descents == 0:
        return keys
    if _merges_fast(keys, descents):
        return keys[np.argsort(keys, kind="stable")]
    return _radix_sort(keys, np.empty(0, np.int64), lo, hi)[0]


def sorted_columns(
    keys: np.ndarray, colors: np.ndarray, sources: np.ndarray, confidence: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Voxel columns (``keys`` int64 (N,) packed voxel keys, unique; ``colors`` uint8 (N, 3); ``sources`` uint8 (N,);
    ``confidence`` float32 (N,)) in ascending key order, as new arrays; None when the keys already are strictly
    ascending."""
    packed = pack_voxels(keys, colors, sources, confidence)
    return None if packed.descents == 0 else packed.in_key_order()


@dataclass(frozen=True)
class PackedVoxels:
    """Voxel columns packed for a sort by key (``pack_voxels``): ``keys`` int64 (N,) packed voxel keys, unique, in
    the order read; ``payload`` int64 (N,) each voxel's other columns in one number (confidence's float32 bits << 32
    | source << 24 | R << 16 | G << 8 | B); ``lo`` and ``hi`` int64 (3,) the minima and maxima of the keys' (i, j, k)
    fields; ``descents``: how many keys are not above the key before them (0: strictly ascending)."""

    keys: np.ndarray
    payload: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    descents: int

    def __len__(self) -> int:
        return len(self.keys)

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The columns in the order read: keys int64 (N,), colours uint8 (N, 3), sources uint8 (N,), confidence
        float32 (N,)."""
        return (self.keys, *_unpack_payload(self.payload))

    def in_key_order(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The columns (as ``columns``) in ascending key order: a radix sort, a merge of a few long ascending runs
        (``MERGE_BELOW_BITS``), or none when the keys already ascend."""
        if self.descents == 0:
            return self.columns()
        if _merges_fast(self.keys, self.descents):
            keys, payload = _gathered(np.argsort(self.keys, kind="stable"), self.keys, self.payload)
        else:
            keys, payload = _radix_sort(self.keys, self.payload, self.lo, self.hi)
        return (keys, *_unpack_payload(payload))


def pack_voxels(
    keys: np.ndarray, colors: np.ndarray, sources: np.ndarray, confidence: np.ndarray, min_confidence: float = 0.0
) -> PackedVoxels:
    """The columns (``keys`` int64 (N,) packed voxel keys, unique; ``colors`` (N, 3) uint8, or float RGB as a map
    holds them, rounded half to even and clamped to [0, 255] as ``VoxelMap.voxels`` does; ``sources`` uint8 (N,);
    ``confidence`` float32 (N,)) read once into new arrays (``PackedVoxels``), in bands of rows over the cores no other
    engine work holds. ``min_confidence`` above 0: only the voxels whose confidence is at least that level (compared
    in float32, as a stream filters), in their order."""
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    colors = np.ascontiguousarray(colors)
    sources = np.ascontiguousarray(sources, dtype=np.uint8)
    confidence = np.ascontiguousarray(confidence, dtype=np.float32)
    keep_all, threshold = min_confidence <= 0, np.float32(min_confidence)
    with threads_for(None, MAX_SPLIT_THREADS) as threads:
        bands = even_bands(len(keys), max(1, min(threads, len(keys))))
        kept = np.diff(bands) if keep_all else np.array(
            [np.count_nonzero(confidence[start:stop] >= threshold) for start, stop in zip(bands[:-1], bands[1:])])
        starts = np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)  # each band's first row out
        out_keys, payload = np.empty(starts[-1], np.int64), np.empty(starts[-1], np.int64)
        stats = np.empty((len(bands) - 1, _STATS), np.int64)
        args = (keys, colors, sources, confidence, keep_all, threshold, out_keys, payload)
        if len(stats) == 1:  # one thread: no parallel region
            _pack_rows(0, len(keys), 0, *args, stats[0])
        else:
            _pack_bands(bands, starts, *args, stats)
    joins = np.unique(starts[1:-1])
    joins = joins[(joins > 0) & (joins < len(out_keys))]  # where two bands' kept rows meet
    descents = int(stats[:, 6].sum() + np.count_nonzero(out_keys[joins] <= out_keys[joins - 1]))
    return PackedVoxels(out_keys, payload, stats[:, :3].min(axis=0), stats[:, 3:6].max(axis=0), descents)


_STATS = 7
"""Per band of ``_pack_rows``: its kept keys' (i, j, k) field minima, maxima, and descents."""


@numba.njit(nogil=True, cache=True)
def _pack_rows(start, stop, at, keys, colors, sources, confidence, keep_all, threshold, out_keys, payload, stats):
    """Rows ``start .. stop - 1`` of ``pack_voxels``, those at or above ``threshold`` unless ``keep_all``: their
    keys and payloads into ``out_keys`` and ``payload`` from row ``at`` on, and into ``stats`` (``_STATS``,) their
    fields' bounds and their descents (within the band)."""
    confidence_bits = confidence.view(np.uint32)
    lo_i = lo_j = lo_k = AXIS_MASK
    hi_i = hi_j = hi_k = 0
    descents = 0
    previous = -1  # below every key (keys are not negative)
    for r in range(start, stop):
        if not (keep_all or confidence[r] >= threshold):
            continue
        key = keys[r]
        out_keys[at] = key
        descents += key <= previous
        previous = key
        field_i, field_j, field_k = ((key >> (2 * AXIS_BITS)) & AXIS_MASK, (key >> AXIS_BITS) & AXIS_MASK,
                                     key & AXIS_MASK)
        lo_i, lo_j, lo_k = min(lo_i, field_i), min(lo_j, field_j), min(lo_k, field_k)
        hi_i, hi_j, hi_k = max(hi_i, field_i), max(hi_j, field_j), max(hi_k, field_k)
        payload[at] = ((np.int64(confidence_bits[r]) << 32) | (np.int64(sources[r]) << 24)
                       | (_byte(colors[r, 0]) << 16) | (_byte(colors[r, 1]) << 8) | _byte(colors[r, 2]))
        at += 1
    stats[0], stats[1], stats[2], stats[3], stats[4], stats[5] = lo_i, lo_j, lo_k, hi_i, hi_j, hi_k
    stats[6] = descents


@numba.njit(nogil=True, cache=True, inline="always")
def _byte(value):
    """A colour channel as an int64 in [0, 255]: rounded half to even and clamped (as torch's ``round().clamp(0,
    255)``); uint8 values pass unchanged."""
    return np.int64(min(max(np.rint(value), 0.0), 255.0))


@numba.njit(nogil=True, cache=True, parallel=True)
def _pack_bands(bands, starts, keys, colors, sources, confidence, keep_all, threshold, out_keys, payload, stats):
    """``_pack_rows`` of each band ``bands[t] .. bands[t + 1] - 1`` from row ``starts[t]`` on, into ``stats[t]``, a
    thread a band."""
    for t in numba.prange(len(bands) - 1):
        _pack_rows(bands[t], bands[t + 1], starts[t], keys, colors, sources, confidence, keep_all, threshold, out_keys,
                   payload, stats[t])


@numba.njit(nogil=True, cache=True)
def _key_runs(keys):
    """(3,) minima and (3,) maxima of the keys' (i, j, k) fields, and how many times a key is not above the one
    before it (0: the keys are strictly ascending)."""
    lo = np.full(3, AXIS_MASK, np.int64)
    hi = np.zeros(3, np.int64)
    descents = 0
    for r in range(len(keys)):
        key = keys[r]
        if r and key <= keys[r - 1]:
            descents += 1
        for a in range(3):
            field = (key >> (AXIS_BITS * (2 - a))) & AXIS_MASK
            lo[a] = min(lo[a], field)
            hi[a] = max(hi[a], field)
    return lo, hi, descents


def _merges_fast(keys: np.ndarray, descents: int) -> bool:
    """Whether the keys' ascending runs are few and long enough for a merge (``MERGE_BELOW_BITS``); their entropy
    (a logarithm a run) is only worked out for keys with few descents."""
    return descents * 32 <= len(keys) and _run_bits(keys) < MERGE_BELOW_BITS


@numba.njit(nogil=True, cache=True)
def _run_bits(keys):
    """The entropy of the lengths of the keys' strictly ascending runs, bits a key: ``sum(length * log2(N / length))
    / N``, 0 for keys in order, about log2(N / 2) for keys in random order."""
    n = len(keys)
    bits = 0.0
    run_start = 0
    for r in range(1, n + 1):
        if r == n or keys[r] <= keys[r - 1]:
            bits += (r - run_start) * np.log2(n / (r - run_start))
            run_start = r
    return bits / max(n, 1)


@numba.njit(nogil=True, cache=True)
def _gathered(order, keys, payload):
    """The keys' and payloads' rows ``order``, new arrays."""
    n = len(order)
    out_keys = np.empty(n, np.int64)
    out_payload = np.empty(n, np.int64)
    for r in range(n):
        out_keys[r] = keys[order[r]]
        out_payload[r] = payload[order[r]]
    return out_keys, out_payload


@numba.njit(nogil=True, cache=True)
def _unpack_payload(payload):
    """A payload's (``PackedVoxels``) columns: colours uint8 (N, 3), sources uint8 (N,), confidence float32 (N,)."""
    n = len(payload)
    colors = np.empty((n, 3), np.uint8)
    sources = np.empty(n, np.uint8)
    confidence_bits = np.empty(n, np.uint32)
    for r in range(n):
        value = payload[r]
        colors[r, 0] = (value >> 16) & 0xFF
        colors[r, 1] = (value >> 8) & 0xFF
        colors[r, 2] = value & 0xFF
        sources[r] = (value >> 24) & 0xFF
        confidence_bits[r] = (value >> 32) & 0xFFFFFFFF
    return colors, sources, confidence_bits.view(np.float32)


def _radix_sort(keys: np.ndarray, payload: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The keys in ascending order (stable), and ``payload`` (int64 (N,), or (0,) for none) in the same order; the
    first pass splits into bands of rows and the buckets into bands of buckets over the cores no other engine work
    holds (``bridge.cores``)."""
    widths = [int(top - bottom).bit_length() for bottom, top in zip(lo, hi)]  # each field's bits less its minimum
    shift_i, shift_j = widths[1] + widths[2], widths[2]
    low_bits = max(0, sum(widths) - DIGIT_BITS)
    with threads_for(None, MAX_SPLIT_THREADS) as threads:
        bands = even_bands(len(keys), max(1, min(threads, len(keys))))
        compact, payload, starts = _into_buckets(bands, keys, payload, lo, shift_i, shift_j, low_bits)

    def balanced(count: int, parts: int) -> np.ndarray:  # bands of buckets holding about as many voxels each
        cuts = np.searchsorted(starts, np.arange(1, parts) * len(keys) // parts)
        return np.concatenate([[0], np.clip(cuts, 0, count), [count]]).astype(np.int64)

    split_call(_sort_buckets, _sort_bucket_bands, _RADIX, starts, compact, payload, low_bits, bands=balanced)
    return _keys_of(compact, lo, shift_i, shift_j), payload


@numba.njit(nogil=True, cache=True)
def _compact_rows(start, stop, keys, lo, shift_i, shift_j, low_bits, compact, counts):
    """Rows ``start .. stop - 1``: the keys' compact values (each field less its minimum, packed tight: ``i' <<
    shift_i | j' << shift_j | k'``) into ``compact``, and how many fall in each bucket of the top digit (``value >>
    low_bits``) into ``counts`` (``_RADIX``,)."""
    counts[:] = 0
    for r in range(start, stop):
        key = keys[r]
        value = ((((key >> (2 * AXIS_BITS)) & AXIS_MASK) - lo[0]) << shift_i
                 | (((key >> AXIS_BITS) & AXIS_MASK) - lo[1]) << shift_j | ((key & AXIS_MASK) - lo[2]))
        compact[r] = value
        counts[value >> low_bits] += 1


@numba.njit(nogil=True, cache=True)
def _bucket_starts(counts):
    """Per band t and bucket d, ``counts[t, d]`` (the band's voxels in the bucket) replaced by the row its first one
    moves to: bucket by bucket, band by band, so the pass is stable. Returns the buckets' first rows, (257,) int64."""
    starts = np.zeros(_RADIX + 1, np.int64)
    total = 0
    for d in range(_RADIX):
        starts[d] = total
        for t in range(counts.shape[0]):
            count = counts[t, d]
            counts[t, d] = total
            total += count
    starts[_RADIX] = total
    return starts


@numba.njit(nogil=True, cache=True)
def _scatter_rows(start, stop, compact, payload, low_bits, at, bucketed, bucketed_payload):
    """Rows ``start .. stop - 1`` moved to their buckets' next rows (``at``, per bucket), with their payloads when
    there are any."""
    moves = len(payload) == len(compact)
    for r in range(start, stop):
        value = compact[r]
        d = value >> low_bits
        bucketed[at[d]] = value
        if moves:
            bucketed_payload[at[d]] = payload[r]
        at[d] += 1


def _into_buckets(bands: np.ndarray, keys: np.ndarray, payload: np.ndarray, lo: np.ndarray, shift_i: int,
                  shift_j: int, low_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The keys' compact values (``_compact_rows``) and the payload moved into the buckets of the compact values' top
    digit in one counting-sort pass, stable, and the buckets' first rows, (257,) int64: the bands of rows ``bands[t]
    .. bands[t + 1] - 1`` a thread each, counted first, then each moved to its own place in each bucket."""
    n = len(keys)
    compact, counts = np.empty(n, np.int64), np.empty((len(bands) - 1, _RADIX), np.int64)
    bucketed, bucketed_payload = np.empty(n, np.int64), np.empty_like(payload)
    one_thread = len(counts) == 1  # then no parallel region
    if one_thread:
        _compact_rows(0, n, keys, lo, shift_i, shift_j, low_bits, compact, counts[0])
    else:
        _compact_bands(bands, keys, lo, shift_i, shift_j, low_bits, compact, counts)
    starts = _bucket_starts(counts)
    if one_thread:
        _scatter_rows(0, n, compact, payload, low_bits, counts[0], bucketed, bucketed_payload)
    else:
        _scatter_bands(bands, compact, payload, low_bits, counts, bucketed, bucketed_payload)
    return bucketed, bucketed_payload, starts


@numba.njit(nogil=True, cache=True, parallel=True)
def _compact_bands(bands, keys, lo, shift_i, shift_j, low_bits, compact, counts):
    """``_compact_rows`` of each band ``bands[t] .. bands[t + 1] - 1`` into ``counts[t]``, a thread a band."""
    for t in numba.prange(len(bands) - 1):
        _compact_rows(bands[t], bands[t + 1], keys, lo, shift_i, shift_j, low_bits, compact, counts[t])


@numba.njit(nogil=True, cache=True, parallel=True)
def _scatter_bands(bands, compact, payload, low_bits, counts, bucketed, bucketed_payload):
    """``_scatter_rows`` of each band ``bands[t] .. bands[t + 1] - 1`` from its places ``counts[t]``, a thread a
    band."""
    for t in numba.prange(len(bands) - 1):
        _scatter_rows(bands[t], bands[t + 1], compact, payload, low_bits, counts[t], bucketed, bucketed_payload)


@numba.njit(nogil=True, cache=True, parallel=True)
def _sort_bucket_bands(bands, starts, compact, payload, low_bits):
    """``_sort_buckets`` for the bands of buckets ``bands[t] .. bands[t + 1] - 1``, one thread each."""
    for t in numba.prange(len(bands) - 1):
        _sort_buckets(bands[t], bands[t + 1], starts, compact, payload, low_bits)


@numba.njit(nogil=True, cache=True)
def _sort_buckets(first_bucket, stop_bucket, starts, compact, payload, low_bits):
    """Sort buckets ``first_bucket .. stop_bucket - 1`` (rows ``starts[d] .. starts[d + 1] - 1``) in place by the
    compact values' bits below ``low_bits``, least significant first, with the payload."""
    moves = len(payload) == len(compact)
    largest = 0
    for d in range(first_bucket, stop_bucket):
        largest = max(largest, starts[d + 1] - starts[d])
    scratch = np.empty(largest, np.int64)
    scratch_payload = np.empty(largest if moves else 0, np.int64)
    counts = np.empty(_LOW_RADIX, np.int64)
    for d in range(first_bucket, stop_bucket):
        first, size = starts[d], starts[d + 1] - starts[d]
        if size < 2:
            continue
        in_scratch = False
        for shift in range(0, low_bits, LOW_DIGIT_BITS):
            if in_scratch:
                _bucket_pass(scratch, scratch_payload, 0, compact, payload, first, size, shift, moves, counts)
            else:
                _bucket_pass(compact, payload, first, scratch, scratch_payload, 0, size, shift, moves, counts)
            in_scratch = not in_scratch
        if in_scratch:  # an odd number of passes: the result is in scratch
            compact[first:first + size] = scratch[:size]
            if moves:
                payload[first:first + size] = scratch_payload[:size]


@numba.njit(nogil=True, cache=True)
def _bucket_pass(source_c, source_payload, source_first, target_c, target_payload, target_first, size, shift, moves,
                 counts):
    """One counting-sort pass over ``size`` rows from ``source_first`` into ``target_first`` by the digit at
    ``shift`` of the compact keys."""
    counts[:] = 0
    for r in range(source_first, source_first + size):
        counts[(source_c[r] >> shift) & (_LOW_RADIX - 1)] += 1
    total = target_first
    for digit in range(_LOW_RADIX):
        count = counts[digit]
        counts[digit] = total
        total += count
    for r in range(source_first, source_first + size):
        value = source_c[r]
        digit = (value >> shift) & (_LOW_RADIX - 1)
        target_c[counts[digit]] = value
        if moves:
            target_payload[counts[digit]] = source_payload[r]
        counts[digit] += 1


@numba.njit(nogil=True, cache=True)
def _keys_of(compact, lo, shift_i, shift_j):
    """The packed keys of compact values, in place (``compact`` itself, int64 (N,))."""
    mask_j, mask_k = (1 << (shift_i - shift_j)) - 1, (1 << shift_j) - 1
    for r in range(len(compact)):
        value = compact[r]
        compact[r] = (((value >> shift_i) + lo[0]) << (2 * AXIS_BITS)
                      | (((value >> shift_j) & mask_j) + lo[1]) << AXIS_BITS | ((value & mask_k) + lo[2]))
    return compact
