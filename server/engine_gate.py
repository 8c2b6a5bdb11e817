"""How many clients' calls the engine runs at once (``EngineGate``): between one and all of its threads, the count at
which calls are served fastest for the time each takes, measured as the work comes.

A thread beyond the first adds throughput only where the work releases the GIL. A large frame's numba kernels do
(on 2 cores at 320x240, 2 threads serve about 1.5x the calls of 1); a small frame's Python between its kernels does
not, and there a second call running beside the first only slows both (on 2 cores at 128x96 each call runs 2-2.7x
longer, for 0-40% more calls per second: ``benchmarks/bench_soak.py``).

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
long), and the limit moves from one to two only where they serve at least 1.55x. Until the first exploration ends the limit is all the threads (the server without the gate).
The sample that straddles a change of limit is dropped.

A call that runs longer than ``STRAGGLER_FACTOR`` times the mean duration stops counting against the limit (it keeps
its thread): one long query does not hold up every other world. The server's own work (saves) does not pass the
gate. Not adaptive (``worldweave serve --fixed-concurrency``), the limit stays at the threads.

Runs on the event loop: ``acquire`` before a call's work goes to a thread, ``release`` when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

logger = logging.getLogger(__name__)

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
STRAGGLER_FACTOR = 4.0
"""A call running longer than this many times the mean call duration stops counting against the limit."""
DURATION_SMOOTHING = 0.1
"""Weight of the newest call in the moving average of a call's duration (for stragglers)."""
FIRST_DURATION_S = 0.05
"""The mean call duration assumed before any call has been timed, seconds."""


class Place:
    """One call's place under the gate's limit, from ``EngineGate.acquire`` to ``EngineGate.release``."""

    __slots__ = ("taken_s", "counted", "straggler")

    def __init__(self, taken_s: float) -> None:
        self.taken_s = taken_s
        """The gate's clock when the place was taken, seconds."""
        self.counted = True
        """Whether it still counts against the limit (a straggler stops counting)."""
        self.straggler: asyncio.TimerHandle | None = None


class EngineGate:
    """The adaptive limit on clients' calls running at once, between 1 and ``threads`` (see the module);
    ``clock``: seconds, monotonic (``time.monotonic``; a test's own clock)."""

    def __init__(self, threads: int, adaptive: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self.threads = threads
        self.adaptive = adaptive and threads > 1
        self._clock = clock
        self.limit = threads
        """The level the measurements chose (``threads`` until the first exploration has ended)."""
        self._counted = 0
        """Places held that count against the limit."""
        self._waiters: deque[asyncio.Future[Place]] = deque()
        self._since_s = clock()
        """When the count of places last changed (a call's place taken, given back or given up)."""
        self._skip = False
        """Whether the next sample straddles a change of limit (then it is dropped)."""
        self._recent: dict[int, deque[float]] = {level: deque(maxlen=WINDOW) for level in range(1, threads + 1)}
        """Level -> its latest samples, seconds per call served."""
        self._measured_s: dict[int, float] = {}
        """Level -> the clock when an exploration of it last ended."""
        self._duration_s = FIRST_DURATION_S
        """Moving average of a call's duration from place taken to place given back, seconds (for stragglers)."""
        self._exploring: int | None = None
        """The level being explored, or None."""
        self._explore_calls = 0
        """Calls started at the explored level so far."""
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
        return not self._waiters and self._counted < self.running_limit

    def pace_s(self, level: int) -> float | None:
        """The pace measured at ``level``, seconds per call served: the mean of its latest samples (None before
        any)."""
        recent = self._recent.get(level)
        return sum(recent) / len(recent) if recent else None

    def power(self, level: int) -> float:
        """Calls per second over each call's seconds at ``level``: 1 / (level x pace^2); 0 before it is measured."""
        pace_s = self.pace_s(level)
        return 1.0 / (level * pace_s * pace_s) if pace_s else 0.0

    async def acquire(self) -> Place:
        """Wait for a place under the limit (first come, first served), then hold it."""
        if self._counted >= 1:
            self._maybe_explore()
        if self.has_room:
            return self._take()
        future: asyncio.Future[Place] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            return await future
        except asyncio.CancelledError:
            if not future.cancelled():  # handed a place as the cancellation came: pass it on
                self.release(future.result())
            else:
                self._waiters.remove(future)
            raise

    def release(self, place: Place) -> None:
        """Give ``place`` back (its call's work is done) and let the next waiting calls in."""
        if place.straggler is not None:
            place.straggler.cancel()
        now = self._clock()
        self._duration_s += DURATION_SMOOTHING * (now - place.taken_s - self._duration_s)
        if self._waiters and place.counted and self.adaptive:
            self._ended_at(self._counted, now)
        self._uncount(place)

    def _ended_at(self, level: int, now: float) -> None:
        """A call ended at ``level`` while others waited: a sample of its pace; an exploration that has its samples
        ends with a decision."""
        if self._skip or level > self.threads:
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
            logger.info("engine gate: clients' calls now run %d at a time (measured ms per call served, by calls "
                        "at once: %s)", explored, paces)
            self.limit = explored
        self._next_explore_s = now + self._explore_gap_s
        self._fill()

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
        self._fill()

    def _take(self) -> Place:
        place = Place(self._clock())
        self._since_s = place.taken_s
        self._counted += 1
        if self._exploring is not None:
            self._explore_calls += 1
            if self._explore_calls > EXPLORE_MAX_CALLS:  # the calls stopped waiting: no samples to be had
                self._exploring = None
                self._skip = True
                self._next_explore_s = place.taken_s + self._explore_gap_s
        loop = asyncio.get_running_loop()
        place.straggler = loop.call_later(STRAGGLER_FACTOR * self._duration_s, self._uncount, place)
        return place

    def _uncount(self, place: Place) -> None:
        if place.counted:
            self._since_s = self._clock()
            place.counted = False
            self._counted -= 1
            self._fill()

    def _fill(self) -> None:
        """Hand places to waiting calls while the limit has room."""
        while self._waiters and self._counted < self.running_limit:
            self._waiters.popleft().set_result(self._take())
