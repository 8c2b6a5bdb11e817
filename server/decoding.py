"""Requests whose bytes are not a protobuf message of the method's request type: INVALID_ARGUMENT on every RPC shape.

grpc decodes a request with its handler's deserializer before the handler runs, and answers a deserializer's
exception itself: UNKNOWN ("Unexpected DecodeError") for a unary request, INTERNAL in a request stream (Step), with
an ERROR log line each, as if the server were broken. ``UndecodableRequestInterceptor`` wraps every handler of the
server (WorldService, health, reflection): its deserializer turns bytes that do not parse into an
``UndecodableRequest``, and its behaviour answers one with INVALID_ARGUMENT, naming the method and the byte count,
before the servicer sees it; a request stream is answered so at its first undecodable message. Nothing is logged:
a client's bad bytes are not a server error.

The wrapped handlers serialize each response with its own ``SerializeToString``, which is what the generated
serializers do for a message, and lets an answer encoded off the event loop (``codecs.EncodedMessage``: a Step
frame, a point-cloud chunk) leave as the bytes it holds: the event loop does not copy its arrays again.

The wrapped deserializer also notes each unary request's size, which its call reads as ``request_bytes()``; handlers
turn a large request's fields into arrays on the thread pool rather than on the event loop (``decode_off_loop``):
2,097,152 rays are two 25 MB fields, a second of numpy work on two busy cores during which every other call would
wait. (grpc parses the protobuf itself on the loop, and protobuf holds the GIL while it does: ~0.1-0.3 s for 50 MB.)
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError

T = TypeVar("T")

OFFLOAD_BYTES = 1 << 20
"""Requests at least this large (serialized, bytes) are decoded on the thread pool (``decode_off_loop``); smaller
ones (up to ~44,000 rays) take less than a hop to the pool would."""
_REQUEST_BYTES: ContextVar[int] = ContextVar("worldweave_request_bytes", default=0)
_SIZES: dict[int, int] = {}
"""id(request message) -> its serialized size, from the deserializer until its call starts (``_guard``)."""
MAX_NOTED_SIZES = 1024
"""Sizes noted for calls that never started (cancelled before) are dropped past this many."""


def request_bytes() -> int:
    """The serialized size of the current unary call's request, bytes (0 outside one, or for a request stream)."""
    return _REQUEST_BYTES.get()


async def decode_off_loop(decode: Callable[[], T], offload: Callable[[Callable[[], T]], Awaitable[T]]) -> T:
    """``decode()`` (a request's fields to arrays, validation, its budget), through ``offload`` (the registry's: the
    thread pool) when the current request is at least ``OFFLOAD_BYTES`` long, else right here on the event loop."""
    if request_bytes() >= OFFLOAD_BYTES:
        return await offload(decode)
    return decode()


@dataclass(frozen=True)
class UndecodableRequest:
    """What the wrapped deserializer returns for bytes that are not a message of the method's request type."""

    size_bytes: int
    """Length of the request's bytes."""
    reason: str
    """The protobuf parser's message."""

    def details(self, method: str) -> str:
        """The status message the client receives."""
        return f"{method}: the request ({self.size_bytes} bytes) is not a valid protobuf message ({self.reason})"


def _tolerant(deserializer: Callable[[bytes], object], note_size: bool) -> Callable[[bytes], object]:
    def deserialize(data: bytes) -> object:
        try:
            message = deserializer(data)
        except DecodeError as error:
            return UndecodableRequest(len(data), str(error))
        if note_size:
            if len(_SIZES) >= MAX_NOTED_SIZES:
                _SIZES.clear()
            _SIZES[id(message)] = len(data)
        return message

    return deserialize


async def _refuse(request: object, context: grpc.aio.ServicerContext, method: str) -> None:
    """Abort the call with INVALID_ARGUMENT if ``request`` is undecodable."""
    if isinstance(request, UndecodableRequest):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.details(method))


async def _checked(requests: AsyncIterator, context: grpc.aio.ServicerContext, method: str) -> AsyncIterator:
    """``requests``, aborting the call at the first undecodable one."""
    async for request in requests:
        await _refuse(request, context, method)
        yield request


def _guard(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """``handler`` (an aio server's: its behaviour is a coroutine or an async generator) with a tolerant
    deserializer and a behaviour that refuses undecodable requests."""
    kind, behavior = next(
        (name, getattr(handler, name))
        for name in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
        if getattr(handler, name) is not None
    )

    async def checked(request_or_iterator: object, context: grpc.aio.ServicerContext) -> object:
        if handler.request_streaming:
            return _checked(request_or_iterator, context, method)
        await _refuse(request_or_iterator, context, method)
        _REQUEST_BYTES.set(_SIZES.pop(id(request_or_iterator), 0))
        return request_or_iterator

    if inspect.isasyncgenfunction(behavior):
        async def guarded(request_or_iterator, context: grpc.aio.ServicerContext):
            async for response in behavior(await checked(request_or_iterator, context), context):
                yield response
    else:
        async def guarded(request_or_iterator, context: grpc.aio.ServicerContext):
            return await behavior(await checked(request_or_iterator, context), context)

    make = getattr(grpc, f"{kind}_rpc_method_handler")
    return make(guarded, request_deserializer=_tolerant(handler.request_deserializer, not handler.request_streaming),
                response_serializer=None if handler.response_serializer is None else _serialize)


def _serialize(response: object) -> bytes:
    """A response's wire bytes from its own ``SerializeToString``: a message's (what the generated serializer
    calls), or the bytes of an answer encoded off the event loop (``codecs.EncodedMessage``)."""
    return response.SerializeToString()


class UndecodableRequestInterceptor(grpc.aio.ServerInterceptor):
    """Answers undecodable request bytes with INVALID_ARGUMENT on every method of the server (see the module).

    Put it last in the server's interceptors, so that it wraps the servicers' own handlers; each method's guarded
    handler is built once."""

    def __init__(self) -> None:
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        original, guarded = self._guarded.get(method, (None, None))
        if original is not handler:
            guarded = _guard(handler, method)
            self._guarded[method] = (handler, guarded)
        return guarded
