"""``AsyncWorldClient``: ``WorldClient``'s API on asyncio (``grpc.aio``): the same ``api.ClientApi``, awaited.

    async with await AsyncWorldClient.connect("127.0.0.1:50051") as client:
        world = await client.worlds.create([(rgb, depth_m, c2w)], intrinsics)
        frames = await client.step(world.world_id, next_c2w)
        async for chunk in client.point_cloud.stream(world.world_id, follow=True):
            ...

The methods are not written again here: ``ClientApi`` and its sub-APIs are bound to ``AsyncTransport``, under which a
method returns an awaitable of the record ``WorldClient`` returns (a stream: an async iterator). Everything
``WorldClient`` documents holds: canonical poses and metres, the same records and ``WorldweaveError`` subclasses, the
version check at connect, ``token``, TLS and the retry policy. ``step`` shares one long-lived Step stream per client
(steps from several tasks run one at a time); its deadline cancels that stream.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from worldweave.proto.errors import ServerError
from worldweave.proto.splice import SplitMessage
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.sim_clients.api import ClientApi
from worldweave.sim_clients.client import (
    ClientOptions,
    GrpcTransport,
    check_server,
    client_error,
    rpc_error,
    server_info_request,
    unreachable,
)
from worldweave.sim_clients.retry import call_with_retry_async
from worldweave.sim_clients.transport import Request

T = TypeVar("T")


class AsyncStepStream:
    """The long-lived Step stream ``AsyncWorldClient.step`` sends every request on, one step at a time. A step past
    its deadline, or a failed stream, drops the stream; the next step opens a new one."""

    def __init__(self, open_stream: grpc.aio.StreamStreamMultiCallable, metadata: tuple[tuple[str, str], ...]) -> None:
        self._open_stream = open_stream
        self._metadata = metadata
        self._lock = asyncio.Lock()
        self._call = None

    async def step(self, request: pb.StepRequest, timeout_s: float) -> list[SplitMessage[pb.StepResponse]]:
        """Send ``request`` and return its responses (as ``conversions.parse_step_response`` gives them); raises
        ``grpc.RpcError`` or ``asyncio.TimeoutError``."""
        async with self._lock:
            if self._call is not None and self._call.done():
                self._drop()
            if self._call is None:
                self._call = self._open_stream(metadata=self._metadata)
            call = self._call

            async def exchange() -> list[SplitMessage[pb.StepResponse]]:
                await call.write(request)
                responses: list[SplitMessage[pb.StepResponse]] = []
                while not responses or not responses[-1].message.last_in_request:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        raise ServerError("Step: the server closed the stream before answering")
                    responses.append(response)
                return responses

            try:
                return await asyncio.wait_for(exchange(), timeout_s)
            except BaseException:
                self._drop()
                raise

    def _drop(self) -> None:
        if self._call is not None:
            self._call.cancel()
        self._call = None

    def close(self) -> None:
        self._drop()


class AsyncTransport(GrpcTransport):
    """The asyncio ``Transport`` (``transport.py``) of ``AsyncWorldClient``: ``grpc.aio`` calls, each method an
    awaitable (``stream``: an async iterator); request builders given as functions run on a worker thread."""

    def __init__(self, channel: grpc.aio.Channel, target: str, options: ClientOptions) -> None:
        super().__init__(channel, target, options)
        self._steps = AsyncStepStream(self._step_method, self._metadata)

    @staticmethod
    async def _built(request: Request) -> Message:
        return await asyncio.to_thread(request) if callable(request) else request

    async def unary(self, rpc: str, request: Request, decode: Callable[[Any], T], timeout_s: float | None) -> T:
        message = await self._built(request)
        method = getattr(self._stub, rpc)

        async def attempt(timeout: float | None):
            try:
                return await method(message, timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as error:
                raise rpc_error(error, self.target, rpc, self._timeout(timeout_s)) from None

        return decode(await call_with_retry_async(self.options.retry, self._timeout(timeout_s), attempt))

    async def stream(
        self, rpc: str, request: Message | Iterable[Message], decode: Callable[[Any], T], timeout_s: float | None
    ) -> AsyncIterator[T]:
        call, response = await call_with_retry_async(
            self._stream_retry(request), timeout_s, lambda t: self._first(rpc, request, t))
        with self._failures(rpc, timeout_s, call, cancel_on_success=True):
            while response is not grpc.aio.EOF:
                yield decode(response)
                response = await call.read()

    async def _first(self, rpc: str, request: Message | Iterable[Message], timeout_s: float | None) -> tuple[Any, Any]:
        """Open a streaming call and wait for its first response: (the call, the response; ``grpc.aio.EOF`` when it
        ended)."""
        call = self._method(rpc)(request, timeout=timeout_s, metadata=self._metadata)
        with self._failures(rpc, timeout_s, call, cancel_on_success=False):
            return call, await call.read()

    async def collect(
        self, rpc: str, request: Request, decode: Callable[[list[Any]], T], timeout_s: float | None
    ) -> T:
        message = await self._built(request)
        return decode([r async for r in self.stream(rpc, message, lambda r: r, self._timeout(timeout_s))])

    async def step(self, request: Message, decode: Callable[[list[Any]], T], timeout_s: float | None) -> T:
        async def attempt(timeout: float | None) -> list[SplitMessage[pb.StepResponse]]:
            try:
                return await self._steps.step(request, timeout)
            except grpc.RpcError as error:
                raise rpc_error(error, self.target, "Step", self._timeout(timeout_s)) from None
            except asyncio.TimeoutError:
                raise client_error(grpc.StatusCode.DEADLINE_EXCEEDED, "", self.target, "Step", self._timeout(timeout_s)) from None

        return decode(await call_with_retry_async(self.options.retry, self._timeout(timeout_s), attempt))

    def close(self) -> None:
        self._steps.close()


class AsyncWorldClient(ClientApi):
    """A ``grpc.aio`` connection to a worldweave server; open it with ``await AsyncWorldClient.connect(target,
    **options)`` (options: the fields of ``client.ClientOptions``, as ``WorldClient`` takes them). ``info`` is the
    server's handshake answer."""

    def __init__(self, target: str, options: ClientOptions) -> None:
        self.target = target
        self.options = options
        self._channel = options.channel(target, grpc.aio)
        super().__init__(AsyncTransport(self._channel, target, options))
        self.info: pb.GetServerInfoResponse | None = None

    @classmethod
    async def connect(cls, target: str = "127.0.0.1:50051", **options: Any) -> AsyncWorldClient:
        """Open a connection and make the handshake (version check)."""
        client = cls(target, ClientOptions(**options))
        try:
            await client._handshake()
        except BaseException:
            await client.close()
            raise
        return client

    async def _handshake(self) -> None:
        try:
            await asyncio.wait_for(self._channel.channel_ready(), self.options.connect_timeout_s)
        except asyncio.TimeoutError:
            raise unreachable(self.target, self.options.connect_timeout_s) from None
        self.info = await self._transport.unary("GetServerInfo", server_info_request(), lambda r: r, None)
        for note in check_server(self.info, self.options.max_message_bytes):
            warnings.warn(note, stacklevel=3)

    @property
    def timeout_s(self) -> float:
        """Default deadline of a call, seconds."""
        return self.options.timeout_s

    async def close(self) -> None:
        """Close the channel (calls in flight are cancelled)."""
        self._transport.close()
        await self._channel.close()

    async def __aenter__(self) -> AsyncWorldClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
