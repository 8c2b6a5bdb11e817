"""Who runs when: a FIFO lock across threads, the shared generator behind it, and locked work off the event loop.

* Each world has an ``asyncio.Lock`` (FIFO among waiting coroutines): its steps, renders and saves run one at a
  time, in arrival order; different worlds run concurrently on a thread pool.
* All worlds share one generator instance. ``share_generator`` wraps it so that ``generate`` calls from different
  worlds queue in a ``FairLock``: first come, first served. A world holds its own lock while stepping, so it has at
  most one call waiting, and worlds take turns. The depth estimator (for generators without depth) is shared the
  same way by ``share_depth_estimator``, behind its own lock, so one world's depth overlaps another's generation.
* ``run_locked`` runs blocking engine work on the pool under a world's lock. When the calling RPC is cancelled (the
  client went away, or its deadline passed) work that has not started is dropped; work already running cannot be
  interrupted, so the lock is held until it ends, and only then is the cancellation passed on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

import numpy as np

from worldweave.bridge.generators.base import Condition, GenerationResult, Generator
from worldweave.bridge.generators.depth import DepthEstimator, DepthPrediction

T = TypeVar("T")

GENERATOR_CONTRACT = (
    "name", "chunk_multiple", "chunk_offset", "max_frames", "max_width", "max_height", "size_multiple", "returns_depth",
)
"""The class attributes a ``Generator`` declares (``bridge/generators/base.py``), copied onto the shared wrapper."""


class FairLock:
    """A mutual-exclusion lock that threads acquire in arrival order (a ticket lock); a context manager."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._next_ticket = 0
        self._now_serving = 0

    def acquire(self) -> None:
        """Block until every thread that arrived earlier has released the lock, then hold it."""
        with self._condition:
            ticket = self._next_ticket
            self._next_ticket += 1
            while ticket != self._now_serving:
                self._condition.wait()

    def release(self) -> None:
        """Let the next thread in line in."""
        with self._condition:
            self._now_serving += 1
            self._condition.notify_all()

    @property
    def queued(self) -> int:
        """Threads holding or waiting for the lock."""
        with self._condition:
            return self._next_ticket - self._now_serving

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class _SharedGenerator(Generator):
    """Delegates ``generate`` to one generator instance, one call at a time, in arrival order."""

    name = "shared"

    def __init__(self, inner: Generator, lock: FairLock) -> None:
        self.inner = inner
        self.lock = lock

    def generate(self, condition: Condition) -> GenerationResult:
        with self.lock:
            return self.inner.generate(condition)


def share_generator(generator: Generator) -> Generator:
    """A ``Generator`` with the same declared contract as ``generator`` whose calls queue in a ``FairLock``.

    Give the result to every world of a server; the wrapped instance must not be called directly any more.
    """
    contract = {name: getattr(type(generator), name) for name in GENERATOR_CONTRACT}
    cls = type(f"Shared{type(generator).__name__}", (_SharedGenerator,), contract)
    return cls(generator, FairLock())


class SharedDepthEstimator(DepthEstimator):
    """Delegates ``estimate`` to one depth estimator instance, one call at a time, in arrival order."""

    def __init__(self, inner: DepthEstimator, lock: FairLock) -> None:
        self.inner = inner
        self.lock = lock

    def estimate(self, rgb: np.ndarray) -> DepthPrediction:
        with self.lock:
            return self.inner.estimate(rgb)


def share_depth_estimator(estimator: DepthEstimator) -> DepthEstimator:
    """A ``DepthEstimator`` whose calls to ``estimator`` queue in a ``FairLock`` of their own.

    Give the result to every world of a server; the wrapped instance must not be called directly any more.
    """
    return SharedDepthEstimator(estimator, FairLock())


async def run_locked(lock: asyncio.Lock, executor: Executor, work: Callable[[], T]) -> T:
    """Run ``work()`` on ``executor`` while holding ``lock``; see the module docstring for cancellation."""
    async with lock:
        future = executor.submit(work)
        wrapped = asyncio.wrap_future(future)
        try:
            return await asyncio.shield(wrapped)
        except asyncio.CancelledError:
            if not future.cancel():  # already running: keep the world locked until it is done
                while not wrapped.done():
                    try:
                        await asyncio.wait([wrapped])
                    except asyncio.CancelledError:
                        continue
                if not wrapped.cancelled():
                    wrapped.exception()  # the caller is gone: the outcome is dropped, not logged as unretrieved
            raise
