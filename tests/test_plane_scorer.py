"""``metrics.PlaneScorer``'s two geometric questions, against brute force on the procedural room: which plane a point
lies on, and which points of a plane lie within reach of the points memory holds on it."""

from __future__ import annotations

import numpy as np
import pytest

from worldweave.bridge.eval import metrics
from worldweave.bridge.eval.scenes import make_scene


@pytest.fixture(scope="module")
def planes() -> metrics.PlaneScorer:
    return metrics.PlaneScorer(make_scene("room", seed=0))


def test_labels_name_the_nearest_plane_within_tolerance_the_lowest_index_on_ties(planes):
    rng = np.random.default_rng(0)
    low, high = np.array([-1.0, -1.0, -0.5]), np.array([6.0, 6.0, 3.5])  # the room and around it
    on_planes = -planes.offsets[:, None] * planes.normals  # the point of each plane nearest the origin
    points = np.concatenate([
        rng.uniform(low, high, (20000, 3)),
        on_planes[rng.integers(0, len(on_planes), 5000)] + rng.normal(0.0, 0.01, (5000, 3)),
        (on_planes[:, None] + on_planes[None, :]).reshape(-1, 3) / 2,  # midway between two planes: ties
    ])
    residual = np.abs(points @ planes.normals.T + planes.offsets)
    nearest = residual.argmin(axis=1)  # the first of equally near planes
    for tolerance_m in (0.01, 0.02, 1.0):
        expected = np.where(residual[np.arange(len(points)), nearest] <= tolerance_m, nearest, -1)
        labels = planes.labels(points, tolerance_m)
        assert np.array_equal(labels, expected), tolerance_m
        assert (labels >= 0).any() and ((labels == -1).any() or tolerance_m == 1.0)
    assert ((residual == residual.min(axis=1, keepdims=True)).sum(axis=1) > 1).sum() > 10, "the fixture has ties"


def test_within_reach_is_the_reach_to_within_a_grid_cell(planes):
    floor = int(np.flatnonzero(planes.normals[:, 2] == 1.0)[0])  # a horizontal plane: z = -offset
    z = -planes.offsets[floor]
    rng = np.random.default_rng(1)
    held = np.column_stack([rng.uniform(0.0, 1.0, (40, 2)) * [3.0, 0.2] + [1.0, 1.0], np.full(40, z)])
    points = np.column_stack([rng.uniform(-1.0, 6.0, (20000, 2)), np.full(20000, z)])
    distance = np.linalg.norm(points[:, None, :2] - held[None, :, :2], axis=2).min(axis=1)
    near = planes._within_reach(floor, points, held)
    cell_m = 2 * metrics.PLANE_ON_M
    sure_in = distance <= metrics.PLANE_REACH_M - 2 * cell_m
    sure_out = distance >= metrics.PLANE_REACH_M + 3 * cell_m
    assert sure_in.sum() > 1000 and sure_out.sum() > 1000
    assert near[sure_in].all() and not near[sure_out].any()
    assert 0 < near[~sure_in & ~sure_out].sum() < (~sure_in & ~sure_out).sum()  # the band decides by cells
