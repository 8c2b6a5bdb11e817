"""The ZMQ/msgpack gateway: ``worldweave gateway --zmq tcp://127.0.0.1:5555 --server 127.0.0.1:50051``.

Engines that don't speak gRPC (Unity, Unreal, a C++ simulator) connect a DEALER socket to this ROUTER socket and
exchange msgpack messages (``sim_clients/gateway/SCHEMA.md``). Each connection declares its pose convention once
(``hello``); the gateway converts poses both ways and forwards to a ``worldweave serve`` through an
``AsyncWorldClient`` on its event loop. Requests of one connection run in order, one at a time; connections run
concurrently. A malformed, oversized or failing request gets an ``error`` reply and never stops the gateway. Binds
127.0.0.1 unless told otherwise. Every request is one RPC of the server (or ``hello``) and gets one reply, except a
server-streaming RPC (``stream_point_cloud``, ``crop_point_cloud``, ``step``), answered by one reply per response
message (the last flagged as the proto flags it); a REQ socket, which takes one reply per request, gets an error
instead when the answer needs more than one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import zmq
import zmq.asyncio
from google.protobuf.message import Message

from worldweave.proto.errors import ServerError, WorldweaveError
from worldweave.proto.malloc import tune_malloc
from worldweave.proto.splice import SplitMessage
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.sim_clients.aio_client import AsyncWorldClient
from worldweave.sim_clients.conventions import (
    Convention,
    ConventionError,
    get_convention,
)
from worldweave.sim_clients.conversions import STEP_RGB_PATH
from worldweave.sim_clients.gateway import codec
from worldweave.sim_clients.gateway.errors import (
    GatewayError,
    InvalidMessageError,
    MessageTooLargeError,
)
from worldweave.sim_clients.gateway.messages import Hello, write_message
from worldweave.sim_clients.gateway.schema import RPCS, SCHEMA_VERSION, Rpc

logger = logging.getLogger("worldweave.gateway")

ZMQ_HARD_LIMIT_FACTOR = 4
"""ZMQ's own ``MAXMSGSIZE`` is this many times the gateway's limit: bigger messages are dropped by ZMQ (and the
peer disconnected) before they are buffered; those in between get a ``RESOURCE_EXHAUSTED`` reply."""


@dataclass
class Connection:
    """What the gateway remembers about one engine connection (one ZMQ identity)."""

    convention: Convention | None = None
    """Declared by ``hello``; None until then."""
    pending: int = 0
    """Requests received and not yet answered."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while one of its requests runs, so requests run in arrival order."""


async def forward(
    client: AsyncWorldClient, rpc: Rpc, request: Message
) -> list[Message] | list[SplitMessage[pb.StepResponse]]:
    """Call ``rpc`` on the server through ``client`` (``AsyncWorldClient.call``): its response messages (one for a
    unary RPC; a step on the client's persistent Step stream, each frame's image bytes kept apart: ``frame_views``).
    Failures raise the ``WorldweaveError`` of their status."""
    return await client.call(rpc.name, request, frame_views=rpc.name == "Step")


def reply_body(response: Message | SplitMessage[pb.StepResponse], convention: Convention) -> object:
    """A response's reply body in ``convention`` (``write_message``); a Step response's image bytes, kept apart by
    ``forward``, go back in their place as the view they are (packed into the reply without another copy)."""
    if not isinstance(response, SplitMessage):
        return write_message(response, convention)
    body = write_message(response.message, convention)
    if len(response.data):  # then the message holds the image the bytes belong to, and its body the map
        image = body
        for name in STEP_RGB_PATH[:-1]:
            image = image[name]
        image[STEP_RGB_PATH[-1]] = response.data
    return body


class RequestHandler:
    """Bytes in, bytes out, for one request of one connection: decode (engine -> canonical), call the server,
    encode each response (canonical -> engine).

    Runs on the gateway's event loop; the only state it changes is ``connection.convention``.
    """

    def __init__(self, client: AsyncWorldClient, max_message_bytes: int) -> None:
        self.client = client
        self.max_message_bytes = max_message_bytes

    async def handle(
        self, connection: Connection, payload: bytes, single_reply: bool = False
    ) -> list[bytes | memoryview]:
        """The replies to ``payload`` (one, or one per response of a streaming RPC), or one ``error`` reply. Never
        raises for a bad request. ``single_reply``: the peer is a REQ socket, which takes exactly one reply."""
        request_id = None
        try:
            request_id, record_type, request = codec.decode_request(
                payload, convention=connection.convention, max_message_bytes=self.max_message_bytes)
            if isinstance(request, Hello):
                return [codec.encode("hello_reply", self.hello(connection, request), request_id)]
            rpc = RPCS[record_type]
            responses = await forward(self.client, rpc, request)
            if single_reply and len(responses) > 1:
                raise MessageTooLargeError(f"this answer takes {len(responses)} {rpc.reply_type} messages and a REQ "
                                           "socket takes one reply: use a DEALER socket, or a larger max_chunk_bytes")
            return [codec.encode_view(rpc.reply_type, reply_body(r, connection.convention), request_id) for r in responses]
        except GatewayError as error:
            return [codec.encode_error(error, error.request_id if error.request_id is not None else request_id)]
        except WorldweaveError as error:  # the server's answer (or the SDK's), passed on with its status
            return [codec.encode_error(error, request_id)]
        except Exception as error:  # last resort, logged with its traceback: a request never stops the gateway
            logger.exception("request %s failed inside the gateway", request_id)
            return [codec.encode_error(ServerError(f"gateway bug, please report: {type(error).__name__}: {error}"), request_id)]

    def hello(self, connection: Connection, request: Hello) -> dict:
        """Set the connection's convention; the ``hello_reply`` body."""
        try:
            convention = get_convention(request.convention, up_axis=request.up_axis, metres_per_unit=request.metres_per_unit)
        except ConventionError as error:
            raise InvalidMessageError(f"hello: {error}") from None
        connection.convention = convention
        return {
            "schema_version": SCHEMA_VERSION, "convention": convention.name, "metres_per_unit": convention.metres_per_unit,
            "pose_form": convention.pose_form, "max_message_bytes": self.max_message_bytes,
            "server": write_message(self.client.info, convention),
        }


class Gateway:
    """The ROUTER loop. ``await gateway.run()`` serves until cancelled; ``address`` is the bound endpoint."""

    def __init__(
        self,
        zmq_address: str,
        client: AsyncWorldClient,
        *,
        max_message_bytes: int = codec.DEFAULT_MAX_MESSAGE_BYTES,
        max_pending_per_connection: int = 32,
        max_connections: int = 4096,
    ) -> None:
        self.handler = RequestHandler(client, max_message_bytes)
        self.max_message_bytes = max_message_bytes
        self.max_pending = max_pending_per_connection
        self.max_connections = max_connections
        self.context = zmq.asyncio.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, ZMQ_HARD_LIMIT_FACTOR * max_message_bytes)
        self.socket.bind(zmq_address)
        self.address: str = self.socket.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.connections: OrderedDict[bytes, Connection] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()

    def _connection(self, identity: bytes) -> Connection:
        connection = self.connections.get(identity)
        if connection is None:
            connection = self.connections[identity] = Connection()
            # ZMQ does not say when a peer leaves: forget the least recently used idle connections past the cap
            # (a forgotten engine that comes back is asked for hello again).
            for old in list(self.connections)[: max(0, len(self.connections) - self.max_connections)]:
                if self.connections[old].pending == 0:
                    del self.connections[old]
        self.connections.move_to_end(identity)
        return connection

    async def run(self) -> None:
        """Receive, dispatch, reply, until cancelled; then close the socket."""
        logger.info("gateway listening on %s, forwarding to %s", self.address, self.handler.client.target)
        try:
            while True:
                frames = await self.socket.recv_multipart()
                identity, rest = frames[0], frames[1:]
                if len(rest) == 2 and rest[0] == b"":  # a REQ socket's empty delimiter
                    prefix, payload = [b""], rest[1]
                elif len(rest) == 1:
                    prefix, payload = [], rest[0]
                else:
                    error = InvalidMessageError(f"send one msgpack message per ZMQ message; got {len(rest)} frames")
                    await self.socket.send_multipart([identity, codec.encode_error(error, None)])
                    continue
                connection = self._connection(identity)
                if connection.pending >= self.max_pending:
                    error = MessageTooLargeError(f"{connection.pending} requests of this connection are still pending (limit "
                                                 f"{self.max_pending}): wait for replies before sending more")
                    await self.socket.send_multipart([identity, *prefix, codec.encode_error(error, None)])
                    continue
                connection.pending += 1
                task = asyncio.create_task(self._serve(identity, prefix, payload, connection))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()
            self.socket.close(linger=0)
            self.context.term()

    async def _serve(self, identity: bytes, prefix: list[bytes], payload: bytes, connection: Connection) -> None:
        try:
            async with connection.lock:
                replies = await self.handler.handle(connection, payload, bool(prefix))
            for reply in replies:  # without a copy: each reply is its own buffer (codec.encode_view), never reused
                await self.socket.send_multipart([identity, *prefix, reply], copy=False)
        finally:
            connection.pending -= 1


class BackgroundGateway:
    """A :class:`Gateway` on its own event loop in a daemon thread, with its own ``AsyncWorldClient``; a context
    manager.

    For tests, benchmarks and scripts. ``zmq_address`` may end in ``:*`` (a free port); ``address`` is the bound one.
    """

    def __init__(self, server_target: str, zmq_address: str = "tcp://127.0.0.1:*", **gateway_options: int) -> None:
        self._server_target = server_target
        self._zmq_address = zmq_address
        self._options = gateway_options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="worldweave-gateway-loop", daemon=True)
        self._task: asyncio.Task | None = None
        self.client: AsyncWorldClient | None = None
        self.address = ""

    def start(self) -> BackgroundGateway:
        """Connect to the server and bind; a server that cannot be reached raises its ``WorldweaveError``."""
        self._thread.start()

        async def start() -> Gateway:
            self.client = await AsyncWorldClient.connect(self._server_target)
            gateway = Gateway(self._zmq_address, self.client, **self._options)
            self._task = asyncio.create_task(gateway.run())
            return gateway

        try:
            self.address = asyncio.run_coroutine_threadsafe(start(), self._loop).result().address
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Cancel the gateway (it closes its socket), close the client, then stop the loop."""

        async def finish() -> None:
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            if self.client is not None:
                await self.client.close()
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:  # grpc.aio's own, of calls the close cancelled: ended here, not destroyed pending
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(finish(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._task = None
        self.client = None
        self._loop.close()

    def __enter__(self) -> BackgroundGateway:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------------------------
# CLI: ``worldweave gateway``


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``gateway`` flags."""
    parser.add_argument("--zmq", default="tcp://127.0.0.1:5555", help="ZMQ endpoint to bind (default tcp://127.0.0.1:5555)")
    parser.add_argument("--server", default="127.0.0.1:50051", help="worldweave gRPC server host:port")
    parser.add_argument("--max-message-mib", type=int, default=codec.DEFAULT_MAX_MESSAGE_BYTES >> 20,
                        help="largest message accepted from an engine, MiB")
    parser.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for the server at start")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="leave glibc's malloc and numpy's huge-page advice as they are (by default frame-sized "
                             "buffers stay in its heap instead of a fresh mmap and hundreds of page faults per frame, "
                             "and large arrays skip huge pages)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.no_malloc_tuning:
        tune_malloc()

    async def main() -> int:
        try:
            client = await AsyncWorldClient.connect(args.server, connect_timeout_s=args.connect_timeout)
        except WorldweaveError as error:
            logger.error("%s", error)
            return 1
        try:
            gateway = Gateway(args.zmq, client, max_message_bytes=args.max_message_mib << 20)
            task = asyncio.create_task(gateway.run())
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            try:
                await task
            except asyncio.CancelledError:
                logger.info("gateway stopped")
        finally:
            await client.close()
        return 0

    try:
        return asyncio.run(main())
    except zmq.ZMQError as error:
        logger.error("cannot bind %s: %s", args.zmq, error)
        return 1
