"""Assembling and running a server: ``create_server(address, config) -> (server, port)``, graceful stop, the standard
health service and server reflection, message limits that fit raw 1920x1080 frames, and a background-thread runner
for tests, benchmarks and clients that start a local server.

Binds 127.0.0.1 unless told otherwise. Optional: bearer tokens every call must carry, each naming a tenant and a
role (``server.auth``, ``docs/security.md``), TLS from a PEM certificate and key, autosave of worlds to the data
folder (``registry.AutosavePolicy``), and Prometheus metrics and a log line per request (``server.metrics``).

A server builds one generator and, for a generator that returns no depth, one depth estimator at start-up
(``build_backends``), and shares both between all its worlds (``scheduling``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from worldweave.bridge.generators.base import Generator
from worldweave.bridge.generators.depth import DepthEstimator
from worldweave.bridge.generators.registry import (
    DEFAULT_GENERATOR,
    create_depth_estimator,
    create_generator,
    generator_class,
)
from worldweave.bridge.warmup import WarmupReport, warm_up
from worldweave.proto.errors import InvalidInputError, PreconditionError
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.server.auth import BearerTokenInterceptor, TokenTable, server_credentials
from worldweave.server.decoding import UndecodableRequestInterceptor
from worldweave.server.defaults import METRICS_HOST, STOP_TIMEOUT_S
from worldweave.server.metrics import RequestInterceptor, ServerMetrics
from worldweave.server.record_log import Recording
from worldweave.server.registry import AutosavePolicy, WorldRegistry
from worldweave.server.scheduling import (
    Admission,
    CallInterceptor,
    QueueLimits,
    default_engine_threads,
    share_depth_estimator,
    share_generator,
)
from worldweave.server.service import ServerLimits, WorldServicer, server_info
from worldweave.server.version import server_version
from worldweave.server.world_state import QUERY_REACH

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WorldService"].full_name
"""``worldweave.v1.WorldService``: the name health checks and reflection use."""


@dataclass(frozen=True)
class ServerConfig:
    """How a server runs (``worldweave serve`` flags map onto these fields)."""

    data_dir: Path | None = None
    """Folder where worlds are saved and from which they are listed after a restart; None: no persistence."""
    generator: str = DEFAULT_GENERATOR
    """Generator registry name, shared by every world of the server."""
    generator_options: dict[str, object] = field(default_factory=dict)
    """Keyword options of the generator's constructor."""
    depth_estimator: str = ""
    """Depth estimator registry name (``registry.DEPTH_ESTIMATORS``, e.g. "depth-anything"), shared by every world
    of the server; needed when the generator returns no depth ("": none)."""
    depth_estimator_options: dict[str, object] = field(default_factory=dict)
    """Keyword options of the depth estimator's constructor (e.g. ``model``: a weights folder, ``device``)."""
    device: str = "cpu"
    """Torch device of the worlds' memory ("cpu", "cuda", "cuda:1")."""
    limits: ServerLimits = field(default_factory=ServerLimits)
    """Request limits, reported in the handshake."""
    workers: int = field(default_factory=default_engine_threads)
    """Threads running engine work (steps, renders, saves, decoding); worlds beyond this count wait. Default: one per
    core of the machine (``scheduling.default_engine_threads``)."""
    adaptive_concurrency: bool = False
    """Run clients' calls on between one and ``workers`` threads at once, as many as the engine gate measures to be
    worth it in calls per second over each call's time (``engine_gate``); False (the default): ``workers`` at once
    whenever calls wait (steadier and more calls per second; docs/limits.md, "Calls at once")."""
    auth_token: str | None = None
    """When set, every call but the health check must carry ``authorization: Bearer <token>``; the token is one
    read-write tenant, the default one (shorthand for ``auth_tokens=TokenTable.single(token)``)."""
    auth_tokens: TokenTable | None = None
    """When set, every call but the health check must carry a token of this table, and runs as its tenant and role
    (``auth.read_token_file`` reads one); not with ``auth_token``."""
    tls_cert_file: Path | None = None
    """PEM certificate chain: with ``tls_key_file``, the port speaks TLS only."""
    tls_key_file: Path | None = None
    """PEM private key of ``tls_cert_file``."""
    autosave: AutosavePolicy = field(default_factory=AutosavePolicy)
    """Save worlds to ``data_dir`` every N changes and / or S seconds after a change, and at shutdown."""
    queues: QueueLimits = field(default_factory=QueueLimits)
    """Admission control: most calls waiting for one world and in total before more are refused with
    RESOURCE_EXHAUSTED and ``retry-after-ms`` (``scheduling.QueueLimits``); reported in the handshake."""
    warm_up: bool = True
    """Compile (or load from numba's cache) the engine's kernels on a tiny in-memory world before health reports
    SERVING (``bridge.warmup``), so that no call pays for compilation; False: the first calls do."""
    stop_timeout_s: float = STOP_TIMEOUT_S
    """At shutdown, after the grace period: how long saves of unsaved worlds and engine work still running (a step,
    a render; queries stop within a chunk) may take, seconds; then the server stops without them."""
    metrics_port: int | None = None
    """Serve Prometheus metrics at ``http://metrics_host:metrics_port/metrics`` (0 picks a free port; None: no
    endpoint); ``server.metrics`` and ``docs/metrics.md`` list them."""
    metrics_host: str = METRICS_HOST
    """Interface of the metrics endpoint (this machine only by default; it has no token and no TLS)."""
    log_requests: bool = False
    """Write one INFO line per request on the logger ``worldweave.requests`` (rpc, world, tenant, status, ms)."""
    record_dir: Path | None = None
    """Folder of the worlds' record logs (``record_log``, ``worldweave replay``); None: no world is recorded."""
    record_every_world: bool = True
    """With ``record_dir``: record every world its CreateWorldRequest does not opt out of (``record`` false);
    False: only those that set ``record``."""
    record_fsync: bool = True
    """fsync each record before its request is answered (survives a machine crash); False: write only (survives a
    crash of the server, costs no disk flush)."""


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel options for a server: message limits both ways, and no port sharing (a busy port is an error)."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


def missing_depth_message(generator_name: str) -> str:
    """What to tell a user whose generator returns no depth and who named no depth estimator."""
    return (
        f"generator {generator_name!r} returns no depth, so generated frames cannot be fused into memory without a "
        f"depth estimator: start the server with `--depth-estimator depth-anything` (and `--depth-estimator-option "
        f"model=FOLDER_OR_ID`; ServerConfig.depth_estimator in code)"
    )


def build_backends(
    config: ServerConfig, generator: Generator | None = None, depth_estimator: DepthEstimator | None = None
) -> tuple[Generator, DepthEstimator | None]:
    """The server's one generator and one depth estimator: the instances given, else built from ``config``.

    Checks before loading any weights that a generator without depth has an estimator (``PreconditionError``
    naming the flag to add), then builds the estimator (small, so a wrong weights folder fails fast) and the
    generator. An estimator next to a generator that returns depth is kept but unused (logged).
    """
    if config.depth_estimator_options and not config.depth_estimator:
        raise InvalidInputError(
            f"depth estimator options {sorted(config.depth_estimator_options)} given without a depth estimator: "
            f"add --depth-estimator NAME (ServerConfig.depth_estimator)"
        )
    generator_type = type(generator) if generator is not None else generator_class(config.generator)
    has_estimator = depth_estimator is not None or bool(config.depth_estimator)
    if not generator_type.returns_depth and not has_estimator:
        raise PreconditionError(missing_depth_message(generator_type.name))
    if depth_estimator is None and config.depth_estimator:
        try:
            depth_estimator = create_depth_estimator(config.depth_estimator, **config.depth_estimator_options)
        except TypeError as error:  # an option the constructor does not take
            raise InvalidInputError(
                f"depth estimator {config.depth_estimator!r}: {error} (check --depth-estimator-option)"
            ) from error
    if generator is None:
        try:
            generator = create_generator(config.generator, **config.generator_options)
        except TypeError as error:
            raise InvalidInputError(f"generator {config.generator!r}: {error} (check --generator-option)") from error
    if generator.returns_depth and depth_estimator is not None:
        logger.warning("generator %r returns its own depth: the depth estimator is not used", generator.name)
    return generator, depth_estimator


class WorldServer:
    """A gRPC server for worlds with its health service, reflection and thread pool; ``start``, ``stop``."""

    def __init__(
        self,
        address: str,
        config: ServerConfig,
        generator: Generator | None = None,
        depth_estimator: DepthEstimator | None = None,
    ) -> None:
        self._created_s = time.perf_counter()
        self.config = config
        if config.auth_token is not None and config.auth_tokens is not None:
            raise InvalidInputError("set ServerConfig.auth_token or auth_tokens, not both")
        tokens = TokenTable.single(config.auth_token) if config.auth_token is not None else config.auth_tokens
        generator, depth_estimator = build_backends(config, generator, depth_estimator)
        self.executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="worldweave")
        self.registry = WorldRegistry(
            share_generator(generator), self.executor, data_dir=config.data_dir, device=config.device,
            autosave=config.autosave,
            depth_estimator=share_depth_estimator(depth_estimator) if depth_estimator is not None else None,
            admission=Admission(config.queues, engine_threads=config.workers,
                                adaptive_concurrency=config.adaptive_concurrency),
            recording=Recording(config.record_dir, every_world=config.record_every_world, fsync=config.record_fsync,
                                generator=type(generator),
                                generator_options=config.generator_options, device=config.device, limits=config.limits),
        )
        for world_id in self.registry.scan():
            logger.warning("saved world %r in %s is unreadable; it is not listed", world_id, config.data_dir)
        info = server_info(generator, config.limits, persistence=config.data_dir is not None,
                           recording=config.record_dir is not None, server_version=server_version())
        info.limits.max_queued_per_world = config.queues.per_world
        info.limits.max_queued_total = config.queues.total
        info.limits.engine_threads = config.workers
        self.metrics = ServerMetrics(self.registry) if config.metrics_port is not None else None
        """The Prometheus instruments (``server.metrics``); None without ``config.metrics_port``."""
        interceptors: list[grpc.aio.ServerInterceptor] = []
        if config.metrics_port is not None or config.log_requests:  # first: it also sees calls auth refuses
            interceptors.append(RequestInterceptor(self.metrics, log_requests=config.log_requests))
        if tokens is not None:
            interceptors.append(BearerTokenInterceptor(tokens))
        interceptors.append(CallInterceptor())  # who the client of each call is, for admission and turns
        interceptors.append(UndecodableRequestInterceptor())  # last: it wraps the servicers' own handlers
        self.grpc = grpc.aio.server(options=channel_options(config.limits.max_message_bytes), interceptors=interceptors)
        pb_grpc.add_WorldServiceServicer_to_server(WorldServicer(self.registry, config.limits, info), self.grpc)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc)
        if (config.tls_cert_file is None) != (config.tls_key_file is None):
            raise ValueError("TLS needs both a certificate and its private key (--tls-cert and --tls-key)")
        try:
            if config.tls_cert_file is not None:
                credentials = server_credentials(config.tls_cert_file, config.tls_key_file)
                self.port = self.grpc.add_secure_port(address, credentials)
            else:
                self.port = self.grpc.add_insecure_port(address)
        except RuntimeError:  # grpc's "Failed to bind to address" (its own log line gives the system's reason)
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot listen on {address}: the port is busy or the address is not local")
        self.metrics_port: int | None = None
        """The port of the metrics endpoint (``config.metrics_port``, or the one picked for 0); None without one."""
        if self.metrics is not None:
            self.metrics_port = self.metrics.bind(config.metrics_host, config.metrics_port)
        self._autosave_task: asyncio.Task | None = None
        self.warmup: WarmupReport | None = None
        """What the engine's warm-up did (``start``); None before it, or with ``config.warm_up`` off."""
        self.startup_s: float | None = None
        """Seconds from this object's construction (backends built, worlds scanned) to SERVING, once started."""

    async def start(self) -> None:
        """Start serving. The port answers at once while health reports NOT_SERVING; with ``config.warm_up`` the
        engine's kernels are compiled (``bridge.warmup``) on the pool; then health reports SERVING for the server
        and for ``worldweave.v1.WorldService``, and the start-up time is logged."""
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.grpc.start()
        if self.metrics is not None:
            self.metrics.start()
        if self.config.warm_up:
            generator, device = self.registry.generator, self.config.device
            self.warmup = await asyncio.get_running_loop().run_in_executor(
                self.executor, lambda: warm_up(generator, device=device, query_reach=QUERY_REACH)
            )
            logger.info("engine warm-up: %s", self.warmup.summary())
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.startup_s = time.perf_counter() - self._created_s
        logger.info("ready in %.2f s (backends, saved worlds%s)", self.startup_s,
                    ", engine warm-up" if self.config.warm_up else "; engine warm-up off: first calls compile kernels")
        self._autosave_task = asyncio.get_running_loop().create_task(self.registry.autosave_loop())

    async def stop(self, grace: float | None = 5.0) -> bool:
        """Graceful stop: health turns NOT_SERVING, new calls are refused, calls in flight get ``grace`` seconds and
        are then cancelled (queries stop within a chunk of work), worlds with unsaved changes are saved (with
        autosave on), then the thread pool finishes the engine work it holds.

        The saves and the pool's work get ``config.stop_timeout_s`` seconds together (a save already writing always
        finishes). Returns False when engine work was still running after that: its pool threads would keep the
        process alive, so a process that stops for good exits without waiting for them (``serve`` does)."""
        await self.health.enter_graceful_shutdown()
        await self.grpc.stop(grace)
        if self._autosave_task is not None:
            self._autosave_task.cancel()
            await asyncio.gather(self._autosave_task, return_exceptions=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.stop_timeout_s
        try:
            saved = await asyncio.wait_for(self.registry.save_unsaved(), self.config.stop_timeout_s)
        except TimeoutError:
            logger.error("worlds still busy %.1f s after the grace period were not saved", self.config.stop_timeout_s)
        else:
            if saved:
                logger.info("saved %d world(s) with unsaved changes at shutdown: %s", len(saved), ", ".join(saved))
        self.executor.shutdown(wait=False, cancel_futures=True)  # drop queued work; running work ends by itself
        finishing = threading.Thread(target=self.executor.shutdown, name="worldweave-stop", daemon=True)
        finishing.start()
        await loop.run_in_executor(None, finishing.join, max(0.0, deadline - loop.time()))
        if self.metrics is not None:
            await loop.run_in_executor(None, self.metrics.close)
        return not finishing.is_alive()

    async def wait_for_termination(self) -> None:
        """Return when the server has stopped."""
        await self.grpc.wait_for_termination()


def create_server(
    address: str = "127.0.0.1:0",
    config: ServerConfig | None = None,
    *,
    generator: Generator | None = None,
    depth_estimator: DepthEstimator | None = None,
) -> tuple[WorldServer, int]:
    """A server listening on ``address`` (port 0 picks a free one), not started yet, and its port.

    ``generator`` / ``depth_estimator``: instances to share between worlds instead of building
    ``config.generator`` / ``config.depth_estimator`` (tests use cheap ones). Raises ``PreconditionError`` when the
    generator returns no depth and no depth estimator is given. Call from the event loop that will run the server,
    then ``await server.start()``.
    """
    server = WorldServer(address, config or ServerConfig(), generator, depth_estimator)
    return server, server.port


class BackgroundServer:
    """Runs a ``WorldServer`` on its own event loop in a daemon thread; a context manager.

    For tests, benchmarks and clients that start a local server. ``address`` is ``host:port`` once
    started.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:0",
        config: ServerConfig | None = None,
        *,
        generator: Generator | None = None,
        depth_estimator: DepthEstimator | None = None,
    ) -> None:
        self._bind = address
        self._config = config
        self._generator = generator
        self._depth_estimator = depth_estimator
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="worldweave-server", daemon=True)
        self.server: WorldServer | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """``host:port`` clients connect to."""
        return f"{self._bind.rsplit(':', 1)[0]}:{self.port}"

    def start(self) -> BackgroundServer:
        """Start the loop thread and the server on it; returns self."""
        self._thread.start()

        async def start() -> WorldServer:
            server, _ = create_server(self._bind, self._config, generator=self._generator,
                                      depth_estimator=self._depth_estimator)
            await server.start()
            return server

        try:
            self.server = asyncio.run_coroutine_threadsafe(start(), self._loop).result()
        except BaseException:
            self.stop()
            raise
        self.port = self.server.port
        return self

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop the server gracefully, then the loop and its thread."""
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(grace), self._loop).result()
            self.server = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
