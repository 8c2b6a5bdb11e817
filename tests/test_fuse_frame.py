"""The fused CPU integrate (``HashIndex.fuse_frame``): what it computes, pinned against a one-pixel-at-a-time
reference, and the same map bit for bit on any number of threads."""

import numpy as np
import pytest

from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.memory.voxel_map import VoxelMap
from worldweave.proto import voxel_keys
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose

VOXEL_M = 0.02


def slanted_wall(intrinsics: Intrinsics, seed: int, *, with_confidence: bool, position_x: float = 0.0) -> RGBDFrame:
    """A bumpy wall 1.2-2.8 m ahead, slanted so that voxels span several image rows (and so the threads' bands);
    10% of the pixels without depth, random colours, and random per-pixel confidence (some 0) when asked."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, intrinsics.height, dtype=np.float32)[:, None]
    depth = (1.2 + 1.2 * rows + 0.4 * rng.random(intrinsics.shape)).astype(np.float32)
    depth[rng.random(intrinsics.shape) < 0.1] = 0.0
    rgb = rng.integers(0, 256, (*intrinsics.shape, 3), dtype=np.uint8)
    confidence = None
    if with_confidence:
        confidence = rng.random(intrinsics.shape).astype(np.float32)
        confidence[confidence < 0.15] = 0.0
    pose = Pose.look_at([position_x, 0.0, 1.0], [position_x + 0.3, 2.0, 0.8])
    return RGBDFrame(rgb, depth, pose, intrinsics, confidence=confidence)


def reference_fold(frame: RGBDFrame, surface: dict, max_weight: float = 255.0) -> dict:
    """Per voxel key: [weight, confidence sum] of one frame, folding its points into ``surface`` (key -> [x, y, z,
    weight], float32 metres from the voxel centre) one pixel at a time in row-major order, float32 at every step:
    the rule the fused kernel must follow whatever order it works in."""
    k = frame.intrinsics
    rays_x = (np.arange(k.width, dtype=np.float64) - k.cx) / k.fx
    rays_y = (np.arange(k.height, dtype=np.float64) - k.cy) / k.fy
    r, t = frame.pose.rotation, frame.pose.position
    cap = np.float32(max_weight)
    sums: dict = {}
    for v in range(k.height):
        for u in range(k.width):
            d = np.float64(frame.depth[v, u])
            c = np.float32(1.0) if frame.confidence is None else frame.confidence[v, u]
            if not d > 0.0 or not c > 0.0:
                continue
            x, y = rays_x[u] * d, rays_y[v] * d
            world = [r[i, 0] * x + r[i, 1] * y + r[i, 2] * d + t[i] for i in range(3)]
            index = [np.floor(w / VOXEL_M) for w in world]
            offset = [np.float32(w - (f + 0.5) * VOXEL_M) for w, f in zip(world, index)]
            key = int(voxel_keys.pack(np.array([index], dtype=np.int64))[0])
            mean = surface.setdefault(key, [np.float32(0.0)] * 4)
            total = np.float32(mean[3] + c)
            gain = np.float32(c / total)
            for i in range(3):
                mean[i] = np.float32(mean[i] + np.float32(gain * np.float32(offset[i] - mean[i])))
            mean[3] = min(total, cap)
            weight = sums.setdefault(key, [np.float32(0.0), np.float32(0.0)])
            weight[0] = np.float32(weight[0] + c)
            weight[1] = np.float32(weight[1] + np.float32(c * c))
    return sums


def by_key(vmap: VoxelMap) -> dict[str, dict[int, np.ndarray]]:
    columns = {name: column.numpy() for name, column in vmap.columns().items()}
    return {name: dict(zip(columns["_keys"].tolist(), column)) for name, column in columns.items()}


def test_fused_integrate_folds_each_voxel_pixel_by_pixel_in_row_order():
    intrinsics = Intrinsics.from_fov(64, 48, fov_x_deg=70.0)
    vmap = VoxelMap(VOXEL_M, backend="numba")
    expected_surface: dict = {}
    for seed in range(3):  # the second and third frames fold onto the surface points of the first
        frame = slanted_wall(intrinsics, seed, with_confidence=seed != 1, position_x=0.01 * seed)
        sums = reference_fold(frame, expected_surface)
        vmap.integrate(frame, frame_id=seed)
        if seed == 0:  # a fresh map: its weights and confidences are this frame's sums
            got = by_key(vmap)
            assert sorted(got["_weights"]) == sorted(sums)
            for key, (weight, confidence_sum) in sums.items():
                assert got["_weights"][key] == weight, key
                assert got["_confidence"][key] == np.float32(confidence_sum / weight), key
    got = by_key(vmap)
    assert sorted(got["_surface"]) == sorted(expected_surface) and len(expected_surface) > 500
    for key, mean in expected_surface.items():
        assert got["_surface"][key].tolist() == [float(m) for m in mean[:3]], key
        assert got["_surface_weight"][key] == mean[3], key


@pytest.mark.parametrize("threads", [None, 2, 3, 7])
def test_integrate_on_threads_builds_the_same_map_bit_for_bit(threads):
    """None: the default, as many threads as cores are spare (all of this machine's here)."""
    intrinsics = Intrinsics.from_fov(160, 120, fov_x_deg=70.0)
    serial = VoxelMap(VOXEL_M, backend="numba", integrate_threads=1)
    threaded = VoxelMap(VOXEL_M, backend="numba", integrate_threads=threads)
    rng = np.random.default_rng(5)
    for frame_id in range(4):
        frame = slanted_wall(intrinsics, frame_id, with_confidence=frame_id % 2 == 0, position_x=0.03 * frame_id)
        mask = rng.random(intrinsics.shape) < 0.05 if frame_id == 2 else None
        stats = [vmap.integrate(frame, frame_id=frame_id, exclude_mask=mask) for vmap in (serial, threaded)]
        assert stats[0] == stats[1]
    assert len(serial) > 5000
    for name, column in serial.columns().items():  # same rows too: new voxels get rows in the same order
        np.testing.assert_array_equal(threaded.columns()[name].numpy(), column.numpy(), err_msg=name)
    expected, got = serial.changes_since(0), threaded.changes_since(0)
    np.testing.assert_array_equal(got.added.keys, expected.added.keys)


def test_integrate_threads_must_be_positive():
    with pytest.raises(InvalidInputError, match="integrate_threads must be None or >= 1, got 0"):
        VoxelMap(VOXEL_M, integrate_threads=0)
