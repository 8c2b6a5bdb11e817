"""Anchors: points from a keyframe in its own camera frame, edge filtering, exclusions, keyframe policy, storage."""

from __future__ import annotations

import numpy as np
import pytest

from worldweave.bridge.eval.scenes import Scene
from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.memory.anchors import (
    SKETCH_GRID,
    Anchor,
    AnchorOptions,
    AnchorStore,
    KeyframePolicy,
    sample_points,
    sketch_depth,
)
from worldweave.bridge.memory.voxel_map import Source
from worldweave.bridge.regions import Box
from worldweave.proto.errors import InvalidInputError, NotFoundError
from worldweave.proto.geometry import Intrinsics, Pose

INTRINSICS = Intrinsics.from_fov(160, 120, fov_x_deg=70.0)
ROOM_MIN, ROOM_MAX = np.array([-3.5, -3.0, 0.0]), np.array([3.5, 3.0, 2.7])


def _view(room: Scene, eye, target) -> RGBDFrame:
    return room.render(Pose.look_at(eye, target), INTRINSICS)


def test_points_lie_on_the_surfaces_the_keyframe_saw(room: Scene) -> None:
    frame = _view(room, [-0.5, 0.3, 1.4], [1.0, -0.2, 0.6])
    anchor = Anchor.from_frame(frame, id=0, frame_id=7, options=AnchorOptions(stride_px=1))
    assert anchor.frame_id == 7 and anchor.pose == frame.pose
    # stride 1: each point is its pixel back-projected; project it back and compare with the frame's depth.
    z = anchor.points_cam[:, 2]
    u = np.round(INTRINSICS.fx * anchor.points_cam[:, 0] / z + INTRINSICS.cx).astype(int)
    v = np.round(INTRINSICS.fy * anchor.points_cam[:, 1] / z + INTRINSICS.cy).astype(int)
    assert np.allclose(z, frame.depth[v, u], rtol=1e-5)
    assert np.array_equal(anchor.colors, frame.rgb[v, u])
    world = anchor.points_world()
    assert np.all(world >= ROOM_MIN - 1e-3) and np.all(world <= ROOM_MAX + 1e-3)
    assert len(anchor.points_cam) > 0.8 * INTRINSICS.width * INTRINSICS.height
    assert np.allclose(anchor.point_size_m, z / INTRINSICS.fx)


def test_stride_averages_blocks_and_sizes_grow_with_stride(room: Scene) -> None:
    frame = _view(room, [0.0, 0.0, 1.5], [1.0, 0.5, 1.0])
    one = Anchor.from_frame(frame, id=0, frame_id=0, options=AnchorOptions(stride_px=1))
    four = Anchor.from_frame(frame, id=1, frame_id=0, options=AnchorOptions(stride_px=4))
    assert len(one.points_cam) / 20 < len(four.points_cam) <= (120 // 4) * (160 // 4)
    assert np.median(four.point_size_m / four.points_cam[:, 2]) == pytest.approx(4 / INTRINSICS.fx, rel=1e-5)


def test_automatic_stride_follows_the_image_width(room: Scene) -> None:
    automatic = AnchorOptions()
    assert [automatic.stride_for(w) for w in (64, 160, 239, 240, 320, 640, 1280, 1920, 9999)] == [1, 1, 1, 2, 2, 4, 8, 12, 16]
    assert AnchorOptions(stride_px=3).stride_for(1280) == 3
    frame = _view(room, [0.0, 0.0, 1.5], [1.0, 0.5, 1.0])  # 160x120: every pixel is a point
    anchor = Anchor.from_frame(frame, id=0, frame_id=0)
    assert np.median(anchor.point_size_m / anchor.points_cam[:, 2]) == pytest.approx(1 / INTRINSICS.fx, rel=1e-5)
    with pytest.raises(InvalidInputError, match="stride_px"):
        AnchorOptions(stride_px=0)


def test_depth_edges_give_no_points() -> None:
    depth = np.full((40, 40), 2.0, np.float32)
    depth[:, 20:] = 1.0  # a step: the columns on both sides of it are edges
    rgb = np.full((40, 40, 3), 100, np.uint8)
    intrinsics = Intrinsics(40.0, 40.0, 19.5, 19.5, 40, 40)
    points, *_ = sample_points(rgb, depth, intrinsics, AnchorOptions(stride_px=1, edge_rel=0.05))
    u = np.round(intrinsics.fx * points[:, 0] / points[:, 2] + intrinsics.cx).astype(int)
    assert not np.any((u == 19) | (u == 20))
    assert len(points) == 40 * 38


def test_excluded_pixels_and_regions_never_enter_the_anchor(room: Scene) -> None:
    frame = _view(room, [-1.5, 0.0, 1.5], [3.5, 0.0, 1.0])
    mask = np.zeros(INTRINSICS.shape, bool)
    mask[:, :40] = True
    box = Box([2.0, -0.8, 0.5], [3.6, 0.8, 1.5])  # whatever stands or hangs at the far wall's middle
    anchor = Anchor.from_frame(frame, id=0, frame_id=0, exclude_mask=mask, exclude_regions=[box])
    assert np.all(anchor.depth[:, :40] == 0)
    assert not np.any(box.contains(anchor.points_world()))
    full = Anchor.from_frame(frame, id=1, frame_id=0)
    assert np.sum(box.contains(full.points_world())) > 30


def test_sketch_has_one_point_per_cell_at_the_median_depth() -> None:
    depth = np.full((120, 160), 3.0, np.float32)
    depth[:60] = 0.0  # upper half unknown
    points, valid, sizes = sketch_depth(depth, INTRINSICS)
    gw, gh = SKETCH_GRID
    assert points.shape == (gw * gh, 3)
    valid = valid.reshape(gh, gw)
    assert not valid[: gh // 2].any() and valid[gh // 2 :].all()
    assert np.allclose(points.reshape(gh, gw, 3)[gh // 2 :, :, 2], 3.0)
    assert np.allclose(sizes.reshape(gh, gw)[gh // 2 :], 3.0 * (160 / gw) / INTRINSICS.fx)


def _sketch_depth_numpy(depth: np.ndarray, intrinsics: Intrinsics, grid: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """The sketch as numpy computed it before the kernel: the reference ``sketch_depth`` must equal bit for bit."""
    samples_side = 4
    gw, gh = grid
    h, w = depth.shape
    fu = (np.arange(gw * samples_side) + 0.5) * (w / (gw * samples_side)) - 0.5
    fv = (np.arange(gh * samples_side) + 0.5) * (h / (gh * samples_side)) - 0.5
    su = np.clip(np.round(fu), 0, w - 1).astype(np.int64)
    sv = np.clip(np.round(fv), 0, h - 1).astype(np.int64)
    samples = depth[sv[:, None], su[None, :]].reshape(gh, samples_side, gw, samples_side)
    samples = samples.transpose(0, 2, 1, 3).reshape(gh, gw, -1).astype(np.float32)
    valid_count = (samples > 0).sum(axis=2)
    valid = valid_count >= (samples_side * samples_side) / 4
    ordered = np.sort(np.where(samples > 0, samples, np.inf), axis=2)
    median = np.take_along_axis(ordered, np.maximum(valid_count - 1, 0)[..., None] // 2, axis=2)[..., 0]
    z = np.where(valid, median, 0.0).astype(np.float32)
    cu = (np.arange(gw) + 0.5) * (w / gw) - 0.5
    cv = (np.arange(gh) + 0.5) * (h / gh) - 0.5
    x = (cu[None, :] - intrinsics.cx) / intrinsics.fx * z
    y = (cv[:, None] - intrinsics.cy) / intrinsics.fy * z
    points = np.stack([x, y, z], axis=-1).reshape(-1, 3).astype(np.float32)
    sizes = (z * (w / gw) / intrinsics.fx).reshape(-1).astype(np.float32)
    return points, valid.reshape(-1), sizes


@pytest.mark.parametrize("shape", [(240, 320), (48, 64), (37, 100)])
def test_the_sketch_kernel_equals_numpy(shape: tuple[int, int]) -> None:
    """Cells with no, a few, exactly a quarter and all samples valid, tied and untied depths, float32 and float64
    images, two grids: the same bytes (the -0.0 of an empty cell left of the centre too)."""
    rng = np.random.default_rng(shape[1])
    h, w = shape
    intrinsics = Intrinsics.from_fov(w, h, fov_x_deg=70.0)
    for trial in range(12):
        depth = rng.choice([0.5, 1.0, 2.0, 3.3], shape).astype(np.float32)
        depth *= rng.uniform(0.9, 1.1, shape).astype(np.float32) if trial % 2 else np.float32(1.0)  # ties when even
        depth[rng.uniform(size=shape) < trial / 11] = 0.0
        if trial % 3 == 0:
            depth = depth.astype(np.float64)
        for grid in (SKETCH_GRID, (8, 6)):
            expected = _sketch_depth_numpy(depth, intrinsics, grid)
            for got, expected in zip(sketch_depth(depth, intrinsics, grid), expected):
                assert got.dtype == expected.dtype and got.shape == expected.shape
                assert got.tobytes() == expected.tobytes()


def test_anchor_renders_its_own_view_back(room: Scene) -> None:
    frame = _view(room, [0.2, -0.4, 1.6], [-1.0, 0.5, 1.0])
    anchor = Anchor.from_frame(frame, id=0, frame_id=0, options=AnchorOptions(stride_px=1))
    render = anchor.render(frame.pose, INTRINSICS)
    assert render.mask.mean() > 0.95  # depth-edge pixels give no points
    both = render.mask & (frame.depth > 0)
    assert np.mean(np.abs(render.depth[both] - frame.depth[both]) < 1e-3) > 0.97
    assert np.mean(np.all(render.rgb[both] == frame.rgb[both], axis=1)) > 0.95


def test_keyframe_policy_thresholds(room: Scene) -> None:
    store = AnchorStore()
    policy = KeyframePolicy(min_coverage=0.8, max_move_m=0.2, max_turn_deg=15.0)
    pose = Pose.look_at([0.0, 0.0, 1.5], [1.0, 0.0, 1.5])
    assert policy.decide(pose, 0.0, store)[0]  # empty store
    store.add_frame(room.render(pose, INTRINSICS), frame_id=0)
    assert not policy.decide(pose, 0.95, store)[0]
    assert policy.decide(pose, 0.7, store)[0]  # not covered enough
    moved = Pose.look_at([0.3, 0.0, 1.5], [1.3, 0.0, 1.5])
    add, reason = policy.decide(moved, 0.95, store)
    assert add and "0.30 m" in reason
    turned = Pose.look_at([0.0, 0.0, 1.5], [1.0, 0.4, 1.5])  # about 22 degrees
    assert policy.decide(turned, 0.95, store)[0]
    nudged = Pose.look_at([0.1, 0.0, 1.5], [1.1, 0.1, 1.5])
    assert not policy.decide(nudged, 0.95, store)[0]
    with pytest.raises(InvalidInputError, match="min_coverage"):
        KeyframePolicy(min_coverage=1.5)


def test_store_ids_lookup_and_index(room: Scene) -> None:
    store = AnchorStore()
    for i in range(3):
        store.add_frame(_view(room, [0.0, 0.0, 1.5], [np.cos(i), np.sin(i), 1.2]), frame_id=10 * i, source=Source.SEED)
    assert store.ids == [0, 1, 2] and len(store) == 3 and 1 in store
    assert store[2].frame_id == 20 and store[2].source == Source.SEED
    with pytest.raises(NotFoundError, match="no anchor with id 9"):
        store[9]
    index = store.index()
    assert index.sketch_world.shape == (3, SKETCH_GRID[0] * SKETCH_GRID[1], 3)
    assert np.all(index.radii > 0)
    assert np.array_equal(index.frame_ids, [0, 10, 20])


def test_store_write_read_round_trip(room: Scene, tmp_path) -> None:
    store = AnchorStore()
    store.add_frame(_view(room, [0.0, 0.0, 1.5], [1.0, 0.3, 1.2]), frame_id=3, confidence=0.5)
    store.add_frame(_view(room, [0.5, 0.0, 1.5], [-1.0, 0.3, 1.2]), frame_id=4)
    store.write(tmp_path)
    back = AnchorStore.read(tmp_path)
    assert back.ids == store.ids
    for a, b in zip(store, back):
        assert a.frame_id == b.frame_id and a.pose == b.pose and a.intrinsics == b.intrinsics
        assert a.confidence == b.confidence and a.source == b.source
        for name in ("image", "depth", "points_cam", "colors", "point_size_m"):
            assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not list(tmp_path.rglob("*.pkl"))
