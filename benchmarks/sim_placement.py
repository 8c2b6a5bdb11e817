"""1,000 worlds on 100 workers on a virtual clock, driving the front door's own placement and lease code.

Every placement, renewal, lease expiry, drain and worker loss is a call into ``worldweave.server.cluster.placement``
(the code the front door runs), timed with ``time.perf_counter``; only the workers and the clients are simulated.
The per-step costs are measured first on this machine with the embedded CPU default at the demo's 320x240: the
median ``World.step`` of a room world, and the ``World.save`` / ``World.load`` of that world (the cost of moving
one: save on unload, load where it lands). ``--step-ms --save-ms --load-ms`` skip the measurement (e.g. to replay
the placement at a GPU model's step time).

The model: each worker runs its steps, loads, saves and replays one at a time per GPU (a lane per GPU, first come
first served). Each world's
client comes in sessions (exponential length ``--session-s``, exponential gaps ``--gap-s``), stepping with an
exponential think time ``--think-s`` after each answer. A refused placement (full cluster) retries after the error's
``retry_after_s`` (at least 1 s). The front door calls ``expire`` every ``--expire-every-s``: expired worlds are saved
by their worker and loaded where their next call lands. A world stepped since its last save is autosaved after a
step once ``--autosave-s`` have passed. Lost workers (``--lose``) die at random times: their worlds are placed at once
and recovered there from the last save plus a replay of the steps since it (one step time each). Added workers
(``--add``) join at random times; drained workers (``--drain``) take no new worlds, and after ``--drain-grace-s`` the
rest of their worlds are moved off and the worker removed. Simplification: a lost worker's queued steps are counted
as served (a real client would see UNAVAILABLE for the call in flight and retry).

    python benchmarks/sim_placement.py [--worlds 1000 --workers 100 --hours 4 --seed 0]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from worldweave.server.cluster.placement import ClusterFullError, Placement, WorkerCapacity


@dataclass(frozen=True)
class Costs:
    """Seconds of worker time per operation."""

    step_s: float
    save_s: float
    load_s: float
    source: str


def measure_costs(steps: int) -> Costs:
    """Median ``World.step`` (one pose, embedded default generator, 320x240, room scene, after 2 warm-up steps) and
    the median of 3 ``World.save`` / ``World.load`` of the stepped world, seconds."""
    from worldweave.bridge.eval.scenes import make_scene
    from worldweave.bridge.eval.trajectories import closed_loop
    from worldweave.bridge.world import Seed, World
    from worldweave.proto.geometry import Intrinsics

    scene = make_scene("room", seed=0)
    intrinsics = Intrinsics.from_fov(320, 240, fov_x_deg=75.0)
    poses = closed_loop(scene, steps + 3).poses
    world = World(Seed([scene.render(poses[0], intrinsics)]))
    step_s = []
    for i, pose in enumerate(poses[1:]):
        started = time.perf_counter()
        world.step([pose])
        if i >= 2:
            step_s.append(time.perf_counter() - started)
    save_s, load_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(3):
            folder = Path(tmp) / f"world{i}"
            started = time.perf_counter()
            world.save(folder)
            save_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            World.load(folder)
            load_s.append(time.perf_counter() - started)
    return Costs(statistics.median(step_s), statistics.median(save_s), statistics.median(load_s),
                 f"measured here: {len(step_s)} steps, 3 saves and loads of a 320x240 room world after "
                 f"{steps + 2} steps, CPU default")


@dataclass
class Worker:
    """A simulated worker: one lane per GPU, each running its work one piece at a time, first come first served;
    seconds on the virtual clock."""

    worker_id: str
    joined_s: float
    gpus: int
    free_at_s: list[float] = field(default_factory=list)
    busy_s: float = 0.0
    left_s: float | None = None

    def __post_init__(self) -> None:
        self.free_at_s = [self.joined_s] * self.gpus

    def run(self, at_s: float, cost_s: float) -> float:
        """Queue ``cost_s`` of work arriving at ``at_s`` on the lane free first; returns when it ends."""
        lane = min(range(self.gpus), key=self.free_at_s.__getitem__)
        self.free_at_s[lane] = max(self.free_at_s[lane], at_s) + cost_s
        self.busy_s += cost_s
        return self.free_at_s[lane]

    def alive_s(self, end_s: float) -> float:
        """Seconds it was in the cluster, up to ``end_s``."""
        return (end_s if self.left_s is None else self.left_s) - self.joined_s

    def utilisation(self, end_s: float) -> float:
        """Busy seconds over the seconds its GPUs were alive."""
        return self.busy_s / (self.alive_s(end_s) * self.gpus)


@dataclass
class Stats:
    place_s: dict[str, list[float]] = field(default_factory=lambda: {"renew": [], "place": [], "refused": []})
    expire_s: list[float] = field(default_factory=list)
    lost_s: list[float] = field(default_factory=list)
    wait_s: list[float] = field(default_factory=list)
    moved: Counter = field(default_factory=Counter)
    move_cost_s: Counter = field(default_factory=Counter)
    reloads: Counter = field(default_factory=Counter)
    steps: int = 0
    refusals: int = 0
    slot_wait_s: list[float] = field(default_factory=list)
    """For each world refused at least once: virtual seconds from its first refusal to its placement."""
    unplaced_on_loss: int = 0
    occupancy: list[float] = field(default_factory=list)


def capacity_of(index: int, worlds_per_gpu: int) -> WorkerCapacity:
    """Every fourth worker holds 2 GPUs, the others 1; each GPU holds ``worlds_per_gpu`` worlds."""
    gpus = 2 if index % 4 == 3 else 1
    return WorkerCapacity(worlds=gpus * worlds_per_gpu, gpus=float(gpus))


def simulate(args: argparse.Namespace, costs: Costs) -> tuple[Stats, dict[str, Worker], Placement]:
    rng = random.Random(args.seed)
    end_s = args.hours * 3600.0
    placement = Placement(lease_idle_s=args.idle_s)
    workers: dict[str, Worker] = {}
    for i in range(args.workers):
        placement.add_worker(f"worker{i}", capacity_of(i, args.worlds_per_gpu))
        workers[f"worker{i}"] = Worker(f"worker{i}", 0.0, int(capacity_of(i, args.worlds_per_gpu).gpus))
    stats = Stats()
    events: list[tuple[float, int, str, str]] = []  # (time, tie-break, kind, subject)
    order = itertools.count()

    def at(t_s: float, kind: str, subject: str = "") -> None:
        if t_s < end_s:
            heapq.heappush(events, (t_s, next(order), kind, subject))

    session_end_s: dict[str, float] = {}
    last_save_s: dict[str, float] = {}
    unsaved_steps: Counter = Counter()
    last_worker: dict[str, str] = {}
    refused_since_s: dict[str, float] = {}
    for w in range(args.worlds):
        at(rng.expovariate(1 / args.gap_s), "session", f"world{w}")
    for tick in range(1, int(end_s / args.expire_every_s) + 1):
        at(tick * args.expire_every_s, "expire")
    for kind, count in (("lose", args.lose), ("add", args.add), ("drain", args.drain)):
        for _ in range(count):
            at(rng.uniform(0.1 * end_s, 0.8 * end_s), kind)
    added = args.workers

    def save(world: str, worker_id: str, t_s: float, cause: str) -> None:
        workers[worker_id].run(t_s, costs.save_s)
        stats.moved[cause] += 1
        stats.move_cost_s[cause] += costs.save_s
        last_save_s[world], unsaved_steps[world] = t_s, 0

    while events:
        t_s, _, kind, subject = heapq.heappop(events)
        if kind == "session":
            session_end_s[subject] = t_s + rng.expovariate(1 / args.session_s)
            at(t_s, "call", subject)
        elif kind == "call":
            started = time.perf_counter()
            try:
                route = placement.place(subject, t_s)
            except ClusterFullError as full:
                stats.place_s["refused"].append(time.perf_counter() - started)
                stats.refusals += 1
                refused_since_s.setdefault(subject, t_s)
                at(t_s + max(1.0, full.retry_after_s or 0.0), "call", subject)
                continue
            stats.place_s["place" if route.placed else "renew"].append(time.perf_counter() - started)
            if subject in refused_since_s:
                stats.slot_wait_s.append(t_s - refused_since_s.pop(subject))
            worker = workers[route.worker_id]
            cost_s = costs.step_s
            if route.placed:
                cost_s += costs.load_s
                if subject in last_worker:
                    stats.reloads["other worker" if last_worker[subject] != route.worker_id else "same worker"] += 1
                else:
                    stats.reloads["first load"] += 1
            last_worker[subject] = route.worker_id
            done_s = worker.run(t_s, cost_s)
            stats.wait_s.append(max(0.0, done_s - t_s - cost_s))
            stats.steps += 1
            unsaved_steps[subject] += 1
            if done_s - last_save_s.setdefault(subject, t_s) >= args.autosave_s:
                done_s = worker.run(done_s, costs.save_s)
                last_save_s[subject], unsaved_steps[subject] = done_s, 0
            following_s = done_s + rng.expovariate(1 / args.think_s)
            if following_s < session_end_s[subject]:
                at(following_s, "call", subject)
            else:
                at(following_s + rng.expovariate(1 / args.gap_s), "session", subject)
        elif kind == "expire":
            started = time.perf_counter()
            unloads = placement.expire(t_s)
            stats.expire_s.append(time.perf_counter() - started)
            for unload in unloads:
                save(unload.world_id, unload.worker_id, t_s, "expiry")
            states = placement.workers()
            stats.occupancy.append(placement.leased / sum(s.capacity.worlds for s in states))
            for state in states:  # drained workers that emptied on expiry leave
                if state.draining and not state.worlds:
                    placement.remove_worker(state.worker_id)
                    workers[state.worker_id].left_s = t_s
        elif kind == "lose":
            alive = [s.worker_id for s in placement.workers() if not s.draining]
            victim = rng.choice(alive)
            started = time.perf_counter()
            recoveries = placement.worker_lost(victim, t_s)
            stats.lost_s.append(time.perf_counter() - started)
            workers[victim].left_s = t_s
            for recovery in recoveries:
                if recovery.to_worker is None:
                    stats.unplaced_on_loss += 1
                    continue
                cost_s = costs.load_s + unsaved_steps[recovery.world_id] * costs.step_s
                workers[recovery.to_worker].run(t_s, cost_s)
                stats.moved["loss"] += 1
                stats.move_cost_s["loss"] += cost_s
                last_worker[recovery.world_id] = recovery.to_worker
                last_save_s[recovery.world_id], unsaved_steps[recovery.world_id] = t_s, 0
        elif kind == "add":
            worker_id = f"worker{added}"
            capacity = capacity_of(added, args.worlds_per_gpu)
            placement.add_worker(worker_id, capacity)
            workers[worker_id] = Worker(worker_id, t_s, int(capacity.gpus))
            added += 1
        elif kind == "drain":
            accepting = [s.worker_id for s in placement.workers() if not s.draining]
            victim = rng.choice(accepting)
            placement.drain_worker(victim, t_s)
            at(t_s + args.drain_grace_s, "move off", victim)
        elif kind == "move off":
            if subject in workers and workers[subject].left_s is None:
                for unload in placement.drain_worker(subject, t_s, move_now=True):
                    save(unload.world_id, unload.worker_id, t_s, "drain")
                placement.remove_worker(subject)
                workers[subject].left_s = t_s
    return stats, workers, placement


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", type=int, default=1000, help="worlds, each with one client (default 1000)")
    parser.add_argument("--workers", type=int, default=100, help="workers at the start (default 100)")
    parser.add_argument("--worlds-per-gpu", type=int, default=8,
                        help="declared capacity per GPU; every fourth worker has 2 GPUs (default 8)")
    parser.add_argument("--hours", type=float, default=4.0, help="virtual hours simulated (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--idle-s", type=float, default=300.0, help="lease idle expiry, seconds (default 300)")
    parser.add_argument("--expire-every-s", type=float, default=5.0, help="how often the front door expires leases")
    parser.add_argument("--session-s", type=float, default=600.0, help="mean client session, seconds (default 600)")
    parser.add_argument("--gap-s", type=float, default=1800.0, help="mean gap between sessions, seconds (default 1800)")
    parser.add_argument("--think-s", type=float, default=1.0, help="mean client time between steps, seconds")
    parser.add_argument("--autosave-s", type=float, default=60.0, help="autosave a stepped world after this long")
    parser.add_argument("--lose", type=int, default=3, help="workers lost at random times (default 3)")
    parser.add_argument("--add", type=int, default=3, help="workers added at random times (default 3)")
    parser.add_argument("--drain", type=int, default=2, help="workers drained at random times (default 2)")
    parser.add_argument("--drain-grace-s", type=float, default=300.0,
                        help="after this long a draining worker's remaining worlds are moved off (default 300)")
    parser.add_argument("--measure-steps", type=int, default=8, help="steps timed to measure the step cost")
    parser.add_argument("--step-ms", type=float, help="use this step cost instead of measuring (with the two below)")
    parser.add_argument("--save-ms", type=float)
    parser.add_argument("--load-ms", type=float)
    args = parser.parse_args()

    given = (args.step_ms, args.save_ms, args.load_ms)
    if any(v is not None for v in given) and None in given:
        parser.error("--step-ms, --save-ms and --load-ms go together")
    costs = (Costs(args.step_ms / 1e3, args.save_ms / 1e3, args.load_ms / 1e3, "given on the command line")
             if args.step_ms is not None else measure_costs(args.measure_steps))
    started = time.perf_counter()
    stats, workers, placement = simulate(args, costs)
    wall_s = time.perf_counter() - started
    end_s = args.hours * 3600.0

    print(f"costs ({costs.source}): step {1e3 * costs.step_s:.1f} ms, save {1e3 * costs.save_s:.1f} ms, "
          f"load {1e3 * costs.load_s:.1f} ms")
    print(f"{args.worlds} worlds on {args.workers} workers (+{args.add} added, {args.lose} lost, "
          f"{args.drain} drained), "
          f"{args.hours:g} virtual h, lease idle {args.idle_s:g} s, seed {args.seed}; simulated in {wall_s:.1f} s wall")
    utilisation = [w.utilisation(end_s) for w in workers.values() if w.alive_s(end_s) > 0]
    print("\n| measure | value |\n| --- | --- |")
    rows = [
        ("steps served", f"{stats.steps}"),
        ("worker utilisation (busy s / GPU-s alive): mean, p50, p99, max",
         f"{100 * statistics.mean(utilisation):.1f} %, {100 * percentile(utilisation, 50):.1f} %, "
         f"{100 * percentile(utilisation, 99):.1f} %, {100 * max(utilisation):.1f} %"),
        ("world slots leased (time mean, max)",
         f"{100 * statistics.mean(stats.occupancy):.1f} %, {100 * max(stats.occupancy):.1f} %"),
        ("step wait in a worker's queue p50 / p99 (virtual ms)",
         f"{1e3 * percentile(stats.wait_s, 50):.1f} / {1e3 * percentile(stats.wait_s, 99):.1f}"),
        ("placements refused (full cluster, retried after the hint, at least 1 s)", f"{stats.refusals}"),
    ]
    if stats.slot_wait_s:
        rows.append((f"wait for a slot after a refusal p50 / p99 (virtual s, {len(stats.slot_wait_s)} waits)",
                     f"{percentile(stats.slot_wait_s, 50):.1f} / {percentile(stats.slot_wait_s, 99):.1f}"))
    for name, label in (("renew", "renewal of a live lease"), ("place", "placement of an unleased world"),
                        ("refused", "refusal")):
        if stats.place_s[name]:
            rows.append((f"`place` decision, {label}: p50 / p99 (µs, {len(stats.place_s[name])} calls)",
                         f"{1e6 * percentile(stats.place_s[name], 50):.1f} / "
                         f"{1e6 * percentile(stats.place_s[name], 99):.1f}"))
    rows.append((f"`expire` call p50 / p99 (µs, {len(stats.expire_s)} calls)",
                 f"{1e6 * percentile(stats.expire_s, 50):.1f} / {1e6 * percentile(stats.expire_s, 99):.1f}"))
    if stats.lost_s:
        rows.append(("`worker_lost` call, max (µs)", f"{1e6 * max(stats.lost_s):.1f}"))
    hours = args.hours
    for cause, what in (("expiry", "saved and unloaded on lease expiry"), ("drain", "moved off a draining worker"),
                        ("loss", "recovered elsewhere after a worker loss")):
        rows.append((f"worlds {what} (total, per hour, worker s spent)",
                     f"{stats.moved[cause]}, {stats.moved[cause] / hours:.1f}, {stats.move_cost_s[cause]:.1f}"))
    rows.append(("worlds left unplaced by a loss (placed on their next call)", f"{stats.unplaced_on_loss}"))
    rows.append(("loads on placement: first load / same worker again / another worker",
                 f"{stats.reloads['first load']} / {stats.reloads['same worker']} / {stats.reloads['other worker']}"))
    moves = stats.reloads["other worker"] + stats.moved["loss"]
    rows.append(("worlds that changed worker (reloaded elsewhere + recovered), per hour", f"{moves / hours:.1f}"))
    rows.append(("workers at the end, worlds leased at the end", f"{len(placement.workers())}, {placement.leased}"))
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"\nload average (1, 5, 15 min): {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
