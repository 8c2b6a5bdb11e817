"""What runs in a Ray Serve replica: the worldweave gRPC server (servicer, registry, limits, errors, auth unchanged)
on a free port of the node's address, its worlds on shared storage (``handoff.shared_config``), and control calls
that move worlds in and out (``handoff.Handoff``).

``replica_app(...)`` is the bound Serve application of one replica (deployment ``WorldReplica``). The front door
sends each world's calls to the replica's gRPC address as raw protobuf bytes, with the token it gave the replica;
the Serve handle is used for control only (``address``, ``actor_name``, ``acquire``, ``release``, ``held``,
``drain``), and only str, int, bool and lists of str cross it. Ray is imported only here, and only when a replica
is built, so the rest of the package imports without it. ``HandoffServer`` is the same server and hand-off without
Ray (tests, a single machine).
"""

from __future__ import annotations

import argparse
import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from worldweave.bridge.cores import limit_cores, share_node_cores
from worldweave.proto.errors import InvalidInputError
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.server.cluster.handoff import Handoff, shared_config

if TYPE_CHECKING:
    from ray.serve import Application

T = TypeVar("T")


class HandoffServer(BackgroundServer):
    """A ``BackgroundServer`` of shared storage ``shared_dir`` (``handoff.shared_config`` of ``config``) listening on
    ``host`` (a free port), with its ``Handoff`` (``capacity``: most worlds held): ``call(method, *args)`` awaited
    from another event loop, ``run(method, *args)`` from a thread without one."""

    def __init__(self, shared_dir: Path, config: ServerConfig, *, host: str = "127.0.0.1",
                 capacity: int | None = None, generator=None) -> None:
        bind = f"[{host}]:0" if ":" in host else f"{host}:0"
        super().__init__(bind, shared_config(config, Path(shared_dir)), generator=generator)
        self.capacity = capacity
        self.handoff: Handoff | None = None

    def start(self) -> HandoffServer:
        """Start the server (it reports SERVING once warmed up), then its ``Handoff`` on the server's loop."""
        super().start()
        self.handoff = self.run(self._new_handoff)
        return self

    async def _new_handoff(self) -> Handoff:
        return Handoff(self.server.registry, self._config.limits, capacity=self.capacity)

    async def call(self, method: Callable[..., Awaitable[T]], *args) -> T:
        """``await method(*args)`` run on the server's loop (a ``Handoff`` method), awaited from another loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(method(*args), self._loop))

    def run(self, method: Callable[..., Awaitable[T]], *args) -> T:
        """``method(*args)`` run on the server's loop, waited for from a thread without a loop (tests)."""
        return asyncio.run_coroutine_threadsafe(method(*args), self._loop).result()


def replica_config(server_args: list[str], token: str) -> ServerConfig:
    """The ``ServerConfig`` of a replica: ``worldweave serve`` flags ``server_args`` (``serve.add_arguments``; not
    --data-dir or --record: a replica keeps its worlds on shared storage), with ``token`` the one bearer token every
    call must carry. ``InvalidInputError`` naming a flag ``serve`` does not take."""
    from worldweave.server import serve

    parser = argparse.ArgumentParser(prog="worldweave serve (replica)", add_help=False, exit_on_error=False)
    serve.add_arguments(parser)
    try:
        args, unknown = parser.parse_known_args(server_args)
    except argparse.ArgumentError as error:
        raise InvalidInputError(f"replica server_args {server_args}: {error}") from None
    if unknown:
        raise InvalidInputError(f"replica server_args: {' '.join(unknown)} is not a `worldweave serve` option")
    if not token:
        raise InvalidInputError("a replica needs a token: its port is reachable from other machines of the cluster")
    return replace(serve.server_config(args), auth_token=token, auth_tokens=None)


def replica_cores(assigned_cpus: float | None) -> int:
    """The cores a replica counts (``bridge.cores.limit_cores``): the whole CPUs Ray gave its actor, at least one
    (none given, or a fraction, counts one), as Ray sets ``OMP_NUM_THREADS`` for it: the server's default engine
    threads (``--workers``). Its kernels split over the node's cores that no replica's engine work holds
    (``bridge.cores.share_node_cores``): all of them for a world stepping alone, one each for worlds stepping at once
    on as many cores."""
    return max(1, math.floor(assigned_cpus or 0))


class WorldReplica:
    """The Serve deployment class (``replica_app`` wraps it): one worldweave server on the node's address, its
    worlds on ``shared_dir``, at most ``worlds`` of them held at once."""

    def __init__(self, *, shared_dir: str, token: str, worlds: int, server_args: list[str]) -> None:
        import ray

        limit_cores(replica_cores(ray.get_runtime_context().get_assigned_resources().get("CPU")))
        share_node_cores()
        config = replica_config(server_args, token)
        self._server = HandoffServer(Path(shared_dir), config, host=ray.util.get_node_ip_address(),
                                     capacity=worlds).start()

    async def address(self) -> str:
        """``host:port`` of this replica's gRPC server."""
        return self._server.address

    async def actor_name(self) -> str:
        """This replica's Ray actor name (namespace "serve"), for ``ray.kill`` in tests."""
        import ray

        return ray.get_runtime_context().get_actor_name()

    async def acquire(self, world_id: str) -> str:
        """Load world ``world_id`` here: "held", "loaded", "recovered" or "unknown" (``Handoff.acquire``)."""
        return await self._server.call(self._server.handoff.acquire, world_id)

    async def release(self, world_id: str) -> bool:
        """Save world ``world_id`` to shared storage and unload it; False when it is not held here."""
        return await self._server.call(self._server.handoff.release, world_id)

    async def held(self) -> list[str]:
        """Ids of the worlds held here."""
        return await self._server.call(self._held)

    async def _held(self) -> list[str]:
        return self._server.handoff.held()

    async def drain(self) -> list[str]:
        """Release every world held here; their ids."""
        return await self._server.call(self._server.handoff.drain)

    def __del__(self) -> None:
        """Stop the server when Serve shuts the replica down (its worlds were drained before, by the front door)."""
        server = getattr(self, "_server", None)
        if server is not None:
            server.stop()


def replica_app(*, name: str, shared_dir: str, token: str, worlds: int, num_cpus: float, num_gpus: float,
                server_args: list[str]) -> Application:
    """The bound Serve application of one replica: deployment ``WorldReplica`` named ``name``, one replica, with
    ``num_cpus`` and ``num_gpus`` (fractional to share a GPU) for its actor; ``server_args``: extra ``worldweave
    serve`` flags of its server (e.g. ``["--generator", "checker"]``)."""
    from ray import serve

    if worlds < 1 or num_cpus < 0 or num_gpus < 0:
        raise InvalidInputError(f"a replica needs worlds >= 1, num_cpus >= 0 and num_gpus >= 0, got {worlds}, "
                                f"{num_cpus}, {num_gpus}")
    deployment = serve.deployment(WorldReplica, name=name, num_replicas=1,
                                  ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus})
    return deployment.bind(shared_dir=str(shared_dir), token=token, worlds=int(worlds), server_args=list(server_args))
