"""Soak under load (issue 17, defect 9): admission control, fair turns, memory over time and warm start, every
figure beside its baseline from the same run, against ``worldweave serve`` processes over loopback.

    python benchmarks/bench_soak.py [--seconds 10 --rounds 3] [--fair-seconds 30] [--rss-seconds 30]
                                    [--width 128 --height 96] [--configs unbounded default] [--workers N]
                                    [--queue N] [--prime-calls 32] [--cold-cache] [--client-processes 8]
                                    [--client-nice N]
                                    [--skip load fair memory startup] [--generator continue]

* **Load.** For each server configuration, 1, 16 and 64 clients (threads spread over ``--client-processes``
  processes, at ``--client-nice`` niceness, so that one process's GIL does not delay them; each client on a
  connection and a world of its own, primed by ``--prime-calls`` untimed calls: ``LOAD_PRIME_CALLS``), alternately
  stepping and rendering one pose for ``--seconds``: 1, 16 and 64 clients in turn for ``--rounds`` rounds, each
  count's figures over all its rounds (this machine's speed drifts by +-20% over minutes; rounds in turn put a slow
  spell on every count, where one long phase each put it on one).
  Every server runs ``--generator`` (by default the server's default). A refused call (RESOURCE_EXHAUSTED with
  ``retry-after-ms``) is counted apart and retried after the suggested delay as the SDK does
  (``sim_clients.retry.RetryPolicy``: the delay times a random factor in [1, 1.1]); any other failure is an error.
  Reported: admitted calls/s, refusals, errors, admitted-call p50 / p99 / max as the clients saw them (send to
  answer) and p50 / p99 as the server timed them (``--log-requests``: arrival to answer, with the waits for the
  world and an engine thread, without the clients' own wait for a core); beside them the single client's p99 and the
  16-client throughput of the same configuration, and the issue's targets (p99 at 64 clients <= 4x the single
  client's; throughput at 64 >= 90% of 16's); for each round, its calls per second and the engine gate's mean level
  (clients' calls run at once). Configurations: ``unbounded`` (8 engine threads and queues too large to refuse
  anything: how the server ran before admission control), ``default`` (``worldweave serve`` defaults: one engine
  thread per core of this machine, as many queued, clients' calls on every thread whenever they wait),
  ``adaptive`` (the defaults with ``--adaptive-concurrency``: calls on as many threads at once as the engine gate
  measures to be worth it) and ``custom`` (``--workers N --queue N``).
* **Fair share.** 4 clients (connections) stepping one world for ``--fair-seconds``: each one's share of its steps;
  then a client with 3 streams against one with 1 stream for half that time (``default`` server; refusals, if any,
  are retried as above and counted).
* **Memory.** The server's RSS growth per minute (least squares over the last 80% of samples) with 4 clients
  stepping (the worlds change, after ``RSS_PRIME_STEPS`` untimed steps each, once they no longer grow) and with 4
  clients rendering and raycasting (nothing changes), ``--rss-seconds`` each.
* **Start-up.** Seconds from spawning ``worldweave serve`` to health SERVING, and the first raycast, capsule check,
  step and render on a fresh world after SERVING; beside the same for ``--no-warm-up``. With ``--cold-cache`` each
  server gets an empty ``NUMBA_CACHE_DIR`` (a fresh install: kernels compile from scratch; minutes).

The 2 CPU cores are shared with other work and the clients run on them too: the load average is printed with each
phase; compare figures of one run, not across runs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.registry import DEFAULT_GENERATOR, available
from worldweave.proto.errors import RETRY_AFTER_METADATA_KEY
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.server.engine_gate import MOVE_LOGGED
from worldweave.server.scheduling import default_engine_threads
from worldweave.sim_clients import conversions
from worldweave.sim_clients import world_state as ws
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.retry import RetryPolicy

CLIENT_COUNTS = (1, 16, 64)
UNBOUNDED_QUEUE = 1_000_000
"""Queue bounds no load here reaches: admission control off."""
UNBOUNDED_WORKERS = 8
"""Engine threads of the ``unbounded`` configuration (the server's default before they were sized from the cores)."""
RETRY = RetryPolicy()
"""The SDK's default retry policy: its jitter is what the load's clients add to the server's suggested delay."""
CALL_TIMEOUT_S = 120.0
POSES = yaw_poses(16, max_yaw_deg=8.0)
RAW = conversions.frame_format("raw")
RSS_PRIME_STEPS = 300
"""Untimed steps per world before the stepping memory phase: the wall world's voxels saturate within ~200 steps of
these poses and its change log keeps 256 versions, so after them a step changes the world without growing it."""
LOAD_PRIME_CALLS = 32
"""Untimed calls per client before a load phase's timed ones (``--prime-calls``): a fresh world's steps cost more
until its first poses have been fused (128x96 wall world, in one process: a step 12.7 ms over its world's first 10
calls, 10.1 ms over calls 20-29, 9.0-9.8 ms from call 30 on), so unprimed worlds made the phase with more clients,
whose worlds each get fewer calls, measure dearer work per call."""
P99_TARGET, THROUGHPUT_TARGET = 4.0, 0.9
"""The issue's targets: p99 at 64 clients <= 4x the single client's; throughput at 64 >= 90% of 16 clients'."""


def log_time(stamp: str) -> float:
    """Wall-clock seconds of a server log line's time stamp (its first 23 characters: logging's default format)."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load_average() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def connection(address: str) -> grpc.Channel:
    """A channel with a connection of its own: the server sees each as a client of its own."""
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


# ------------------------------------------------------------------------------------------------ server process


class ServeProcess:
    """``worldweave serve`` on a free port with ``flags``; ``startup_s``: spawn to health SERVING."""

    def __init__(self, flags: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log: list[str] = []
        self.requests: list[tuple[float, str, float]] = []
        """Request log lines (with ``--log-requests``): (wall-clock seconds of the line, status, server-side ms)."""
        self.gate_moves: list[tuple[float, int]] = []
        """The engine gate's moves: (wall-clock seconds of the log line, clients' calls now run at once)."""
        spawned = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worldweave.server.cli", "serve", "--port", str(self.port), *flags],
            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"serve exited with {self.process.returncode}: {''.join(self.log[-5:])}")
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0).status
                except grpc.RpcError:
                    status = None
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.02)
        self.startup_s = time.perf_counter() - spawned

    def _read_log(self) -> None:
        for line in self.process.stderr:
            if " worldweave.requests: " in line:
                stamp, _, fields = line.partition(" INFO worldweave.requests: ")
                values = dict(field.split("=", 1) for field in fields.split() if "=" in field)
                self.requests.append((log_time(stamp), values.get("status", "?"), float(values.get("ms", "nan"))))
            else:
                self.log.append(line)
                if MOVE_LOGGED in line:
                    level = int(line.partition(MOVE_LOGGED)[2].split()[0])
                    self.gate_moves.append((log_time(line[:23]), level))

    def admitted_ms(self, start: float, end: float) -> np.ndarray:
        """Server-side latencies (ms, arrival to answer as the request log times them) of the calls answered OK
        between wall-clock seconds ``start`` and ``end``."""
        return np.array([ms for when, status, ms in list(self.requests) if start <= when <= end and status == "OK"])

    def calls_at_once(self, start: float, end: float, first: int) -> float:
        """The engine gate's level (clients' calls run at once) averaged over wall-clock seconds ``start`` to
        ``end``; ``first``: its level before its first move (the engine threads)."""
        level, at, total = first, start, 0.0
        for when, new in list(self.gate_moves):
            if when > end:
                break
            if when > at:
                total += level * (when - at)
                at = when
            level = new
        return (total + level * (end - at)) / (end - start)

    def log_line(self, marker: str) -> str:
        """The server's last log line containing ``marker`` (its message only), or ""."""
        lines = [line.split(": ", 1)[-1].strip() for line in self.log if marker in line]
        return lines[-1] if lines else ""

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def serving(flags: list[str], env: dict[str, str] | None = None):
    server = ServeProcess(flags, env)
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ clients


class Stepper:
    """A persistent Step stream on one connection, reopened after a failure (as the SDK does)."""

    def __init__(self, stub: pb_grpc.WorldServiceStub) -> None:
        self._stub = stub
        self._requests: queue.SimpleQueue | None = None
        self._responses = None

    def step(self, request: pb.StepRequest) -> pb.StepResponse:
        if self._responses is None:
            self._requests = queue.SimpleQueue()
            self._responses = self._stub.Step(iter(self._requests.get, None), timeout=CALL_TIMEOUT_S)
        self._requests.put(request)
        try:
            return next(self._responses)
        except grpc.RpcError:
            self.close()
            raise

    def close(self) -> None:
        if self._requests is not None:
            self._requests.put(None)
            self._responses.cancel()
        self._requests = self._responses = None


@dataclass
class Tally:
    """What the clients of one phase saw."""

    latencies_s: dict[str, list[float]] = field(default_factory=lambda: {"step": [], "render": [], "raycast": []})
    """Admitted calls' round trips, by kind."""
    refused: int = 0
    refusal_s: list[float] = field(default_factory=list)
    retry_after_ms: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, kind: str, call) -> bool:
        """Run ``call()``; record it; on a refusal sleep the suggested delay (times 1..1 + ``RETRY.jitter``). True when
        admitted."""
        started = time.perf_counter()
        try:
            call()
        except grpc.RpcError as error:
            took_s = time.perf_counter() - started
            hint = dict(error.trailing_metadata() or ()).get(RETRY_AFTER_METADATA_KEY)
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and hint is not None:
                with self.lock:
                    self.refused += 1
                    self.refusal_s.append(took_s)
                    self.retry_after_ms.append(int(hint))
                time.sleep(int(hint) / 1000 * random.uniform(1.0, 1.0 + RETRY.jitter))
            else:
                with self.lock:
                    self.errors.append(f"{kind}: {error.code().name} {error.details()}")
            return False
        with self.lock:
            self.latencies_s[kind].append(time.perf_counter() - started)
        return True

    def admitted(self) -> np.ndarray:
        return np.array([x for values in self.latencies_s.values() for x in values])

    def record(self) -> dict:
        """What this tally saw, as plain values (to pass between processes)."""
        return {"latencies_s": self.latencies_s, "refused": self.refused, "refusal_s": self.refusal_s,
                "retry_after_ms": self.retry_after_ms, "errors": self.errors}

    def absorb(self, record: dict) -> None:
        """Add another tally's ``record``."""
        with self.lock:
            for kind, values in record["latencies_s"].items():
                self.latencies_s[kind].extend(values)
            self.refused += record["refused"]
            self.refusal_s.extend(record["refusal_s"])
            self.retry_after_ms.extend(record["retry_after_ms"])
            self.errors.extend(record["errors"])


def make_worlds(address: str, count: int, width: int, height: int, prefix: str) -> list[str]:
    frames, intrinsics = wall_seed(width, height)
    with WorldClient(address, timeout_s=CALL_TIMEOUT_S) as client:
        return [client.worlds.create(frames, intrinsics, world_id=f"{prefix}{i}").world_id for i in range(count)]


def delete_worlds(address: str, world_ids: list[str]) -> None:
    with WorldClient(address, timeout_s=CALL_TIMEOUT_S) as client:
        for world_id in world_ids:
            client.worlds.delete(world_id)


RAYS = 256
"""Rays per raycast of the "view" clients."""


def _client(address: str, world_id: str, mode: str, offset: int, seconds: float, tally: Tally, start, prime: int) -> None:
    """One client on a connection of its own (see ``run_clients``); ``start``: the barrier all clients pass after
    priming (a ``threading.Barrier`` or a ``multiprocessing`` one)."""
    origins = np.tile([0.0, 0.0, 1.5], (RAYS, 1))
    directions = np.column_stack([np.ones(RAYS), np.linspace(-0.6, 0.6, RAYS), np.zeros(RAYS)])
    with connection(address) as channel:
        stub = pb_grpc.WorldServiceStub(channel)
        stepper = Stepper(stub)

        def call(i: int, into: Tally) -> bool:
            pose = POSES[(offset + i) % len(POSES)]
            if mode == "step" or (mode == "mixed" and i % 2 == 0):
                return into.call("step", lambda: stepper.step(conversions.step_request(world_id, pose, RAW)))
            if mode == "mixed" or i % 2 == 0:
                return into.call("render", lambda: stub.Render(conversions.render_request(world_id, pose, RAW),
                                                               timeout=CALL_TIMEOUT_S))
            request = ws.raycast_request(world_id, origins, directions, 6.0)
            return into.call("raycast", lambda: stub.Raycast(request, timeout=CALL_TIMEOUT_S))

        untimed = Tally()
        for i in range(prime):
            while not call(i, untimed) and not untimed.errors:
                pass
        tally.errors.extend(untimed.errors)
        start.wait(timeout=600)
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            call(i, tally)
            i += 1
        stepper.close()


def _client_threads(address: str, plans: list[tuple[str, str, int]], seconds: float, tally: Tally, start,
                    prime: int) -> None:
    threads = [threading.Thread(target=_client, args=(address, *plan, seconds, tally, start, prime)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _client_process(address: str, plans: list[tuple[str, str, int]], seconds: float, prime: int, start,
                    results: multiprocessing.Queue, nice: int) -> None:
    """A client process: ``plans`` as threads; puts what they saw (``Tally.record``) on ``results``."""
    os.nice(nice)
    tally = Tally()
    _client_threads(address, plans, seconds, tally, start, prime)
    results.put(tally.record())


def run_clients(address: str, plans: list[tuple[str, str]], seconds: float, tally: Tally, prime: int = 2,
                processes: int = 1, nice: int = 0) -> float:
    """One client per ``(world_id, mode)``, each on a connection of its own, for ``seconds`` after ``prime`` untimed
    calls that prime its world (a fresh world's first calls build its state; its first steps grow it); returns the
    wall-clock time (``time.time()``) the timed calls began. Modes: "mixed" (step, render, step, ...), "step", "view"
    (render, raycast, ...). Client i starts at pose i, so that the worlds do not step through the same poses in
    lockstep. ``processes`` > 1 spreads the clients (threads) over that many client processes (started with spawn,
    at ``nice`` niceness), so that their own GIL does not delay them."""
    numbered = [(world_id, mode, i) for i, (world_id, mode) in enumerate(plans)]
    processes = max(1, min(processes, len(plans)))
    if processes == 1:
        start = threading.Barrier(len(plans) + 1)
        parent = threading.Thread(target=_client_threads, args=(address, numbered, seconds, tally, start, prime))
        parent.start()
        start.wait(timeout=600)
        began = time.time()
        parent.join()
        return began
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(len(plans) + 1), context.Queue()
    children = [context.Process(target=_client_process,
                                args=(address, numbered[k::processes], seconds, prime, start, results, nice))
                for k in range(processes)]
    for child in children:
        child.start()
    start.wait(timeout=600)
    began = time.time()
    for _ in children:
        tally.absorb(results.get(timeout=seconds + 600))
    for child in children:
        child.join()
    return began


# ------------------------------------------------------------------------------------------------ phases


def load_phase(server: ServeProcess, clients: int, seconds: float, width: int, height: int, processes: int,
               nice: int, prime: int, threads: int) -> dict:
    """``clients`` clients stepping and rendering for ``seconds`` after ``prime`` untimed calls each
    (``run_clients``) on a server of ``threads`` engine threads: what they saw (the ``Tally``'s
    record), the admitted calls' latencies as the server's request log timed them (the server runs with
    ``--log-requests``) and the load averages before and after."""
    worlds = make_worlds(server.address, clients, width, height, "soak")
    tally = Tally()
    before = load_average()
    began = run_clients(server.address, [(w, "mixed") for w in worlds], seconds, tally, prime=prime,
                        processes=processes, nice=nice)
    time.sleep(0.2)  # the last request lines reach the log reader
    server_ms = server.admitted_ms(began, began + seconds)
    delete_worlds(server.address, worlds)
    return {"clients": clients, "seconds": seconds, "tally": tally, "server_ms": server_ms, "load_before": before,
            "load_after": load_average().split(" ", 2)[2],
            "calls_at_once": server.calls_at_once(began, began + seconds, threads)}


def summary(phases: list[dict]) -> dict[str, float]:
    """One client count's figures over its ``phases`` (``load_phase`` results, all with that count) taken together:
    calls per second over their summed time, percentiles over all their admitted calls."""
    tally = Tally()
    for phase in phases:
        tally.absorb(phase["tally"].record())
    admitted = tally.admitted()
    server_ms = np.concatenate([phase["server_ms"] for phase in phases])
    seconds = sum(phase["seconds"] for phase in phases)
    return {
        "server_calls": len(server_ms), "server_p50_ms": float(np.percentile(server_ms, 50)),
        "server_p99_ms": float(np.percentile(server_ms, 99)),
        "clients": phases[0]["clients"], "calls_s": len(admitted) / seconds, "admitted": len(admitted),
        "refused": tally.refused,
        "refusal_ms": 1e3 * float(np.median(tally.refusal_s)) if tally.refusal_s else float("nan"),
        "retry_ms": float(np.median(tally.retry_after_ms)) if tally.retry_after_ms else float("nan"),
        "errors": len(tally.errors), "first_error": tally.errors[0] if tally.errors else "",
        "p50_ms": 1e3 * float(np.percentile(admitted, 50)), "p99_ms": 1e3 * float(np.percentile(admitted, 99)),
        "max_ms": 1e3 * float(admitted.max()), "load": f"{phases[0]['load_before']} -> {phases[-1]['load_after']}",
        "rounds_calls_s": [len(phase["tally"].admitted()) / phase["seconds"] for phase in phases],
        "rounds_at_once": [phase["calls_at_once"] for phase in phases],
    }


def load_phases(server: ServeProcess, args: argparse.Namespace, threads: int) -> list[dict[str, float]]:
    """The load phases of one server: 1, 16 and 64 clients in turn for ``args.rounds`` rounds (so that a slow spell of
    this shared machine falls on every count); a summary per client count."""
    def phase(clients: int) -> dict:
        return load_phase(server, clients, args.seconds, args.width, args.height, args.client_processes,
                          args.client_nice, args.prime_calls, threads)

    by_count: dict[int, list[dict]] = {n: [] for n in CLIENT_COUNTS}
    for _ in range(args.rounds):
        for clients in CLIENT_COUNTS:
            by_count[clients].append(phase(clients))
    return [summary(by_count[n]) for n in CLIENT_COUNTS]


def fair_phase(
    address: str, streams: list[int], seconds: float, width: int, height: int
) -> tuple[list[float], int, int]:
    """Shares of one world's steps of clients with ``streams[i]`` streams each over one connection; total steps;
    refusals (retried as the SDK does)."""
    world_id, = make_worlds(address, 1, width, height, "fair")
    counts = [0] * len(streams)
    start = threading.Barrier(sum(streams))
    lock = threading.Lock()
    tally = Tally()

    def stream(client: int, channel: grpc.Channel) -> None:
        stepper = Stepper(pb_grpc.WorldServiceStub(channel))
        start.wait(timeout=60)
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            request = conversions.step_request(world_id, POSES[i % len(POSES)], RAW)
            if not tally.call("step", lambda: stepper.step(request)):
                continue
            i += 1
            with lock:
                counts[client] += 1
        stepper.close()

    channels = [connection(address) for _ in streams]
    threads = [threading.Thread(target=stream, args=(client, channels[client]))
               for client, n in enumerate(streams) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for channel in channels:
        channel.close()
    delete_worlds(address, [world_id])
    if tally.errors:
        raise RuntimeError(f"fair-share phase errors: {tally.errors[:3]}")
    total = sum(counts)
    return [count / total for count in counts], total, tally.refused


def rss_phase(server: ServeProcess, mode: str, seconds: float, width: int, height: int) -> dict[str, float]:
    """RSS growth per minute of the server while 4 clients run ``mode`` ("step" or "view") for ``seconds``, after
    priming their worlds (``RSS_PRIME_STEPS`` steps each before stepping: the worlds stop growing)."""
    worlds = make_worlds(server.address, 4, width, height, f"rss{mode}")
    tally = Tally()
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not done.wait(0.5):
            samples.append((time.monotonic() - started, server.rss_mb()))

    sampler = threading.Thread(target=sample)
    run_clients(server.address, [(w, mode) for w in worlds], 0.0, Tally(), prime=RSS_PRIME_STEPS if mode == "step" else 2)
    sampler.start()
    run_clients(server.address, [(w, mode) for w in worlds], seconds, tally, prime=0)
    done.set()
    sampler.join()
    delete_worlds(server.address, worlds)
    t, rss = np.array(samples).T
    keep = t >= 0.2 * t[-1]
    slope_mb_s = float(np.polyfit(t[keep], rss[keep], 1)[0])
    return {"mb_per_min": 60 * slope_mb_s, "start_mb": float(rss[0]), "end_mb": float(rss[-1]),
            "calls": len(tally.admitted()), "errors": len(tally.errors)}


def first_calls(flags: list[str], cold_cache: bool, width: int, height: int) -> dict[str, float | str]:
    """Start-up time and the first calls' latencies on a fresh server with ``flags``."""
    with tempfile.TemporaryDirectory() as cache:
        with serving(flags, {"NUMBA_CACHE_DIR": cache} if cold_cache else None) as server:
            out: dict[str, float | str] = {"startup_s": server.startup_s, "warmup": server.log_line("engine warm-up: ")}
            frames, intrinsics = wall_seed(width, height)
            origins = np.tile([0.0, 0.0, 1.5], (1024, 1))
            directions = np.column_stack([np.ones(1024), np.linspace(-0.6, 0.6, 1024), np.zeros(1024)])
            with WorldClient(server.address, timeout_s=600) as client:
                calls = [
                    ("create_s", lambda: client.worlds.create(frames, intrinsics, world_id="first")),
                    ("raycast_s", lambda: client.queries.raycast("first", origins, directions, 6.0)),
                    ("capsule_s", lambda: client.queries.check_capsules("first", origins[:64], origins[:64] + directions[:64], 0.1)),
                    ("step_s", lambda: client.step("first", POSES[1], depth=None)),
                    ("render_s", lambda: client.render("first", POSES[2])),
                ]
                for name, call in calls:
                    started = time.perf_counter()
                    call()
                    out[name] = time.perf_counter() - started
            return out


# ------------------------------------------------------------------------------------------------ report


def config_flags(name: str, args: argparse.Namespace) -> list[str]:
    """``worldweave serve`` flags of the load configuration ``name``."""
    if name == "unbounded":
        return ["--workers", str(UNBOUNDED_WORKERS), "--max-queued-per-world", str(UNBOUNDED_QUEUE),
                "--max-queued-total", str(UNBOUNDED_QUEUE)]
    if name == "custom":
        return ["--workers", str(args.workers), "--max-queued-total", str(args.queue)]
    if name == "adaptive":
        return ["--adaptive-concurrency"]
    return []


def config_threads(flags: list[str]) -> int:
    """The engine threads of a server started with ``flags`` (``config_flags``): its ``--workers``, or the default."""
    return int(flags[flags.index("--workers") + 1]) if "--workers" in flags else default_engine_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per load phase (default 10)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the 1-, 16- and 64-client phases, in turn (default 3); each figure is over all "
                             "rounds")
    parser.add_argument("--prime-calls", type=int, default=LOAD_PRIME_CALLS,
                        help=f"untimed calls per client on its fresh world before each load phase (default "
                             f"{LOAD_PRIME_CALLS}: a young world's steps cost more)")
    parser.add_argument("--fair-seconds", type=float, default=30.0, help="seconds of the 4-client fair-share phase")
    parser.add_argument("--rss-seconds", type=float, default=30.0, help="seconds of each memory phase")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--configs", nargs="+", default=["unbounded", "default"],
                        choices=["unbounded", "default", "adaptive", "custom"],
                        help="server configurations of the load phases")
    parser.add_argument("--workers", type=int, default=2, help="engine threads of the 'custom' configuration")
    parser.add_argument("--queue", type=int, default=2, help="--max-queued-total of the 'custom' configuration")
    parser.add_argument("--client-processes", type=int, default=8,
                        help="processes the load's clients are spread over (default 8; 1: threads of this process)")
    parser.add_argument("--client-nice", type=int, default=0,
                        help="niceness added to the client processes (with --client-processes > 1)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["load", "fair", "memory", "startup"],
                        help="phases to leave out")
    parser.add_argument("--generator", default=DEFAULT_GENERATOR, choices=available(),
                        help="the servers' generator (default: %(default)s, the server's default)")
    parser.add_argument("--cold-cache", action="store_true",
                        help="start-up phase with an empty numba cache per server (a fresh install; minutes)")
    args = parser.parse_args()
    generator = ["--generator", args.generator]
    print(f"Soak over loopback, `{args.generator}` generator, {args.width}x{args.height} raw RGB, {os.cpu_count()} cores "
          f"shared with other work; {load_average()} at start")
    print()

    # 1. load
    results: dict[str, list[dict]] = {}
    for name in args.configs if "load" not in args.skip else []:
        flags = config_flags(name, args)
        with serving([*generator, *flags, "--log-requests"]) as server:
            results[name] = load_phases(server, args, config_threads(flags))
    if results:
        print(f"Load: each client steps and renders one pose alternately on its own world, {args.seconds:.0f} s "
              f"per phase: 1, 16 and 64 clients in turn for {args.rounds} round(s), each count's figures over all its "
              "rounds. "
              f"Refusals (RESOURCE_EXHAUSTED + retry-after-ms) are retried after the hint x U(1, {1 + RETRY.jitter:g}), "
              "as the SDK does, and counted apart.")
        print()
        print("Admitted-call latency two ways: as the clients saw it (send to answer, including the client process's own "
              "wait for a core) and as the server timed it (its request log: arrival to answer, including the wait for "
              f"the world and an engine thread). Clients spread over {args.client_processes} processes"
              + (f" at niceness +{args.client_nice}" if args.client_nice and args.client_processes > 1 else "") + ".")
        print()
        print("| config (serve flags) | clients | admitted calls/s | vs 16 clients | refused (per admitted call; median ms to refuse, hint ms) "
              "| errors | client p50 / p99 ms | client p99 vs 1 client | client max ms | server p50 / p99 ms "
              "| server p99 vs 1 client | load |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        verdicts = []
        for name, rows in results.items():
            single, sixteen = rows[0], rows[1]
            flags = " ".join(config_flags(name, args)) or "defaults"
            for r in rows:
                refused = (f"{r['refused']} ({r['refused'] / max(1, r['admitted']):.2f}; {r['refusal_ms']:.1f}, "
                           f"{r['retry_ms']:.0f})") if r["refused"] else "0"
                print(f"| {name} ({flags}) | {r['clients']} | {r['calls_s']:.1f} | {r['calls_s'] / sixteen['calls_s']:.2f}x "
                      f"| {refused} | {r['errors']} | {r['p50_ms']:.0f} / {r['p99_ms']:.0f} | "
                      f"{r['p99_ms'] / single['p99_ms']:.1f}x | {r['max_ms']:.0f} | {r['server_p50_ms']:.0f} / "
                      f"{r['server_p99_ms']:.0f} | {r['server_p99_ms'] / single['server_p99_ms']:.1f}x | {r['load']} |")
            last = rows[-1]
            if args.rounds > 1:
                per_round = ("; ".join(f"{r['clients']} clients " + " / ".join(
                    f"{x:.1f} ({level:.2f})" for x, level in zip(r["rounds_calls_s"], r["rounds_at_once"]))
                    for r in rows))
                verdicts.append(f"* {name}, admitted calls/s per round (the engine gate's mean calls at once): "
                                f"{per_round}")
            throughput_ratio = last["calls_s"] / sixteen["calls_s"]
            errors = sum(r["errors"] for r in rows)
            for side, key in (("client", "p99_ms"), ("server", "server_p99_ms")):
                p99_ratio = last[key] / single[key]
                ok = p99_ratio <= P99_TARGET and throughput_ratio >= THROUGHPUT_TARGET and errors == 0
                verdicts.append(
                    f"* {name}, {side}-side latency: p99 at 64 clients {p99_ratio:.1f}x the single client's (target <= "
                    f"{P99_TARGET:.0f}x), throughput {throughput_ratio:.0%} of 16 clients' (target >= "
                    f"{THROUGHPUT_TARGET:.0%}), {errors} errors: {'meets' if ok else 'misses'} the targets"
                    + (f" (first error: {next(r['first_error'] for r in rows if r['first_error'])})" if errors else ""))
        print()
        print("\n".join(verdicts))
        print()

    # 2. memory, 3. fair share (server defaults); memory first, so that no world deleted before it frees memory in it
    if not {"memory", "fair"} <= set(args.skip):
        with serving(generator) as server:
            if "memory" not in args.skip:
                memory = {mode: rss_phase(server, mode, args.rss_seconds, args.width, args.height)
                          for mode in ("view", "step")}
            if "fair" not in args.skip:
                four, four_total, four_refused = fair_phase(server.address, [1, 1, 1, 1], args.fair_seconds,
                                                            args.width, args.height)
                pair, pair_total, pair_refused = fair_phase(server.address, [3, 1], args.fair_seconds / 2,
                                                            args.width, args.height)
    if "fair" not in args.skip:
        print(f"Fair share of one world's steps (server defaults): 4 clients for {args.fair_seconds:.0f} s, "
              f"{four_total} steps ({four_refused} refusals): " + ", ".join(f"{share:.1%}" for share in four)
              + f" (target: each >= 20%; equal share 25%). A client with 3 streams against one with 1 stream for "
              f"{args.fair_seconds / 2:.0f} s, {pair_total} steps ({pair_refused} refusals): {pair[0]:.1%} vs "
              f"{pair[1]:.1%} (first-come-first-served would give 75% vs 25%)")
        print()
    if "memory" not in args.skip:
        print(f"| server RSS, 4 clients for {args.rss_seconds:.0f} s | MB at start | MB at end | growth MB/min | calls "
              "| errors |")
        print("|---|---|---|---|---|---|")
        labels = {"step": "stepping (worlds change)", "view": "rendering + raycasting (nothing changes)"}
        for mode, r in memory.items():
            print(f"| {labels[mode]} | {r['start_mb']:.0f} | {r['end_mb']:.0f} | {r['mb_per_min']:+.1f} | {r['calls']} "
                  f"| {r['errors']} |")
        print()

    # 4. start-up and first calls
    if "startup" not in args.skip:
        cache = "an empty numba cache per server (fresh install)" if args.cold_cache else "the machine's numba cache"
        starts = {label: first_calls([*generator, *flags], args.cold_cache, args.width, args.height)
                  for label, flags in (("warm-up (default)", []), ("--no-warm-up", ["--no-warm-up"]))}
        print(f"Start-up with {cache}: spawn to health SERVING, then the first calls on a fresh world")
        print()
        print("| server | spawn to SERVING s | create world s | first raycast (1024 rays) s | first capsule check s | "
              "first step s | first render s |")
        print("|---|---|---|---|---|---|---|")
        for label, r in starts.items():
            print(f"| {label} | {r['startup_s']:.1f} | {r['create_s']:.2f} | {r['raycast_s']:.3f} | "
                  f"{r['capsule_s']:.3f} | {r['step_s']:.3f} | {r['render_s']:.3f} |")
        print()
        print(f"Server log: {starts['warm-up (default)']['warmup']}")
    print(f"{load_average()} at the end")


if __name__ == "__main__":
    main()
