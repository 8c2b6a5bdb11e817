"""One-pose world steps at 640x480 with the embedded ``reproject`` generator: milliseconds per stage.

A procedural room seeds the world from its start view; the camera then walks the benchmark's closed loop and
each step generates and fuses one frame. Rows: anchors with coverage retrieval (the default) woven by the heuristic
and by the learned weaver (on every competing pixel, and at stride 2), beside the global voxel map (the baseline,
same run). Target: a whole step <= 100 ms on a 2-core CPU. A second table times the weaving alone at K = 7: the same
anchor renders of each view (rendered once) woven by each mode, so "learned - heuristic" is what the network adds.

    python benchmarks/bench_world.py [--frames 40] [--width 640 --height 480]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from worldweave.bridge.eval.scenes import make_room
from worldweave.bridge.eval.trajectories import closed_loop
from worldweave.bridge.memory.spatial_memory import MemoryConfig
from worldweave.bridge.memory.weave import WeaveOptions, weave
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
    weaves = {"heuristic": WeaveOptions(), "learned": WeaveOptions(mode="learned"),
              "learned, stride 2": WeaveOptions(mode="learned", learned_stride=2)}
    rows = [(f"anchors, {name}", MemoryConfig(weave=options)) for name, options in weaves.items()]
    rows.append(("global map (baseline)", MemoryConfig(retrieval="global")))
    print(f"{'memory':28s}" + "".join(f"{c:>14s}" for c in columns))
    world = None
    for name, config in rows:
        stepped = World(seed, WorldConfig(memory=config))
        timings = []
        for i, pose in enumerate(poses[1:]):
            result = stepped.step([pose])
            if i >= 3:
                timings.append(result.timings_s)
        print(f"{name:28s}" + "".join(f"{1e3 * statistics.median(t[c] for t in timings):>14.1f}" for c in columns))
        world = world or stepped

    memory = world.memory
    seconds: dict[str, list[float]] = {name: [] for name in weaves}
    anchor_counts = []
    for pose in poses[1:]:
        anchors = memory.retrieve([pose], intrinsics, k=7)
        renders = [a.render(pose, intrinsics, splat="soft") for a in anchors]
        anchor_counts.append(len(anchors))
        for name, options in weaves.items():
            started = time.perf_counter()
            weave(renders, np.array([a.pose.position for a in anchors]), [a.confidence for a in anchors], pose,
                  intrinsics, options, frame_ids=[a.frame_id for a in anchors])
            seconds[name].append(time.perf_counter() - started)
    print(f"\nweaving alone, K = 7 ({np.mean(anchor_counts):.1f} anchors retrieved on average), median ms per view")
    for name in weaves:
        extra = 1e3 * (statistics.median(seconds[name]) - statistics.median(seconds["heuristic"]))
        print(f"  {name:22s} {1e3 * statistics.median(seconds[name]):8.1f}   (+{extra:.1f} over heuristic)")


if __name__ == "__main__":
    main()
