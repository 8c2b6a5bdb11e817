"""Confidence from the generator to memory: guesses (confidence 0) never enter the voxel map or an anchor's points,
fusion weighs each pixel by its confidence, voxels keep and save their confidence, old saved worlds still load, and
backends that return malformed confidences are refused by name."""

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from worldweave.bridge.eval.scenes import heading_pose, make_room
from worldweave.bridge.frames import RenderResult, RGBDFrame
from worldweave.bridge.generators.base import Condition, GenerationResult, Generator, kept_confidence
from worldweave.bridge.generators.checker import GeneratorCheckError, check_generator
from worldweave.bridge.generators.continuation import ContinuationGenerator
from worldweave.bridge.generators.depth import DepthEstimator, DepthPrediction
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.bridge.generators.reproject import ReprojectGenerator
from worldweave.bridge.memory.spatial_memory import MemoryConfig, SpatialMemory
from worldweave.bridge.memory.voxel_map import Source, VoxelMap
from worldweave.bridge.memory.weave import WeaveOptions, weave
from worldweave.bridge.queries.occupancy import Occupancy
from worldweave.bridge.world import Seed, World, WorldConfig
from worldweave.proto.errors import InvalidFrameError, PreconditionError
from worldweave.proto.geometry import Intrinsics, Pose

INTRINSICS = Intrinsics.from_fov(96, 72, fov_x_deg=70.0)
SCENE = make_room(seed=3)


def start_pose(yaw_deg: float = 0.0) -> Pose:
    return heading_pose(SCENE.start_position_m, SCENE.start_heading_rad + np.radians(yaw_deg), pitch_deg=-10.0)


def wall(color: int, confidence: np.ndarray | None = None, intrinsics: Intrinsics = INTRINSICS) -> RGBDFrame:
    """A flat grey wall 2 m in front of an identity camera."""
    h, w = intrinsics.shape
    return RGBDFrame(np.full((h, w, 3), color, np.uint8), np.full((h, w), 2.0, np.float32), Pose.identity(),
                     intrinsics, confidence)


def pixels_of(points_world: np.ndarray, pose: Pose, intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Rounded pixel columns and rows of world points seen from ``pose`` (points behind the camera dropped)."""
    cam = pose.world_to_cam(points_world)
    cam = cam[cam[:, 2] > 0]
    u = np.rint(intrinsics.fx * cam[:, 0] / cam[:, 2] + intrinsics.cx).astype(int)
    v = np.rint(intrinsics.fy * cam[:, 1] / cam[:, 2] + intrinsics.cy).astype(int)
    return u, v


def test_confidence_zero_pixels_enter_neither_the_voxel_map_nor_the_anchor():
    h, w = INTRINSICS.shape
    confidence = np.ones((h, w), np.float32)
    confidence[:, : w // 2] = 0.0
    confidence[:, w // 2 :] = 0.75
    memory = SpatialMemory()
    update = memory.integrate(wall(200, confidence), frame_id=0)
    assert update.anchor_id == 0 and update.voxels.points == h * (w - w // 2)

    voxels = memory.voxel_map.voxels()
    u, _ = pixels_of(voxels.positions_m, Pose.identity(), INTRINSICS)
    assert len(voxels) > 0 and u.min() >= w // 2 - 1, "no voxel where the frame was a guess"
    np.testing.assert_allclose(voxels.confidence, 0.75, atol=1e-6)

    anchor = memory.anchors[0]
    u, _ = pixels_of(anchor.points_world(), Pose.identity(), INTRINSICS)
    assert len(u) > 0 and u.min() >= w // 2 - 1, "no anchor point where the frame was a guess"
    assert np.all(anchor.depth[:, : w // 2] == 0), "guessed depth is not kept: it never counts as seen-through"
    np.testing.assert_allclose(anchor.point_confidence, 0.75, atol=1e-6)

    nothing = SpatialMemory()
    update = nothing.integrate(wall(200, np.zeros((h, w), np.float32)), frame_id=0)
    assert len(nothing.voxel_map) == 0 and update.voxels.points == 0
    assert update.anchor_id is None and len(nothing.anchors) == 0, "a frame of guesses makes no (empty) anchor"
    assert update.voxels.version == nothing.voxel_map.version == 1, "a frame always has its own version"


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_fusion_weight_is_proportional_to_confidence(backend):
    h, w = INTRINSICS.shape
    moved = {}
    for level in (1.0, 0.5):
        vmap = VoxelMap(0.05, backend=backend)
        vmap.integrate(wall(200), frame_id=0, source=Source.SEED)
        vmap.integrate(wall(50, np.full((h, w), level, np.float32)), frame_id=1)
        voxels = vmap.voxels()
        moved[level] = 200.0 - voxels.colors[:, 0].astype(float)
        # Each voxel got n full-weight points, then n points of weight `level`: the mean moves level / (1 + level).
        np.testing.assert_allclose(moved[level], 150.0 * level / (1.0 + level), atol=0.51)
        np.testing.assert_allclose(voxels.confidence, (1.0 + level * level) / (1.0 + level), rtol=1e-5)
    assert np.all(moved[0.5] < moved[1.0] - 20), "a half-confidence frame moves the colour less"


def test_fused_kernel_and_torch_path_weigh_confidence_alike():
    rng = np.random.default_rng(0)
    maps = {name: VoxelMap(0.05, backend=name) for name in ("numba", "torch")}
    for frame_id, yaw in enumerate((0.0, 15.0, 30.0)):
        view = SCENE.render(start_pose(yaw), INTRINSICS)
        confidence = rng.choice(np.array([0.0, 0.2, 0.5, 1.0], np.float32), size=INTRINSICS.shape)
        frame = RGBDFrame(view.rgb, view.depth, view.pose, INTRINSICS, confidence)
        points = {name: vmap.integrate(frame, frame_id=frame_id).points for name, vmap in maps.items()}
        assert points["numba"] == points["torch"] == int(((view.depth > 0) & (confidence > 0)).sum())
    a, b = (maps[name].voxels().sorted_by_key() for name in ("numba", "torch"))
    np.testing.assert_array_equal(a.keys, b.keys)
    assert np.abs(a.colors.astype(int) - b.colors).max() <= 1
    np.testing.assert_allclose(a.confidence, b.confidence, rtol=1e-4)
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-4)
    assert 0.2 <= a.confidence.min() and a.confidence.max() <= 1.0 and np.ptp(a.confidence) > 0.5


def test_an_inserted_point_opens_a_line_of_sight_only_where_the_anchor_held_no_depth():
    """An inserted point painted into an anchor where it held no depth makes a new line of sight, observed as before;
    one painted in front of a guess (depth the anchor holds, on a line nobody observed) leaves that line unobserved."""
    h, w = INTRINSICS.shape
    confidence = np.full((h, w), 0.8, np.float32)
    confidence[:, : w // 3] = 0.0  # no depth there
    memory = SpatialMemory()
    memory.integrate(wall(120, confidence), frame_id=0, observed=np.zeros((h, w), bool))
    assert not memory.anchors[0].observed.any()
    for column in (w // 6, 2 * w // 3):  # in the empty third, then in front of the guessed wall
        ray = INTRINSICS.backproject(np.ones((h, w), np.float32))[h // 2, column]
        memory.insert((ray * 1.0)[None].astype(np.float32), np.array([[255, 0, 0]], np.uint8))
    observed = memory.anchors[0].observed
    assert observed[h // 2, w // 6] and observed[:, : w // 3].sum() < 50, "only the painted empty pixels"
    assert not observed[:, w // 3 :].any(), "painted over a guess: still unobserved"
    assert memory.anchors[0].depth[h // 2, 2 * w // 3] == pytest.approx(1.0, abs=0.05), "the point was painted"


def test_voxel_and_anchor_confidence_are_saved_and_loaded(tmp_path: Path):
    h, w = INTRINSICS.shape
    confidence = np.tile(np.linspace(0.1, 1.0, w, dtype=np.float32), (h, 1))
    observed = np.zeros((h, w), bool)
    observed[:, : w // 3] = True
    memory = SpatialMemory()
    memory.integrate(wall(120, confidence), frame_id=0, observed=observed)
    memory.insert(np.array([[0.0, 0.0, 5.0]], np.float32), np.array([[255, 0, 0]], np.uint8))
    memory.save(tmp_path / "memory")
    back = SpatialMemory.load(tmp_path / "memory")
    before, after = memory.voxel_map.voxels().sorted_by_key(), back.voxel_map.voxels().sorted_by_key()
    np.testing.assert_array_equal(after.confidence, before.confidence)
    assert before.confidence.min() < 0.2 and before.confidence[before.sources == Source.INSERTED].tolist() == [1.0]
    np.testing.assert_array_equal(back.anchors[0].point_confidence, memory.anchors[0].point_confidence)
    assert np.ptp(memory.anchors[0].point_confidence) > 0.5
    np.testing.assert_array_equal(back.anchors[0].observed, memory.anchors[0].observed)
    assert 0 < memory.anchors[0].observed.mean() < 0.5, "the inserted point opened no line the wall's depth held"


def _to_format_1(folder: Path) -> None:
    """Rewrite a saved world into the layout saved before confidence existed (voxel map and anchor store format 1)."""
    for sub, arrays in (("memory/voxels", ("confidence",)), ("memory/anchors", ("point_confidence", "observed"))):
        path = folder / sub / "manifest.json"
        manifest = json.loads(path.read_text())
        assert manifest["format_version"] >= 2  # the voxel map is at 3 (surface points), which format 1 never reads
        manifest["format_version"] = 1
        for array in arrays:
            del manifest["files"][array]
            for file in (folder / sub).rglob(f"{array}.npy"):
                file.unlink()
        path.write_text(json.dumps(manifest))


def test_a_world_saved_before_confidence_loads_with_confidence_one(tmp_path: Path):
    world = World(Seed([SCENE.render(start_pose(), INTRINSICS)]), generator=ReprojectGenerator())
    world.step([start_pose(10.0)])
    world.save(tmp_path / "world")
    _to_format_1(tmp_path / "world")
    assert not list((tmp_path / "world").rglob("*confidence.npy")), "the old layout has no confidence arrays"
    assert not list((tmp_path / "world").rglob("observed.npy"))

    loaded = World.load(tmp_path / "world", generator=ReprojectGenerator())
    voxels = loaded.memory.voxel_map.voxels()
    assert len(voxels) == len(world.memory.voxel_map) and np.all(voxels.confidence == 1.0)
    assert all(np.all(anchor.point_confidence == 1.0) for anchor in loaded.memory.anchors)
    assert all(np.all(anchor.observed) for anchor in loaded.memory.anchors), "every line of sight counts, as it did"
    assert loaded.step([start_pose(20.0)]).frames[0].frame_id == world.frame_count


class BadConfidence(Generator):
    """The ``echo`` backend with one kind of broken confidence."""

    name: ClassVar[str] = "bad-confidence"
    max_frames: ClassVar[int] = 4
    returns_depth: ClassVar[bool] = True

    def __init__(self, fault: str) -> None:
        self.fault = fault

    def generate(self, condition: Condition) -> GenerationResult:
        result = EchoGenerator().generate(condition)
        confidences = [c.copy() for c in result.confidences]
        if self.fault == "shape":
            confidences[0] = confidences[0][:-1]
        elif self.fault == "nan":
            confidences[0][0, 0] = np.nan
        elif self.fault == "range":
            confidences[0][0, 0] = 1.5
        elif self.fault == "count":
            confidences = confidences[:-1]
        return GenerationResult(result.frames, result.depths, confidences=tuple(confidences))


@pytest.mark.parametrize(
    "fault, message",
    [("shape", r"confidence 0 must have shape"), ("nan", r"confidence 0 has nan"), ("range", r"confidence 0 has 1.5"),
     ("count", r"confidences 1")],
)
def test_malformed_confidence_is_refused_naming_the_backend(fault, message):
    with pytest.raises(GeneratorCheckError, match=rf"'bad-confidence'.*{message}"):
        check_generator(BadConfidence(fault))
    world = World(Seed([SCENE.render(start_pose(), INTRINSICS)]), generator=BadConfidence(fault))
    with pytest.raises(PreconditionError, match=rf"generator 'bad-confidence' .*{message}"):
        world.step([start_pose(5.0), start_pose(10.0)])
    assert world.frame_count == 1, "nothing was fused"
    with pytest.raises(InvalidFrameError, match="confidence has 1.5 at pixel"):
        wall(0, np.full(INTRINSICS.shape, 1.5, np.float32))


def test_built_in_backends_pass_the_confidence_checks():
    check_generator(ReprojectGenerator())
    check_generator(EchoGenerator())


class ConfidentReproject(ReprojectGenerator):
    """``reproject`` claiming its filled holes are real surfaces: what fused guesses before confidence."""

    name: ClassVar[str] = "confident-reproject"

    def generate(self, condition: Condition) -> GenerationResult:
        result = super().generate(condition)
        ones = tuple(np.ones_like(c) for c in result.confidences)
        return GenerationResult(result.frames, result.depths, confidences=ones)


def _voxels_in_holes(generator: Generator) -> tuple[int, int, RenderResult, np.ndarray]:
    """Step a world seeded at the start view to a view turned 40 degrees (about half unseen). Returns the new voxels
    that project into the view's holes (2-pixel margin), all new voxels, the condition and the fused confidence."""
    world = World(Seed([SCENE.render(start_pose(), INTRINSICS)]), generator=generator)
    before = set(world.memory.voxel_map.voxels().keys.tolist())
    pose = start_pose(40.0)
    frame = world.step([pose]).frames[0]
    voxels = world.memory.voxel_map.voxels()
    new = np.array([k not in before for k in voxels.keys.tolist()])
    covered = frame.condition.mask
    h, w = covered.shape
    near = np.zeros_like(covered)
    for dv in range(-2, 3):
        for du in range(-2, 3):
            near |= np.roll(np.roll(covered, dv, axis=0), du, axis=1)
    u, v = pixels_of(voxels.positions_m[new], pose, INTRINSICS)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    in_holes = int((~near[v[inside], u[inside]]).sum())
    return in_holes, int(new.sum()), frame.condition, frame.confidence


def test_reproject_holes_are_guesses_and_never_enter_memory():
    in_holes, _, condition, confidence = _voxels_in_holes(ReprojectGenerator())
    holes = ~condition.mask
    assert 0.3 < holes.mean() < 0.8, "the view is about half unseen"
    landed = condition.mask & (condition.confidence > 0)
    # Fused with memory's confidence, but for the few pixels at the edge of the seed's view whose line of sight
    # leaves the space it saw through (``line_of_sight``).
    fused = landed & (confidence > 0)
    assert np.all(confidence[holes] == 0) and np.array_equal(confidence[fused], condition.confidence[fused])
    assert fused.sum() > 0.95 * landed.sum()
    assert (confidence[landed] == 1).mean() > 0.9, "the seed's pixels, where memory's points land, are certain"
    assert in_holes == 0, "no voxel appears where memory was empty"
    guessed, _, _, _ = _voxels_in_holes(ConfidentReproject())
    assert guessed > 100, "claimed at confidence 1, the same blur would have entered memory"


def test_kept_pixels_seen_through_space_no_keyframe_saw_are_shown_not_fused():
    """Memory re-rendered from behind the seed's camera shows the seed's surfaces along lines of sight that cross
    space no keyframe saw through (behind that camera): those pixels are shown (memory's colour and depth) with
    confidence 0, so nothing carves that space free; stepped forward instead, inside what the seed saw through, the
    same kind of pixels are fused with memory's confidence."""
    start = start_pose()
    forward = start.rotation[:, 2]
    behind = start.position - 0.5 * forward
    world = World(Seed([SCENE.render(start, INTRINSICS)]), generator=ReprojectGenerator())
    back = world.step([Pose(start.rotation, start.position - 1.0 * forward)]).frames[0]
    kept = back.condition.mask & (back.condition.depth > 0)
    assert kept.mean() > 0.3 and np.all(back.confidence[kept] == 0) and np.all(back.depth[kept] > 0)
    assert world.queries.occupancy(behind[None])[0] == Occupancy.UNKNOWN
    ahead = world.step([Pose(start.rotation, start.position + 0.3 * forward)]).frames[0]
    kept = ahead.condition.mask & (ahead.condition.depth > 0)
    landed = kept & (ahead.condition.confidence > 0)
    assert kept.mean() > 0.5 and (ahead.confidence[landed] > 0).mean() > 0.9
    np.testing.assert_array_equal(ahead.confidence[landed & (ahead.confidence > 0)],
                                  ahead.condition.confidence[landed & (ahead.confidence > 0)])


class TruthInTheHoles(Generator):
    """Memory's pixels where its render covers them (``echo``); elsewhere the exact room's depth at ``sure``
    confidence: where memory showed nothing, a guess (below 1) or what the backend is certain of (1)."""

    name: ClassVar[str] = "truth-in-the-holes"
    returns_depth: ClassVar[bool] = True

    def __init__(self, sure: float) -> None:
        self.sure = np.float32(sure)

    def generate(self, condition: Condition) -> GenerationResult:
        render, pose = condition.renders[0], condition.poses[0]
        truth = SCENE.render(pose, condition.intrinsics)
        holes = ~(render.mask & (render.depth > 0)) & (truth.depth > 0)
        depth = np.where(holes, truth.depth, render.depth).astype(np.float32)
        confidence = np.where(holes, self.sure, kept_confidence(render)).astype(np.float32)
        return GenerationResult((np.where(holes[..., None], truth.rgb, render.rgb),), (depth,),
                                confidences=(confidence,))


@pytest.mark.parametrize("sure", [0.8, 1.0])
def test_a_guess_where_memory_showed_nothing_is_a_surface_not_free_space_in_front_of_it(sure):
    """A generated pixel memory's render did not cover is fused at its confidence (0.8: above the default level 0.5)
    as a surface, but its line of sight was never observed: the new anchor marks it unobserved, and the space in front
    of it stays UNKNOWN at the default level (FREE only at level 0, which trusts every guess); lines of sight memory
    showed still make space free. A backend certain of the pixel (confidence 1) observed it: free at every level."""
    start = start_pose()
    world = World(Seed([SCENE.render(start, INTRINSICS)]), generator=TruthInTheHoles(sure))
    turned = start_pose(45.0)
    frame = world.step([turned]).frames[0]
    shown = frame.condition.mask & (frame.condition.depth > 0)
    guessed = ~shown & (frame.confidence > 0)
    assert guessed.mean() > 0.2 and shown.mean() > 0.1
    np.testing.assert_array_equal(frame.confidence[guessed], np.float32(sure))
    anchor = world.memory.anchors[max(world.memory.anchors.ids)]
    assert anchor.frame_id == frame.frame_id, "the turned frame is a keyframe"
    np.testing.assert_array_equal(anchor.observed, shown | (frame.confidence == 1))

    def along(pixels: np.ndarray, share: float) -> np.ndarray:
        v, u = np.nonzero(pixels)
        z = frame.depth[v, u].astype(np.float64) * share
        cam = np.stack([(u - INTRINSICS.cx) / INTRINSICS.fx * z, (v - INTRINSICS.cy) / INTRINSICS.fy * z, z], axis=1)
        return turned.cam_to_world(cam)

    # The guessed lines of sight the seed camera never looked along: half way to the guessed surface.
    middle = along(guessed, 0.5)
    seed_cam = start.world_to_cam(middle)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = INTRINSICS.fx * seed_cam[:, 0] / seed_cam[:, 2] + INTRINSICS.cx
    unseen = middle[(seed_cam[:, 2] <= 0) | (u < -1) | (u > INTRINSICS.width)]
    assert len(unseen) > 50
    queries = world.queries
    assert np.all(queries.occupancy(unseen) == (Occupancy.FREE if sure == 1 else Occupancy.UNKNOWN))
    assert np.all(queries.occupancy(unseen, min_confidence=0.0) == Occupancy.FREE)
    surface = along(guessed, 1.0)
    assert (queries.occupancy(surface) == Occupancy.OCCUPIED).mean() > 0.9, "the guess is a surface at its confidence"
    assert (queries.occupancy(along(shown, 0.5)) == Occupancy.FREE).mean() > 0.9


class MemoryWithPatchEstimator(DepthEstimator):
    """Metric depth of the room at a fixed pose, 50% too far in a patch of the image."""

    def __init__(self, pose: Pose) -> None:
        self.truth = SCENE.render(pose, INTRINSICS).depth

    def estimate(self, rgb: np.ndarray) -> DepthPrediction:
        values = self.truth.copy()
        values[40:56, 20:50] *= 1.5
        return DepthPrediction(values, "metric")


class EchoWithoutDepth(EchoGenerator):
    """``echo``'s frames and confidences with no depth, like the diffusers backends."""

    name: ClassVar[str] = "echo-no-depth"
    returns_depth: ClassVar[bool] = False

    def generate(self, condition: Condition) -> GenerationResult:
        result = super().generate(condition)
        return GenerationResult(result.frames, confidences=result.confidences)


def test_estimated_depth_is_trusted_as_far_as_it_agrees_with_memory():
    pose = start_pose(10.0)
    world = World(Seed([SCENE.render(start_pose(), INTRINSICS)]), generator=EchoWithoutDepth(),
                  depth_estimator=MemoryWithPatchEstimator(pose))
    frame = world.step([pose]).frames[0]
    covered = frame.condition.mask
    agreeing = covered.copy()
    agreeing[38:58, 18:52] = False
    assert covered[40:56, 20:50].mean() > 0.9 and 0.2 < (~covered).mean() < 0.5
    assert np.all(frame.confidence[40:56, 20:50] == 0), "depth 50% off memory's is not trusted"
    assert np.median(frame.confidence[agreeing]) > 0.9
    assert np.all(frame.confidence[~covered] == 0), "no memory to compare: a guess"


def test_the_weaver_blends_the_renders_confidence_with_their_weights():
    h, w = INTRINSICS.shape
    depth = np.full((h, w), 2.0, np.float32)
    mask = np.ones((h, w), bool)
    mask[:, : w // 4] = False
    renders = [RenderResult(np.full((h, w, 3), 50, np.uint8), np.where(mask, depth, 0), mask, np.full((h, w), 0.4)),
               RenderResult(np.full((h, w, 3), 90, np.uint8), depth, np.ones((h, w), bool), np.full((h, w), 1.0))]
    camera = np.zeros((2, 3))
    alone = weave(renders[:1], camera[:1], [1.0], Pose.identity(), INTRINSICS)
    assert np.all(alone.confidence[mask] == np.float32(0.4)) and np.all(alone.confidence[~mask] == 0)
    both = weave(renders, camera, [1.0, 1.0], Pose.identity(), INTRINSICS, WeaveOptions(rank_decay=1.0))
    assert np.allclose(both.confidence[mask], 0.7) and np.all(both.confidence[~mask] == 1.0)
    best = weave(renders, camera, [0.5, 1.0], Pose.identity(), INTRINSICS, WeaveOptions(rank_decay=1.0, blend="best"))
    assert np.all(best.confidence == 1.0)
    # A footprint's spread (confidence 0, 1% off in depth: within the weaver's tolerance) neither bends the depth of
    # a point that lands on the pixel nor takes a share of its confidence; spreads alone blend to confidence 0.
    spread = RenderResult(np.full((h, w, 3), 90, np.uint8), np.full((h, w), 2.02, np.float32), np.ones((h, w), bool),
                          np.zeros((h, w), np.float32))
    mixed = weave([renders[0], spread], camera, [1.0, 1.0], Pose.identity(), INTRINSICS, WeaveOptions(rank_decay=1.0))
    assert np.all(mixed.depth[mask] == 2.0) and np.all(mixed.confidence[mask] == np.float32(0.4))
    assert np.all(mixed.depth[~mask] == np.float32(2.02)) and np.all(mixed.confidence[~mask] == 0)
    assert np.all(mixed.rgb[mask] == 70), "colours still blend over every agreeing anchor"


@pytest.mark.parametrize("retrieval", ["coverage", "global"])
@pytest.mark.parametrize("generator", [ReprojectGenerator, EchoGenerator, ContinuationGenerator])
def test_a_half_sure_surface_renders_half_sure_and_is_never_refused_as_certain(retrieval, generator):
    """Memory holds a wall at confidence 0.4 (a continuation fused once). Rendered, it carries 0.4; a generator that
    keeps it returns 0.4, not 1; revisiting it again and again never raises its voxels' or anchors' confidence."""
    h, w = INTRINSICS.shape
    config = WorldConfig(memory=MemoryConfig(retrieval=retrieval))
    world = World(Seed([wall(120, np.full((h, w), 0.4, np.float32))]), config, generator=generator())
    # (The voxel map's running mean rounds in float32: within a float32 step of 0.4.)
    render = world.render([Pose.identity()])[0]
    assert render.mask.mean() > 0.9 and np.allclose(render.confidence[render.mask], 0.4, rtol=0, atol=1e-6)
    for turn in range(3):
        frame = world.step([Pose.identity()]).frames[0]
        kept = frame.condition.mask & (frame.condition.depth > 0)
        assert kept.mean() > 0.9 and np.all(frame.confidence[kept] <= 0.4 + 1e-6), f"revisit {turn}"
    assert world.memory.voxel_map.voxels().confidence.max() <= 0.4 + 1e-6
    assert max(a.point_confidence.max() for a in world.memory.anchors) <= 0.4 + 1e-6


def test_memory_renders_fuse_only_where_their_points_land_so_footprints_add_no_phantoms():
    """Kept pixels re-fuse memory's own render. A splat's footprint spreads a point's depth over its neighbours'
    pixels, where it lies off the surface (centimetres on a floor seen at a grazing angle, more beside a silhouette);
    fused at memory's confidence, those pixels thickened floors and walls into layers of phantom voxels (13% of the
    voxels here). The render gives them confidence 0 (``bridge.render``): walking up to what the seed saw adds almost
    no voxel off the true surface, and none that is confident."""
    intrinsics = Intrinsics.from_fov(128, 96, fov_x_deg=70.0)
    seed = SCENE.render(start_pose(), intrinsics)
    world = World(Seed([seed]), WorldConfig(memory=MemoryConfig(voxel_size_m=0.05)), generator=ReprojectGenerator())
    forward = start_pose().rotation[:, 2] * np.array([1.0, 1.0, 0.0])
    for step in range(1, 9):
        pose = heading_pose(SCENE.start_position_m + 0.15 * step * forward / np.linalg.norm(forward),
                            SCENE.start_heading_rad + np.radians(4.0 * step), pitch_deg=-25.0)
        frame = world.step([pose]).frames[0]
        kept = frame.condition.mask & (frame.condition.depth > 0)
        assert 0 < (frame.confidence[kept] > 0).mean() < 0.95, "footprint spreads that fit no plane are not fused"
    voxels = world.memory.voxel_map.voxels()
    off = SCENE.distance_m(voxels.positions_m) > 0.05
    confident = voxels.confidence >= 0.5
    assert len(voxels.keys) > 2000 and off.mean() < 0.03, f"{off.sum()} of {len(off)} voxels off the surface"
    assert (off & confident).mean() < 0.003, f"{(off & confident).sum()} confident voxels off the surface"
