"""VoxelMap: integrate against analytic surfaces, dynamic exclusion, edits, change log, backends."""

import numpy as np
import pytest
import torch

from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.memory import voxel_keys
from worldweave.bridge.memory.voxel_map import NO_FRAME, Source, VoxelMap
from worldweave.bridge.regions import Box, OrientedBox, Sphere
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose

VOXEL = 0.02
FLOOR_Z = 0.01  # inside voxel layer k = 0, away from voxel boundaries


def voxel_color(ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """A colour that is constant within a voxel column and differs between neighbours."""
    return np.stack([(ix * 37) % 256, (iy * 53) % 256, (ix + iy) % 7 * 30], axis=-1).astype(np.uint8)


def floor_frame(pose: Pose, intrinsics: Intrinsics) -> RGBDFrame:
    """Exact view of the plane z = FLOOR_Z, coloured per voxel column; pixels above the horizon get depth 0."""
    rays_cam = intrinsics.pixel_rays(np.float64)
    rays_world = rays_cam @ pose.rotation.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (FLOOR_Z - pose.position[2]) / rays_world[..., 2]
    hit = np.isfinite(t) & (t > 0) & (t < 4)
    points = pose.position + rays_world * np.where(hit, t, 0)[..., None]
    ix = np.floor(points[..., 0] / VOXEL).astype(np.int64)
    iy = np.floor(points[..., 1] / VOXEL).astype(np.int64)
    rgb = np.where(hit[..., None], voxel_color(ix, iy), 0).astype(np.uint8)
    depth = np.where(hit, t, 0).astype(np.float32)  # rays have z = 1, so t is depth along the optical axis
    return RGBDFrame(rgb, depth, pose, intrinsics)


INTRINSICS = Intrinsics.from_fov(160, 120, fov_x_deg=70.0)
DOWN_POSE = Pose.look_at([0.1, -0.2, 1.5], [0.6, 0.8, FLOOR_Z])


@pytest.fixture(params=["numba", "torch"])
def backend(request):
    return request.param


def test_integrate_places_voxels_on_the_surface_with_exact_colours(backend):
    vmap = VoxelMap(VOXEL, backend=backend)
    stats = vmap.integrate(floor_frame(DOWN_POSE, INTRINSICS), frame_id=7, source=Source.SEED)
    voxels = vmap.voxels()
    assert stats.version == 1 and vmap.version == 1
    assert stats.voxels_added == len(vmap) > 500
    indices = voxel_keys.unpack(torch.from_numpy(voxels.keys)).numpy()
    assert np.all(indices[:, 2] == 0), "every voxel must lie in the layer holding z = FLOOR_Z"
    np.testing.assert_array_equal(voxels.colors, voxel_color(indices[:, 0], indices[:, 1]))
    np.testing.assert_allclose(voxels.positions_m[:, 2], 0.5 * VOXEL, atol=1e-6)
    assert np.all(voxels.sources == Source.SEED)
    assert np.all(voxels.first_frame == 7) and np.all(voxels.last_frame == 7)


def test_second_view_updates_last_frame_and_weights():
    vmap = VoxelMap(VOXEL)
    vmap.integrate(floor_frame(DOWN_POSE, INTRINSICS), frame_id=0)
    before = {k: w for k, w in zip(vmap.voxels().keys, vmap.voxels().weights)}
    vmap.integrate(floor_frame(Pose.look_at([0.2, -0.1, 1.4], [0.6, 0.8, FLOOR_Z]), INTRINSICS), frame_id=1)
    voxels = vmap.voxels()
    seen_twice = np.array([k in before for k in voxels.keys]) & (voxels.last_frame == 1)
    assert seen_twice.sum() > 100
    assert np.all(voxels.first_frame[seen_twice] == 0)
    old = np.array([before[k] for k in voxels.keys[seen_twice]])
    assert np.all(voxels.weights[seen_twice] > old)


def test_dynamic_mask_and_regions_keep_content_out():
    frame = floor_frame(DOWN_POSE, INTRINSICS)
    mask = np.zeros(INTRINSICS.shape, bool)
    mask[:, : INTRINSICS.width // 2] = True
    masked = VoxelMap(VOXEL)
    masked.integrate(frame, frame_id=0, exclude_mask=mask)
    full = VoxelMap(VOXEL)
    full.integrate(frame, frame_id=0)
    only_left = VoxelMap(VOXEL)
    only_left.integrate(frame, frame_id=0, exclude_mask=~mask)
    assert 0 < len(masked) < len(full)
    # Every voxel of the masked map is seen by the right half; none seen only by the left half.
    right_keys = set(masked.voxels().keys)
    left_only = set(only_left.voxels().keys) - right_keys
    assert left_only and right_keys.isdisjoint(left_only)

    box = Box([-5, -5, -1], [0.5, 5, 1])
    boxed = VoxelMap(VOXEL)
    boxed.integrate(frame, frame_id=0, exclude_regions=[box])
    assert len(boxed) > 0
    assert not box.contains(boxed.voxels().positions_m).any()


def test_integrate_rejects_mismatched_mask():
    with pytest.raises(InvalidInputError, match="exclude_mask"):
        VoxelMap(VOXEL).integrate(floor_frame(DOWN_POSE, INTRINSICS), frame_id=0, exclude_mask=np.zeros((2, 2), bool))


def random_cloud(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(n, 3)).astype(np.float32), rng.integers(0, 256, size=(n, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "region",
    [
        Sphere([0.1, 0.0, -0.2], 0.5),
        Box([-0.3, -0.2, -1.0], [0.4, 0.6, 0.3]),
        OrientedBox([0.0, 0.2, 0.0], [0.5, 0.2, 0.3], Pose.look_at([0, 0, 0], [1, 1, 0.3]).rotation),
    ],
)
def test_edits_match_brute_force(backend, region):
    points, colors = random_cloud(1)
    vmap = VoxelMap(VOXEL, backend=backend)
    vmap.insert(points, colors)
    before = vmap.voxels()
    inside = region.contains(before.positions_m)
    assert 0 < inside.sum() < len(before)

    assert vmap.recolor(region, (1, 2, 3)) == inside.sum()
    after = vmap.voxels()
    recoloured = region.contains(after.positions_m)
    assert np.all(after.colors[recoloured] == (1, 2, 3))
    np.testing.assert_array_equal(after.colors[~recoloured], before.colors[~inside])

    assert vmap.remove(region) == inside.sum()
    remaining = vmap.voxels()
    assert set(remaining.keys) == set(before.keys[~inside])
    assert np.all(remaining.sources == Source.INSERTED) and np.all(remaining.first_frame == NO_FRAME)
    # The index follows the compaction: the remaining voxels are still found by key.
    assert len(vmap.lookup(before.keys)) == len(remaining)


def snapshot(vmap: VoxelMap) -> dict[int, tuple]:
    v = vmap.voxels()
    return {int(k): (tuple(c), float(w), int(s), int(f), int(l)) for k, c, w, s, f, l in
            zip(v.keys, v.colors, v.weights, v.sources, v.first_frame, v.last_frame)}


def random_operations(vmap: VoxelMap, rng: np.random.Generator, count: int) -> list[dict]:
    """Apply random integrates, inserts, recolours and removals; return the snapshot after each version."""
    history = [snapshot(vmap)]
    for step in range(count):
        kind = rng.integers(0, 4)
        if kind == 0:
            eye = [rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(1.0, 2.0)]
            vmap.integrate(floor_frame(Pose.look_at(eye, [rng.uniform(-1, 1), rng.uniform(-1, 1), 0]), INTRINSICS), frame_id=step)
        elif kind == 1:
            vmap.insert(*random_cloud(int(rng.integers(1_000_000)), n=300))
        elif kind == 2:
            vmap.recolor(Sphere(rng.uniform(-1, 1, 3), 0.3), tuple(int(c) for c in rng.integers(0, 256, 3)))
        else:
            vmap.remove(Sphere(rng.uniform(-1, 1, 3), 0.4))
        history.append(snapshot(vmap))
    return history


@pytest.mark.parametrize("seed", range(4))
def test_changes_since_matches_brute_force_and_rebuilds_the_map(seed, backend):
    rng = np.random.default_rng(seed)
    vmap = VoxelMap(VOXEL, backend=backend)
    history = random_operations(vmap, rng, 12)
    now = history[-1]
    for since in sorted({0, 1, len(history) // 2, len(history) - 2, len(history) - 1}):
        old = history[since]
        changes = vmap.changes_since(since)
        assert not changes.is_snapshot and changes.version == vmap.version
        assert set(changes.added.keys) == set(now) - set(old)
        assert set(changes.removed_keys) == set(old) - set(now)
        differing = {k for k in set(now) & set(old) if now[k] != old[k]}
        assert differing <= set(changes.changed.keys) <= set(now) & set(old)
        # Applying the delta to the old snapshot gives exactly the current map.
        mirror = {k: v for k, v in old.items() if k not in set(changes.removed_keys)}
        for voxels in (changes.added, changes.changed):
            for k, c, w, s, f, l in zip(voxels.keys, voxels.colors, voxels.weights, voxels.sources, voxels.first_frame, voxels.last_frame):
                mirror[int(k)] = (tuple(c), float(w), int(s), int(f), int(l))
        assert mirror == now


def test_retention_window_falls_back_to_a_flagged_snapshot():
    vmap = VoxelMap(VOXEL, retention_versions=3)
    random_operations(vmap, np.random.default_rng(5), 6)
    assert vmap.oldest_exact_version == vmap.version - 3
    exact = vmap.changes_since(vmap.version - 3)
    assert not exact.is_snapshot
    expired = vmap.changes_since(vmap.version - 4)
    assert expired.is_snapshot and len(expired.changed) == 0 and len(expired.removed_keys) == 0
    assert set(expired.added.keys) == set(vmap.voxels().keys)
    with pytest.raises(InvalidInputError, match="not in 0.."):
        vmap.changes_since(vmap.version + 1)


def test_torch_and_numba_backends_agree():
    maps = {name: VoxelMap(VOXEL, backend=name) for name in ("numba", "torch")}
    for vmap in maps.values():
        random_operations(vmap, np.random.default_rng(11), 10)
    a, b = (maps[name].voxels().sorted_by_key() for name in ("numba", "torch"))
    np.testing.assert_array_equal(a.keys, b.keys)
    np.testing.assert_array_equal(a.colors, b.colors)
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-6)
    for field in ("sources", "first_frame", "last_frame"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_crop_and_points():
    vmap = VoxelMap(VOXEL)
    vmap.insert(*random_cloud(3))
    box = Box([0, 0, 0], [1, 1, 1])
    cropped = vmap.crop(box)
    points, colors = vmap.points()
    assert len(cropped) == box.contains(points).sum() > 0
    assert points.dtype == np.float32 and colors.dtype == np.uint8


def test_bad_arguments_name_the_value():
    with pytest.raises(InvalidInputError, match="voxel_size_m"):
        VoxelMap(0.001)
    vmap = VoxelMap(VOXEL)
    with pytest.raises(InvalidInputError, match="finite"):
        vmap.insert(np.array([[0.0, np.nan, 0.0]]), np.zeros((1, 3), np.uint8))
    with pytest.raises(InvalidInputError, match="RGB triple"):
        vmap.recolor(Sphere([0, 0, 0], 1), (300, 0, 0))
