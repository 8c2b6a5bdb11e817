"""How many clients' calls the engine runs at once (``EngineGate``): between one and all of its threads, the count at
which calls are served fastest for the time each takes, measured as the work comes.

A thread beyond the first adds throughput only where the work releases the GIL. A large frame's numba kernels do (on
2 cores at 320x240, 2 threads serve about 1.5x the calls of 1); a small frame's Python between its kernels does not,
and there a second call running beside the first only slows both (on 2 cores at 128x96 each call runs 2-2.7x longer,
for 0-40% more calls per second: ``benchmarks/bench_soak.py``).

So the gate measures, for each level (the number of calls holding a place), the engine's pace there, seconds per
call served: when a call ends at a level while others wait for a place, the time since the count of places last
changed (the previous call's end, or the count reaching the level) is a sample. The time from one call's end to the
next one's start on a thread counts, as it does for the clients. The level of the limit is compared with another in
pairs of adjacent windows, so that a shared machine's drift (its speed can move by 30% within minutes) is the same
for both: now and then (when a call arrives while another runs) the gate runs calls at the other level, the one
explored longest ago, until it has ``WINDOW`` fresh samples there, and compares them with the limit's latest
``WINDOW`` (the first exploration waits for twice ``WINDOW`` samples, past the burst of a load's first calls;
explorations come ``FIRST_EXPLORE_GAP_S`` after one that moved the limit, then twice as far apart each time, up to
``EXPLORE_EVERY_S``). The limit moves only there, and only where that level has at least ``HYSTERESIS`` more power:
calls per second over each call's time (Kleinrock's measure of a queue's operating point). At level L a call is
served every pace_L seconds and takes about L x pace_L, so the power is 1 / (L x pace_L^2): two calls at once match
one where they serve 1.41x its calls per second (each then takes 1.41x as long; where they serve 1.2x, 1.67x as
long), and the limit moves from one to two only where they serve at least 1.55x. Until the first exploration ends
the limit is all the threads (the server without the gate). The sample that straddles a change of limit is dropped.

A call that has run longer than ``STRAGGLER_FACTOR`` times the mean duration when another arrives stops counting
against the limit (it keeps its thread): one long query does not hold up every other world. The server's own work
(saves) does not pass the gate. Not adaptive (the server's default; ``worldweave serve --adaptive-concurrency``
makes it adaptive), the limit stays at the threads.

``EngineGate.submit`` takes a call's work in place of ``Executor.submit``. The engine threads hand the work on among
themselves: a thread whose job ends starts the next one waiting, on itself, so the event loop is not between one
call's end and the next one's start (with it in between, one call at a time served a quarter fewer calls per second
at 64 clients, whose refusals kept the loop busy).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")

WINDOW = 16
"""Samples of a level a decision compares: the limit's latest, against as many fresh ones of the explored level."""
HYSTERESIS = 0.2
"""The limit moves to another level only where that level's power is at least this fraction above its own."""
EXPLORE_EVERY_S = 20.0
"""Most seconds between two explorations of another level (each runs about ``WINDOW`` calls there)."""
FIRST_EXPLORE_GAP_S = 1.0
"""Seconds from an exploration that moved the limit (or the first one) to the next; each one after that which leaves
the limit where it is doubles the gap, up to ``EXPLORE_EVERY_S``."""
EXPLORE_MAX_CALLS = 4 * WINDOW
"""Calls started at the explored level after which an exploration that has not gathered its samples (the calls
stopped waiting) ends without a decision."""
MOVE_LOGGED = "engine gate: clients' calls now run "
"""How the log line of a move of the limit begins (the new limit follows; ``benchmarks/bench_soak.py`` reads it)."""
STRAGGLER_FACTOR = 4.0
"""A call running longer than this many times the mean call duration stops counting against the limit."""
DURATION_SMOOTHING = 0.1
"""Weight of the newest call in the moving average of a call's duration (for stragglers)."""
FIRST_DURATION_S = 0.05
"""The mean call duration assumed before any call has been timed, seconds."""


class Job:
    """One call's work waiting for or holding a place under the gate's limit (``EngineGate.submit``)."""

    __slots__ = ("work", "future", "started_s", "counted")

    def __init__(self, work: Callable[[], object]) -> None:
        self.work = work
        self.future: Future = Future()
        """Its outcome; cancel it while the job waits and the job never runs."""
        self.started_s = 0.0
        """The gate's clock when it took its place, seconds."""
        self.counted = False
        """Whether it holds a place that counts against the limit (a straggler stops counting)."""


class EngineGate:
    """The adaptive limit on clients' calls running at once, between 1 and ``threads`` (see the module);
    ``clock``: seconds, monotonic (``time.monotonic``; a test's own clock). Thread-safe: jobs are handed on between
    the engine threads, without the event loop (a thread whose job ends starts the next one waiting itself)."""

    def __init__(self, threads: int, adaptive: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self.threads = threads
        self.adaptive = adaptive and threads > 1
        self._clock = clock
        self._lock = threading.Lock()
        self.limit = threads
        """The level the measurements chose (``threads`` until the first exploration has ended)."""
        self._counted: set[Job] = set()
        """Jobs holding a place that counts against the limit."""
        self._waiting: deque[Job] = deque()
        self._since_s = clock()
        """When the count of places last changed (a job's place taken, given back or given up)."""
        self._skip = False
        """Whether the next sample straddles a change of limit (then it is dropped)."""
        self._recent: dict[int, deque[float]] = {level: deque(maxlen=WINDOW) for level in range(1, threads + 1)}
        """Level -> its latest samples, seconds per call served."""
        self._measured_s: dict[int, float] = {}
        """Level -> the clock when an exploration of it last ended."""
        self._duration_s = FIRST_DURATION_S
        """Moving average of a job's duration from place taken to place given back, seconds (for stragglers)."""
        self._exploring: int | None = None
        """The level being explored, or None."""
        self._explore_calls = 0
        """Jobs started at the explored level so far."""
        self._explore_gap_s = FIRST_EXPLORE_GAP_S
        self._next_explore_s = 0.0
        """The clock from which the next exploration is due (0: none has ended)."""
        self._samples = 0
        """Samples at the limit's level since the last exploration ended (or since the start)."""

    @property
    def running_limit(self) -> int:
        """Calls that may run at once now: the explored level during an exploration, else ``limit``."""
        return self._exploring if self._exploring is not None else self.limit

    @property
    def has_room(self) -> bool:
        """Whether a call arriving now would run at once."""
        return not self._waiting and len(self._counted) < self.running_limit

    def pace_s(self, level: int) -> float | None:
        """The pace measured at ``level``, seconds per call served: the mean of its latest samples (None before
        any)."""
        recent = self._recent.get(level)
        return sum(recent) / len(recent) if recent else None

    def power(self, level: int) -> float:
        """Calls per second over each call's seconds at ``level``: 1 / (level x pace^2); 0 before it is measured."""
        pace_s = self.pace_s(level)
        return 1.0 / (level * pace_s * pace_s) if pace_s else 0.0

    def submit(self, executor: Executor, work: Callable[[], T]) -> Future:
        """Run ``work()`` on ``executor`` once the limit has room, first come first served; its future (cancel it
        while it waits and it never runs; it fails with RuntimeError when ``executor`` is shut down)."""
        job = Job(work)
        self._start(executor, self.arrive(job))
        return job.future

    def arrive(self, job: Job) -> list[Job]:
        """``job`` arrives: the jobs that start now (it among them where the limit has room), for the caller to
        run. ``submit`` and the engine threads call this and ``end``; a test drives them on its own clock."""
        with self._lock:
            self._waiting.append(job)
            if self._counted:
                self._drop_stragglers()
                self._maybe_explore()
            return self._fill()

    def end(self, job: Job) -> list[Job]:
        """``job`` ran and ended: the jobs that start now, for the caller to run."""
        with self._lock:
            now = self._clock()
            self._duration_s += DURATION_SMOOTHING * (now - job.started_s - self._duration_s)
            if job.counted:
                if self._waiting and self.adaptive:
                    self._ended_at(len(self._counted), now)
                self._uncount(job, now)
            return self._fill()

    def _start(self, executor: Executor, jobs: list[Job]) -> None:
        """Run each of ``jobs`` on a thread of ``executor`` of its own."""
        jobs = deque(jobs)
        while jobs:
            job = jobs.popleft()
            try:
                executor.submit(self._run, executor, job)
            except RuntimeError as error:  # shut down: the job cannot run, and gives its place on
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(error)
                jobs.extend(self.end(job))

    def _run(self, executor: Executor, job: Job | None) -> None:
        """On an engine thread: run ``job``, then the jobs its end starts, the first of them on this thread."""
        while job is not None:
            if job.future.set_running_or_notify_cancel():
                try:
                    job.future.set_result(job.work())
                except BaseException as error:  # the caller gets it from the future
                    job.future.set_exception(error)
            starting = self.end(job)
            job = starting[0] if starting else None
            self._start(executor, starting[1:])

    def _ended_at(self, level: int, now: float) -> None:
        """A call ended at ``level`` while others waited: a sample of its pace; an exploration that has its samples
        ends with a decision."""
        if self._skip:
            self._skip = False
            return
        self._recent[level].append(now - self._since_s)
        if level == self.limit and self._exploring is None:
            self._samples += 1
        if level == self._exploring and len(self._recent[level]) == WINDOW:
            self._decide(level, now)

    def _decide(self, explored: int, now: float) -> None:
        """End the exploration of level ``explored``: the limit moves there where its power is at least
        ``HYSTERESIS`` above the limit's own (see the module)."""
        self._exploring = None
        self._measured_s[explored] = now
        self._skip = True
        self._samples = 0
        self._explore_gap_s = min(2.0 * self._explore_gap_s, EXPLORE_EVERY_S)
        if self.power(explored) > (1.0 + HYSTERESIS) * self.power(self.limit):
            self._explore_gap_s = FIRST_EXPLORE_GAP_S
            paces = ", ".join(f"{level}: {1e3 * pace:.1f}" for level in range(1, self.threads + 1)
                              if (pace := self.pace_s(level)) is not None)
            logger.info(MOVE_LOGGED + "%d at a time (measured ms per call served, by calls at once: %s)", explored,
                        paces)
            self.limit = explored
        self._next_explore_s = now + self._explore_gap_s

    def _maybe_explore(self) -> None:
        """When one is due, start exploring the other level explored longest ago (never first), once the limit's own
        level has its samples."""
        now = self._clock()
        if not self.adaptive or self._exploring is not None or now < self._next_explore_s:
            return
        if self._samples < (2 if self._next_explore_s == 0.0 else 1) * WINDOW:
            return  # the level it runs at is still being measured (the first time, past the first calls' burst)
        others = [level for level in range(1, self.threads + 1) if level != self.limit]
        self._exploring = min(others, key=lambda level: self._measured_s.get(level, -1.0))
        self._recent[self._exploring].clear()
        self._explore_calls = 0
        self._skip = True

    def _fill(self) -> list[Job]:
        """Give places to waiting jobs while the limit has room (the lock held): the jobs that start."""
        starting = []
        while self._waiting and len(self._counted) < self.running_limit:
            job = self._waiting.popleft()
            if job.future.cancelled():  # its call went away while it waited
                continue
            job.started_s = self._since_s = self._clock()
            job.counted = True
            self._counted.add(job)
            starting.append(job)
            if self._exploring is not None:
                self._explore_calls += 1
                if self._explore_calls > EXPLORE_MAX_CALLS:  # the calls stopped waiting: no samples to be had
                    self._exploring = None
                    self._skip = True
                    self._next_explore_s = job.started_s + self._explore_gap_s
        return starting

    def _uncount(self, job: Job, now: float) -> None:
        job.counted = False
        self._counted.discard(job)
        self._since_s = now

    def _drop_stragglers(self) -> None:
        """Jobs running longer than ``STRAGGLER_FACTOR`` times the mean duration stop counting (the lock held)."""
        now = self._clock()
        for job in [job for job in self._counted if now - job.started_s > STRAGGLER_FACTOR * self._duration_s]:
            self._uncount(job, now)
