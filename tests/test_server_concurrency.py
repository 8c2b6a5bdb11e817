"""16 clients at once on a real server with the default generator (``continue``), each on its own world: steps,
queries and point-cloud deltas for a bounded time, without a single error, every mirror equal to its world."""

from __future__ import annotations

import threading
import time

import numpy as np

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.server.app import BackgroundServer
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.mirror import PointCloudMirror

CLIENTS = 16
DURATION_S = 6.0
MAX_ROUNDS = 12


def test_sixteen_clients_on_sixteen_worlds_without_error():
    frames, intrinsics = wall_seed(48, 36)
    poses = yaw_poses(MAX_ROUNDS)
    origins = np.tile([0.0, 0.0, 1.5], (64, 1))
    directions = np.column_stack([np.ones(64), np.linspace(-0.5, 0.5, 64), np.zeros(64)])
    errors: list[BaseException] = []
    rounds = [0] * CLIENTS
    mirrors = [PointCloudMirror() for _ in range(CLIENTS)]
    start = threading.Barrier(CLIENTS)

    with BackgroundServer() as server:
        assert server.server.config.generator == "continue"

        def run(i: int) -> None:
            try:
                with WorldClient(server.address, timeout_s=60) as client:
                    world_id = client.worlds.create(frames, intrinsics, world_id=f"load{i}").world_id
                    start.wait(timeout=60)
                    deadline = time.monotonic() + DURATION_S
                    while rounds[i] < MAX_ROUNDS and time.monotonic() < deadline:
                        frame, = client.step(world_id, poses[rounds[i]])
                        hits = client.queries.raycast(world_id, origins, directions, 6.0)
                        mirrors[i].update(client.point_cloud.stream(world_id, mirrors[i].version))
                        assert hits.version >= frame.version and mirrors[i].version >= frame.version
                        rounds[i] += 1
            except BaseException as error:  # noqa: BLE001 - collected and reported by the test
                errors.append(error)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
        assert not any(thread.is_alive() for thread in threads)
        assert not errors, errors
        assert min(rounds) >= 1, rounds
        for i, mirror in enumerate(mirrors):
            voxels = server.server.registry.entry(f"load{i}").world.memory.voxel_map.voxels().sorted_by_key()
            assert mirror.version == 1 + rounds[i]
            np.testing.assert_array_equal(mirror.keys, voxels.keys)
            np.testing.assert_array_equal(mirror.colors, voxels.colors)
