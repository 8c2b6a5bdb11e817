"""Retrieval modes on hand-built cases: the anchor that covers the target is chosen, occluded ones are not."""

from __future__ import annotations

import numpy as np
import pytest

from worldweave.bridge.eval.scenes import Scene, make_scene
from worldweave.bridge.memory.anchors import Anchor, AnchorStore
from worldweave.bridge.memory.retrieval import (
    RetrievalOptions,
    chunk_coverage,
    frustum_candidates,
    make_retriever,
    retrieve,
)
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose

INTRINSICS = Intrinsics.from_fov(128, 96, fov_x_deg=70.0)
EYE = np.array([0.0, 0.0, 1.4])
DIRECTIONS = {"+x": [1, 0, 0], "+y": [0, 1, 0], "-x": [-1, 0, 0], "-y": [0, -1, 0]}


@pytest.fixture(scope="module")
def room_store() -> tuple[Scene, AnchorStore, dict[str, int]]:
    """Anchors looking along +x, +y, -x, -y from the room's centre (ids 0..3 in that order)."""
    room = make_scene("room")
    store = AnchorStore()
    ids = {}
    for name, direction in DIRECTIONS.items():
        pose = Pose.look_at(EYE, EYE + np.array(direction, float) - [0, 0, 0.2])
        ids[name] = store.add_frame(room.render(pose, INTRINSICS), frame_id=len(ids)).id
    return room, store, ids


def _look(direction, eye=EYE) -> Pose:
    eye = np.asarray(eye, float)
    return Pose.look_at(eye, eye + np.asarray(direction, float) - [0, 0, 0.25])


def test_coverage_picks_the_anchor_that_sees_the_target(room_store) -> None:
    _, store, ids = room_store
    for name, direction in DIRECTIONS.items():
        chosen = retrieve(store, [_look(direction, EYE + [0.2, -0.1, 0.0])], INTRINSICS, mode="coverage", k=1)
        assert [a.id for a in chosen] == [ids[name]]


def test_coverage_covers_a_chunk_that_turns_and_stops_when_nothing_is_gained(room_store) -> None:
    _, store, ids = room_store
    chunk = [_look(DIRECTIONS["+x"]), _look([1, 1, 0]), _look(DIRECTIONS["+y"])]
    chosen = [a.id for a in retrieve(store, chunk, INTRINSICS, mode="coverage", k=7)]
    assert set(chosen) == {ids["+x"], ids["+y"]}
    single = [a.id for a in retrieve(store, [_look(DIRECTIONS["-x"])], INTRINSICS, mode="coverage", k=7)]
    assert single == [ids["-x"]]  # the other anchors see nothing of this view


def test_iou_ranks_the_overlapping_anchor_first_and_applies_epsilon(room_store) -> None:
    _, store, ids = room_store
    target = _look([1.0, 0.25, 0.0])  # mostly +x, a little +y
    chosen = [a.id for a in retrieve(store, [target], INTRINSICS, mode="iou", k=3)]
    assert chosen[0] == ids["+x"]
    assert ids["-x"] not in chosen
    strict = retrieve(store, [target], INTRINSICS, mode="iou", k=3, options=RetrievalOptions(iou_epsilon=0.99))
    assert strict == []


def test_recent_random_and_global(room_store) -> None:
    _, store, ids = room_store
    target = [_look(DIRECTIONS["+x"])]
    assert [a.id for a in retrieve(store, target, INTRINSICS, mode="recent", k=2)] == [ids["-y"], ids["-x"]]
    draws = [a.id for a in retrieve(store, target, INTRINSICS, mode="random", k=3, rng=np.random.default_rng(5))]
    again = [a.id for a in retrieve(store, target, INTRINSICS, mode="random", k=3, rng=np.random.default_rng(5))]
    assert draws == again and len(set(draws)) == 3 and set(draws) <= set(ids.values())
    assert retrieve(store, target, INTRINSICS, mode="global", k=7) == []
    with pytest.raises(InvalidInputError, match="unknown retrieval mode 'nearest'"):
        make_retriever("nearest", RetrievalOptions(), np.random.default_rng(0))
    with pytest.raises(InvalidInputError, match="k"):
        retrieve(store, target, INTRINSICS, mode="coverage", k=0)


def test_frustum_prefilter_and_candidate_cap(room_store) -> None:
    _, store, ids = room_store
    index = store.index()
    target = [_look(DIRECTIONS["+x"], EYE + [1.2, 0.0, 0.0])]  # everything the -x anchor saw is behind it
    rows = frustum_candidates(index, target, INTRINSICS, RetrievalOptions())
    assert ids["+x"] in index.ids[rows] and ids["-x"] not in index.ids[rows]
    capped = frustum_candidates(index, target, INTRINSICS, RetrievalOptions(max_candidates=1))
    assert list(index.ids[capped]) == [ids["+x"]]


def _plane_anchor(anchor_id: int, position_z: float, depth_m: float, color: int) -> Anchor:
    """An anchor at (0, 0, position_z) looking along world +z at a fronto-parallel plane ``depth_m`` ahead."""
    intrinsics = Intrinsics(60.0, 60.0, 31.5, 23.5, 64, 48)
    depth = np.full(intrinsics.shape, depth_m, np.float32)
    image = np.full((*intrinsics.shape, 3), color, np.uint8)
    pose = Pose(np.eye(3), [0.0, 0.0, position_z])
    points = intrinsics.backproject(depth).reshape(-1, 3)
    return Anchor(anchor_id, anchor_id, pose, intrinsics, image, depth, points, image.reshape(-1, 3),
                  points[:, 2] / intrinsics.fx)


def test_an_anchor_behind_the_visible_surface_does_not_count_as_covering() -> None:
    store = AnchorStore()
    store.add(_plane_anchor(0, 0.0, 2.0, 200))  # sees the plane z = 2
    store.add(_plane_anchor(1, 2.5, 2.5, 50))  # beyond that plane, sees a wall at z = 5 (hidden from the target)
    target = Pose(np.eye(3), [0.0, 0.0, -0.5])
    intrinsics = Intrinsics(60.0, 60.0, 31.5, 23.5, 64, 48)
    index = store.index()
    rows = frustum_candidates(index, [target], intrinsics, RetrievalOptions())
    assert len(rows) == 2
    coverage = chunk_coverage(index, rows, [target], intrinsics, RetrievalOptions())
    assert coverage.covered[0, 0].mean() > 0.5 and not coverage.covered[1, 0].any()
    assert [a.id for a in retrieve(store, [target], intrinsics, mode="coverage", k=2)] == [0]


def test_numba_and_numpy_coverage_agree(room_store) -> None:
    _, store, _ = room_store
    index = store.index()
    rows = np.arange(len(index))
    rng = np.random.default_rng(1)
    for _ in range(4):
        eye = EYE + rng.uniform(-0.8, 0.8, 3) * [1, 1, 0.3]
        chunk = [_look(rng.normal(size=3) * [1, 1, 0.2], eye) for _ in range(3)]
        a = chunk_coverage(index, rows, chunk, INTRINSICS, RetrievalOptions(), backend="numba")
        b = chunk_coverage(index, rows, chunk, INTRINSICS, RetrievalOptions(), backend="numpy")
        assert a.covered.any()
        assert np.array_equal(a.covered, b.covered)
        assert np.array_equal(a.visible_points(), b.visible_points())
