"""What the SDK's one description of the API needs from a connection: ``Transport``, and the answer types.

The sub-APIs (``api.Worlds``, ``world_state.Queries``, ...) and ``api.ClientApi`` are written once, each method as
request builder + RPC name + decoder handed to a ``Transport``. ``WorldClient`` binds them to a blocking transport
(``client.SyncTransport``: a method returns its record), ``AsyncWorldClient`` to an asyncio one
(``aio_client.AsyncTransport``: a method returns an awaitable of the same record; a stream is an async iterator).
Both transports apply the same deadlines, retry policy (``retry.RetryPolicy``) and error mapping
(``proto.errors.error_for_status``), and send every ``step`` on one long-lived Step stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar, Union

from google.protobuf.message import Message

T = TypeVar("T")

Answer = Union[T, Awaitable[T]]
"""What a unary method returns: the record itself from ``WorldClient``, an awaitable of it from ``AsyncWorldClient``."""
Stream = Union[Iterator[T], AsyncIterator[T]]
"""What a streaming method returns: an iterator from ``WorldClient``, an async iterator from ``AsyncWorldClient``;
leaving the loop cancels the call on the server."""
Request = Union[Message, Callable[[], Message]]
"""A request message, or a function that builds one (large encodings: the asyncio transport builds it on a worker
thread so the event loop keeps running)."""


class Transport(Protocol):
    """How a client sends one RPC (by its name in ``WorldService``) and hands the answer to a decoder. Failures
    raise the ``WorldweaveError`` of their gRPC status; ``timeout_s`` None means the client's default deadline for
    ``unary``, ``collect`` and ``step``, and no deadline for ``stream``."""

    def unary(self, rpc: str, request: Request, decode: Callable[[Any], T], timeout_s: float | None) -> Answer[T]:
        """A unary call, retried under the client's ``RetryPolicy``; ``decode(response)``."""

    def collect(
        self, rpc: str, request: Request, decode: Callable[[list[Any]], T], timeout_s: float | None
    ) -> Answer[T]:
        """A server-streaming call read to its end; ``decode(responses)``."""

    def stream(
        self, rpc: str, request: Message | Iterable[Message], decode: Callable[[Any], T], timeout_s: float | None
    ) -> Stream[T]:
        """A streaming call (a request, or an iterable of them for Step), ``decode(response)`` per response (for Step
        a ``proto.splice.SplitMessage``, as ``step`` gives)."""

    def step(self, request: Message, decode: Callable[[list[Any]], T], timeout_s: float | None) -> Answer[T]:
        """One ``StepRequest`` on the client's long-lived Step stream; ``decode(its responses)``, each a
        ``proto.splice.SplitMessage`` of a ``StepResponse`` whose frame's image bytes view the received buffer
        (``conversions.parse_step_response``)."""
