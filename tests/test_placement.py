"""The front door's placement and leases (server/cluster/placement.py) on a virtual clock: affinity, spread by declared
capacity, lease expiry, drain, worker loss, a full cluster, and invariants over random sequences of operations."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from worldweave.proto.errors import (
    AlreadyExistsError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    PreconditionError,
    ServerUnavailableError,
)
from worldweave.server.cluster.placement import (
    ClusterFullError,
    NoWorkerError,
    Placement,
    Recovery,
    Route,
    Unload,
    WorkerCapacity,
)

IDLE_S = 60.0


def cluster(**capacities: int) -> Placement:
    """A placement with a lease idle time of ``IDLE_S`` and one worker per keyword (its id: its world slots)."""
    placement = Placement(lease_idle_s=IDLE_S)
    for worker_id, worlds in capacities.items():
        placement.add_worker(worker_id, WorkerCapacity(worlds=worlds, gpus=1.0))
    return placement


def test_a_world_stays_on_its_worker_while_its_lease_lives():
    placement = cluster(a=2, b=2, c=2)
    first = placement.place("w", now_s=0.0)
    assert first.placed
    for t in (10.0, 50.0, 100.0, 150.0):  # each call renews: never idle for 60 s
        assert placement.place("w", now_s=t) == Route(first.worker_id, placed=False)
    assert placement.expire(now_s=150.0 + IDLE_S - 1) == []
    assert placement.where("w") == first.worker_id


def test_new_worlds_spread_by_declared_capacity():
    placement = cluster(small=2, big=4)
    routes = [placement.place(f"w{i}", now_s=0.0) for i in range(6)]
    assert Counter(route.worker_id for route in routes) == {"big": 4, "small": 2}
    assert all(route.placed for route in routes)
    larger = cluster(a=5, b=10, c=15)
    held = Counter(larger.place(f"w{i}", now_s=float(i)).worker_id for i in range(12))
    assert held == {"a": 2, "b": 4, "c": 6}  # in proportion to 5 : 10 : 15


def test_expiry_unloads_idle_worlds_and_frees_their_slots():
    placement = cluster(a=1, b=1)
    placement.place("old", now_s=0.0)
    placement.place("recent", now_s=30.0)
    with pytest.raises(ClusterFullError) as refused:
        placement.place("third", now_s=40.0)
    assert refused.value.code == "RESOURCE_EXHAUSTED" and isinstance(refused.value, LimitExceededError)
    assert refused.value.retry_after_s == pytest.approx(IDLE_S - 40.0)  # "old" expires at 60 s
    assert "retry" in str(refused.value)
    assert placement.expire(now_s=IDLE_S - 0.5) == []
    assert placement.expire(now_s=IDLE_S) == [Unload("old", "a", "expiry")]
    assert placement.where("old") is None
    assert placement.place("third", now_s=IDLE_S) == Route("a", placed=True)
    with pytest.raises(ClusterFullError) as refused:  # back after expiry: it needs a slot like a new world
        placement.place("old", now_s=IDLE_S + 1)
    assert refused.value.retry_after_s == pytest.approx(30.0 + IDLE_S - (IDLE_S + 1))


def test_a_forgotten_world_frees_its_slot_at_once_and_is_placed_anew():
    placement = cluster(a=1)
    placement.place("deleted", now_s=0.0)
    assert placement.forget("deleted") and placement.where("deleted") is None
    assert not placement.forget("deleted")
    assert placement.place("next", now_s=1.0) == Route("a", placed=True)  # no wait for the lease to expire
    assert placement.expire(now_s=10 * IDLE_S) == [Unload("next", "a", "expiry")]  # nothing left of "deleted"


def test_losing_a_worker_moves_exactly_its_worlds():
    placement = cluster(a=5, b=5, c=5)  # room for b's worlds on a and c
    for i in range(9):
        placement.place(f"w{i}", now_s=float(i))
    before = {f"w{i}": placement.where(f"w{i}") for i in range(9)}
    on_b = sorted(world for world, worker in before.items() if worker == "b")
    assert len(on_b) == 3
    recoveries = placement.worker_lost("b", now_s=20.0)
    assert sorted(r.world_id for r in recoveries) == on_b
    assert [r.world_id for r in recoveries] == sorted(on_b, key=lambda w: -int(w[1:]))  # most recently used first
    assert all(r.lost_worker == "b" and r.to_worker in ("a", "c") for r in recoveries)
    for world, worker in before.items():
        if worker != "b":
            assert placement.where(world) == worker  # nothing else moved
    for recovery in recoveries:
        assert placement.place(recovery.world_id, now_s=21.0) == Route(recovery.to_worker, placed=False)
    assert [state.worker_id for state in placement.workers()] == ["a", "c"]
    with pytest.raises(NotFoundError):
        placement.worker_lost("b", now_s=22.0)


def test_a_lost_worker_whose_worlds_find_no_room_leaves_them_unleased():
    placement = cluster(a=1, b=1)
    placement.place("x", now_s=0.0)
    placement.place("y", now_s=1.0)
    assert placement.worker_lost("a", now_s=2.0) == [Recovery("x", "a", None)]
    assert placement.where("x") is None and placement.where("y") == "b"
    placement.add_worker("a", WorkerCapacity(worlds=1))  # the replica comes back under the same id
    assert placement.place("x", now_s=3.0) == Route("a", placed=True)


def test_a_draining_worker_takes_no_new_worlds_and_is_emptied_on_expiry_or_at_once():
    placement = cluster(a=4, b=4)
    placement.place("x", now_s=0.0)  # on a (tie: added first)
    assert placement.where("x") == "a"
    assert placement.drain_worker("a", now_s=1.0) == []
    assert {placement.place(f"n{i}", now_s=2.0).worker_id for i in range(4)} == {"b"}
    assert placement.place("x", now_s=3.0) == Route("a", placed=False)  # existing worlds stay while leased
    with pytest.raises(ClusterFullError):
        placement.place("one-too-many", now_s=3.0)
    with pytest.raises(PreconditionError):
        placement.remove_worker("a")
    assert placement.expire(now_s=3.0 + IDLE_S) == [Unload(f"n{i}", "b", "expiry") for i in range(4)] + [
        Unload("x", "a", "expiry")]
    placement.remove_worker("a")
    assert [state.worker_id for state in placement.workers()] == ["b"]

    busy = cluster(a=2, b=2)
    busy.place("p", now_s=0.0)
    busy.place("q", now_s=1.0)
    busy.place("r", now_s=2.0)  # a holds p and r, b holds q
    assert busy.drain_worker("a", now_s=3.0, move_now=True) == [Unload("p", "a", "drain"), Unload("r", "a", "drain")]
    state = {s.worker_id: s for s in busy.workers()}
    assert state["a"].draining and state["a"].worlds == frozenset() and state["a"].free == 0
    assert busy.place("p", now_s=4.0) == Route("b", placed=True)
    busy.remove_worker("a")


def test_a_full_cluster_refuses_with_a_retry_hint_and_no_workers_is_unavailable():
    placement = cluster(a=2)
    placement.place("x", now_s=0.0)
    placement.place("y", now_s=5.0)
    with pytest.raises(ClusterFullError) as refused:
        placement.place("z", now_s=10.0)
    assert refused.value.code == "RESOURCE_EXHAUSTED" and refused.value.retry_after_s == pytest.approx(IDLE_S - 10.0)
    assert "2 world slots on 1 worker(s)" in str(refused.value)
    placement.drain_worker("a", now_s=11.0)
    with pytest.raises(NoWorkerError) as none:
        placement.place("z", now_s=12.0)
    assert isinstance(none.value, ServerUnavailableError) and none.value.code == "UNAVAILABLE"
    with pytest.raises(NoWorkerError):
        Placement(lease_idle_s=1.0).place("z", now_s=0.0)


def test_bad_input_is_refused_with_the_value_named():
    placement = cluster(a=1)
    with pytest.raises(AlreadyExistsError, match="'a'"):
        placement.add_worker("a", WorkerCapacity(worlds=1))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match=repr(bad)):
            WorkerCapacity(worlds=bad)
    with pytest.raises(InvalidInputError, match="nan"):
        WorkerCapacity(worlds=1, gpus=float("nan"))
    with pytest.raises(InvalidInputError, match="inf"):
        placement.place("w", now_s=float("inf"))
    with pytest.raises(InvalidInputError, match="world_id"):
        placement.place("", now_s=0.0)
    with pytest.raises(InvalidInputError, match="lease_idle_s"):
        Placement(lease_idle_s=0)
    with pytest.raises(NotFoundError, match="'nope'"):
        placement.drain_worker("nope", now_s=0.0)


def test_an_earlier_time_from_another_thread_never_runs_a_lease_backwards():
    placement = cluster(a=1)
    placement.place("w", now_s=100.0)
    placement.place("w", now_s=99.9)  # read before the lock by a slower thread: counts as 100.0
    assert placement.expire(now_s=100.0 + IDLE_S - 0.01) == []
    assert placement.expire(now_s=100.0 + IDLE_S) == [Unload("w", "a", "expiry")]


def test_the_placement_imports_without_torch_grpc_numba_or_ray():
    code = ("import sys, worldweave.server.cluster.placement; "
            "print(sorted(m for m in ('torch', 'grpc', 'numba', 'ray') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


class PlacementMachine(RuleBasedStateMachine):
    """Random sequences of adds, drains, losses, removals, placements and expiries on a virtual clock; after every
    step: no worker over capacity, every leased world on exactly one live worker, lost workers hold nothing, no lease
    older than the idle time survives an expiry, and a refusal happens only when no accepting worker has room."""

    WORLDS = [f"w{i}" for i in range(12)]

    def __init__(self) -> None:
        super().__init__()
        self.placement = Placement(lease_idle_s=10.0)
        self.now_s = 0.0
        self.next_worker = 0
        self.lost: set[str] = set()
        self.last_use: dict[str, float] = {}

    def live(self) -> list[str]:
        return [state.worker_id for state in self.placement.workers()]

    @rule(worlds=st.integers(1, 4), gpus=st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    def add_worker(self, worlds: int, gpus: float) -> None:
        self.placement.add_worker(f"k{self.next_worker}", WorkerCapacity(worlds=worlds, gpus=gpus))
        self.next_worker += 1

    @rule(world=st.sampled_from(WORLDS), dt=st.floats(0.0, 6.0))
    def place(self, world: str, dt: float) -> None:
        self.now_s += dt
        held_before = self.placement.where(world)
        open_before = {s.worker_id: len(s.worlds) / s.capacity.worlds for s in self.placement.workers() if s.free}
        try:
            route = self.placement.place(world, self.now_s)
        except (ClusterFullError, NoWorkerError):
            assert held_before is None and not open_before
            return
        assert route.placed == (held_before is None)
        assert held_before in (None, route.worker_id)  # affinity
        if route.placed:  # on an accepting worker with room, least loaded relative to its capacity
            assert open_before.get(route.worker_id) == min(open_before.values())
        self.last_use[world] = self.now_s

    @rule(dt=st.floats(0.0, 12.0))
    def expire(self, dt: float) -> None:
        self.now_s += dt
        for unload in self.placement.expire(self.now_s):
            assert unload.cause == "expiry"
            assert self.now_s - self.last_use[unload.world_id] >= 10.0
        for world in self.WORLDS:
            if self.placement.where(world) is not None:
                assert self.now_s - self.last_use[world] < 10.0

    @precondition(lambda self: self.live())
    @rule(data=st.data(), move_now=st.booleans())
    def drain(self, data: st.DataObject, move_now: bool) -> None:
        worker = data.draw(st.sampled_from(self.live()))
        holding = {s.worker_id: s.worlds for s in self.placement.workers()}[worker]
        unloads = self.placement.drain_worker(worker, self.now_s, move_now=move_now)
        assert {u.world_id for u in unloads} == (holding if move_now else set())

    @precondition(lambda self: self.live())
    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        worker = data.draw(st.sampled_from(self.live()))
        before = {world: self.placement.where(world) for world in self.WORLDS}
        recoveries = self.placement.worker_lost(worker, self.now_s)
        assert {r.world_id for r in recoveries} == {w for w, k in before.items() if k == worker}
        for world, holder in before.items():
            if holder != worker:
                assert self.placement.where(world) == holder
        self.lost.add(worker)

    @rule(world=st.sampled_from(WORLDS))
    def forget(self, world: str) -> None:
        held = self.placement.where(world) is not None
        assert self.placement.forget(world) == held
        assert self.placement.where(world) is None

    @precondition(lambda self: any(not s.worlds for s in self.placement.workers()))
    @rule(data=st.data())
    def remove_empty(self, data: st.DataObject) -> None:
        empty = [s.worker_id for s in self.placement.workers() if not s.worlds]
        self.placement.remove_worker(data.draw(st.sampled_from(empty)))

    @invariant()
    def leases_are_consistent(self) -> None:
        states = self.placement.workers()
        holders: Counter[str] = Counter()
        for state in states:
            assert len(state.worlds) <= state.capacity.worlds
            assert state.worker_id not in self.lost
            holders.update(state.worlds)
        assert all(count == 1 for count in holders.values())
        live = {state.worker_id for state in states}
        for world in self.WORLDS:
            holder = self.placement.where(world)
            assert (holder is not None) == (world in holders)
            assert holder is None or holder in live
        assert self.placement.leased == len(holders)


TestPlacementMachine = PlacementMachine.TestCase
TestPlacementMachine.settings = settings(max_examples=100, stateful_step_count=40, derandomize=True, deadline=None,
                                         database=None, suppress_health_check=list(HealthCheck))
