"""World loop: determinism, loop closure on an exact scene, dynamic exclusion, edits, chunk padding, storage; the
world's one conditioning path, its spatial queries and its change feed."""

from typing import ClassVar

import numpy as np
import pytest

from worldweave.bridge.eval.metrics import psnr
from worldweave.bridge.eval.scenes import heading_pose, make_room
from worldweave.bridge.eval.wall import wall_seed
from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.generators.base import Condition, GenerationResult, Generator
from worldweave.bridge.generators.checker import GeneratorCheckError, check_generator
from worldweave.bridge.generators.reproject import ReprojectGenerator
from worldweave.bridge.memory.spatial_memory import MemoryConfig
from worldweave.bridge.regions import Box, Sphere
from worldweave.bridge.world import QueryReach, Seed, World, WorldConfig
from worldweave.proto.errors import (
    InvalidInputError,
    LimitExceededError,
    PreconditionError,
)
from worldweave.proto.geometry import Intrinsics, Pose

INTRINSICS = Intrinsics.from_fov(128, 96, fov_x_deg=70.0)
SCENE = make_room(seed=3)


def start_pose(yaw_deg: float = 0.0, forward_m: float = 0.0):
    heading = SCENE.start_heading_rad + np.radians(yaw_deg)
    position = SCENE.start_position_m + forward_m * np.array([np.cos(heading), np.sin(heading), 0.0])
    return heading_pose(position, heading, pitch_deg=-10.0)


def new_world(**config) -> World:
    return World(Seed([SCENE.render(start_pose(), INTRINSICS)]), WorldConfig(**config))


def loop_poses() -> list:
    """Turn left 60 degrees in steps, then come back to the start view."""
    out = [start_pose(yaw) for yaw in range(10, 61, 10)]
    return out + out[-2::-1] + [start_pose(0.0)]


def test_steps_are_deterministic():
    a, b = new_world(), new_world()
    for pose in loop_poses()[:4]:
        fa, fb = a.step([pose]).frames[0], b.step([pose]).frames[0]
        np.testing.assert_array_equal(fa.rgb, fb.rgb)
        np.testing.assert_array_equal(fa.depth, fb.depth)
        assert (fa.frame_id, fa.version) == (fb.frame_id, fb.version)


@pytest.mark.parametrize(
    "memory, min_psnr_db",
    [
        (MemoryConfig(), 30.0),  # at 128x96 the automatic anchor stride keeps every pixel
        (MemoryConfig(retrieval="global"), 40.0),
    ],
    ids=["anchors-coverage", "global"],
)
def test_closed_loop_revisits_the_start_view_at_high_psnr(memory, min_psnr_db):
    world = new_world(memory=memory)
    truth = SCENE.render(start_pose(), INTRINSICS)
    result = world.step(loop_poses())
    final = result.frames[-1]
    assert [f.frame_id for f in result.frames] == list(range(1, len(loop_poses()) + 1))
    assert final.version == world.version and final.coverage > 0.9
    assert psnr(final.rgb, truth.rgb, truth.depth > 0) > min_psnr_db
    assert set(result.timings_s) == {"retrieve", "render_weave", "generate", "depth", "integrate", "total"}


class RedSquareGenerator(Generator):
    """Reprojects memory, then paints a red square in the middle of every frame (a moving object)."""

    name: ClassVar[str] = "red-square"
    max_frames: ClassVar[int] = 8
    returns_depth: ClassVar[bool] = True

    def generate(self, condition: Condition) -> GenerationResult:
        result = ReprojectGenerator().generate(condition)
        frames = [f.copy() for f in result.frames]
        for frame in frames:
            frame[40:56, 56:72] = (255, 0, 0)
        return GenerationResult(tuple(frames), result.depths, confidences=result.confidences)


def red_voxels(world: World) -> int:
    colors = world.memory.voxel_map.voxels().colors
    return int(np.sum((colors[:, 0] > 240) & (colors[:, 1] < 15) & (colors[:, 2] < 15)))


def test_fusing_the_view_memory_already_holds_adds_no_voxel():
    """A step at the seed's own pose with ``echo`` (its frame is memory's render) fuses what memory holds: no voxel is
    added. The wall lies on a boundary of the 5 mm voxels, so a depth off by a float32 ulp would fall into the next
    layer: the weave gives a pixel one anchor alone shows with that anchor's depth exactly."""
    [(rgb, depth, c2w)], intrinsics = wall_seed(160, 120)
    pose = Pose.from_matrix(c2w)
    world = World(Seed([RGBDFrame(rgb, depth, pose, intrinsics)]),
                  WorldConfig(generator="echo", memory=MemoryConfig(voxel_size_m=0.005)))
    before = len(world.memory.voxel_map)
    frame, = world.step([pose]).frames
    assert frame.coverage == 1.0
    assert len(world.memory.voxel_map) == before == 160 * 120


def test_dynamic_masks_and_boxes_keep_moving_content_out_of_memory():
    pose = start_pose(5.0)
    plain = World(Seed([SCENE.render(start_pose(), INTRINSICS)]), generator=RedSquareGenerator())
    plain.step([pose])
    assert red_voxels(plain) > 0, "without a mask the red square is fused"

    mask = np.zeros(INTRINSICS.shape, bool)
    mask[38:58, 54:74] = True
    masked = World(Seed([SCENE.render(start_pose(), INTRINSICS)]), generator=RedSquareGenerator())
    masked.step([pose], dynamic_masks=[mask])
    assert red_voxels(masked) == 0

    square = plain.memory.voxel_map.voxels()
    red = (square.colors[:, 0] > 240) & (square.colors[:, 1] < 15)
    lo, hi = square.positions_m[red].min(axis=0) - 0.05, square.positions_m[red].max(axis=0) + 0.05
    boxed = World(Seed([SCENE.render(start_pose(), INTRINSICS)]), generator=RedSquareGenerator())
    boxed.step([pose], dynamic_boxes=[Box(lo, hi)])
    assert red_voxels(boxed) == 0


def test_edits_show_in_later_frames():
    world = new_world()
    pose = start_pose(0.0)
    depth = SCENE.render(pose, INTRINSICS).depth
    centre_point = pose.cam_to_world(np.array([[0.0, 0.0, float(depth[48, 64])]]))[0]
    world.recolor(Sphere(centre_point, 0.3), (0, 255, 0))
    frame = world.step([pose]).frames[0]
    assert np.all(frame.rgb[48, 64] == (0, 255, 0))

    world.remove(Sphere(centre_point, 0.3))
    render = world.render([pose])[0]
    window = (slice(47, 50), slice(63, 66))  # well inside the removed ball, beyond any splat footprint
    seen = render.mask[window]
    assert np.all(render.depth[window][seen] > depth[48, 64] + 0.2), "only what lies behind the removed ball shows"
    frame = world.step([pose]).frames[0]
    green = (frame.rgb[..., 1] == 255) & (frame.rgb[..., 0] == 0)
    assert not green.any(), "removed content must not come back through an anchor or the voxel map"


class FourKPlusOne(Generator):
    """A 4k+1 video backend that records what it was asked for; frames are the woven renders."""

    name: ClassVar[str] = "four-k-plus-one"
    chunk_multiple: ClassVar[int] = 4
    chunk_offset: ClassVar[int] = 1
    max_frames: ClassVar[int] = 9
    returns_depth: ClassVar[bool] = True

    def __init__(self) -> None:
        self.calls: list[Condition] = []

    def generate(self, condition: Condition) -> GenerationResult:
        self.calls.append(condition)
        return ReprojectGenerator().generate(condition)


def test_short_chunks_are_padded_by_holding_the_last_pose_and_trimmed():
    generator = FourKPlusOne()
    world = World(Seed([SCENE.render(start_pose(), INTRINSICS)]), generator=generator)
    one = world.step([start_pose(5.0)])
    assert len(one.frames) == 1 and len(generator.calls[-1]) == 1
    poses = [start_pose(10.0), start_pose(15.0)]
    two = world.step(poses)
    assert len(two.frames) == 2 and len(generator.calls[-1]) == 5
    assert all(p == poses[-1] for p in generator.calls[-1].poses[2:])
    assert [f.pose for f in two.frames] == poses
    eleven = world.step([start_pose(float(y)) for y in range(11)])
    assert len(eleven.frames) == 11 and [len(c) for c in generator.calls[-2:]] == [9, 5]
    assert len(generator.calls[-1].leading_frames) == 1


class WrongCount(Generator):
    name: ClassVar[str] = "wrong-count"
    max_frames: ClassVar[int] = 4
    returns_depth: ClassVar[bool] = True

    def generate(self, condition: Condition) -> GenerationResult:
        result = ReprojectGenerator().generate(condition)
        return GenerationResult(result.frames[:1], result.depths[:1], confidences=result.confidences[:1])


class Unseeded(Generator):
    name: ClassVar[str] = "unseeded"
    max_frames: ClassVar[int] = 4
    returns_depth: ClassVar[bool] = False

    def __init__(self) -> None:
        self._rng = np.random.default_rng()

    def generate(self, condition: Condition) -> GenerationResult:
        h, w = condition.intrinsics.shape
        return GenerationResult(tuple(self._rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in condition.poses),
                                confidences=tuple(np.zeros((h, w), np.float32) for _ in condition.poses))


def test_check_generator_passes_good_backends_and_names_the_problem_of_bad_ones():
    check_generator(ReprojectGenerator())
    check_generator(FourKPlusOne())
    with pytest.raises(GeneratorCheckError, match="2 poses gave 1 frames"):
        check_generator(WrongCount())
    with pytest.raises(GeneratorCheckError, match="seed every random source"):
        check_generator(Unseeded())


def test_world_checks_its_generator_output_and_inputs():
    world = World(Seed([SCENE.render(start_pose(), INTRINSICS)]), generator=WrongCount())
    with pytest.raises(PreconditionError, match="returned 1 frames for a chunk of 2"):
        world.step([start_pose(5.0), start_pose(10.0)])
    with pytest.raises(PreconditionError, match="returns no depth"):
        World(Seed([SCENE.render(start_pose(), INTRINSICS)]), generator=Unseeded())
    world = new_world(max_poses_per_step=3)
    with pytest.raises(InvalidInputError, match="at least one pose"):
        world.step([])
    with pytest.raises(LimitExceededError, match="limit is 3"):
        world.step([start_pose()] * 4)
    with pytest.raises(InvalidInputError, match="dynamic mask 0"):
        world.step([start_pose()], dynamic_masks=[np.zeros((3, 3), bool)])
    with pytest.raises(InvalidInputError, match="not a Pose"):
        world.step([np.eye(4)])


def test_condition_is_what_render_and_step_use():
    world = new_world(memory=MemoryConfig(k=3))
    poses = [start_pose(10.0), start_pose(20.0)]
    anchored = world.condition(poses)
    assert len(anchored.renders) == 2 and 1 <= len(anchored.anchor_ids) == len(anchored.references) <= 3
    assert anchored.retrieve_s >= 0 and anchored.render_weave_s > 0
    for render, again in zip(anchored.renders, world.render(poses)):
        np.testing.assert_array_equal(render.rgb, again.rgb)
    voxels = world.condition(poses, mode="global")
    assert voxels.references == [] and voxels.anchor_ids == [] and voxels.renders[0].mask.mean() > 0.5
    before = world.condition(poses[:1]).renders[0]
    frame = world.step(poses[:1]).frames[0]
    np.testing.assert_array_equal(frame.condition.rgb, before.rgb)
    np.testing.assert_array_equal(frame.condition.depth, before.depth)
    with pytest.raises(InvalidInputError, match="at least one pose"):
        world.condition([])
    with pytest.raises(InvalidInputError, match="k"):
        world.condition(poses, k=0)


def test_queries_and_changes_follow_steps_edits_and_loads(tmp_path):
    world = World(Seed([SCENE.render(start_pose(), INTRINSICS)]), query_reach=QueryReach(nearest_m=1.0, clearance_m=0.1))
    queries = world.queries
    assert queries is world.queries and (queries.max_distance_m, queries.max_clearance_m) == (1.0, 0.1)
    pose = start_pose()
    centre = pose.cam_to_world(np.array([[0.0, 0.0, float(SCENE.render(pose, INTRINSICS).depth[48, 64])]]))
    assert queries.nearest(centre, 0.5).distance_m[0] < 0.1
    snapshot = world.changes_since(0)
    assert snapshot.is_snapshot and len(snapshot.added) == len(world.memory.voxel_map)
    version = world.version
    removed = world.remove(Sphere(centre[0], 0.3))
    assert removed > 0 and len(world.changes_since(version).removed_keys) == removed
    assert world.queries.nearest(centre, 0.5).distance_m[0] > 0.25, "the edit reaches the queries"
    world.step([start_pose(10.0)])
    world.save(tmp_path / "w")
    loaded = World.load(tmp_path / "w", query_reach=QueryReach(nearest_m=1.0, clearance_m=0.1))
    points = pose.position + np.random.default_rng(0).normal(scale=0.5, size=(50, 3))
    np.testing.assert_array_equal(loaded.queries.nearest(points, 1.0).distance_m, world.queries.nearest(points, 1.0).distance_m)
    with pytest.raises(InvalidInputError, match="newer than the world's version"):
        world.changes_since(world.version + 1)
    with pytest.raises(InvalidInputError, match="nearest_m"):
        QueryReach(nearest_m=0.0)


def test_save_and_load_continue_identically(tmp_path):
    world = new_world(memory=MemoryConfig(k=3))
    world.step(loop_poses()[:3])
    world.save(tmp_path / "w")
    loaded = World.load(tmp_path / "w")
    assert (loaded.version, loaded.frame_count, loaded.config) == (world.version, world.frame_count, world.config)
    for pose in loop_poses()[3:6]:
        a, b = world.step([pose]).frames[0], loaded.step([pose]).frames[0]
        np.testing.assert_array_equal(a.rgb, b.rgb)
        assert (a.frame_id, a.version) == (b.frame_id, b.version)
