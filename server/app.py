"""Assembling and running a server: ``create_server(address, config) -> (server, port)``, graceful stop, the standard
health service and server reflection, message limits that fit raw 1920x1080 frames, and a background-thread runner
for tests, benchmarks and clients that start a local server.

Binds 127.0.0.1 unless told otherwise. Optional: a bearer token every call must carry, TLS from a PEM certificate
and key (``server.auth``), and autosave of worlds to the data folder (``registry.AutosavePolicy``).

A server builds one generator and, for a generator that returns no depth, one depth estimator at start-up
(``build_backends``), and shares both between all its worlds (``scheduling``).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from worldweave.bridge.generators.base import Generator
from worldweave.bridge.generators.depth import DepthEstimator
from worldweave.bridge.generators.registry import (
    create_depth_estimator,
    create_generator,
    generator_class,
)
from worldweave.proto.errors import InvalidInputError, PreconditionError
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.server.auth import BearerTokenInterceptor, server_credentials
from worldweave.server.registry import AutosavePolicy, WorldRegistry
from worldweave.server.scheduling import share_depth_estimator, share_generator
from worldweave.server.service import ServerLimits, WorldServicer, server_info

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WorldService"].full_name
"""``worldweave.v1.WorldService``: the name health checks and reflection use."""


@dataclass(frozen=True)
class ServerConfig:
    """How a server runs (``worldweave serve`` flags map onto these fields)."""

    data_dir: Path | None = None
    """Folder where worlds are saved and from which they are listed after a restart; None: no persistence."""
    generator: str = "reproject"
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
    workers: int = 8
    """Threads running engine work (steps, renders, saves, decoding); worlds beyond this count wait."""
    auth_token: str | None = None
    """When set, every call but the health check must carry ``authorization: Bearer <token>``."""
    tls_cert_file: Path | None = None
    """PEM certificate chain: with ``tls_key_file``, the port speaks TLS only."""
    tls_key_file: Path | None = None
    """PEM private key of ``tls_cert_file``."""
    autosave: AutosavePolicy = field(default_factory=AutosavePolicy)
    """Save worlds to ``data_dir`` every N changes and / or S seconds after a change, and at shutdown."""


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel options for a server: message limits both ways, and no port sharing (a busy port is an error)."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


def server_version() -> str:
    """The installed worldweave version ("unknown" when run from a tree that was never installed)."""
    try:
        return version("worldweave")
    except PackageNotFoundError:
        return "unknown"


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
        self.config = config
        generator, depth_estimator = build_backends(config, generator, depth_estimator)
        self.executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="worldweave")
        self.registry = WorldRegistry(
            share_generator(generator), self.executor, data_dir=config.data_dir, device=config.device,
            autosave=config.autosave,
            depth_estimator=share_depth_estimator(depth_estimator) if depth_estimator is not None else None,
        )
        for world_id in self.registry.scan():
            logger.warning("saved world %r in %s is unreadable; it is not listed", world_id, config.data_dir)
        info = server_info(generator, config.limits, persistence=config.data_dir is not None,
                           server_version=server_version())
        interceptors = [BearerTokenInterceptor(config.auth_token)] if config.auth_token is not None else []
        self.grpc = grpc.aio.server(options=channel_options(config.limits.max_message_bytes), interceptors=interceptors)
        pb_grpc.add_WorldServiceServicer_to_server(WorldServicer(self.registry, config.limits, info), self.grpc)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc)
        if (config.tls_cert_file is None) != (config.tls_key_file is None):
            raise ValueError("TLS needs both a certificate and its private key (--tls-cert and --tls-key)")
        if config.tls_cert_file is not None:
            self.port = self.grpc.add_secure_port(address, server_credentials(config.tls_cert_file, config.tls_key_file))
        else:
            self.port = self.grpc.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}: the port is busy or the address is not local")
        self._autosave_task: asyncio.Task | None = None

    async def start(self) -> None:
        """Start serving; health reports SERVING for the server and for ``worldweave.v1.WorldService``."""
        await self.grpc.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        self._autosave_task = asyncio.get_running_loop().create_task(self.registry.autosave_loop())

    async def stop(self, grace: float | None = 5.0) -> None:
        """Graceful stop: health turns NOT_SERVING, new calls are refused, calls in flight get ``grace`` seconds,
        worlds with unsaved changes are saved (with autosave on), then the thread pool finishes the engine work it
        holds."""
        await self.health.enter_graceful_shutdown()
        await self.grpc.stop(grace)
        if self._autosave_task is not None:
            self._autosave_task.cancel()
            await asyncio.gather(self._autosave_task, return_exceptions=True)
        saved = await self.registry.save_unsaved()
        if saved:
            logger.info("saved %d world(s) with unsaved changes at shutdown: %s", len(saved), ", ".join(saved))
        await asyncio.get_running_loop().run_in_executor(None, self.executor.shutdown)

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


M_TRIM_THRESHOLD = -1
"""glibc ``mallopt`` parameter: free memory at the top of the heap beyond this is given back to the system."""
M_MMAP_THRESHOLD = -3
"""glibc ``mallopt`` parameter: allocations at least this large get their own mmap (and munmap when freed)."""


def tune_malloc(mmap_threshold_bytes: int = 32 << 20, trim_threshold_bytes: int = 64 << 20) -> bool:
    """Keep per-frame buffers in glibc's heap instead of a fresh mmap (and page faults) per allocation.

    A 640x480 RGB frame (0.9 MB) is above glibc's default mmap threshold, so each copy of it on its way through
    gRPC is a new mapping whose pages fault in on first touch and are unmapped when freed. Raising the mmap
    threshold alone is not enough: glibc then trims the freed memory at the top of the heap right away, so the
    trim threshold is raised with it. The heap may keep up to ``trim_threshold_bytes`` of free memory per arena.
    benchmarks/bench_serving.py measures the effect. Returns False where ``mallopt`` is unavailable (not glibc);
    then nothing changes.
    """
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name)
    if not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold_bytes))) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold_bytes))
    )


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
