"""Serving cost over loopback at 640x480 raw RGB (issue 7), every figure beside its baseline from the same run.

    python benchmarks/bench_serving.py [--rounds 3] [--steps 100] [--stream-frames 150] [--width 640 --height 480]

For each glibc malloc setting ("default", and "tuned" = ``worldweave.proto.malloc.tune_malloc``) a fresh client
process starts a fresh server process (``--serve``) holding both a worldweave server and a raw gRPC baseline on
the same grpc.aio server, and measures:

* raw unary: a generic unary call whose handler returns the frame's bytes (``ndarray.tobytes()``): the floor of
  any gRPC round trip carrying this payload; alone on a fresh server, then interleaved with the steps;
* step (echo): ``WorldClient.step`` with one pose, zero-cost ``EchoGenerator``: round trip, time inside
  ``World.step`` (its "total" timing) and **serving overhead** = round trip − ``World.step``;
* step (reproject): the same with the embedded default generator;
* streams: ``WorldClient.step_stream`` over many poses (echo), beside the bound the memory work sets
  (frames / total time inside ``World.step`` during that stream), and a raw server-streaming call of the same bytes: frames/s and MB/s of RGB payload;
* minor page faults per call of the server process (``/proc/PID/stat``) and of the client.

Medians over the timed calls (after warm-up), then over rounds in which the settings alternate; the CPU is shared,
so expect noise between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np

RAW_SERVICE = "bench.Raw"
MALLOC = ("default", "tuned")
"""glibc malloc settings compared: as is, and ``tune_malloc()`` in both server and client processes."""
WARMUP = 20
"""Untimed calls before the timed ones."""


def page_faults(pid: int) -> int:
    """Minor page faults of process ``pid`` so far (field 10 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7])


# ------------------------------------------------------------------------------------------------ server process


def serve(width: int, height: int, generator_name: str, tuned: bool) -> None:
    """Server process: worldweave + raw baseline on one grpc.aio server; prints its port, runs until stdin closes."""
    from worldweave.bridge.generators.echo import EchoGenerator
    from worldweave.proto.malloc import tune_malloc
    from worldweave.server.app import ServerConfig, create_server

    if tuned:
        tune_malloc()
    frame = np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)

    async def raw_unary(request: bytes, context) -> bytes:
        return frame.tobytes()

    async def raw_stream(request: bytes, context):
        for _ in range(int.from_bytes(request, "little")):
            yield frame.tobytes()

    async def main() -> None:
        generator = EchoGenerator() if generator_name == "echo" else None
        server, port = create_server("127.0.0.1:0", ServerConfig(generator=generator_name), generator=generator)
        server.grpc.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(RAW_SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(raw_unary),
            "Stream": grpc.unary_stream_rpc_method_handler(raw_stream),
        }),))
        await server.start()
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.stop(1.0)

    asyncio.run(main())


# ------------------------------------------------------------------------------------------------ client process


def measure(args: argparse.Namespace, generator_name: str, tuned: bool) -> dict[str, float]:
    """Client process body for one (generator, malloc) setting: start a server process and measure."""
    from worldweave.bridge.eval.wall import wall_seed, yaw_poses
    from worldweave.proto.malloc import tune_malloc
    from worldweave.sim_clients.client import WorldClient

    if tuned:
        tune_malloc()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", generator_name, "--width", str(args.width), "--height", str(args.height)]
        + (["--tuned"] if tuned else []),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        port = int(server.stdout.readline())
        target = f"127.0.0.1:{port}"
        out: dict[str, float] = {}
        payload_mb = args.width * args.height * 3 / 1e6
        with WorldClient(target) as client:
            channel = client._channel  # the same channel and options for the baseline
            raw_unary = channel.unary_unary(f"/{RAW_SERVICE}/Unary")
            raw_stream = channel.unary_stream(f"/{RAW_SERVICE}/Stream")

            # A fresh server serving raw frames only (glibc's dynamic mmap threshold has not yet been raised by
            # the engine's large frees): what the probe saw.
            for _ in range(WARMUP):
                raw_unary(b"")
            server_before = page_faults(server.pid)
            alone = []
            for _ in range(args.steps):
                start = time.perf_counter()
                np.frombuffer(raw_unary(b""), np.uint8)
                alone.append(time.perf_counter() - start)
            out["raw_alone_ms"] = 1e3 * float(np.median(alone))
            out["raw_alone_server_faults"] = (page_faults(server.pid) - server_before) / args.steps

            frames, intrinsics = wall_seed(args.width, args.height)
            world = client.worlds.create(frames, intrinsics, world_id="bench")
            poses = yaw_poses(args.steps + WARMUP, max_yaw_deg=5.0)
            # Interleaved, so that both see the same load on a shared CPU: a raw call, then a step.
            raw_s, step_s, inside_s = [], [], []
            raw_faults = step_faults = client_raw_faults = client_step_faults = 0
            for i, pose in enumerate(poses):
                server_before, client_before = page_faults(server.pid), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.perf_counter()
                np.frombuffer(raw_unary(b""), np.uint8)
                middle = time.perf_counter()
                server_middle, client_middle = page_faults(server.pid), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                middle_after_reads = time.perf_counter()
                frame = client.step(world.world_id, pose, depth=None)[0]
                end = time.perf_counter()
                if i < WARMUP:
                    continue
                raw_s.append(middle - start)
                step_s.append(end - middle_after_reads)
                inside_s.append(frame.timings_s["total"])
                raw_faults += server_middle - server_before
                client_raw_faults += client_middle - client_before
                step_faults += page_faults(server.pid) - server_middle
                client_step_faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - client_middle
            raw_s, step_s, inside_s = np.array(raw_s), np.array(step_s), np.array(inside_s)
            out["raw_ms"] = 1e3 * float(np.median(raw_s))
            out["step_ms"] = 1e3 * float(np.median(step_s))
            out["world_step_ms"] = 1e3 * float(np.median(inside_s))
            out["overhead_ms"] = 1e3 * float(np.median(step_s - inside_s))
            out["raw_server_faults"] = raw_faults / args.steps
            out["raw_client_faults"] = client_raw_faults / args.steps
            out["step_server_faults"] = step_faults / args.steps
            out["step_client_faults"] = client_step_faults / args.steps

            if generator_name == "echo":
                stream_poses = yaw_poses(args.stream_frames, max_yaw_deg=5.0)
                start = time.perf_counter()
                inside = [f.timings_s["total"] for f in client.step_stream(world.world_id, stream_poses, depth=None)]
                seconds = time.perf_counter() - start
                count = len(inside)
                out["stream_fps"] = count / seconds
                out["stream_world_fps"] = count / sum(inside)
                out["stream_mb_s"] = count * payload_mb / seconds
                request = args.stream_frames.to_bytes(4, "little")
                start = time.perf_counter()
                count = sum(1 for chunk in raw_stream(request) if np.frombuffer(chunk, np.uint8).size)
                seconds = time.perf_counter() - start
                out["raw_stream_fps"] = count / seconds
                out["raw_stream_mb_s"] = count * payload_mb / seconds
        return out
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="timed unary calls and steps per setting")
    parser.add_argument("--stream-frames", type=int, default=150, help="frames per streaming measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all settings (medians are reported)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--serve", choices=("echo", "reproject"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=("echo", "reproject"), help=argparse.SUPPRESS)
    parser.add_argument("--tuned", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.width, args.height, args.serve, args.tuned)
        return
    if args.measure:
        print(json.dumps(measure(args, args.measure, args.tuned)))
        return

    runs: dict[tuple[str, str], list[dict[str, float]]] = {(m, g): [] for m in MALLOC for g in ("echo", "reproject")}
    common = ["--steps", str(args.steps), "--stream-frames", str(args.stream_frames),
              "--width", str(args.width), "--height", str(args.height)]
    for round_index in range(args.rounds):
        # Settings alternate within each round (and their order flips every round), so that a change in the load
        # of the shared CPU falls on both malloc settings alike.
        for malloc in MALLOC if round_index % 2 == 0 else MALLOC[::-1]:
            for generator in ("echo", "reproject"):
                command = [sys.executable, __file__, "--measure", generator, *common]
                command += ["--tuned"] if malloc == "tuned" else []
                output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
                runs[(malloc, generator)].append(json.loads(output.strip().splitlines()[-1]))
    results = {key: {name: float(np.median([r[name] for r in rounds])) for name in rounds[0]}
               for key, rounds in runs.items()}
    ratios = {key: [r["overhead_ms"] / r["raw_ms"] for r in rounds] for key, rounds in runs.items()}

    mb = args.width * args.height * 3 / 1e6
    print(f"Serving at {args.width}x{args.height} raw RGB ({mb:.2f} MB/frame) over loopback: medians of {args.steps} "
          f"calls per round, then the median of {args.rounds} rounds (overhead / raw: every round's ratio)")
    print()
    print("| malloc | generator | raw gRPC call ms | step round trip ms | World.step ms | serving overhead ms | overhead / raw | server faults/call (raw, step) | client faults/call (raw, step) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (malloc, generator), r in results.items():
        print(f"| {malloc} | {generator} | {r['raw_ms']:.2f} | {r['step_ms']:.2f} | {r['world_step_ms']:.2f} | "
              f"{r['overhead_ms']:.2f} | {', '.join(f'{x:.2f}x' for x in ratios[(malloc, generator)])} | "
              f"{r['raw_server_faults']:.0f}, "
              f"{r['step_server_faults']:.0f} | {r['raw_client_faults']:.0f}, {r['step_client_faults']:.0f} |")
    print()
    print("| malloc | raw gRPC call alone, fresh server: ms | server faults/call |")
    print("|---|---|---|")
    for malloc in MALLOC:
        r = results[(malloc, "echo")]
        print(f"| {malloc} | {r['raw_alone_ms']:.2f} | {r['raw_alone_server_faults']:.0f} |")
    print()
    print("| malloc | step_stream (echo) frames/s | MB/s | bound: 1 / World.step in that stream, frames/s | raw gRPC stream frames/s | MB/s |")
    print("|---|---|---|---|---|---|")
    for (malloc, generator), r in results.items():
        if generator == "echo":
            print(f"| {malloc} | {r['stream_fps']:.1f} | {r['stream_mb_s']:.1f} | {r['stream_world_fps']:.1f} | "
                  f"{r['raw_stream_fps']:.0f} | {r['raw_stream_mb_s']:.0f} |")


if __name__ == "__main__":
    main()
