"""Splatting speed: 1M points at 640x480, ours against Open3D's ``project_to_rgbd_image`` on the same points; then
the renders on a world step's frame path.

    python benchmarks/bench_render.py [--points 1000000] [--repeats 15]

First checks that our 1-pixel mode gives the same depth image as Open3D (both round to the nearest pixel centre);
then times, interleaved so that load on a shared machine hits all alike: Open3D (the baseline, measured in the same
run), our numba kernel with one z-buffer ("serial": ``threads=1``; its resolve and soft-blend passes still split their
pixels over the free cores) and with one per thread (parallel), our torch path (on the first 3 repeats only: it is slow on CPU), and the
footprint and soft modes (soft is the weaver's default). Two point orders: a room's surfaces sampled in random order
(every write a cache miss) and the same points sorted by 5 cm cell (the order a voxel map or an anchor keeps them
in). Figures are milliseconds per 640x480 render including colours: wall-clock medians (and minima) over the
repeats, and the median CPU time of the process (all its threads: Open3D's kernel may use several) with its ratio,
which shared cores disturb less than wall-clock.

Frame path: one anchor of a procedural room (its 640x480 frame sampled as the anchor store does: a point per 4x4
block, each with its size and confidence) rendered from a pose 10 cm away, soft (the weaver's default) and footprint.
Then two such renders at once on two Python threads against the same two one after the other (the baseline): the
kernels release the GIL, so on two free cores the pair takes about the time of one (speed-up near 2x), and the
process spends more CPU time than wall time on a pair.
On a machine whose cores are shared the numbers are noisy; compare within one run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from worldweave.bridge.eval.scenes import make_room
from worldweave.bridge.eval.trajectories import closed_loop
from worldweave.bridge.memory.anchors import AnchorOptions, sample_points
from worldweave.bridge.open3d_import import load_open3d
from worldweave.bridge.render import render_points
from worldweave.proto.geometry import Intrinsics, Pose

import numba  # after worldweave.bridge, which sets numba's threading-layer order before numba loads

o3d = load_open3d()
INTRINSICS = Intrinsics(585.0, 585.0, 319.5, 239.5, 640, 480)
TORCH_REPEATS = 3


def room_points(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points on the six faces of a 6 x 5 x 2.7 m room (random order) with uint8 colours."""
    rng = np.random.default_rng(seed)
    lo, hi = np.array([-3.0, -2.5, 0.0]), np.array([3.0, 2.5, 2.7])
    points = rng.uniform(lo, hi, size=(count, 3))
    face = rng.integers(0, 6, count)
    axis, side = face // 2, face % 2
    points[np.arange(count), axis] = np.where(side == 0, lo[axis], hi[axis])
    colors = (128 + 100 * np.sin(points * [7.0, 5.0, 3.0])).astype(np.uint8)
    return points.astype(np.float32), colors


def median_min(times: list[float]) -> str:
    return f"{1000 * np.median(times):8.1f} {1000 * np.min(times):8.1f}"


def time_interleaved(runs: dict[str, Callable[[], object]], repeats: int, only_first: dict[str, int]
                     ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and process CPU seconds per call of each run, one call of each per round after a warm-up call;
    ``only_first``: runs timed in that many first rounds only."""
    wall: dict[str, list[float]] = {key: [] for key in runs}
    cpu: dict[str, list[float]] = {key: [] for key in runs}
    for run in runs.values():
        run()
    for round_ in range(repeats):
        for key, run in runs.items():
            if round_ >= only_first.get(key, repeats):
                continue
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            wall[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - start_cpu)
    return wall, cpu


def open3d_comparison(points_count: int, repeats: int) -> None:
    pose = Pose.look_at([-2.0, -1.0, 1.5], [2.0, 1.0, 1.0])
    intrinsic = o3d.core.Tensor(INTRINSICS.matrix)
    extrinsic = o3d.core.Tensor(pose.inverse_matrix())
    random_order, colors = room_points(points_count)
    cells = np.floor(random_order / 0.05).astype(np.int64)
    order = np.lexsort((cells[:, 2], cells[:, 1], cells[:, 0]))
    threads = numba.get_num_threads()
    print(f"{points_count} points -> {INTRINSICS.width}x{INTRINSICS.height}; numba threads {threads}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'point order':<14} {'renderer':<36} {'median ms':>9} {'min ms':>8} {'vs Open3D':>9} {'CPU ms':>8} "
          f"{'CPU vs Open3D':>13}")
    for name, idx in (("random", np.arange(points_count)), ("5 cm sorted", order)):
        points, cols = np.ascontiguousarray(random_order[idx]), np.ascontiguousarray(colors[idx])
        cloud = o3d.t.geometry.PointCloud(o3d.core.Tensor(points))
        cloud.point.colors = o3d.core.Tensor(cols.astype(np.float32) / 255.0)

        def open3d_render():
            return cloud.project_to_rgbd_image(INTRINSICS.width, INTRINSICS.height, intrinsic, extrinsic,
                                               depth_scale=1.0, depth_max=1000.0)

        reference = open3d_render().depth.as_tensor().numpy().reshape(INTRINSICS.shape)
        ours = render_points(points, cols, pose, INTRINSICS)
        mismatched = int(np.sum(ours.depth != reference))
        print(f"{name:<14} depth images identical to Open3D: {mismatched == 0} ({mismatched} pixels differ, "
              f"{int(ours.mask.sum())} covered)")
        points_t, cols_t = torch.from_numpy(points), torch.from_numpy(cols)
        torch_key = "ours 1-pixel, torch (CPU)"
        runs = {
            "Open3D project_to_rgbd_image": open3d_render,
            "ours 1-pixel, numba serial": lambda: render_points(points, cols, pose, INTRINSICS),
            f"ours 1-pixel, numba {threads} threads": lambda: render_points(points, cols, pose, INTRINSICS,
                                                                            threads=threads),
            torch_key: lambda: render_points(points_t, cols_t, pose, INTRINSICS, backend="torch"),
            "ours footprint 1 cm, numba serial": lambda: render_points(points, cols, pose, INTRINSICS,
                                                                       splat="footprint", point_size_m=0.01),
            "ours soft 1 cm, numba serial": lambda: render_points(points, cols, pose, INTRINSICS,
                                                                  splat="soft", point_size_m=0.01),
        }
        times, cpu = time_interleaved(runs, repeats, {torch_key: TORCH_REPEATS})
        base = np.median(times["Open3D project_to_rgbd_image"])
        base_cpu = np.median(cpu["Open3D project_to_rgbd_image"])
        for key, values in times.items():
            print(f"{name:<14} {key:<36} {median_min(values)} {base / np.median(values):8.2f}x "
                  f"{1000 * np.median(cpu[key]):8.1f} {base_cpu / np.median(cpu[key]):12.2f}x")


def frame_path(repeats: int) -> None:
    scene = make_room(seed=0)
    intrinsics = Intrinsics.from_fov(640, 480, fov_x_deg=75.0)
    frame = scene.render(closed_loop(scene, 8).poses[0], intrinsics)
    points, colors, sizes, confidence = sample_points(frame.rgb, frame.depth, intrinsics, AnchorOptions())
    pose = Pose(np.eye(3), [0.05, 0.02, -0.1])  # in the anchor's camera frame, as Anchor.render poses it

    def anchor_render(splat: str) -> Callable[[], object]:
        return lambda: render_points(points, colors, pose, intrinsics, splat=splat, point_size_m=sizes,
                                     confidence=confidence)

    pool = ThreadPoolExecutor(2)
    soft = anchor_render("soft")
    runs = {
        "anchor soft": soft,
        "anchor footprint": anchor_render("footprint"),
        "2 anchor soft, one after the other": lambda: (soft(), soft()),
        "2 anchor soft on 2 threads": lambda: [f.result() for f in [pool.submit(soft), pool.submit(soft)]],
    }
    times, cpu = time_interleaved(runs, repeats, {})
    pool.shutdown()
    print(f"\nframe path: one anchor ({len(points)} points, footprints of "
          f"{np.median(sizes / points[:, 2] * intrinsics.fx):.0f} px) at 640x480, from 10 cm away")
    print(f"{'render':<36} {'median ms':>9} {'min ms':>8} {'CPU ms':>8}")
    for key, values in times.items():
        print(f"{key:<36} {median_min(values)} {1000 * np.median(cpu[key]):8.1f}")
    pair = "2 anchor soft on 2 threads"
    speedup = np.median(times["2 anchor soft, one after the other"]) / np.median(times[pair])
    overlap = max(c / t for c, t in zip(cpu[pair], times[pair]))
    print(f"two threads: {speedup:.2f}x the pair one after the other (2x: both cores busy, no GIL held); "
          f"most CPU time per wall time in one pair {overlap:.2f} (over 1: both renders ran at the same time)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    open3d_comparison(args.points, args.repeats)
    frame_path(args.repeats)


if __name__ == "__main__":
    main()
