"""The point-cloud stream's map read (``server.point_cloud.read_changes``): a snapshot read column by column, without
voxel centres, sends what the gathered map holds, byte for byte and in key order, owns its arrays, and mirrors into
the sorted map; a change set's kinds go out in key order too."""

from __future__ import annotations

import numpy as np
import pytest

from worldweave.bridge.eval.scenes import heading_pose, make_room
from dataclasses import replace

from worldweave.bridge.generators.base import Condition, GenerationResult
from worldweave.bridge.generators.reproject import ReprojectGenerator
from worldweave.bridge.regions import Sphere
from worldweave.bridge.world import Seed, World
from worldweave.proto.geometry import Intrinsics
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server.point_cloud import change_chunks, filter_changes, read_changes
from worldweave.sim_clients.mirror import PointCloudMirror
from worldweave.sim_clients.world_state import decode_point_cloud_chunk

INTRINSICS = Intrinsics.from_fov(96, 72, fov_x_deg=70.0)
SCENE = make_room(seed=5)


def pose(yaw_deg: float):
    return heading_pose(SCENE.start_position_m, SCENE.start_heading_rad + np.radians(yaw_deg))


class UnsureReproject(ReprojectGenerator):
    """``reproject`` whose pixels are a third as sure: what it fuses ends up below the 0.5 level."""

    def generate(self, condition: Condition) -> GenerationResult:
        result = super().generate(condition)
        return replace(result, confidences=tuple(c / 3 for c in result.confidences))


@pytest.fixture(scope="module")
def world() -> World:
    """A seed and two generated steps: voxels of every source, confidences above and below 0.5."""
    world = World(Seed([SCENE.render(pose(0.0), INTRINSICS)]), generator=UnsureReproject())
    world.step([pose(15.0)])
    world.step([pose(30.0)])
    return world


def streamed(world: World, since: int, level: float, include_positions: bool, max_chunk_bytes: int = 4096):
    changes, voxel_size_m = read_changes(world, since, level)  # a snapshot read at the level, a change set whole
    chunks = change_chunks(filter_changes(changes, level), voxel_size_m, max_chunk_bytes,
                           include_positions=include_positions, min_confidence=level)
    return [decode_point_cloud_chunk(pb.StreamPointCloudResponse.FromString(chunk.SerializeToString()))
            for chunk in chunks]


@pytest.mark.parametrize("level", [0.0, 0.5])
@pytest.mark.parametrize("include_positions", [False, True])
def test_a_snapshot_sends_the_gathered_maps_voxels_in_key_order(world: World, level: float, include_positions: bool):
    voxels = world.memory.voxel_map.voxels()
    assert (np.diff(voxels.keys) < 0).any(), "the map's rows are not in key order, so the stream has to sort them"
    voxels = voxels.sorted_by_key()
    keep = voxels.confidence >= np.float32(level)
    assert 0 < keep.sum() < len(voxels) or level == 0.0, "the world has voxels on both sides of 0.5"
    chunks = streamed(world, 0, level, include_positions)
    assert len(chunks) > 4 and all(c.is_snapshot and c.kind == "added" and c.version == world.version for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.keys for c in chunks]), voxels.keys[keep])
    np.testing.assert_array_equal(np.concatenate([c.colors for c in chunks]), voxels.colors[keep])
    np.testing.assert_array_equal(np.concatenate([c.flags for c in chunks]), voxels.sources[keep])
    np.testing.assert_array_equal(np.concatenate([c.confidence for c in chunks]), voxels.confidence[keep])
    if include_positions:
        np.testing.assert_array_equal(np.concatenate([c.positions_m for c in chunks]), voxels.positions_m[keep])
    else:
        assert all(c.positions_m is None for c in chunks[:-1])


def test_chunks_cut_from_a_snapshot_read_own_their_bytes():
    changed = World(Seed([SCENE.render(pose(0.0), INTRINSICS)]), generator=ReprojectGenerator())
    changed.step([pose(15.0)])
    changes, voxel_size_m = read_changes(changed, 0)
    chunks = change_chunks(changes, voxel_size_m, 4096, include_positions=True)
    before = [chunk.SerializeToString() for chunk in chunks]
    changed.memory.voxel_map.recolor(Sphere(SCENE.start_position_m, 50.0), [7, 8, 9])
    changed.remove(Sphere(SCENE.start_position_m, 1.5))
    changed.step([pose(-20.0)])
    assert [chunk.SerializeToString() for chunk in chunks] == before, "the map's later changes reached the chunks"


def test_changes_since_a_version_are_the_worlds_change_set(world: World):
    version = world.version
    world.step([pose(45.0)])
    chunks = streamed(world, version, 0.0, include_positions=False, max_chunk_bytes=1024)
    expected = world.changes_since(version)
    assert not any(c.is_snapshot for c in chunks) and {c.since_version for c in chunks} == {version}
    for kind, voxels in (("added", expected.added), ("changed", expected.changed)):
        got = [c for c in chunks if c.kind == kind]
        assert len(got) > 1, f"the {kind} voxels come in several chunks"
        order = np.argsort(voxels.keys)
        np.testing.assert_array_equal(np.concatenate([c.keys for c in got]), voxels.keys[order])
        np.testing.assert_array_equal(np.concatenate([c.colors for c in got]), voxels.colors[order])
        np.testing.assert_array_equal(np.concatenate([c.confidence for c in got]), voxels.confidence[order])
    got = [c.keys for c in chunks if c.kind == "removed"]
    np.testing.assert_array_equal(np.concatenate(got) if got else np.empty(0, np.int64), np.sort(expected.removed_keys))


def test_a_mirror_of_many_small_chunks_holds_the_sorted_map(world: World):
    mirror = PointCloudMirror()
    chunks = streamed(world, 0, 0.0, include_positions=False, max_chunk_bytes=1024)
    assert len(chunks) > 8, "the snapshot arrives in many chunks, so the mirror's columns grow several times"
    assert mirror.update(chunks) == world.version
    voxels = world.memory.voxel_map.voxels().sorted_by_key()
    np.testing.assert_array_equal(mirror.keys, voxels.keys)
    np.testing.assert_array_equal(mirror.colors, voxels.colors)
    np.testing.assert_array_equal(mirror.flags, voxels.sources)
    np.testing.assert_array_equal(mirror.confidence, voxels.confidence)
    np.testing.assert_array_equal(mirror.points()[0], voxels.positions_m)
