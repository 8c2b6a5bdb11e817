"""The gateway process end to end over loopback: a Python reference engine (``GatewayClient``) drives a real
gateway (ZMQ ROUTER, one event loop, ``AsyncWorldClient``) in front of a real gRPC server.

The server here is a small ``WorldService`` with a deterministic point splatter (a fixed cloud of coloured points
seen from the requested pose), so a frame is a function of the canonical pose the server received: a pose sent in
any engine convention must come back as the very frame the canonical pose gives when sent straight over gRPC.
Then the live gateway is fed malformed messages and must answer each with an error and keep serving.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from concurrent import futures

import grpc
import msgpack
import numpy as np
import pytest
import zmq

from worldweave.proto import codecs
from worldweave.proto.errors import WorldweaveError
from worldweave.proto.geometry import Intrinsics, Quaternion, rotation_from_quaternion
from worldweave.proto.worldweave.v1 import API_VERSION
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.sim_clients import conventions as cv
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.gateway import codec
from worldweave.sim_clients.gateway.engine_client import GatewayClient
from worldweave.sim_clients.gateway.messages import Hello, pose_from_wire, pose_to_wire
from worldweave.sim_clients.gateway.schema import SCHEMA_VERSION
from worldweave.sim_clients.gateway.server import BackgroundGateway

CAMERA = Intrinsics.from_fov(32, 24, fov_x_deg=90.0)
SLOW_WORLD = "slow"
"""Renders of this world id wait for ``SplatServicer.release`` (at most 30 s) before they answer."""
WIRE_CAMERA = {"width": 32, "height": 24, "fov_x_deg": 90.0}
MAX_MESSAGE_BYTES = 1 << 20


class SplatServicer(pb_grpc.WorldServiceServicer):
    """A real gRPC WorldService whose frames are a fixed cloud of points (a sphere of radius 5 m) seen from the pose."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        directions = rng.normal(size=(20000, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        self.points = 5.0 * directions
        self.colors = np.clip((directions + 1.0) * 127.5, 0, 255).astype(np.uint8)
        self.worlds: dict[str, dict] = {}
        self.release = threading.Event()

    def GetServerInfo(self, request, context):
        return pb.GetServerInfoResponse(
            api_version=API_VERSION, server_version="splat-test", capabilities=["lifecycle", "render", "step"],
            generator=pb.GeneratorInfo(name="splat"), limits=pb.Limits(max_poses_per_call=8, max_message_bytes=64 << 20),
        )

    def CreateWorld(self, request, context):
        world_id = request.world_id or f"world{len(self.worlds)}"
        self.worlds[world_id] = {"intrinsics": codecs.decode_intrinsics(request.seed.intrinsics), "frames": 0}
        return pb.CreateWorldResponse(world=pb.WorldInfo(world_id=world_id, loaded=True, version=1))

    def DeleteWorld(self, request, context):
        unloaded = self.worlds.pop(request.world_id, None) is not None
        return pb.DeleteWorldResponse(unloaded=unloaded)

    def _world(self, world_id: str, context) -> dict:
        if world_id not in self.worlds:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no world {world_id!r}")
        return self.worlds[world_id]

    def _frame(self, pose: pb.Pose, intrinsics: Intrinsics, fmt: pb.FrameFormat, frame_id: int | None) -> pb.Frame:
        c2w = codecs.pose_matrix(pose)
        points_cam = (self.points - c2w[:3, 3]) @ c2w[:3, :3]
        z = points_cam[:, 2]
        keep = z > 0.1
        u = np.rint(intrinsics.fx * points_cam[keep, 0] / z[keep] + intrinsics.cx).astype(int)
        v = np.rint(intrinsics.fy * points_cam[keep, 1] / z[keep] + intrinsics.cy).astype(int)
        inside = (u >= 0) & (u < intrinsics.width) & (v >= 0) & (v < intrinsics.height)
        order = np.argsort(-z[keep][inside])  # far first, near last: the nearest point wins
        rgb = np.zeros((intrinsics.height, intrinsics.width, 3), np.uint8)
        depth = np.zeros((intrinsics.height, intrinsics.width), np.float32)
        rgb[v[inside][order], u[inside][order]] = self.colors[keep][inside][order]
        depth[v[inside][order], u[inside][order]] = z[keep][inside][order]
        frame = pb.Frame(pose=codecs.pose_message(c2w), version=1, coverage=float((depth > 0).mean()),
                         rgb=codecs.encode_image(rgb, fmt.image_encoding or pb.IMAGE_ENCODING_RAW_RGB8))
        if fmt.depth_encoding:
            frame.depth.CopyFrom(codecs.encode_depth(depth, fmt.depth_encoding))
        if frame_id is not None:
            frame.frame_id = frame_id
        return frame

    def _intrinsics(self, request, world: dict) -> Intrinsics:
        return codecs.decode_intrinsics(request.intrinsics) if request.HasField("intrinsics") else world["intrinsics"]

    def Render(self, request, context):
        if request.world_id == SLOW_WORLD:
            self.release.wait(30.0)
        world = self._world(request.world_id, context)
        intrinsics = self._intrinsics(request, world)
        return pb.RenderResponse(frames=[self._frame(p, intrinsics, request.format, None) for p in request.poses])

    def Step(self, request_iterator, context):
        for index, request in enumerate(request_iterator):
            world = self._world(request.world_id, context)
            intrinsics = self._intrinsics(request, world)
            for i, pose in enumerate(request.poses):
                world["frames"] += 1
                yield pb.StepResponse(request_index=index, pose_index=i, last_in_request=i == len(request.poses) - 1,
                                      frame=self._frame(pose, intrinsics, request.format, world["frames"]))


@pytest.fixture(scope="module")
def servicer():
    return SplatServicer()


@pytest.fixture(scope="module")
def server_address(servicer):
    server = grpc.server(futures.ThreadPoolExecutor(4))
    pb_grpc.add_WorldServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture(scope="module")
def gateway(server_address):
    with BackgroundGateway(server_address, max_message_bytes=MAX_MESSAGE_BYTES, max_pending_per_connection=8) as running:
        yield running


@pytest.fixture(scope="module")
def direct(server_address):
    with WorldClient(server_address) as client:
        world = client.worlds.create([(np.zeros((24, 32, 3), np.uint8), np.ones((24, 32), np.float32), np.eye(4))], CAMERA,
                                    world_id="shared")
        yield client, world.world_id


def random_c2w(rng: np.random.Generator) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, :3] = rotation_from_quaternion(Quaternion(*rng.normal(size=4)))
    c2w[:3, 3] = rng.uniform(-1, 1, size=3)
    return c2w


CONVENTIONS = [(name, {}) for name in cv.CONVENTIONS] + [("usd", {"up_axis": "Y", "metres_per_unit": 0.01})]


def rgb_of(frame: dict) -> np.ndarray:
    return np.frombuffer(frame["rgb"]["data"], np.uint8).reshape(24, 32, 3)


IDENTITY = pose_to_wire(cv.TransformPose(np.zeros(3), Quaternion(1.0, 0.0, 0.0, 0.0)))


@pytest.mark.parametrize("name, options", CONVENTIONS, ids=[f"{n}{'-y-cm' if o else ''}" for n, o in CONVENTIONS])
def test_engine_pose_gives_the_frame_of_the_canonical_pose(gateway, direct, name, options):
    client, world_id = direct
    convention = cv.get_convention(name, **options)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    with GatewayClient(gateway.address, name, **options) as engine:
        assert engine.info["convention"] == name and engine.info["pose_form"] == convention.pose_form
        for _ in range(4):
            c2w = random_c2w(rng)
            expected = client.render(world_id, c2w, intrinsics=CAMERA)[0]
            assert expected.coverage > 0.3  # the frame has content, so equality means something
            pose = pose_to_wire(convention.from_canonical(c2w))
            frame, = engine.call("render", world_id=world_id, poses=[pose], intrinsics=WIRE_CAMERA)["frames"]
            assert frame["rgb"]["encoding"] == "raw"
            np.testing.assert_array_equal(rgb_of(frame), expected.rgb)
            back = convention.to_canonical(pose_from_wire(frame["pose"], "pose", convention.pose_form))
            np.testing.assert_allclose(back, c2w, atol=1e-9)
            stepped, = engine.stream("step", world_id=world_id, poses=[pose], intrinsics=WIRE_CAMERA,
                                     format={"depth_encoding": "uint16_mm"})
            assert stepped["frame"]["frame_id"] is not None and "depth" in stepped["frame"]
            np.testing.assert_array_equal(rgb_of(stepped["frame"]), expected.rgb)


def test_unity_fixture_through_the_gateway(gateway, direct):
    """Unity camera at the origin, identity rotation: it looks along canonical +x, like this canonical pose."""
    client, world_id = direct
    canonical = np.eye(4)
    canonical[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]
    with GatewayClient(gateway.address, "unity") as engine:
        frame, = engine.call("render", world_id=world_id, poses=[IDENTITY], intrinsics=WIRE_CAMERA)["frames"]
    expected = client.render(world_id, canonical, intrinsics=CAMERA)[0]
    np.testing.assert_array_equal(rgb_of(frame), expected.rgb)


def test_world_lifecycle_and_encodings(gateway):
    rgb = np.full((24, 32, 3), 7, np.uint8)
    view = {"rgb": {"width": 32, "height": 24, "encoding": "raw", "data": rgb.tobytes()},
            "depth": {"width": 32, "height": 24, "encoding": "float16_m", "data": np.ones((24, 32), "<f2").tobytes()},
            "pose": pose_to_wire(cv.RotatorPose(np.zeros(3), cv.Rotator(0.0, 0.0, 0.0)))}
    with GatewayClient(gateway.address, "unreal") as engine:
        world = engine.call("create_world", world_id="unreal-world", seed={"frames": [view], "intrinsics": WIRE_CAMERA})
        assert world["world"]["world_id"] == "unreal-world"
        pose = pose_to_wire(cv.RotatorPose(np.array([10.0, 20.0, 30.0]), cv.Rotator(10.0, 45.0, 5.0)))
        frames = engine.call("render", world_id="unreal-world", poses=[pose] * 2,
                             format={"image_encoding": "png", "depth_encoding": "float16_m"})["frames"]
        assert len(frames) == 2 and frames[0]["rgb"]["encoding"] == "png" and frames[0]["rgb"]["data"].startswith(b"\x89PNG")
        back = pose_from_wire(frames[0]["pose"], "pose", "position_rotator")
        assert back.rotator == pytest.approx(cv.Rotator(10.0, 45.0, 5.0), abs=1e-9)
        assert list(back.position) == pytest.approx([10.0, 20.0, 30.0], abs=1e-9)  # centimetres again
        jpeg, = engine.stream("step", world_id="unreal-world", poses=[frames[0]["pose"]], format={"image_encoding": "jpeg"})
        assert jpeg["frame"]["rgb"]["data"].startswith(b"\xff\xd8")
        assert engine.call("delete_world", world_id="unreal-world")["unloaded"]


def test_server_errors_pass_through_with_their_status(gateway):
    with GatewayClient(gateway.address, "canonical") as engine:
        with pytest.raises(WorldweaveError, match="no world 'missing'") as info:
            engine.call("render", world_id="missing", poses=[IDENTITY])
        assert info.value.code == "NOT_FOUND"
        zero = pose_to_wire(cv.TransformPose(np.zeros(3), Quaternion(0, 0, 0, 0)))
        with pytest.raises(WorldweaveError, match=r"render.poses\[0\]: quaternion .* has zero length") as info:
            engine.call("render", world_id="shared", poses=[zero])
        assert info.value.code == "INVALID_ARGUMENT"
        with pytest.raises(WorldweaveError, match="unknown convention 'blender'"):
            engine.hello(Hello("blender"))


def raw_exchange(address: str, frames: list[bytes], socket_type: int = zmq.DEALER) -> list[bytes]:
    context = zmq.Context.instance()
    with context.socket(socket_type) as socket:
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(address)
        socket.send_multipart(frames)
        assert socket.poll(10_000), "the gateway did not answer"
        return socket.recv_multipart()


def error_of(reply: list[bytes]) -> dict:
    envelope = msgpack.unpackb(reply[-1], raw=False)
    assert envelope["type"] == "error", envelope
    return envelope["body"]


def test_malformed_messages_get_error_replies_and_the_gateway_keeps_serving(gateway):
    rng = np.random.default_rng(3)
    valid = codec.encode("render", {"world_id": "shared", "poses": [IDENTITY]}, 9)
    payloads = [rng.integers(0, 256, size=int(n), dtype=np.uint8).tobytes() for n in rng.integers(0, 300, size=40)]
    payloads += [
        b"", b"\xc6\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\x91" * 100_000,
        msgpack.packb({"version": 2, "type": "render", "id": 1, "body": {"world_id": 5, "poses": "x"}}),
        msgpack.packb({"version": 2, "type": "step", "id": 2, "body": [1]}),
        msgpack.packb({"version": 7, "type": "hello", "id": 3, "body": {"convention": "unity"}}),
        valid[: len(valid) // 2],
        bytes(MAX_MESSAGE_BYTES + 1),
    ]
    with GatewayClient(gateway.address, "canonical") as engine:
        for payload in payloads:
            engine.socket.send(payload)
            _, reply_type, reply = engine.receive()
            assert reply_type == "error" and reply["code"] in {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION"}
            assert reply["message"]
        for frames in ([b"a", b"b"], [b"", b"", b"x"]):
            engine.socket.send_multipart(frames)
            _, _, reply = engine.receive()
            assert reply["code"] == "INVALID_ARGUMENT" and "one msgpack message per ZMQ message" in reply["message"]
        frame, = engine.call("render", world_id="shared", poses=[IDENTITY])["frames"]  # still serving
        assert frame["coverage"] > 0


def test_oversize_and_version_errors_name_the_limit(gateway):
    reply = error_of(raw_exchange(gateway.address, [bytes(MAX_MESSAGE_BYTES + 10)]))
    assert reply["code"] == "RESOURCE_EXHAUSTED" and f"over the gateway's limit of {MAX_MESSAGE_BYTES} bytes" in reply["message"]
    hello = msgpack.packb({"version": 1, "type": "hello", "id": 4, "convention": "unity"})
    reply = error_of(raw_exchange(gateway.address, [hello]))
    assert reply["code"] == "FAILED_PRECONDITION" and "schema version 1, this gateway speaks 2" in reply["message"]


def test_request_before_hello_and_req_sockets(gateway):
    render = codec.encode("render", {"world_id": "shared", "poses": [IDENTITY]}, 11)
    reply = error_of(raw_exchange(gateway.address, [render]))
    assert reply["code"] == "FAILED_PRECONDITION" and "send hello" in reply["message"]
    # A REQ socket adds an empty delimiter frame; the gateway answers with it so REQ accepts the reply.
    reply = raw_exchange(gateway.address, [codec.encode("hello", Hello("unity").to_wire(), 12)], zmq.REQ)
    envelope = msgpack.unpackb(reply[-1], raw=False)
    assert envelope["id"] == 12 and envelope["body"]["convention"] == "unity"
    assert envelope["body"]["schema_version"] == SCHEMA_VERSION
    assert envelope["body"]["server"]["limits"]["max_poses_per_call"] == 8


def test_pipelined_requests_are_answered_in_order(gateway):
    rng = np.random.default_rng(5)
    with GatewayClient(gateway.address, "airsim") as engine:
        poses = [pose_to_wire(cv.AIRSIM.from_canonical(random_c2w(rng))) for _ in range(6)]
        ids = [engine.send("render", {"world_id": "shared", "poses": [pose], "intrinsics": WIRE_CAMERA}) for pose in poses]
        for request_id, pose in zip(ids, poses):
            reply_id, _, reply = engine.receive()
            assert reply_id == request_id
            np.testing.assert_allclose(reply["frames"][0]["pose"]["position"], pose["position"], atol=1e-9)
        # Past the pending limit (8), requests are refused at once, not queued without bound.
        ids = [engine.send("render", {"world_id": "shared", "poses": [poses[0]], "intrinsics": WIRE_CAMERA}) for _ in range(12)]
        replies = [engine.receive() for _ in ids]
        refused = [body for _, reply_type, body in replies if reply_type == "error"]
        assert all(r["code"] == "RESOURCE_EXHAUSTED" and "pending" in r["message"] for r in refused)
        assert len(refused) + sum(reply_type == "render_reply" for _, reply_type, _ in replies) == 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_waiting_request_holds_only_its_own_connection(gateway, direct, servicer):
    """Requests of one connection wait for each other; another connection's are answered meanwhile."""
    servicer.release.clear()
    with GatewayClient(gateway.address, "canonical", timeout_s=20.0) as waiting, \
            GatewayClient(gateway.address, "canonical", timeout_s=20.0) as other:
        held = waiting.send("render", {"world_id": SLOW_WORLD, "poses": [IDENTITY], "intrinsics": WIRE_CAMERA})
        queued = waiting.send("render", {"world_id": "shared", "poses": [IDENTITY], "intrinsics": WIRE_CAMERA})
        try:
            time.sleep(0.2)  # the held render reaches the server first
            reply = other.call("render", world_id="shared", poses=[IDENTITY], intrinsics=WIRE_CAMERA)
            assert rgb_of(reply["frames"][0]).any()
            assert not waiting.socket.poll(0)  # neither of the first connection's requests is answered yet
        finally:
            servicer.release.set()
        replies = [waiting.receive(), waiting.receive()]
    assert [reply[:2] for reply in replies] == [(held, "error"), (queued, "render_reply")]
    assert replies[0][2]["code"] == "NOT_FOUND"  # the slow world was never created: the render waited, then failed


def test_worldweave_gateway_command(server_address):
    """``worldweave gateway --zmq ... --server ...`` as its own process: serves a hello, stops cleanly on SIGTERM."""
    address = f"tcp://127.0.0.1:{free_port()}"
    command = [sys.executable, "-c", "from worldweave.server.cli import main; raise SystemExit(main())",
               "gateway", "--zmq", address, "--server", server_address]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with GatewayClient(address, "carla", timeout_s=20.0) as engine:
            assert engine.info["metres_per_unit"] == 1.0 and engine.info["pose_form"] == "position_rotator"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert f"gateway listening on {address}" in output


def test_gateway_command_without_a_server_says_what_to_do():
    port = free_port()
    command = [sys.executable, "-c", "from worldweave.server.cli import main; raise SystemExit(main())",
               "gateway", "--server", f"127.0.0.1:{port}", "--connect-timeout", "0.5"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"server not reachable at 127.0.0.1:{port}" in result.stderr
