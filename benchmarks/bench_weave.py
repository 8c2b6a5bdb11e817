"""Weaving alone: K anchor renders of one 640x480 view woven into one, heuristic beside learned, same run.

The renders are synthetic and cover every pixel (the learned weaver's worst case: every pixel has K anchors
competing): a textured surface 1.5-4 m away, each anchor with its own exposure (+-15 %), depth noise (some of its
pixels 20 % behind the front, so the depth test has work) and rendered confidence. Per K it prints the median
milliseconds per view of each mode and what the learned weaver adds over the heuristic. Target: weaving adds
<= 40 ms per view at K = 7 on CPU. ``--profile MODE`` prints cProfile's top functions for that mode at the largest K.

    python benchmarks/bench_weave.py [--anchors 1,3,7] [--repeats 5] [--width 640 --height 480] [--profile learned]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time

import numpy as np

from worldweave.bridge.frames import RenderResult
from worldweave.bridge.memory.weave import WeaveOptions, weave
from worldweave.proto.geometry import Intrinsics, Pose

MODES = {
    "heuristic": WeaveOptions(),
    "learned": WeaveOptions(mode="learned"),
    "learned, stride 2": WeaveOptions(mode="learned", learned_stride=2),
    "learned, stride 4": WeaveOptions(mode="learned", learned_stride=4),
}


def synthetic_case(anchors: int, intrinsics: Intrinsics, seed: int = 0
                   ) -> tuple[list[RenderResult], np.ndarray, list[float], list[int]]:
    """``anchors`` full-coverage renders of one view (identity target pose), their camera centres (A, 3) in world
    metres, confidences and frame ids."""
    rng = np.random.default_rng(seed)
    h, w = intrinsics.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = 1.5 + 2.5 * (u / w) + 0.3 * np.sin(v / 17.0)
    texture = rng.integers(30, 220, size=(h, w, 3)).astype(np.float32)
    renders = []
    for _ in range(anchors):
        gain = rng.uniform(0.85, 1.15)
        noisy = depth * (1.0 + rng.normal(0.0, 0.005, size=(h, w)))
        behind = rng.random((h, w)) < 0.05
        anchor_depth = np.where(behind, depth * 1.2, noisy).astype(np.float32)
        rgb = np.clip(texture * gain + rng.normal(0.0, 3.0, size=(h, w, 3)), 0, 255).astype(np.uint8)
        confidence = rng.uniform(0.5, 1.0, size=(h, w)).astype(np.float32)
        renders.append(RenderResult(rgb, anchor_depth, np.ones((h, w), bool), confidence))
    positions = rng.normal(0.0, 0.5, size=(anchors, 3))
    return renders, positions, list(rng.uniform(0.5, 1.0, anchors)), list(rng.permutation(anchors) * 10)


def time_weave(case: tuple, intrinsics: Intrinsics, options: WeaveOptions, repeats: int) -> float:
    """Median seconds of one ``weave`` of ``case`` over ``repeats`` runs (after one warm-up)."""
    renders, positions, confidences, frame_ids = case
    seconds = []
    for i in range(repeats + 1):
        started = time.perf_counter()
        weave(renders, positions, confidences, Pose.identity(), intrinsics, options, frame_ids=frame_ids)
        if i:
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anchors", default="1,3,7", help="comma-separated anchor counts K")
    parser.add_argument("--repeats", type=int, default=5, help="timed weaves per mode and K (after one warm-up)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--profile", choices=sorted(MODES), help="print cProfile's top functions for this mode")
    args = parser.parse_args()

    intrinsics = Intrinsics.from_fov(args.width, args.height, fov_x_deg=75.0)
    counts = [int(k) for k in args.anchors.split(",")]
    print(f"weaving alone, synthetic full-coverage renders, {args.width}x{args.height}, median ms per view "
          f"({args.repeats} repeats)")
    print(f"{'K':>3s}" + "".join(f"{name:>20s}" for name in MODES) + f"{'learned - heuristic':>22s}")
    for k in counts:
        case = synthetic_case(k, intrinsics)
        ms = {name: 1e3 * time_weave(case, intrinsics, options, args.repeats) for name, options in MODES.items()}
        print(f"{k:3d}" + "".join(f"{ms[name]:20.1f}" for name in MODES)
              + f"{ms['learned'] - ms['heuristic']:+22.1f}")
    if args.profile:
        renders, positions, confidences, frame_ids = synthetic_case(max(counts), intrinsics)
        profiler = cProfile.Profile()
        profiler.enable()
        weave(renders, positions, confidences, Pose.identity(), intrinsics, MODES[args.profile], frame_ids=frame_ids)
        profiler.disable()
        print(f"\ncProfile, {args.profile}, K = {max(counts)}:")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
