"""Voxel columns put in ascending order of their packed keys (``proto.voxel_keys``), by a radix sort in numba.

The point-cloud stream sends each kind of voxel in key order, so that a receiver keeps its copy sorted without
sorting it. A map's rows are in the order its voxels were first fused, far from key order. On a 2-core VM, numpy's
argsort of 2 million such keys takes about 190 ms, and gathering the columns by it (every row a cache miss) as much
again; ``sorted_columns`` sorts keys, colours, sources and confidences in about 20 ms (25 on one thread).

How: each key's three axis fields, less their minima over the keys, are packed tight into one compact integer ``c``
(which keeps the keys' order; at most 63 bits), and ``c`` moves together with the voxel's other columns packed into
one int64 (confidence bits, source, RGB), in a radix sort with no random reads: one counting-sort pass through
memory by ``c``'s top 8 bits puts the voxels into 256 buckets, then each bucket, small enough to stay in cache, is
sorted by the lower bits in counting-sort passes of 10 bits, least significant first (the buckets split over the
cores no other engine work holds, ``bridge.cores``). The keys come back from ``c`` at the end. Keys already made
of a few long ascending runs are merged instead (``MERGE_BELOW_BITS``).
"""

from __future__ import annotations

import numba
import numpy as np

from worldweave.bridge.cores import split_call
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
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    colors = np.ascontiguousarray(colors, dtype=np.uint8)
    sources = np.ascontiguousarray(sources, dtype=np.uint8)
    confidence_bits = np.ascontiguousarray(confidence, dtype=np.float32).view(np.uint32)
    lo, hi, descents = _key_runs(keys)
    if descents == 0:
        return None
    if _merges_fast(keys, descents):
        return _gathered(np.argsort(keys, kind="stable"), keys, colors, sources, confidence_bits)
    keys, payload = _radix_sort(keys, _pack_payload(colors, sources, confidence_bits), lo, hi)
    return (keys, *_unpack_payload(payload))


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
def _gathered(order, keys, colors, sources, confidence_bits):
    """The columns' rows ``order``: keys, colours, sources and confidence (float32), new arrays."""
    n = len(order)
    out_keys = np.empty(n, np.int64)
    out_colors = np.empty((n, 3), np.uint8)
    out_sources = np.empty(n, np.uint8)
    out_confidence = np.empty(n, np.uint32)
    for r in range(n):
        row = order[r]
        out_keys[r] = keys[row]
        out_colors[r, 0] = colors[row, 0]
        out_colors[r, 1] = colors[row, 1]
        out_colors[r, 2] = colors[row, 2]
        out_sources[r] = sources[row]
        out_confidence[r] = confidence_bits[row]
    return out_keys, out_colors, out_sources, out_confidence.view(np.float32)


@numba.njit(nogil=True, cache=True)
def _pack_payload(colors, sources, confidence_bits):
    """One int64 per voxel: confidence's float32 bits << 32 | source << 24 | R << 16 | G << 8 | B."""
    payload = np.empty(len(sources), np.int64)
    for r in range(len(sources)):
        payload[r] = ((np.int64(confidence_bits[r]) << 32) | (np.int64(sources[r]) << 24)
                      | (np.int64(colors[r, 0]) << 16) | (np.int64(colors[r, 1]) << 8) | np.int64(colors[r, 2]))
    return payload


@numba.njit(nogil=True, cache=True)
def _unpack_payload(payload):
    """``_pack_payload``'s inverse: colours uint8 (N, 3), sources uint8 (N,), confidence float32 (N,)."""
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
    buckets are sorted on the cores no other engine work holds (``cores.split_call``)."""
    widths = [int(top - bottom).bit_length() for bottom, top in zip(lo, hi)]  # each field's bits less its minimum
    shift_i, shift_j = widths[1] + widths[2], widths[2]
    low_bits = max(0, sum(widths) - DIGIT_BITS)
    compact, payload, starts = _into_buckets(keys, payload, lo, shift_i, shift_j, low_bits)

    def balanced(count: int, parts: int) -> np.ndarray:  # bands of buckets holding about as many voxels each
        cuts = np.searchsorted(starts, np.arange(1, parts) * len(keys) // parts)
        return np.concatenate([[0], np.clip(cuts, 0, count), [count]]).astype(np.int64)

    split_call(_sort_buckets, _sort_bucket_bands, _RADIX, starts, compact, payload, low_bits, bands=balanced)
    return _keys_of(compact, lo, shift_i, shift_j), payload


@numba.njit(nogil=True, cache=True)
def _into_buckets(keys, payload, lo, shift_i, shift_j, low_bits):
    """The keys' compact values (each field less its minimum, packed tight: ``i' << shift_i | j' << shift_j | k'``)
    and the payload, moved into the buckets of the compact values' top digit (``value >> low_bits``) in one
    counting-sort pass; and the buckets' first rows, (257,) int64."""
    n = len(keys)
    moves = len(payload) == n
    compact = np.empty(n, np.int64)
    starts = np.zeros(_RADIX + 1, np.int64)
    for r in range(n):
        key = keys[r]
        value = ((((key >> (2 * AXIS_BITS)) & AXIS_MASK) - lo[0]) << shift_i
                 | (((key >> AXIS_BITS) & AXIS_MASK) - lo[1]) << shift_j | ((key & AXIS_MASK) - lo[2]))
        compact[r] = value
        starts[(value >> low_bits) + 1] += 1
    for d in range(_RADIX):
        starts[d + 1] += starts[d]
    at = starts[:-1].copy()
    bucketed = np.empty(n, np.int64)
    bucketed_payload = np.empty_like(payload)
    for r in range(n):
        value = compact[r]
        d = value >> low_bits
        bucketed[at[d]] = value
        if moves:
            bucketed_payload[at[d]] = payload[r]
        at[d] += 1
    return bucketed, bucketed_payload, starts


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
