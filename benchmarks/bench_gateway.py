"""Latency the ZMQ/msgpack gateway adds per 640x480 frame, beside a direct gRPC call in the same run.

Both paths ask the same gRPC server for the same frame: ``direct`` is ``WorldClient`` (gRPC), ``gateway`` is a Python
engine (``GatewayClient``, convention ``unity``) -> ZMQ -> gateway (decode, convert the pose, ``AsyncWorldClient``,
encode, convert back) -> the server. ``added`` = gateway − direct, the gateway's cost. Also shown: the pure codec cost
of one frame reply (written in the engine's convention, msgpack encode + decode), and both paths with ``step``.

By default the server is an in-process gRPC ``WorldService`` that answers every pose with one precomputed frame
(a zero-cost generator), so the figures are transport and conversion only. ``--reproject`` runs the real server
in-process instead (``WorldServer``, default ``reproject`` generator, a 640x480 wall seed), so the table also shows
how the gateway's cost compares with a real world step.

    python benchmarks/bench_gateway.py [--calls 300] [--reproject]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent import futures

import grpc
import msgpack
import numpy as np

from worldweave.proto import codecs
from worldweave.proto.geometry import Intrinsics
from worldweave.proto.worldweave.v1 import API_VERSION
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.sim_clients import conventions as cv
from worldweave.sim_clients.client import WorldClient
from worldweave.proto.malloc import tune_malloc
from worldweave.sim_clients.gateway import codec
from worldweave.sim_clients.gateway.engine_client import GatewayClient
from worldweave.sim_clients.gateway.messages import pose_to_wire, write_message
from worldweave.sim_clients.gateway.server import BackgroundGateway

WIDTH, HEIGHT = 640, 480
CAMERA = Intrinsics.from_fov(WIDTH, HEIGHT, fov_y_deg=60.0)
UNITY_CAMERA = {"width": WIDTH, "height": HEIGHT, "fov_y_deg": 60.0}


class ConstantFrameServicer(pb_grpc.WorldServiceServicer):
    """Answers each pose with one precomputed raw 640x480 frame: the server costs (almost) nothing."""

    def __init__(self) -> None:
        rgb = np.random.default_rng(0).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
        self.image = codecs.encode_image(rgb)

    def GetServerInfo(self, request, context):
        return pb.GetServerInfoResponse(api_version=API_VERSION, server_version="constant-frame",
                                        generator=pb.GeneratorInfo(name="constant"),
                                        limits=pb.Limits(max_poses_per_call=8, max_message_bytes=64 << 20))

    def _frame(self, pose: pb.Pose, frame_id: int | None = None) -> pb.Frame:
        frame = pb.Frame(pose=pose, version=1, coverage=1.0, rgb=self.image)
        if frame_id is not None:
            frame.frame_id = frame_id
        return frame

    def Render(self, request, context):
        return pb.RenderResponse(frames=[self._frame(p) for p in request.poses])

    def Step(self, request_iterator, context):
        for index, request in enumerate(request_iterator):
            for i, pose in enumerate(request.poses):
                yield pb.StepResponse(request_index=index, pose_index=i, last_in_request=i == len(request.poses) - 1,
                                      frame=self._frame(pose, index))


def timed(calls: int, **paths) -> dict[str, list[float]]:
    """Milliseconds per call of each path, the paths interleaved call by call so machine noise hits all alike."""
    for call in paths.values():
        for _ in range(20):  # warm-up
            call()
    out: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(calls):
        for name, call in paths.items():
            start = time.perf_counter()
            call()
            out[name].append((time.perf_counter() - start) * 1e3)
    return out


def row(name: str, ms: list[float], baseline: list[float] | None) -> str:
    median = statistics.median(ms)
    p90 = statistics.quantiles(ms, n=10)[-1]
    added = f"{median - statistics.median(baseline):+.3f}" if baseline else "—"
    return f"| {name} | {median:.3f} | {p90:.3f} | {added} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--reproject", action="store_true",
                        help="run the real server with the reproject generator (default: a constant-frame server)")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="leave glibc's malloc as is (by default tuned, as `worldweave serve` and "
                             "`worldweave gateway` do; both paths of this one process share it)")
    args = parser.parse_args()
    if not args.no_malloc_tuning:
        tune_malloc()

    if args.reproject:
        from worldweave.bridge.eval.wall import wall_seed
        from worldweave.server.app import BackgroundServer

        background = BackgroundServer().start()
        target = background.address
        with WorldClient(target) as client:
            seed_frames, _ = wall_seed(WIDTH, HEIGHT, fov_x_deg=CAMERA.fov_x_deg)
            world = client.worlds.create(seed_frames, CAMERA).world_id
        stop_server = background.stop
    else:
        grpc_server = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.max_send_message_length", 64 << 20),
                                                                          ("grpc.max_receive_message_length", 64 << 20)])
        pb_grpc.add_WorldServiceServicer_to_server(ConstantFrameServicer(), grpc_server)
        target = f"127.0.0.1:{grpc_server.add_insecure_port('127.0.0.1:0')}"
        grpc_server.start()
        world = "constant"
        stop_server = lambda: grpc_server.stop(None)  # noqa: E731

    c2w = np.eye(4)
    c2w[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]  # looking along +x, at the wall seed's camera height
    c2w[:3, 3] = [0.0, 0.0, 1.5]
    unity_pose = pose_to_wire(cv.UNITY.from_canonical(c2w))
    with WorldClient(target) as client, BackgroundGateway(target) as gateway, \
            GatewayClient(gateway.address, "unity") as engine:
        results = timed(
            args.calls,
            render_direct=lambda: client.render(world, c2w, intrinsics=CAMERA),
            render_gateway=lambda: engine.call("render", world_id=world, poses=[unity_pose], intrinsics=UNITY_CAMERA),
        )
        results.update(timed(
            args.calls,
            step_direct=lambda: client.step(world, c2w, intrinsics=CAMERA, depth=None),
            step_gateway=lambda: engine.stream("step", world_id=world, poses=[unity_pose], intrinsics=UNITY_CAMERA),
        ))
    stop_server()
    rgb = np.random.default_rng(1).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    response = pb.RenderResponse(frames=[pb.Frame(pose=codecs.pose_message(c2w), version=1, coverage=1.0,
                                                  rgb=codecs.encode_image(rgb))])
    results.update(timed(args.calls, codec=lambda: msgpack.unpackb(
        codec.encode("render_reply", write_message(response, cv.UNITY), 1), raw=False)))

    server = "real server, reproject generator, wall seed" if args.reproject else "constant-frame gRPC server (zero-cost)"
    malloc = "default malloc" if args.no_malloc_tuning else "tuned malloc"
    print(f"Gateway latency per {WIDTH}x{HEIGHT} raw RGB frame, {args.calls} calls each, loopback, {server}, {malloc}")
    print("| path | median ms | p90 ms | added vs direct (median) ms |")
    print("| --- | --- | --- | --- |")
    print(row("render, direct gRPC", results["render_direct"], None))
    print(row("render, gateway (unity)", results["render_gateway"], results["render_direct"]))
    print(row("step, direct gRPC", results["step_direct"], None))
    print(row("step, gateway (unity)", results["step_gateway"], results["step_direct"]))
    print(row("one frame reply: write (to the engine convention), msgpack encode + decode", results["codec"], None))


if __name__ == "__main__":
    main()
