"""Memory a world holds: process RSS per million voxels of its voxel map and per anchor of its memory (issue 24).

Two phases in this process (the server holds a world's memory the same way, beside its own fixed cost):

* **Voxels.** A world seeded from a 640x480 wall (``reproject``), then ``--voxels`` filler points inserted in
  batches, each on a voxel of its own (a 2 cm lattice far from the wall, as ``bench_integrate.py`` fills its map):
  RSS after each batch, and the least-squares slope in MiB per million voxels.
* **Anchors.** A fresh world walks ``--steps`` poses of the benchmark room's closed loop at 640x480; each step may
  make its frame an anchor (a keyframe) and adds voxels. RSS before and after, less the walk's new voxels at the
  slope of the first phase, over the anchors made: MiB per anchor. Beside it, the bytes of the anchors' own arrays
  (points, colours, sizes, confidences, image, depth and sketch), so the difference is what the process adds.

RSS is read from ``/proc/self/status`` after ``gc.collect()``; glibc keeps freed memory, so the per-call scratch
buffers of the step count once (the first step grows them), not per anchor.

    python benchmarks/bench_memory.py [--voxels 2000000] [--batches 8] [--steps 80]
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

import numpy as np

from worldweave.bridge.eval.scenes import make_room
from worldweave.bridge.eval.trajectories import closed_loop
from worldweave.bridge.eval.wall import wall_seed
from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.world import Seed, World, WorldConfig
from worldweave.proto.geometry import Intrinsics, Pose

MIB = 1 << 20


def rss_mib() -> float:
    """This process's resident set size, MiB, after a garbage collection."""
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def lattice(start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Points ``start .. start + count`` of a 2 cm lattice 50 m below the origin: one voxel each."""
    index = np.arange(start, start + count)
    i, j = index // 4096, index % 4096
    points = np.stack([i * 0.02 + 0.01, j * 0.02 + 0.01, np.full(count, -50.01)], axis=1).astype(np.float32)
    colors = np.stack([i % 256, j % 256, (i + j) % 256], axis=1).astype(np.uint8)
    return points, colors


def anchor_bytes(world: World) -> int:
    """Bytes of the numpy arrays the world's anchors hold."""
    total = 0
    for anchor in world.memory.anchors:
        total += sum(value.nbytes for value in vars(anchor).values() if isinstance(value, np.ndarray))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voxels", type=int, default=2_000_000, help="filler voxels inserted in the first phase")
    parser.add_argument("--batches", type=int, default=8, help="RSS samples in the first phase")
    parser.add_argument("--steps", type=int, default=80, help="steps of the anchor phase (640x480)")
    args = parser.parse_args()

    [(rgb, depth, c2w)], intrinsics = wall_seed(640, 480)
    world = World(Seed([RGBDFrame(rgb, depth, Pose.from_matrix(c2w), intrinsics)]), WorldConfig())
    samples = [(len(world.memory.voxel_map), rss_mib())]
    per_batch = args.voxels // args.batches
    for b in range(args.batches):
        world.memory.voxel_map.insert(*lattice(b * per_batch, per_batch))
        samples.append((len(world.memory.voxel_map), rss_mib()))
    voxels, rss = np.array(samples, dtype=np.float64).T
    slope = np.polyfit(voxels / 1e6, rss, 1)[0]
    print(f"voxels: RSS {rss[0]:.0f} MiB at {voxels[0]:,.0f} voxels -> {rss[-1]:.0f} MiB at {voxels[-1]:,.0f}; "
          f"{slope:.0f} MiB per million voxels (least squares over {len(samples)} samples)")
    del world
    gc.collect()

    scene = make_room(seed=0)
    camera = Intrinsics.from_fov(640, 480, fov_x_deg=75.0)
    poses = closed_loop(scene, args.steps + 1).poses
    world = World(Seed([scene.render(poses[0], camera)]), WorldConfig())
    world.step([poses[1]])  # the step's scratch buffers grow once, before the first sample
    anchors_before, voxels_before, rss_before = len(world.memory.anchors), len(world.memory.voxel_map), rss_mib()
    for pose in poses[2:]:
        world.step([pose])
    anchors = len(world.memory.anchors) - anchors_before
    new_voxels = len(world.memory.voxel_map) - voxels_before
    grown = rss_mib() - rss_before
    log_mib = world.memory.voxel_map.change_log_keys * 9 / MIB  # an int64 key and an int8 event each
    per_anchor = (grown - slope * new_voxels / 1e6 - log_mib) / max(anchors, 1)
    print(f"anchors: {args.steps - 1} steps made {anchors} anchors and {new_voxels:,} voxels; RSS +{grown:.1f} MiB, "
          f"less {slope * new_voxels / 1e6:.1f} MiB for the voxels (at the slope above) and {log_mib:.1f} MiB for the "
          f"change log's entries of these steps (kept for its last 256 versions): {per_anchor:.2f} MiB per anchor; "
          f"the anchors' own arrays {anchor_bytes(world) / MIB / len(world.memory.anchors):.2f} MiB each on average")


if __name__ == "__main__":
    main()
