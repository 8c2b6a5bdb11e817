"""Scheduling without a network: the FIFO lock, the shared generator's queue, and locked work under cancellation."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from worldweave.bridge.frames import RenderResult
from worldweave.bridge.generators.base import Condition, GenerationResult, Generator
from worldweave.proto.geometry import Intrinsics, Pose
from worldweave.server.scheduling import (
    GENERATOR_CONTRACT,
    FairLock,
    run_locked,
    share_generator,
)


def wait_until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.001)


def test_fair_lock_serves_threads_in_arrival_order():
    lock = FairLock()
    order: list[int] = []
    lock.acquire()
    threads = []
    for i in range(6):
        thread = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        thread.start()
        wait_until(lambda i=i: lock.queued == i + 2)  # this thread is in line before the next one starts
        threads.append(thread)
    lock.release()
    for thread in threads:
        thread.join()
    assert order == list(range(6)) and lock.queued == 0


class SlowEcho(Generator):
    """Returns the renders as frames after a pause; records how many calls overlap."""

    name = "slow_echo"
    chunk_multiple, chunk_offset, max_frames, max_width, max_height, size_multiple, returns_depth = 4, 1, 9, 64, 48, 8, True

    def __init__(self) -> None:
        self.active = 0
        self.most_active = 0
        self.calls: list[str] = []

    def generate(self, condition: Condition) -> GenerationResult:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        time.sleep(0.01)
        self.calls.append(condition.prompt)
        self.active -= 1
        return GenerationResult(tuple(r.rgb for r in condition.renders), tuple(r.depth for r in condition.renders),
                                confidences=tuple(r.mask.astype(np.float32) for r in condition.renders))


def test_shared_generator_keeps_the_contract_and_runs_one_call_at_a_time():
    inner = SlowEcho()
    shared = share_generator(inner)
    for name in GENERATOR_CONTRACT:
        assert getattr(type(shared), name) == getattr(SlowEcho, name)
    assert type(shared).padded_chunk(2) == 5
    intrinsics = Intrinsics(10.0, 10.0, 3.5, 2.5, 8, 6)
    condition = lambda prompt: Condition((Pose.identity(),), intrinsics, (RenderResult.empty(intrinsics),), prompt=prompt)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: shared.generate(condition(str(i))), range(8)))
    assert inner.most_active == 1 and sorted(inner.calls) == [str(i) for i in range(8)]
    assert all(r.frames[0].shape == (6, 8, 3) for r in results)


def test_run_locked_keeps_the_lock_until_running_work_ends_and_drops_queued_work():
    async def main() -> None:
        lock = asyncio.Lock()
        ran: list[str] = []
        started = threading.Event()
        with ThreadPoolExecutor(2) as pool:

            def slow() -> str:
                started.set()
                time.sleep(0.2)
                ran.append("slow")
                return "slow"

            running = asyncio.create_task(run_locked(lock, pool, slow))
            queued = asyncio.create_task(run_locked(lock, pool, lambda: ran.append("queued")))
            await asyncio.get_running_loop().run_in_executor(None, started.wait)
            running.cancel()
            queued.cancel()
            await asyncio.sleep(0.05)
            assert lock.locked(), "the world must stay locked while its step still runs"
            for task in (running, queued):
                try:
                    await task
                except asyncio.CancelledError:
                    pass
            assert not lock.locked()
            assert ran == ["slow"], "work queued behind a cancelled call must not run"
            assert await run_locked(lock, pool, lambda: 42) == 42

    asyncio.run(main())


def test_run_locked_passes_errors_through():
    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            try:
                await run_locked(asyncio.Lock(), pool, lambda: np.zeros(2)[5])
            except IndexError as error:
                return str(error)
        raise AssertionError("no error")

    assert "out of bounds" in asyncio.run(main())
