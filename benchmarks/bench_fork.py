"""Fork, checkpoint and restore of a big world, beside creating the same world from its seed (same run).

The world: 100 seed frames (200x100 each, fx 100 px) of textured walls 4 m ahead, the cameras 20 m apart, so every
pixel lands in a voxel of its own: about 2M voxels (2 cm) and 100 anchors. Generator ``reproject``, CPU.

Rows, in ms: creating the world from its seed; an ordinary one-pose step (median); a fork right after a step (the
freeze copies what the step wrote into snapshot files) and a fork of an unchanged world (nothing copied); a fork's
first step, and that minus an ordinary step; a checkpoint; a restore; what a freeze after one step copies, per array
(MiB and pieces: the key index's hash table, the columns); and the server's memory around a fork: RSS, and the
physical memory the process holds (anonymous pages plus the snapshot files: RSS counts a file page once per
mapping, and not at all where nothing maps it yet), before the fork, after it, and after the fork's first step.

A second table times the gym env's ``reset`` (128x96, ``reproject``, a server on loopback): building the seed world
(``reset(seed=...)``, what every reset did before) beside restoring its checkpoint (``reset()``).

    python benchmarks/bench_fork.py [--frames 100] [--width 200 --height 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

import numpy as np

from worldweave.bridge.checkpoints import WorldSnapshot, snapshot_file_bytes
from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.world import Seed, World
from worldweave.proto.geometry import Intrinsics, Pose

SPACING_M = 20.0
"""Distance between seed cameras along x, metres: their walls never overlap."""
WALL_M = 4.0
"""Distance from each seed camera to its wall, metres."""


def seed_frames(count: int, width: int, height: int) -> list[RGBDFrame]:
    """``count`` frames, each a noisy textured wall 4 m ahead of a camera at (20 i, 0, 1.5) m looking along +y."""
    rng = np.random.default_rng(0)
    intrinsics = Intrinsics(fx=100.0, fy=100.0, cx=(width - 1) / 2, cy=(height - 1) / 2, width=width, height=height)
    frames = []
    for i in range(count):
        eye = np.array([SPACING_M * i, 0.0, 1.5])
        pose = Pose.look_at(eye, eye + [0.0, WALL_M, 0.0])
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        depth = (WALL_M + rng.uniform(-0.3, 0.3, (height, width))).astype(np.float32)
        frames.append(RGBDFrame(rgb, depth, pose, intrinsics))
    return frames


def step_pose(i: int) -> Pose:
    """A view of seed wall ``i % 100``, turned a little, so each step generates mostly from memory."""
    eye = np.array([SPACING_M * (i % 100), 0.2, 1.5])
    return Pose.look_at(eye, eye + [0.5, WALL_M, 0.1])


def memory_mb() -> tuple[float, float]:
    """(RSS, anonymous pages + bytes of the live snapshot files), MiB, of this process."""
    fields = {}
    with open(f"/proc/{os.getpid()}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields["Rss"] / 1024, fields["Anonymous"] / 1024 + snapshot_file_bytes() / 2**20


def frozen_arrays(frozen, prefix: str = "") -> dict[str, object]:
    """The frozen arrays of a frozen voxel map (``bridge.checkpoints``' recipe), by attribute path."""
    out = {}
    for name, value in frozen.attributes.items():
        if hasattr(value, "pieces"):
            out[prefix + name] = value
        elif hasattr(value, "attributes"):
            out.update(frozen_arrays(value, f"{prefix}{name}."))
    return out


def copied(before: WorldSnapshot, after: WorldSnapshot) -> dict[str, tuple[float, int, int]]:
    """Per array of the voxel map: MiB ``after``'s freeze wrote for it (its pieces and scattered runs in files that
    ``before`` does not use), its pieces (mapped by a view) and its scattered runs (copied into a view)."""
    old = frozen_arrays(before.memory.voxel_map)
    known = {id(p.file) for array in old.values() for p in array.pieces + array.scattered}
    return {
        path: (sum(p.length for p in array.pieces + array.scattered if id(p.file) not in known) / 2**20,
               len(array.pieces), len(array.scattered))
        for path, array in frozen_arrays(after.memory.voxel_map).items()
    }


def timed(work) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return (time.perf_counter() - started) * 1e3, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100, help="seed frames (one anchor each)")
    parser.add_argument("--width", type=int, default=200)
    parser.add_argument("--height", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per row (median)")
    args = parser.parse_args()

    frames = seed_frames(args.frames, args.width, args.height)
    create_ms, world = timed(lambda: World(Seed(frames)))
    print(f"world: {len(world.memory.voxel_map):,} voxels, {len(world.memory.anchors)} anchors, "
          f"{args.width}x{args.height}, reproject, load {os.getloadavg()[0]:.1f}")
    for i in range(2):  # warm-up (numba compilation)
        world.step([step_pose(i)])

    steps = [timed(lambda i=i: world.step([step_pose(10 + i)]))[0] for i in range(args.repeats)]
    step_ms = statistics.median(steps)

    cold, warm, first_steps, extra_mb, rss_extra, copies = [], [], [], [], [], []
    previous = world.snapshot()
    for i in range(args.repeats):
        world.step([step_pose(20 + i)])  # the world changed: the next fork copies what the step wrote
        gc.collect()
        rss_before, held_before = memory_mb()
        ms, fork = timed(world.fork)
        cold.append(ms)
        snapshot = world.snapshot()  # unchanged since the fork: reuses its freeze
        copies.append(copied(previous, snapshot))
        previous = snapshot
        rss_after, held_after = memory_mb()
        warm.append(timed(world.fork)[0])
        ms, _ = timed(lambda f=fork, i=i: f.step([step_pose(30 + i)]))
        first_steps.append(ms)
        rss_stepped, held_stepped = memory_mb()
        extra_mb.append((held_after - held_before, held_stepped - held_before, held_before))
        rss_extra.append((rss_after - rss_before, rss_stepped - rss_before, rss_before))
        del fork, snapshot
    del previous

    checkpoint_ms, unchanged_ms, restore_ms = [], [], []
    for i in range(args.repeats):
        world.step([step_pose(40 + i)])
        ms, mark = timed(world.checkpoint)  # after a change: one copy, as a fork
        checkpoint_ms.append(ms)
        unchanged_ms.append(timed(world.checkpoint)[0])
        world.step([step_pose(50 + i)])
        restore_ms.append(timed(lambda mark=mark: world.restore(mark.checkpoint_id))[0])

    held = statistics.median(e[0] for e in extra_mb), statistics.median(e[1] for e in extra_mb)
    base = statistics.median(e[2] for e in extra_mb)
    rss = statistics.median(e[0] for e in rss_extra), statistics.median(e[1] for e in rss_extra)
    rss_base = statistics.median(e[2] for e in rss_extra)
    first = statistics.median(first_steps)
    rows = [
        ("create the world from its seed (baseline)", create_ms, ""),
        ("ordinary step", step_ms, ""),
        ("fork after a step (copies what the step wrote)", statistics.median(cold), "target <= 50"),
        ("fork of an unchanged world", statistics.median(warm), "target <= 50"),
        ("fork's first step", first, f"= ordinary + {first - step_ms:.1f} (target <= +100)"),
        ("checkpoint after a step (as a fork)", statistics.median(checkpoint_ms), ""),
        ("checkpoint of an unchanged world", statistics.median(unchanged_ms), ""),
        ("restore", statistics.median(restore_ms), "target <= 100"),
    ]
    print(f"median of {args.repeats}, ms")
    for name, ms, note in rows:
        print(f"  {name:48s} {ms:10.1f}  {note}")
    print(f"  (forks after a step: {min(cold):.1f} to {max(cold):.1f}; their first steps: {min(first_steps):.1f} to "
          f"{max(first_steps):.1f}; a freeze writes the hash table whole when its scattered pages pass a quarter)")
    print("what a freeze after one step copies, per array: MiB copied (median, max), pieces, scattered runs (most)")
    for path in copies[0]:
        mib = [c[path][0] for c in copies]
        print(f"  {path:28s} {statistics.median(mib):7.2f} {max(mib):7.2f} MiB  {max(c[path][1] for c in copies):3d} "
              f"pieces  {max(c[path][2] for c in copies):5d} scattered")
    total = [sum(m for m, _, _ in c.values()) for c in copies]
    print(f"  {'all':28s} {statistics.median(total):7.2f} {max(total):7.2f} MiB")
    print(f"memory held (anonymous + snapshot files), MiB: {base:.0f} before a fork; +{held[0]:.0f} "
          f"({100 * held[0] / base:+.1f}%) after it; +{held[1]:.0f} ({100 * held[1] / base:+.1f}%) after its first step "
          "(target <= +10% until written)")
    print(f"RSS, MiB: {rss_base:.0f} before; +{rss[0]:.0f} ({100 * rss[0] / rss_base:+.1f}%) after the fork; "
          f"+{rss[1]:.0f} ({100 * rss[1] / rss_base:+.1f}%) after its first step")


def gym_resets(repeats: int) -> None:
    """Median ms of a gym reset that builds the seed world and of one that restores its checkpoint."""
    from worldweave.server.app import BackgroundServer
    from worldweave.sim_clients.gym_env.env import WorldEnv

    build, restore = [], []
    with BackgroundServer() as server:
        env = WorldEnv(address=server.address)
        try:
            env.reset(seed=0)  # warm-up
            for i in range(repeats):
                build.append(timed(lambda i=i: env.reset(seed=i))[0])
                for _ in range(3):
                    env.step(env.action_space.sample())
                restore.append(timed(env.reset)[0])
                for _ in range(3):
                    env.step(env.action_space.sample())
        finally:
            env.close()
    print(f"gym reset, 128x96, reproject, median of {repeats}, ms (load {os.getloadavg()[0]:.1f})")
    print(f"  {'build the seed world (reset(seed=...); every reset before)':60s} {statistics.median(build):8.1f}")
    print(f"  {'restore its checkpoint (reset())':60s} {statistics.median(restore):8.1f}")


if __name__ == "__main__":
    main()
    gym_resets(5)
