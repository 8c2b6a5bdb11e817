"""The cluster front door (``worldweave serve --ray``) beside the single-process server, in one run (issue 23).

    python benchmarks/bench_cluster.py [--clients 1 2 4] [--seconds 4] [--calls 200] [--width 320 --height 240]

Three targets, each measured by the same client process (``--client``), so that no target shares a process with
the clients: the single-process server (``worldweave serve`` in a subprocess, the default generator), then a local
Ray cluster whose front door runs in this process with 2 replicas (new worlds alternate between them), then scaled
down to 1 (``FrontDoor.scale(1)``). Per target:

* **frames/s**: for each count in ``--clients``, that many threads, each stepping its own world one pose per call
  for ``--seconds``, and the total beside one client's (how far the target's throughput grows with its clients);
* **latency per call**, median and p90 of ``--calls`` sequential calls: GetWorld (a small unary call) and a
  one-pose Step; through the front door also the same calls sent straight to the replica's own port (with its
  token), so that the front door's added latency is measured against the same replica process as well as against
  the single-process server.

For the single-process server, the CPU time its process and the client process spend per frame at each client
count (``/proc/PID/stat``, every thread): the cores the pair keeps busy, and the ceiling that sets on how far more
clients can go on this machine. Clients stepping their own worlds back to back can give at most the machine's cores
over the CPU time of a frame, so total frames/s with more clients are at most cores / (cores busy with one client)
times one client's, however well the server overlaps them: a lone world whose kernels split over every core keeps
more than one core busy, and leaves the others less to add.

Replicas and the single-process server get the same flags (generator, ``--workers``). On a machine with fewer
cores than replicas x engine threads, 2 replicas cannot beat 1: the numbers say what this machine does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

SERVER_ARGS = ("--workers", "2")
"""Flags of the single-process server and of every replica."""


# ------------------------------------------------------------------------------------------------ client process


def client(target: str, token: str, direct: str, prefix: str, clients: list[int], seconds: float, calls: int,
           width: int, height: int, server_pid: int) -> None:
    """Client process: creates ``max(clients)`` worlds on ``target``, measures, prints one JSON line. With a
    ``server_pid`` (the server on this machine), each frames/s run also reports CPU time per frame."""
    from worldweave.bridge.eval.wall import wall_seed, yaw_poses
    from worldweave.proto.worldweave.v1 import world_pb2 as pb
    from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
    from worldweave.sim_clients.conversions import pose_messages, seed_message

    options = [("grpc.max_receive_message_length", 128 << 20), ("grpc.max_send_message_length", 128 << 20)]
    stub = pb_grpc.WorldServiceStub(grpc.insecure_channel(target, options=options))
    frames, intrinsics = wall_seed(width, height)
    seed = seed_message(frames, intrinsics)
    worlds = [f"{prefix}-{k}" for k in range(max(clients))]
    for world_id in worlds:
        stub.CreateWorld(pb.CreateWorldRequest(world_id=world_id, seed=seed), timeout=120)
    poses = [pose_messages(p[None]) for p in yaw_poses(32)]

    def step(s: pb_grpc.WorldServiceStub, world_id: str, k: int, metadata=()) -> None:
        request = pb.StepRequest(world_id=world_id, poses=poses[k % len(poses)])
        for _ in s.Step(iter([request]), timeout=60, metadata=metadata):
            pass

    def latencies(s: pb_grpc.WorldServiceStub, metadata=()) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"get_world_ms": [], "step_ms": []}
        for k in range(calls + 10):
            started = time.perf_counter()
            s.GetWorld(pb.GetWorldRequest(world_id=worlds[0]), timeout=30, metadata=metadata)
            if k >= 10:
                out["get_world_ms"].append((time.perf_counter() - started) * 1e3)
        for k in range(calls // 4 + 5):
            started = time.perf_counter()
            step(s, worlds[0], k, metadata)
            if k >= 5:
                out["step_ms"].append((time.perf_counter() - started) * 1e3)
        return out

    result = {"latency": summary(latencies(stub))}
    if direct:
        replica = pb_grpc.WorldServiceStub(grpc.insecure_channel(direct, options=options))
        result["latency_direct"] = summary(latencies(replica, (("authorization", f"Bearer {token}"),)))
    runs = {str(count): frames_per_s(stub, worlds[:count], step, seconds, server_pid) for count in clients}
    result["frames_per_s"] = {count: run["frames_per_s"] for count, run in runs.items()}
    if server_pid:
        result["cpu"] = {count: {key: run[key] for key in ("server_ms", "client_ms", "cores_busy")}
                         for count, run in runs.items()}
    print(json.dumps(result))


def process_cpu_s(pid: int) -> float:
    """CPU seconds process ``pid`` has spent so far, all its threads, user and system (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def frames_per_s(stub, worlds: list[str], step, seconds: float, server_pid: int) -> dict[str, float]:
    """Total frames/s of one thread per world, each stepping its own world back to back for ``seconds``; with a
    ``server_pid``, also the server's and this process's CPU ms per frame and the cores both keep busy."""
    counts = [0] * len(worlds)
    stop = time.perf_counter() + seconds

    def run(index: int) -> None:
        while time.perf_counter() < stop:
            step(stub, worlds[index], counts[index])
            counts[index] += 1

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(worlds))]
    server_cpu, client_cpu = (process_cpu_s(server_pid) if server_pid else 0.0), time.process_time()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed, frames = time.perf_counter() - started, max(1, sum(counts))
    out = {"frames_per_s": sum(counts) / elapsed}
    if server_pid:
        server_s, client_s = process_cpu_s(server_pid) - server_cpu, time.process_time() - client_cpu
        out.update(server_ms=server_s / frames * 1e3, client_ms=client_s / frames * 1e3,
                   cores_busy=(server_s + client_s) / elapsed)
    return out


def summary(samples: dict[str, list[float]]) -> dict[str, tuple[float, float]]:
    """Median and p90 of each list, milliseconds."""
    return {name: (statistics.median(values), statistics.quantiles(values, n=10)[-1])
            for name, values in samples.items()}


def measure(args: argparse.Namespace, target: str, prefix: str, token: str = "", direct: str = "",
            server_pid: int = 0) -> dict:
    command = [sys.executable, __file__, "--client", target, "--token", token, "--direct", direct, "--prefix", prefix,
               "--server-pid", str(server_pid),
               "--clients", *map(str, args.clients), "--seconds", str(args.seconds), "--calls", str(args.calls),
               "--width", str(args.width), "--height", str(args.height)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"client failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ targets


def single_process(args: argparse.Namespace) -> dict:
    """The single-process server in a subprocess, as ``worldweave serve`` runs it."""
    command = [sys.executable, "-m", "worldweave.server.cli", "serve", "--port", "0", *SERVER_ARGS]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        while port is None:
            line = server.stderr.readline()
            if not line:
                raise RuntimeError(f"serve exited with {server.poll()}")
            found = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else None
        return measure(args, f"127.0.0.1:{port}", "single", server_pid=server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stderr.close()


def cluster(args: argparse.Namespace) -> dict[str, dict]:
    """A local Ray cluster, the front door in this process: 2 replicas (new worlds alternate between them), then
    scaled down to 1 (the second drained: its worlds saved and loaded on the first) with new worlds."""
    from worldweave.server.cluster.placement import WorkerCapacity
    from worldweave.server.cluster.ray_cluster import BackgroundCluster, ClusterConfig, connect, disconnect

    out = {}
    with tempfile.TemporaryDirectory() as shared:
        config = ClusterConfig(shared_dir=Path(shared), replicas=2, capacity=WorkerCapacity(16), cpus_per_replica=0.5,
                               local_cpus=2, server_args=SERVER_ARGS)
        local = connect(config)
        try:
            with BackgroundCluster(config) as running:
                door = running.front_door
                for count in (2, 1):
                    running.run(door.scale(count))
                    first = door.replica(door.worker_ids[0])  # where each run's first world goes (ties: first added)
                    out[f"{count} replica(s)"] = measure(args, running.address, f"cluster{count}", door.replica_token,
                                                         first.address)
        finally:
            disconnect(local)
    return dict(sorted(out.items()))


def print_ceiling(result: dict) -> None:
    """The single-process server's CPU per frame at each client count, and the ceiling one client's sets."""
    from worldweave.bridge.cores import machine_cores

    cores = machine_cores()  # what the server counts: its affinity mask, at most its cgroup's CPU quota
    print(f"single process, CPU per frame (every thread of each process) on {cores} cores:")
    print(f"{'clients':>8}{'frames/s':>10}{'server ms':>11}{'client ms':>11}{'cores busy':>12}")
    for count, cpu in result["cpu"].items():
        print(f"{count:>8}{result['frames_per_s'][count]:>10.1f}{cpu['server_ms']:>11.2f}{cpu['client_ms']:>11.2f}"
              f"{cpu['cores_busy']:>12.2f}")
    if "1" in result["cpu"]:
        busy = result["cpu"]["1"]["cores_busy"]
        print(f"ceiling: more clients give at most {cores} / {busy:.2f} cores busy with one client = "
              f"{cores / busy:.2f}x one client's frames/s on this machine")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4],
                        help="client counts to measure frames/s at (each client steps its own world)")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--client", default="", help=argparse.SUPPRESS)
    parser.add_argument("--token", default="", help=argparse.SUPPRESS)
    parser.add_argument("--direct", default="", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client(args.client, args.token, args.direct, args.prefix, args.clients, args.seconds, args.calls, args.width,
               args.height, args.server_pid)
        return
    results = {"single process": single_process(args), **cluster(args)}
    base = results["single process"]["latency"]
    print(f"{args.width}x{args.height}, one pose per step, {args.seconds:.0f} s per client count; "
          f"load average {Path('/proc/loadavg').read_text().split()[0]}")
    print(f"{'target':<22}" + "".join(f"{f'{count} client(s) frames/s':>24}" for count in args.clients))
    for name, result in results.items():
        rates = result["frames_per_s"]
        one = rates.get("1")
        print(f"{name:<22}" + "".join(
            f"{rates[str(count)]:>14.1f}" + (f" ({rates[str(count)] / one:.2f}x)" if one else "").rjust(10)
            for count in args.clients))
    print_ceiling(results["single process"])
    print(f"{'target':<22}{'GetWorld p50/p90 ms':>22}{'Step p50/p90 ms':>20}{'replica direct GetWorld / Step p50':>38}")
    for name, result in results.items():
        get, step = result["latency"]["get_world_ms"], result["latency"]["step_ms"]
        direct = result.get("latency_direct")
        beside = (f"{direct['get_world_ms'][0]:.2f} / {direct['step_ms'][0]:.2f}" if direct else "")
        print(f"{name:<22}{get[0]:>12.2f} / {get[1]:<7.2f}{step[0]:>10.2f} / {step[1]:<7.2f}{beside:>30}")
    for name, result in results.items():
        if name == "single process":
            continue
        added_get = result["latency"]["get_world_ms"][0] - base["get_world_ms"][0]
        added_step = result["latency"]["step_ms"][0] - base["step_ms"][0]
        hop_get = result["latency"]["get_world_ms"][0] - result["latency_direct"]["get_world_ms"][0]
        hop_step = result["latency"]["step_ms"][0] - result["latency_direct"]["step_ms"][0]
        print(f"front door added, {name}: GetWorld {added_get:+.2f} ms, Step {added_step:+.2f} ms over the single "
              f"process; {hop_get:+.2f} / {hop_step:+.2f} ms over the same replica called directly (target <= 2 ms)")


if __name__ == "__main__":
    main()
