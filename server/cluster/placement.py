"""Which worker holds which world: affinity by world id, leases with idle expiry, spread by declared capacity.

The front door of a multi-worker deployment (one gRPC API in front of workers that each hold some worlds in
memory) asks ``Placement`` where every call goes. The rules:

* **Affinity.** A world with a live lease is served by the worker that holds it; every call renews the lease.
* **Spread.** A world without a lease (new, or unloaded on expiry, drain or loss) goes to the worker accepting
  worlds with the lowest load relative to its declared capacity (leased worlds / ``WorkerCapacity.worlds``);
  ties go to the larger capacity, then to the worker added first. The same calls in the same order give the same
  placement.
* **Expiry.** A lease not renewed for ``lease_idle_s`` expires: ``expire`` returns those worlds for the front door
  to save to shared storage and unload; their next call places them again (possibly elsewhere).
* **Drain.** A draining worker takes no new worlds; its worlds leave on lease expiry, or all at once when asked
  (``drain_worker(..., move_now=True)``); an empty worker is taken out with ``remove_worker``.
* **Loss.** ``worker_lost`` takes a dead worker out and places each of its worlds on another worker at once (most
  recently used first), so the front door can start recovering them (last save plus record log) before their next
  call; a world for which no worker has room is left unleased, and its next call places it or is refused.
* **Full.** A world that needs placing when no accepting worker has a free slot raises ``ClusterFullError``
  (RESOURCE_EXHAUSTED, with ``retry_after_s``: when the first lease on an accepting worker expires); with no
  accepting worker at all, ``NoWorkerError`` (UNAVAILABLE).

Time is passed in (``now_s``: seconds on one monotonic clock of the caller's choosing), so tests and the simulation
run on a virtual clock. Callers on several threads read their clock before this object's lock, so a ``now_s``
slightly earlier than one already seen is taken as that one: leases never run backwards. The state is ids, counts
and timestamps only (no objects of the worlds or workers), and every method holds one lock.

A call renews its world's lease when it starts; a call or stream that lasts longer than ``lease_idle_s`` renews
it again (``place`` once more) to keep the world where it is.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from worldweave.proto.errors import (
    AlreadyExistsError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    PreconditionError,
    ServerUnavailableError,
)


class ClusterFullError(LimitExceededError):
    """Every worker that takes new worlds holds as many as it declared; ``retry_after_s``: seconds until the first
    lease on such a worker expires (when a slot frees unless that world is used again)."""


class NoWorkerError(ServerUnavailableError):
    """No worker takes new worlds (none added, or every one draining): retry once one is added."""


@dataclass(frozen=True)
class WorkerCapacity:
    """What a worker declares it can hold."""

    worlds: int
    """Worlds the worker holds in memory at once (>= 1); placement weighs workers by it."""
    gpus: float = 0.0
    """GPUs the worker holds (Ray's ``num_gpus``: fractional when workers share one GPU; 0 for a CPU worker).
    Stated for resource requests and reports; placement does not weigh it (``worlds`` already says what they hold)."""

    def __post_init__(self) -> None:
        if isinstance(self.worlds, bool) or not isinstance(self.worlds, int) or self.worlds < 1:
            raise InvalidInputError(f"a worker holds at least 1 world: worlds = {self.worlds!r}")
        if not (isinstance(self.gpus, (int, float)) and math.isfinite(self.gpus) and self.gpus >= 0):
            raise InvalidInputError(f"gpus must be a finite number >= 0, got {self.gpus!r}")


@dataclass(frozen=True)
class WorkerState:
    """A worker as ``Placement`` sees it at one moment (a copy)."""

    worker_id: str
    capacity: WorkerCapacity
    worlds: frozenset[str]
    """The worlds it holds a lease for."""
    draining: bool
    """True once ``drain_worker`` was called: it takes no new worlds."""

    @property
    def free(self) -> int:
        """Slots open to new worlds: 0 while draining."""
        return 0 if self.draining else self.capacity.worlds - len(self.worlds)


@dataclass(frozen=True)
class Route:
    """Where one call goes (``Placement.place``)."""

    worker_id: str
    placed: bool
    """True when this call placed the world (it had no lease): the worker loads it from shared storage (or creates
    it) before serving the call. False: the worker holds it already (or is recovering it after a loss)."""


@dataclass(frozen=True)
class Unload:
    """A world the front door saves to shared storage and unloads from ``worker_id``; its lease is gone."""

    world_id: str
    worker_id: str
    cause: Literal["expiry", "drain"]
    """``expiry``: idle for ``lease_idle_s``; ``drain``: moved off a draining worker by ``drain_worker``."""


@dataclass(frozen=True)
class Recovery:
    """A world whose worker was lost (``Placement.worker_lost``): no save from that worker will come."""

    world_id: str
    lost_worker: str
    to_worker: str | None
    """Where the world now has its lease (its last save plus the record log are loaded there), keeping the lease's
    last use; None when no worker had a free slot: the world is unleased and its next call places it (or is refused
    with ``ClusterFullError``)."""


class _Worker:
    __slots__ = ("capacity", "draining", "order", "worlds")

    def __init__(self, capacity: WorkerCapacity, order: int) -> None:
        self.capacity = capacity
        self.order = order
        self.draining = False
        self.worlds: set[str] = set()


class _Lease:
    __slots__ = ("last_used_s", "worker_id")

    def __init__(self, worker_id: str, last_used_s: float) -> None:
        self.worker_id = worker_id
        self.last_used_s = last_used_s


def _check_id(kind: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{kind} must be a non-empty string, got {value!r}")
    return value


class Placement:
    """Leases of worlds on workers; see the module's docstring for the rules.

    ``lease_idle_s``: seconds without a call after which a world's lease expires (> 0).
    """

    def __init__(self, lease_idle_s: float) -> None:
        if not (isinstance(lease_idle_s, (int, float)) and math.isfinite(lease_idle_s) and lease_idle_s > 0):
            raise InvalidInputError(f"lease_idle_s must be a finite number of seconds > 0, got {lease_idle_s!r}")
        self.lease_idle_s = float(lease_idle_s)
        self._lock = threading.Lock()
        self._now_s = -math.inf
        self._workers: dict[str, _Worker] = {}
        self._added = 0
        self._leases: OrderedDict[str, _Lease] = OrderedDict()
        """World id -> lease, least recently used first (so ``expire`` stops at the first live one)."""

    # -------------------------------------------------------------------------------------------- time

    def _advance(self, now_s: float) -> float:
        """The call's time, seconds: ``now_s``, or the latest time seen when ``now_s`` is earlier."""
        if not (isinstance(now_s, (int, float)) and math.isfinite(now_s)):
            raise InvalidInputError(f"now_s must be a finite number of seconds, got {now_s!r}")
        self._now_s = max(self._now_s, float(now_s))
        return self._now_s

    # ------------------------------------------------------------------------------------------ workers

    def add_worker(self, worker_id: str, capacity: WorkerCapacity) -> None:
        """Add a worker that takes new worlds at once. A lost or removed worker's id may be added again."""
        _check_id("worker_id", worker_id)
        if not isinstance(capacity, WorkerCapacity):
            raise InvalidInputError(f"capacity must be a WorkerCapacity, got {type(capacity).__name__}")
        with self._lock:
            if worker_id in self._workers:
                raise AlreadyExistsError(f"worker {worker_id!r} is already in the placement")
            self._workers[worker_id] = _Worker(capacity, self._added)
            self._added += 1

    def _worker(self, worker_id: str) -> _Worker:
        worker = self._workers.get(worker_id)
        if worker is None:
            raise NotFoundError(f"no worker {worker_id!r} in the placement ({len(self._workers)} workers)")
        return worker

    def drain_worker(self, worker_id: str, now_s: float, *, move_now: bool = False) -> list[Unload]:
        """Stop placing new worlds on ``worker_id``. Its worlds stay until their leases expire, or, with
        ``move_now``, leave now: returned (cause ``drain``, least recently used first) for the front door to save
        and unload; their next call places them elsewhere. Calling it again on a draining worker is allowed."""
        with self._lock:
            self._advance(now_s)
            worker = self._worker(worker_id)
            worker.draining = True
            if not move_now:
                return []
            moved = [world_id for world_id in self._leases if world_id in worker.worlds]
            for world_id in moved:
                del self._leases[world_id]
            worker.worlds.clear()
            return [Unload(world_id, worker_id, "drain") for world_id in moved]

    def remove_worker(self, worker_id: str) -> None:
        """Take out a worker that holds no world (drained, or never used); a worker that holds worlds cannot be
        removed (``PreconditionError``): drain it with ``move_now``, or report it lost with ``worker_lost``."""
        with self._lock:
            worker = self._worker(worker_id)
            if worker.worlds:
                raise PreconditionError(f"worker {worker_id!r} still holds {len(worker.worlds)} world(s): drain it "
                                        "first (drain_worker with move_now) or report it lost (worker_lost)")
            del self._workers[worker_id]

    def worker_lost(self, worker_id: str, now_s: float) -> list[Recovery]:
        """Take out a worker that died; each of its worlds is placed on another worker at once, most recently used
        first, keeping its lease's last use (``Recovery.to_worker``; None when none had room)."""
        with self._lock:
            now_s = self._advance(now_s)
            lost = self._worker(worker_id)
            del self._workers[worker_id]
            stranded = [world_id for world_id in reversed(self._leases) if world_id in lost.worlds]
            recoveries = []
            for world_id in stranded:
                target = self._choose()
                if target is None:
                    del self._leases[world_id]
                    recoveries.append(Recovery(world_id, worker_id, None))
                    continue
                self._leases[world_id].worker_id = target
                self._workers[target].worlds.add(world_id)
                recoveries.append(Recovery(world_id, worker_id, target))
            return recoveries

    # ------------------------------------------------------------------------------------------- worlds

    def _choose(self) -> str | None:
        """The accepting worker with a free slot and the lowest load relative to capacity (ties: larger capacity,
        then the one added first); None when there is none."""
        best: tuple[float, int, int] | None = None
        best_id = None
        for worker_id, worker in self._workers.items():
            held, slots = len(worker.worlds), worker.capacity.worlds
            if worker.draining or held >= slots:
                continue
            key = (held / slots, -slots, worker.order)
            if best is None or key < best:
                best, best_id = key, worker_id
        return best_id

    def _refusal(self, now_s: float) -> Exception:
        """The error for a world that finds no free slot at ``now_s``."""
        accepting = [worker for worker in self._workers.values() if not worker.draining]
        if not accepting:
            return NoWorkerError(f"no worker takes new worlds ({len(self._workers)} worker(s), all draining): "
                                 "retry once a worker is added")
        slots = sum(worker.capacity.worlds for worker in accepting)
        first_expiry_s = next((lease.last_used_s + self.lease_idle_s for lease in self._leases.values()
                               if not self._workers[lease.worker_id].draining), now_s)
        retry_s = max(0.0, first_expiry_s - now_s)
        return ClusterFullError(f"every worker is full: {slots} world slots on {len(accepting)} worker(s) all leased; "
                                f"the first lease expires in {retry_s:.1f} s: retry then", retry_after_s=retry_s)

    def place(self, world_id: str, now_s: float) -> Route:
        """Where a call for ``world_id`` at ``now_s`` goes; renews the world's lease (placing it first when it has
        none). Raises ``ClusterFullError`` or ``NoWorkerError`` when it has no lease and no worker has room."""
        _check_id("world_id", world_id)
        with self._lock:
            now_s = self._advance(now_s)
            lease = self._leases.get(world_id)
            if lease is not None:
                lease.last_used_s = now_s
                self._leases.move_to_end(world_id)
                return Route(lease.worker_id, placed=False)
            worker_id = self._choose()
            if worker_id is None:
                raise self._refusal(now_s)
            self._leases[world_id] = _Lease(worker_id, now_s)
            self._workers[worker_id].worlds.add(world_id)
            return Route(worker_id, placed=True)

    def expire(self, now_s: float) -> list[Unload]:
        """Remove the leases idle for ``lease_idle_s`` or longer at ``now_s`` and return them (cause ``expiry``,
        least recently used first) for the front door to save and unload. Cost: the number expired, not leased."""
        with self._lock:
            now_s = self._advance(now_s)
            expired = []
            while self._leases:
                world_id, lease = next(iter(self._leases.items()))
                if lease.last_used_s + self.lease_idle_s > now_s:
                    break
                self._leases.popitem(last=False)
                self._workers[lease.worker_id].worlds.discard(world_id)
                expired.append(Unload(world_id, lease.worker_id, "expiry"))
            return expired

    def forget(self, world_id: str) -> bool:
        """Drop ``world_id``'s lease without an unload (the world was deleted, or its holder found nothing to load);
        its slot is free at once. False when it had no lease."""
        with self._lock:
            lease = self._leases.pop(world_id, None)
            if lease is None:
                return False
            self._workers[lease.worker_id].worlds.discard(world_id)
            return True

    # ------------------------------------------------------------------------------------------- reading

    def where(self, world_id: str) -> str | None:
        """The worker holding ``world_id``'s lease, or None; does not renew it."""
        with self._lock:
            lease = self._leases.get(world_id)
            return None if lease is None else lease.worker_id

    def workers(self) -> list[WorkerState]:
        """Every worker (draining ones too), in the order they were added."""
        with self._lock:
            return [WorkerState(worker_id, worker.capacity, frozenset(worker.worlds), worker.draining)
                    for worker_id, worker in self._workers.items()]

    @property
    def leased(self) -> int:
        """Worlds with a live lease."""
        return len(self._leases)
