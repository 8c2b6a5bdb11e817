"""One-pose world steps at 640x480 with the embedded ``reproject`` generator: milliseconds per stage.

A procedural room seeds the world from its start view; the camera then walks the benchmark's closed loop and
each step generates and fuses one frame. Rows: anchors with coverage retrieval (the default) beside the global
voxel map (the baseline, same run). Target: a whole step <= 100 ms on a 2-core CPU.

    python benchmarks/bench_world.py [--frames 40] [--width 640 --height 480]
"""

from __future__ import annotations

import argparse
import statistics

from worldweave.bridge.eval.scenes import make_room
from worldweave.bridge.eval.trajectories import closed_loop
from worldweave.bridge.memory.spatial_memory import MemoryConfig
from worldweave.bridge.world import STAGES, Seed, World, WorldConfig
from worldweave.proto.geometry import Intrinsics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40, help="steps timed per mode (after 3 warm-up steps)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()

    scene = make_room(seed=0)
    intrinsics = Intrinsics.from_fov(args.width, args.height, fov_x_deg=75.0)
    poses = closed_loop(scene, args.frames + 4).poses
    seed = Seed([scene.render(poses[0], intrinsics)])
    columns = (*STAGES, "total")
    print(f"one-pose steps, reproject, {args.width}x{args.height}, {args.frames} steps, median ms per stage")
    print(f"{'memory':22s}" + "".join(f"{c:>14s}" for c in columns))
    for name, retrieval in (("anchors (coverage)", "coverage"), ("global map (baseline)", "global")):
        world = World(seed, WorldConfig(memory=MemoryConfig(retrieval=retrieval)))
        timings = []
        for i, pose in enumerate(poses[1:]):
            result = world.step([pose])
            if i >= 3:
                timings.append(result.timings_s)
        print(f"{name:22s}" + "".join(f"{1e3 * statistics.median(t[c] for t in timings):>14.1f}" for c in columns))


if __name__ == "__main__":
    main()
