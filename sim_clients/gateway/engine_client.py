"""A Python reference engine for the gateway: what the Unity, Unreal and Isaac code do, in a few lines of pyzmq.

    with GatewayClient("tcp://127.0.0.1:5555", "unity") as engine:
        pose = pose_to_wire(TransformPose(position, Quaternion(qw=..., qx=..., qy=..., qz=...)))
        replies = engine.stream("step", world_id="demo", poses=[pose], intrinsics={"width": 640, "height": 480,
                                                                                    "fov_y_deg": 60.0})
        rgb = replies[0]["frame"]["rgb"]["data"]

Requests and replies are the records of ``SCHEMA.md`` as plain maps: poses go out and come back in the declared
convention, points and lengths in engine units; the gateway converts. Useful for Python simulators that would rather
not depend on grpc, and as the executable reference of ``SCHEMA.md`` (the tests drive the gateway with it).
"""

from __future__ import annotations

from typing import Any

import msgpack
import zmq

from worldweave.proto.errors import DeadlineExceededError, ServerError, error_for_status
from worldweave.sim_clients.gateway import codec
from worldweave.sim_clients.gateway.messages import Hello
from worldweave.sim_clients.gateway.schema import RPCS


class GatewayTimeoutError(DeadlineExceededError):
    """No reply within the timeout: is ``worldweave gateway`` running at that address, and its server?"""


class GatewayClient:
    """One DEALER connection to a gateway, with its convention declared at connect (the ``hello_reply`` body in
    ``info``).

    Every call waits for its reply (``timeout_s``); an ``error`` reply raises the ``WorldweaveError`` of its status with
    the reply's gRPC status name in ``code``.
    """

    def __init__(self, address: str, convention: str, *, up_axis: str | None = None, metres_per_unit: float | None = None,
                 timeout_s: float = 30.0, max_message_bytes: int = codec.DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self._context = zmq.Context()
        self.socket = self._context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(address)
        self._next_id = 1
        try:
            self.info: dict[str, Any] = self.hello(Hello(convention, up_axis, metres_per_unit, "worldweave-python"))
        except BaseException:
            self.close()
            raise

    def send(self, record_type: str, body: dict[str, Any]) -> int:
        """Send without waiting; returns the request id (replies come back in order)."""
        request_id = self._next_id
        self._next_id += 1
        self.socket.send(codec.encode(record_type, body, request_id))
        return request_id

    def receive(self) -> tuple[int | None, str, dict[str, Any]]:
        """The next reply, as ``(request id, type, body)``, error replies included."""
        if not self.socket.poll(int(self.timeout_s * 1000)):
            raise GatewayTimeoutError(
                f"no reply from the gateway at {self.address} in {self.timeout_s} s: is `worldweave gateway` running, "
                "and is its server up?"
            )
        frame = self.socket.recv(copy=False)  # read in place: a frame's pixels are copied once, out of the msgpack
        envelope = msgpack.unpackb(frame.buffer, raw=False, max_bin_len=self.max_message_bytes)
        return envelope["id"], envelope["type"], envelope["body"]

    def _reply(self, request_id: int) -> tuple[str, dict[str, Any]]:
        reply_id, reply_type, body = self.receive()
        if reply_type == "error":
            raise error_for_status(body["code"], body["message"])
        if reply_id != request_id:
            raise ServerError(f"{reply_type} to request {reply_id} while waiting for {request_id}")
        return reply_type, body

    def hello(self, hello: Hello) -> dict[str, Any]:
        """Declare (or change) this connection's convention; the ``hello_reply`` body."""
        return self._reply(self.send("hello", hello.to_wire()))[1]

    def call(self, record_type: str, body: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        """One request of a unary RPC (``body`` and/or keyword fields) -> its reply's body."""
        if RPCS[record_type].streams:
            raise ValueError(f"{record_type} answers with several replies: use stream()")
        return self._reply(self.send(record_type, {**(body or {}), **fields}))[1]

    def stream(self, record_type: str, body: dict[str, Any] | None = None, **fields: Any) -> list[dict[str, Any]]:
        """One request of a server-streaming RPC (``step``, ``stream_point_cloud``, ``crop_point_cloud``) -> the
        bodies of its replies, up to the one whose last-reply flag is set."""
        last = RPCS[record_type].last_field
        if last is None:
            raise ValueError(f"{record_type} answers with one reply: use call()")
        request_id = self.send(record_type, {**(body or {}), **fields})
        bodies: list[dict[str, Any]] = []
        while not bodies or not bodies[-1][last]:
            bodies.append(self._reply(request_id)[1])
        return bodies

    def close(self) -> None:
        self.socket.close(linger=0)
        self._context.term()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
