"""LiDAR scan vs the same rays through the Raycast API, in one run, on a real server over loopback.

The world: the procedural street seeded with the exact views of a drive (one lap and a revisit, 24 frames of
320 x 240, 5 cm voxels), created twice from the same seed: ``ScanLidar`` calls go to one copy and ``Raycast`` calls to
the other, so that each call meets the same memory and the same history of changes, and each pays only for its own
caches (the scan its plane cache's upkeep, which a world that only raycasts never has). The sensor: CARLA-like, 32
channels from +10° to -30°, ``--points`` rays per scan, 30 m, at a drive pose.

* ``ScanLidar``: one request with the LiDAR's parameters; the answer holds sensor-frame points, ranges, intensity,
  ring, hit and unknown per ray.
* ``Raycast`` (baseline): the same rays (built on the client) sent as origins and directions; the answer holds world
  points, distances, colours, hit and unknown per ray.

Two settings: an unchanged world (a scan finds its plane fits in the plane cache), and the first call after a step
(before every repeat, an untimed Step of both copies at the same drive pose next to the sensor, one of two poses that
take turns every other repeat: the step re-fuses the view, which brings new voxels and moves surface points where the
sensor looks, so the scan refits the planes there; both calls also bring their queries' copy up to date with the
step). Each repeat times one call of each, in alternating order, so both see the same load on a shared machine.
Printed per call: the median over ``--repeats`` of the client's wall-clock round trip and of the process's CPU time
(client and server share this process: a figure that other processes' load inflates less); then the scan / raycast
ratio of the medians and the median of the per-repeat ratios. At the end both copies answer one more Raycast, which
must be identical (the same memory).

Run: ``nice -n 10 python benchmarks/bench_lidar.py`` (under a minute on two busy cores, most of it building the worlds).
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
    parser.add_argument("--repeats", type=int, default=12,
                        help="calls per figure (the median is printed; a multiple of 4 balances order and pose)")
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
        scan_world, ray_world = (client.worlds.create(seed, INTRINSICS, voxel_size_m=0.05).world_id for _ in range(2))

        def lidar() -> int:
            return int(scan_lidar(client, scan_world, T_world_sensor, spec).hit.sum())

        def raycast(world_id: str = ray_world) -> pb.RaycastResponse:
            request = pb.RaycastRequest(
                world_id=world_id, origins_m=pack_array(np.broadcast_to(camera.position, directions.shape), FLOAT32, 3, "o"),
                directions=pack_array(directions, FLOAT32, 3, "d"), max_range_m=RANGE_M,
            )
            (response,) = client.call("Raycast", request)
            return response

        def raycast_hits() -> int:
            return int(np.frombuffer(raycast().hit, np.uint8).sum())

        def step(repeat: int) -> None:  # the pose changes every other repeat: each order meets each pose
            for world_id in (scan_world, ray_world):
                client.step(world_id, poses[8 + repeat // 2 % 2].matrix, depth=None)

        lidar(), raycast_hits()  # warm: the query copies and kernels
        calls = (("ScanLidar", lidar), ("Raycast (baseline)", raycast_hits))
        tables = []
        for setting, before in (("unchanged world", None), ("first call after a step", step)):
            wall: dict[str, list[float]] = {name: [] for name, _ in calls}
            cpu: dict[str, list[float]] = {name: [] for name, _ in calls}
            hits: dict[str, int] = {}
            for repeat in range(args.repeats):
                if before is not None:
                    before(repeat)
                for name, call in calls[:: 1 if repeat % 2 == 0 else -1]:  # alternating: both see the same load
                    began, began_cpu = time.perf_counter(), time.process_time()
                    hits[name] = call()
                    wall[name].append(time.perf_counter() - began)
                    cpu[name].append(time.process_time() - began_cpu)
            tables.append((setting, wall, cpu, hits))
        same = raycast(scan_world).SerializeToString() == raycast().SerializeToString()
    print(f"{len(directions)} rays, 32 channels, {RANGE_M:g} m, street after a drive (5 cm voxels), "
          f"{args.repeats} repeats; the two copies hold the same memory at the end: {'yes' if same else 'NO'}")
    for setting, wall, cpu, hits in tables:
        (scan_name, _), (ray_name, _) = calls
        print(f"{setting}:")
        print(f"  {'call':<20} {'wall s':>8} {'CPU s':>8} {'hits':>7}")
        for name, _ in calls:
            median_wall, median_cpu = statistics.median(wall[name]), statistics.median(cpu[name])
            print(f"  {name:<20} {median_wall:>8.3f} {median_cpu:>8.3f} {hits[name]:>7}")
        for figure, seconds in (("wall", wall), ("CPU", cpu)):
            ratio = statistics.median(seconds[scan_name]) / statistics.median(seconds[ray_name])
            paired = statistics.median(a / b for a, b in zip(seconds[scan_name], seconds[ray_name]))
            print(f"  scan / raycast, {figure}: {ratio:.3f} (median of per-repeat ratios {paired:.3f})")
    print(f"load average over the last minute: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
