"""The ``continue`` generator: the planes memory holds continued into the holes, with their own texture.

Memory here is an exact procedural render with a hole cut out, so every continued depth and colour has exact ground
truth. Images are 96 x 72.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pytest

from worldweave.bridge import cores
from worldweave.bridge.eval import metrics
from worldweave.bridge.eval.scenes import Material, MeshBuilder, Scene, heading_pose, make_room
from worldweave.bridge.eval.trajectories import closed_loop
from worldweave.bridge.frames import RenderResult, RGBDFrame
from worldweave.bridge.generators.base import Condition
from worldweave.bridge.generators.checker import check_generator
from worldweave.bridge.generators.continuation import (
    EDGE_FINE_CELLS,
    SEE_THROUGH_MARGIN_M,
    SEE_THROUGH_MARGIN_SHARE,
    SILHOUETTE_PROBE_SHARE,
    ContinuationGenerator,
    ContinuationOptions,
    PlaneFrame,
    PlaneTexture,
    _cell_keys,
    _crossed_cells,
    _least_squares_plane,
    _key_bounds,
    _mark_cells,
    _merged,
    _nearest_kept,
    fit_planes,
)
from worldweave.bridge.generators.registry import create_generator
from worldweave.bridge.generators.reproject import EMPTY_GREY, ReprojectGenerator
from worldweave.bridge.regions import Sphere
from worldweave.bridge.world import Seed, World, WorldConfig
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose

INTRINSICS = Intrinsics.from_fov(96, 72, fov_x_deg=75.0)
TOLERANCE_M = 0.05


@pytest.fixture(scope="module")
def room() -> Scene:
    return make_room(0)


@pytest.fixture(scope="module")
def checker_floor() -> Scene:
    """A 20 x 20 m floor at z = 0 of 0.4 m black and white squares, nothing else (the sky has depth 0)."""
    builder = MeshBuilder()
    checker = Material("checker", (220, 220, 220), (40, 40, 40), scale_m=0.4, variation=0.0, grain=0.0)
    builder.quad(np.array([-10.0, -10.0, 0.0]), np.array([20.0, 0.0, 0.0]), np.array([0.0, 20.0, 0.0]), checker)
    free = ((np.array([-1.0, -1.0, 0.5]), np.array([1.0, 1.0, 2.0])),)
    return Scene("checker-floor", builder, free_space=free, start_position_m=np.array([0.0, 0.0, 1.5]),
                 start_heading_rad=0.0)


@pytest.fixture(scope="module")
def noise_floor() -> Scene:
    """A 20 x 20 m floor at z = 0 of smooth value noise (no period), nothing else."""
    builder = MeshBuilder()
    noise = Material("noise", (200, 170, 90), (60, 90, 160), scale_m=0.25, variation=0.5, seed=3)
    builder.quad(np.array([-10.0, -10.0, 0.0]), np.array([20.0, 0.0, 0.0]), np.array([0.0, 20.0, 0.0]), noise)
    free = ((np.array([-1.0, -1.0, 0.5]), np.array([1.0, 1.0, 2.0])),)
    return Scene("noise-floor", builder, free_space=free, start_position_m=np.array([0.0, 0.0, 1.5]),
                 start_heading_rad=0.0)


def memory_of(truth: RGBDFrame, hole: np.ndarray) -> RenderResult:
    """What memory would render: the exact view with ``hole`` (bool (H, W)) and the sky uncovered."""
    covered = (truth.depth > 0) & ~hole
    return RenderResult(np.where(covered[..., None], truth.rgb, 0).astype(np.uint8),
                        np.where(covered, truth.depth, 0).astype(np.float32), covered)


def generate(generator, pose: Pose, render: RenderResult, seed: int = 0):
    return generator.generate(Condition((pose,), INTRINSICS, (render,), seed=seed))


def world_points(frame: RGBDFrame) -> np.ndarray:
    """(H, W, 3) world points behind the exact frame's pixels (metres)."""
    points_cam = frame.intrinsics.backproject(frame.depth.astype(np.float64)).reshape(-1, 3)
    return frame.pose.cam_to_world(points_cam).reshape(*frame.depth.shape, 3)


def rectangle(rows: slice, cols: slice) -> np.ndarray:
    hole = np.zeros(INTRINSICS.shape, bool)
    hole[rows, cols] = True
    return hole


def test_passes_the_generator_check_and_is_registered():
    check_generator(ContinuationGenerator())
    assert isinstance(create_generator("continue"), ContinuationGenerator)
    with pytest.raises(InvalidInputError, match="reach_m"):
        ContinuationGenerator(reach_m=-1.0)


@pytest.mark.parametrize(
    ("pose", "hole", "on_plane"),
    [
        (Pose.look_at([0.0, 0.0, 1.5], [1.5, 0.0, 0.0]), rectangle(slice(20, 52), slice(24, 72)),
         lambda p: np.abs(p[..., 2]) < 0.005),  # the floor, z = 0
        (heading_pose(np.array([0.0, 0.0, 1.4]), math.pi), rectangle(slice(14, 38), slice(20, 76)),
         lambda p: np.abs(p[..., 0] + 3.5) < 0.005),  # the checkered wall, x = -3.5
    ],
    ids=["floor", "wall"],
)
def test_continues_a_plane_into_a_hole_at_its_true_depth(room, pose, hole, on_plane):
    truth = room.render(pose, INTRINSICS)
    render = memory_of(truth, hole)
    result = generate(ContinuationGenerator(), pose, render)
    depth, confidence = result.depths[0], result.confidences[0]

    target = hole & on_plane(world_points(truth))
    assert target.sum() > 0.8 * hole.sum()
    within = np.abs(depth - truth.depth) <= TOLERANCE_M
    assert (within & target).sum() >= 0.9 * target.sum()
    assert np.all((confidence[target & within] > 0) & (confidence[target & within] < 1))  # a middling confidence
    kept = render.mask
    assert np.array_equal(result.frames[0][kept], truth.rgb[kept])
    assert np.array_equal(depth[kept], truth.depth[kept]) and np.all(confidence[kept] == 1)


def test_a_footprints_spread_is_fused_on_the_plane_of_the_landed_pixels_or_not_at_all(room):
    """Memory's points land on every third pixel of every third row (above row 56); their footprints spread over the
    pixels between them with the points' depth (render confidence 0: off the surface, here 3% too far). Between
    landed pixels that fit a plane, a spread pixel takes that plane's depth with their confidence (``kept_depth``):
    the floor is fused whole, at its true depth. Where no landed pixels surround it (the band below row 56, the
    rows beside the hole) it shows memory's colour with depth and confidence 0, not painted over with the fill of the
    holes. No spread pixel is fused off the surface."""
    pose = Pose.look_at([0.0, 0.0, 1.5], [1.5, 0.0, 0.0])
    truth = room.render(pose, INTRINSICS)
    render = memory_of(truth, rectangle(slice(20, 36), slice(24, 72)))
    v, u = np.mgrid[:72, :96]
    landed = render.mask & (v % 3 == 0) & (u % 3 == 0) & (v < 56)
    spread = render.mask & ~landed
    smeared = np.where(landed, truth.depth, 1.03 * truth.depth).astype(np.float32)
    render = RenderResult(render.rgb, np.where(render.mask, smeared, 0), render.mask, landed.astype(np.float32))
    result = generate(ContinuationGenerator(), pose, render)
    depth, confidence = result.depths[0], result.confidences[0]
    floor = np.abs(world_points(truth)[..., 2]) < 0.005
    between = spread & floor & (v >= 42) & (v <= 50) & (u >= 9) & (u <= 86)
    assert between.sum() > 400
    def right(depth: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        return (confidence == 1) & (np.abs(depth - truth.depth) <= 1e-3 * truth.depth)

    assert right(depth, confidence)[between].mean() > 0.95
    fused = spread & (confidence > 0)
    assert np.all(np.abs(depth[fused] - truth.depth[fused]) <= TOLERANCE_M)
    band = spread & (v >= 60)
    assert band.sum() > 1000
    assert np.array_equal(result.frames[0][band], truth.rgb[band])
    assert np.all(depth[band] == 0) and np.all(confidence[band] == 0)
    # The same when memory covers the whole view (no hole to continue).
    full = RenderResult(truth.rgb, smeared, truth.depth > 0, landed.astype(np.float32))
    whole = generate(ContinuationGenerator(), pose, full)
    assert np.array_equal(whole.frames[0], truth.rgb)
    assert np.all(whole.depths[0][band] == 0) and np.all(whole.confidences[0][band] == 0)
    assert right(whole.depths[0], whole.confidences[0])[between].mean() > 0.95
    assert np.array_equal(whole.depths[0][landed], truth.depth[landed])


@pytest.mark.parametrize(("rows", "columns"), [(slice(20, 44), 4), (slice(24, 40), 3)],
                         ids=["fit-too-small", "no-fit"])
def test_a_remembered_surface_continues_from_a_sliver_of_it(room, rows, columns):
    """A wall memory showed in an earlier view, now shown only as a sliver (too little for a fit to continue from,
    or for any fit): the remembered wall still continues around the sliver at its true depth. A fresh generator,
    which remembers no wall, continues nothing from the same sliver."""
    pose = heading_pose(np.array([0.0, 0.0, 1.4]), math.pi)
    truth = room.render(pose, INTRINSICS)
    wall = (truth.depth > 0) & (np.abs(world_points(truth)[..., 0] + 3.5) < 0.005)  # the checkered wall, x = -3.5
    sliver = wall & rectangle(rows, slice(40, 40 + columns))
    generator = ContinuationGenerator()
    generate(generator, pose, memory_of(truth, rectangle(slice(14, 38), slice(20, 76))))  # the wall, shown widely

    result = generate(generator, pose, memory_of(truth, ~sliver))
    continued = ~sliver & (result.confidences[0] > 0)
    around = wall & ~sliver & rectangle(slice(16, 48), slice(33, 50))
    assert around.sum() > 300
    within = np.abs(result.depths[0] - truth.depth) <= TOLERANCE_M
    assert np.all(continued[around] & within[around])
    assert continued.sum() > 0.5 * wall.sum() and np.all(within[continued])  # on the wall, nowhere else
    fresh = generate(ContinuationGenerator(), pose, memory_of(truth, ~sliver))
    assert not np.any(~sliver & (fresh.confidences[0] > 0))


def test_leaves_what_no_plane_explains_unknown(checker_floor):
    pose = heading_pose(np.array([0.0, 0.0, 1.5]), 0.0)  # level: the upper half of the image looks at the sky
    truth = checker_floor.render(pose, INTRINSICS)
    hole = rectangle(slice(56, 72), slice(30, 60))
    result = generate(ContinuationGenerator(), pose, memory_of(truth, hole))
    rays_world = INTRINSICS.pixel_rays(np.float64) @ pose.rotation.T
    upward = rays_world[..., 2] >= 0
    assert upward.sum() >= 0.45 * upward.size
    assert np.all(result.depths[0][upward] == 0) and np.all(result.confidences[0][upward] == 0)
    assert np.all(result.confidences[0][hole] > 0)  # the hole in the floor is floor

    empty = generate(ContinuationGenerator(), pose, RenderResult.empty(INTRINSICS))
    assert empty.frames[0].shape == (72, 96, 3) and np.all(empty.frames[0] == EMPTY_GREY)
    assert np.all(empty.depths[0] == 0) and np.all(empty.confidences[0] == 0)


def test_a_checkerboard_continues_as_a_checkerboard(checker_floor):
    pose = Pose.look_at([0.0, 0.0, 1.5], [2.0, 0.0, 0.0])
    truth = checker_floor.render(pose, INTRINSICS)
    hole = rectangle(slice(24, 56), slice(20, 76))
    render = memory_of(truth, hole)

    def in_phase(frame: np.ndarray) -> float:
        """Share of hole pixels within 40 grey levels of the exact checkerboard."""
        error = np.abs(frame.astype(np.float64).mean(axis=2) - truth.rgb.astype(np.float64).mean(axis=2))
        return float((error[hole] <= 40).mean())

    result = generate(ContinuationGenerator(), pose, render)
    assert np.all(result.confidences[0][hole] > 0)
    assert in_phase(result.frames[0]) >= 0.85
    grey = result.frames[0].astype(np.float64).mean(axis=2)
    seen_spread = grey[render.mask].std()
    assert abs(grey[hole].std() - seen_spread) <= 0.2 * seen_spread  # black and white squares, not grey fog
    assert in_phase(ReprojectGenerator().generate(Condition((pose,), INTRINSICS, (render,))).frames[0]) < 0.6


def test_same_condition_gives_identical_output(room):
    pose = Pose.look_at([0.0, 0.0, 1.5], [1.5, 0.0, 0.0])
    render = memory_of(room.render(pose, INTRINSICS), rectangle(slice(20, 52), slice(24, 72)))
    generator = ContinuationGenerator()
    results = [generate(generator, pose, render, seed=7), generate(generator, pose, render, seed=7),
               generate(ContinuationGenerator(), pose, render, seed=7)]
    for other in results[1:]:
        assert np.array_equal(other.frames[0], results[0].frames[0])
        assert np.array_equal(other.depths[0], results[0].depths[0])
        assert np.array_equal(other.confidences[0], results[0].confidences[0])


def test_two_views_of_a_continued_surface_see_the_same_texture(noise_floor):
    """A patch of floor memory never held, continued in one view and then in another: the same floor point has the
    same colour in both (the texture lives in the floor's own coordinates, not in either image, and is built once: a
    floor without a period, tiled from each view's own exemplar, would disagree)."""
    first = Pose.look_at([0.0, 0.0, 1.5], [1.2, 0.0, 0.0])
    second = Pose.look_at([0.3, 0.5, 1.4], [1.4, -0.1, 0.0])

    def view(generator, pose):
        truth = noise_floor.render(pose, INTRINSICS)
        points = world_points(truth)
        patch = (truth.depth > 0) & (np.abs(points[..., 0] - 1.2) < 0.4) & (np.abs(points[..., 1]) < 0.4)
        result = generate(generator, pose, memory_of(truth, patch))
        return result, patch & (result.confidences[0] > 0), points

    generator = ContinuationGenerator()
    first_result, first_continued, _ = view(generator, first)
    second_result, second_continued, second_points = view(generator, second)
    assert first_continued.sum() > 300 and second_continued.sum() > 300

    # Each continued pixel of the second view, seen from the first: where that pixel was continued too, compare.
    uv, z = INTRINSICS.project(first.world_to_cam(second_points[second_continued]))
    u, v = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    inside = (z > 0) & (u >= 0) & (u < 96) & (v >= 0) & (v < 72)
    both = np.zeros(len(u), bool)
    both[inside] = first_continued[v[inside], u[inside]]
    assert both.sum() > 200
    a = first_result.frames[0][v[both], u[both]].astype(np.float64)
    b = second_result.frames[0][second_continued][both].astype(np.float64)
    # The same texel shows the same colour (neighbouring texels differ, so only a share of points match exactly; a
    # texture rebuilt from the second view's own exemplar matches at about 7% of them).
    assert np.mean(np.abs(a - b).mean(axis=1) <= 1) >= 0.3


def test_what_was_continued_is_not_grown_from_again(checker_floor):
    """Memory shows the floor up to x = 2 m. The floor is continued at most ``reach_m`` beyond that, at
    ``continued_confidence``; when memory then holds the continued strip at the confidence it was continued with (as
    fused), the floor still ends within reach of what memory was shown, for this instance and for a fresh one (a
    reloaded world): a guess never becomes the base of the next guess (a wall cannot creep past a corner frame after
    frame), and it is never surer than what it grew from."""
    pose = Pose.look_at([0.0, 0.0, 1.5], [3.0, 0.0, 0.0])
    truth = checker_floor.render(pose, INTRINSICS)
    x = world_points(truth)[..., 0]
    generator = ContinuationGenerator()
    reach_m = generator.options.reach_m
    bound_m = 2.0 + reach_m + 2 * generator.options.support_cell_m  # a support cell, and the cell the hit falls in
    floor = truth.depth > 0

    def memory(held_confidence: np.ndarray) -> RenderResult:
        covered = floor & (held_confidence > 0)
        return RenderResult(np.where(covered[..., None], truth.rgb, 0).astype(np.uint8),
                            np.where(covered, truth.depth, 0).astype(np.float32), covered,
                            np.where(covered, held_confidence, 0).astype(np.float32))

    seen = np.where(x <= 2.0, 0.8, 0.0).astype(np.float32)
    first = generate(generator, pose, memory(seen))
    continued = floor & (x > 2.0) & (first.confidences[0] > 0)
    assert x[continued].max() > 2.0 + 0.8 * reach_m
    assert x[continued].max() <= bound_m
    assert np.all(first.confidences[0][continued] == np.float32(0.4))  # half of what it grew from
    held = np.where(continued, first.confidences[0], seen)
    for again in (generator, ContinuationGenerator()):
        second = generate(again, pose, memory(held), seed=1)
        assert np.all(second.confidences[0][floor & (x > bound_m)] == 0)


@pytest.mark.parametrize("occluder_confidence", [1.0, 0.5, 0.0], ids=["seen", "continued", "footprint"])
def test_only_what_memory_saw_in_front_of_a_plane_stops_it(checker_floor, occluder_confidence):
    """Memory shows the floor up to x = 2 m, then clutter standing in front of it up to x = 2.3 m, then nothing. Seen
    clutter (confidence 1) may hide the floor behind it: the floor does not grow past it. Clutter memory holds only as
    a continuation (``continued_confidence``) or a footprint's spread (confidence 0) is no evidence that the floor
    ends there: the floor continues past it, within ``reach_m`` of what memory showed."""
    pose = Pose.look_at([0.0, 0.0, 1.5], [3.0, 0.0, 0.0])
    truth = checker_floor.render(pose, INTRINSICS)
    x, y = world_points(truth)[..., 0], world_points(truth)[..., 1]
    floor = truth.depth > 0
    clutter = floor & (x > 2.0) & (x <= 2.3)
    covered = floor & (x <= 2.3)
    nearer = np.random.default_rng(0).uniform(0.55, 0.75, truth.depth.shape)  # no plane: a heap of things
    depth = np.where(clutter, truth.depth * nearer, np.where(covered, truth.depth, 0.0)).astype(np.float32)
    confidence = np.where(clutter, occluder_confidence, np.where(covered, 1.0, 0.0)).astype(np.float32)
    render = RenderResult(np.where(covered[..., None], truth.rgb, 0).astype(np.uint8), depth, covered, confidence)
    result = generate(ContinuationGenerator(), pose, render)
    beyond = floor & (x > 2.35) & (x < 2.65) & (np.abs(y) < 0.5)  # far from the clutter's ends: no way around
    assert beyond.sum() > 50
    if occluder_confidence == 1.0:
        assert np.all(result.confidences[0][beyond] == 0)
    else:
        right = (result.confidences[0] > 0) & (np.abs(result.depths[0] - truth.depth) <= TOLERANCE_M)
        assert right[beyond].mean() > 0.9


def test_a_plane_memory_showed_on_both_sides_of_what_stood_in_front_runs_on_behind_it(checker_floor):
    """A first view shows the floor with a heap of things memory saw (confidence 1) standing in front of it over
    x 2.0-2.3 m, |y| < 0.3 m, and the floor all around the heap. In a second view from the same pose memory holds no
    heap (its points were removed): a hole. The floor was shown on both sides of the cells the heap stood in front
    of, so it runs on behind where the heap stood: the hole gets the floor's depth. (A floor shown only up to what
    stands in front of it stops there: ``test_only_what_memory_saw_in_front_of_a_plane_stops_it``.)"""
    pose = Pose.look_at([0.0, 0.0, 1.5], [3.0, 0.0, 0.0])
    truth = checker_floor.render(pose, INTRINSICS)
    x, y = world_points(truth)[..., 0], world_points(truth)[..., 1]
    floor = (truth.depth > 0) & (x <= 3.0)
    heap = floor & (x > 2.0) & (x <= 2.3) & (np.abs(y) < 0.3)
    nearer = np.random.default_rng(0).uniform(0.55, 0.75, truth.depth.shape)  # no plane: a heap of things
    depth = np.where(heap, truth.depth * nearer, np.where(floor, truth.depth, 0.0)).astype(np.float32)
    first = RenderResult(np.where(floor[..., None], truth.rgb, 0).astype(np.uint8), depth, floor,
                         floor.astype(np.float32))
    generator = ContinuationGenerator()
    generate(generator, pose, first)
    second = generate(generator, pose, memory_of(truth, heap | ~floor), seed=1)
    # The heap's own pixels see the floor behind it from this pose; those within a pixel of the floor memory shows
    # lie on the support's border cells.
    inner = heap & (x > 2.05) & (x < 2.25) & (np.abs(y) < 0.25)
    assert inner.sum() > 20
    right = (second.confidences[0] > 0) & (np.abs(second.depths[0] - truth.depth) <= TOLERANCE_M)
    assert right[inner].mean() > 0.9


FRONT_INTRINSICS = Intrinsics.from_fov(160, 120, fov_x_deg=75.0)


def front_and_wall_view(front_x: float, top_m: float, wall_x: float) -> tuple[RGBDFrame, np.ndarray, np.ndarray]:
    """A box's front (x = ``front_x``, ``top_m`` tall) stands before a wall (x = ``wall_x``), seen at 160 x 120 from
    (0, 0, 1.6) looking at the wall at 1.2 m: the exact view, and bool (H, W) masks of the pixels that see the wall
    and the front."""
    builder = MeshBuilder()
    stripes = Material("stripes", (200, 170, 220), (60, 40, 90), scale_m=0.2, variation=0.0, grain=0.0)
    blotches = Material("noise", (40, 120, 60), (40, 60, 200), scale_m=0.25, variation=0.5, seed=3)
    builder.quad(np.array([wall_x, -8.0, 0.0]), np.array([0.0, 16.0, 0.0]), np.array([0.0, 0.0, 5.0]), stripes)
    builder.quad(np.array([front_x, -8.0, 0.0]), np.array([0.0, 16.0, 0.0]), np.array([0.0, 0.0, top_m]), blotches)
    scene = Scene("front-and-wall", builder,
                  free_space=((np.array([0.0, -1.0, 1.3]), np.array([front_x - 1.0, 1.0, 2.0])),),
                  start_position_m=np.array([0.0, 0.0, 1.6]), start_heading_rad=0.0)
    truth = scene.render(Pose.look_at([0.0, 0.0, 1.6], [wall_x, 0.0, 1.2]), FRONT_INTRINSICS)
    x = world_points(truth)[..., 0]
    return truth, np.abs(x - wall_x) < 0.01, np.abs(x - front_x) < 0.01


@pytest.fixture(scope="module")
def front_and_wall() -> tuple[RGBDFrame, np.ndarray, np.ndarray]:
    """A box's front (x = 5 m, 1.2 m tall) before a wall (x = 7.5 m): ``front_and_wall_view``."""
    return front_and_wall_view(5.0, 1.2, 7.5)


def shown_by_memory(truth: RGBDFrame, kept: np.ndarray) -> Condition:
    """A condition whose memory render shows the exact view's ``kept`` pixels (bool (H, W)) and nothing else."""
    render = RenderResult(np.where(kept[..., None], truth.rgb, 0).astype(np.uint8),
                          np.where(kept, truth.depth, 0).astype(np.float32), kept)
    return Condition((truth.pose,), FRONT_INTRINSICS, (render,))


def test_a_plane_memory_saw_past_beside_a_pixel_does_not_hide_what_lies_behind_it(front_and_wall):
    """A first view's memory holds the box's front only: the front grows above its top edge, where nothing was seen
    yet. In a second view from the same pose memory also shows the left third of the image whole, the wall above the
    front included. Just right of it, the front's plane still stands above its edge (it was never seen through
    there), but the kept wall pixels beside those holes see past it: its silhouette ends there, so it neither
    continues into them nor hides the wall, which is continued instead (the holes within the silhouette probe's
    reach of the kept wall, where the front had grown)."""
    truth, wall, front = front_and_wall
    columns = np.broadcast_to(np.arange(truth.depth.shape[1]), truth.depth.shape)
    generator = ContinuationGenerator()
    generator.generate(shown_by_memory(truth, front))
    shown = truth.depth.shape[1] // 3
    result = generator.generate(shown_by_memory(truth, front | (columns < shown)))
    rays = FRONT_INTRINSICS.backproject(truth.depth.astype(np.float64)) @ truth.pose.rotation.T  # world frame
    with np.errstate(divide="ignore", invalid="ignore"):
        height_at_front = truth.pose.position[2] + rays[..., 2] * (5.0 - truth.pose.position[0]) / rays[..., 0]
    probe_px = max(2, round(truth.depth.shape[1] * SILHOUETTE_PROBE_SHARE))
    beside = (wall & (columns >= shown) & (columns < shown + probe_px)
              & (height_at_front > 1.3) & (height_at_front < 1.2 + ContinuationOptions().reach_m))
    assert beside.sum() > 20
    right = (result.confidences[0] > 0) & (np.abs(result.depths[0] - truth.depth) <= TOLERANCE_M)
    assert right[beside].mean() > 0.9


def test_a_plane_where_memory_showed_it_continues_beside_a_pixel_that_sees_past_it(front_and_wall):
    """A first view's memory holds the box's front whole. In a second view from the same pose memory shows all but
    the front's top rows right of the image's left third: those holes lie where memory showed the front, just below
    its edge, beside kept wall pixels that see past its plane. Where memory showed a plane, such a neighbour lies
    only past its silhouette: the front is continued there, not the wall behind it."""
    truth, wall, front = front_and_wall
    rows, columns = np.indices(truth.depth.shape)
    generator = ContinuationGenerator()
    generator.generate(shown_by_memory(truth, front))
    top_row = rows[front].min()
    probe_px = max(2, round(truth.depth.shape[1] * SILHOUETTE_PROBE_SHARE))
    edge = front & (rows < top_row + probe_px) & (columns >= truth.depth.shape[1] // 3)
    result = generator.generate(shown_by_memory(truth, (wall | front) & ~edge))
    assert edge.sum() > 50
    right = (result.confidences[0] > 0) & (np.abs(result.depths[0] - truth.depth) <= TOLERANCE_M)
    assert right[edge].mean() > 0.9


def test_a_plane_grows_from_its_support_up_to_where_a_view_saw_through_it(front_and_wall):
    """A first view's memory shows the box's front below z = 1.1 m and the wall above the front's top edge (1.2 m),
    whose pixels see through the front's plane there. A second view from the same pose shows only the front below
    1.1 m. The front's unseen top strip lies in the support cells (10 cm) between what memory showed and where a view
    saw through the plane: the plane does not grow through a cell next to a seen-through one (the rays are sampled
    sparsely), except into the cells next to its support, and there up to halfway to where the view saw through it
    (``EDGE_FINE_CELLS``), so the strip's lower half is continued at the front's depth."""
    truth, wall, front = front_and_wall
    height = world_points(truth)[..., 2]
    shown = front & (height < 1.1)
    generator = ContinuationGenerator()
    generator.generate(shown_by_memory(truth, shown | wall))
    result = generator.generate(shown_by_memory(truth, shown))
    strip = front & ~shown & (height < 1.15)
    assert strip.sum() > 50
    right = (result.confidences[0] > 0) & (np.abs(result.depths[0] - truth.depth) <= TOLERANCE_M)
    assert right[strip].mean() > 0.9


@pytest.mark.parametrize("threads", [2, 3])
def test_a_view_is_continued_the_same_on_any_split_of_its_holes(monkeypatch, front_and_wall, threads):
    """The holes meet their planes in bands, one thread each (``bridge.cores.split_call``): the frames of a
    two-view sequence whose planes grow, stand at an edge and are seen past equal those of one thread."""
    truth, wall, front = front_and_wall
    columns = np.broadcast_to(np.arange(truth.depth.shape[1]), truth.depth.shape)
    height = world_points(truth)[..., 2]
    views = [shown_by_memory(truth, (front & (height < 1.1)) | wall),
             shown_by_memory(truth, (front & (height < 1.1)) | (columns < truth.depth.shape[1] // 3))]
    split = [1]

    @contextmanager
    def fixed(requested, limit):
        yield min(split[0], limit)

    monkeypatch.setattr(cores, "threads_for", fixed)
    one_thread = ContinuationGenerator()
    expected = [one_thread.generate(view) for view in views]
    split[0] = threads
    banded = ContinuationGenerator()
    for view, want in zip(views, expected):
        got = banded.generate(view)
        assert (want.confidences[0] > 0).mean() > 0.5  # most of the view is continued or kept
        for a, b in ((got.frames, want.frames), (got.depths, want.depths), (got.confidences, want.confidences)):
            assert np.array_equal(a[0], b[0])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_nearest_kept_pixels_are_those_a_scan_finds(monkeypatch, threads: int):
    @contextmanager
    def fixed(requested, limit):  # the passes split over this many threads (at most one per pass)
        yield threads

    monkeypatch.setattr(cores, "threads_for", fixed)
    rng = np.random.default_rng(5)
    width, height = 23, 17
    kept = rng.random(width * height) < 0.2
    nearest = _nearest_kept(kept, width)
    steps = {0: (0, -1), 1: (0, 1), 2: (-1, 0), 3: (1, 0)}  # left, right, above, below: (dv, du)
    for pixel in range(width * height):
        for direction, (dv, du) in steps.items():
            v, u, found = pixel // width + dv, pixel % width + du, -1
            while 0 <= v < height and 0 <= u < width:
                if kept[v * width + u]:
                    found = v * width + u
                    break
                v, u = v + dv, u + du
            assert nearest[direction, pixel] == found


def test_ransac_finds_a_floor_and_a_wall_on_the_sample_grid():
    """Points of a floor 1.5 m below the camera and a wall 4 m ahead, 5 mm of noise, on a 60 x 80 sample grid: the
    two planes come back (normals within 0.5 degree, towards the camera), each point on at most one, the clutter on
    neither; the same generator seed gives the same planes."""
    rng = np.random.default_rng(2)
    rows, columns = np.mgrid[:60, :80]
    x = (columns.ravel() - 39.5) / 40.0
    y = (rows.ravel() - 29.5) / 40.0
    floor = y > 0.375  # rays below the horizon meet the floor before the wall
    depth = np.where(floor, 1.5 / np.maximum(y, 1e-9), 4.0)
    points = np.stack([x * depth, y * depth, depth], axis=1) + rng.normal(0.0, 0.005, (x.size, 3))
    clutter = rng.random(x.size) < 0.05
    points[clutter] += rng.uniform(-0.5, 0.5, (int(clutter.sum()), 3))
    grid_rc = np.stack([rows.ravel(), columns.ravel()], axis=1)
    options = ContinuationOptions()
    planes = fit_planes(points, grid_rc, 200, options, np.random.default_rng(7))
    assert len(planes) == 2
    found = {int(np.argmax(np.abs(normal))): (normal, offset, inliers) for normal, offset, inliers, _ in planes}
    for axis, want, offset_m, region in ((1, [0.0, -1.0, 0.0], 1.5, floor), (2, [0.0, 0.0, -1.0], 4.0, ~floor)):
        normal, offset, inliers = found[axis]
        assert np.degrees(np.arccos(min(1.0, float(normal @ want)))) < 0.5
        assert offset == pytest.approx(offset_m, abs=0.02)
        assert inliers[region & ~clutter].mean() > 0.9 and not inliers[~region & ~clutter].any()
    assert not (planes[0][2] & planes[1][2]).any() and not any(p[2][clutter].mean() > 0.2 for p in planes)
    again = fit_planes(points, grid_rc, 200, options, np.random.default_rng(7))
    for one, two in zip(planes, again):
        assert np.array_equal(one[0], two[0]) and one[1] == two[1] and np.array_equal(one[2], two[2])


def test_the_least_squares_plane_of_masked_points_is_numpys():
    rng = np.random.default_rng(4)
    points = rng.normal(0.0, 1.0, (500, 3)) * [2.0, 0.5, 0.01] + [0.3, -1.0, 2.0]
    mask = rng.random(500) < 0.7
    normal, offset, spread = _least_squares_plane(points, mask)
    chosen = points[mask]
    centre = chosen.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh((chosen - centre).T @ (chosen - centre) / len(chosen))
    assert abs(float(normal @ eigenvectors[:, 0])) == pytest.approx(1.0, abs=1e-12)
    assert abs(offset) == pytest.approx(abs(float(eigenvectors[:, 0] @ centre)), abs=1e-12)
    assert spread == pytest.approx(np.sqrt(eigenvalues[1]), rel=1e-12)


def test_the_cells_rays_cross_a_plane_in_are_where_the_rays_meet_it():
    """``_crossed_cells`` against the crossings worked out with numpy: a ray that meets the plane well before its
    surface marks the crossing's cell (coarse and fine) as seen through; a sure pixel's ray that meets it well behind
    its surface marks it as covered; rays that never meet it mark nothing."""
    rng = np.random.default_rng(9)
    rays = np.stack([rng.uniform(-0.8, 0.8, 4000), rng.uniform(-0.6, 0.6, 4000), np.ones(4000)], axis=1)
    points = rays * rng.uniform(0.5, 8.0, 4000)[:, None]
    sure = rng.random(4000) < 0.7
    normal = np.array([0.0, -0.96, -0.28])  # a floor-like plane facing the camera: rays well above it miss it
    offset = 1.4
    frame = PlaneFrame.from_plane(np.array([0.0, 0.0, 1.0]), 0.0)
    to_plane = np.stack([frame.axis_s, frame.axis_t], axis=1)  # any orthonormal pair will do here
    origin = np.array([0.25, -1.5])
    through, through_fine, covered = _crossed_cells(points, normal, offset, sure, to_plane, origin, 0.1,
                                                    EDGE_FINE_CELLS)
    facing = points @ normal / points[:, 2]
    meets = facing < 0
    crossing = np.where(meets, -offset / np.where(meets, facing, -1.0), np.inf)
    seen_through = meets & (crossing * (1 + SEE_THROUGH_MARGIN_SHARE) + SEE_THROUGH_MARGIN_M < points[:, 2])
    in_front = sure & meets & (points[:, 2] + SEE_THROUGH_MARGIN_M < crossing)

    def crossings(marked):  # plane coordinates where the marked rays meet the plane
        return (crossing[marked, None] * points[marked] / points[marked, 2:3]) @ to_plane + origin

    assert 100 < seen_through.sum() and 100 < in_front.sum() and (~meets).sum() > 100
    for got, want in ((through, _cell_keys(crossings(seen_through), 0.1)),
                      (through_fine, _cell_keys(crossings(seen_through), 0.1 / EDGE_FINE_CELLS)),
                      (covered, _cell_keys(crossings(in_front), 0.1))):
        assert np.array_equal(np.sort(got), np.sort(want))


def test_merged_cell_keys_are_the_sorted_union():
    rng = np.random.default_rng(6)
    for stored_count, new_count in ((0, 0), (0, 9), (40, 0), (40, 25), (300, 900)):
        stored = np.unique(rng.integers(-(1 << 40), 1 << 40, stored_count))
        keys = rng.integers(-(1 << 40), 1 << 40, new_count)
        keys[: new_count // 3] = rng.choice(stored, new_count // 3) if stored_count else keys[: new_count // 3]
        merged = _merged(stored, np.concatenate([keys, keys[:5]]))
        assert merged.dtype == np.int64 and np.array_equal(merged, np.union1d(stored, keys))


def test_cell_keys_decode_to_their_bounds_and_grid_cells():
    """Against numpy on the decoded cells: the keys' box, and the grid marks of those inside a grid placed anywhere
    (cells off the grid, on any side, are left out; marks of several key sets combine)."""
    rng = np.random.default_rng(8)
    coordinates = rng.uniform(-3.0, 3.0, (400, 2))
    keys = _cell_keys(coordinates, 0.1)
    cells = np.floor(coordinates / 0.1).astype(np.int64)
    low, high = _key_bounds(keys)
    assert np.array_equal(low, cells.min(axis=0)) and np.array_equal(high, cells.max(axis=0))
    for first, shape in (((-30, -30), (61, 61)), ((-5, 3), (12, 40)), ((10, -40), (3, 7))):
        grid = np.zeros(shape, np.uint8)
        _mark_cells(keys[:200], np.int64(first[0]), np.int64(first[1]), np.uint8(1), grid)
        _mark_cells(keys[200:], np.int64(first[0]), np.int64(first[1]), np.uint8(2), grid)
        expected = np.zeros(shape, np.uint8)
        for part, bit in ((slice(0, 200), 1), (slice(200, None), 2)):
            local = cells[part] - first
            inside = (local >= 0).all(axis=1) & (local[:, 0] < shape[0]) & (local[:, 1] < shape[1])
            np.bitwise_or.at(expected, (local[inside, 0], local[inside, 1]), bit)
        assert np.array_equal(grid, expected)


@pytest.mark.parametrize("periods", [(None, None), (7.3, None), (None, 4.0), (5.5, 9.25)])
def test_a_texture_paints_its_tile_repeated_or_mirrored(periods):
    """Against numpy: along an axis with a period the texel's phase in it, along one without the tile mirrored."""
    rng = np.random.default_rng(7)
    tile = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    frame = PlaneFrame.from_plane(np.array([0.0, 0.0, 1.0]), 0.0)
    texture = PlaneTexture(frame, tile, 0.02, np.array([-0.3, 0.7]), periods, np.zeros((1, 1, 1), bool))
    coordinates = rng.uniform(-2.0, 2.0, (5000, 2))
    coordinates[:50] = np.round(coordinates[:50] / 0.02) * 0.02 + np.array([-0.3, 0.7])  # on texel edges
    pixels = rng.permutation(6000)[:5000]
    rgb = np.zeros((6000, 3), np.uint8)
    texture.paint(rgb, pixels, coordinates)
    texels = (coordinates - texture.low) / texture.texel_m
    index = []
    for k, size in ((0, tile.shape[1]), (1, tile.shape[0])):
        if periods[k] is not None:
            index.append(np.minimum(np.floor(np.mod(texels[:, k], periods[k])).astype(np.int64), size - 1))
        else:
            folded = np.mod(np.floor(texels[:, k]).astype(np.int64), 2 * size)
            index.append(np.where(folded < size, folded, 2 * size - 1 - folded))
    assert np.array_equal(rgb[pixels], tile[index[1], index[0]])
    untouched = np.ones(len(rgb), bool)
    untouched[pixels] = False
    assert not rgb[untouched].any()


def test_a_plane_ends_within_a_support_cell_where_a_view_saw_past_its_edge():
    """A box's front (x = 2 m) ends at z = 1.24 m, inside a support cell (1.2 to 1.3 m) that memory showed it in and
    a first view saw through it in, above its edge, to the wall behind. A second view from the same pose shows only
    the front below 1.0 m. The cell is held, yet the front stands only up to halfway to where the view saw through
    it, or two of the view's pixel footprints past where memory showed it, whichever is farther
    (``EDGE_FINE_CELLS``, ``EDGE_FOOTPRINTS``): the wall pixels whose rays cross the front's plane 3.5 to 6 cm above
    its edge, in the middle of the image (the sides see it obliquely, with wider footprints), are not given the
    front's depth (they stay unknown: the wall is remembered, but this view does not show it), while the front's own
    unseen top strip is continued."""
    truth, wall, front = front_and_wall_view(2.0, 1.24, 4.0)
    height = world_points(truth)[..., 2]
    generator = ContinuationGenerator()
    generator.generate(shown_by_memory(truth, front | (wall & (height < 2.0))))  # holes: a first view fits planes
    result = generator.generate(shown_by_memory(truth, front & (height < 1.0)))
    rays = world_points(truth) - truth.pose.position
    crossing = truth.pose.position[2] + rays[..., 2] * (2.0 - truth.pose.position[0]) / rays[..., 0]
    width = truth.depth.shape[1]
    middle = np.zeros(truth.depth.shape, bool)
    middle[:, width // 4 : 3 * width // 4] = True
    past_edge = wall & middle & (crossing > 1.275) & (crossing < 1.3)
    assert past_edge.sum() > 50
    assert (result.confidences[0][past_edge] == 0).mean() > 0.9
    strip = front & (height >= 1.0)
    right = (result.confidences[0] > 0) & (np.abs(result.depths[0] - truth.depth) <= TOLERANCE_M)
    assert strip.sum() > 100 and right[strip].mean() > 0.9


def test_a_walk_continues_the_planes_memory_holds_at_their_true_depth(room):
    """The demo's first steps through the room at 96 x 72, scored against the exact scene (``metrics.PlaneScorer``):
    what is continued lies on the true surface (at least 75% of continued pixels within 5 cm, at most 10% beyond
    it: a guess behind something real), at half of memory's confidence, and a good share
    of the pixels that view a plane memory holds (within reach of what it shows) is continued. (The issue's bar is
    90% of them; the demo at 320 x 240 reaches 89%: see ``worldweave demo``'s ``plane_continuation``.)"""
    trajectory = closed_loop(room, 121)
    world = World(Seed([room.render(trajectory.poses[0], INTRINSICS)]), WorldConfig(generator="continue"))
    planes = metrics.PlaneScorer(room)
    counts, right = [], 0
    for pose in trajectory.poses[1:6]:
        frame = world.step([pose]).frames[0]
        truth = room.render(pose, INTRINSICS)
        kept = frame.condition.mask & (frame.condition.depth > 0)
        counts.append(planes.score(truth, kept, frame.condition.depth, frame.condition.confidence, frame.depth,
                                   frame.confidence))
        continued = ~kept & (frame.confidence > 0)
        # Half of memory's median confidence in the plane's shown pixels: the seed's 1, a little less where the weave
        # blends a point's centre pixel with another anchor's footprint spread (confidence 0, ``bridge.render``).
        assert np.all((frame.confidence[continued] > 0.4) & (frame.confidence[continued] <= 0.5))
        right += int((continued & (np.abs(frame.depth - truth.depth) <= TOLERANCE_M)).sum())
    generated = sum(c.generated for c in counts)
    assert generated > 500 and right >= 0.75 * generated and sum(c.beyond for c in counts) <= 0.1 * generated, counts
    assert sum(c.continued for c in counts) >= 0.4 * sum(c.target for c in counts) > 400, counts


def test_worlds_sharing_a_generator_keep_their_surfaces_apart(room, tmp_path):
    """A server shares one generator between worlds. What ``continue`` remembers of a world's surfaces lives in the
    world's ``GeneratorState``: a world's frames are the same whether or not another world of the same room stepped
    elsewhere on the same generator first (a surface remembered from the other's views would continue further in
    this one's), and a world whose memory is edited starts remembering afresh, as a world loaded from a save of it
    into a fresh generator does."""
    trajectory = closed_loop(room, 121)
    seed = Seed([room.render(trajectory.poses[0], INTRINSICS)])
    shared = ContinuationGenerator()
    other = World(Seed([room.render(trajectory.poses[60], INTRINSICS)]), generator=shared)
    other.step(list(trajectory.poses[61:64]))
    alone, beside = World(seed, generator=ContinuationGenerator()), World(seed, generator=shared)
    for pose in trajectory.poses[1:4]:
        a, b = alone.step([pose]).frames[0], beside.step([pose]).frames[0]
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_array_equal(a.depth, b.depth)
    edited = World(seed, generator=shared)
    edited.step(list(trajectory.poses[1:4]))
    edited.recolor(Sphere(np.array([100.0, 100.0, 100.0]), 0.1), (0, 255, 0))  # nothing there: only the state goes
    edited.save(tmp_path / "edited")
    fresh = World.load(tmp_path / "edited", generator=ContinuationGenerator())
    for pose in trajectory.poses[4:6]:
        np.testing.assert_array_equal(edited.step([pose]).frames[0].rgb, fresh.step([pose]).frames[0].rgb)


def test_a_saved_restored_or_forked_world_continues_as_it_would_have(room, tmp_path):
    """What ``continue`` remembers of a world is saved with it, kept with its checkpoints and copied into its forks:
    a world loaded into a fresh generator, one restored to a checkpoint and a fork all step on exactly as the world
    did from that moment."""
    trajectory = closed_loop(room, 121)
    world = World(Seed([room.render(trajectory.poses[0], INTRINSICS)]), generator=ContinuationGenerator())
    world.step(list(trajectory.poses[1:4]))
    checkpoint = world.checkpoint().checkpoint_id
    world.save(tmp_path / "saved")
    fork = world.fork()
    ahead = [world.step([pose]).frames[0] for pose in trajectory.poses[4:7]]
    loaded = World.load(tmp_path / "saved", generator=ContinuationGenerator())
    world.restore(checkpoint)
    for other in (loaded, fork, world):
        for pose, expected in zip(trajectory.poses[4:7], ahead):
            frame = other.step([pose]).frames[0]
            np.testing.assert_array_equal(frame.rgb, expected.rgb)
            np.testing.assert_array_equal(frame.depth, expected.depth)
