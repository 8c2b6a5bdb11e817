"""The work budget per request (issue 17, item 1): how fast an over-budget request is refused, what a request at a
default limit costs, how soon a world is free again after a query past its deadline, over loopback.

    python benchmarks/bench_budgets.py

One ``BackgroundServer`` with the default limits (``ServerLimits``) and the zero-cost ``echo`` generator, a 64 x 48
wall world (2 cm voxels, the wall at x = 3 m), and a ``WorldClient``; every figure is end to end (the client encodes,
the server decodes, checks, runs). Rays are cast into the empty half-space behind the camera. A second server with
the ray budget raised lets a raycast run past a 1 s deadline, then times the next Render of that world.

The 2 CPU cores are shared with other work, so the numbers are noisy: compare figures of one run, not across runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.proto.errors import WorldweaveError
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.server.limits import ServerLimits
from worldweave.server.world_state import RAY_EXTENT_VOX, shape_search_vox
from worldweave.sim_clients.client import WorldClient

VOXEL_M = 0.02
IDENTITY = np.array([[1.0, 0.0, 0.0, 0.0]])
"""One box rotation, quaternion wxyz."""


def away_rays(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rays from the seed camera into the empty half-space behind it: (origins_m, directions)."""
    directions = np.random.default_rng(0).normal(size=(n, 3))
    directions[:, 0] = -np.abs(directions[:, 0]) - 0.1
    return np.tile([0.0, 0.0, 1.5], (n, 1)), directions


def timed(label: str, call: Callable[[], object]) -> None:
    """Print the answer (OK or the error's class) and the seconds ``call`` took."""
    start = time.perf_counter()
    try:
        call()
        answer = "OK"
    except WorldweaveError as error:
        answer = type(error).__name__
    print(f"{label:<60} {answer:<24} {time.perf_counter() - start:8.3f} s", flush=True)


def main() -> None:
    limits = ServerLimits()
    point = np.array([[0.0, 0.0, 1.0]])
    with BackgroundServer(generator=EchoGenerator()) as server, WorldClient(server.address, timeout_s=600) as client:
        world = client.worlds.create(*wall_seed(64, 48)).world_id
        client.queries.raycast(world, *away_rays(8), 10.0)  # kernels loaded before any figure
        client.queries.check_capsules(world, point, point, 0.1)
        client.queries.check_boxes(world, point, np.full((1, 3), 0.1), IDENTITY)
        print("the issue's requests, refused before any work:")
        timed("one capsule of radius 1e4 m", lambda: client.queries.check_capsules(world, point, point, 1e4))
        timed("one box of half extents 1e4 m", lambda: client.queries.check_boxes(world, point, np.full((1, 3), 1e4), IDENTITY))
        origins, directions = away_rays(1 << 21)
        timed("2,097,152 rays of 1e9 m (50 MB to encode and send)",
              lambda: client.queries.raycast(world, origins, directions, 1e9))
        timed("a Render of that world right after", lambda: client.render(world, yaw_poses(1)[0], timeout_s=10.0))

        print("requests at a default limit:")
        rays = int(limits.max_ray_voxels // np.ceil(RAY_EXTENT_VOX))
        timed(f"{rays} rays of 1e9 m (max_ray_voxels)", lambda: client.queries.raycast(world, *away_rays(rays), 1e9))
        reach_vox = limits.max_ray_voxels // len(origins)
        timed(f"2,097,152 rays of {reach_vox * VOXEL_M:.1f} m (max_ray_voxels)",
              lambda: client.queries.raycast(world, origins, directions, reach_vox * VOXEL_M))
        side_vox = limits.max_shape_voxels ** (1 / 3) * 0.999
        half_m = (side_vox * VOXEL_M - 2 * (0.25 + VOXEL_M)) / 2
        timed(f"one capsule of radius {half_m:.1f} m (max_shape_voxels)",
              lambda: client.queries.check_capsules(world, point, point, half_m))
        timed(f"one box of half extents {half_m:.1f} m (max_shape_voxels)",
              lambda: client.queries.check_boxes(world, point, np.full((1, 3), half_m), IDENTITY))
        start, end = np.array([[2.8, 0.0, 1.0]]), np.array([[2.9, 0.0, 1.5]])
        each = shape_search_vox(np.minimum(start, end) - 0.1, np.maximum(start, end) + 0.1, VOXEL_M)[0]
        count = int(limits.max_shape_voxels // each)
        timed(f"{count} capsules of radius 0.1 m through the wall (max_shape_voxels)",
              lambda: client.queries.check_capsules(world, np.repeat(start, count, 0), np.repeat(end, count, 0), 0.1))

    roomy = ServerConfig(limits=ServerLimits(max_ray_voxels=1 << 60))
    with BackgroundServer(config=roomy, generator=EchoGenerator()) as server, WorldClient(server.address) as client:
        world = client.worlds.create(*wall_seed(64, 48)).world_id
        client.render(world, yaw_poses(1)[0])
        print("a query past its deadline (ray budget raised to 2^60):")
        timed("262,144 rays of 1e9 m, deadline 1 s", lambda: client.queries.raycast(world, *away_rays(1 << 18), 1e9, timeout_s=1))
        timed("a Render of that world right after", lambda: client.render(world, yaw_poses(1)[0], timeout_s=30.0))


if __name__ == "__main__":
    main()
