"""What a running server reports about itself: a Prometheus endpoint and one log line per request.

* **Metrics** (``worldweave serve --metrics-port PORT``, ``ServerConfig.metrics_port``): ``ServerMetrics`` holds the
  server's instruments in a registry of its own and serves them over HTTP at ``http://HOST:PORT/metrics`` (HOST:
  ``--metrics-host``, 127.0.0.1 by default). Step stage times come from the timings ``World.step`` measures
  (``bridge.world.STAGES`` plus ``total``), as the Step responses carry them; request counts and latencies from
  ``RequestInterceptor``; worlds, voxels, anchors and queue depth are read on the server's event loop when the
  endpoint is scraped (``ServerState``); process RSS and CPU from prometheus-client's process collector.
  ``docs/metrics.md`` lists every metric with its labels and units.
* **Request log** (``worldweave serve --log-requests``, ``ServerConfig.log_requests``): one INFO line per request on
  the logger ``worldweave.requests`` (``REQUEST_LOGGER``), ``rpc=Step world=w1 tenant=default status=OK ms=12.34``;
  the same fields ride on the log record as attributes (``record.rpc``, ``record.world``, ...) for JSON formatters.

A *request* is one call of a ``WorldService`` method, except on the Step stream, where it is each ``StepRequest``
(the SDK keeps one Step stream open for all its steps): its latency runs from the moment the server takes the
request off the stream to its last frame. Health checks and reflection are neither counted nor logged.

World ids are not metric labels (clients choose them, so their number has no bound): per-world figures are in the
request log and in GetWorld / ListWorlds; the gauges are per server, summed over every tenant's loaded worlds.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from worldweave.bridge.world import STAGES
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server.auth import caller
from worldweave.server.registry import WorldRegistry
from worldweave.server.scheduling import WorldServiceInterceptor

logger = logging.getLogger(__name__)

REQUEST_LOGGER = "worldweave.requests"
"""The logger of the request lines (INFO); with ``log_requests`` off nothing is written to it."""
request_log = logging.getLogger(REQUEST_LOGGER)

STEP_STAGES = (*STAGES, "total")
"""Values of the ``stage`` label of ``worldweave_step_stage_seconds``: ``World.step``'s timed stages and the step's
total (which also holds the checks between stages)."""
RPCS = tuple(pb.DESCRIPTOR.services_by_name["WorldService"].methods_by_name)
"""Values of the ``rpc`` label: the ``WorldService`` method names."""
STEP_RPC = "Step"
"""The stream whose every StepRequest is one request (answered when a response has ``last_in_request``)."""
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Upper bounds of the latency histograms' buckets, seconds: a millisecond (echo, queries) to two minutes (a
diffusion chunk on a small GPU)."""
STATE_READ_TIMEOUT_S = 2.0
"""How long a scrape waits for the event loop to read worlds, voxels, anchors and queues, seconds; when it is busy
longer, the scrape answers without those gauges (and logs a warning)."""
POLL_INTERVAL_S = 0.1
"""How often the HTTP thread checks for shutdown, seconds (what closing the endpoint may wait)."""


# ------------------------------------------------------------------------------------------------ gauges


@dataclass(frozen=True)
class ServerState:
    """Counts of a server at one moment, summed over every tenant's loaded worlds."""

    worlds: int
    """Worlds loaded in memory (saved-only worlds are not counted)."""
    voxels: int
    """Voxels in their global maps."""
    anchors: int
    """Anchors (keyframes) in their memories."""
    queued_calls: int
    """Calls admitted but not running yet: waiting for their world or for an engine thread."""
    refused_calls: int
    """Calls refused by admission control since the server started."""
    max_queued_per_world: int
    """Admission bound per world (``QueueLimits.per_world``)."""
    max_queued_total: int
    """Admission bound per server (``QueueLimits.total``)."""
    calls_at_once: int
    """Clients' calls the engine runs at once now (``engine_gate.EngineGate.limit``)."""

    @classmethod
    def read(cls, worlds: WorldRegistry) -> ServerState:
        """Read ``worlds`` now; run on the server's event loop (a world's counts may be mid-step: as GetWorld)."""
        entries = worlds.loaded()
        admission = worlds.admission
        return cls(
            worlds=len(entries),
            voxels=sum(len(entry.world.memory.voxel_map) for entry in entries),
            anchors=sum(len(entry.world.memory.anchors) for entry in entries),
            queued_calls=admission.waiting,
            refused_calls=admission.refused,
            max_queued_per_world=admission.limits.per_world,
            max_queued_total=admission.limits.total,
            calls_at_once=admission.gate.limit,
        )


class _StateCollector(Collector):
    """Yields ``ServerState`` as metrics at each scrape, read on the server's event loop (``attach``)."""

    def __init__(self, worlds: WorldRegistry) -> None:
        self.worlds = worlds
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: int | None = None

    def attach(self) -> None:
        """Read the state on the running event loop from now on (call on it)."""
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()

    def _state(self) -> ServerState | None:
        if self.loop is None:
            return None
        if threading.get_ident() == self.loop_thread:
            return ServerState.read(self.worlds)

        async def read() -> ServerState:
            return ServerState.read(self.worlds)

        try:
            return asyncio.run_coroutine_threadsafe(read(), self.loop).result(STATE_READ_TIMEOUT_S)
        except TimeoutError:
            logger.warning("metrics: the event loop did not answer within %.1f s; worlds, voxels, anchors and queues "
                           "left out of this scrape", STATE_READ_TIMEOUT_S)
        except RuntimeError:  # the loop is closed: the server has stopped
            pass
        return None

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        if state is None:
            return
        yield GaugeMetricFamily("worldweave_worlds", "Worlds loaded in memory, every tenant's.", value=state.worlds)
        yield GaugeMetricFamily("worldweave_voxels", "Voxels in the global maps of the loaded worlds.",
                                value=state.voxels)
        yield GaugeMetricFamily("worldweave_anchors", "Anchors (keyframes) in the memories of the loaded worlds.",
                                value=state.anchors)
        yield GaugeMetricFamily("worldweave_queued_calls", "Calls admitted and waiting for their world or for an "
                                "engine thread.", value=state.queued_calls)
        limits = GaugeMetricFamily("worldweave_queue_limit_calls", "Admission bounds on waiting calls "
                                   "(--max-queued-per-world, --max-queued-total).", labels=("scope",))
        limits.add_metric(("per_world",), state.max_queued_per_world)
        limits.add_metric(("total",), state.max_queued_total)
        yield limits
        yield GaugeMetricFamily("worldweave_engine_calls_at_once", "Clients' calls the engine runs at once: between 1 "
                                "and --workers, as many as it measured to be worth it (docs/limits.md).",
                                value=state.calls_at_once)
        yield CounterMetricFamily("worldweave_refused_calls", "Calls refused by admission control "
                                  "(RESOURCE_EXHAUSTED with retry-after-ms).", value=state.refused_calls)


# ------------------------------------------------------------------------------------------------ the endpoint


class _QuietHandler(WSGIRequestHandler):
    """Writes no line per scrape to stderr."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def _bind_http(host: str, port: int, app: object) -> WSGIServer:
    """A threading WSGI server for ``app`` bound to ``host:port`` (IPv4 or IPv6); OSError naming both when it
    cannot bind."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("MetricsHTTPServer", (ThreadingWSGIServer,), {"address_family": family})
        return make_server(host, port, app, server_class, handler_class=_QuietHandler)
    except OSError as error:
        raise OSError(f"cannot serve metrics on {host}:{port}: {error.strerror or error} (pick another "
                      "--metrics-port, or 0 for a free one)") from None


class ServerMetrics:
    """A server's Prometheus instruments over ``worlds``, in a registry of their own, served at
    ``http://HOST:PORT/metrics``: ``bind`` the port, ``start`` serving it from a daemon thread (worlds and queues
    are then read on the calling event loop), ``close``.
    """

    def __init__(self, worlds: WorldRegistry) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "worldweave_requests", "Requests answered, by WorldService method and gRPC status (a Step stream counts "
            "each StepRequest).", ("rpc", "status"), registry=self.registry,
        )
        self.request_seconds = Histogram(
            "worldweave_request_duration_seconds", "Time from a request's arrival to its last response, seconds.",
            ("rpc",), buckets=SECONDS_BUCKETS, registry=self.registry,
        )
        self.step_stage_seconds = Histogram(
            "worldweave_step_stage_seconds", "Time World.step spent per stage, per StepRequest answered, seconds.",
            ("stage",), buckets=SECONDS_BUCKETS, registry=self.registry,
        )
        self._latencies = {rpc: self.request_seconds.labels(rpc) for rpc in RPCS}  # each RPC shows, even at 0
        self._stages = {stage: self.step_stage_seconds.labels(stage) for stage in STEP_STAGES}
        self._counters: dict[tuple[str, grpc.StatusCode], Counter] = {}
        ProcessCollector(registry=self.registry)
        self._state = _StateCollector(worlds)
        self.registry.register(self._state)
        self._http: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def bind(self, host: str, port: int) -> int:
        """Bind the endpoint's port on ``host`` (port 0 picks a free one) and return it; OSError naming them when it
        cannot (busy port, unknown host)."""
        self._http = _bind_http(host.strip("[]"), port, make_wsgi_app(self.registry))
        return self._http.server_port

    def start(self) -> None:
        """Serve the bound endpoint (from a daemon thread); call on the server's event loop."""
        if self._http is None:
            raise RuntimeError("ServerMetrics.start: bind a port first")
        self._state.attach()
        self._thread = threading.Thread(target=self._http.serve_forever, args=(POLL_INTERVAL_S,),
                                        name="worldweave-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port (blocks up to ``POLL_INTERVAL_S``)."""
        if self._http is None:
            return
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join()
            self._thread = None
        self._http.server_close()
        self._http = None

    def observe_request(self, rpc: str, status: grpc.StatusCode, seconds: float) -> None:
        """Count one answered request of ``rpc`` (one of ``RPCS``) and its latency."""
        counter = self._counters.get((rpc, status))
        if counter is None:
            counter = self._counters[(rpc, status)] = self.requests.labels(rpc, status.name)
        counter.inc()
        self._latencies[rpc].observe(seconds)

    def observe_step(self, timings_s: Mapping[str, float]) -> None:
        """Record the stage times of one answered StepRequest (``StepResponse.timings_s``)."""
        for stage, histogram in self._stages.items():
            if stage in timings_s:
                histogram.observe(timings_s[stage])


# ------------------------------------------------------------------------------------------------ per request

_BARE_VALUE = re.compile(r"[A-Za-z0-9_.:/@+-]{1,64}")
"""Log values written as they are; any other is written as a JSON string (quotes, control characters escaped)."""
LOGGED_CHARS = 64
"""Most characters of a client's string (a malformed world id) a log line repeats."""


def log_value(text: str) -> str:
    """``text`` as one logfmt value: bare when it is a plain token, else a JSON string of its first
    ``LOGGED_CHARS`` characters, so that no client string can break a line or forge a field."""
    return text if _BARE_VALUE.fullmatch(text) else json.dumps(text[:LOGGED_CHARS])


def _status_of(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status a call ended with: what it aborted with or set, CANCELLED when cancelled, UNKNOWN for an error
    grpc answers itself."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


async def _responses(behavior, request_or_iterator, context: grpc.aio.ServicerContext) -> AsyncIterator:
    """The responses of a response-streaming ``behavior``: an async generator, or a coroutine that writes them with
    ``context.write`` (or only aborts, as authentication's refusals do)."""
    responses = behavior(request_or_iterator, context)
    if inspect.isawaitable(responses):
        await responses
        return
    async for response in responses:
        yield response


class RequestInterceptor(WorldServiceInterceptor):
    """Counts, times and logs every ``WorldService`` request (see the module); put it first among the server's
    interceptors, so that it also sees the calls authentication refuses. ``metrics``: where to count (None: only
    log); ``log_requests``: write the request lines."""

    def __init__(self, metrics: ServerMetrics | None, *, log_requests: bool) -> None:
        super().__init__()
        self.metrics = metrics
        self.log_requests = log_requests

    def record(self, rpc: str, world: str, status: grpc.StatusCode, started_s: float) -> None:
        """Count and log one answered request; ``started_s``: its ``time.perf_counter()`` at arrival."""
        seconds = time.perf_counter() - started_s
        if self.metrics is not None:
            self.metrics.observe_request(rpc, status, seconds)
        if self.log_requests and request_log.isEnabledFor(logging.INFO):
            # The caller is known once authentication let the call in.
            refused = status in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
            tenant = "" if refused else caller().tenant
            ms = round(seconds * 1e3, 2)
            request_log.info(
                "rpc=%s world=%s%s status=%s ms=%.2f", rpc, log_value(world),
                f" tenant={log_value(tenant)}" if tenant else "", status.name, ms,
                extra={"rpc": rpc, "world": world, "tenant": tenant or None, "status": status.name, "ms": ms},
            )

    def wrap(self, handler: grpc.RpcMethodHandler, rpc: str) -> grpc.RpcMethodHandler:
        """``handler`` (an aio server's, of any kind) recording each of its requests."""
        kind = next(name for name in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
                    if getattr(handler, name) is not None)
        behavior = getattr(handler, kind)
        if rpc == STEP_RPC:
            run = self._step_stream(behavior, rpc)
        elif handler.response_streaming:
            async def run(request, context: grpc.aio.ServicerContext):
                started_s, error = time.perf_counter(), None
                try:
                    async for response in _responses(behavior, request, context):
                        yield response
                except BaseException as caught:
                    error = caught
                    raise
                finally:
                    self.record(rpc, getattr(request, "world_id", ""), _status_of(context, error), started_s)
        else:
            async def run(request_or_iterator, context: grpc.aio.ServicerContext):
                started_s, error, world = time.perf_counter(), None, getattr(request_or_iterator, "world_id", "")
                try:
                    response = await behavior(request_or_iterator, context)
                    if isinstance(response, pb.CreateWorldResponse):  # the id the server picked
                        world = response.world.world_id
                    return response
                except BaseException as caught:
                    error = caught
                    raise
                finally:
                    self.record(rpc, world, _status_of(context, error), started_s)
        return handler._replace(**{kind: run})

    def _step_stream(self, behavior, rpc: str):
        """The Step stream's behaviour, recording each StepRequest when its last frame leaves (``last_in_request``)
        and the stage timings it carries; an error ends the request in progress (a stream refused before its first
        request counts as one request; one the client closes between requests, as none)."""

        async def run(requests: AsyncIterator, context: grpc.aio.ServicerContext):
            pending: list[tuple[float, str]] = []
            """(arrival, world id) of the requests taken off the stream and not answered yet, oldest first."""

            async def taken() -> AsyncIterator:
                async for request in requests:
                    pending.append((time.perf_counter(), getattr(request, "world_id", "")))
                    yield request

            call_started_s, error = time.perf_counter(), None
            try:
                async for response in _responses(behavior, taken(), context):
                    if response.last_in_request and pending:
                        started_s, world = pending.pop(0)
                        if self.metrics is not None:
                            self.metrics.observe_step(response.timings_s)
                        self.record(rpc, world, grpc.StatusCode.OK, started_s)
                    yield response
            except BaseException as caught:
                error = caught
                raise
            finally:
                status = _status_of(context, error)
                # A stream refused before any request (authentication) is one request; one cancelled between
                # requests (the client closed its idle stream) is none.
                refused = not pending and error is not None and status != grpc.StatusCode.CANCELLED
                for started_s, world in pending or ([(call_started_s, "")] if refused else []):
                    self.record(rpc, world, status, started_s)

        return run
