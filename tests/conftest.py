"""Fixtures shared by the tests: the procedural room; servers on free loopback ports, a client and a gateway to them,
a seeded wall world, and ``worldweave serve`` run as a subprocess.

The tests run with ``--import-mode=importlib``, so test files cannot import each other: what they share lives here.
A module that needs another server (a config, another generator) defines its own ``server`` fixture; ``client``,
``gateway`` and ``world_id`` then connect to that one. The engine, server and SDK are imported inside the fixtures,
so a test file that uses none of them does not load torch and grpc for them.
"""

from __future__ import annotations

import contextlib
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from worldweave.bridge.eval.scenes import Scene
    from worldweave.server.app import BackgroundServer
    from worldweave.sim_clients.client import WorldClient
    from worldweave.sim_clients.gateway.server import BackgroundGateway

WALL_WIDTH, WALL_HEIGHT = 64, 48
"""Image size of the ``world_id`` fixture's seed frame, pixels."""


@pytest.fixture
def noisy_generator() -> type:
    """The echo generator class with fresh random noise in every frame (a diffusion model without a seed): not
    deterministic, so a record log keeps its frames and replay or recovery plays them back instead of re-running it."""
    import numpy as np

    from worldweave.bridge.generators.base import Condition, GenerationResult
    from worldweave.bridge.generators.echo import EchoGenerator

    class NoisyGenerator(EchoGenerator):
        name = "noisy"
        deterministic = False

        def generate(self, condition: Condition) -> GenerationResult:
            echoed = super().generate(condition)
            noise = [np.random.default_rng().integers(0, 40, f.shape, dtype=np.uint8) for f in echoed.frames]
            return GenerationResult(frames=tuple(f + n for f, n in zip(echoed.frames, noise)), depths=echoed.depths,
                                    confidences=echoed.confidences)

    return NoisyGenerator


@pytest.fixture(scope="module")
def room() -> Scene:
    """The procedural ``room`` scene (seed 0): a furnished 7 x 6 x 2.7 m room (Z up) rendered exactly at any pose."""
    from worldweave.bridge.eval.scenes import make_scene

    return make_scene("room")


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    """A real server on a free loopback port with the zero-cost ``echo`` generator, one per test module."""
    from worldweave.bridge.generators.echo import EchoGenerator
    from worldweave.server.app import BackgroundServer

    with BackgroundServer(generator=EchoGenerator()) as running:
        yield running


@pytest.fixture(scope="module")
def default_server() -> Iterator[BackgroundServer]:
    """A real server on a free loopback port as ``worldweave serve`` starts it (default generator, ``continue``)."""
    from worldweave.server.app import BackgroundServer

    with BackgroundServer() as running:
        yield running


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> Iterator[WorldClient]:
    """A ``WorldClient`` of ``server``, shared by the module's tests."""
    from worldweave.sim_clients.client import WorldClient

    with WorldClient(server.address) as connected:
        yield connected


@pytest.fixture(scope="module")
def gateway(server: BackgroundServer) -> Iterator[BackgroundGateway]:
    """A ZMQ gateway in front of ``server``."""
    from worldweave.sim_clients.gateway.server import BackgroundGateway

    with BackgroundGateway(server.address) as running:
        yield running


@pytest.fixture
def world_id(client: WorldClient) -> Iterator[str]:
    """A fresh world seeded with the wall (``wall_seed(WALL_WIDTH, WALL_HEIGHT)``), deleted after the test."""
    from worldweave.bridge.eval.wall import wall_seed

    frames, intrinsics = wall_seed(WALL_WIDTH, WALL_HEIGHT)
    world = client.worlds.create(frames, intrinsics)
    yield world.world_id
    client.worlds.delete(world.world_id)


SERVE_START_S = 300.0
"""How long ``serve_process`` waits for serve's banner: its warm-up compiles every kernel on a cold kernel cache
(about 90 s on two cores, the first run of an engine version); a banner that never comes fails after this."""


@contextlib.contextmanager
def _serve_process(command: list[str], banner: str, *, startup_s: float = SERVE_START_S) -> Iterator[int]:
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    # A thread drains stderr for as long as serve runs: the banner wait never blocks past its deadline on a line that
    # does not come, and serve never blocks on a full pipe after it.
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + startup_s
        port = None
        while port is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"serve printed no line matching {banner!r} within {startup_s} s") from None
            assert line is not None, f"serve exited early with code {process.wait(timeout=15)}"
            found = re.search(banner, line)
            port = int(found.group(1)) if found else None
        yield port
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=15)
        reader.join(timeout=15)
        process.stderr.close()


@pytest.fixture
def serve_process() -> Callable[..., contextlib.AbstractContextManager[int]]:
    """``worldweave serve`` as users run it, in a subprocess: ``serve_process(command, banner[, startup_s=...])``.

    ``command`` is the whole argv (``[sys.executable, "-m", "worldweave.server.cli", "serve", "--port", "0", ...]``);
    ``banner`` a regular expression for the line serve prints on stderr once it serves, its group 1 the port. The
    context manager yields the port (failing if serve exits or prints no banner within ``startup_s`` seconds, by
    default ``SERVE_START_S``), and on leaving sends SIGTERM and expects a graceful exit, code 0; a process still
    running is killed.
    """
    return _serve_process
