"""Integrate one real 640x480 RGB-D frame into a voxel map already holding ~2M voxels, beside Open3D.

Baseline, same run, same frame: Open3D ``t.geometry.VoxelBlockGrid`` TSDF integration (voxel 2 cm, block
resolution 8) — a reference point, not the same work (TSDF vs. coloured point voxels). Both maps first fuse the
development frames; ours is then filled with synthetic surface voxels up to ``--target-voxels``.

Rows: our map with its default ``integrate_threads=None`` (the calling thread's core plus the cores no other engine
work holds: every core of an otherwise idle machine; the line above the table says how many), the same map on one
thread, and the torch index; all calls take turns in one process, so load from elsewhere falls on every row alike.
On a machine whose other cores are busy the default row waits for them.

Two worlds at once: a copy of the numba map integrates the same frame on a second thread beside the first (the
server runs worlds on threads; the numba kernels release the GIL), timed per pair of frames beside the same two
integrations one after the other.

    python benchmarks/bench_integrate.py [--data ../shared/data/7scenes-redkitchen-dev]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from worldweave.bridge.cores import machine_cores, threads_for
from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.memory.voxel_map import MAX_INTEGRATE_THREADS, VoxelMap
from worldweave.proto.geometry import Intrinsics, Pose

SERIAL = "worldweave VoxelMap (numba, 1 thread)"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "7scenes-redkitchen-dev"


def load_frames(folder: Path) -> tuple[Intrinsics, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    meta = json.loads((folder / "intrinsics.json").read_text())
    intrinsics = Intrinsics(meta["fx"], meta["fy"], meta["cx"], meta["cy"], meta["width"], meta["height"])
    frames = []
    for color_path in sorted((folder / "color").iterdir()):
        frame_id = color_path.stem
        rgb = np.asarray(Image.open(color_path).convert("RGB"))
        depth_mm = np.asarray(Image.open(folder / "depth" / f"{frame_id}.png")).astype(np.uint16)
        c2w = np.loadtxt(folder / "poses" / f"{frame_id}.txt")
        frames.append((rgb, depth_mm, c2w))
    return intrinsics, frames


def time_calls(fn, repeats: int) -> tuple[float, float]:
    """(median, min) milliseconds over ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def time_interleaved(calls: dict[str, Callable[[], None]], repeats: int) -> dict[str, tuple[float, float]]:
    """(median, min) milliseconds of each call over ``repeats`` rounds after one warm-up, the calls taking turns
    within each round, so that load from other processes on a shared machine falls on all of them alike."""
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def time_two_worlds(first: VoxelMap, second: VoxelMap, frame: RGBDFrame, repeats: int) -> tuple[float, float]:
    """(median ms per pair of integrations one after the other, median ms per pair on two threads at once)."""

    def run(vmap: VoxelMap, start: threading.Barrier) -> None:
        start.wait()
        vmap.integrate(frame, frame_id=10_001)

    def on_threads() -> None:
        start = threading.Barrier(2)
        threads = [threading.Thread(target=run, args=(vmap, start)) for vmap in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def one_after_the_other() -> None:
        first.integrate(frame, frame_id=10_001)
        second.integrate(frame, frame_id=10_001)

    sequential, _ = time_calls(one_after_the_other, repeats)
    parallel, _ = time_calls(on_threads, repeats)
    return sequential, parallel


def filler_points(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Surface-like points on a 2 cm lattice far from the kitchen: walls of a large synthetic town."""
    side = int(np.ceil(np.sqrt(count)))
    i, j = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    points = np.stack([i.ravel() * 0.02 + 0.01, j.ravel() * 0.02 + 0.01, np.full(side * side, -50.01)], axis=1)[:count]
    colors = np.stack([i.ravel() % 256, j.ravel() % 256, (i.ravel() + j.ravel()) % 256], axis=1)[:count]
    return points.astype(np.float32), colors.astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="7-Scenes-layout folder")
    parser.add_argument("--target-voxels", type=int, default=2_000_000, help="map size before the timed frame")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    intrinsics, frames = load_frames(args.data)
    fused, (rgb, depth_mm, c2w) = frames[:-1], frames[-1]
    timed = RGBDFrame(rgb, depth_mm.astype(np.float32) / 1000.0, Pose.from_matrix(c2w), intrinsics)
    calls: dict[str, Callable[[], None]] = {}
    sizes: dict[str, int] = {}
    for backend in ("numba", "torch"):
        vmap = VoxelMap(0.02, backend=backend, retention_versions=16)
        for frame_id, (f_rgb, f_depth, f_c2w) in enumerate(fused):
            frame = RGBDFrame(f_rgb, f_depth.astype(np.float32) / 1000.0, Pose.from_matrix(f_c2w), intrinsics)
            vmap.integrate(frame, frame_id=frame_id)
        vmap.insert(*filler_points(max(args.target_voxels - len(vmap), 0)))
        name = f"worldweave VoxelMap ({backend} index)"
        sizes[name] = len(vmap)
        calls[name] = lambda vmap=vmap: vmap.integrate(timed, frame_id=10_000)
        if backend == "numba":
            serial = copy.deepcopy(vmap)
            serial.integrate_threads = 1
            sizes[SERIAL] = len(serial)
            calls[SERIAL] = lambda: serial.integrate(timed, frame_id=10_000)
            two_worlds = time_two_worlds(vmap, copy.deepcopy(vmap), timed, args.repeats)

    from worldweave.bridge.open3d_import import load_open3d

    o3d = load_open3d()
    o3c = o3d.core

    vbg = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=((1), (1), (3)), voxel_size=0.02, block_resolution=8, block_count=50000,
    )
    k = o3c.Tensor(intrinsics.matrix, o3c.float64)

    def o3d_integrate(f_rgb: np.ndarray, f_depth: np.ndarray, f_c2w: np.ndarray) -> None:
        depth = o3d.t.geometry.Image(o3c.Tensor(f_depth))
        color = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(f_rgb)))
        extrinsic = o3c.Tensor(np.linalg.inv(f_c2w), o3c.float64)
        blocks = vbg.compute_unique_block_coordinates(depth, k, extrinsic, 1000.0, 5.0)
        vbg.integrate(blocks, depth, color, k, k, extrinsic, 1000.0, 5.0)

    for f_rgb, f_depth, f_c2w in fused:
        o3d_integrate(f_rgb, f_depth, f_c2w)
    baseline_name = "Open3D VoxelBlockGrid TSDF (baseline)"
    sizes[baseline_name] = vbg.hashmap().size() * 512
    calls[baseline_name] = lambda: o3d_integrate(rgb, depth_mm, c2w)
    timings = time_interleaved(calls, args.repeats)

    baseline = timings[baseline_name][0]
    with threads_for(None, MAX_INTEGRATE_THREADS) as threads:
        default_threads = threads
    print(f"integrate one real 640x480 frame ({args.data.name}, last frame), {args.repeats} rounds, calls taking turns; "
          f"the default numba map runs on {default_threads} threads here ({machine_cores()} cores)")
    print(f"{'method':42s} {'voxels in map':>14s} {'median ms':>10s} {'min ms':>8s} {'x Open3D':>9s}")
    for name, (median, best) in timings.items():
        print(f"{name:42s} {sizes[name]:>14,d} {median:>10.2f} {best:>8.2f} {median / baseline:>9.2f}")
    sequential, parallel = two_worlds
    print(f"two numba worlds, one frame each: {sequential:.2f} ms one after the other, {parallel:.2f} ms on two threads "
          f"at once ({sequential / parallel:.2f}x)")


if __name__ == "__main__":
    main()
