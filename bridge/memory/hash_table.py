"""Open-addressing hash table from non-negative int64 keys to integer values (numba, CPU), linear probing.

The voxel index (``voxel_index.HashIndex``: voxel key -> map row) and the query grid (``queries.grid.BlockGrid``:
chunk key -> chunk id) both keep one. A table is two arrays of one power-of-two length plus a shift:

* ``table_keys`` (C,) int64, ``EMPTY_KEY`` where a slot is free (so keys must be >= 0, as packed voxel keys are);
* ``table_values`` (C,) int32 or int64, the value of the key in the same slot;
* ``shift`` (uint64) ``64 - log2(C)``: a key's home slot is the top ``log2(C)`` bits of ``key * 2**64 / phi``
  (Fibonacci hashing), and probing walks on one slot at a time, wrapping around.

Keys are never removed, and the callers keep the load below 1 (``BlockGrid`` at 0.5, ``HashIndex`` at 0.75) and
grow the table with ``rehash``; a full table would make a probe for an absent key loop forever. Values are dense
ids ``0 .. n-1`` (rows, chunk ids), which ``rehash`` relies on.

The probe helpers are ``inline="always"``: they sit in the innermost loops of integration and of every query.
``prefetch`` asks the CPU to start loading a key's home slot ahead of its probe: in a batch of probes into a large
table (each one a cache miss) the loads then overlap instead of waiting one after another.
"""

from __future__ import annotations

import numba
import numpy as np

from worldweave.bridge.prefetch import PREFETCH_AHEAD, prefetch_item

EMPTY_KEY = -1
"""``table_keys`` entry of a free slot."""
_GOLDEN = np.uint64(11400714819323198485)
"""2**64 / golden ratio, odd: Fibonacci hashing's multiplier."""


def allocate(capacity: int, value_dtype: type | np.dtype) -> tuple[np.ndarray, np.ndarray, np.uint64]:
    """An empty table of ``capacity`` slots (a power of two): ``(table_keys, table_values, shift)``, values -1."""
    capacity = int(capacity)
    if capacity < 2 or capacity & (capacity - 1):
        raise ValueError(f"a hash table's capacity must be a power of two >= 2, got {capacity}")
    table_keys = np.full(capacity, EMPTY_KEY, dtype=np.int64)
    table_values = np.full(capacity, -1, dtype=value_dtype)
    return table_keys, table_values, np.uint64(64 - (capacity.bit_length() - 1))


@numba.njit(cache=True, nogil=True, inline="always")
def home_slot(key, shift):
    """Slot where the probe for ``key`` starts."""
    return np.int64((np.uint64(key) * _GOLDEN) >> shift)


@numba.njit(cache=True, nogil=True, inline="always")
def prefetch(table_keys, table_values, shift, key):
    """Start loading the home slot of ``key`` (its key and value) into cache; a later ``find`` or
    ``find_or_insert`` of it then waits less. Changes nothing."""
    slot = home_slot(key, shift)
    prefetch_item(table_keys, slot)
    prefetch_item(table_values, slot)


@numba.njit(cache=True, nogil=True, inline="always")
def find(table_keys, table_values, shift, key):
    """Value of ``key`` (as int64), or -1 when it is absent."""
    mask = len(table_keys) - 1
    slot = home_slot(key, shift)
    while True:
        found = table_keys[slot]
        if found == key:
            return np.int64(table_values[slot])
        if found == EMPTY_KEY:
            return np.int64(-1)
        slot = (slot + 1) & mask


@numba.njit(cache=True, nogil=True, inline="always")
def find_or_insert(table_keys, table_values, shift, key, value):
    """``(value of key, False)`` when ``key`` is present; otherwise insert it with ``value`` and return
    ``(value, True)``. Capacity is the caller's job."""
    mask = len(table_keys) - 1
    slot = home_slot(key, shift)
    while True:
        found = table_keys[slot]
        if found == key:
            return np.int64(table_values[slot]), False
        if found == EMPTY_KEY:
            table_keys[slot] = key
            table_values[slot] = value
            return np.int64(value), True
        slot = (slot + 1) & mask


@numba.njit(cache=True, nogil=True)
def find_range(table_keys, table_values, shift, keys, start, stop, out):
    """``out[i]``: the value of ``keys[i]`` (int64, -1 where absent) for i in ``start .. stop - 1``, each key's home
    slot loaded ``PREFETCH_AHEAD`` keys ahead (``prefetch``)."""
    # ``find``'s probe, spelled out: inlined into a loop it costs two reference counts per key (its array
    # arguments), which is 1.5-2x slower on a large table.
    mask = len(table_keys) - 1
    for i in range(start, stop):
        if i + PREFETCH_AHEAD < stop:
            prefetch(table_keys, table_values, shift, keys[i + PREFETCH_AHEAD])
        key = keys[i]
        slot = home_slot(key, shift)
        value = np.int64(-1)
        while True:
            found = table_keys[slot]
            if found == key:
                value = np.int64(table_values[slot])
                break
            if found == EMPTY_KEY:
                break
            slot = (slot + 1) & mask
        out[i] = value


@numba.njit(cache=True, nogil=True)
def find_all(table_keys, table_values, shift, keys):
    """(N,) int64 values of ``keys``, -1 where a key is absent."""
    out = np.empty(len(keys), dtype=np.int64)
    find_range(table_keys, table_values, shift, keys, 0, len(keys), out)
    return out


@numba.njit(cache=True, nogil=True)
def insert_all(table_keys, table_values, shift, keys_by_value):
    """Insert ``keys_by_value[v]`` with value ``v`` for every ``v``, in that order. The keys must be distinct and
    absent from the table; capacity is the caller's job."""
    mask = len(table_keys) - 1
    for value in range(len(keys_by_value)):
        key = keys_by_value[value]
        slot = home_slot(key, shift)
        while table_keys[slot] != EMPTY_KEY:
            slot = (slot + 1) & mask
        table_keys[slot] = key
        table_values[slot] = value


def rehash(
    table_keys: np.ndarray, table_values: np.ndarray, capacity: int
) -> tuple[np.ndarray, np.ndarray, np.uint64]:
    """The same entries in a new table of ``capacity`` slots (a power of two, above the entry count), inserted in
    value order (values must be dense ids ``0 .. n-1``): ``(table_keys, table_values, shift)``."""
    occupied = table_keys != EMPTY_KEY
    keys_by_value = np.empty(int(np.count_nonzero(occupied)), dtype=np.int64)
    keys_by_value[table_values[occupied]] = table_keys[occupied]
    new_keys, new_values, shift = allocate(capacity, table_values.dtype)
    insert_all(new_keys, new_values, shift, keys_by_value)
    return new_keys, new_values, shift
