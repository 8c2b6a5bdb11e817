"""The engine gate (issue 17, defect 9): how many clients' calls run at once, chosen from measured pace.

* Until its first exploration ends the gate lets every thread run; each exploration compares the limit's latest
  samples with fresh ones of the other level, and the limit moves there only where that level has ``HYSTERESIS``
  more power (calls per second over each call's time).
* Under the limit jobs wait first come, first served, and a cancelled one never runs; on real threads each job's
  outcome (a value or an error) reaches its future, the threads hand jobs on among themselves, and a job that cannot
  start (the executor shut down) gives its place back. A job running far past the mean duration stops counting, so it
  holds up no one.
* On a real server on loopback, work that cannot run two at once (a shared lock, as Python holding the GIL) ends up
  one call at a time, and work that can (a sleep) on both threads; without ``--adaptive-concurrency`` (the default)
  the gate never narrows.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.base import Condition, GenerationResult
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.server import engine_gate
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.server.engine_gate import HYSTERESIS, WINDOW, EngineGate, Job
from worldweave.sim_clients.client import WorldClient


class Clock:
    """A test's own monotonic clock, seconds."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def job() -> Job:
    return Job(lambda: None)


class Engine:
    """Jobs through ``gate`` on a simulated engine that serves one every ``pace_s[level]`` seconds of ``clock`` at
    each level (jobs running at once), with jobs always waiting (one arrives as each ends)."""

    def __init__(self, gate: EngineGate, clock: Clock) -> None:
        self.gate, self.clock = gate, clock
        self.running: deque[Job] = deque()
        self.levels: list[int] = []
        """The level each job ended at."""

    def arrive(self) -> None:
        self.running.extend(self.gate.arrive(job()))

    def serve(self, pace_s: dict[int, float], jobs: int) -> None:
        for _ in range(self.gate.threads + 2 - len(self.running)):
            self.arrive()
        for _ in range(jobs):
            self.clock.now_s += pace_s[len(self.running)]
            self.levels.append(len(self.running))
            self.running.extend(self.gate.end(self.running.popleft()))
            self.arrive()


@pytest.fixture(autouse=True)
def no_stragglers(monkeypatch) -> None:
    """The simulated engine's jobs end by the test's paces; none is to be a straggler when the pace changes."""
    monkeypatch.setattr(engine_gate, "STRAGGLER_FACTOR", 1e6)


def run_engine(pace_s: dict[int, float], jobs: int, adaptive: bool = True) -> tuple[EngineGate, list[int]]:
    """A gate of 2 threads after ``jobs`` jobs on the simulated engine (``Engine``); the levels they ended at."""
    clock = Clock()
    gate = EngineGate(2, adaptive=adaptive, clock=clock)
    engine = Engine(gate, clock)
    engine.serve(pace_s, jobs)
    return gate, engine.levels


def two_at_power(ratio: float) -> dict[int, float]:
    """Paces where two calls at once have ``ratio`` times the power of one (calls per second over each call's time:
    1 / (level x pace^2)); one call at a time is served every 10 ms."""
    return {1: 0.010, 2: 0.010 / (2 * ratio) ** 0.5}


def test_the_limit_is_every_thread_until_each_level_is_measured_then_the_most_powerful():
    slow_two = {1: 0.010, 2: 0.0135}  # two at once each 2.7x longer: 74% of the calls per second
    gate, levels = run_engine(slow_two, WINDOW)
    assert levels == [2] * WINDOW and gate.limit == 2, "level 1 never measured: the gate must not narrow"
    gate, levels = run_engine(slow_two, 2500)  # 25 s
    assert gate.limit == 1 and gate.pace_s(1) == pytest.approx(0.010) and gate.pace_s(2) == pytest.approx(0.0135)
    assert levels[:WINDOW] == [2] * WINDOW and levels.count(1) > 2300  # measured, explored, narrowed
    explorations = sum(a == 1 and b == 2 for a, b in zip(levels, levels[1:]))  # of level 2, from 1
    assert explorations == 4  # 1, 2, 4 and 8 s apart (each leaves the limit as it is, so the next waits twice as long)
    gate, levels = run_engine(two_at_power(2.0), 400)  # 2.83x the calls per second on two threads
    assert gate.limit == 2 and 0 < levels.count(1) < 20  # level 1 explored, not kept
    assert gate.power(2) == pytest.approx(2 * gate.power(1))
    gate, _ = run_engine({1: 0.010, 2: 0.0095}, 400)  # 1.05x the calls/s, each call 1.9x as long: not worth it
    assert gate.limit == 1
    gate, _ = run_engine(two_at_power(1 / (1 + HYSTERESIS / 2)), 400)  # one a little more powerful: not enough
    assert gate.limit == 2


def test_the_limit_follows_the_work_and_a_fixed_gate_never_narrows():
    clock = Clock()
    gate = EngineGate(2, clock=clock)
    engine = Engine(gate, clock)
    engine.serve(two_at_power(2.0), 400)
    assert gate.limit == 2
    engine.serve({1: 0.010, 2: 0.015}, 3000)  # the work changed: two at once serve fewer calls than one
    assert gate.limit == 1
    engine.serve(two_at_power(1 + HYSTERESIS / 2), 3000)  # two a little more powerful: not enough
    assert gate.limit == 1
    engine.serve(two_at_power(2.0), 3000)  # and back: exploration finds level 2 better again
    assert gate.limit == 2
    fixed, levels = run_engine({1: 0.010, 2: 0.015}, 400, adaptive=False)
    assert fixed.limit == 2 and set(levels) == {2} and fixed.pace_s(2) is None


def test_jobs_start_in_arrival_order_under_the_limit_and_a_cancelled_one_never_runs():
    gate = EngineGate(1)
    first, second, third, fourth = job(), job(), job(), job()
    assert gate.arrive(first) == [first] and not gate.has_room
    assert gate.arrive(second) == gate.arrive(third) == gate.arrive(fourth) == []  # one at a time: they wait
    assert third.future.cancel()  # its call went away
    assert gate.end(first) == [second]
    assert gate.end(second) == [fourth]  # the cancelled job is skipped
    assert gate.end(fourth) == [] and gate.has_room


def test_the_engine_threads_hand_jobs_on_and_every_outcome_reaches_its_future():
    gate = EngineGate(2)
    order: list[int] = []
    release = threading.Event()

    def work(i: int) -> int:
        release.wait(10)
        order.append(i)
        if i == 3:
            raise ValueError("job 3 fails")
        return i * i

    with ThreadPoolExecutor(2) as executor:
        futures = [gate.submit(executor, lambda i=i: work(i)) for i in range(6)]
        assert gate._waiting and not gate.has_room  # two run, four wait in the gate, not in the executor's queue
        release.set()
        assert [future.result(10) for future in (*futures[:3], *futures[4:])] == [0, 1, 4, 16, 25]
        with pytest.raises(ValueError, match="job 3 fails"):
            futures[3].result(10)
    assert sorted(order) == list(range(6)) and gate.has_room
    executor_gone = ThreadPoolExecutor(1)
    executor_gone.shutdown()
    narrow = EngineGate(1)
    held = Job(lambda: None)
    narrow.arrive(held)  # the one place is taken: the next two wait
    futures = [narrow.submit(executor_gone, lambda: None) for _ in range(2)]
    narrow._start(executor_gone, narrow.end(held))  # the place passes to the first, which cannot start ...
    for future in futures:  # ... and on to the second: each fails, none is left waiting
        with pytest.raises(RuntimeError):
            future.result(1)
    assert narrow.has_room


def test_a_job_running_far_past_the_mean_stops_counting_against_the_limit(monkeypatch):
    monkeypatch.setattr(engine_gate, "STRAGGLER_FACTOR", 2.0)
    clock = Clock()
    gate = EngineGate(1, clock=clock)
    for _ in range(60):  # jobs of 10 ms
        running = gate.arrive(job())
        clock.now_s += 0.010
        gate.end(running[0])
    long, waiting = job(), job()
    gate.arrive(long)
    clock.now_s += 0.015
    assert gate.arrive(waiting) == []  # 15 ms: not yet twice the mean
    clock.now_s += 0.010
    late = job()
    assert gate.arrive(late) == [waiting]  # 25 ms: ``long`` stops counting, the waiting job starts
    assert gate.end(long) == [] and gate.end(waiting) == [late]  # ending ``long`` frees nothing twice


# ------------------------------------------------------------------------------------------------ on a real server


SERIAL = threading.Lock()


class SerialGenerator(EchoGenerator):
    """``echo`` that first sleeps 100 ms holding one lock all its instances share: work that cannot run two at once
    (as Python holding the GIL), so two calls at once take twice as long and serve no more calls per second."""

    name = "serial"
    deterministic = True

    def generate(self, condition: Condition) -> GenerationResult:
        with SERIAL:
            time.sleep(0.100)
        return super().generate(condition)


class SleepyGenerator(EchoGenerator):
    """``echo`` that first sleeps 60 ms, releasing the GIL: two at once take little longer than one."""

    name = "sleepy"
    deterministic = True

    def generate(self, condition: Condition) -> GenerationResult:
        time.sleep(0.060)
        return super().generate(condition)


def stepping(address: str, worlds: list[str], seconds: float) -> None:
    """One client per world, stepping it as fast as it is answered for ``seconds``."""
    poses = yaw_poses(4)

    def run(world_id: str) -> None:
        with WorldClient(address) as client:
            end = time.monotonic() + seconds
            i = 0
            while time.monotonic() < end:
                client.step(world_id, poses[i % len(poses)], depth=None)
                i += 1

    threads = [threading.Thread(target=run, args=(world_id,)) for world_id in worlds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.fixture
def quick_exploration(monkeypatch) -> Iterator[None]:
    """Levels compared on fewer calls and explored sooner: seconds of test instead of tens."""
    monkeypatch.setattr(engine_gate, "WINDOW", 6)
    monkeypatch.setattr(engine_gate, "FIRST_EXPLORE_GAP_S", 0.5)
    yield


@pytest.mark.parametrize("generator, adaptive, limit", [
    (SerialGenerator, True, 1), (SleepyGenerator, True, 2), (SerialGenerator, False, 2),
], ids=["serial-work-narrows", "parallel-work-keeps-both", "fixed-never-narrows"])
def test_a_server_runs_as_many_calls_at_once_as_are_worth_it(quick_exploration, generator, adaptive, limit):
    config = ServerConfig(workers=2, adaptive_concurrency=adaptive)
    with BackgroundServer(config=config, generator=generator()) as server:
        frames, intrinsics = wall_seed(32, 24)
        with WorldClient(server.address) as client:
            worlds = [client.worlds.create(frames, intrinsics, world_id=f"gate{i}").world_id for i in range(4)]
        stepping(server.address, worlds, 4.0)  # four clients: level 2 measured, level 1 explored, one kept
        gate = server.server.registry.admission.gate
        assert gate.limit == limit, (gate.limit, gate.pace_s(1), gate.pace_s(2))
        assert (gate.pace_s(1) is not None) == adaptive  # level 1 explored: the limit is a decision, not the start
