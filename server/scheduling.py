"""Who runs when: admission control and fair turns per world, a FIFO lock across threads, the shared generator
behind it, and locked work off the event loop.

* Each world has a ``WorldLock``: its steps, renders and saves run one at a time; waiting calls take fair turns
  between clients (one call per client per round, arrival order within a client), so a client with many calls in
  flight cannot crowd out one with a single call; different worlds run concurrently on a thread pool.
* Admission control (``Admission``): a bounded queue per world and one in front of the engine threads
  (``QueueLimits``, stated in the handshake; sized from the machine's cores by default). A client's call that would
  wait beyond either bound is refused at once with RESOURCE_EXHAUSTED, a message naming the bound and a suggested
  delay, and the trailing metadata ``retry-after-ms`` (``RETRY_AFTER_METADATA_KEY``), instead of waiting without
  limit; the delay is the client's own turn, kept for it, so refused clients come back in turn at the rate the
  engine serves them. The server's own work (autosave) always gets in. ``CallInterceptor`` tells both who the
  client of a call is (its peer address: one connection, one client).
* All worlds share one generator instance. ``share_generator`` wraps it so that ``generate`` calls from different
  worlds queue in a ``FairLock``: first come, first served. A world holds its own lock while stepping, so it has at
  most one call waiting, and worlds take turns. A deterministic generator (``Generator.deterministic``: a function of
  its condition, keeping no state of its own) is called without the lock, so different worlds generate at once, each
  on its engine thread (the embedded generators' kernels release the GIL). The depth estimator (for generators
  without depth) is shared the same way by ``share_depth_estimator``, behind its own lock, so one world's depth
  overlaps another's generation.
* ``run_locked`` runs blocking engine work on the pool under a world's lock. When the calling RPC is cancelled (the
  client went away, its deadline passed, or the server is stopping) work that has not started is dropped; work
  already running is told to stop, and the lock is held until it ends, and only then is the cancellation passed on.
  Long work (the spatial queries, ``world_state``) runs in chunks and calls ``checkpoint()`` between them, so it
  stops within one chunk and no call holds a world's lock much past its deadline; other work runs to its end.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import inspect
import itertools
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import numpy as np

from worldweave.bridge.cores import holding_core, machine_cores
from worldweave.bridge.generators.base import Condition, GenerationResult, Generator
from worldweave.bridge.generators.depth import DepthEstimator, DepthPrediction
from worldweave.proto.errors import RETRY_AFTER_METADATA_KEY, InvalidInputError, LimitExceededError, WorldweaveError
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server.engine_gate import EngineGate

T = TypeVar("T")

GENERATOR_CONTRACT = (
    "name", "chunk_multiple", "chunk_offset", "max_frames", "max_width", "max_height", "size_multiple", "returns_depth",
    "deterministic",
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
    """Delegates ``generate`` to one generator instance: one call at a time in arrival order (``lock``), or, with no
    lock, as the calls come (a deterministic generator, see ``share_generator``)."""

    name = "shared"

    def __init__(self, inner: Generator, lock: FairLock | None) -> None:
        self.inner = inner
        self.lock = lock

    def generate(self, condition: Condition) -> GenerationResult:
        if self.lock is None:
            return self.inner.generate(condition)
        with self.lock:
            return self.inner.generate(condition)

    def state_arrays(self, value: object) -> dict[str, np.ndarray]:
        return self.inner.state_arrays(value)

    def state_from_arrays(self, arrays: dict[str, np.ndarray]) -> object:
        return self.inner.state_from_arrays(arrays)


def share_generator(generator: Generator) -> Generator:
    """A ``Generator`` with the same declared contract as ``generator`` whose calls queue in a ``FairLock``, unless
    ``generator`` is deterministic (``Generator.deterministic``: its output a function of its condition alone, with no
    state kept between calls), whose calls then run concurrently, one per engine thread.

    Give the result to every world of a server; the wrapped instance must not be called directly any more.
    """
    contract = {name: getattr(type(generator), name) for name in GENERATOR_CONTRACT}
    cls = type(f"Shared{type(generator).__name__}", (_SharedGenerator,), contract)
    return cls(generator, None if type(generator).deterministic else FairLock())


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


_running = threading.local()
"""``stop``: the ``threading.Event`` of the locked work this pool thread runs (``run_locked``), set when its call
is cancelled."""


def checkpoint() -> None:
    """Between two chunks of long locked work: raise (CANCELLED) when the call that asked for the work was cancelled
    meanwhile, so the work ends and the world's lock is released. Does nothing outside ``run_locked``."""
    stop: threading.Event | None = getattr(_running, "stop", None)
    if stop is not None and stop.is_set():
        raise WorldweaveError(
            "stopped between chunks: the call was cancelled (deadline, client gone or server stopping)", code="CANCELLED"
        )


def _stoppable(work: Callable[[], T], stop: threading.Event) -> T:
    """``work()`` on this pool thread, with ``stop`` as what ``checkpoint`` reads, holding a core
    (``bridge.cores``)."""
    _running.stop = stop
    try:
        with holding_core():  # splittable kernels (integrate) take the cores no other engine work holds
            return work()
    finally:
        _running.stop = None


async def run_locked(
    lock: asyncio.Lock | WorldLock, executor: Executor, work: Callable[[], T], gate: EngineGate | None = None
) -> T:
    """Run ``work()`` on ``executor`` while holding ``lock``, through ``gate`` when given (its limit on calls running
    at once); see the module docstring for cancellation."""
    async with lock:
        stop = threading.Event()
        job = functools.partial(_stoppable, work, stop)
        return await _awaited(executor.submit(job) if gate is None else gate.submit(executor, job), stop)


async def _awaited(future: Future[T], stop: threading.Event) -> T:
    """The outcome of ``future`` (work submitted by ``run_locked``): when the awaiting call is cancelled, the work is
    dropped if it has not started, else told to stop (``stop``) and awaited to its end."""
    wrapped = asyncio.wrap_future(future)
    try:
        return await asyncio.shield(wrapped)
    except asyncio.CancelledError:
        stop.set()  # chunked work stops at its next checkpoint()
        if not future.cancel():  # already running: keep the world locked until it is done
            while not wrapped.done():
                try:
                    await asyncio.wait([wrapped])
                except asyncio.CancelledError:
                    continue
            if not wrapped.cancelled():
                wrapped.exception()  # the caller is gone: the outcome is dropped, not logged as unretrieved
        raise


# ------------------------------------------------------------------------------------------------ admission control

WORLD_SERVICE_PREFIX = f"/{pb.DESCRIPTOR.services_by_name['WorldService'].full_name}/"
"""Methods whose calls ``CallInterceptor`` tags with their client (health checks and reflection need no turn)."""
RETRY_MIN_MS, RETRY_MAX_MS = 10, 10_000
"""Bounds of the delay a refusal suggests, milliseconds."""
FIRST_SERVICE_S = 0.05
"""What one piece of locked work is assumed to take before any has been timed, seconds (for retry hints)."""
SERVICE_SMOOTHING = 0.2
"""Weight of the newest duration in the moving average of locked work's duration."""
RESERVATION_GRACE_S = 0.5
"""How long after its time a refused client's turn is kept for it, seconds, plus a quarter of the delay it was given
(a client that does not come back loses its turn; one that comes back later queues anew)."""
TURN_SLACK = 1.1
"""Turns are spaced this much wider than the engine's measured pace (``Admission.pace_s``; for one world, a piece of
locked work's duration): the room left over goes to clients without a turn (those whose call just ended), so a client
back on time finds room even when the pace drifts, and the engine stays busy."""


def default_engine_threads() -> int:
    """The default number of engine threads (``worldweave serve --workers``): one per core the process counts
    (``bridge.cores.machine_cores``: the machine's, at most its container's CPU limit, or a cluster replica's share).
    The step's numba kernels release the GIL and its Python between them does not, so threads beyond the cores add no
    throughput (on 2 cores, 128x96 steps and renders in one process: 266 calls/s on 2 threads, 248 on 4), while every
    call running at once lengthens the others; measured on 2 cores (``benchmarks/bench_soak.py``, docs/limits.md),
    2 threads with 2 queued served 64 clients as many calls per second as 4 with 4 queued at about half the admitted
    p99."""
    return machine_cores()


def default_queued_total(engine_threads: int) -> int:
    """The default ``max_queued_total`` for ``engine_threads`` threads: as many as the threads, so an admitted call
    waits about one call's duration for a thread. Measured on 2 cores (``benchmarks/bench_soak.py``, docs/limits.md):
    a longer queue adds its length in call durations to every admitted call's latency, a shorter one leaves threads
    idle between turns and refuses most calls."""
    return max(1, engine_threads)


@dataclass(frozen=True)
class QueueLimits:
    """Bounds of the queues in front of the engine (``worldweave serve --max-queued-per-world``,
    ``--max-queued-total``), stated in the handshake (``Limits.max_queued_per_world``, ``max_queued_total``).
    Calls beyond them are refused with RESOURCE_EXHAUSTED and ``retry-after-ms``; running calls do not count.

    The total bound defaults to the number of engine threads (``default_queued_total``), which default to one per
    core (``default_engine_threads``): one round of work waits behind the calls running, so an admitted
    call waits about one call's duration for a thread, however many clients there are, while the threads never run
    dry. Clients beyond that are refused in milliseconds with a turn
    of their own to come back at (``Admission``)."""

    per_world: int = 8
    """Most calls waiting for one world while another call holds it (a world runs one call at a time)."""
    total: int = field(default_factory=lambda: default_queued_total(default_engine_threads()))
    """Most calls waiting server-wide for an engine thread (the server's ``workers``), not counting the calls that
    wait behind another call of their own world (``per_world`` bounds those); default: ``default_queued_total``."""

    def __post_init__(self) -> None:
        for name in ("per_world", "total"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"QueueLimits.{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class Call:
    """The RPC a piece of server code runs for: ``client``, its fairness key (the peer address, e.g.
    ``ipv4:127.0.0.1:51234``: calls over one connection are one client), and its ``context``."""

    client: str
    context: grpc.aio.ServicerContext


_CALL: ContextVar[Call | None] = ContextVar("worldweave_call", default=None)
SERVER_CLIENT = ""
"""The fairness key of the server's own work (autosave, shutdown saves) and of code outside any call."""


def current_client() -> str:
    """The fairness key of the call in progress (``Call.client``); ``SERVER_CLIENT`` outside calls."""
    call = _CALL.get()
    return call.client if call is not None else SERVER_CLIENT


def as_server_work() -> None:
    """Run the rest of the current task as the server's own work, even when a call started it: it queues as
    ``SERVER_CLIENT`` and is never refused (autosave tasks inherit the context of the call that triggered them)."""
    _CALL.set(None)


def with_context(
    handler: grpc.RpcMethodHandler, enter: Callable[[grpc.aio.ServicerContext], object]
) -> grpc.RpcMethodHandler:
    """``handler`` (an aio server's, of any kind) calling ``enter(context)`` as each of its calls begins, inside the
    call's own asyncio task: the place to set a ``ContextVar`` that the call's code then reads."""
    kind = next(name for name in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
                if getattr(handler, name) is not None)
    behavior = getattr(handler, kind)
    if handler.response_streaming:
        async def run(request_or_iterator, context: grpc.aio.ServicerContext):
            enter(context)
            responses = behavior(request_or_iterator, context)
            if inspect.isawaitable(responses):  # a handler that writes its responses with context.write
                await responses
                return
            async for response in responses:
                yield response
    else:
        async def run(request_or_iterator, context: grpc.aio.ServicerContext):
            enter(context)
            return await behavior(request_or_iterator, context)
    return handler._replace(**{kind: run})


class WorldServiceInterceptor(grpc.aio.ServerInterceptor):
    """An interceptor that wraps each ``WorldService`` method's handler (``wrap``), built once per handler; other
    services (health, reflection) pass through."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrap(self, handler: grpc.RpcMethodHandler, rpc: str) -> grpc.RpcMethodHandler:
        """``handler`` of the ``WorldService`` method named ``rpc``, wrapped."""
        raise NotImplementedError

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(WORLD_SERVICE_PREFIX):
            return handler
        original, wrapped = self._wrapped.get(method, (None, None))
        if original is not handler:
            wrapped = self.wrap(handler, method.removeprefix(WORLD_SERVICE_PREFIX))
            self._wrapped[method] = (handler, wrapped)
        return wrapped


class CallInterceptor(WorldServiceInterceptor):
    """Runs each ``WorldService`` call with its ``Call`` (``current_client()``), for ``WorldLock``'s turns and
    ``Admission``'s refusals."""

    def wrap(self, handler: grpc.RpcMethodHandler, rpc: str) -> grpc.RpcMethodHandler:
        return with_context(handler, lambda context: _CALL.set(Call(context.peer(), context)))


class WorldLock:
    """The asyncio lock of one world's work, with fair turns between clients (``current_client()``): start-time
    fair queuing with one unit per call. Each waiting call gets the tag max(tag of the call last given the lock,
    finish tag of its client's previous call) and the smallest tag goes next (arrival order between equal tags), so
    a client with many calls waiting gets one turn per round, like one with a single call, however its calls
    interleave with others' arrivals. The lock passes straight from its holder to the next waiter, so no newcomer
    barges in. ``async with lock:`` acquires as the current call's client."""

    def __init__(self) -> None:
        self._locked = False
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []
        """Heap of waiting calls: (start tag, arrival number, future set when the lock is theirs)."""
        self._finish: dict[str, int] = {}
        """Client -> finish tag of its latest call (clients whose tag the virtual time has passed are dropped)."""
        self._virtual = 0
        """Start tag of the call holding the lock, or of the last one that held it."""
        self._arrivals = itertools.count()

    def locked(self) -> bool:
        return self._locked

    @property
    def waiting(self) -> int:
        """Calls waiting for the lock."""
        return sum(not future.done() for _, _, future in self._queue)

    def _start_tag(self, client: str) -> int:
        start = max(self._virtual, self._finish.get(client, 0))
        self._finish[client] = start + 1
        return start

    async def acquire(self, client: str = SERVER_CLIENT) -> None:
        """Wait for the lock as ``client``'s call, then hold it."""
        start = self._start_tag(client)
        if not self._locked:  # a free lock has no live waiter: release() hands it straight to one
            self._locked = True
            self._virtual = start
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (start, next(self._arrivals), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # handed over as the cancellation came: pass it on
                self.release()
            raise  # a cancelled waiter stays in the heap until release() pops and skips it

    def release(self) -> None:
        """Hand the lock to the waiting call with the smallest tag, or free it."""
        if not self._locked:
            raise RuntimeError("WorldLock.release: the lock is not held")
        while self._queue:
            start, _, future = heapq.heappop(self._queue)
            if not future.done():
                self._virtual = start
                self._finish = {client: tag for client, tag in self._finish.items() if tag > start}
                future.set_result(None)
                return
        self._locked = False

    async def __aenter__(self) -> WorldLock:
        await self.acquire(current_client())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


class EngineMeter:
    """How busy the engine threads are: the calls running now, and the integral over time of that count (running
    call-seconds), kept under a lock because calls start on the engine threads and end on the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._busy_s = 0.0
        """Running call-seconds since the meter was made: the integral of the running count over time."""
        self._at_s = time.monotonic()

    @property
    def running(self) -> int:
        """Calls running now."""
        return self._running

    def _advance(self, now: float) -> None:
        self._busy_s += self._running * (now - self._at_s)
        self._at_s = now

    def start(self) -> tuple[float, float]:
        """A call starts running: (``time.monotonic()`` now, running call-seconds so far)."""
        with self._lock:
            now = time.monotonic()
            self._advance(now)
            self._running += 1
            return now, self._busy_s

    def end(self) -> tuple[float, float]:
        """A running call ended: (``time.monotonic()`` now, running call-seconds so far)."""
        with self._lock:
            now = time.monotonic()
            self._advance(now)
            self._running -= 1
            return now, self._busy_s


class Ticket:
    """One admitted piece of locked work on the world whose lock is ``lock``: ``started_s`` (``time.monotonic()``,
    set on the engine thread by ``start``) is None while it waits for its world or for a thread; ``busy_at_start_s``:
    the ``meter``'s running call-seconds as it started."""

    __slots__ = ("lock", "meter", "gated", "started_s", "busy_at_start_s")

    def __init__(self, lock: WorldLock, meter: EngineMeter, gated: bool) -> None:
        self.lock = lock
        self.meter = meter
        self.gated = gated
        """Whether the work is a client's, run under ``Admission.gate`` (the server's own work is not)."""
        self.started_s: float | None = None
        self.busy_at_start_s = 0.0

    def start(self) -> None:
        """Call on the engine thread as the work begins."""
        self.started_s, self.busy_at_start_s = self.meter.start()


@dataclass
class Reservation:
    """A refused client's turn in one queue: it is admitted first when it comes back from ``at_s`` on."""

    at_s: float
    """``time.monotonic()`` of the turn."""
    expires_s: float
    """``time.monotonic()`` after which the turn is given up (``RESERVATION_GRACE_S``)."""


def _first_gap(earliest_s: float, turns_s: list[float], slot_s: float) -> float:
    """The earliest time from ``earliest_s`` on that is at least a slot ``slot_s`` from every turn in ``turns_s``
    (sorted times), seconds: where one more turn fits in the line without sharing another's slot."""
    at_s = earliest_s
    for turn_s in turns_s:
        if turn_s - at_s >= slot_s:
            break
        if turn_s > at_s - slot_s:
            at_s = turn_s + slot_s
    return at_s


class Admission:
    """Bounded queues in front of the engine: admits a client's locked work (``admit``) or refuses it at once
    (RESOURCE_EXHAUSTED naming the bound, a suggested delay in the message and in ``retry-after-ms``) when its
    world already has ``limits.per_world`` calls waiting, or ``limits.total`` calls already wait for one of the
    ``engine_threads`` threads. Runs on the event loop, but ``Ticket.start``.

    Refused clients are served in turn, not first come first served. A refusal gives the client a turn (``Reservation``)
    in that queue: after the calls waiting and after the turns of clients refused before it, one turn per slot (the
    engine's measured pace ``pace_s``, or for a world the measured duration of a piece of its locked work, widened by
    ``TURN_SLACK``), and the suggested delay is the time to its turn. The pace is measured on every piece of work, as
    its duration over the mean number of calls that ran beside it, itself included (``EngineMeter``): not a call's
    duration over the threads, since threads that contend for the GIL and for cores shared with other work serve
    fewer calls than that ratio says (and turns handed out faster than the engine serves them find the queue full),
    and not only while calls queue, which an engine starved by too wide a pace never does again. A client whose
    turn has come is admitted whenever the queue has room; a client without a turn only where the queue has room beyond
    the turns due within the next slot, so it does not take the place of one coming back on time, unless an engine
    thread idles with no call waiting (one the engine gate, ``engine_gate``, would run a call on at once: the clients
    whose turns are due are late, and a call that starts at once delays none of them: without this, clients late for
    their turns left the engine idle). When the queue is full
    at a client's turn, its next turn is the first slot of the line that no other turn holds, after the other turns
    already due (a slot each): turns never share a slot, so clients come back one per slot (a turn a slot on from now,
    on top of turns already given, brought several clients back at once to a queue with room for one, and refused
    each again: 3 refusals per admitted call at 64 clients in the soak). A client back before its turn (no thread
    idle) keeps it (and is told the rest of the wait), so one that ignores the hint does not push others back; a
    client admitted gives up its turns; a turn not claimed within ``RESERVATION_GRACE_S`` (plus a quarter of the delay)
    is given up. So under overload the retries come back spread at the pace the engine serves them, each client is
    refused about once per admitted call, and an admitted call waits for about one round of work at most. (Checked by a
    discrete-event model of 1, 16 and 64 clients: about 1.1 refusals per admitted call at 64; measured on 2 shared
    cores, ``benchmarks/bench_soak.py``: 0.95 to 1.06.)"""

    def __init__(
        self, limits: QueueLimits | None = None, engine_threads: int | None = None, adaptive_concurrency: bool = False
    ) -> None:
        self.limits = limits if limits is not None else QueueLimits()
        self.engine_threads = engine_threads if engine_threads is not None else default_engine_threads()
        self._admitted: set[Ticket] = set()
        self.service_s = FIRST_SERVICE_S
        """Moving average of how long a piece of locked work runs, seconds."""
        self.pace_s = FIRST_SERVICE_S / self.engine_threads
        """Moving average of a piece of work's duration over the mean number of calls running while it ran (itself
        included), seconds: the engine's measured pace, the time it takes per call with that many at once, whatever
        the threads' contention for the cores and the GIL."""
        self.meter = EngineMeter()
        self.refused = 0
        """Calls refused so far."""
        self._turns: dict[tuple[str, str], Reservation] = {}
        """(world id, or "" for the server's queue; client) -> its turn, while it is kept."""
        self.gate = EngineGate(self.engine_threads, adaptive=adaptive_concurrency)
        """How many clients' calls run at once: all the threads (the default), or with ``adaptive_concurrency``
        between one and all of them, as many as measured to be worth it."""

    @property
    def queued_total(self) -> int:
        """The bound on calls waiting for a thread now: ``limits.total`` in proportion to the share of the threads
        the gate lets run at once now (``EngineGate.running_limit``, at least 1), so an admitted call still waits
        about one round of work, and a level the gate explores gets the calls to keep it busy."""
        return max(1, self.limits.total * self.gate.running_limit // self.engine_threads)

    @property
    def waiting(self) -> int:
        """Admitted calls not yet running: waiting for their world or for an engine thread."""
        return sum(ticket.started_s is None for ticket in self._admitted)

    @property
    def waiting_for_threads(self) -> int:
        """Admitted calls that hold their world's turn and wait for an engine thread (what ``limits.total``
        bounds): the calls not yet running, less those waiting behind another call of their own world."""
        waiting = [ticket for ticket in self._admitted if ticket.started_s is None]
        return len(waiting) - sum(lock.waiting for lock in {ticket.lock for ticket in waiting})

    def turns_held(self) -> int:
        """Refused clients' turns still kept (neither claimed nor given up)."""
        now = time.monotonic()
        self._turns = {key: turn for key, turn in self._turns.items() if turn.expires_s > now}
        return len(self._turns)

    def admit(self, lock: WorldLock, world_id: str) -> Ticket:
        """Admit a piece of work on world ``world_id`` (whose lock is ``lock``), or refuse it (see the class);
        the server's own work is always admitted. Pair with ``done``; run the work under ``gate`` when
        ``Ticket.gated``."""
        call = _CALL.get()
        if call is not None:
            self.turns_held()  # gives up the turns past their grace
            now = time.monotonic()
            if lock.locked():  # the call waits behind its world's calls (then its world's turn waits for a thread)
                scope, waiting, limit = world_id, lock.waiting, self.limits.per_world
                slot_s = TURN_SLACK * self.service_s
                why = f"world {world_id!r} has {waiting} calls waiting (max_queued_per_world {limit})"
            else:  # the call takes its world's turn and waits for a thread
                scope, waiting, limit = "", self.waiting_for_threads, self.queued_total
                slot_s = TURN_SLACK * self.pace_s
                bound = f"max_queued_total {self.limits.total}"
                if limit < self.limits.total:
                    bound += f"; {limit} while the engine runs {self.gate.running_limit} calls at a time"
                why = f"the server has {waiting} calls waiting for its {self.engine_threads} engine threads ({bound})"
            ahead = self._turns_ahead(call.client, scope, waiting, limit, slot_s, now)
            if ahead is not None:
                if ahead:
                    why += f", and {ahead} refused clients whose turn comes first"
                self._refuse(call, scope, waiting, slot_s, why, now)
            self._turns = {key: turn for key, turn in self._turns.items() if key[1] != call.client}  # it is back
        ticket = Ticket(lock, self.meter, gated=call is not None)
        self._admitted.add(ticket)
        return ticket

    def done(self, ticket: Ticket) -> None:
        """The admitted work ended (ran, failed or was dropped before it started)."""
        self._admitted.discard(ticket)
        if ticket.started_s is not None:
            now, busy_s = self.meter.end()
            duration_s, beside_s = now - ticket.started_s, busy_s - ticket.busy_at_start_s
            self.service_s += SERVICE_SMOOTHING * (duration_s - self.service_s)
            if beside_s > 0.0:  # duration / (beside / duration): the mean count of calls running, itself included
                self.pace_s += SERVICE_SMOOTHING * (duration_s * duration_s / beside_s - self.pace_s)

    def _turn_times(self, scope: str) -> list[float]:
        """The times (``time.monotonic()``) of the turns kept in queue ``scope`` (a world id; "": the server's)."""
        return [turn.at_s for (where, _), turn in self._turns.items() if where == scope]

    def _turns_ahead(self, client: str, scope: str, waiting: int, limit: int, slot_s: float, now: float) -> int | None:
        """None when ``client``'s call fits in queue ``scope`` with ``waiting`` calls (bound ``limit``, a turn each
        ``slot_s``): with its turn come, when the queue has room; without a turn, when it has room beyond the turns
        due within the next slot (before its turn, never); and in the server's queue whenever an engine thread is
        idle with no call waiting for it, turn or not (the clients whose turns are due are late: the call starts at
        once and delays none of them; the engine gate decides whether a thread is free: ``EngineGate.has_room``).
        Otherwise the number of those turns."""
        if scope == "" and waiting == 0 and self.gate.has_room:
            return None
        turn = self._turns.get((scope, client))
        if turn is not None:
            return None if turn.at_s <= now and waiting < limit else 0
        due = sum(at_s <= now + slot_s for at_s in self._turn_times(scope))
        return None if waiting + due < limit else due

    def _refuse(self, call: Call, scope: str, waiting: int, slot_s: float, why: str, now: float) -> None:
        """Refuse ``call`` (see the class): ``scope`` is the full queue (a world id, or "" for the server's),
        ``waiting`` the calls in it, ``slot_s`` the time between two turns."""
        turn = self._turns.get((scope, call.client))
        if turn is None:
            last = max(self._turn_times(scope), default=now)
            at_s = max(now + (waiting + 1) * slot_s, last + slot_s)
            turn = self._turns[(scope, call.client)] = Reservation(at_s, at_s + RESERVATION_GRACE_S + (at_s - now) / 4)
        elif turn.at_s <= now:  # its turn came but the queue is full: the first free slot after the turns due
            times = sorted(self._turn_times(scope))
            due = sum(at_s <= now for at_s in times)  # its own turn among them
            turn.at_s = _first_gap(now + due * slot_s, times[due:], slot_s)
            turn.expires_s = max(turn.expires_s, turn.at_s + RESERVATION_GRACE_S)
        retry_ms = int(min(RETRY_MAX_MS, max(RETRY_MIN_MS, math.ceil((turn.at_s - now) * 1000))))
        self.refused += 1
        call.context.set_trailing_metadata(((RETRY_AFTER_METADATA_KEY, str(retry_ms)),))
        raise LimitExceededError(f"{why}: retry in {retry_ms} ms")
