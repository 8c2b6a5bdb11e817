"""Admission control, fair turns and warm start (issue 17, defect 9), on real servers on loopback.

* A world whose queue is full, and a server whose queue for its engine threads is full, refuse the next call at once
  with RESOURCE_EXHAUSTED naming the bound and ``retry-after-ms``; the queued calls then complete and the server
  serves on. A refused client whose turn has come gets the next room before a newcomer. Turns are spaced at the
  engine's measured pace (the time between calls ending while others wait), not at a call's duration over the threads.
* The SDK (sync and asyncio) retries a refusal after the suggested delay, or with ``retry=None`` raises it with
  ``retry_after_s``; a refusal without a delay (over a size limit) is never retried.
* Calls waiting for one world take fair turns between clients (connections): four clients stepping one world
  each get at least 20% of its steps, and a client with three streams cannot crowd out one with a single stream.
* A fresh process's server compiles the engine's kernels before it reports SERVING: its first raycast and capsule
  check compile nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import json
import queue
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.base import Condition, GenerationResult
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.proto.errors import RETRY_AFTER_METADATA_KEY, LimitExceededError
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.server import scheduling, serve
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.bridge.cores import machine_cores
from worldweave.server.scheduling import QueueLimits, WorldLock
from worldweave.sim_clients import conversions
from worldweave.sim_clients.aio_client import AsyncWorldClient
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.retry import RetryPolicy

PER_WORLD, TOTAL, WORKERS = 3, 2, 2
"""The test server's queue bounds and engine threads."""
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
    # all the threads at once, whatever the engine gate would measure: the tests fill them
    config = ServerConfig(queues=QueueLimits(per_world=PER_WORLD, total=TOTAL), workers=WORKERS,
                          adaptive_concurrency=False)
    with BackgroundServer(config=config, generator=generator) as running:
        yield running


@pytest.fixture(scope="module")
def worlds(client: WorldClient) -> list[str]:
    frames, intrinsics = wall_seed(48, 36)
    return [client.worlds.create(frames, intrinsics, world_id=f"adm{i}").world_id for i in range(5)]


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


@contextmanager
def engine_full(server: BackgroundServer, generator: PacedGenerator, worlds: list[str]) -> Iterator[list[grpc.Future]]:
    """The server's queue full: gated steps on worlds 0 and 1 hold both engine threads, and a render on each of
    worlds 2 and 3 holds its world and waits for a thread (``TOTAL`` calls waiting). Yields those renders'
    futures; on exit the gate opens, and the steps and the renders not cancelled complete."""
    admission = server.server.registry.admission
    wait_until(lambda: admission.turns_held() == 0)  # no turn left by an earlier test's refused client
    with connection(server.address) as channel:
        stub = pb_grpc.WorldServiceStub(channel)
        steppers = [Stepper(stub, worlds[0]), Stepper(stub, worlds[1])]
        steps = [threading.Thread(target=stepper.step, args=(i,)) for i, stepper in enumerate(steppers)]
        generator.gate.clear()
        try:
            for step in steps:
                step.start()
            wait_until(lambda: sum(ticket.started_s is not None for ticket in admission._admitted) == WORKERS)
            futures = [stub.Render.future(render(world_id), timeout=30) for world_id in worlds[2:4]]
            wait_until(lambda: admission.waiting_for_threads == TOTAL)
            yield futures
        finally:
            generator.gate.set()
            for step in steps:
                step.join(timeout=30)
        for future in futures:
            assert future.cancelled() or len(future.result().frames) == 1
        wait_until(lambda: admission.turns_held() == 0)  # clients refused inside the block come back first
        for stepper in steppers:
            assert stepper.step(2).last_in_request
            stepper.close()
    wait_until(lambda: admission.waiting == 0)


def test_full_queues_refuse_at_once_with_a_retry_hint_and_the_server_serves_on(server, generator, worlds, client):
    assert (client.info.limits.max_queued_per_world, client.info.limits.max_queued_total) == (PER_WORLD, TOTAL)
    assert client.info.limits.engine_threads == server.server.config.workers == WORKERS
    registry = server.server.registry
    admission = registry.admission
    a = registry.entry(worlds[0])
    refused_before = admission.refused
    with connection(server.address) as channel:
        stub = pb_grpc.WorldServiceStub(channel)
        with engine_full(server, generator, worlds):
            # world a: its step holds it (inside the generator); PER_WORLD renders wait for it: its queue is full
            waiting_for_a = [stub.Render.future(render(a.world_id), timeout=30) for _ in range(PER_WORLD)]
            wait_until(lambda: a.lock.waiting == PER_WORLD)
            assert admission.waiting_for_threads == TOTAL  # calls waiting behind their own world count per world only
            error, took_s = refusal(lambda: stub.Render(render(a.world_id), timeout=30))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            ms = retry_after_ms(error)
            assert 10 <= ms <= 10_000
            assert error.details() == (f"world '{a.world_id}' has {PER_WORLD} calls waiting (max_queued_per_world "
                                       f"{PER_WORLD}): retry in {ms} ms")
            assert took_s < 1.0, f"a refusal must not wait: {took_s:.2f} s"
            # world e is free, but TOTAL calls wait for the engine threads: the server's queue is full
            error, took_s = refusal(lambda: stub.Render(render(worlds[4]), timeout=30))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            ms = retry_after_ms(error)
            assert error.details() == (f"the server has {TOTAL} calls waiting for its {WORKERS} engine threads "
                                       f"(max_queued_total {TOTAL}): retry in {ms} ms")
            assert took_s < 1.0, f"a refusal must not wait: {took_s:.2f} s"
        assert all(len(future.result().frames) == 1 for future in waiting_for_a)
        time.sleep(ms / 1000)  # back at its turn, as the hint said: admitted
        assert len(stub.Render(render(worlds[4]), timeout=30).frames) == 1
    assert admission.refused - refused_before == 2
    assert admission.waiting == 0 and not a.lock.locked()


def test_a_refusal_leaves_no_reference_cycles_behind(server, generator, worlds):
    """A refused call ends with its status set, not by raising through grpc (``context.abort``): that exception's
    traceback held the server's frames in reference cycles with the error it answered, about 80 objects per refusal
    that only the cyclic garbage collector freed, in collections that held the GIL for 10-200 ms under load."""
    with connection(server.address) as channel:
        stub = pb_grpc.WorldServiceStub(channel)
        with engine_full(server, generator, worlds):
            gc.collect()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                for i in range(3):
                    error, _ = refusal(lambda: stub.Render(render(worlds[4]), timeout=30))
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after_ms(error) >= 10
                    stepper = Stepper(stub, worlds[4])
                    error, _ = refusal(lambda: stepper.step(i))
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after_ms(error) >= 10
                    stepper.close()
                gc.collect()
                server_dir = Path(serve.__file__).parent
                cycles = sorted({frame.f_code.co_qualname for frame in gc.garbage if isinstance(frame, types.FrameType)
                                 and Path(frame.f_code.co_filename).parent == server_dir})
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
    assert cycles == []


def test_a_refused_client_whose_turn_has_come_goes_before_a_newcomer(server, generator, worlds):
    admission = server.server.registry.admission
    with connection(server.address) as first, connection(server.address) as newcomer:
        refused = pb_grpc.WorldServiceStub(first)
        with engine_full(server, generator, worlds) as waiting:
            error, _ = refusal(lambda: refused.Render(render(worlds[4]), timeout=30))
            time.sleep(retry_after_ms(error) / 1000)  # its turn has come, but the queue is still full
            error, _ = refusal(lambda: refused.Render(render(worlds[4]), timeout=30))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after_ms(error) < 1000
            time.sleep(retry_after_ms(error) / 1000)
            waiting[1].cancel()  # room for one call
            wait_until(lambda: admission.waiting_for_threads == TOTAL - 1)
            error, _ = refusal(lambda: pb_grpc.WorldServiceStub(newcomer).Render(render(worlds[4]), timeout=30))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "and 1 refused clients whose turn comes first" in error.details()
            newcomer_retry_ms = retry_after_ms(error)
            admitted = refused.Render.future(render(worlds[4]), timeout=30)
            wait_until(lambda: admission.waiting_for_threads == TOTAL)
        assert len(admitted.result().frames) == 1
        time.sleep(newcomer_retry_ms / 1000)  # the newcomer takes its own turn
        assert len(pb_grpc.WorldServiceStub(newcomer).Render(render(worlds[4]), timeout=30).frames) == 1


def test_the_sdk_retries_a_refusal_after_the_suggested_delay_or_raises_it_with_the_delay(server, generator, worlds):
    admission = server.server.registry.admission

    async def refused_then_retried() -> tuple[LimitExceededError, int]:
        async with await AsyncWorldClient.connect(server.address, retry=None) as client:
            with pytest.raises(LimitExceededError) as caught:
                await client.render(worlds[4], POSES[0])
            client.options.retry = RetryPolicy()
            return caught.value, len(await client.render(worlds[4], POSES[0]))

    pool = ThreadPoolExecutor(2)
    with WorldClient(server.address, retry=None) as client:
        with engine_full(server, generator, worlds):
            refused_before = admission.refused
            refusal = pytest.raises(LimitExceededError, client.render, worlds[4], POSES[0]).value
            client.options.retry = RetryPolicy()
            with pytest.raises(LimitExceededError) as caught:  # a refusal without a delay is not retried
                client.render(worlds[4], np.stack([POSES[0]] * 65))
            assert caught.value.retry_after_s is None and "max_poses_per_call" in str(caught.value)
            answers = [pool.submit(client.render, worlds[4], POSES[0]), pool.submit(asyncio.run, refused_then_retried())]
            wait_until(lambda: admission.refused >= refused_before + 4)  # both refused, then refused again at a turn
            assert not any(answer.done() for answer in answers)  # waiting for their next turn
        # the gate opened as engine_full ended: the retries were admitted
        assert len(answers[0].result(timeout=30)) == 1
        async_refusal, async_frames = answers[1].result(timeout=30)
        assert async_frames == 1
        for error in (refusal, async_refusal):
            assert 0.01 <= error.retry_after_s <= 10 and "max_queued_total" in str(error)
        assert len(client.step(worlds[4], POSES[1])) == 1
    pool.shutdown()


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


@pytest.fixture
def no_turns_held(server: BackgroundServer) -> None:
    """No turn left by an earlier test's refused client (its turn would be kept for it, and these steppers do not
    retry a refusal)."""
    wait_until(lambda: server.server.registry.admission.turns_held() == 0)


@pytest.mark.usefixtures("no_turns_held")
def test_four_clients_stepping_one_world_each_get_a_fair_share(server, worlds):
    assert min(shares(server.address, worlds[0], [1, 1, 1, 1])) >= 0.20


@pytest.mark.usefixtures("no_turns_held")
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


class _Metadata:
    """The one method of a servicer context that ``Admission`` uses on a refusal."""

    def set_trailing_metadata(self, metadata: tuple) -> None:
        self.metadata = dict(metadata)


def _admit_as(admission: scheduling.Admission, client: str, context: _Metadata) -> scheduling.Ticket:
    """``admission.admit`` of work on a fresh world for a call of ``client`` (its fairness key), run in a context of
    its own; a refusal raises, its hint in ``context``."""

    def call() -> scheduling.Ticket:
        scheduling._CALL.set(scheduling.Call(client, context))
        return admission.admit(WorldLock(), "w")

    return contextvars.copy_context().run(call)


def _refused_delay_ms(admission: scheduling.Admission, client: str = "ipv4:127.0.0.1:1") -> int:
    """The delay ``client``'s call is told to wait when ``admission`` refuses it (it must refuse it)."""
    context = _Metadata()
    with pytest.raises(LimitExceededError, match="max_queued_total 1"):
        _admit_as(admission, client, context)
    return int(context.metadata[RETRY_AFTER_METADATA_KEY])


def test_turns_are_spaced_at_the_engines_measured_pace_not_a_calls_duration_over_the_threads(monkeypatch):
    """Four threads whose calls each run 0.1 s with two running at any time (only two make progress at once: the
    GIL and shared cores) serve 20 calls/s, not 40: a refused client's turn is spaced by the measured 0.05 s."""
    clock = [100.0]
    monkeypatch.setattr(scheduling, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    admission = scheduling.Admission(QueueLimits(per_world=8, total=1), engine_threads=4)
    admission.admit(WorldLock(), "queued")  # the server's own work, admitted and never started: the queue is full
    running: list[scheduling.Ticket] = []
    for _ in range(42):  # a call ends and the next starts every 0.05 s
        if len(running) == 2:
            admission.done(running.pop(0))
        ticket = admission.admit(WorldLock(), "w")
        ticket.start()
        running.append(ticket)
        clock[0] += 0.05
    assert admission.service_s == pytest.approx(0.1, rel=1e-3) and admission.pace_s == pytest.approx(0.05, rel=1e-3)
    # its turn after the one call waiting: 2 slots of TURN_SLACK x 0.05 s (a call's duration over the threads: 55 ms)
    assert abs(_refused_delay_ms(admission) - 2 * scheduling.TURN_SLACK * 50) <= 1


def test_an_engine_that_never_queues_still_measures_its_pace(monkeypatch):
    """Calls that each run alone for 7 ms, 30 ms apart, never wait for a thread: the pace is still measured from
    them (7 ms a call), not left at its first guess, which spaced turns 25 ms apart on two threads and kept the engine
    idle between them (the refused clients came back too late for the queue ever to fill)."""
    clock = [100.0]
    monkeypatch.setattr(scheduling, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    admission = scheduling.Admission(QueueLimits(per_world=8, total=1), engine_threads=2)
    assert admission.pace_s == pytest.approx(scheduling.FIRST_SERVICE_S / 2)
    for _ in range(40):
        ticket = admission.admit(WorldLock(), "w")
        ticket.start()
        clock[0] += 0.007
        admission.done(ticket)
        clock[0] += 0.030
    assert admission.pace_s == pytest.approx(0.007, rel=1e-3)
    admission.admit(WorldLock(), "queued")  # fills the queue
    assert abs(_refused_delay_ms(admission) - 2 * scheduling.TURN_SLACK * 7) <= 1


def test_an_idle_engine_thread_takes_a_newcomer_while_the_clients_whose_turns_are_due_are_late(monkeypatch):
    """Refused clients come back late (their own wait for a core, the network): the newcomer's call would not delay
    them, so it is not refused while a thread idles with no call waiting; with a call waiting, the turns go first."""
    clock = [100.0]
    monkeypatch.setattr(scheduling, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    admission = scheduling.Admission(QueueLimits(per_world=8, total=1), engine_threads=2)
    queued = admission.admit(WorldLock(), "queued")  # the server's own work waits for a thread: the queue is full
    _refused_delay_ms(admission)  # client 1 gets a turn
    clock[0] += 0.2  # its turn (55 ms on) is due, and it is late (a turn is kept 0.5 s past its time)
    admission.done(queued)  # nothing runs or waits now
    newcomer, context = "ipv4:127.0.0.1:2", _Metadata()
    ticket = _admit_as(admission, newcomer, context)
    assert admission.waiting_for_threads == 1 and admission.turns_held() == 1  # admitted; client 1 keeps its turn
    ticket.start()  # one thread busy, the other idle, and no call waiting
    admission.done(_admit_as(admission, newcomer, context))
    admission.admit(WorldLock(), "queued")  # a call waits for a thread: client 1's due turn comes first
    with pytest.raises(LimitExceededError, match="1 refused clients whose turn comes first"):
        _admit_as(admission, newcomer, context)


def test_a_client_back_at_its_turn_to_a_full_queue_takes_the_first_slot_no_other_turn_holds(monkeypatch):
    """Refused clients get turns a slot apart. One whose turn came while the queue was still full goes to the first
    free slot of the line, not a slot on from now on top of turns already given: those brought several clients
    back into a queue with room for one at once, so each was refused again (3 times per admitted call at 64
    clients in the soak), and the refusals took the engine's time."""
    clock = [100.0]
    monkeypatch.setattr(scheduling, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    admission = scheduling.Admission(QueueLimits(per_world=8, total=1), engine_threads=1)
    admission.admit(WorldLock(), "queued")  # the server's own work waits for the thread: the queue is full
    slot_ms = scheduling.TURN_SLACK * scheduling.FIRST_SERVICE_S * 1000
    clients = [f"ipv4:127.0.0.1:{port}" for port in range(1, 5)]
    delays = [_refused_delay_ms(admission, client) for client in clients]
    assert delays == pytest.approx([2 * slot_ms, 3 * slot_ms, 4 * slot_ms, 5 * slot_ms], abs=1)
    clock[0] += delays[0] / 1000  # the first client's turn: the queue is still full
    again_ms = _refused_delay_ms(admission, clients[0])
    assert again_ms == pytest.approx(delays[-1] - delays[0] + slot_ms, abs=1)  # after the last turn given


def test_serve_flags_state_their_defaults_and_refuse_an_empty_queue(caplog):
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    text = " ".join(parser.format_help().split())
    defaults = QueueLimits()
    assert machine_cores() == ServerConfig().workers == parser.parse_args([]).workers
    assert defaults.total == machine_cores()
    assert f"refused at once with RESOURCE_EXHAUSTED and a retry-after-ms hint (default {defaults.per_world})" in text
    assert ("threads for engine work (default: one per core this process may use, at most its container's CPU limit: "
            f"{machine_cores()})") in text
    assert "(default: as many as --workers, so admitted calls wait about one call's duration)" in text
    assert "--no-warm-up" in text
    assert serve.run(parser.parse_args(["--port", "0", "--max-queued-total", "0"])) == 2
    assert "QueueLimits.total must be an integer >= 1, got 0" in caplog.text
    assert serve.run(parser.parse_args(["--port", "0", "--workers", "0"])) == 2
    assert "--workers must be at least 1, got 0" in caplog.text


FRESH_PROCESS = """
import json, time
import numpy as np
from worldweave.bridge.eval.wall import wall_seed
from worldweave.bridge.warmup import compiled_kernels
from worldweave.server.app import BackgroundServer
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.sensors import lidar_spec, scan_lidar

before = compiled_kernels()
with BackgroundServer() as server:
    serving = compiled_kernels()
    with WorldClient(server.address) as client:
        frames, intrinsics = wall_seed(48, 36)
        world_id = client.worlds.create(frames, intrinsics).world_id
        origins = np.tile([0.0, 0.0, 1.5], (16, 1))
        directions = np.column_stack([np.ones(16), np.linspace(-0.5, 0.5, 16), np.zeros(16)])
        started = time.perf_counter()
        client.queries.raycast(world_id, origins, directions, 6.0)
        raycast_s = time.perf_counter() - started
        started = time.perf_counter()
        client.queries.check_capsules(world_id, origins, origins + directions, 0.1)
        capsule_s = time.perf_counter() - started
        sensor = np.eye(4)
        sensor[2, 3] = 1.5
        scan_lidar(client, world_id, sensor, lidar_spec(channels=8, range_m=6.0, points_per_scan=256))
    print(json.dumps({"before": before, "serving": serving, "after": compiled_kernels(),
                      "warmup": server.server.warmup.summary(), "raycast_s": raycast_s, "capsule_s": capsule_s}))
"""
QUERY_KERNELS = (
    "worldweave.bridge.queries.raycast._raycast_kernel",
    "worldweave.bridge.queries.collision._contact_kernel",
    "worldweave.bridge.queries.distance_field._nearest_kernel",
    "worldweave.bridge.queries.occupancy._occupancy_kernel",
    "worldweave.bridge.queries.first_return._first_return_kernel",
)


def test_a_fresh_server_compiles_its_kernels_before_serving():
    # On a cold kernel cache (the first run of a new engine version) the warm-up compiles every kernel: ~90 s on 2 cores.
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for name in QUERY_KERNELS:
        assert report["before"][name] == 0 and report["serving"][name] >= 1, (name, report["warmup"])
    split = [f"worldweave.bridge.{name}" for name in (
        "generators.kept_depth._fit_rows", "memory.voxel_index._accumulate_rows", "memory.voxel_index._pixel_probes",
        "memory.voxel_index._fold_rows", "render._blend_rows", "render._resolve_rows",
        "memory.weave._weave_heuristic_kernel",
        "memory.anchors._block_sums", "memory.anchors._block_points", "memory.anchors._sketch_cells",
        "generators.continuation._meet_holes",
        "generators.continuation._nearest_passes",
        "generators.continuation._support_levels", "generators.continuation._upsample_into",
        "generators.continuation._merged", "generators.continuation._key_bounds", "generators.continuation._mark_cells",
        "generators.continuation._holes_by_plane", "generators.continuation._points_on_rays",
        "queries.occupancy._lowest_in_squares", "generators.reproject._small_pyramid",
        "memory.key_order._key_runs", "memory.key_order._pack_rows", "memory.key_order._unpack_payload",
        "memory.key_order._gathered", "memory.key_order._run_bits", "memory.key_order._compact_rows",
        "memory.key_order._scatter_rows",
        "memory.key_order._sort_buckets", "memory.key_order._keys_of",
        "generators.reproject._pull_rows", "generators.reproject._push_rows")]
    if machine_cores() > 1:
        split += [f"worldweave.bridge.{name}" for name in (
            "generators.kept_depth._fit_bands", "memory.voxel_index._accumulate_threads",
            "memory.voxel_index._pixel_probes_threads", "memory.voxel_index._find_rows_threads",
            "memory.voxel_index._fold_bands", "render._blend_bands",
            "render._resolve_bands", "memory.weave._weave_heuristic_bands", "memory.anchors._block_sums_bands",
            "generators.reproject._pull_bands", "generators.reproject._push_bands",
            "generators.continuation._meet_hole_bands", "generators.continuation._nearest_pass_bands",
            "memory.key_order._sort_bucket_bands", "memory.key_order._pack_bands", "memory.key_order._compact_bands",
            "memory.key_order._scatter_bands")]
    for name in split:  # a step's kernels, one-thread and split (worlds stepping at once, a world stepping alone)
        assert report["serving"][name] >= 1, (name, report["warmup"])
    compiled_after_serving = {name: (report["serving"][name], count) for name, count in report["after"].items()
                              if count != report["serving"].get(name)}
    assert not compiled_after_serving, f"the first calls compiled kernels the warm-up missed: {compiled_after_serving}"
