"""Nearest surface and collisions are exact at every distance up to their reach (issue 16, "Exact queries").

The surface distance is to voxel centres (``distance_field``, ``collision``). Every scene is built from voxel indices
kept here, so the brute force below never reads the map: it checks the queries against what was inserted and
removed. Scenes hold what trapped the old far-field descent: floors with holes, thick slabs with holes, walls and
isolated voxels far from everything, with query points at every distance up to the 2.5 m reach.
"""

from __future__ import annotations

import numpy as np
import pytest

from worldweave.bridge.memory.voxel_map import VoxelMap
from worldweave.bridge.queries import WorldQueries
from worldweave.bridge.regions import Box

VOXEL = 0.02
REACH_M = 2.5
"""The server's NearestSurface reach (``server/world_state.NEAREST_REACH_M``), the queries' default."""
CLEARANCE_M = 0.25
"""The server's collision clearance reach (``server/world_state.CLEARANCE_REACH_M``), the queries' default."""
TOLERANCE_M = 1e-6


# -------------------------------------------------------------------------------------------- brute force


def centres_m(indices: np.ndarray) -> np.ndarray:
    """(M, 3) float64 world centres of voxel indices (M, 3)."""
    return (indices + 0.5) * VOXEL


def brute_nearest(points_m: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(N,) exact distance (metres) from each point to the nearest voxel centre."""
    centres = centres_m(indices)
    out = np.empty(len(points_m))
    step = max(1, 2_000_000 // len(centres))
    for start in range(0, len(points_m), step):
        p = points_m[start : start + step]
        d2 = (p * p).sum(1)[:, None] - 2 * p @ centres.T + (centres * centres).sum(1)[None]
        nearest = d2.argmin(axis=1)
        out[start : start + step] = np.linalg.norm(p - centres[nearest], axis=1)
    return out


def brute_segment_sd(a: np.ndarray, b: np.ndarray, radii: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(N,) smallest signed distance (metres) from a voxel centre to each capsule."""
    centres = centres_m(indices)
    out = np.empty(len(a))
    for i in range(len(a)):
        ab = b[i] - a[i]
        t = np.clip((centres - a[i]) @ ab / max(ab @ ab, 1e-300), 0.0, 1.0)
        out[i] = np.linalg.norm(centres - (a[i] + t[:, None] * ab), axis=1).min() - radii[i]
    return out


def brute_box_sd(centers: np.ndarray, half: np.ndarray, rotations: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(N,) smallest signed distance (metres) from a voxel centre to each oriented box."""
    voxels = centres_m(indices)
    out = np.empty(len(centers))
    for i in range(len(centers)):
        q = np.abs((voxels - centers[i]) @ rotations[i]) - half[i]
        out[i] = (np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)).min()
    return out


# ------------------------------------------------------------------------------------------------- scenes


def plate(lo: tuple[int, int, int], size: tuple[int, int, int], holes=()) -> np.ndarray:
    """Voxel indices of the box ``lo .. lo + size`` (voxels) less the boxes ``holes`` ((lo, size) pairs)."""
    axes = [np.arange(lo[k], lo[k] + size[k]) for k in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    keep = np.ones(len(grid), dtype=bool)
    for hole_lo, hole_size in holes:
        keep &= ~((grid >= hole_lo) & (grid < np.add(hole_lo, hole_size))).all(axis=1)
    return grid[keep]


Hole = tuple[tuple[int, int, int], tuple[int, int, int]]
"""A box of voxels (lo, size) left empty in a surface."""


def random_scene(rng: np.random.Generator) -> tuple[np.ndarray, list[Hole]]:
    """Distinct voxel indices and the holes in them: a floor with two wide holes, a thick slab with a hole above
    it, a wall with a window and a few isolated voxels scattered up to 3.2 m from the origin, most of them far from
    everything else."""
    side = int(rng.integers(70, 100))
    holes = []
    for _ in range(2):
        size = int(rng.integers(25, 50))
        corner = rng.integers(-side // 2 + 3, side // 2 - size - 3, size=2)
        holes.append(((int(corner[0]), int(corner[1]), 0), (size, size, 1)))
    parts = [plate((-side // 2, -side // 2, 0), (side, side, 1), holes)]
    slab_z, half_hole = int(rng.integers(20, 45)), int(rng.integers(8, 20))
    holes.append(((-half_hole, -half_hole, slab_z), (2 * half_hole, 2 * half_hole, 5)))
    parts.append(plate((-25, -25, slab_z), (50, 50, int(rng.integers(2, 5))), holes[-1:]))
    wall_x = side // 2 + int(rng.integers(10, 40))
    holes.append(((wall_x, -8, 10), (1, 16, 16)))
    parts.append(plate((wall_x, -25, 0), (1, 50, 40), holes[-1:]))
    parts.append(rng.integers(-160, 160, size=(6, 3)))
    return np.unique(np.concatenate(parts), axis=0), holes


def world(indices: np.ndarray) -> tuple[VoxelMap, WorldQueries]:
    voxel_map = VoxelMap(VOXEL)
    insert(voxel_map, indices)
    return voxel_map, WorldQueries(voxel_map, max_distance_m=REACH_M, max_clearance_m=CLEARANCE_M)


def insert(voxel_map: VoxelMap, indices: np.ndarray) -> None:
    points = centres_m(indices).astype(np.float32)
    voxel_map.insert(points, np.full(points.shape, 128, dtype=np.uint8))


def probes(rng: np.random.Generator, indices: np.ndarray, holes: list[Hole], n: int) -> np.ndarray:
    """Query points: half at a uniform 0 .. 2.6 m from random surface voxels (every distance up to and past the
    reach), half in front of or behind the middle of a hole at 0.05 .. 0.8 m, where the nearest voxels lie on the
    hole's rim and a descent from the cells' parents stops short of them."""
    n_rim = n // 2
    origins = centres_m(indices[rng.integers(0, len(indices), n - n_rim)])
    directions = rng.normal(size=(n - n_rim, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    around = origins + directions * rng.uniform(0.0, REACH_M + 0.1, (n - n_rim, 1))
    pick = rng.integers(0, len(holes), n_rim)
    lo = np.array([hole[0] for hole in holes], dtype=np.float64)[pick]
    size = np.array([hole[1] for hole in holes], dtype=np.float64)[pick]
    thin = size.argmin(axis=1)  # the axis across the surface
    offset = rng.uniform(-0.35, 0.35, (n_rim, 3)) * size
    offset[np.arange(n_rim), thin] = rng.choice([-1.0, 1.0], n_rim) * rng.uniform(0.05, 0.8, n_rim) / VOXEL
    return np.concatenate([around, (lo + size / 2 + offset) * VOXEL])


# -------------------------------------------------------------------------------------------- the checks


def check_nearest(
    queries: WorldQueries, indices: np.ndarray, points: np.ndarray, truth: np.ndarray, ranges: np.ndarray
) -> None:
    """``queries.nearest`` against ``truth``, the brute-force distances (metres) from ``points`` to ``indices``."""
    result = queries.nearest(points, ranges)
    decided = np.abs(truth - ranges) > TOLERANCE_M
    np.testing.assert_array_equal(result.found[decided], (truth <= ranges)[decided])
    found = result.found & decided
    np.testing.assert_allclose(result.distance_m[found], truth[found], rtol=0, atol=TOLERANCE_M)
    # The answer is a voxel of the scene at the reported distance.
    reported = np.floor(result.point_m[found] / VOXEL).astype(np.int64)
    scene = {tuple(v) for v in indices.tolist()}
    assert all(tuple(v) in scene for v in reported.tolist())
    to_point = np.linalg.norm(result.point_m[found] - points[found], axis=1)
    np.testing.assert_allclose(to_point, truth[found], rtol=0, atol=TOLERANCE_M)


def check_spheres(queries: WorldQueries, centers: np.ndarray, distance: np.ndarray, radii: np.ndarray) -> None:
    """``queries.collide_spheres`` against the brute-force ``distance`` (metres) from ``centers`` to the surface."""
    truth = distance - radii - queries.contact_margin_m
    contacts = queries.collide_spheres(centers, radii)
    decided = (np.abs(truth) > TOLERANCE_M) & (np.abs(truth - CLEARANCE_M) > TOLERANCE_M)
    within = truth <= CLEARANCE_M
    np.testing.assert_array_equal(np.isfinite(contacts.clearance_m)[decided], within[decided])
    np.testing.assert_array_equal(contacts.hit[decided], (truth <= 0)[decided])
    close = within & decided
    np.testing.assert_allclose(contacts.clearance_m[close], truth[close], rtol=0, atol=TOLERANCE_M)


def check_all(queries: WorldQueries, indices: np.ndarray, holes: list[Hole], rng: np.random.Generator) -> None:
    """Nearest at the full reach and at random ranges, spheres of every size the reach allows, capsules, boxes."""
    points = probes(rng, indices, holes, 2000)
    truth = brute_nearest(points, indices)
    check_nearest(queries, indices, points, truth, np.full(len(points), REACH_M))
    check_nearest(queries, indices, points, truth, rng.uniform(0.0, REACH_M, len(points)))
    radii = rng.uniform(0.0, REACH_M - CLEARANCE_M - queries.contact_margin_m, len(points))
    check_spheres(queries, points, truth, radii)
    # Capsules and boxes start their exact search from the field's nearest points.
    margin = queries.contact_margin_m
    a = probes(rng, indices, holes, 60)
    b = a + rng.normal(scale=0.3, size=a.shape)
    capsule_radii = rng.uniform(0.0, 0.4, len(a))
    truth = brute_segment_sd(a, b, capsule_radii, indices) - margin
    contacts = queries.collide_capsules(a, b, capsule_radii)
    within = truth <= CLEARANCE_M
    np.testing.assert_array_equal(np.isfinite(contacts.clearance_m), within)
    np.testing.assert_allclose(contacts.clearance_m[within], truth[within], rtol=0, atol=TOLERANCE_M)
    half = rng.uniform(0.02, 0.4, size=(60, 3))
    rotations, _ = np.linalg.qr(rng.normal(size=(60, 3, 3)))
    rotations *= np.sign(np.linalg.det(rotations))[:, None, None]
    truth = brute_box_sd(a, half, rotations, indices) - margin
    contacts = queries.collide_boxes(a, half, rotations)
    within = truth <= CLEARANCE_M
    np.testing.assert_array_equal(np.isfinite(contacts.clearance_m), within)
    np.testing.assert_allclose(contacts.clearance_m[within], truth[within], rtol=0, atol=TOLERANCE_M)


# --------------------------------------------------------------------------------------------------- tests


def test_the_issue_case_under_a_hole_in_a_floor():
    # A floor of 2 cm voxels, 1.6 m square, with a 0.8 m square hole; the point lies 0.23 m under the hole.
    indices = plate((-40, -40, 0), (80, 80, 1), [((-20, -20, 0), (40, 40, 1))])
    _, queries = world(indices)
    point = np.array([[0.0579, 0.0104, -0.2274]])
    truth = brute_nearest(point, indices)[0]
    assert abs(truth - 0.42466) < 1e-5
    near = queries.nearest(point, 0.5)
    assert near.found[0] and abs(near.distance_m[0] - truth) < TOLERANCE_M
    np.testing.assert_allclose(near.point_m[0], [0.41, 0.01, 0.01], atol=1e-9)
    contact = queries.collide_spheres(point, 0.43)
    clearance = truth - 0.43 - queries.contact_margin_m
    assert contact.hit[0] and clearance < -0.015
    assert abs(contact.clearance_m[0] - clearance) < TOLERANCE_M


@pytest.mark.parametrize("seed", [0, 1])
def test_random_scenes_equal_brute_force_before_and_after_edits(seed):
    rng = np.random.default_rng(seed)
    indices, holes = random_scene(rng)
    voxel_map, queries = world(indices)
    assert len(voxel_map) == len(indices)
    check_all(queries, indices, holes, rng)
    # Remove a region (a column through the floor and the slab): a new hole, and the field clears those parents.
    lo = np.array([*rng.integers(-30, 0, size=2), -2])
    size = np.array([30, 30, 60])
    inside = ((indices >= lo) & (indices < lo + size)).all(axis=1)
    assert voxel_map.remove(Box(lo * VOXEL, (lo + size) * VOXEL)) == inside.sum() > 0
    indices = indices[~inside]
    holes.append(((int(lo[0]), int(lo[1]), 0), (30, 30, 1)))
    check_all(queries, indices, holes, rng)
    # Insert new voxels: a patch in the middle of that hole and more isolated voxels.
    patch = plate((int(lo[0]) + 12, int(lo[1]) + 12, 0), (6, 6, 1))
    added = np.concatenate([patch, rng.integers(-160, 160, size=(6, 3))])
    insert(voxel_map, added)
    indices = np.unique(np.concatenate([indices, added]), axis=0)
    assert len(voxel_map) == len(indices)
    check_all(queries, indices, holes, rng)
