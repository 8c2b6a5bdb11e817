"""The cluster's front door: the worldweave gRPC API on one port, each world's calls forwarded to the replica that
holds it (``worldweave serve --ray``).

Every ``WorldService`` call is forwarded as raw bytes (grpc generic handlers with identity serializers) to the
worldweave gRPC server of one replica; the front door reads only the request's ``world_id`` (``wire``), and for a
Step stream the first request's. Where a call goes is ``Placement``'s answer (``placement.py``): a world with a live
lease goes to its holder; a world without one is placed on the least loaded replica, which first loads it from
shared storage (``acquire``: "held", "loaded", "recovered" or "unknown") before the call is forwarded. Calls for one
world wait while that world is being acquired or released (one chain of such work per world).

* **Auth and limits.** The front door checks the client's bearer token and role (``auth.BearerTokenInterceptor``,
  one tenant) and forwards with the replicas' own token; the replicas run ``worldweave serve``'s servicer with the
  same limits, so errors and limits are theirs, unchanged. Health and reflection are served here.
* **Leases.** A timer renews the leases of worlds with a call open and calls ``Placement.expire``; each expired
  world is released (saved to shared storage and unloaded) by its holder.
* **Replica loss.** A forwarded call that fails UNAVAILABLE while the replica's health check fails too (its process
  died) takes the replica out (``Placement.worker_lost``): the call gets UNAVAILABLE, its worlds are recovered on
  other replicas (last save plus record log) before their next call is forwarded, and the replica is added back
  once Ray Serve has restarted it (at a new address). A world the front door created whose replica reports it
  "unknown" after a loss is DATA_LOSS, naming it, never a silent empty world.
* **Scaling** (``scale``): replicas are added (new worlds go to them first) or drained (their worlds saved and
  released, then the replica stopped). A StreamPointCloud follow stream whose world moved is reopened on the new
  holder from the last version it forwarded, so its client sees no error; other calls cut by a move get UNAVAILABLE
  (retry: a step retried with the same session_id and sequence is applied once).
* ``ListWorlds`` asks every replica and merges; ``GetServerInfo`` is one replica's, with the capability "cluster".

The replicas are reached through a ``ReplicaSet`` (``ray_cluster.RayReplicas`` on Ray Serve), so this module imports
no Ray.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from worldweave.proto.auth import AUTHORIZATION_KEY, call_metadata
from worldweave.proto.errors import (
    InvalidInputError,
    ServerUnavailableError,
    StorageError,
    WorldweaveError,
)
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server.app import SERVICE_NAME, channel_options
from worldweave.server.auth import BearerTokenInterceptor, TokenTable
from worldweave.server.cluster.autoscale import Autoscaler, AutoscalePolicy
from worldweave.server.cluster.placement import Placement, WorkerCapacity
from worldweave.server.cluster.wire import (
    scalar_fields,
    string_field,
    with_string_field,
    with_varint_field,
    world_id_of,
)
from worldweave.server.errors import status_for
from worldweave.server.registry import check_world_id

logger = logging.getLogger(__name__)

CLUSTER_CAPABILITY = "cluster"
"""Added to the replicas' ``GetServerInfoResponse.capabilities``: this server is a front door over replicas."""
HEALTH_TIMEOUT_S = 2.0
"""How long a replica's health check may take before the replica counts as down, seconds."""
HEALTH_PERIOD_S = 1.0
"""How often the front door checks each replica's health, seconds."""
AUTOSCALE_PERIOD_S = 1.0
"""How often the front door samples its open calls for autoscaling (``--max-replicas``), seconds."""
CONTROL_TIMEOUT_S = 120.0
"""Most seconds an acquire or release (a load, a replay, a save) may take before the front door gives up on it."""
FORWARDED_HEADER_PREFIXES = ("grpc-", ":")
"""Client metadata not forwarded (grpc's own), besides ``authorization`` (replaced by the replicas' token) and
``user-agent``."""

_METHODS = pb.DESCRIPTOR.services_by_name["WorldService"].methods


class ReplicaHandle(Protocol):
    """The control calls of one replica (a Ray Serve deployment handle: ``handle.acquire.remote(world_id)``)."""

    acquire: Any
    release: Any


class ReplicaSet(Protocol):
    """Starts and stops replicas; ``ray_cluster.RayReplicas`` does it on Ray Serve."""

    capacity: WorkerCapacity
    """What each replica declares (worlds it holds, GPUs)."""

    async def start(self, worker_id: str) -> tuple[ReplicaHandle, str]:
        """Deploy replica ``worker_id``; its handle and its gRPC server's ``host:port`` once it serves."""

    async def stop(self, worker_id: str) -> None:
        """Remove replica ``worker_id`` (its worlds already released)."""

    async def restarted(self, worker_id: str, lost_address: str) -> str:
        """Wait until replica ``worker_id``, whose server at ``lost_address`` died, serves again; its new address."""


@dataclass
class Replica:
    """One replica as the front door reaches it."""

    worker_id: str
    handle: ReplicaHandle
    address: str
    """``host:port`` of its worldweave gRPC server."""
    channel: grpc.aio.Channel

    async def down(self) -> bool:
        """Whether its server is gone: its health check is refused (UNAVAILABLE: nothing listens, the process
        died) or answers other than SERVING (shutting down). A check that only times out (``HEALTH_TIMEOUT_S``)
        is a busy replica, not a dead one: declaring it lost would recover its worlds elsewhere while it still
        holds them."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=HEALTH_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            return error.code() == grpc.StatusCode.UNAVAILABLE
        return answer.status != health_pb2.HealthCheckResponse.SERVING


class _Passthrough(Exception):
    """A replica's own answer to a call (status, details, trailing metadata), given to the client unchanged."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.details())
        self.code = error.code()
        self.details = error.details() or ""
        self.trailing = tuple(error.trailing_metadata() or ())


class FrontDoor:
    """Routes worldweave calls to replicas; see the module's docstring. ``lease_idle_s``: seconds without a call
    after which a world is saved and unloaded; ``replica_token``: the bearer token the replicas' servers require."""

    def __init__(self, replicas: ReplicaSet, *, lease_idle_s: float, replica_token: str,
                 max_message_bytes: int) -> None:
        self.placement = Placement(lease_idle_s)
        self._replica_set = replicas
        self._replicas: dict[str, Replica] = {}
        self.replica_token = replica_token
        """The bearer token of the replicas' servers (for tools that call a replica directly)."""
        self._metadata = call_metadata(replica_token)
        self._max_message_bytes = max_message_bytes
        self._chains: dict[str, asyncio.Task] = {}
        """World id -> its latest acquire or release; the world's calls wait for it."""
        self._moves: Counter[str] = Counter()
        """World id -> how often it was released or its replica lost (a call open across a change was cut)."""
        self._open: Counter[str] = Counter()
        """World id -> calls open on it (their leases are renewed by the timer)."""
        self._working = 0
        """Unary calls and Step streams open (the queue depth autoscaling reads; follow and watch streams, which
        mostly wait, are not counted)."""
        self._known: set[str] = set()
        """Worlds created or forked through this front door: "unknown" on acquire means their data is lost."""
        self._data_lost: dict[str, str] = {}
        """World id -> why it is lost (DATA_LOSS for its calls)."""
        self._restarting: set[str] = set()
        """Replicas lost and not back yet (Serve restarts them)."""
        self._background: set[asyncio.Task] = set()
        self._stopping = False
        self._scale_lock = asyncio.Lock()

    # ------------------------------------------------------------------------------------------ replicas

    def _connect(self, worker_id: str, handle: ReplicaHandle, address: str) -> None:
        channel = grpc.aio.insecure_channel(address, options=channel_options(self._max_message_bytes))
        self._replicas[worker_id] = Replica(worker_id, handle, address, channel)
        self.placement.add_worker(worker_id, self._replica_set.capacity)
        logger.info("replica %s serves at %s", worker_id, address)

    def replica(self, worker_id: str) -> Replica:
        """The live replica ``worker_id`` (``ServerUnavailableError`` when it is not serving now)."""
        found = self._replicas.get(worker_id)
        if found is None:
            raise ServerUnavailableError(f"replica {worker_id} is not serving now (lost or removed): retry")
        return found

    @property
    def worker_ids(self) -> list[str]:
        """The replicas serving now, in the order they were added."""
        return list(self._replicas)

    async def scale(self, count: int) -> None:
        """Run ``count`` replicas (>= 1): start new ones (``worldweave-worker-K``, K the lowest free), or drain the
        last added (each world saved and released; the next call loads it on another replica) and stop them."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidInputError(f"a cluster runs at least 1 replica, got {count!r}")
        async with self._scale_lock:
            while len(self._replicas) > count:
                await self.retire(list(self._replicas)[-1])
            taken = set(self._replicas) | self._restarting
            free = (f"worldweave-worker-{k}" for k in range(len(taken) + count) if f"worldweave-worker-{k}" not in taken)
            new = [next(free) for _ in range(count - len(self._replicas) - len(self._restarting))]
            started = await asyncio.gather(*(self._replica_set.start(worker_id) for worker_id in new))
            for worker_id, (handle, address) in zip(new, started):
                self._connect(worker_id, handle, address)

    async def retire(self, worker_id: str) -> None:
        """Drain ``worker_id`` now (its worlds released in turn), take it out and stop it."""
        replica = self._replicas[worker_id]
        moved = self.placement.drain_worker(worker_id, time.monotonic(), move_now=True)
        releases = [self._then(unload.world_id, self._release, replica, unload.world_id) for unload in moved]
        await asyncio.gather(*releases, return_exceptions=True)
        if self._replicas.get(worker_id) is replica:  # else it died while draining: taken out by _lose already
            self.placement.remove_worker(worker_id)
            del self._replicas[worker_id]
            await replica.channel.close()
        await self._replica_set.stop(worker_id)
        logger.info("replica %s drained (%d world(s) released) and stopped", worker_id, len(moved))

    def _lose(self, replica: Replica) -> None:
        """Take out ``replica``, whose server died: its worlds are recovered elsewhere, and it is added back once
        Ray Serve restarted it. A replica already taken out is left alone."""
        if self._replicas.get(replica.worker_id) is not replica:
            return
        del self._replicas[replica.worker_id]
        recoveries = self.placement.worker_lost(replica.worker_id, time.monotonic())
        logger.warning("replica %s at %s was lost: recovering its %d world(s)", replica.worker_id, replica.address,
                       len(recoveries))
        for recovery in recoveries:
            self._moves[recovery.world_id] += 1
            if recovery.to_worker is not None:
                self._then(recovery.world_id, self._acquire, self._replicas[recovery.to_worker], recovery.world_id)
        self._restarting.add(replica.worker_id)
        self._spawn(self._readd(replica))

    async def _readd(self, replica: Replica) -> None:
        try:
            address = await self._replica_set.restarted(replica.worker_id, replica.address)
            await replica.channel.close()  # only now: calls that began before the loss still fail UNAVAILABLE on it
            if not self._stopping and replica.worker_id not in self._replicas:
                self._connect(replica.worker_id, replica.handle, address)
        finally:
            self._restarting.discard(replica.worker_id)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------------------------ world chains

    def _then(self, world_id: str, work: Callable[..., Awaitable[None]], *args: object) -> asyncio.Task:
        """Run ``work(*args)`` after the world's previous acquire or release; the world's calls wait for it."""
        previous = self._chains.get(world_id)

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            await work(*args)

        task = asyncio.ensure_future(run())
        self._chains[world_id] = task

        def done(finished: asyncio.Task) -> None:
            if self._chains.get(world_id) is finished:
                del self._chains[world_id]
            if not finished.cancelled() and finished.exception() is not None:
                logger.error("acquire or release of world %r failed", world_id, exc_info=finished.exception())

        task.add_done_callback(done)
        return task

    async def _settled(self, world_id: str) -> None:
        """Wait until no acquire or release of ``world_id`` is pending."""
        while (pending := self._chains.get(world_id)) is not None:
            await asyncio.wait([pending])

    async def _acquire(self, replica: Replica, world_id: str) -> None:
        try:
            status = await asyncio.wait_for(replica.handle.acquire.remote(world_id), CONTROL_TIMEOUT_S)
        except Exception as error:
            cause = getattr(error, "cause", error)  # Ray wraps the replica's exception
            if isinstance(cause, StorageError):
                self._data_lost[world_id] = str(cause)
                logger.error("world %r is lost: %s", world_id, cause)
                return
            if await replica.down():
                self._lose(replica)
                return
            raise
        if status == "unknown" and world_id in self._known:
            self._data_lost[world_id] = (f"world {world_id!r} is lost: shared storage holds no save and no record "
                                         "log of it")
            logger.error("%s", self._data_lost[world_id])
        elif status == "recovered":
            logger.info("world %r recovered on %s", world_id, replica.worker_id)

    async def _release(self, replica: Replica, world_id: str) -> None:
        self._moves[world_id] += 1
        try:
            await asyncio.wait_for(replica.handle.release.remote(world_id), CONTROL_TIMEOUT_S)
        except Exception:
            if await replica.down():
                self._lose(replica)
                return
            raise

    async def _holder(self, world_id: str) -> Replica:
        """The replica holding ``world_id`` now, placing and acquiring it first when it has no lease."""
        for _ in range(3):
            if world_id in self._data_lost:
                raise StorageError(self._data_lost[world_id])
            await self._settled(world_id)
            route = self.placement.place(world_id, time.monotonic())
            if route.placed:
                self._then(world_id, self._acquire, self.replica(route.worker_id), world_id)
                await self._settled(world_id)
            if world_id in self._data_lost:
                continue
            if self.placement.where(world_id) == route.worker_id:
                return self.replica(route.worker_id)
        raise ServerUnavailableError(f"world {world_id!r} is moving between replicas: retry")

    # ----------------------------------------------------------------------------------------- timers

    async def lease_loop(self) -> None:
        """Renew the leases of worlds with calls open, and release the worlds idle for ``lease_idle_s``."""
        period_s = min(5.0, self.placement.lease_idle_s / 4)
        while True:
            await asyncio.sleep(period_s)
            now = time.monotonic()
            for world_id in [world for world, count in self._open.items() if count > 0]:
                if self.placement.where(world_id) is not None:
                    self.placement.place(world_id, now)
            for unload in self.placement.expire(now):
                replica = self._replicas.get(unload.worker_id)
                if replica is not None:
                    self._then(unload.world_id, self._release, replica, unload.world_id)

    async def health_loop(self) -> None:
        """Check every replica's health each ``HEALTH_PERIOD_S``: a dead one is taken out and its worlds recovered
        before their next call, not when a call first finds it gone."""
        while True:
            await asyncio.sleep(HEALTH_PERIOD_S)
            for replica in list(self._replicas.values()):
                if await replica.down():
                    self._lose(replica)

    async def autoscale_loop(self, policy: AutoscalePolicy) -> None:
        """Once a second, give ``Autoscaler`` the unary calls and Step streams open through this front door and scale to the replica count
        it wants (``scale``: new replicas started, or the last added drained with no world lost). Waits while a
        lost replica is being restarted."""
        scaler = Autoscaler(policy)
        while True:
            await asyncio.sleep(AUTOSCALE_PERIOD_S)
            if self._restarting or self._scale_lock.locked():
                continue
            replicas, working = len(self._replicas), self._working
            wanted = scaler.observe(time.monotonic(), working, replicas)
            if wanted != replicas:
                logger.info("autoscaling: %d call(s) open over %d replica(s): scaling to %d", working, replicas, wanted)
                await self.scale(wanted)

    async def close(self) -> None:
        """Stop the timers and close the channels (the replicas keep running)."""
        self._stopping = True
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for replica in self._replicas.values():
            await replica.channel.close()

    # ------------------------------------------------------------------------------------ forwarding

    def _forwarded_metadata(self, context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
        kept = tuple((key, value) for key, value in context.invocation_metadata() or ()
                     if key not in (AUTHORIZATION_KEY, "user-agent") and not key.startswith(FORWARDED_HEADER_PREFIXES))
        return kept + self._metadata

    async def _failed(self, replica: Replica, world_id: str, moves: int, error: grpc.aio.AioRpcError) -> Exception:
        """The error for a client whose forwarded call failed with ``error``: a dead replica or a world that moved
        during the call is UNAVAILABLE (retry); anything else is the replica's own answer."""
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) and await replica.down():
            self._lose(replica)
            return ServerUnavailableError(
                f"the replica serving {f'world {world_id!r}' if world_id else 'this call'} ({replica.worker_id}) was "
                "lost; its worlds are recovered on another replica: retry (a step retried with the same session_id "
                "and sequence is applied once)")
        if world_id and self._moves[world_id] != moves:
            return ServerUnavailableError(f"world {world_id!r} moved to another replica during the call: retry")
        return _Passthrough(error)

    async def _unary(self, rpc: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if rpc == "ListWorlds":
            return await self._list_worlds(request, context)
        if rpc == "GetServerInfo":
            return await self._server_info(request, context)
        world_id = world_id_of(request)
        if rpc in ("CreateWorld", "ForkWorld"):
            return await self._create(rpc, request, world_id, context)
        if rpc == "LoadWorld":  # acquiring loads it; answered with its description (the same wire layout)
            rpc = "GetWorld"
        answer = await self._call_world(rpc, request, check_world_id(world_id), context)
        if rpc == "DeleteWorld":
            self._known.discard(world_id)
            self.placement.forget(world_id)
        return answer

    async def _call_world(self, rpc: str, request: bytes, world_id: str, context: grpc.aio.ServicerContext) -> bytes:
        replica = await self._holder(world_id)
        moves = self._moves[world_id]
        self._open[world_id] += 1
        self._working += 1
        try:
            return await self._forward(replica, rpc, request, context)
        except grpc.aio.AioRpcError as error:
            raise await self._failed(replica, world_id, moves, error) from None
        finally:
            self._open[world_id] -= 1
            self._working -= 1

    async def _forward(self, replica: Replica, rpc: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        call = replica.channel.unary_unary(f"/{SERVICE_NAME}/{rpc}")
        return await call(request, metadata=self._forwarded_metadata(context), timeout=context.time_remaining())

    async def _create(self, rpc: str, request: bytes, world_id: str, context: grpc.aio.ServicerContext) -> bytes:
        """CreateWorld on the replica the new world is placed on; ForkWorld on the source's holder, then the copy
        is released to shared storage so that placement puts it where it belongs. Empty new ids are assigned here."""
        new_field = 1 if rpc == "CreateWorld" else 3
        new_id = world_id if rpc == "CreateWorld" else string_field(request, 3)
        if not new_id:
            new_id = uuid.uuid4().hex[:12]
            request = with_string_field(request, new_field, new_id)
        check_world_id(new_id)
        if rpc == "CreateWorld":
            self._known.discard(new_id)  # a new world of a deleted or lost one's id is not lost
            self._data_lost.pop(new_id, None)
            answer = await self._call_world(rpc, request, new_id, context)
            self._known.add(new_id)
            return answer
        answer = await self._call_world(rpc, request, check_world_id(world_id), context)
        self._known.add(new_id)
        holder = self.placement.where(world_id)
        if holder is not None and holder in self._replicas:
            await self._then(new_id, self._release, self._replicas[holder], new_id)
        return answer

    async def _list_worlds(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        merged: dict[str, pb.WorldInfo] = {}
        for replica in list(self._replicas.values()):
            try:
                answer = pb.ListWorldsResponse.FromString(await self._forward(replica, "ListWorlds", request, context))
            except grpc.aio.AioRpcError as error:
                raise await self._failed(replica, "", 0, error) from None
            for info in answer.worlds:
                if info.loaded or info.world_id not in merged:
                    merged[info.world_id] = info
        return pb.ListWorldsResponse(worlds=[merged[key] for key in sorted(merged)]).SerializeToString()

    async def _server_info(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if not self._replicas:
            raise ServerUnavailableError("no replica serves yet: retry")
        replica = next(iter(self._replicas.values()))
        try:
            info = pb.GetServerInfoResponse.FromString(await self._forward(replica, "GetServerInfo", request, context))
        except grpc.aio.AioRpcError as error:
            raise await self._failed(replica, "", 0, error) from None
        info.capabilities.append(CLUSTER_CAPABILITY)
        return info.SerializeToString()

    async def _unary_stream(self, rpc: str, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        world_id = check_world_id(world_id_of(request))
        # StreamPointCloud: 2 since_version, 3 follow; its chunks: 2 version, 11 last_in_version.
        follow = rpc == "StreamPointCloud" and bool(scalar_fields(request, frozenset({3})).get(3, 0))
        self._open[world_id] += 1
        try:
            while True:
                replica = await self._holder(world_id)
                moves = self._moves[world_id]
                call = replica.channel.unary_stream(f"/{SERVICE_NAME}/{rpc}")(
                    request, metadata=self._forwarded_metadata(context), timeout=context.time_remaining())
                try:
                    async for message in call:
                        if follow:
                            chunk = scalar_fields(message, frozenset({2, 11}))
                            if chunk.get(11):
                                request = with_varint_field(request, 2, int(chunk.get(2, 0)))
                        yield message
                    return
                except grpc.aio.AioRpcError as error:
                    failure = await self._failed(replica, world_id, moves, error)
                    if follow and isinstance(failure, ServerUnavailableError):
                        logger.info("follow stream of world %r reopened after a move", world_id)
                        continue
                    raise failure from None
        finally:
            self._open[world_id] -= 1

    async def _step(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        """A Step stream, forwarded to the holder of its first request's world; every request must name that
        world (INVALID_ARGUMENT otherwise: through the front door a Step stream steps one world)."""
        first = await anext(aiter(requests), None)
        if first is None:
            return
        world_id = check_world_id(world_id_of(first))
        replica = await self._holder(world_id)
        moves = self._moves[world_id]
        self._open[world_id] += 1
        self._working += 1
        call = replica.channel.stream_stream(f"/{SERVICE_NAME}/Step")(
            metadata=self._forwarded_metadata(context), timeout=context.time_remaining())
        refused: list[WorldweaveError] = []

        async def pump() -> None:
            await call.write(first)
            async for request in requests:
                try:
                    other = world_id_of(request)
                    if other != world_id:
                        raise InvalidInputError(f"this Step stream steps world {world_id!r}; a request names "
                                                f"{other!r}: through a cluster's front door open one stream per world")
                except WorldweaveError as error:
                    refused.append(error)
                    call.cancel()
                    return
                await call.write(request)
            await call.done_writing()

        writer = asyncio.ensure_future(pump())
        writer.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            while (message := await call.read()) is not grpc.aio.EOF:
                yield message
        except grpc.aio.AioRpcError as error:
            raise await self._failed(replica, world_id, moves, error) from None
        except asyncio.CancelledError:
            if refused:
                raise refused[0] from None
            raise
        finally:
            writer.cancel()
            self._open[world_id] -= 1
            self._working -= 1

    # --------------------------------------------------------------------------------------- handlers

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler of every ``WorldService`` method, forwarding bytes."""
        handlers = {}
        for method in _METHODS:
            rpc = method.name
            if method.client_streaming:
                handlers[rpc] = grpc.stream_stream_rpc_method_handler(_streaming(self._step))
            elif method.server_streaming:
                handlers[rpc] = grpc.unary_stream_rpc_method_handler(_streaming(_bound(self._unary_stream, rpc)))
            else:
                handlers[rpc] = grpc.unary_unary_rpc_method_handler(_answering(_bound(self._unary, rpc)))
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def _bound(function: Callable[..., Any], rpc: str) -> Callable[..., Any]:
    return lambda request, context: function(rpc, request, context)


async def _abort(context: grpc.aio.ServicerContext, error: BaseException) -> None:
    if isinstance(error, _Passthrough):
        if error.trailing:
            context.set_trailing_metadata(error.trailing)
        await context.abort(error.code, error.details)
    code, message = status_for(error)
    await context.abort(code, message)


def _answering(behavior: Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]):
    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return await behavior(request, context)
        except (WorldweaveError, _Passthrough) as error:
            await _abort(context, error)

    return unary


def _streaming(behavior: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[bytes]]):
    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        try:
            async for message in behavior(request, context):
                yield message
        except (WorldweaveError, _Passthrough) as error:
            await _abort(context, error)

    return stream


def front_door_server(front_door: FrontDoor, address: str, *, tokens: TokenTable | None,
                      credentials: grpc.ServerCredentials | None) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    """The front door's gRPC server on ``address`` (not started): the forwarding handler behind the clients' auth,
    the standard health service and reflection; its port. One tenant: a token table naming several is refused."""
    if tokens is not None and len(tokens.tenants) > 1:
        raise InvalidInputError(f"a cluster front door serves one tenant; the token file names {len(tokens.tenants)} "
                                f"({', '.join(tokens.tenants)}): run one cluster per tenant")
    interceptors = [BearerTokenInterceptor(tokens)] if tokens is not None else []
    server = grpc.aio.server(options=channel_options(front_door._max_message_bytes), interceptors=interceptors)
    server.add_generic_rpc_handlers((front_door.handler(),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = (server.add_secure_port(address, credentials) if credentials is not None
                else server.add_insecure_port(address))
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {address}: the port is busy or the address is not local")
    return server, health_servicer, port
