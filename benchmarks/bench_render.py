"""Splatting speed: 1M points at 640x480, ours against Open3D's ``project_to_rgbd_image`` on the same points.

    python benchmarks/bench_render.py [--points 1000000] [--repeats 15]

First checks that our 1-pixel mode gives the same depth image as Open3D (both round to the nearest pixel centre);
then times, interleaved so that load on a shared machine hits all alike: Open3D (the baseline, measured in the same
run), our numba kernel serial and parallel, our torch path, and the footprint and soft modes (soft is the weaver's
default). Two point orders: a room's surfaces sampled in random order (every write a cache miss) and the same points
sorted by 5 cm cell (the order a voxel map or an anchor keeps them in). Figures are milliseconds per 640x480 render including colours; medians (and
minima) over the repeats. On a machine whose cores are shared the numbers are noisy; compare within one run.
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
import torch

from worldweave.bridge.open3d_import import load_open3d
from worldweave.bridge.render import render_points
from worldweave.proto.geometry import Intrinsics, Pose

o3d = load_open3d()
INTRINSICS = Intrinsics(585.0, 585.0, 319.5, 239.5, 640, 480)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    pose = Pose.look_at([-2.0, -1.0, 1.5], [2.0, 1.0, 1.0])
    intrinsic = o3d.core.Tensor(INTRINSICS.matrix)
    extrinsic = o3d.core.Tensor(pose.inverse_matrix())
    random_order, colors = room_points(args.points)
    cells = np.floor(random_order / 0.05).astype(np.int64)
    order = np.lexsort((cells[:, 2], cells[:, 1], cells[:, 0]))
    threads = numba.get_num_threads()
    print(f"{args.points} points -> {INTRINSICS.width}x{INTRINSICS.height}; numba threads {threads}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'point order':<14} {'renderer':<36} {'median ms':>9} {'min ms':>8} {'vs Open3D':>9}")
    for name, idx in (("random", np.arange(args.points)), ("5 cm sorted", order)):
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
        runs = {
            "Open3D project_to_rgbd_image": open3d_render,
            "ours 1-pixel, numba serial": lambda: render_points(points, cols, pose, INTRINSICS),
            f"ours 1-pixel, numba {threads} threads": lambda: render_points(points, cols, pose, INTRINSICS,
                                                                            threads=threads),
            "ours 1-pixel, torch (CPU)": lambda: render_points(points_t, cols_t, pose, INTRINSICS, backend="torch"),
            "ours footprint 1 cm, numba serial": lambda: render_points(points, cols, pose, INTRINSICS,
                                                                       splat="footprint", point_size_m=0.01),
            "ours soft 1 cm, numba serial": lambda: render_points(points, cols, pose, INTRINSICS,
                                                                  splat="soft", point_size_m=0.01),
        }
        times: dict[str, list[float]] = {key: [] for key in runs}
        for run in runs.values():
            run()
        for _ in range(args.repeats):
            for key, run in runs.items():
                start = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - start)
        base = np.median(times["Open3D project_to_rgbd_image"])
        for key, values in times.items():
            print(f"{name:<14} {key:<36} {median_min(values)} {base / np.median(values):8.2f}x")


if __name__ == "__main__":
    main()
