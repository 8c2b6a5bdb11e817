"""The one voxel key layout (``worldweave.proto.voxel_keys``): numpy, torch and the query grid's numba key agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldweave.bridge.memory import voxel_keys as torch_keys
from worldweave.bridge.queries.grid import chunk_key
from worldweave.proto import voxel_keys


def limit_indices() -> np.ndarray:
    """Every combination of the extreme and middle indices, plus random ones."""
    edges = np.array([-voxel_keys.AXIS_LIMIT, -1, 0, 1, voxel_keys.AXIS_LIMIT], dtype=np.int64)
    corners = np.stack(np.meshgrid(edges, edges, edges, indexing="ij"), axis=-1).reshape(-1, 3)
    rng = np.random.default_rng(0)
    random = rng.integers(-voxel_keys.AXIS_LIMIT, voxel_keys.AXIS_LIMIT + 1, size=(1000, 3))
    return np.concatenate([corners, random])


def test_layout_constants():
    assert voxel_keys.AXIS_BITS == 21
    assert voxel_keys.AXIS_OFFSET == 2**20
    assert voxel_keys.AXIS_MASK == 2**21 - 1
    assert voxel_keys.AXIS_LIMIT == 2**20 - 1
    assert (torch_keys.AXIS_BITS, torch_keys.AXIS_OFFSET, torch_keys.AXIS_LIMIT) == (21, 2**20, 2**20 - 1)


def test_pack_unpack_round_trip_at_the_limits():
    indices = limit_indices()
    keys = voxel_keys.pack(indices)
    assert keys.dtype == np.int64 and keys.shape == (len(indices),)
    assert (keys >= 0).all()
    np.testing.assert_array_equal(voxel_keys.unpack(keys), indices)
    # x then y then z: keys sort like the rows.
    np.testing.assert_array_equal(np.argsort(keys, kind="stable"), np.lexsort(indices.T[::-1]))
    expected = ((indices[:, 0] + 2**20) << 42) | ((indices[:, 1] + 2**20) << 21) | (indices[:, 2] + 2**20)
    np.testing.assert_array_equal(keys, expected)


def test_empty_batches():
    assert voxel_keys.pack(np.zeros((0, 3), dtype=np.int64)).shape == (0,)
    assert voxel_keys.unpack(np.zeros(0, dtype=np.int64)).shape == (0, 3)
    assert voxel_keys.key_centers(np.zeros(0, dtype=np.int64), 0.02).shape == (0, 3)


def test_torch_numpy_and_numba_keys_are_equal():
    indices = limit_indices()
    keys = voxel_keys.pack(indices)
    np.testing.assert_array_equal(torch_keys.pack(torch.from_numpy(indices)).numpy(), keys)
    np.testing.assert_array_equal(torch_keys.unpack(torch.from_numpy(keys)).numpy(), indices)
    for row in range(0, len(indices), 97):
        assert chunk_key(*indices[row]) == keys[row]


@pytest.mark.parametrize("voxel_size_m", [0.005, 0.02, 0.1, 1.0 / 3.0])
def test_key_centers_bit_identical_to_the_float64_formula(voxel_size_m):
    indices = limit_indices()
    keys = voxel_keys.pack(indices)
    centers = voxel_keys.key_centers(keys, voxel_size_m)
    assert centers.dtype == np.float32
    expected = ((indices.astype(np.float64) + 0.5) * voxel_size_m).astype(np.float32)
    np.testing.assert_array_equal(centers, expected)
    np.testing.assert_array_equal(centers, torch_keys.key_centers(torch.from_numpy(keys), voxel_size_m).numpy())
