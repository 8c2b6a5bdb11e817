"""World state over gRPC (issue 8), every figure beside its baseline from the same run, over loopback.

    python benchmarks/bench_world_state.py [--voxels 2000000] [--rows fused|key] [--rounds 3] [--queries 100000]
                                           [--clients 1 4 16] [--seconds 10] [--width 320 --height 240]

A server process (``--serve``) holds a worldweave server and, on the same grpc.aio server, baseline methods that
reach into the same worlds:

* **Point cloud.** A world of ``--voxels`` voxels (a 2 cm terrain inserted with InsertPoints beside a small seed, in
  random order: a map's rows are in the order its voxels were first fused, which the stream sorts into key order;
  ``--rows key`` inserts them in key order, the best case).
  ``StreamPointCloud`` snapshot decoded by the client, and ``PointCloudMirror`` built from it (seconds to mirror),
  beside a raw server-streaming call sending the very same serialized chunks, prepared in advance (the transport
  floor), and the server's own time to read the map and cut the chunks. MB/s counts chunk payload bytes.
* **Queries.** ``--queries`` raycasts and nearest-surface queries in one call over gRPC, beside the same
  ``WorldQueries`` call on the same world inside the server process (same inputs, seeded).
* **Concurrency.** 1, 4, 16 client threads, each stepping its own ``reproject`` world for ``--seconds``: frames/s,
  p50 / p99 round trip, errors; beside one client's median time inside ``World.step``.

Medians over ``--rounds``; the 2 CPU cores are shared with other work, so the numbers are noisy: compare figures of
one run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time

import grpc
import numpy as np

RAW_SERVICE = "bench.WorldState"
VOXEL_M = 0.02


def terrain(voxels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``voxels`` points on a smooth terrain, one per 2 cm cell (distinct voxels), with random colours."""
    side = int(np.ceil(np.sqrt(voxels)))
    i, j = np.divmod(np.arange(voxels), side)
    x, y = (i - side // 2 + 0.5) * VOXEL_M, (j - side // 2 + 0.5) * VOXEL_M  # cell centres, never on a boundary
    z = 0.4 * np.sin(x / 3.0) * np.cos(y / 4.0) - 0.5
    colors = np.random.default_rng(seed).integers(0, 256, size=(voxels, 3), dtype=np.uint8)
    return np.column_stack([x, y, z]).astype(np.float32), colors


def query_inputs(kind: str, n: int, extent_m: float, seed: int) -> dict[str, np.ndarray]:
    """Seeded query batches over the terrain (the same in client and server)."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-extent_m / 2, extent_m / 2, size=(n, 2))
    if kind == "raycast":
        origins = np.column_stack([xy, np.full(n, 2.0)]).astype(np.float32)
        directions = np.column_stack([rng.normal(scale=0.3, size=(n, 2)), -np.ones(n)]).astype(np.float32)
        return {"origins": origins, "directions": directions}
    return {"points": np.column_stack([xy, rng.uniform(-1.2, 0.5, size=n)]).astype(np.float32)}


# ------------------------------------------------------------------------------------------------ server process


def serve() -> None:
    """Server process: worldweave + baselines on one grpc.aio server; prints its port, runs until stdin closes."""
    from worldweave.proto.malloc import tune_malloc
    from worldweave.server.app import ServerConfig, create_server
    from worldweave.proto.worldweave.v1 import world_pb2 as pb
    from worldweave.server.point_cloud import DEFAULT_CHUNK_BYTES, cut_changes, read_changes
    from worldweave.server.world_state import request_level

    tune_malloc()
    prepared: dict[str, list[bytes]] = {}

    async def main() -> None:
        server, port = create_server("127.0.0.1:0", ServerConfig(workers=20))
        registry = server.registry

        async def prepare(request: bytes, context) -> bytes:
            """Read and chunk a world's snapshot as StreamPointCloud does (at the world's default level, read under
            the world's lock, sorted and cut on the stream's thread); keep the serialized chunks."""
            world_id = request.decode()
            entry = registry.entry(world_id)
            started = time.perf_counter()
            level = request_level(entry, pb.StreamPointCloudRequest())  # the world's default, as the stream's
            changes, voxel_size_m = await registry.run(entry, lambda w: read_changes(w, 0, level))
            chunks = await cut_changes(changes, voxel_size_m, DEFAULT_CHUNK_BYTES, include_positions=False,
                                       min_confidence=level)
            seconds = time.perf_counter() - started
            prepared[world_id] = [chunk.SerializeToString() for chunk in chunks]
            return json.dumps({"seconds": seconds, "chunks": len(chunks)}).encode()

        async def raw_stream(request: bytes, context):
            for chunk in prepared[request.decode()]:
                yield chunk

        async def in_process(request: bytes, context) -> bytes:
            """Time one WorldQueries call on a world, inside the server, with the client's seeded inputs."""
            spec = json.loads(request)
            entry = registry.entry(spec["world_id"])
            inputs = query_inputs(spec["kind"], spec["n"], spec["extent_m"], spec["seed"])

            def run(world) -> float:
                queries = entry.world.queries
                queries.sync()
                started = time.perf_counter()
                if spec["kind"] == "raycast":
                    queries.raycast(inputs["origins"].astype(np.float64), inputs["directions"].astype(np.float64), 10.0)
                else:
                    queries.nearest(inputs["points"].astype(np.float64), 1.0)
                return time.perf_counter() - started

            return json.dumps({"seconds": await registry.run(entry, run)}).encode()

        server.grpc.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(RAW_SERVICE, {
            "Prepare": grpc.unary_unary_rpc_method_handler(prepare),
            "Stream": grpc.unary_stream_rpc_method_handler(raw_stream),
            "InProcess": grpc.unary_unary_rpc_method_handler(in_process),
        }),))
        await server.start()
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.stop(1.0)

    asyncio.run(main())


# ------------------------------------------------------------------------------------------------ client process


def build_world(client, voxels: int, rows: str) -> tuple[str, float]:
    """A world of the wall seed plus a ``voxels``-voxel terrain, inserted in random order (``rows`` "fused") or in
    key order ("key"); returns its id and the terrain's extent, metres."""
    from worldweave.bridge.eval.wall import wall_seed

    frames, intrinsics = wall_seed(64, 48)
    world_id = client.worlds.create(frames, intrinsics, voxel_size_m=VOXEL_M).world_id
    points, colors = terrain(voxels)
    if rows == "fused":
        order = np.random.default_rng(1).permutation(voxels)
        points, colors = points[order], colors[order]
    for start in range(0, voxels, 1_000_000):
        client.edits.insert_points(world_id, points[start:start + 1_000_000], colors[start:start + 1_000_000], timeout_s=600)
    return world_id, float(np.ceil(np.sqrt(voxels)) * VOXEL_M)


def bench_point_cloud(client, channel, world_id: str, rounds: int) -> dict[str, float]:
    from worldweave.sim_clients.mirror import PointCloudMirror

    prepare = channel.unary_unary(f"/{RAW_SERVICE}/Prepare")
    raw = channel.unary_stream(f"/{RAW_SERVICE}/Stream")
    results: dict[str, list[float]] = {"server_s": [], "raw_s": [], "stream_s": [], "mirror_s": []}
    payload = voxels = 0
    for _ in range(rounds):
        results["server_s"].append(json.loads(prepare(world_id.encode(), timeout=600))["seconds"])
        started = time.perf_counter()
        raw_bytes = sum(len(chunk) for chunk in raw(world_id.encode(), timeout=600))
        results["raw_s"].append(time.perf_counter() - started)

        started = time.perf_counter()
        chunks = list(client.point_cloud.stream(world_id, timeout_s=600))
        results["stream_s"].append(time.perf_counter() - started)
        payload = sum(c.keys.nbytes + c.colors.nbytes + c.flags.nbytes for c in chunks)

        started = time.perf_counter()
        mirror = PointCloudMirror()
        mirror.update(client.point_cloud.stream(world_id, timeout_s=600))
        results["mirror_s"].append(time.perf_counter() - started)
        voxels = len(mirror)
    out = {name: float(np.median(values)) for name, values in results.items()}
    out.update(voxels=voxels, payload_mb=payload / 1e6, raw_mb=raw_bytes / 1e6, chunks=len(chunks))
    return out


def bench_queries(client, channel, world_id: str, extent_m: float, n: int, rounds: int) -> dict[str, dict[str, float]]:
    in_process = channel.unary_unary(f"/{RAW_SERVICE}/InProcess")
    out = {}
    for kind in ("raycast", "nearest"):
        grpc_s, local_s = [], []
        for round_index in range(rounds + 1):  # round 0 warms the kernels and the surface copy
            inputs = query_inputs(kind, n, extent_m, seed=round_index)
            spec = {"world_id": world_id, "kind": kind, "n": n, "extent_m": extent_m, "seed": round_index}
            local = json.loads(in_process(json.dumps(spec).encode(), timeout=600))["seconds"]
            started = time.perf_counter()
            if kind == "raycast":
                answer = client.queries.raycast(world_id, inputs["origins"], inputs["directions"], 10.0, timeout_s=600)
                hits = float(answer.hit.mean())
            else:
                answer = client.queries.nearest_surface(world_id, inputs["points"], 1.0, timeout_s=600)
                hits = float(answer.found.mean())
            elapsed = time.perf_counter() - started
            if round_index:
                grpc_s.append(elapsed)
                local_s.append(local)
        out[kind] = {"grpc_s": float(np.median(grpc_s)), "local_s": float(np.median(local_s)), "hit_rate": hits}
    return out


def bench_concurrency(address: str, clients: int, seconds: float, width: int, height: int) -> dict[str, float]:
    from worldweave.bridge.eval.wall import wall_seed, yaw_poses
    from worldweave.sim_clients.client import WorldClient

    frames, intrinsics = wall_seed(width, height)
    poses = yaw_poses(64)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    world_step: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)

    def run(i: int) -> None:
        try:
            with WorldClient(address, timeout_s=120) as client:
                world_id = client.worlds.create(frames, intrinsics).world_id
                client.step(world_id, poses[0])  # warm-up, untimed
                barrier.wait()
                deadline = time.monotonic() + seconds
                k = 0
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    frame, = client.step(world_id, poses[k % len(poses)])
                    latencies[i].append(time.perf_counter() - started)
                    world_step[i].append(frame.timings_s["total"])
                    k += 1
                client.worlds.delete(world_id)
        except Exception as error:  # noqa: BLE001 - counted and reported
            errors.append(f"{type(error).__name__}: {error}")
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    flat = np.concatenate([np.asarray(x) for x in latencies]) if any(latencies) else np.zeros(1)
    steps = np.concatenate([np.asarray(x) for x in world_step]) if any(world_step) else np.zeros(1)
    return {"clients": clients, "frames": int(sum(len(x) for x in latencies)), "fps": sum(len(x) for x in latencies) / wall,
            "p50_ms": 1e3 * float(np.percentile(flat, 50)), "p99_ms": 1e3 * float(np.percentile(flat, 99)),
            "world_step_ms": 1e3 * float(np.median(steps)), "errors": len(errors), "first_error": errors[0] if errors else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--voxels", type=int, default=2_000_000)
    parser.add_argument("--rows", choices=["fused", "key"], default="fused",
                        help="the order the terrain is inserted in, which is the map's row order: random, as a fused "
                             "world's rows are (default), or key order, the order a stream sends")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=10.0, help="stepping time per concurrency level")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    args = parser.parse_args()
    if args.serve:
        serve()
        return

    from worldweave.proto.malloc import tune_malloc
    from worldweave.sim_clients.client import WorldClient

    tune_malloc()
    process = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        address = f"127.0.0.1:{int(process.stdout.readline())}"
        options = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]
        with WorldClient(address, timeout_s=600) as client, grpc.insecure_channel(address, options=options) as channel:
            started = time.perf_counter()
            world_id, extent_m = build_world(client, args.voxels, args.rows)
            build_s = time.perf_counter() - started
            cloud = bench_point_cloud(client, channel, world_id, args.rounds)
            queries = bench_queries(client, channel, world_id, extent_m, args.queries, args.rounds)
            client.worlds.delete(world_id)
            levels = [bench_concurrency(address, n, args.seconds, args.width, args.height) for n in args.clients]
    finally:
        process.stdin.close()
        process.wait(timeout=60)

    print(f"Point cloud: a world of {cloud['voxels']} voxels (rows in {args.rows} order, built with InsertPoints in "
          f"{build_s:.1f} s), snapshot of "
          f"{cloud['chunks']} chunks, {cloud['payload_mb']:.1f} MB of packed arrays ({cloud['raw_mb']:.1f} MB serialized); "
          f"medians of {args.rounds}, loopback")
    print()
    print("| path | seconds | MB/s | x raw stream |")
    print("|---|---|---|---|")
    for name, key, mb in [("raw gRPC stream of the same serialized chunks (floor)", "raw_s", cloud["raw_mb"]),
                          ("server: read the map + cut the chunks", "server_s", cloud["payload_mb"]),
                          ("StreamPointCloud, client decodes the chunks", "stream_s", cloud["payload_mb"]),
                          ("StreamPointCloud into a PointCloudMirror (seconds to mirror)", "mirror_s", cloud["payload_mb"])]:
        print(f"| {name} | {cloud[key]:.3f} | {mb / cloud[key]:.0f} | {cloud[key] / cloud['raw_s']:.2f} |")
    print()
    print(f"Queries: {args.queries} per call on the same world, medians of {args.rounds}")
    print()
    print("| query | in-process WorldQueries ms | over gRPC ms | gRPC overhead ms | ratio | hit rate |")
    print("|---|---|---|---|---|---|")
    for kind, r in queries.items():
        print(f"| {kind} | {1e3 * r['local_s']:.0f} | {1e3 * r['grpc_s']:.0f} | {1e3 * (r['grpc_s'] - r['local_s']):.0f} | "
              f"{r['grpc_s'] / r['local_s']:.2f} | {r['hit_rate']:.2f} |")
    print()
    print(f"Concurrency: clients stepping their own reproject world at {args.width}x{args.height} for {args.seconds:.0f} s")
    print()
    print("| clients | frames | frames/s | p50 round trip ms | p99 round trip ms | median World.step ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for r in levels:
        print(f"| {r['clients']} | {r['frames']} | {r['fps']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
              f"{r['world_step_ms']:.0f} | {r['errors']}{' (' + r['first_error'] + ')' if r['errors'] else ''} |")


if __name__ == "__main__":
    main()
