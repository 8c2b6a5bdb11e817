"""Raycast, nearest surface and collisions of ``WorldQueries`` against brute force on small random scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldweave.bridge.memory import voxel_keys
from worldweave.bridge.memory.voxel_map import VoxelMap
from worldweave.bridge.queries import WorldQueries
from worldweave.bridge.queries.distance_field import nearest_reference
from worldweave.bridge.queries.raycast import raycast_reference
from worldweave.proto.errors import InvalidInputError, LimitExceededError

VOXEL = 0.02


def _box_surface(rng, center, half, step):
    points = []
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        u = np.arange(-half[others[0]], half[others[0]] + 1e-9, step)
        v = np.arange(-half[others[1]], half[others[1]] + 1e-9, step)
        uu, vv = np.meshgrid(u, v, indexing="ij")
        for sign in (-1.0, 1.0):
            face = np.zeros((uu.size, 3))
            face[:, axis] = sign * half[axis]
            face[:, others[0]], face[:, others[1]] = uu.ravel(), vv.ravel()
            points.append(center + face)
    return np.concatenate(points)


def random_scene(seed: int) -> VoxelMap:
    """A few boxes and spheres (their surfaces, sampled densely) in a 1.4 m cube around the origin."""
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(3):
        parts.append(_box_surface(rng, rng.uniform(-0.5, 0.5, 3), rng.uniform(0.05, 0.3, 3), VOXEL / 2))
    for _ in range(2):
        radius = rng.uniform(0.05, 0.25)
        directions = rng.normal(size=(int(40 * (radius / VOXEL) ** 2), 3))
        parts.append(rng.uniform(-0.5, 0.5, 3) + radius * directions / np.linalg.norm(directions, axis=1, keepdims=True))
    points = np.concatenate(parts).astype(np.float32)
    voxel_map = VoxelMap(VOXEL)
    voxel_map.insert(points, rng.integers(0, 256, size=points.shape, dtype=np.uint8))
    return voxel_map


@pytest.fixture(scope="module", params=[0, 1])
def scene(request):
    voxel_map = random_scene(request.param)
    return voxel_map, WorldQueries(voxel_map), voxel_map.points()[0].astype(np.float64)


def _segment_distances(points, a, b):
    """(Q, N) distances from N points to Q segments."""
    ab = b - a
    t = np.einsum("qnk,qk->qn", points[None] - a[:, None], ab) / np.maximum((ab * ab).sum(1), 1e-300)[:, None]
    closest = a[:, None] + np.clip(t, 0, 1)[..., None] * ab[:, None]
    return np.linalg.norm(points[None] - closest, axis=2)


def _box_signed_distances(points, centers, half, rotations):
    local = np.einsum("qji,qnj->qni", rotations, points[None] - centers[:, None])
    q = np.abs(local) - half[:, None]
    return np.linalg.norm(np.maximum(q, 0), axis=2) + np.minimum(q.max(axis=2), 0)


def _random_rotations(rng, n):
    q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    return q * np.sign(np.linalg.det(q))[:, None, None]


# ------------------------------------------------------------------------------------------------- nearest


def test_nearest_matches_brute_force_near_and_far(scene):
    voxel_map, queries, centers = scene
    rng = np.random.default_rng(5)
    near = centers[rng.integers(0, len(centers), 1500)] + rng.normal(scale=0.05, size=(1500, 3))
    far = rng.uniform(-2.5, 2.5, size=(2500, 3))
    points = np.concatenate([near, far])
    result = queries.nearest(points, 2.5)
    truth = nearest_reference(points, centers, 2.5)
    assert truth.found[:1500].all() and truth.found[1500:].mean() > 0.5 and not truth.found.all()
    np.testing.assert_array_equal(result.found, truth.found)
    error = result.distance_m[truth.found] - truth.distance_m[truth.found]
    assert np.abs(error).max() < VOXEL / 2
    # The answer is a real voxel centre at the reported distance.
    found = result.found
    np.testing.assert_allclose(np.linalg.norm(result.point_m[found] - points[found], axis=1), result.distance_m[found], atol=1e-6)
    keys = voxel_keys.point_keys(torch.from_numpy(result.point_m[found]), VOXEL)[0].numpy()
    assert len(voxel_map.lookup(keys)) == found.sum()
    assert np.isnan(result.point_m[~found]).all() and np.isinf(result.distance_m[~found]).all()


def test_nearest_respects_each_range(scene):
    _, queries, centers = scene
    rng = np.random.default_rng(6)
    points = rng.uniform(-1.2, 1.2, size=(800, 3))
    ranges = rng.uniform(0.0, 0.6, size=800)
    result = queries.nearest(points, ranges)
    truth = nearest_reference(points, centers, ranges)
    np.testing.assert_array_equal(result.found, truth.found)
    assert 0.1 < truth.found.mean() < 0.9


# ------------------------------------------------------------------------------------------------- raycast


def test_raycast_matches_voxel_dda(scene):
    voxel_map, queries, _ = scene
    rng = np.random.default_rng(7)
    origins = rng.uniform(-1.0, 1.0, size=(3000, 3))
    directions = rng.normal(size=(3000, 3))
    ranges = rng.uniform(0.2, 3.0, size=3000)
    hits = queries.raycast(origins, directions * rng.uniform(0.1, 5.0, (3000, 1)), ranges)
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    ref_t, ref_keys = raycast_reference(np.sort(voxel_map.voxels().keys), VOXEL, origins, unit, ranges)
    assert 0.05 < hits.hit.mean() < 0.9
    np.testing.assert_array_equal(hits.hit, ref_t >= 0)
    np.testing.assert_allclose(hits.distance_m[hits.hit], ref_t[ref_t >= 0], atol=1e-6)
    assert np.isinf(hits.distance_m[~hits.hit]).all() and np.isnan(hits.point_m[~hits.hit]).all()
    # The hit point lies on the hit voxel (the one the DDA found), whose colour is reported.
    voxels = voxel_map.lookup(ref_keys[hits.hit])
    np.testing.assert_array_equal(hits.color[hits.hit], voxels.colors)
    assert (np.abs(hits.point_m[hits.hit] - voxels.positions_m) <= VOXEL / 2 + 1e-6).all()
    assert (hits.color[~hits.hit] == 0).all()


def test_ray_from_inside_a_voxel_hits_at_zero(scene):
    voxel_map, queries, centers = scene
    hits = queries.raycast(centers[:5], np.tile([0.0, 0.0, 1.0], (5, 1)), 1.0)
    assert hits.hit.all()
    np.testing.assert_array_equal(hits.distance_m, 0.0)
    np.testing.assert_allclose(hits.point_m, centers[:5])


# ---------------------------------------------------------------------------------------------- collisions


def test_spheres_match_brute_force(scene):
    _, queries, centers = scene
    rng = np.random.default_rng(8)
    spheres = rng.uniform(-1.0, 1.0, size=(600, 3))
    radii = rng.uniform(0.0, 0.4, size=600)
    contacts = queries.collide_spheres(spheres, radii, max_clearance_m=0.3)
    distance = nearest_reference(spheres, centers, 10.0).distance_m
    clearance = distance - radii - queries.contact_margin_m
    within = clearance <= 0.3
    assert 0.1 < contacts.hit.mean() < 0.9
    # Exact when the contact is within a block of the centre, within half a voxel beyond (through the field).
    clear = np.abs(clearance) > VOXEL / 2
    np.testing.assert_array_equal(np.isfinite(contacts.clearance_m)[clear], within[clear])
    np.testing.assert_allclose(contacts.clearance_m[within & clear], clearance[within & clear], atol=VOXEL / 2)
    close = distance < 0.16
    np.testing.assert_allclose(contacts.clearance_m[close], clearance[close], atol=1e-6)
    np.testing.assert_array_equal(contacts.hit[clear], clearance[clear] <= 0)


def test_capsules_match_brute_force(scene):
    _, queries, centers = scene
    rng = np.random.default_rng(9)
    a = rng.uniform(-0.9, 0.9, size=(300, 3))
    b = a + rng.normal(scale=0.3, size=(300, 3))
    radii = rng.uniform(0.0, 0.2, size=300)
    contacts = queries.collide_capsules(a, b, radii, max_clearance_m=0.2)
    distances = _segment_distances(centers, a, b)
    clearance = distances.min(axis=1) - radii - queries.contact_margin_m
    within = clearance <= 0.2
    assert 0.1 < contacts.hit.mean() < 0.9
    np.testing.assert_array_equal(np.isfinite(contacts.clearance_m), within)
    np.testing.assert_allclose(contacts.clearance_m[within], clearance[within], atol=1e-6)
    np.testing.assert_array_equal(contacts.hit, clearance <= 0)
    # The contact is the voxel centre that decides the clearance.
    p, a, b = contacts.point_m[within], a[within], b[within]
    t = np.clip(((p - a) * (b - a)).sum(1) / np.maximum(((b - a) ** 2).sum(1), 1e-300), 0, 1)
    contact_distance = np.linalg.norm(p - (a + t[:, None] * (b - a)), axis=1)
    np.testing.assert_allclose(contact_distance - radii[within] - queries.contact_margin_m, clearance[within], atol=1e-6)


def test_boxes_match_brute_force(scene):
    _, queries, centers = scene
    rng = np.random.default_rng(10)
    box_centers = rng.uniform(-0.9, 0.9, size=(200, 3))
    half = rng.uniform(0.0, 0.3, size=(200, 3))
    rotations = _random_rotations(rng, 200)
    contacts = queries.collide_boxes(box_centers, half, rotations, max_clearance_m=0.2)
    signed = _box_signed_distances(centers, box_centers, half, rotations)
    clearance = signed.min(axis=1) - queries.contact_margin_m
    within = clearance <= 0.2
    assert 0.1 < contacts.hit.mean() < 0.9 and (clearance < -0.05).any()
    np.testing.assert_array_equal(np.isfinite(contacts.clearance_m), within)
    np.testing.assert_allclose(contacts.clearance_m[within], clearance[within], atol=1e-6)
    np.testing.assert_array_equal(contacts.hit, clearance <= 0)


def test_sphere_is_a_capsule_of_zero_length(scene):
    _, queries, _ = scene
    rng = np.random.default_rng(11)
    points = rng.uniform(-1.0, 1.0, size=(300, 3))
    spheres = queries.collide_spheres(points, 0.05)
    capsules = queries.collide_capsules(points, points, 0.05)
    np.testing.assert_array_equal(spheres.hit, capsules.hit)
    both = np.isfinite(capsules.clearance_m)
    np.testing.assert_array_equal(np.isfinite(spheres.clearance_m), both)
    np.testing.assert_allclose(spheres.clearance_m[both], capsules.clearance_m[both], atol=VOXEL / 2)
    close = capsules.clearance_m < 0.1  # contact within a block of the centre: the field's answer is exact
    np.testing.assert_allclose(spheres.clearance_m[close], capsules.clearance_m[close], atol=1e-6)


def test_capsules_and_boxes_at_touching_distance():
    """A wall of voxels with centres at x = 0.51; shapes placed 1 mm short of touching it, then 1 mm into it. The
    capsule's axis runs over a row of voxel centres (z = 0.01), the box's face is parallel to the wall."""
    ys, zs = np.meshgrid(np.arange(-0.5, 0.5, VOXEL / 2), np.arange(-0.5, 0.5, VOXEL / 2), indexing="ij")
    wall = np.stack([np.full(ys.size, 0.505), ys.ravel(), zs.ravel()], axis=1).astype(np.float32)
    voxel_map = VoxelMap(VOXEL)
    voxel_map.insert(wall, np.full(wall.shape, 90, np.uint8))
    queries = WorldQueries(voxel_map)
    wall_x = 0.51  # voxel centres: (25 + 0.5) * 0.02
    surface = wall_x - queries.contact_margin_m
    radius = 0.1
    turn = np.array([[1.0, 0, 0], [0, np.cos(0.5), -np.sin(0.5)], [0, np.sin(0.5), np.cos(0.5)]])  # about x
    for gap in (0.001, -0.001):
        axis_x = surface - radius - gap
        capsule = queries.collide_capsules([[axis_x, -0.2, 0.01]], [[axis_x, 0.2, 0.01]], radius)
        assert capsule.hit[0] == (gap < 0)
        np.testing.assert_allclose(capsule.clearance_m[0], gap, atol=1e-6)
        assert abs(capsule.point_m[0, 0] - wall_x) < 1e-9
        half = np.array([[0.05, 0.1, 0.2]])
        box = queries.collide_boxes([[surface - 0.05 - gap, 0.0, 0.0]], half, turn[None])
        assert box.hit[0] == (gap < 0)
        np.testing.assert_allclose(box.clearance_m[0], gap, atol=1e-6)


# --------------------------------------------------------------------------------------------- batch sizes


@pytest.mark.parametrize("n", [0, 1])
def test_batches_of_zero_and_one(scene, n):
    _, queries, centers = scene
    points = centers[:n] + 0.01
    assert queries.nearest(points, 1.0).distance_m.shape == (n,)
    hits = queries.raycast(points, np.ones((n, 3)), 1.0)
    assert hits.hit.shape == (n,) and hits.point_m.shape == (n, 3) and hits.color.shape == (n, 3)
    assert queries.collide_spheres(points, 0.1).point_m.shape == (n, 3)
    assert queries.collide_capsules(points, points + 0.1, 0.1).clearance_m.shape == (n,)
    assert queries.collide_boxes(points, np.full((n, 3), 0.1), np.tile(np.eye(3), (n, 1, 1))).hit.shape == (n,)
    assert queries.occupancy(points).shape == (n,)
    if n:
        assert queries.nearest(points, 1.0).found[0] and queries.collide_spheres(points, 0.1).hit[0]


# ------------------------------------------------------------------------------------------------- errors


def test_bad_inputs_name_the_value(scene):
    _, queries, _ = scene
    with pytest.raises(InvalidInputError, match=r"points_m\[1\] has a non-finite value nan"):
        queries.nearest([[0, 0, 0], [0, np.nan, 0]], 1.0)
    with pytest.raises(InvalidInputError, match=r"shape \(N, 3\)"):
        queries.nearest(np.zeros((4, 2)), 1.0)
    with pytest.raises(InvalidInputError, match=r"max_range_m\[0\] must be a finite number >= 0.*-1"):
        queries.nearest(np.zeros((2, 3)), -1.0)
    with pytest.raises(LimitExceededError, match="max_distance_m"):
        queries.nearest(np.zeros((1, 3)), 3.0)
    with pytest.raises(InvalidInputError, match=r"directions\[1\].*zero length"):
        queries.raycast(np.zeros((2, 3)), [[1, 0, 0], [0, 0, 0]], 1.0)
    with pytest.raises(InvalidInputError, match="directions has 1 rows, the batch has 2"):
        queries.raycast(np.zeros((2, 3)), [[1, 0, 0]], 1.0)
    with pytest.raises(InvalidInputError, match=r"radii_m\[0\]"):
        queries.collide_spheres(np.zeros((1, 3)), np.inf)
    with pytest.raises(InvalidInputError, match=r"rotations\[0\] is not a rotation"):
        queries.collide_boxes(np.zeros((1, 3)), np.ones((1, 3)), np.diag([1.0, 1.0, -1.0])[None])
    with pytest.raises(InvalidInputError, match=r"half_extents_m\[0\] must be >= 0"):
        queries.collide_boxes(np.zeros((1, 3)), [[0.1, -0.1, 0.1]], np.eye(3)[None])
    with pytest.raises(InvalidInputError, match="outside the world's extent"):
        queries.occupancy([[1e6, 0, 0]])
