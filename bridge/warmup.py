"""Warm start: compile (or load from numba's on-disk cache) the engine kernels a request can reach, before a host
says it is serving.

numba compiles a kernel on its first call with a new type signature. Without a cache, on two shared cores, the
first raycast of a fresh server took 53 s, the first capsule check 26 s and the first step 14 s (issue 17 measured
30.6 s and 13.6 s). ``warm_up`` builds a tiny world in memory and runs each kind of engine work once, through the
same ``World`` and ``WorldQueries`` methods a server calls (they normalise their inputs before any kernel, so the
signatures compiled here are the ones requests need):

1. the seed's integration (voxel map, anchors), of a read-only image as a seed decoded from the wire is;
2. a step (retrieval, render and weave, generation, integration of a generated, writable image), and one turned half
   off what memory holds (the generator's fill of what it leaves unknown), then a render in every retrieval mode;
3. the spatial queries: raycast, a LiDAR scan, nearest surface, sphere / capsule / box collisions, occupancy, crop;
4. the change feed, with the point-cloud stream's sort into key order, and the edits (insert, recolour, remove),
   the insert spread wide enough that the query grid grows its tables as a growing world's does.

Seed and step run twice: with the cores as they are (the kernels that split a frame over the free cores,
``bridge.cores``, take their threaded variants) and with every core held (their one-thread variants, as when worlds
step at once).

The kernels are declared ``cache=True``: the first start of a version of the engine on a machine compiles them and
writes the cache (in a folder named by the engine's sources, ``kernel_cache``, or under ``NUMBA_CACHE_DIR``); later
starts load it. ``compiled_kernels`` counts what is compiled.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
from numba.core.dispatcher import Dispatcher

from worldweave.bridge.cores import holding_every_core
from worldweave.bridge.eval.wall import EYE_M, wall_seed, yaw_poses
from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.generators.base import Generator
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.bridge.memory.key_order import sorted_columns, sorted_keys
from worldweave.bridge.memory.retrieval import RETRIEVAL_MODES
from worldweave.bridge.queries import lidar
from worldweave.bridge.queries.lidar import LidarSpec
from worldweave.bridge.regions import Box, Sphere
from worldweave.bridge.world import QueryReach, Seed, World, WorldConfig
from worldweave.proto.geometry import Pose

WARM_GENERATORS = frozenset({"echo", "reproject", "continue"})
"""Generators without weights whose step at the warm-up size costs milliseconds: the warm-up world steps with the
host's own generator when it is one of these (so its kernels compile too), else with ``echo`` (a model's first call
is its own start-up, not the engine's)."""
WARMUP_WIDTH, WARMUP_HEIGHT = 32, 24
"""Image size of the warm-up world, pixels (kernels do not specialise on sizes)."""
QUERY_ROWS = 8
"""Rays, points and shapes per warm-up query."""
GROWTH_SIDE, GROWTH_SPACING_M = 6, 1.3
"""The warm-up inserts a lattice of GROWTH_SIDE^3 points this far apart (metres, about a query-grid chunk), so that
the grid grows its chunk table: its rehash kernel compiles for the table's value type."""


@dataclass(frozen=True)
class WarmupReport:
    """What ``warm_up`` did: ``seconds`` in all, ``stages`` name -> seconds (in order), ``generator`` the name of
    the generator the warm-up world stepped with, ``kernels`` the engine kernels compiled when it ended and
    ``signatures`` their compiled type signatures."""

    seconds: float
    stages: dict[str, float]
    generator: str
    kernels: int
    signatures: int

    def summary(self) -> str:
        """One line for a log: total, slowest stages, kernels."""
        slowest = sorted(self.stages.items(), key=lambda item: -item[1])[:3]
        stages = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in slowest)
        return (f"{self.seconds:.2f} s ({stages}); {self.kernels} engine kernels with {self.signatures} compiled "
                f"signatures; generator {self.generator}")


def engine_kernels() -> dict[str, Dispatcher]:
    """Every numba kernel of the engine's loaded modules, by ``module.name`` (each kernel once, under the module
    that defines it)."""
    kernels: dict[str, Dispatcher] = {}
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("worldweave.bridge.") or module is None:
            continue
        for name, value in vars(module).items():
            if isinstance(value, Dispatcher) and value.py_func.__module__ == module_name:
                kernels[f"{module_name}.{name}"] = value
    return kernels


def compiled_kernels() -> dict[str, int]:
    """``engine_kernels`` name -> number of type signatures compiled (or loaded from the cache) in this process."""
    return {name: len(kernel.signatures) for name, kernel in engine_kernels().items()}


_WARM: dict[tuple[str, str], WarmupReport] = {}
"""Warm-ups done in this process, by (generator name, device): compiled kernels last as long as the process."""


def warm_up(generator: Generator | None = None, *, device: str = "cpu", query_reach: QueryReach = QueryReach()) -> WarmupReport:
    """Run every kind of engine work once on a tiny in-memory world (see the module docstring); returns what it
    did. ``generator``: the host's generator, stepped with when its name is in ``WARM_GENERATORS`` (else ``echo``).
    ``device`` / ``query_reach``: as the host's worlds have them. Once per process for a generator name and device:
    a later call returns the first call's report (the kernels are still compiled)."""
    if generator is None or generator.name not in WARM_GENERATORS:
        generator = EchoGenerator()
    done = _WARM.get((generator.name, str(device)))
    if done is not None:
        return done
    stages: dict[str, float] = {}
    started = time.perf_counter()

    def stage(name: str) -> None:
        stages[name] = time.perf_counter() - started - sum(stages.values())

    # 1. the seed's integration
    [(rgb, depth_m, c2w)], intrinsics = wall_seed(WARMUP_WIDTH, WARMUP_HEIGHT)
    rgb.setflags(write=False)  # as a seed decoded from the wire is (numba compiles read-only arrays apart)
    seed = Seed(frames=[RGBDFrame(rgb, depth_m, Pose.from_matrix(c2w), intrinsics)])
    config = WorldConfig(generator=generator.name)
    with holding_every_core():  # the split kernels' one-thread variants
        World(seed, config, generator=generator, device=device, query_reach=query_reach)
    world = World(seed, config, generator=generator, device=device, query_reach=query_reach)
    stage("integrate")
    # 2. a step, then renders in every retrieval mode
    poses = [Pose.from_matrix(m) for m in yaw_poses(3)]
    world.step(poses[1:2])
    with holding_every_core():
        world.step(poses[1:2])
    off_wall = [Pose.look_at(EYE_M, np.add(EYE_M, (1.0, 1.0, 0.0)))]  # half off the wall: what is left unknown
    world.step(off_wall)
    with holding_every_core():  # the fill's split levels on one thread
        world.step(off_wall)
    stage("step")
    for mode in RETRIEVAL_MODES:
        world.condition(poses[2:3], mode=mode)
    world.render(poses[:1])
    stage("render")
    # 3. the spatial queries
    rows = np.arange(QUERY_ROWS, dtype=np.float64)
    origins_m = np.column_stack([np.zeros(QUERY_ROWS), np.linspace(-0.5, 0.5, QUERY_ROWS), np.full(QUERY_ROWS, 1.5)])
    directions = np.tile([1.0, 0.0, 0.0], (QUERY_ROWS, 1))
    near_wall_m = origins_m + directions * (2.9 - 0.1 * rows[:, None] / QUERY_ROWS)
    radii_m = np.full(QUERY_ROWS, 0.05)
    queries = world.queries
    queries.raycast(origins_m, directions, 6.0)
    stage("raycast")
    # a LiDAR scan of a dense inserted patch (the warm-up wall is too sparse to fit planes on), twice: the first
    # fits its hits' planes, the second refines through the plane cache
    grid_m = np.arange(-0.2, 0.2001, 0.01)
    patch_y, patch_z = np.meshgrid(grid_m, grid_m + 1.5, indexing="ij")
    patch_m = np.column_stack([np.full(patch_y.size, 1.0), patch_y.ravel(), patch_z.ravel()])
    world.insert(patch_m, np.full((len(patch_m), 3), 128, np.uint8))
    sensor = Pose(np.eye(3), np.array([0.0, 0.0, 1.5]))  # x forward: facing the patch
    spec = LidarSpec(channels=8, range_m=6.0, points_per_scan=256, upper_fov_deg=8.0, lower_fov_deg=-8.0,
                     horizontal_fov_deg=16.0)
    for _ in range(2):
        lidar.scan(queries, sensor, spec)
    stage("lidar")
    queries.nearest(near_wall_m, 0.5)
    stage("nearest")
    queries.collide_spheres(near_wall_m, radii_m)
    queries.collide_capsules(near_wall_m, near_wall_m + [0.0, 0.0, 0.2], radii_m)
    queries.collide_boxes(near_wall_m, np.full((QUERY_ROWS, 3), 0.05), np.tile(np.eye(3), (QUERY_ROWS, 1, 1)))
    stage("collisions")
    queries.occupancy(np.vstack([origins_m, near_wall_m]))
    stage("occupancy")
    queries.crop(Box(np.array([-1.0, -2.0, 0.0]), np.array([4.0, 2.0, 3.0])))
    stage("crop")
    # 4. the change feed (and the point-cloud stream's sort of the map's rows into key order) and the edits
    voxels = world.changes_since(0).added
    for rows in (slice(None, None, -1), np.roll(np.argsort(voxels.keys), 1)):  # the radix sort, then the merge
        sorted_columns(voxels.keys[rows], voxels.colors[rows], voxels.sources[rows], voxels.confidence[rows])
        sorted_keys(voxels.keys[rows])
    world.memory.voxel_map.packed().in_key_order()  # a snapshot: the map's float colours read, split
    with holding_every_core():  # the same on one thread, and a change set's radix sort
        world.memory.voxel_map.packed().in_key_order()
        sorted_columns(voxels.keys[::-1], voxels.colors[::-1], voxels.sources[::-1], voxels.confidence[::-1])
        sorted_keys(voxels.keys[::-1])
    lattice_m = np.stack(np.meshgrid(*[np.arange(GROWTH_SIDE) * GROWTH_SPACING_M] * 3, indexing="ij"), -1)
    world.insert(lattice_m.reshape(-1, 3) + [3.5, -1.0, 0.5], np.full((GROWTH_SIDE ** 3, 3), 200, np.uint8))
    world.recolor(Sphere(np.array([2.9, 0.0, 1.5]), 0.3), [10, 20, 30])
    world.remove(Box(np.array([2.0, -0.2, 1.4]), np.array([3.5, 0.2, 1.6])))
    world.queries.raycast(origins_m, directions, 6.0)  # the grid's sync of edits
    world.changes_since(1)
    stage("edits")
    compiled = compiled_kernels()
    report = _WARM[(generator.name, str(device))] = WarmupReport(
        seconds=time.perf_counter() - started,
        stages=stages,
        generator=generator.name,
        kernels=sum(1 for count in compiled.values() if count),
        signatures=sum(compiled.values()),
    )
    return report

