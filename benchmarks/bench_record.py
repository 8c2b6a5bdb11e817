"""What recording costs a step, and how fast a log replays: the ``worldweave demo`` world (room, 320x240 by default,
generator ``reproject``, CPU) walked along the demo's closed loop through two servers on loopback in this process,
one recording (``ServerConfig.record_dir``, as ``--record DIR``) and one not, a step on each in turn, so both see the
same load; then the log replayed (``worldweave replay``'s ``replay``).

Rows: client round trip per step, median and mean, without and with recording, and the difference; the hook's parts
timed on the recorded world after the walk: the memory hash when every anchor's hash is kept (a step's case) and
from scratch, and appending + fsyncing one step record; the log's size; replay's wall time and its verdict.

    python benchmarks/bench_record.py [--steps 200] [--width 320 --height 240]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from worldweave.bridge.eval.scenes import make_scene
from worldweave.bridge.eval.trajectories import closed_loop
from worldweave.proto.geometry import Intrinsics
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.proto.geometry import Pose
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server.codecs import pose_to_proto
from worldweave.server.record_log import LogWriter, MemoryHasher, Record, RecordKind, WorldRecorder
from worldweave.server.replay import replay
from worldweave.sim_clients.client import WorldClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    args = parser.parse_args()

    scene = make_scene("room", seed=0)
    intrinsics = Intrinsics.from_fov(args.width, args.height, fov_x_deg=75.0)
    trajectory = closed_loop(scene, args.steps + 1)
    start = scene.render(trajectory.poses[0], intrinsics)
    seed = [(start.rgb, start.depth, start.pose.matrix)]
    folder = Path(tempfile.mkdtemp(prefix="bench-record-"))
    times: dict[str, list[float]] = {"off": [], "on": []}
    with BackgroundServer(config=ServerConfig(warm_up=False)) as plain, \
            BackgroundServer(config=ServerConfig(record_dir=folder, warm_up=False)) as recording, \
            WorldClient(plain.address) as off, WorldClient(recording.address) as on:
        for client in (off, on):
            client.worlds.create(seed, intrinsics, world_id="demo")
        for i, pose in enumerate(trajectory.poses[1:]):
            for name, client in ((("off", off), ("on", on)) if i % 2 else (("on", on), ("off", off))):
                began = time.perf_counter()
                client.step("demo", pose.matrix)
                times[name].append(time.perf_counter() - began)
        (entry,) = recording.server.registry.loaded()
        world = entry.world
        hasher = MemoryHasher()
        began = time.perf_counter()
        hasher(world)
        cold_s = time.perf_counter() - began
        warm = []
        for _ in range(10):
            began = time.perf_counter()
            hasher(world)
            warm.append(time.perf_counter() - began)
        record = Record(RecordKind.STEP, b"\0" * 200, {"memory": "0" * 32, "frames": [{"rgb": "0" * 32}]})
        writer = LogWriter(folder / "appends.tmp", {})
        appends, writes = [], []
        for _ in range(50):
            began = time.perf_counter()
            writer.append(record)
            appends.append(time.perf_counter() - began)
        writer.fsync = False
        for _ in range(50):
            began = time.perf_counter()
            writer.append(record)
            writes.append(time.perf_counter() - began)
        writer.fsync = True
        voxels, anchors = len(world.memory.voxel_map), len(world.memory.anchors)
        hook, hooks = WorldRecorder(writer), []  # the whole hook on further steps of the world, outside the server
        request = pb.StepRequest(world_id="demo", poses=[pose_to_proto(Pose.from_matrix(trajectory.poses[1].matrix))])
        hook.record(world, request, world.step([trajectory.poses[1]]))  # hashes every anchor once
        for pose in trajectory.poses[2:22]:
            result = world.step([pose])
            began = time.perf_counter()
            hook.record(world, request, result)
            hooks.append(time.perf_counter() - began)
        writer.close()
        os.remove(folder / "appends.tmp")
    (log,) = folder.glob("demo.*.wwlog")
    report = replay(log)

    ms = lambda values: 1e3 * statistics.median(values)  # noqa: E731
    print(f"demo world {args.width}x{args.height}, {args.steps} steps, reproject, CPU; after the walk {voxels} voxels, "
          f"{anchors} anchors; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'':44} {'median ms':>10} {'mean ms':>10}")
    for name in ("off", "on"):
        print(f"{'step round trip, recording ' + name:44} {ms(times[name]):10.1f} {1e3 * statistics.mean(times[name]):10.1f}")
    print(f"{'difference (on - off)':44} {ms(times['on']) - ms(times['off']):10.1f} "
          f"{1e3 * (statistics.mean(times['on']) - statistics.mean(times['off'])):10.1f}")
    print(f"{'memory hash, anchors kept (per step)':44} {ms(warm):10.2f}")
    print(f"{'memory hash from scratch':44} {1e3 * cold_s:10.2f}")
    print(f"{'append + fsync one step record':44} {ms(appends):10.2f}")
    print(f"{'append one step record, no fsync':44} {ms(writes):10.2f}")
    print(f"{'the whole hook on a step (hashes, write, fsync)':44} {ms(hooks):10.2f} "
          f"{1e3 * statistics.mean(hooks):10.2f}")
    print(f"log: {log.stat().st_size / 1e3:.1f} kB; replay: {report.seconds:.1f} s, exit status {report.exit_status}")
    print(report.describe())


if __name__ == "__main__":
    main()
