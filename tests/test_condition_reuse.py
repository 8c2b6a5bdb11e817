"""A camera that holds still gets the last condition again (``World.condition``'s reuse), equal to recomputing it,
and any change of the anchors it came from makes it recomputed."""

from __future__ import annotations

import numpy as np

from worldweave.bridge.frames import RenderResult
from worldweave.bridge.regions import Box
from worldweave.bridge.world import Seed, World
from worldweave.proto.geometry import Intrinsics, Pose

INTRINSICS = Intrinsics.from_fov(64, 48, fov_x_deg=75.0)


def _recomputed(world: World, pose: Pose) -> RenderResult:
    memory = world.memory
    return memory.render_anchors(memory.retrieve([pose], INTRINSICS), pose, INTRINSICS)


def _equal(a: RenderResult, b: RenderResult) -> bool:
    return all(np.array_equal(getattr(a, name), getattr(b, name)) for name in ("rgb", "depth", "mask", "confidence"))


def test_holding_still_reuses_the_condition_until_the_anchors_change(room) -> None:
    start = Pose.look_at([-1.0, 0.0, 1.4], [2.5, 0.0, 1.0])
    still = Pose.look_at([-0.8, 0.1, 1.4], [2.5, 0.2, 1.0])
    world = World(Seed([room.render(start, INTRINSICS)]))
    for _ in range(3):  # the first steps at the new view may add it as an anchor; then it is covered
        world.step([still])
    anchors = len(world.memory.anchors)
    first = world.condition([still], INTRINSICS)
    again = world.condition([still], INTRINSICS)
    assert again.retrieve_s == 0.0, "the second call reuses the first"
    assert _equal(again.renders[0], first.renders[0]) and _equal(again.renders[0], _recomputed(world, still))
    assert again.anchor_ids == first.anchor_ids and len(world.memory.anchors) == anchors

    again.renders[0].rgb[:] = 7  # what a caller does with its condition does not reach the kept one
    assert _equal(world.condition([still], INTRINSICS).renders[0], first.renders[0])

    moved = Pose.look_at([-0.8, 0.1, 1.4], [2.5, 0.25, 1.0])
    assert world.condition([moved], INTRINSICS).retrieve_s > 0.0, "another pose is computed"

    world.recolor(Box([1.0, -3.0, 0.0], [3.6, 3.0, 2.7]), (255, 0, 255))  # replaces anchors, keeps the index
    recolored = world.condition([still], INTRINSICS)
    assert recolored.retrieve_s > 0.0 and _equal(recolored.renders[0], _recomputed(world, still))
    assert not _equal(recolored.renders[0], first.renders[0])

    world.remove(Box([1.0, -3.0, 0.0], [3.6, 3.0, 2.7]))  # resets the index
    removed = world.condition([still], INTRINSICS)
    assert removed.retrieve_s > 0.0 and _equal(removed.renders[0], _recomputed(world, still))
    assert world.condition([still], INTRINSICS).retrieve_s == 0.0
