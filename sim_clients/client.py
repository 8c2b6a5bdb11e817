"""``WorldClient``: the synchronous Python client of a worldweave server. numpy in, numpy out.

    from worldweave.sim_clients import WorldClient
    with WorldClient("127.0.0.1:50051") as client:
        world = client.worlds.create([(rgb, depth_m, c2w)], intrinsics)
        frames = client.step(world.world_id, next_c2w)                 # one pose -> one frame
        hits = client.queries.raycast(world.world_id, origins_m, directions, max_range_m=10.0)

Its methods (``client.worlds``, ``render``/``step``/``step_stream``, ``client.queries``, ``client.edits``,
``client.point_cloud``, ``call``) are described once in ``api.ClientApi``, which ``AsyncWorldClient`` shares; this
module is the blocking transport under them (``SyncTransport``) and the connection helpers both clients use.
Poses are 4x4 float64 camera-to-world matrices (OpenCV camera, world Z up, metres; ``conventions`` converts from
engine forms). Every call has a deadline; every failure is a ``WorldweaveError`` subclass whose message says what to
do. At connect the client checks the server's API version: a different major version is
``IncompatibleServerError``, a different minor version a warning.

``step`` sends every request on one long-lived stream per client (a stream per call costs more than the rest of
a loopback round trip); steps from several threads on one client run one at a time. ``step_stream`` opens its own
stream. ``token`` sends ``authorization: Bearer <token>`` with every call; ``tls`` (or ``tls_root_certificates``)
connects over TLS.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from worldweave.proto.auth import call_metadata
from worldweave.proto.errors import (
    ERROR_BY_CODE,
    DeadlineExceededError,
    ServerError,
    ServerUnavailableError,
    WorldweaveError,
    error_for_status,
    retry_after_from_metadata,
)
from worldweave.proto.splice import SplitMessage
from worldweave.proto.worldweave.v1 import API_VERSION
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.sim_clients import conversions
from worldweave.sim_clients.api import SERVICE, ClientApi
from worldweave.sim_clients.retry import RetryPolicy, call_with_retry
from worldweave.sim_clients.transport import Request

T = TypeVar("T")

DEFAULT_MAX_MESSAGE_BYTES = 128 << 20
"""Largest message the client sends or receives, bytes: a raw 1920x1080 frame is 6.2 MB (10.4 MB with depth)."""
DEFAULT_TIMEOUT_S = 60.0
"""Deadline of unary calls, seconds."""
STEP_METHOD = f"/{SERVICE.full_name}/Step"
"""The Step RPC's method path."""


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Client channel options: the message limit both ways."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def channel_credentials(tls: bool, tls_root_certificates: bytes | str | Path | None) -> grpc.ChannelCredentials | None:
    """TLS credentials (root certificates: PEM bytes or a PEM file; None: the system's roots), or None for a plain
    channel (``tls`` False and no roots)."""
    if not tls and tls_root_certificates is None:
        return None
    roots = tls_root_certificates
    if isinstance(roots, (str, Path)):
        roots = Path(roots).read_bytes()
    return grpc.ssl_channel_credentials(root_certificates=roots)


class IncompatibleServerError(WorldweaveError):
    """The server speaks another major API version."""

    code = "FAILED_PRECONDITION"


def check_api_version(server_version: str, client_version: str = API_VERSION) -> str | None:
    """Compare semver strings: raise ``IncompatibleServerError`` when the majors differ; return a warning text when
    the minors differ, else None."""
    try:
        server_major, server_minor = (int(part) for part in server_version.split(".")[:2])
        client_major, client_minor = (int(part) for part in client_version.split(".")[:2])
    except ValueError as error:
        raise IncompatibleServerError(f"server reports API version {server_version!r}, not semver MAJOR.MINOR.PATCH") from error
    if server_major != client_major:
        raise IncompatibleServerError(
            f"server speaks worldweave API {server_version}, this client {client_version}: the major versions differ. "
            f"Install a worldweave whose API major version is {server_major} here, or run a server of API {client_major}.x."
        )
    if server_minor != client_minor:
        return (
            f"server speaks worldweave API {server_version}, this client {client_version}: calls added in the newer "
            "minor version are not available on both sides (see GetServerInfo.capabilities)"
        )
    return None


@dataclass
class ClientOptions:
    """How a client connects and calls, the same for ``WorldClient`` and ``AsyncWorldClient`` (``client.options``;
    a change to ``timeout_s`` or ``retry`` there holds from the next call)."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    """Default deadline of a call (a step, a unary call, a crop), seconds."""
    connect_timeout_s: float = 10.0
    """How long to wait for the server at connect, seconds."""
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    """The channel's message limit both ways, bytes (match the server's, reported in ``info.limits``)."""
    token: str | None = None
    """Bearer token for a server started with one."""
    tls: bool = False
    """Connect over TLS, trusting the system's roots or ``tls_root_certificates``."""
    tls_root_certificates: bytes | str | Path | None = None
    """PEM bytes or a PEM file to trust (setting it implies ``tls``)."""
    retry: RetryPolicy | None = RetryPolicy()
    """How calls the server refused for load are retried after the delay it suggested; None: raise every refusal at
    once (``LimitExceededError``, whose ``retry_after_s`` is the suggested delay)."""

    def channel(self, target: str, channel_module: Any) -> Any:
        """A channel to ``target`` from ``grpc`` or ``grpc.aio`` (``channel_module``), plain or TLS."""
        credentials = channel_credentials(self.tls, self.tls_root_certificates)
        options = channel_options(self.max_message_bytes)
        if credentials is None:
            return channel_module.insecure_channel(target, options=options)
        return channel_module.secure_channel(target, credentials, options=options)


def unreachable(target: str, connect_timeout_s: float) -> ServerUnavailableError:
    """The error for a server that did not answer at connect."""
    return ServerUnavailableError(
        f"server not reachable at {target} — is `worldweave serve` running? (no answer in {connect_timeout_s} s)"
    )


def server_info_request() -> pb.GetServerInfoRequest:
    """The handshake's request."""
    return pb.GetServerInfoRequest(client_api_version=API_VERSION)


def check_server(info: pb.GetServerInfoResponse, max_message_bytes: int) -> list[str]:
    """The handshake's checks: raise ``IncompatibleServerError`` for another major API version; the warnings to give
    (another minor version; the server sends larger messages than this client accepts)."""
    notes = [check_api_version(info.api_version)]
    if info.limits.max_message_bytes > max_message_bytes:
        notes.append(
            f"the server sends messages up to {info.limits.max_message_bytes} bytes but this client accepts "
            f"{max_message_bytes}: pass max_message_bytes={info.limits.max_message_bytes} for large frames"
        )
    return [note for note in notes if note]


def client_error(
    code: grpc.StatusCode, details: str, target: str, call: str, timeout_s: float | None,
    *, retry_after_s: float | None = None,
) -> WorldweaveError:
    """The error for a call that failed with ``code`` (the class ``error_for_status`` gives), with a message that
    says what to do; ``retry_after_s``: the server's suggested delay before a retry (the error keeps it)."""
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"server not reachable at {target} — is `worldweave serve` running? ({details})"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = (
            f"{call} took longer than its {timeout_s} s deadline: the server may be busy with other worlds, the "
            "generator slow at this resolution or pose count, or the deadline too short (pass timeout_s=...)"
        )
    elif code == grpc.StatusCode.CANCELLED:
        message = f"{call} was cancelled ({details})"
    elif code.name in ERROR_BY_CODE:
        message = f"{call}: {details}"
    else:
        message = f"{call}: server error {code.name}: {details}"
    return error_for_status(code.name, message, retry_after_s=retry_after_s)


def rpc_error(error: grpc.RpcError, target: str, call: str, timeout_s: float | None) -> WorldweaveError:
    """``client_error`` for a failed call's ``grpc.RpcError`` (sync or ``grpc.aio``), with the delay the server
    suggested in its trailing metadata (``retry-after-ms``), if any."""
    return client_error(error.code(), error.details() or "", target, call, timeout_s,
                        retry_after_s=retry_after_from_metadata(error.trailing_metadata()))


class Watchdog:
    """Cancels a call when its deadline passes: one daemon thread, started on first use, that wakes only when a
    deadline comes due or an earlier one is set (arming a step does not wake it in steady state)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._deadline: float | None = None
        self._call: grpc.Call | None = None
        self._fired_call: grpc.Call | None = None
        self._sleeping_until = math.inf
        self._closed = False
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, call: grpc.Call) -> None:
        """Cancel ``call`` at ``deadline`` (``time.monotonic()`` seconds) unless disarmed first."""
        with self._condition:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="worldweave-step-watchdog", daemon=True)
                self._thread.start()
            self._deadline, self._call, self._fired_call = deadline, call, None
            if deadline < self._sleeping_until:
                self._condition.notify()

    def disarm(self) -> None:
        """Forget the deadline."""
        with self._condition:
            self._deadline, self._call = None, None

    def fired(self, call: grpc.Call) -> bool:
        """Whether this watchdog cancelled ``call``."""
        with self._condition:
            return self._fired_call is call

    def close(self) -> None:
        """Stop the thread."""
        with self._condition:
            self._closed = True
            self._condition.notify()

    def _run(self) -> None:
        with self._condition:
            while not self._closed:
                now = time.monotonic()
                if self._deadline is not None and now >= self._deadline:
                    self._call.cancel()
                    self._fired_call, self._deadline, self._call = self._call, None, None
                self._sleeping_until = math.inf if self._deadline is None else self._deadline
                self._condition.wait(None if self._deadline is None else self._deadline - now)


class PersistentStepStream:
    """One long-lived Step stream that ``WorldClient.step`` sends every request on: opening a stream per step
    costs more than the rest of a loopback round trip (benchmarks/bench_serving.py). Requests may name any world.

    Steps through it run one at a time (a lock); each has a deadline kept by a ``Watchdog``, which cancels the
    stream when a step runs over. A failed or cancelled stream is dropped and the next step opens a new one.
    """

    def __init__(self, open_stream: grpc.StreamStreamMultiCallable, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._open_stream = open_stream
        self._metadata = metadata
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue | None = None
        self._call = None
        self._watchdog = Watchdog()

    def step(self, request: pb.StepRequest, timeout_s: float) -> list[SplitMessage[pb.StepResponse]]:
        """Send ``request`` and return its responses (one per pose, as ``conversions.parse_step_response`` gives
        them); raises ``grpc.RpcError`` on failure and ``StepDeadlineError`` past ``timeout_s`` seconds."""
        with self._lock:
            if self._call is not None and self._call.done():  # ended between steps (server gone, late watchdog)
                self._drop()
            if self._call is None:
                self._requests = queue.SimpleQueue()
                self._call = self._open_stream(iter(self._requests.get, None), metadata=self._metadata)
            call = self._call
            self._requests.put(request)
            self._watchdog.arm(time.monotonic() + timeout_s, call)
            responses: list[SplitMessage[pb.StepResponse]] = []
            try:
                while not responses or not responses[-1].message.last_in_request:
                    responses.append(next(call))
            except grpc.RpcError as error:
                self._drop()
                if self._watchdog.fired(call):
                    raise StepDeadlineError() from error
                raise
            except StopIteration:
                self._drop()
                raise ServerError("Step: the server closed the stream before answering") from None
            finally:
                self._watchdog.disarm()
            return responses

    def _drop(self) -> None:
        if self._requests is not None:
            self._requests.put(None)
        if self._call is not None:
            self._call.cancel()
        self._requests, self._call = None, None

    def close(self) -> None:
        """End the stream and the watchdog."""
        with self._lock:
            self._drop()
        self._watchdog.close()


class StepDeadlineError(DeadlineExceededError):
    """A step ran past its deadline on the persistent stream (the watchdog cancelled it)."""


class GrpcTransport:
    """What both transports hold: the server's address, the options, the call metadata (bearer token) and the stub
    of a ``grpc`` or ``grpc.aio`` channel."""

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel, target: str, options: ClientOptions) -> None:
        self.target = target
        self.options = options
        self._metadata = call_metadata(options.token)
        self._stub = pb_grpc.WorldServiceStub(channel)
        self._step_method = channel.stream_stream(
            STEP_METHOD, request_serializer=pb.StepRequest.SerializeToString,
            response_deserializer=conversions.parse_step_response)
        """The Step RPC with its responses' image bytes left in the received buffer (``SplitMessage``s)."""

    def _method(self, rpc: str) -> Any:
        """The multi-callable of ``rpc``: the stub's, but ``_step_method`` for Step."""
        return self._step_method if rpc == "Step" else getattr(self._stub, rpc)

    def _timeout(self, timeout_s: float | None) -> float:
        """A call's deadline, seconds: ``timeout_s``, or the client's default."""
        return self.options.timeout_s if timeout_s is None else timeout_s

    def _stream_retry(self, request: object) -> RetryPolicy | None:
        """The policy a streaming call's refusal is retried under: the client's for a request that can be sent
        again (one message); none for an iterator of requests (a Step stream), which a refused call consumed."""
        return self.options.retry if isinstance(request, Message) else None

    @contextlib.contextmanager
    def _failures(self, rpc: str, timeout_s: float | None, call: Any, *, cancel_on_success: bool) -> Iterator[None]:
        """Raise a grpc failure inside the block as the ``WorldweaveError`` of its status, cancelling ``call``; with
        ``cancel_on_success`` cancel it too when the block ends otherwise (its reader stopped or finished)."""
        try:
            yield
        except grpc.RpcError as error:
            call.cancel()
            raise rpc_error(error, self.target, rpc, timeout_s) from None
        except BaseException:
            call.cancel()
            raise
        if cancel_on_success:
            call.cancel()


class SyncTransport(GrpcTransport):
    """The blocking ``Transport`` (``transport.py``) of ``WorldClient``: grpc calls on one channel, unary calls and
    steps retried under ``options.retry``, failures raised as the ``WorldweaveError`` of their status."""

    def __init__(self, channel: grpc.Channel, target: str, options: ClientOptions) -> None:
        super().__init__(channel, target, options)
        self._steps = PersistentStepStream(self._step_method, self._metadata)

    def unary(self, rpc: str, request: Request, decode: Callable[[Any], T], timeout_s: float | None) -> T:
        message = request() if callable(request) else request
        method = getattr(self._stub, rpc)

        def attempt(timeout: float | None):
            try:
                return method(message, timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as error:
                raise rpc_error(error, self.target, rpc, self._timeout(timeout_s)) from None

        return decode(call_with_retry(self.options.retry, self._timeout(timeout_s), attempt))

    def stream(
        self, rpc: str, request: Message | Iterable[Message], decode: Callable[[Any], T], timeout_s: float | None
    ) -> Iterator[T]:
        """Started on the first ``next``; the call is cancelled when the caller stops iterating. A refusal for load
        before the first answer is retried as a unary call's is."""
        call, response = call_with_retry(self._stream_retry(request), timeout_s, lambda t: self._first(rpc, request, t))
        with self._failures(rpc, timeout_s, call, cancel_on_success=True):
            while response is not None:
                yield decode(response)
                response = next(call, None)

    def _first(self, rpc: str, request: Message | Iterable[Message], timeout_s: float | None) -> tuple[Any, Any]:
        """Open a streaming call and wait for its first response: (the call, the response; None when it ended)."""
        call = self._method(rpc)(request, timeout=timeout_s, metadata=self._metadata)
        with self._failures(rpc, timeout_s, call, cancel_on_success=False):
            return call, next(call, None)

    def collect(self, rpc: str, request: Request, decode: Callable[[list[Any]], T], timeout_s: float | None) -> T:
        message = request() if callable(request) else request
        return decode(list(self.stream(rpc, message, lambda response: response, self._timeout(timeout_s))))

    def step(self, request: Message, decode: Callable[[list[Any]], T], timeout_s: float | None) -> T:
        def attempt(timeout: float | None) -> list[SplitMessage[pb.StepResponse]]:
            try:
                return self._steps.step(request, timeout)
            except grpc.RpcError as error:
                raise rpc_error(error, self.target, "Step", self._timeout(timeout_s)) from None
            except StepDeadlineError:
                raise client_error(grpc.StatusCode.DEADLINE_EXCEEDED, "", self.target, "Step", self._timeout(timeout_s)) from None

        return decode(call_with_retry(self.options.retry, self._timeout(timeout_s), attempt))

    def close(self) -> None:
        self._steps.close()


class WorldClient(ClientApi):
    """A blocking connection to a worldweave server at ``target`` (``host:port``); its methods are
    ``api.ClientApi``'s. Options: the fields of ``ClientOptions`` (deadline, connect timeout, message limit, token,
    TLS, retry policy). ``info``: the server's handshake answer (API version, capabilities, generator, limits).
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = 10.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        token: str | None = None,
        tls: bool = False,
        tls_root_certificates: bytes | str | Path | None = None,
        retry: RetryPolicy | None = RetryPolicy(),
    ) -> None:
        options = ClientOptions(timeout_s, connect_timeout_s, max_message_bytes, token, tls, tls_root_certificates, retry)
        self.target = target
        self.options = options
        self._channel = options.channel(target, grpc)
        transport = SyncTransport(self._channel, target, options)
        super().__init__(transport)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=connect_timeout_s)
        except grpc.FutureTimeoutError:
            self._channel.close()
            raise unreachable(target, connect_timeout_s) from None
        try:
            self.info: pb.GetServerInfoResponse = transport.unary(
                "GetServerInfo", server_info_request(), lambda r: r, None)
            notes = check_server(self.info, max_message_bytes)
        except WorldweaveError:
            self.close()
            raise
        for note in notes:
            warnings.warn(note, stacklevel=2)

    @property
    def timeout_s(self) -> float:
        """Default deadline of a call, seconds."""
        return self.options.timeout_s

    def close(self) -> None:
        """Close the channel (calls in flight are cancelled)."""
        self._transport.close()
        self._channel.close()

    def __enter__(self) -> WorldClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
