"""``bridge.memory.key_order``: the radix sort of voxel columns by key equals numpy's argsort and gather, bit for bit,
for keys that span a few voxels up to the whole key range (2 to 7 counting-sort passes), sorted on one thread or
split, and for keys in a few long runs (merged); the packing read (``pack_voxels``) equals numpy's, with a map's
float colours rounded as torch rounds them, and bands of rows give the one-band result."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from worldweave.bridge.cores import even_bands, holding_every_core
from worldweave.bridge.memory.key_order import (
    _STATS,
    MERGE_BELOW_BITS,
    _into_buckets,
    _pack_bands,
    _pack_rows,
    _run_bits,
    pack_voxels,
    sorted_columns,
    sorted_keys,
)
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


def reference_pack(keys, colors, sources, confidence):
    """``pack_voxels`` in numpy: the payload, the fields' bounds and the descents."""
    rgb = np.clip(np.rint(np.asarray(colors, np.float64)), 0, 255).astype(np.int64)
    payload = (confidence.view(np.uint32).astype(np.int64) << 32 | sources.astype(np.int64) << 24
               | rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2])
    fields = voxel_keys.unpack(keys) + voxel_keys.AXIS_OFFSET
    return payload, fields.min(axis=0), fields.max(axis=0), int(np.count_nonzero(keys[1:] <= keys[:-1]))


@pytest.mark.parametrize("level", [0.0, 0.5])
@pytest.mark.parametrize("one_thread", [False, True])
def test_packing_reads_every_column_once_on_any_number_of_threads(one_thread, level):
    """Float colours (a map's running means) are rounded half to even and clamped as torch's ``round().clamp`` does
    (``VoxelMap.voxels``); a descent right at the middle (where two threads' bands meet) is counted; above level 0
    only the voxels at or above the level are read, in their order."""
    rng = np.random.default_rng(5)
    keys = np.sort(shuffled_keys(rng, 10_001, (60, 60, 60)))
    middle = len(keys) // 2
    keys[[middle - 1, middle]] = keys[[middle, middle - 1]]
    _, sources, confidence = columns(rng, len(keys))
    colors = rng.uniform(-20, 280, size=(len(keys), 3)).astype(np.float32)
    colors[:6] = np.float32([[0.5, 1.5, 2.5], [254.5, 255.5, -0.5], [-3, 300, 127.49999], [3.5, 4.5, 0.4999],
                             [np.nextafter(np.float32(0.5), 0), 1e9, -1e9], [253.5, 128.5, 7.0]])
    confidence[[middle - 1, middle]] = 1.0  # the descent's two voxels are kept at every level
    expected_rgb = torch.from_numpy(colors).round().clamp(0, 255).to(torch.uint8).numpy()
    with holding_every_core() if one_thread else nullcontext():
        packed = pack_voxels(keys, colors, sources, confidence, min_confidence=level)
    keep = confidence >= np.float32(level)
    assert keep.sum() < len(keys) or level == 0
    keys, expected_rgb, sources, confidence = keys[keep], expected_rgb[keep], sources[keep], confidence[keep]
    payload, lo, hi, descents = reference_pack(keys, expected_rgb, sources, confidence)
    np.testing.assert_array_equal(packed.keys, keys)
    np.testing.assert_array_equal(packed.payload, payload)
    np.testing.assert_array_equal(packed.lo, lo)
    np.testing.assert_array_equal(packed.hi, hi)
    assert packed.descents == descents == 1
    got_keys, got_colors, got_sources, got_confidence = packed.columns()
    np.testing.assert_array_equal(got_colors, expected_rgb)
    np.testing.assert_array_equal(got_sources, sources)
    np.testing.assert_array_equal(got_confidence.view(np.uint32), confidence.view(np.uint32))
    in_order = packed.in_key_order()
    order = np.argsort(keys)
    np.testing.assert_array_equal(in_order[0], keys[order])
    np.testing.assert_array_equal(in_order[1], expected_rgb[order])


@pytest.mark.parametrize("parts", [2, 3, 7])
def test_bands_of_rows_give_the_one_pass_result(parts):
    """The read and the first pass of the sort, split into bands of rows (one per thread), equal one band."""
    rng = np.random.default_rng(parts)
    keys = shuffled_keys(rng, 9_999, (30, 500, 30))
    colors, sources, confidence = columns(rng, len(keys))
    results = []
    for bands in (even_bands(len(keys), 1), even_bands(len(keys), parts)):
        out_keys, payload = np.empty_like(keys), np.empty_like(keys)
        stats = np.empty((len(bands) - 1, _STATS), np.int64)
        args = (keys, colors, sources, confidence, True, np.float32(0), out_keys, payload)
        if len(bands) == 2:
            _pack_rows(0, len(keys), 0, *args, stats[0])
        else:
            _pack_bands(bands, bands, *args, stats)
        lo, hi = stats[:, :3].min(axis=0), stats[:, 3:6].max(axis=0)
        widths = [int(top - bottom).bit_length() for bottom, top in zip(lo, hi)]
        low_bits = max(0, sum(widths) - 8)
        results.append((out_keys, payload, lo, hi, *_into_buckets(bands, keys, payload, lo, widths[1] + widths[2],
                                                                   widths[2], low_bits)))
    for one, split in zip(*results):
        np.testing.assert_array_equal(one, split)
