"""Two worlds integrate on two threads at once (the fused numba kernels release the GIL) and end as if alone."""

import threading

import numpy as np

from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.memory.voxel_map import VoxelMap
from worldweave.proto.geometry import Intrinsics, Pose

INTRINSICS = Intrinsics.from_fov(160, 120, fov_x_deg=70.0)


def frames(seed: int, count: int) -> list[RGBDFrame]:
    """Frames of a bumpy wall 1.5-2.5 m ahead, from poses that drift, some with per-pixel confidence."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        depth = (2.0 + 0.5 * rng.random(INTRINSICS.shape)).astype(np.float32)
        depth[rng.random(INTRINSICS.shape) < 0.1] = 0.0
        rgb = rng.integers(0, 256, (*INTRINSICS.shape, 3), dtype=np.uint8)
        confidence = rng.random(INTRINSICS.shape).astype(np.float32) if i % 2 else None
        pose = Pose.look_at([0.05 * i, 0.0, 1.0], [0.05 * i, 2.0, 1.0])
        out.append(RGBDFrame(rgb, depth, pose, INTRINSICS, confidence=confidence))
    return out


def fuse(vmap: VoxelMap, sequence: list[RGBDFrame]) -> None:
    for frame_id, frame in enumerate(sequence):
        vmap.integrate(frame, frame_id=frame_id)


def columns(vmap: VoxelMap) -> dict[str, np.ndarray]:
    order = np.argsort(vmap.keys_tensor().numpy())
    return {name: column.numpy()[order] for name, column in vmap.columns().items()}


def test_two_maps_on_two_threads_end_as_integrated_alone():
    sequences = [frames(seed, 6) for seed in (1, 2)]
    alone = [VoxelMap(0.02, backend="numba") for _ in sequences]
    for vmap, sequence in zip(alone, sequences):
        fuse(vmap, sequence)
    together = [VoxelMap(0.02, backend="numba") for _ in sequences]
    threads = [threading.Thread(target=fuse, args=pair) for pair in zip(together, sequences)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for one, other in zip(alone, together):
        assert len(one) == len(other) > 1000
        expected, got = columns(one), columns(other)
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
