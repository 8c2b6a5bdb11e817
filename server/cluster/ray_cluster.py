"""``worldweave serve --ray [ADDRESS]``: a front door (``front_door``) over worldweave replicas on Ray Serve.

Connects to the Ray cluster at ADDRESS (``ray.init(address=...)``: "auto", "HOST:6379", "ray://HOST:10001"), or
starts a local one, starts Ray Serve without its HTTP proxies (clients reach the front door's gRPC port, never
Serve's), and deploys one Serve application per replica (``replica.replica_app``, named ``worldweave-worker-K``,
one replica each, ``--cpus-per-replica`` / ``--gpus-per-replica`` for its actor, ``--worlds-per-replica`` worlds
held at once). Why one application per replica rather than one deployment of N replicas: a Serve deployment
routes each request to a replica of its own choosing, while a world's calls must go to the one replica that holds
it; with one application each, the front door's ``Placement`` decides, and Serve still restarts a dead replica.
Scaling is therefore the front door's own (``FrontDoor.scale``, and with ``--max-replicas`` its policy on queue
depth, ``autoscale``), not Serve's autoscaler.

Only str, int, bool and lists of str cross the Serve handles (control); worlds' requests and answers go to each
replica's gRPC port as protobuf bytes, with a token the front door makes at start. Ray is imported only here and in
``replica``; ``worldweave serve --ray`` without it says how to install it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import signal
import threading
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2

from worldweave.proto.errors import InvalidInputError
from worldweave.server.app import SERVICE_NAME
from worldweave.server.auth import TokenTable
from worldweave.server.cluster.autoscale import AutoscalePolicy
from worldweave.server.cluster.front_door import FrontDoor, ReplicaHandle, front_door_server
from worldweave.server.cluster.placement import WorkerCapacity

T = TypeVar("T")
logger = logging.getLogger(__name__)

INSTALL_HINT = "--ray needs Ray Serve, which is not installed: pip install 'worldweave[ray]'"
RESTART_POLL_S = 0.5
"""How often the front door asks Serve whether a lost replica is back, seconds."""
ADDRESS_TIMEOUT_S = 10.0
"""Most seconds one ``address`` call to a replica may take while waiting for its restart."""
FORWARDED_FLAGS = (
    "generator", "depth_estimator", "device", "max_poses", "max_message_mib", "max_pixels_per_call",
    "max_query_items", "max_insert_points", "max_ray_voxels", "max_shape_voxels", "max_queued_per_world",
    "max_queued_total", "autosave_every", "autosave_seconds", "stop_timeout",
)
"""``worldweave serve`` flags given to every replica's server as they are (``--generator-option`` and
``--depth-estimator-option`` too, ``--no-warm-up`` when set): same generator, limits and admission everywhere."""


def ray_installed() -> bool:
    """Whether Ray Serve imports (the ``worldweave[ray]`` extra)."""
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class ClusterConfig:
    """How ``serve --ray`` runs its replicas (the flags of the same names)."""

    shared_dir: Path
    """A folder every replica sees (the same path on every node): worlds' saves and record logs."""
    ray_address: str | None = None
    """Ray cluster to join (``ray.init(address=...)``); None starts a local one."""
    replicas: int = 2
    """Replicas started at once, and the fewest autoscaling keeps."""
    max_replicas: int | None = None
    """Most replicas autoscaling on queue depth starts (``autoscale``); None or ``replicas``: no autoscaling."""
    capacity: WorkerCapacity = field(default_factory=lambda: WorkerCapacity(8))
    """Worlds each replica holds at once and its GPUs (Ray's ``num_gpus``: fractional to share one)."""
    cpus_per_replica: float = 1.0
    """Ray's ``num_cpus`` of each replica's actor."""
    lease_idle_s: float = 300.0
    """Seconds without a call after which a world is saved to shared storage and unloaded."""
    server_args: tuple[str, ...] = ()
    """``worldweave serve`` flags of every replica's server (``replica_server_args``)."""
    local_cpus: int | None = None
    """CPUs of a local Ray cluster started here (None: Ray counts this machine's)."""

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas < 1:
            raise InvalidInputError(f"--replicas must be at least 1, got {self.replicas!r}")
        if self.max_replicas is not None:
            self.autoscale_policy()  # checks the bounds
        if not self.cpus_per_replica >= 0:
            raise InvalidInputError(f"--cpus-per-replica must be >= 0, got {self.cpus_per_replica!r}")


    def autoscale_policy(self) -> AutoscalePolicy | None:
        """The policy between ``replicas`` and ``max_replicas``, or None when they leave nothing to scale."""
        if self.max_replicas is None or self.max_replicas == self.replicas:
            return None
        if isinstance(self.max_replicas, bool) or not isinstance(self.max_replicas, int):
            raise InvalidInputError(f"--max-replicas must be a whole number, got {self.max_replicas!r}")
        if self.max_replicas < self.replicas:
            raise InvalidInputError(f"--max-replicas ({self.max_replicas}) must be at least --replicas ({self.replicas})")
        return AutoscalePolicy(min_replicas=self.replicas, max_replicas=self.max_replicas)


def replica_server_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The replicas' ``worldweave serve`` flags from the front door's parsed ones (``FORWARDED_FLAGS``)."""
    out: list[str] = []
    for name in FORWARDED_FLAGS:
        value = getattr(args, name)
        if value is not None and value != "":
            out += [f"--{name.replace('_', '-')}", str(value)]
    for flag, pairs in (("--generator-option", args.generator_option),
                        ("--depth-estimator-option", args.depth_estimator_option)):
        for key, value in pairs:
            out += [flag, f"{key}={json.dumps(value)}"]
    if args.no_warm_up:
        out.append("--no-warm-up")
    return tuple(out)


class RayReplicas:
    """The ``front_door.ReplicaSet`` on Ray Serve: one application (one replica) per worker id."""

    def __init__(self, config: ClusterConfig, token: str) -> None:
        self.capacity = config.capacity
        self._config = config
        self._token = token

    async def start(self, worker_id: str) -> tuple[ReplicaHandle, str]:
        """Deploy replica ``worker_id`` and wait until its server answers; (its handle, its ``host:port``)."""
        from ray import serve

        from worldweave.server.cluster.replica import replica_app

        app = replica_app(name=worker_id, shared_dir=str(self._config.shared_dir), token=self._token,
                          worlds=self.capacity.worlds, num_cpus=self._config.cpus_per_replica,
                          num_gpus=self.capacity.gpus, server_args=list(self._config.server_args))
        handle = await asyncio.to_thread(serve.run, app, name=worker_id, route_prefix=None)
        return handle, await handle.address.remote()

    async def stop(self, worker_id: str) -> None:
        """Delete replica ``worker_id``'s application (its worlds were released before)."""
        from ray import serve

        await asyncio.to_thread(serve.delete, worker_id)

    async def restarted(self, worker_id: str, lost_address: str) -> str:
        """Wait until Serve has restarted replica ``worker_id`` (its server no longer at ``lost_address``); the new
        address. Calls to the dead replica fail until Serve notices (its health check period) and starts another."""
        from ray import serve

        handle = serve.get_app_handle(worker_id)
        while True:
            try:
                address = await asyncio.wait_for(handle.address.remote(), ADDRESS_TIMEOUT_S)
            except Exception as error:  # the dead actor, or Serve between replicas: ask again
                logger.debug("replica %s not back yet: %s", worker_id, error)
            else:
                if address != lost_address:
                    return address
            await asyncio.sleep(RESTART_POLL_S)


def connect(config: ClusterConfig) -> bool:
    """Join the Ray cluster at ``config.ray_address`` (or start a local one) and start Serve without HTTP
    proxies; True when a local cluster was started here (``disconnect`` shuts it down)."""
    import ray
    from ray import serve

    local = config.ray_address is None
    if not ray.is_initialized():
        ray.init(address=config.ray_address, num_cpus=config.local_cpus if local else None,
                 include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")
    return local


def disconnect(local: bool) -> None:
    """Shut Serve and the local Ray cluster down when ``connect`` started it; otherwise leave the cluster running."""
    import ray
    from ray import serve

    if local:
        serve.shutdown()
        ray.shutdown()


class Cluster:
    """A front door, its replicas and its gRPC server, on one event loop: ``await start()``, ``await stop()``."""

    def __init__(self, config: ClusterConfig, address: str, *, tokens: TokenTable | None = None,
                 credentials: grpc.ServerCredentials | None = None, max_message_bytes: int = 128 << 20) -> None:
        self.config = config
        self._address = address
        self._tokens = tokens
        self._credentials = credentials
        self._max_message_bytes = max_message_bytes
        self.front_door: FrontDoor | None = None
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._timers: list[asyncio.Task] = []

    async def start(self) -> None:
        """Start ``config.replicas`` replicas, then the front door's port (health SERVING once they serve); Ray
        must be connected (``connect``)."""
        token = secrets.token_urlsafe(32)
        replicas = RayReplicas(self.config, token)
        self.front_door = FrontDoor(replicas, lease_idle_s=self.config.lease_idle_s, replica_token=token,
                                    max_message_bytes=self._max_message_bytes)
        self._server, health, self.port = front_door_server(self.front_door, self._address, tokens=self._tokens,
                                                            credentials=self._credentials)
        await self.front_door.scale(self.config.replicas)
        await self._server.start()
        for service in ("", SERVICE_NAME):
            await health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._timers = [asyncio.ensure_future(self.front_door.lease_loop()),
                        asyncio.ensure_future(self.front_door.health_loop())]
        policy = self.config.autoscale_policy()
        if policy is not None:
            self._timers.append(asyncio.ensure_future(self.front_door.autoscale_loop(policy)))

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the port (calls in flight get ``grace`` seconds), release every world to shared storage and delete
        the replicas' applications."""
        if self._server is not None:
            await self._server.stop(grace)
        for timer in self._timers:
            timer.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)
        if self.front_door is not None:
            for worker_id in self.front_door.worker_ids:
                await self.front_door.retire(worker_id)
            await self.front_door.close()


class BackgroundCluster:
    """Runs a ``Cluster`` on its own event loop in a daemon thread (tests, benchmarks): ``start()``, ``address``,
    ``run(coroutine)`` on its loop, ``stop()``. Ray must be connected first (``connect``)."""

    def __init__(self, config: ClusterConfig, address: str = "127.0.0.1:0", **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="worldweave-front-door", daemon=True)
        self.cluster = Cluster(config, address, **options)
        self._host = address.rsplit(":", 1)[0]

    @property
    def address(self) -> str:
        """``host:port`` of the front door."""
        return f"{self._host}:{self.cluster.port}"

    @property
    def front_door(self) -> FrontDoor:
        if self.cluster.front_door is None:
            raise RuntimeError("start() the cluster first")
        return self.cluster.front_door

    def start(self) -> BackgroundCluster:
        self._thread.start()
        try:
            self.run(self.cluster.start())
        except BaseException:
            self.stop()
            raise
        return self

    def run(self, work: Awaitable[T]) -> T:
        """Run ``work`` on the cluster's loop and wait for its result (from a thread without a loop)."""
        async def wait() -> T:
            return await work

        return asyncio.run_coroutine_threadsafe(wait(), self._loop).result()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.run(self.cluster.stop(1.0))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def __enter__(self) -> BackgroundCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def _serve(cluster: Cluster, grace: float) -> None:
    await cluster.start()
    logger.info("worldweave cluster front door on port %d: %d replica(s) of %d world(s) each, shared storage %s",
                cluster.port, cluster.config.replicas, cluster.config.capacity.worlds, cluster.config.shared_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logger.info("stopping: releasing every world to shared storage")
    await cluster.stop(grace)


def run(args: argparse.Namespace, tokens: TokenTable | None, credentials: grpc.ServerCredentials | None) -> int:
    """``worldweave serve --ray``: the flags were checked by ``serve.run``; exit 2 in one line for a bad cluster
    setting."""
    shared_dir = args.shared_dir or (args.data_dir / "cluster" if args.data_dir is not None else None)
    if shared_dir is None:
        logger.error("--ray needs --shared-dir DIR (a folder every replica sees) or --data-dir")
        return 2
    if args.record is not None:
        logger.error("--ray records every world into --shared-dir itself: leave out --record")
        return 2
    try:
        config = ClusterConfig(
            shared_dir=Path(shared_dir).resolve(), ray_address=args.ray or None, replicas=args.replicas,
            max_replicas=args.max_replicas,
            capacity=WorkerCapacity(args.worlds_per_replica, args.gpus_per_replica),
            cpus_per_replica=args.cpus_per_replica, lease_idle_s=args.lease_idle_s,
            server_args=replica_server_args(args))
    except InvalidInputError as error:
        logger.error("%s", error)
        return 2
    config.shared_dir.mkdir(parents=True, exist_ok=True)
    local = connect(config)
    try:
        asyncio.run(_serve(Cluster(config, f"{args.host}:{args.port}", tokens=tokens, credentials=credentials,
                                   max_message_bytes=args.max_message_mib << 20), args.grace))
    finally:
        disconnect(local)
    return 0
