"""One-pose world steps with the default generator (``continue``; ``--generator`` picks another): milliseconds per
stage, and worlds stepping at once.

A procedural room seeds the world from its start view; the camera then walks the benchmark's closed loop and each
step generates and fuses one frame. Rows: anchors with coverage retrieval (the default) woven by the heuristic and
by the learned weaver (on every competing pixel, and at stride 2), beside the global voxel map (the baseline, same
run), and the default memory with ``reproject`` (the embedded generator that keeps memory's pixels and continues
nothing: what the chosen generator's continuation costs, same run). Targets (issue 24): a whole default step <= 33
ms at 640x480 and <= 12 ms at 320x240. Each row also gives the stepping thread's CPU time per step ("cpu"): on a
shared machine the wall-clock figures include waits for a core, the CPU time does not. The default step's length
depends on the walk: more frames put more anchors in memory, so compare runs of the same ``--frames`` only. Under
the default row, its steps are split by what memory covered of the view: the walk passes poses where memory shows
nothing (a step then costs little more than fusing the generated frame) and poses where it shows a part (retrieval,
anchor renders and the weave, the refit of kept depth), and the median over the walk falls between the two kinds;
the split rows give each kind's median and 90th percentile.

A second table steps two worlds in turn through the same walk, one with every core held (its split kernels run one
thread each: ``bridge.cores``) and one with the cores free: what the spare cores give one world, paired step by step
so that this shared machine's slow spells fall on both. A third table times the weaving alone at K = 7: the same
anchor renders of each view (rendered once) woven by each mode, so "learned - heuristic" is what the network adds.

A fourth table: N worlds (default anchors, one shared generator, as a server shares it) each walking
the loop on a thread of its own, as the server's engine threads step different worlds: total steps per second
beside one world's, same run (target: 2 and 4 worlds >= 1.7x one on 2 cores). Beside it, the same N walks in N
processes of their own (``spawn``), each with its kernels on one thread as worlds stepping at once run theirs, timed
from the first start to the last end: what the worlds would give without sharing one interpreter's GIL; a lone
process (N = 1) is the one-thread rate, so its "x one world" is what splitting the kernels gives one world.

The process tunes glibc's malloc as ``worldweave serve`` does (``proto.malloc.tune_malloc``).

    python benchmarks/bench_world.py [--frames 40] [--width 640 --height 480] [--worlds 1 2 4]
                                     [--generator continue] [--skip modes cores weave worlds]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np

from worldweave.bridge.cores import holding_every_core
from worldweave.bridge.eval.scenes import make_room
from worldweave.bridge.eval.trajectories import closed_loop
from worldweave.bridge.generators.base import Generator
from worldweave.bridge.generators.registry import DEFAULT_GENERATOR, available, create_generator
from worldweave.bridge.memory.spatial_memory import MemoryConfig
from worldweave.bridge.memory.voxel_map import Source
from worldweave.bridge.memory.weave import WeaveOptions, weave
from worldweave.bridge.world import STAGES, Seed, World, WorldConfig
from worldweave.proto.geometry import Intrinsics, Pose
from worldweave.proto.malloc import tune_malloc


def load() -> str:
    """The 1-minute load average, for the reader to judge how shared the cores were."""
    return os.getloadavg()[0].__format__(".2f")


def the_walk(width: int, height: int, frames: int) -> tuple[Seed, list[Pose]]:
    """The benchmark's procedural room: the seed (its start view) and the closed loop's poses, 4 more than
    ``frames`` (the first is the seed's)."""
    scene = make_room(seed=0)
    intrinsics = Intrinsics.from_fov(width, height, fov_x_deg=75.0)
    poses = closed_loop(scene, frames + 4).poses
    return Seed([scene.render(poses[0], intrinsics)]), poses


def walk_alone(width: int, height: int, frames: int, generator_name: str, ready, go, spans) -> None:
    """A process of its own (the fourth table's processes): walks the loop once untimed (its kernels load from the
    cache), puts ``None`` on ``ready``, waits for ``go``, walks it again and puts the timed walk's (start, end)
    ``time.perf_counter`` seconds (one clock for every process) on ``spans``; kernels on one thread throughout."""
    tune_malloc()
    seed, poses = the_walk(width, height, frames)
    config, generator = WorldConfig(generator=generator_name), create_generator(generator_name)
    with holding_every_core():
        walk(seed, poses[1:], config, generator)
        ready.put(None)
        go.wait()
        started = time.perf_counter()
        walk(seed, poses[1:], config, generator)
        spans.put((started, time.perf_counter()))


def in_processes(count: int, args: argparse.Namespace) -> float:
    """Total steps/s of ``count`` walks in ``count`` processes (``walk_alone``), first start to last end."""
    context = multiprocessing.get_context("spawn")
    ready, spans, go = context.Queue(), context.Queue(), context.Event()
    processes = [context.Process(target=walk_alone, args=(args.width, args.height, args.frames, args.generator, ready,
                                                          go, spans)) for _ in range(count)]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            ready.get(timeout=900)
        go.set()
        walks = [spans.get(timeout=900) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=60)
    return count * (args.frames + 3) / (max(end for _, end in walks) - min(start for start, _ in walks))


def walk(seed: Seed, poses: list[Pose], config: WorldConfig, generator: Generator | None = None
         ) -> tuple[World, list[dict[str, float]]]:
    """Step a fresh world through ``poses`` one pose at a time; each step's timings (seconds) with ``cpu``, the
    stepping thread's CPU time, and ``coverage``, the share of the view memory covered before generation."""
    world = World(seed, config, generator=generator)
    timings = []
    for pose in poses:
        cpu = time.thread_time()
        result = world.step([pose])
        timings.append({**result.timings_s, "cpu": time.thread_time() - cpu, "coverage": result.frames[0].coverage})
    return world, timings


def split_by_coverage(timings: list[dict[str, float]], columns: tuple[str, ...]) -> None:
    """Print the steps whose view memory covered in part apart from those where it covered nothing: the two kinds
    differ several-fold in cost, so a median over the walk lands wherever the walk's mix puts it (in the default
    40-step walk 24 steps see memory: the median is the fourth or fifth cheapest of them); each kind's mean total
    is printed too."""
    kinds = {"memory in view": [t for t in timings if t["coverage"] > 0],
             "nothing in view": [t for t in timings if t["coverage"] == 0]}
    for name, chosen in kinds.items():
        if not chosen:
            continue
        medians = "".join(f"{1e3 * statistics.median(t[c] for t in chosen):>14.1f}" for c in columns)
        p90 = 1e3 * float(np.percentile([t["total"] for t in chosen], 90))
        mean = 1e3 * statistics.fmean(t["total"] for t in chosen)
        print(f"  {name + f' ({len(chosen)} steps)':26s}{medians}   p90 total {p90:.1f}, mean {mean:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40, help="steps timed per mode (after 3 warm-up steps)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4], help="world counts of the fourth table")
    parser.add_argument("--generator", default=DEFAULT_GENERATOR, choices=available(),
                        help="generator every table steps with (default: %(default)s)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["modes", "cores", "weave", "worlds"])
    args = parser.parse_args()
    tune_malloc()  # as `worldweave serve` does: frame-sized buffers from the heap, not a fresh mmap each

    seed, poses = the_walk(args.width, args.height, args.frames)
    intrinsics = seed.frames[0].intrinsics
    weaves = {"heuristic": WeaveOptions(), "learned": WeaveOptions(mode="learned"),
              "learned, stride 2": WeaveOptions(mode="learned", learned_stride=2)}
    world = None
    if "modes" not in args.skip:
        columns = (*STAGES, "total", "cpu")
        print(f"one-pose steps, {args.generator}, {args.width}x{args.height}, {args.frames} steps, median ms per stage "
              f"(load {load()})")
        rows = [(f"anchors, {name}", WorldConfig(generator=args.generator, memory=MemoryConfig(weave=options)))
                for name, options in weaves.items()]
        rows.append(("global map (baseline)", WorldConfig(generator=args.generator,
                                                          memory=MemoryConfig(retrieval="global"))))
        if args.generator != "reproject":
            rows.append(("anchors, reproject", WorldConfig(generator="reproject")))
        print(f"{'memory':28s}" + "".join(f"{c:>14s}" for c in columns))
        for name, config in rows:
            stepped, timings = walk(seed, poses[1:], config)
            timings = timings[3:]
            print(f"{name:28s}" + "".join(f"{1e3 * statistics.median(t[c] for t in timings):>14.1f}" for c in columns))
            if world is None:
                split_by_coverage(timings, columns)
            world = world or stepped

    if "cores" not in args.skip:
        print(f"\none world on one core beside one on every core, stepping in turn (paired: the machine's slow spells "
              f"fall on both), default memory, median ms per stage (load {load()})")
        columns = (*STAGES, "total")
        print(f"{'cores':28s}" + "".join(f"{c:>14s}" for c in columns))
        paired = {name: World(seed, WorldConfig(generator=args.generator)) for name in ("one core", "every core")}
        steps: dict[str, list[dict[str, float]]] = {name: [] for name in paired}
        for pose in poses[1:]:
            for name, stepped in paired.items():
                # holding every core leaves the step's split kernels one thread each (bridge.cores)
                with holding_every_core() if name == "one core" else nullcontext():
                    steps[name].append(stepped.step([pose]).timings_s)
        for name, timings in steps.items():
            medians = (1e3 * statistics.median(t[c] for t in timings[3:]) for c in columns)
            print(f"{name:28s}" + "".join(f"{m:>14.1f}" for m in medians))
        ratios = [a["total"] / b["total"] for a, b in zip(steps["one core"][3:], steps["every core"][3:])]
        print(f"one core / every core, per step: median {statistics.median(ratios):.2f}")

    if "weave" not in args.skip:
        world = world or walk(seed, poses[1:], WorldConfig(generator=args.generator))[0]
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
                      intrinsics, options, frame_ids=[a.frame_id for a in anchors],
                      seeded=[a.source == Source.SEED for a in anchors])
                seconds[name].append(time.perf_counter() - started)
        print(f"\nweaving alone, K = 7 ({np.mean(anchor_counts):.1f} anchors retrieved on average), median ms per view")
        for name in weaves:
            extra = 1e3 * (statistics.median(seconds[name]) - statistics.median(seconds["heuristic"]))
            print(f"  {name:22s} {1e3 * statistics.median(seconds[name]):8.1f}   (+{extra:.1f} over heuristic)")

    if "worlds" not in args.skip:
        generator = create_generator(args.generator)  # one instance for every world, as a server shares it
        config = WorldConfig(generator=args.generator)
        # Load every kernel the walk reaches outside the timing, split and one-thread (as when worlds step at once):
        # a kernel's first call in a process loads it from the cache, tens of ms each, which would land on one row.
        walk(seed, poses[1:], config, generator)
        with holding_every_core():
            walk(seed, poses[1:], config, generator)
        print(f"\nworlds stepping at once, one thread each, {args.generator}, {args.width}x{args.height}, "
              f"{args.frames} steps each ({os.cpu_count()} cores)")
        print(f"{'':8s}{'threads of one process':^44s}{'processes, one thread each':^30s}")
        print(f"{'worlds':>8s}{'steps/s total':>16s}{'x one world':>14s}{'step ms p50':>14s}{'steps/s total':>16s}"
              f"{'x one world':>14s}{'load':>8s}")
        single = None
        for count in args.worlds:
            started = time.perf_counter()
            with ThreadPoolExecutor(count) as pool:
                results = list(pool.map(lambda _: walk(seed, poses[1:], config, generator)[1], range(count)))
            rate = count * (args.frames + 3) / (time.perf_counter() - started)
            single = single or (rate if count == 1 else None)
            apart = in_processes(count, args)
            ratios = [f"{value / single:14.2f}" if single else f"{'-':>14s}" for value in (rate, apart)]
            p50 = 1e3 * statistics.median(t["total"] for timings in results for t in timings[3:])
            print(f"{count:8d}{rate:16.1f}{ratios[0]}{p50:14.1f}{apart:16.1f}{ratios[1]}{load():>8s}")


if __name__ == "__main__":
    main()
