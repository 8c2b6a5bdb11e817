"""Atomic saves: round trip, a save that fails midway leaves the previous one, interrupted swaps recover."""

import os

import numpy as np
import pytest

from worldweave.bridge.memory.voxel_map import VoxelMap
from worldweave.bridge.open3d_import import load_open3d
from worldweave.bridge.storage import atomic_folder
from worldweave.proto.errors import StorageError


def filled_map(seed: int) -> VoxelMap:
    rng = np.random.default_rng(seed)
    vmap = VoxelMap(0.02)
    vmap.insert(rng.uniform(-1, 1, (2000, 3)), rng.integers(0, 256, (2000, 3), dtype=np.uint8))
    vmap.insert(rng.uniform(-1, 1, (500, 3)), rng.integers(0, 256, (500, 3), dtype=np.uint8), frame_id=4)
    return vmap


def assert_same_map(a: VoxelMap, b: VoxelMap) -> None:
    va, vb = a.voxels().sorted_by_key(), b.voxels().sorted_by_key()
    for field in va.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(va, field), getattr(vb, field))
    assert (a.version, a.voxel_size_m) == (b.version, b.voxel_size_m)


def test_save_load_round_trip(tmp_path):
    vmap = filled_map(0)
    vmap.save(tmp_path / "world")
    loaded = VoxelMap.load(tmp_path / "world")
    assert_same_map(vmap, loaded)
    assert loaded.changes_since(loaded.version).added.keys.size == 0
    assert loaded.changes_since(0).is_snapshot, "history before a load is gone: older versions get a snapshot"


def test_ply_is_readable_by_open3d(tmp_path):
    o3d = load_open3d()

    vmap = filled_map(1)
    vmap.save(tmp_path / "world")
    cloud = o3d.io.read_point_cloud(str(tmp_path / "world" / "cloud.ply"))
    points, colors = vmap.points()
    np.testing.assert_allclose(np.asarray(cloud.points), points, atol=1e-6)
    np.testing.assert_allclose(np.asarray(cloud.colors) * 255, colors, atol=1e-3)


def test_failed_save_leaves_the_previous_save_intact(tmp_path):
    first = filled_map(2)
    first.save(tmp_path / "world")
    second = filled_map(3)
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_folder(tmp_path / "world") as tmp:
            second.write(tmp)
            raise RuntimeError("simulated crash after writing the arrays")
    assert_same_map(first, VoxelMap.load(tmp_path / "world"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"], "the temporary folder is cleaned up"


def test_interrupted_swap_is_recovered(tmp_path):
    vmap = filled_map(4)
    vmap.save(tmp_path / "world")
    os.rename(tmp_path / "world", tmp_path / "world.previous")  # a crash between the two renames
    assert_same_map(vmap, VoxelMap.load(tmp_path / "world"))


def test_missing_or_corrupt_saves_raise_storage_errors(tmp_path):
    with pytest.raises(StorageError, match="no saved folder"):
        VoxelMap.load(tmp_path / "nothing")
    filled_map(5).save(tmp_path / "world")
    (tmp_path / "world" / "manifest.json").write_text("{not json")
    with pytest.raises(StorageError, match="cannot read manifest"):
        VoxelMap.load(tmp_path / "world")
