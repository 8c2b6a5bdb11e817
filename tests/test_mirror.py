"""``PointCloudMirror`` and the wire form of voxel keys, without a network: chunks built by the server's own chunking
from a real ``VoxelMap`` keep the mirror equal to the map; chunks that do not continue it are refused."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from worldweave.bridge.memory import voxel_keys
from worldweave.bridge.memory.voxel_map import VoxelMap
from worldweave.bridge.regions import Sphere
from worldweave.proto import voxel_keys as wire_keys
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server.point_cloud import change_chunks
from worldweave.sim_clients.mirror import MirrorError, PointCloudMirror
from worldweave.sim_clients.world_state import decode_point_cloud_chunk


def test_wire_key_decoding_matches_the_engine():
    rng = np.random.default_rng(0)
    rows = wire_keys.CENTER_BLOCK_ROWS + 1000  # key_centers decodes blocks of rows
    indices = rng.integers(-voxel_keys.AXIS_LIMIT, voxel_keys.AXIS_LIMIT + 1, size=(rows, 3))
    keys = voxel_keys.pack(torch.from_numpy(indices)).numpy()
    np.testing.assert_array_equal(wire_keys.unpack(keys), indices)
    for size in (0.005, 0.02, 0.1, 0.0137):
        expected = ((indices.astype(np.float64) + 0.5) * size).astype(np.float32)
        np.testing.assert_array_equal(wire_keys.key_centers(keys, size), expected)
        np.testing.assert_array_equal(voxel_keys.key_centers(torch.from_numpy(keys), size).numpy(), expected)
        np.testing.assert_array_equal(voxel_keys.key_centers_torch(torch.from_numpy(keys), size).numpy(), expected)


def chunks_since(voxel_map: VoxelMap, version: int, max_chunk_bytes: int = 2048):
    changes = voxel_map.changes_since(version)
    chunks = change_chunks(changes, voxel_map.voxel_size_m, max_chunk_bytes, include_positions=False)
    return [decode_point_cloud_chunk(pb.StreamPointCloudResponse.FromString(c.SerializeToString())) for c in chunks]


def cloud(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(-1, 1, size=(n, 3)).astype(np.float32), rng.integers(0, 256, size=(n, 3), dtype=np.uint8)


def assert_equal(mirror: PointCloudMirror, voxel_map: VoxelMap) -> None:
    voxels = voxel_map.voxels().sorted_by_key()
    np.testing.assert_array_equal(mirror.keys, voxels.keys)
    np.testing.assert_array_equal(mirror.colors, voxels.colors)
    np.testing.assert_array_equal(mirror.flags, voxels.sources)
    assert mirror.version == voxel_map.version


def test_mirror_follows_inserts_recolours_and_removals():
    rng = np.random.default_rng(1)
    voxel_map, mirror = VoxelMap(0.05), PointCloudMirror()
    voxel_map.insert(*cloud(rng, 3000))
    mirror.update(chunks_since(voxel_map, 0))
    assert_equal(mirror, voxel_map)
    for _ in range(3):
        version = mirror.version
        voxel_map.insert(*cloud(rng, 500))
        voxel_map.recolor(Sphere(rng.uniform(-1, 1, 3), 0.4), [1, 2, 3])
        voxel_map.remove(Sphere(rng.uniform(-1, 1, 3), 0.3))
        chunks = chunks_since(voxel_map, version)
        assert {c.kind for c in chunks} == {"added", "changed", "removed"} and len(chunks) > 3
        assert [mirror.apply(c) for c in chunks][-1] == voxel_map.version
        assert_equal(mirror, voxel_map)


def test_chunks_that_do_not_continue_the_mirror_are_refused():
    rng = np.random.default_rng(2)
    voxel_map, mirror = VoxelMap(0.05), PointCloudMirror()
    voxel_map.insert(*cloud(rng, 1000))
    voxel_map.insert(*cloud(rng, 1000))
    with pytest.raises(MirrorError, match="chunk changes version 1, the mirror holds version 0"):
        mirror.update(chunks_since(voxel_map, 1))
    first, *_ = chunks_since(voxel_map, 0)
    mirror = PointCloudMirror()
    mirror.apply(first)
    other = decode_point_cloud_chunk(pb.StreamPointCloudResponse(since_version=2, version=3, kind=pb.CHANGE_KIND_ADDED,
                                                                 voxel_size_m=0.05, last_in_version=True))
    with pytest.raises(MirrorError, match=r"versions 2 -> 3 arrived while 0 -> 2 was incomplete"):
        mirror.apply(other)
    with pytest.raises(MirrorError, match="the stream ended inside version 2"):
        PointCloudMirror().update([first])


def test_an_empty_snapshot_chunk_has_empty_positions():
    message = pb.StreamPointCloudResponse(kind=pb.CHANGE_KIND_ADDED, count=0, version=3, is_snapshot=True,
                                          voxel_size_m=0.02, last_in_version=True)
    chunk = decode_point_cloud_chunk(message)
    assert chunk.positions_m is not None and chunk.positions_m.shape == (0, 3)


def test_chunks_out_of_key_order_are_mirrored_sorted():
    """A stream whose voxels are not in key order (a server that sends them in its rows' order) is sorted here."""
    rng = np.random.default_rng(4)
    voxel_map, mirror = VoxelMap(0.05), PointCloudMirror()

    def reversed_rows(chunks):
        flipped = [replace(c, keys=c.keys[::-1], colors=None if c.colors is None else c.colors[::-1],
                           flags=None if c.flags is None else c.flags[::-1],
                           confidence=None if c.confidence is None else c.confidence[::-1]) for c in chunks]
        assert any((np.diff(c.keys) < 0).any() for c in flipped)
        return flipped

    voxel_map.insert(*cloud(rng, 3000))
    mirror.update(reversed_rows(chunks_since(voxel_map, 0)))
    assert_equal(mirror, voxel_map)
    version = mirror.version
    voxel_map.insert(*cloud(rng, 800))
    voxel_map.recolor(Sphere(np.zeros(3), 0.6), [1, 2, 3])
    voxel_map.remove(Sphere(np.full(3, 0.5), 0.5))
    chunks = reversed_rows(chunks_since(voxel_map, version))
    assert {c.kind for c in chunks} == {"added", "changed", "removed"}
    mirror.update(chunks)
    assert_equal(mirror, voxel_map)
