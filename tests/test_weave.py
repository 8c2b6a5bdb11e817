"""The weaver on hand-built renders: depth test with tolerance, weights, blend modes."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from worldweave.bridge.frames import RenderResult
from worldweave.bridge import cores
from worldweave.bridge.memory.weave import WeaveOptions, blend, heuristic_weights, weave
from worldweave.bridge.memory.weave_stack import front_surfaces, stack_renders, stacked
from worldweave.proto.errors import InvalidInputError, NotFoundError
from worldweave.proto.geometry import Intrinsics, Pose

INTRINSICS = Intrinsics(40.0, 40.0, 15.5, 11.5, 32, 24)
TARGET = Pose.identity()
UNRANKED = WeaveOptions(rank_decay=1.0)
"""Retrieval rank ignored, so the other weights can be checked alone."""


def _flat(color, depth_m: float, mask: np.ndarray | None = None) -> RenderResult:
    shape = INTRINSICS.shape
    mask = np.ones(shape, bool) if mask is None else mask
    rgb = np.where(mask[..., None], np.array(color, np.uint8), 0).astype(np.uint8)
    return RenderResult(rgb, np.where(mask, depth_m, 0.0).astype(np.float32), mask)


def test_occluded_anchor_is_ignored_and_union_covers() -> None:
    left = np.zeros(INTRINSICS.shape, bool)
    left[:, :16] = True
    near = _flat((200, 0, 0), 2.0, left)
    far = _flat((0, 0, 200), 4.0)  # covers everything, but behind `near` on the left half
    result = weave([near, far], np.zeros((2, 3)), [1.0, 1.0], TARGET, INTRINSICS)
    assert result.mask.all()
    assert np.all(result.rgb[:, :16] == [200, 0, 0]) and np.allclose(result.depth[:, :16], 2.0)
    assert np.all(result.rgb[:, 16:] == [0, 0, 200]) and np.allclose(result.depth[:, 16:], 4.0)


def test_agreeing_anchors_are_averaged_by_confidence() -> None:
    a = _flat((100, 100, 100), 2.0)
    b = _flat((200, 200, 200), 2.03)  # within 3 % + 2 cm
    result = weave([a, b], np.zeros((2, 3)), [1.0, 0.25], TARGET, INTRINSICS, UNRANKED)
    assert np.all(result.rgb == 120)  # (100 * 1 + 200 * 0.25) / 1.25
    assert np.allclose(result.depth, (2.0 + 0.25 * 2.03) / 1.25, atol=1e-5)
    best = weave([a, b], np.zeros((2, 3)), [1.0, 0.25], TARGET, INTRINSICS, WeaveOptions(blend="best"))
    assert np.all(best.rgb == 100) and np.allclose(best.depth, 2.0)
    strict = weave([a, b], np.zeros((2, 3)), [1.0, 1.0], TARGET, INTRINSICS,
                   WeaveOptions(depth_tolerance_rel=0.0, depth_tolerance_m=0.01, rank_decay=1.0))
    assert np.all(strict.rgb == 100)  # b is 3 cm behind: outside a 1 cm tolerance


def test_a_pixel_one_anchor_alone_agrees_on_takes_its_values_exactly() -> None:
    """Weights times values over the weights' sum can miss a value by a float32 ulp: where one anchor alone agrees
    (the other lies behind it), the woven depth and confidence are that anchor's, bit for bit, in either blend and
    through the stack's blend alike."""
    rng = np.random.default_rng(11)
    shape = INTRINSICS.shape
    near = RenderResult(rng.integers(0, 256, (*shape, 3), dtype=np.uint8),
                        rng.uniform(0.5, 3.0, shape).astype(np.float32), np.ones(shape, bool),
                        rng.uniform(0.05, 1.0, shape).astype(np.float32))
    far = _flat((9, 9, 9), 6.0)  # everywhere behind the near anchor: it never agrees
    positions = np.array([[0.3, -0.2, 0.1], [0.0, 0.0, 0.0]])  # off the target's centre: weights away from 1
    for options in (WeaveOptions(), WeaveOptions(blend="best")):
        woven = weave([near, far], positions, [0.7, 1.0], TARGET, INTRINSICS, options)
        stack = stack_renders([near, far], positions, TARGET, INTRINSICS, options.depth_tolerance_rel,
                              options.depth_tolerance_m)
        apart = blend(stack, heuristic_weights(stack, np.array([0.7, 1.0], np.float32), options), options.blend)
        for result in (woven, apart):
            assert np.array_equal(result.rgb, near.rgb) and np.array_equal(result.depth, near.depth)
            assert np.array_equal(result.confidence, near.confidence)


def test_view_direction_and_distance_weights() -> None:
    a = _flat((0, 0, 0), 2.0)
    b = _flat((250, 250, 250), 2.0)
    # Anchor a shares the target's camera centre; b looks from 2 m to the side (about 45 degrees off at the centre).
    result = weave([a, b], np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]), [1.0, 1.0], TARGET, INTRINSICS, UNRANKED)
    assert result.rgb[12, 16, 0] < 10
    # Same direction, but b much closer to the surface: b dominates.
    closer = weave([a, b], np.array([[0.0, 0.0, -3.0], [0.0, 0.0, 1.5]]), [1.0, 1.0], TARGET, INTRINSICS, UNRANKED)
    assert closer.rgb[12, 16, 0] > 200


def test_the_most_relevant_anchor_dominates_where_it_sees_and_the_next_fills_its_holes() -> None:
    left = np.zeros(INTRINSICS.shape, bool)
    left[:, :16] = True
    first = _flat((100, 100, 100), 2.0, left)
    second = _flat((200, 200, 200), 2.0)  # agrees in depth everywhere, covers the right half too
    result = weave([first, second], np.zeros((2, 3)), [1.0, 1.0], TARGET, INTRINSICS, WeaveOptions(rank_decay=0.1))
    assert result.mask.all()
    assert np.all(result.rgb[:, :16] == 109)  # (100 * 1 + 200 * 0.1) / 1.1
    assert np.all(result.rgb[:, 16:] == 200)
    swapped = weave([second, first], np.zeros((2, 3)), [1.0, 1.0], TARGET, INTRINSICS, WeaveOptions(rank_decay=0.1))
    assert np.all(swapped.rgb[:, :16] == 191)  # (200 * 1 + 100 * 0.1) / 1.1
    with pytest.raises(InvalidInputError, match="rank_decay"):
        WeaveOptions(rank_decay=0.0)


def _brute_front(depth: np.ndarray, mask: np.ndarray, seeded: np.ndarray, radius: int, scale: float,
                 margin: float) -> np.ndarray:
    """``front_surfaces`` by its definition, pixel by pixel: the nearest depth any anchor rendered, except where the
    first rendering anchor and a later one are both seeded: there the later one's nearer depth counts only at a
    pixel some (2r + 1)-box of whose "nearer than the first" pixels covers."""
    count, h, w = depth.shape
    nearest = np.where(mask, depth, np.inf).min(axis=0).astype(np.float32)
    if radius == 0:
        return nearest
    top = np.full((h, w), np.inf, np.float32)
    top_seeded = np.zeros((h, w), bool)
    for a in range(count - 1, -1, -1):
        top, top_seeded = np.where(mask[a], depth[a], top), np.where(mask[a], seeded[a], top_seeded)
    front = top.copy()
    for a in range(1, count):
        nearer = mask[a] & (depth[a] * np.float32(scale) + np.float32(margin) < top)
        drift = top_seeded & seeded[a]
        opened = np.zeros((h, w), bool)
        for y in range(radius, h - radius):
            for x in range(radius, w - radius):
                if (nearer & drift)[y - radius:y + radius + 1, x - radius:x + radius + 1].all():
                    opened[y - radius:y + radius + 1, x - radius:x + radius + 1] = True
        hides = (nearer & ~drift) | opened
        front = np.where(hides & (depth[a] < front), depth[a], front)
    return front


@pytest.mark.parametrize("radius", [0, 1, 2, 3])
def test_the_front_surface_equals_its_definition_computed_pixel_by_pixel(radius: int) -> None:
    """Random stacks of anchors, some seeded, with blocks of nearer surfaces of every width (slivers, and blocks
    wider than the box), some touching the view's edges."""
    rng = np.random.default_rng(radius)
    for trial in range(8):
        count, h, w = 5, 17 + trial, 23 + 2 * trial
        seeded = np.array([True, True, True, False, False]) if trial % 4 else rng.random(count) < 0.5
        depth = rng.uniform(2.0, 2.05, (count, h, w)).astype(np.float32)
        mask = rng.random((count, h, w)) < 0.9
        for a in range(1, count):
            for _ in range(4):
                y, x = rng.integers(-3, h), rng.integers(-3, w)
                dy, dx = rng.integers(1, 3 * radius + 5, size=2)
                depth[a, max(y, 0):y + dy, max(x, 0):x + dx] = rng.uniform(1.0, 1.5)
                mask[a, max(y, 0):y + dy, max(x, 0):x + dx] = True
        scale, margin = np.float32(1.03), np.float32(0.02)
        got = front_surfaces(depth.reshape(count, -1), mask.reshape(count, -1), h, w, scale, margin, radius, seeded)
        assert np.array_equal(got.reshape(h, w), _brute_front(depth, mask, seeded, radius, scale, margin)), trial
    with pytest.raises(InvalidInputError, match="occluder_radius"):
        front_surfaces(depth.reshape(count, -1), mask.reshape(count, -1), h, w, scale, margin, -1)
    with pytest.raises(InvalidInputError, match="one flag per anchor"):
        front_surfaces(depth.reshape(count, -1), mask.reshape(count, -1), h, w, scale, margin, 1, seeded[:2])


def test_a_drift_sliver_of_a_less_relevant_seed_does_not_hide_the_most_relevant_but_an_occluder_does() -> None:
    """Anchors made from captured seed frames disagree by mm-cm of pose: a less relevant anchor's foreground edge
    lands a few pixels off, in front of what the most relevant anchor sees there. Between two seeded anchors a
    nearer surface narrower than ``occluder_span_rel`` of the view's width is that drift; a wider one is an occluder
    the most relevant anchor did not see, and hides what it saw. Generated anchors do not drift: with one, any
    nearer surface hides."""
    intrinsics = Intrinsics(80.0, 80.0, 79.5, 29.5, 160, 60)
    options = WeaveOptions()
    assert options.occluder_radius(160) == 2  # a nearer surface must fill a 5 x 5 box
    wall = RenderResult(np.full((60, 160, 3), (0, 0, 200), np.uint8), np.full((60, 160), 4.0, np.float32),
                        np.ones((60, 160), bool))
    near = np.zeros((60, 160), bool)
    near[:, 20:24] = True  # a sliver 4 pixels wide
    near[10:30, 60:80] = True  # an occluder 20 x 20
    near[:3, 100:140] = True  # a strip 3 pixels high
    edge = RenderResult(np.where(near[..., None], np.array((200, 0, 0), np.uint8), 0).astype(np.uint8),
                        np.where(near, 2.0, 0.0).astype(np.float32), near)
    woven = weave([wall, edge], np.zeros((2, 3)), [1.0, 1.0], TARGET, intrinsics, options, seeded=[True, True])
    occluder = np.zeros_like(near)
    occluder[10:30, 60:80] = True
    assert woven.mask.all()
    assert np.all(woven.rgb[occluder] == (200, 0, 0)) and np.all(woven.depth[occluder] == 2.0)
    assert np.all(woven.rgb[~occluder] == (0, 0, 200)) and np.all(woven.depth[~occluder] == 4.0)
    stack = stack_renders([wall, edge], np.zeros((2, 3)), TARGET, intrinsics, options.depth_tolerance_rel,
                          options.depth_tolerance_m, options.occluder_radius(160), np.array([True, True]))
    apart = blend(stack, heuristic_weights(stack, np.ones(2, np.float32), options), options.blend)
    assert np.array_equal(apart.rgb, woven.rgb) and np.array_equal(apart.depth, woven.depth)
    # Every nearer surface hides with a span of 0, where either anchor was generated, and where the nearer surface
    # is the most relevant anchor's own.
    anyone = weave([wall, edge], np.zeros((2, 3)), [1.0, 1.0], TARGET, intrinsics, WeaveOptions(occluder_span_rel=0),
                   seeded=[True, True])
    assert np.all(anyone.rgb[near] == (200, 0, 0)) and np.all(anyone.rgb[~near] == (0, 0, 200))
    for seeded in ([True, False], [False, True], None):
        generated = weave([wall, edge], np.zeros((2, 3)), [1.0, 1.0], TARGET, intrinsics, options, seeded=seeded)
        assert np.array_equal(generated.rgb, anyone.rgb), seeded
    swapped = weave([edge, wall], np.zeros((2, 3)), [1.0, 1.0], TARGET, intrinsics, options, seeded=[True, True])
    assert np.array_equal(swapped.rgb, anyone.rgb)
    with pytest.raises(InvalidInputError, match="occluder_span_rel"):
        WeaveOptions(occluder_span_rel=-0.1)


def test_nothing_to_weave_gives_an_empty_render_and_bad_inputs_raise() -> None:
    empty = weave([], np.zeros((0, 3)), [], TARGET, INTRINSICS)
    assert not empty.mask.any() and empty.rgb.shape == (24, 32, 3)
    with pytest.raises(InvalidInputError, match="one camera position and confidence per render"):
        weave([_flat((1, 2, 3), 1.0)], np.zeros((2, 3)), [1.0], TARGET, INTRINSICS)
    small = RenderResult.empty(Intrinsics(10.0, 10.0, 4.5, 4.5, 10, 10))
    with pytest.raises(InvalidInputError, match="render 0 has shape"):
        weave([small], np.zeros((1, 3)), [1.0], TARGET, INTRINSICS)
    with pytest.raises(InvalidInputError, match="blend"):
        WeaveOptions(blend="median")


def test_weaver_mode_options_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="weave mode"):
        WeaveOptions(mode="neural")
    with pytest.raises(InvalidInputError, match="learned_stride"):
        WeaveOptions(mode="learned", learned_stride=0)
    with pytest.raises(InvalidInputError, match="none_threshold"):
        WeaveOptions(mode="learned", none_threshold=0.0)
    a = _flat((100, 100, 100), 2.0)
    with pytest.raises(NotFoundError, match="no weaver weights"):
        weave([a, a], np.zeros((2, 3)), [1.0, 1.0], TARGET, INTRINSICS, WeaveOptions(mode="learned", weights="missing"))


REFERENCE_FILE = Path(__file__).parent / "data" / "weave_reference.npz"
"""Outputs of the weaver before it was packed and compiled (the dense numpy / torch code of the learned weaver's first
version) on ``_seeded_case``, with the weights shipped then (``REFERENCE_WEIGHTS``):
``{mode}_{rgb,depth,mask,confidence}``."""
REFERENCE_WEIGHTS = str(Path(__file__).parent / "data" / "weaver_reference.safetensors")
"""The learned weaver's weights shipped until December 2026, which made the reference outputs."""
REFERENCE_MODES = {
    "heuristic": WeaveOptions(),
    "best": WeaveOptions(blend="best"),
    "learned": WeaveOptions(mode="learned", weights=REFERENCE_WEIGHTS),
    "learned_stride2": WeaveOptions(mode="learned", learned_stride=2, weights=REFERENCE_WEIGHTS),
}


def _seeded_case(seed: int = 0, anchors: int = 7) -> tuple[list[RenderResult], np.ndarray, list[float], list[int],
                                                         Pose, Intrinsics]:
    """Seven 48x32 anchor renders of a textured surface seen from a turned camera: each anchor covers random 8x8
    blocks (0 to 7 anchors per pixel), with its own exposure, depth noise, some pixels 20 % behind the front and
    random rendered confidences."""
    rng = np.random.default_rng(seed)
    intrinsics = Intrinsics(40.0, 40.0, 23.5, 15.5, 48, 32)
    h, w = intrinsics.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = 1.5 + 2.0 * (u / w) + 0.3 * np.sin(v / 5.0)
    texture = rng.integers(30, 220, size=(h, w, 3)).astype(np.float32)
    renders = []
    for _ in range(anchors):
        mask = np.kron(rng.random((h // 8, w // 8)) < 0.3, np.ones((8, 8), bool))
        noisy = depth * (1.0 + rng.normal(0.0, 0.01, size=(h, w)))
        anchor_depth = np.where(rng.random((h, w)) < 0.1, depth * 1.2, noisy)
        rgb = np.clip(texture * rng.uniform(0.85, 1.15) + rng.normal(0.0, 3.0, size=(h, w, 3)), 0, 255)
        renders.append(RenderResult(np.where(mask[..., None], rgb, 0).astype(np.uint8),
                                    np.where(mask, anchor_depth, 0.0).astype(np.float32), mask,
                                    rng.uniform(0.3, 1.0, size=(h, w)).astype(np.float32)))
    pose = Pose.look_at(np.array([0.2, -0.1, 0.3]), np.array([0.5, 3.0, 0.6]))
    positions = pose.position + rng.normal(0.0, 0.5, size=(anchors, 3))
    return (renders, positions, list(rng.uniform(0.5, 1.0, anchors)), list(rng.permutation(anchors) * 10), pose,
            intrinsics)


def test_the_weaver_reproduces_its_reference_outputs() -> None:
    renders, positions, confidences, frame_ids, pose, intrinsics = _seeded_case()
    reference = np.load(REFERENCE_FILE)
    for name, options in REFERENCE_MODES.items():
        result = weave(renders, positions, confidences, pose, intrinsics, options, frame_ids=frame_ids)
        assert np.array_equal(result.mask, reference[f"{name}_mask"]), name
        rgb_error = np.abs(result.rgb.astype(int) - reference[f"{name}_rgb"])
        assert rgb_error.max() <= 1 and (rgb_error > 0).mean() < 0.002, (name, rgb_error.max(), (rgb_error > 0).sum())
        assert np.allclose(result.depth, reference[f"{name}_depth"], rtol=1e-5, atol=1e-6), name
        assert np.allclose(result.confidence, reference[f"{name}_confidence"], rtol=1e-5, atol=1e-6), name


@pytest.mark.parametrize("threads", [2, 3, 7])
def test_the_weave_is_the_same_on_any_number_of_threads(monkeypatch, threads: int) -> None:
    """Stacking, heuristic weights and blending split a view's pixels into bands, one thread each: every mode gives
    the same view bit for bit as on one thread."""
    case = _seeded_case()
    renders, positions, confidences, frame_ids, pose, intrinsics = case

    def woven(count: int) -> list[RenderResult]:
        @contextmanager
        def fixed(requested, limit):
            yield count

        monkeypatch.setattr(cores, "threads_for", fixed)
        return [weave(renders, positions, confidences, pose, intrinsics, options, frame_ids=frame_ids)
                for options in REFERENCE_MODES.values()]

    for one, split in zip(woven(1), woven(threads)):
        for field in ("rgb", "depth", "mask", "confidence"):
            assert np.array_equal(getattr(one, field), getattr(split, field)), field


@pytest.mark.parametrize("options", [WeaveOptions(), WeaveOptions(blend="best"), UNRANKED,
                                     WeaveOptions(occluder_span_rel=0.2)],
                         ids=["weighted", "best", "unranked", "occluder-box-9"])
def test_the_heuristic_weave_equals_its_stack_weights_and_blend(options: WeaveOptions) -> None:
    """The heuristic mode weaves each pixel in one pass; the learned mode and the weaver's training read the stack,
    the heuristic weights and the blend apart: both give the same view bit for bit."""
    renders, positions, confidences, frame_ids, pose, intrinsics = _seeded_case(seed=3, anchors=4)
    seeded = np.array([True, True, False, True])
    stack = stack_renders(renders, positions, pose, intrinsics, options.depth_tolerance_rel, options.depth_tolerance_m,
                          options.occluder_radius(intrinsics.width), seeded)
    apart = blend(stack, heuristic_weights(stack, np.asarray(confidences, np.float32), options), options.blend)
    woven = weave(renders, positions, confidences, pose, intrinsics, options, frame_ids=frame_ids, seeded=seeded)
    assert 0 < woven.mask.mean() < 1
    for field in ("rgb", "depth", "mask", "confidence"):
        assert np.array_equal(getattr(woven, field), getattr(apart, field)), field


def test_stacked_reads_the_rows_of_one_array_in_place_and_copies_anything_else() -> None:
    base = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5).copy()  # owns its memory, as np.empty's does
    rows = [base[i] for i in range(3)]
    assert stacked(rows) is base
    view = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)  # a view's rows name its owner: copied
    assert np.array_equal(stacked([view[i] for i in range(3)]), view)
    for arrays in (rows[::-1], rows[:2], [row.copy() for row in rows], [base[0], base[1], base[1]],
                   [base[i].T for i in range(3)]):
        result = stacked(arrays)
        assert result is not base and np.array_equal(result, np.stack(arrays))


def test_anchors_rendered_into_one_stack_weave_as_anchors_rendered_apart(room) -> None:
    from worldweave.bridge.world import Seed, World

    intrinsics = Intrinsics.from_fov(64, 48, fov_x_deg=75.0)
    start, turned = Pose.look_at([-1.0, 0.0, 1.4], [2.5, 0.0, 1.0]), Pose.look_at([-0.8, 0.4, 1.4], [2.5, 1.5, 1.0])
    world = World(Seed([room.render(start, intrinsics)]))
    world.step([Pose.look_at([-0.9, 0.2, 1.4], [2.5, 0.8, 1.0])])
    world.step([turned])
    memory = world.memory
    anchors = memory.retrieve([turned], intrinsics)
    assert len(anchors) >= 2
    options = memory.config.weave
    apart = [a.render(turned, intrinsics, splat=options.splat, footprint_scale=options.footprint_scale,
                      footprint_falloff=options.footprint_falloff) for a in anchors]
    expected = weave(apart, np.array([a.pose.position for a in anchors]), [a.confidence for a in anchors], turned,
                     intrinsics, options, frame_ids=[a.frame_id for a in anchors])
    woven = memory.render_anchors(anchors, turned, intrinsics)
    assert expected.mask.any()
    for name in ("rgb", "depth", "mask", "confidence"):
        assert np.array_equal(getattr(woven, name), getattr(expected, name)), name
