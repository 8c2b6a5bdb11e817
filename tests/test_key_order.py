"""``bridge.memory.key_order``: the radix sort of voxel columns by key equals numpy's argsort and gather, bit for bit,
for keys that span a few voxels up to the whole key range (2 to 7 counting-sort passes), sorted on one thread or
split, and for keys in a few long runs (merged)."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worldweave.bridge.cores import holding_every_core
from worldweave.bridge.memory.key_order import MERGE_BELOW_BITS, _run_bits, sorted_columns, sorted_keys
from worldweave.proto import voxel_keys


def shuffled_keys(rng: np.random.Generator, n: int, spans: tuple[int, int, int]) -> np.ndarray:
    """``n`` distinct keys (or fewer) in random order, axis fields within ``spans`` voxels of a random corner."""
    corner = rng.integers(-voxel_keys.AXIS_LIMIT, voxel_keys.AXIS_LIMIT - max(spans) + 2, size=3)
    indices = corner + rng.integers(0, spans, size=(n, 3))
    return rng.permutation(np.unique(voxel_keys.pack(indices)))


def columns(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    colors = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    sources = rng.integers(0, 256, size=n, dtype=np.uint8)
    confidence = rng.uniform(0, 1, size=n).astype(np.float32)
    extremes = np.float32([1.0, 0.0, 1e-38])[:n]  # extreme bit patterns too
    confidence[:len(extremes)] = extremes
    return colors, sources, confidence


FULL_SPAN = 2 * voxel_keys.AXIS_LIMIT + 1
"""Every index an axis of a key can hold."""


@pytest.mark.parametrize("one_thread", [False, True])
@pytest.mark.parametrize("spans", [(1, 1, 300), (3, 200, 1), (40, 40, 40), (1400, 1400, 40), (FULL_SPAN,) * 3])
def test_sorted_columns_equal_an_argsort_and_gather(spans, one_thread):
    rng = np.random.default_rng(sum(spans))
    keys = shuffled_keys(rng, 20_000, spans)
    colors, sources, confidence = columns(rng, len(keys))
    order = np.argsort(keys)
    with holding_every_core() if one_thread else nullcontext():  # the buckets on one thread, or split
        got = sorted_columns(keys, colors, sources, confidence)
    np.testing.assert_array_equal(got[0], keys[order])
    np.testing.assert_array_equal(got[1], colors[order])
    np.testing.assert_array_equal(got[2], sources[order])
    np.testing.assert_array_equal(got[3].view(np.uint32), confidence[order].view(np.uint32))
    np.testing.assert_array_equal(sorted_keys(keys), keys[order])
    assert got[0].dtype == np.int64 and got[1].shape == (len(keys), 3) and got[3].dtype == np.float32


@pytest.mark.parametrize("runs", [2, 3, 40])
def test_keys_in_a_few_ascending_runs_sort_the_same(runs):
    """Sorted batches one after another (and a shuffled head, as a seed's voxels before inserted ones): a merge."""
    rng = np.random.default_rng(runs)
    keys = shuffled_keys(rng, 30_000, (100, 100, 100))
    head = len(keys) // 100
    keys = np.concatenate([keys[:head], *(np.sort(batch) for batch in np.array_split(keys[head:], runs))])
    colors, sources, confidence = columns(rng, len(keys))
    bits = _run_bits(keys)
    assert (bits < MERGE_BELOW_BITS) == (runs < 40), bits
    order = np.argsort(keys)
    got = sorted_columns(keys, colors, sources, confidence)
    for column, expected in zip(got, (keys, colors, sources, confidence)):
        np.testing.assert_array_equal(column, expected[order])
    np.testing.assert_array_equal(sorted_keys(keys), keys[order])


def test_keys_already_in_order_are_not_copied():
    rng = np.random.default_rng(3)
    keys = np.sort(shuffled_keys(rng, 1000, (50, 50, 50)))
    assert sorted_columns(keys, *columns(rng, len(keys))) is None
    assert sorted_keys(keys) is keys
    for few in (keys[:0], keys[:1]):
        assert sorted_columns(few, *columns(rng, len(few))) is None and len(sorted_keys(few)) == len(few)
    swapped = keys.copy()
    swapped[[10, 11]] = swapped[[11, 10]]
    np.testing.assert_array_equal(sorted_keys(swapped), keys)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.integers(-voxel_keys.AXIS_LIMIT, voxel_keys.AXIS_LIMIT)] * 3), max_size=60,
                unique=True))
def test_any_distinct_keys_sort_as_numpy_sorts_them(indices):
    keys = voxel_keys.pack(np.array(indices, dtype=np.int64).reshape(-1, 3))
    colors, sources, confidence = columns(np.random.default_rng(len(keys)), len(keys))
    got = sorted_columns(keys, colors, sources, confidence)
    order = np.argsort(keys)
    if got is None:
        assert (order == np.arange(len(keys))).all()
    else:
        np.testing.assert_array_equal(got[0], keys[order])
        np.testing.assert_array_equal(got[1], colors[order])
    np.testing.assert_array_equal(sorted_keys(keys), keys[order])
