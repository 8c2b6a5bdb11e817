"""Worlds stepping at once: a deterministic shared generator is called without its lock, steps of different worlds on
different threads give the frames they give one after the other, and the step path's numba kernels release the GIL
(so those threads use every core)."""

from __future__ import annotations

import importlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest

from worldweave.bridge.frames import RenderResult
from worldweave.bridge.generators.base import Condition, GenerationResult, Generator
from worldweave.proto.geometry import Intrinsics, Pose
from worldweave.server.scheduling import share_generator

STEP_KERNEL_MODULES = (
    "worldweave.bridge.memory.anchors",
    "worldweave.bridge.memory.retrieval",
    "worldweave.bridge.memory.weave",
    "worldweave.bridge.memory.weave_stack",
    "worldweave.bridge.generators.reproject",
    "worldweave.bridge.generators.kept_depth",
    "worldweave.bridge.generators.continuation",
)
"""Modules of the step path (retrieve, weave, generate, anchors) whose numba kernels must release the GIL."""


class _PausingEcho(Generator):
    """Returns the renders after a pause; counts how many calls overlap. ``deterministic`` set per subclass."""

    name = "pausing_echo"
    max_frames, returns_depth = 4, True

    def __init__(self) -> None:
        self.active = 0
        self.most_active = 0
        self._count = threading.Lock()

    def generate(self, condition: Condition) -> GenerationResult:
        with self._count:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        time.sleep(0.05)
        with self._count:
            self.active -= 1
        return GenerationResult(tuple(r.rgb for r in condition.renders), tuple(r.depth for r in condition.renders),
                                confidences=tuple(r.mask.astype(np.float32) for r in condition.renders))


class _DeterministicEcho(_PausingEcho):
    deterministic = True


@pytest.mark.parametrize("kind, overlap", [(_PausingEcho, False), (_DeterministicEcho, True)])
def test_shared_generator_runs_a_deterministic_generator_concurrently(kind: type[_PausingEcho], overlap: bool) -> None:
    inner = kind()
    shared = share_generator(inner)
    assert type(shared).deterministic == kind.deterministic
    intrinsics = Intrinsics(10.0, 10.0, 3.5, 2.5, 8, 6)
    condition = Condition((Pose.identity(),), intrinsics, (RenderResult.empty(intrinsics),))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: shared.generate(condition), range(8)))
    assert (inner.most_active > 1) == overlap


def test_worlds_stepping_on_threads_equal_worlds_stepping_in_turn(room) -> None:
    """Two worlds sharing one (lock-free) reproject generator, stepped at once on two threads, end with the frames and
    memory they have when stepped one after the other."""
    from worldweave.bridge.eval.trajectories import closed_loop
    from worldweave.bridge.generators.reproject import ReprojectGenerator
    from worldweave.bridge.world import Seed, World

    intrinsics = Intrinsics.from_fov(96, 72, fov_x_deg=75.0)
    loop = list(closed_loop(room, 12).poses)
    walks = [loop, loop[::-1]]  # the second world walks the loop backwards
    generator = share_generator(ReprojectGenerator())

    def run(walk: list[Pose]) -> list[np.ndarray]:
        world = World(Seed([room.render(walk[0], intrinsics)]), generator=generator)
        frames = [world.step([pose]).frames[0] for pose in walk[1:]]
        return [np.concatenate([f.rgb.reshape(-1).astype(np.float32), f.depth.reshape(-1)]) for f in frames] + [
            np.array([world.version, len(world.memory.voxel_map), len(world.memory.anchors)], np.float32)]

    in_turn = [run(walk) for walk in walks]
    with ThreadPoolExecutor(2) as pool:
        at_once = list(pool.map(run, walks))
    for expected, got in zip(in_turn, at_once):
        assert all(np.array_equal(e, g) for e, g in zip(expected, got))


@pytest.mark.parametrize("module_name", STEP_KERNEL_MODULES)
def test_step_path_kernels_release_the_gil(module_name: str) -> None:
    module = importlib.import_module(module_name)
    kernels = {name: value for name, value in vars(module).items()
               if isinstance(value, numba.core.registry.CPUDispatcher) and value.__module__ == module_name}
    assert kernels, f"{module_name} has no numba kernels: update STEP_KERNEL_MODULES"
    holding = sorted(name for name, kernel in kernels.items() if not kernel.targetoptions.get("nogil"))
    assert not holding, f"{module_name}: kernels without nogil=True hold the GIL: {holding}"
