"""Admission control, fair turns and warm start (issue 17, defect 9), on real servers on loopback.

* A world whose queue is full, and a server whose total queue is full, refuse the next call at once with
  RESOURCE_EXHAUSTED naming the bound and ``retry-after-ms``; the queued calls then complete and the server serves on.
* Calls waiting for one world take fair turns between clients (connections): four clients stepping one world
  each get at least 20% of its steps, and a client with three streams cannot crowd out one with a single stream.
* A fresh process's server compiles the engine's kernels before it reports SERVING: its first raycast and capsule
  check compile nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.base import Condition, GenerationResult
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.proto.errors import RETRY_AFTER_METADATA_KEY
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.server import serve
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.server.scheduling import QueueLimits, WorldLock
from worldweave.sim_clients import conversions
from worldweave.sim_clients.client import WorldClient

PER_WORLD, TOTAL = 3, 4
"""The test server's queue bounds."""
PACE_S = 0.004
"""Extra time each generated chunk takes, seconds, so that a stepped world is always busy."""
WINDOW_S = 1.0
"""How long the fairness tests step, seconds."""
POSES = yaw_poses(8)
RAW = conversions.frame_format("raw")


class PacedGenerator(EchoGenerator):
    """``echo`` that first waits for ``gate`` (set by default), then ``PACE_S`` seconds."""

    name = "paced"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()

    def generate(self, condition: Condition) -> GenerationResult:
        assert self.gate.wait(timeout=20), "the test never opened the gate"
        time.sleep(PACE_S)
        return super().generate(condition)


@pytest.fixture(scope="module")
def generator() -> PacedGenerator:
    return PacedGenerator()


@pytest.fixture(scope="module")
def server(generator: PacedGenerator) -> Iterator[BackgroundServer]:
    config = ServerConfig(queues=QueueLimits(per_world=PER_WORLD, total=TOTAL))
    with BackgroundServer(config=config, generator=generator) as running:
        yield running


@pytest.fixture(scope="module")
def worlds(client: WorldClient) -> list[str]:
    frames, intrinsics = wall_seed(48, 36)
    return [client.create_world(frames, intrinsics, world_id=f"adm{i}").world_id for i in range(3)]


def connection(address: str) -> grpc.Channel:
    """A channel with a connection of its own (no subchannel shared with other channels): a client of its own."""
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


class Stepper:
    """One persistent Step stream of ``stub`` on ``world_id``: ``step(i)`` steps at pose ``i % len(POSES)``."""

    def __init__(self, stub: pb_grpc.WorldServiceStub, world_id: str) -> None:
        self.world_id = world_id
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._responses = stub.Step(iter(self._requests.get, None))

    def step(self, i: int) -> pb.StepResponse:
        self._requests.put(conversions.step_request(self.world_id, POSES[i % len(POSES)], RAW))
        return next(self._responses)

    def close(self) -> None:
        self._requests.put(None)
        self._responses.cancel()


def wait_until(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def refusal(call) -> tuple[grpc.RpcError, float]:
    """The error ``call()`` fails with, and how long it took, seconds."""
    started = time.perf_counter()
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value, time.perf_counter() - started


def render(world_id: str) -> pb.RenderRequest:
    return conversions.render_request(world_id, POSES[0], RAW)


def retry_after_ms(error: grpc.RpcError) -> int:
    return int(dict(error.trailing_metadata())[RETRY_AFTER_METADATA_KEY])


def test_full_queues_refuse_at_once_with_a_retry_hint_and_the_server_serves_on(server, generator, worlds, client):
    assert (client.info.limits.max_queued_per_world, client.info.limits.max_queued_total) == (PER_WORLD, TOTAL)
    assert client.info.limits.engine_threads == server.server.config.workers
    registry = server.server.registry
    admission = registry.admission
    a, b, c = (registry.entry(world_id) for world_id in worlds)
    refused_before = admission.refused
    with connection(server.address) as channel:
        stub = pb_grpc.WorldServiceStub(channel)
        steppers = [Stepper(stub, a.world_id), Stepper(stub, b.world_id)]
        pending = []
        generator.gate.clear()
        try:
            # world a: one step holds it (inside the generator), three renders wait: its queue is full
            pending.append(threading.Thread(target=steppers[0].step, args=(0,)))
            pending[-1].start()
            wait_until(lambda: a.lock.locked() and admission.waiting == 0)
            futures = [stub.Render.future(render(a.world_id), timeout=30) for _ in range(PER_WORLD)]
            wait_until(lambda: a.lock.waiting == PER_WORLD)
            error, took_s = refusal(lambda: stub.Render(render(a.world_id), timeout=30))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            ms = retry_after_ms(error)
            assert 10 <= ms <= 10_000
            assert error.details() == (f"world '{a.world_id}' has {PER_WORLD} calls waiting (max_queued_per_world "
                                       f"{PER_WORLD}): retry in {ms} ms")
            assert took_s < 1.0, f"a refusal must not wait: {took_s:.2f} s"
            # world b: its step runs (waiting for the shared generator), a render waits: the server's queue is full
            pending.append(threading.Thread(target=steppers[1].step, args=(1,)))
            pending[-1].start()
            wait_until(lambda: b.lock.locked() and admission.waiting == PER_WORLD)
            futures.append(stub.Render.future(render(b.world_id), timeout=30))
            wait_until(lambda: admission.waiting == TOTAL)
            error, took_s = refusal(lambda: stub.Render(render(c.world_id), timeout=30))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            ms = retry_after_ms(error)
            assert error.details() == f"the server has {TOTAL} calls waiting (max_queued_total {TOTAL}): retry in {ms} ms"
            assert took_s < 1.0, f"a refusal must not wait: {took_s:.2f} s"
        finally:
            generator.gate.set()
        for thread in pending:
            thread.join(timeout=30)
        assert all(len(future.result().frames) == 1 for future in futures)
        for stepper in steppers:
            assert stepper.step(2).last_in_request
            stepper.close()
        assert len(stub.Render(render(c.world_id), timeout=30).frames) == 1
    assert admission.refused - refused_before == 2
    assert admission.waiting == 0 and not a.lock.locked()


def shares(address: str, world_id: str, streams_per_client: list[int]) -> list[float]:
    """Each client's share of the steps of ``world_id`` over ``WINDOW_S``; client i steps on
    ``streams_per_client[i]`` concurrent streams over one connection of its own."""
    counts = [0] * len(streams_per_client)
    errors: list[BaseException] = []
    start = threading.Barrier(sum(streams_per_client))
    lock = threading.Lock()

    def run(client: int, stepper: Stepper) -> None:
        try:
            start.wait(timeout=10)
            deadline = time.monotonic() + WINDOW_S
            i = 0
            while time.monotonic() < deadline:
                stepper.step(i)
                i += 1
                with lock:
                    counts[client] += 1
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    channels = [connection(address) for _ in streams_per_client]
    steppers = [(client, Stepper(pb_grpc.WorldServiceStub(channels[client]), world_id))
                for client, streams in enumerate(streams_per_client) for _ in range(streams)]
    threads = [threading.Thread(target=run, args=pair) for pair in steppers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for _, stepper in steppers:
        stepper.close()
    for channel in channels:
        channel.close()
    assert not errors, errors
    total = sum(counts)
    assert total >= 20, f"too few steps to judge turns: {counts}"
    return [count / total for count in counts]


def test_four_clients_stepping_one_world_each_get_a_fair_share(server, worlds):
    assert min(shares(server.address, worlds[0], [1, 1, 1, 1])) >= 0.20


def test_a_client_with_three_streams_cannot_crowd_out_one_with_a_single_stream(server, worlds):
    greedy, polite = shares(server.address, worlds[1], [3, 1])
    assert polite >= 0.40, f"fair turns give the single stream half the steps, not {polite:.0%}"


def test_world_lock_takes_one_call_per_client_per_round_and_skips_cancelled_waiters():
    async def main() -> list[str]:
        lock = WorldLock()
        await lock.acquire("holder")
        order: list[str] = []

        async def wait(client: str, name: str) -> None:
            await lock.acquire(client)
            order.append(name)
            lock.release()

        tasks = {}
        for client, name in [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1"), ("c", "c1")]:
            tasks[name] = asyncio.create_task(wait(client, name))
            await asyncio.sleep(0)
        assert lock.waiting == 5
        tasks["a2"].cancel()
        await asyncio.sleep(0)
        lock.release()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        assert not lock.locked() and lock.waiting == 0
        return order

    assert asyncio.run(main()) == ["a1", "b1", "c1", "a3"]


def test_serve_flags_state_their_defaults_and_refuse_an_empty_queue(caplog):
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    text = " ".join(parser.format_help().split())
    defaults = QueueLimits()
    assert f"refused at once with RESOURCE_EXHAUSTED and a retry-after-ms hint (default {defaults.per_world})" in text
    assert f"(--workers); more are refused the same way (default {defaults.total})" in text
    assert "--no-warm-up" in text
    args = parser.parse_args(["--port", "0", "--max-queued-total", "0"])
    assert serve.run(args) == 2
    assert "QueueLimits.total must be an integer >= 1, got 0" in caplog.text


FRESH_PROCESS = """
import json, time
import numpy as np
from worldweave.bridge.eval.wall import wall_seed
from worldweave.bridge.warmup import compiled_kernels
from worldweave.server.app import BackgroundServer
from worldweave.sim_clients.client import WorldClient

before = compiled_kernels()
with BackgroundServer() as server:
    serving = compiled_kernels()
    with WorldClient(server.address) as client:
        frames, intrinsics = wall_seed(48, 36)
        world_id = client.create_world(frames, intrinsics).world_id
        origins = np.tile([0.0, 0.0, 1.5], (16, 1))
        directions = np.column_stack([np.ones(16), np.linspace(-0.5, 0.5, 16), np.zeros(16)])
        started = time.perf_counter()
        client.raycast(world_id, origins, directions, 6.0)
        raycast_s = time.perf_counter() - started
        started = time.perf_counter()
        client.check_capsules(world_id, origins, origins + directions, 0.1)
        capsule_s = time.perf_counter() - started
    print(json.dumps({"before": before, "serving": serving, "after": compiled_kernels(),
                      "warmup": server.server.warmup.summary(), "raycast_s": raycast_s, "capsule_s": capsule_s}))
"""
QUERY_KERNELS = (
    "worldweave.bridge.queries.raycast._raycast_kernel",
    "worldweave.bridge.queries.collision._contact_kernel",
    "worldweave.bridge.queries.distance_field._nearest_kernel",
    "worldweave.bridge.queries.occupancy._occupancy_kernel",
)


def test_a_fresh_server_compiles_its_kernels_before_serving():
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for name in QUERY_KERNELS:
        assert report["before"][name] == 0 and report["serving"][name] >= 1, (name, report["warmup"])
    compiled_after_serving = {name: (report["serving"][name], count) for name, count in report["after"].items()
                              if count != report["serving"].get(name)}
    assert not compiled_after_serving, f"the first calls compiled kernels the warm-up missed: {compiled_after_serving}"
