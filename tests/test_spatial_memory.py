"""Spatial memory, seen through the world's one conditioning path (``World.condition``): fuse -> condition reproduces
views, anchors beat the global map under pose noise, edits reach every anchor, storage round-trips, config records."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from worldweave.bridge.eval.metrics import psnr
from worldweave.bridge.eval.scenes import Scene, make_scene
from worldweave.bridge.frames import RenderResult, RGBDFrame
from worldweave.bridge.generators.base import Condition, GenerationResult, Generator
from worldweave.bridge.memory.spatial_memory import MemoryConfig, SpatialMemory
from worldweave.bridge.regions import Box
from worldweave.bridge.world import Seed, World, WorldConfig
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose

INTRINSICS = Intrinsics.from_fov(160, 120, fov_x_deg=70.0)


@pytest.fixture(scope="module")
def room() -> Scene:
    return make_scene("room")


def _ring(count: int, radius: float = 0.5, turn: float = 2 * np.pi) -> list[Pose]:
    """Cameras on a small circle in the room's centre, each looking outwards and a little down."""
    poses = []
    for i in range(count):
        angle = turn * i / count
        eye = np.array([radius * np.cos(angle), radius * np.sin(angle), 1.4])
        poses.append(Pose.look_at(eye, eye + [np.cos(angle), np.sin(angle), -0.3]))
    return poses


def _fuse(room: Scene, poses: list[Pose], config: MemoryConfig | None = None) -> World:
    """A world seeded with the room's views from ``poses`` (fused in order, frame ids 0..n-1)."""
    return World(Seed([room.render(pose, INTRINSICS) for pose in poses]), WorldConfig(memory=config or MemoryConfig()))


def _world_points(render: RenderResult, pose: Pose) -> np.ndarray:
    """World points (metres) of a render's covered pixels."""
    rays = INTRINSICS.pixel_rays()[render.mask]
    return pose.cam_to_world(rays * render.depth[render.mask][:, None])


def test_fused_then_rendered_reproduces_its_source_views(room: Scene) -> None:
    poses = _ring(8)
    # Exact data and anchors that keep every pixel (stride 1): memory must give the views back almost exactly.
    world = _fuse(room, poses, MemoryConfig().with_overrides({"anchors.stride_px": 1}))
    assert 1 <= len(world.memory.anchors) <= 8
    values = []
    for pose in poses:
        truth = room.render(pose, INTRINSICS)
        condition = world.condition([pose], INTRINSICS)
        render = condition.renders[0]
        scored = render.mask & (truth.depth > 0)
        assert scored.sum() / (truth.depth > 0).sum() > 0.9
        values.append(psnr(render.rgb, truth.rgb, scored))
        assert np.median(np.abs(render.depth[scored] - truth.depth[scored])) < 0.01
        assert len(condition.references) == len(condition.anchor_ids) >= 1
        assert all(ref.shape == (120, 160, 3) for ref in condition.references)
    # Pixels on depth edges have no points of their own view and are filled from neighbouring anchors.
    assert np.mean(values) >= 35.0 and min(values) >= 30.0, values


def test_anchors_beat_the_global_map_when_poses_are_noisy(room: Scene) -> None:
    rng = np.random.default_rng(0)
    poses = _ring(16, turn=np.pi)
    frames = []
    for pose in poses:
        frame = room.render(pose, INTRINSICS)
        # The frame is what the true pose sees; memory is told a pose off by ~3 cm and ~1.5 degrees.
        axis = rng.normal(size=3)
        angle = np.radians(1.5) * rng.normal()
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]]) / np.linalg.norm(axis)
        rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
        noisy = Pose(rotation @ pose.rotation, pose.position + rng.normal(scale=0.03, size=3))
        frames.append(RGBDFrame(frame.rgb, frame.depth, noisy, INTRINSICS))
    world = World(Seed(frames), WorldConfig(memory=MemoryConfig(voxel_size_m=0.01)))
    targets = _ring(16, radius=0.45, turn=np.pi)[1:-1:2]
    anchors, glob = [], []
    for pose in targets:
        truth = room.render(pose, INTRINSICS)
        for mode, out in (("coverage", anchors), ("global", glob)):
            render = world.condition([pose], INTRINSICS, mode=mode, k=1).renders[0]
            out.append(psnr(render.rgb, truth.rgb, render.mask & (truth.depth > 0)))
    assert np.mean(anchors) > np.mean(glob) + 1.0


def test_global_mode_renders_the_voxel_map_without_references(room: Scene) -> None:
    world = _fuse(room, _ring(4))
    condition = world.condition(_ring(4)[:2], INTRINSICS, mode="global")
    assert len(condition.renders) == 2 and condition.references == [] and condition.anchor_ids == []
    assert condition.renders[0].mask.mean() > 0.9


def test_removed_box_never_comes_back_through_an_anchor(room: Scene) -> None:
    poses = _ring(8)
    world = _fuse(room, poses)
    box = Box([1.0, -1.5, -0.1], [3.6, 1.5, 1.8])  # the +x wall's lower part and whatever stands before it
    # A splat spans its point's footprint (4 pixels at the default stride, ~10 cm at 3 m here), so renders are
    # checked 12 cm inside the box; the anchors' own points and depth are checked against the box itself.
    inner = Box(box.min_m + 0.12, box.max_m - 0.12)
    seen_before = world.condition([poses[0]], INTRINSICS).renders[0]
    assert inner.contains(_world_points(seen_before, poses[0])).sum() > 500
    removed = world.remove(box)
    assert removed > 0 and len(world.memory.voxel_map.crop(inner)) == 0
    for anchor in world.memory.anchors:
        assert not box.contains(anchor.points_world()).any()
        valid = anchor.depth > 0
        rays = anchor.intrinsics.pixel_rays()[valid] * anchor.depth[valid][:, None]
        assert not box.contains(anchor.pose.cam_to_world(rays)).any()
    for mode in ("coverage", "iou", "recent", "random", "global"):
        for pose in poses[:3] + poses[-2:]:
            render = world.condition([pose], INTRINSICS, mode=mode, k=7).renders[0]
            assert not inner.contains(_world_points(render, pose)).any(), mode


def test_recolor_and_insert_reach_the_anchors(room: Scene) -> None:
    poses = _ring(8)
    world = _fuse(room, poses)
    box = Box([1.0, -1.5, -0.1], [3.6, 1.5, 1.8])
    assert world.recolor(box, (255, 0, 255)) > 0
    render = world.condition([poses[0]], INTRINSICS).renders[0]
    inside = Box(box.min_m + 0.12, box.max_m - 0.12).contains(_world_points(render, poses[0]))
    assert inside.sum() > 500
    assert np.all(render.rgb[render.mask][inside] == [255, 0, 255])
    for anchor in world.memory.anchors:
        assert np.all(anchor.colors[box.contains(anchor.points_world())] == [255, 0, 255])
    # A 20 cm green cube floating in front of the first camera appears in its render.
    g = np.arange(-0.1, 0.1, 0.01)
    cube = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3) + poses[0].position
    cube += poses[0].forward * 0.8
    world.insert(cube, np.tile(np.array([[0, 255, 0]], np.uint8), (len(cube), 1)))
    after = world.condition([poses[0]], INTRINSICS).renders[0]
    green = np.all(after.rgb == [0, 255, 0], axis=-1)
    assert green[55:65, 75:85].all()
    assert np.allclose(after.depth[60, 80], 0.7, atol=0.05)


class _TrueRoom(Generator):
    """A perfect generator: each frame is what the room looks like from its pose, with the room's depth."""

    name: ClassVar[str] = "true-room"
    max_frames: ClassVar[int] = 8
    returns_depth: ClassVar[bool] = True

    def __init__(self, room: Scene) -> None:
        self.room = room

    def generate(self, condition: Condition) -> GenerationResult:
        frames = [self.room.render(pose, condition.intrinsics) for pose in condition.poses]
        return GenerationResult(tuple(f.rgb for f in frames), tuple(f.depth for f in frames),
                                confidences=tuple(np.ones(f.depth.shape, np.float32) for f in frames))


def test_dynamic_pixels_stay_out_of_memory(room: Scene) -> None:
    pose = _ring(4)[0]
    frame = room.render(pose, INTRINSICS)
    mask = np.zeros(INTRINSICS.shape, bool)
    mask[40:80, 60:100] = True
    memory = SpatialMemory()
    update = memory.integrate(frame, frame_id=0, exclude_mask=mask)
    assert update.anchor_id == 0 and update.voxels.points == int((frame.depth > 0).sum() - mask.sum())
    assert np.all(memory.anchors[0].depth[mask] == 0)
    # The same frame fused by a world's step with that mask (the world seeded looking the other way) is its newest
    # anchor, and what the world's condition renders of it leaves the masked pixels empty.
    world = World(Seed([room.render(_ring(4)[2], INTRINSICS)]), generator=_TrueRoom(room))
    world.step([pose], dynamic_masks=[mask])
    newest = world.memory.anchors[1]
    assert newest.frame_id == 1 and np.all(newest.depth[mask] == 0)
    render = world.condition([pose], INTRINSICS, mode="recent", k=1).renders[0]
    assert render.mask[50:70, 70:90].mean() < 0.05


def test_keyframes_follow_the_policy(room: Scene) -> None:
    pose = _ring(4)[0]
    memory = SpatialMemory()
    first = memory.integrate(room.render(pose, INTRINSICS), frame_id=0)
    again = memory.integrate(room.render(pose, INTRINSICS), frame_id=1)
    assert first.anchor_id == 0 and again.anchor_id is None and "nearby" in again.reason
    turned = memory.integrate(room.render(_ring(4)[1], INTRINSICS), frame_id=2)
    assert turned.anchor_id == 1
    assert memory.voxel_map.version == 3


def test_a_frame_that_fuses_nothing_makes_no_anchor(room: Scene) -> None:
    # A turned view would be a keyframe (no anchor near it), but every pixel is a guess (confidence 0), as a step's
    # frame is where memory shows nothing: nothing enters the voxel map, so no empty anchor is stored.
    memory = SpatialMemory()
    memory.integrate(room.render(_ring(4)[0], INTRINSICS), frame_id=0)
    turned = room.render(_ring(4)[1], INTRINSICS)
    guessed = RGBDFrame(turned.rgb, turned.depth, turned.pose, turned.intrinsics,
                        confidence=np.zeros(INTRINSICS.shape, np.float32))
    update = memory.integrate(guessed, frame_id=1)
    assert update.voxels.points == 0 and update.anchor_id is None and update.reason == "no pixel entered memory"
    assert len(memory.anchors) == 1
    assert memory.integrate(turned, frame_id=2).anchor_id == 1  # the same view with its depth trusted is one


def test_save_load_round_trip_gives_the_same_conditioning(room: Scene, tmp_path) -> None:
    config = MemoryConfig(k=3).with_overrides({"weave.angle_scale_deg": 12.0, "keyframes.max_move_m": 0.05})
    world = _fuse(room, _ring(6), config)
    memory = world.memory
    memory.save(tmp_path / "memory")
    back = SpatialMemory.load(tmp_path / "memory")
    assert back.config == memory.config and len(back.anchors) == len(memory.anchors)
    assert len(back.voxel_map) == len(memory.voxel_map)
    # The world saves its memory the same way (``SpatialMemory.write`` / ``read``); the loaded world conditions alike.
    world.save(tmp_path / "world")
    loaded = World.load(tmp_path / "world")
    assert loaded.memory.config == memory.config
    pose = _ring(6, radius=0.45)[2]
    for mode in ("coverage", "iou", "global"):
        a = world.condition([pose], INTRINSICS, mode=mode)
        b = loaded.condition([pose], INTRINSICS, mode=mode)
        assert a.anchor_ids == b.anchor_ids
        assert np.array_equal(a.renders[0].rgb, b.renders[0].rgb)
        assert np.array_equal(a.renders[0].depth, b.renders[0].depth)


def test_config_records_and_overrides() -> None:
    config = MemoryConfig()
    assert MemoryConfig.from_dict(config.to_dict()) == config
    changed = config.with_overrides({"k": 3, "weave.blend": "best", "anchors.stride_px": 1})
    assert changed.k == 3 and changed.weave.blend == "best" and changed.anchors.stride_px == 1
    assert config.k == 7
    with pytest.raises(InvalidInputError, match="no setting 'weave.nope'"):
        config.with_overrides({"weave.nope": 1})
    with pytest.raises(InvalidInputError, match="retrieval must be one of"):
        MemoryConfig(retrieval="nearest")
    memory = SpatialMemory()
    with pytest.raises(InvalidInputError, match="k"):
        memory.retrieve([Pose.identity()], INTRINSICS, k=0)
    with pytest.raises(InvalidInputError, match="at least one target pose"):
        memory.retrieve([], INTRINSICS)
