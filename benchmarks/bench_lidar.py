"""LiDAR scan vs the same rays through the Raycast API, in one run, on a real server over loopback.

The world: the procedural street seeded with the exact views of a drive (one lap and a revisit, 24 frames of
320 x 240, 5 cm voxels). The sensor: CARLA-like, 32 channels from +10° to -30°, ``--points`` rays per scan, 30 m,
at a drive pose. Each figure is the median of ``--repeats`` calls, client round trip; the two calls alternate (which
goes first alternating too), so both see the same load on a shared machine:

* ``ScanLidar``: one request with the LiDAR's parameters; the answer holds sensor-frame points, ranges, intensity,
  ring, hit and unknown per ray.
* ``Raycast`` (baseline): the same rays (built on the client) sent as origins and directions; the answer holds world
  points, distances, colours, hit and unknown per ray.

Two settings: an unchanged world (a scan finds its plane fits in the plane cache, ``lidar``), and the first call
after a step (an untimed Step at a drive pose next to the sensor before every timed call: the step re-fuses the
view, which invalidates the cached planes there, so the scan refits them; both calls also bring the queries' copy up
to date with the step).

Run: ``nice -n 10 python benchmarks/bench_lidar.py`` (one to two minutes on two busy cores).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np

from worldweave.bridge.eval.scenes import make_street
from worldweave.bridge.eval.trajectories import driving
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.bridge.queries.lidar import LidarSpec
from worldweave.proto.codecs import FLOAT32, pack_array
from worldweave.proto.geometry import Intrinsics
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server.app import BackgroundServer
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.sensors import lidar_spec, scan_lidar

INTRINSICS = Intrinsics(160.0, 160.0, 159.5, 119.5, 320, 240)
RANGE_M = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=32 * 1024, help="rays per scan")
    parser.add_argument("--repeats", type=int, default=5, help="calls per figure (the median is printed)")
    args = parser.parse_args()

    scene = make_street(0)
    poses = list(driving(scene, 24).poses)
    seed = [(f.rgb, f.depth, f.pose.matrix) for f in (scene.render(pose, INTRINSICS) for pose in poses)]
    camera = poses[8]
    yaw = math.atan2(camera.forward[1], camera.forward[0])
    T_world_sensor = np.eye(4)
    T_world_sensor[:3, :3] = [[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]]
    T_world_sensor[:3, 3] = camera.position
    spec = lidar_spec(channels=32, range_m=RANGE_M, points_per_scan=args.points, upper_fov_deg=10.0, lower_fov_deg=-30.0)
    directions_sensor, _ = LidarSpec(channels=32, range_m=RANGE_M, points_per_scan=args.points, upper_fov_deg=10.0,
                                     lower_fov_deg=-30.0).rays()
    directions = directions_sensor @ T_world_sensor[:3, :3].T

    with BackgroundServer(generator=EchoGenerator()) as server, WorldClient(server.address, timeout_s=600.0) as client:
        world_id = client.worlds.create(seed, INTRINSICS, voxel_size_m=0.05).world_id

        def lidar() -> int:
            return int(scan_lidar(client, world_id, T_world_sensor, spec).hit.sum())

        def raycast() -> int:
            request = pb.RaycastRequest(
                world_id=world_id, origins_m=pack_array(np.broadcast_to(camera.position, directions.shape), FLOAT32, 3, "o"),
                directions=pack_array(directions, FLOAT32, 3, "d"), max_range_m=RANGE_M,
            )
            (response,) = client.call("Raycast", request)
            return int(np.frombuffer(response.hit, np.uint8).sum())

        def step(repeat: int) -> None:
            client.step(world_id, poses[8 + repeat % 2].matrix, depth=None)

        lidar(), raycast()  # warm: the query copies and kernels
        calls = (("ScanLidar", lidar), ("Raycast (baseline)", raycast))
        tables = []
        for setting, before in (("unchanged world", None), ("first call after a step", step)):
            seconds: dict[str, list[float]] = {name: [] for name, _ in calls}
            hits: dict[str, int] = {}
            for repeat in range(args.repeats):  # interleaved, first call alternating: both see the same load
                for name, call in calls[:: 1 if repeat % 2 == 0 else -1]:
                    if before is not None:
                        before(repeat)
                    began = time.perf_counter()
                    hits[name] = call()
                    seconds[name].append(time.perf_counter() - began)
            tables.append((setting, [(name, statistics.median(seconds[name]), hits[name]) for name, _ in calls]))
    print(f"{len(directions)} rays, 32 channels, {RANGE_M:g} m, street after a drive (5 cm voxels)")
    for setting, rows in tables:
        print(f"{setting}:")
        print(f"  {'call':<20} {'median s':>9} {'hits':>7}")
        for name, median, count in rows:
            print(f"  {name:<20} {median:>9.3f} {count:>7}")
        print(f"  scan / raycast: {rows[0][1] / rows[1][1]:.2f}")
    print(f"load average over the last minute: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
