"""``AsyncWorldClient``: the asyncio (``grpc.aio``) twin of ``WorldClient``, with the same methods, awaited.

    async with await AsyncWorldClient.connect("127.0.0.1:50051") as client:
        world = await client.create_world([(rgb, depth_m, c2w)], intrinsics)
        frames = await client.step(world.world_id, next_c2w)
        async for chunk in client.stream_point_cloud(world.world_id, follow=True):
            ...

Everything ``WorldClient`` documents holds here: canonical poses and metres, the same result records, the same
``WorldweaveError`` subclasses, the version check at connect, ``token`` and TLS. ``step`` shares one long-lived
Step stream per client (steps from several tasks run one at a time); its deadline cancels that stream. Requests are
built and answers decoded by the same pure functions (``conversions``, ``world_state``).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path

import grpc
import numpy as np

from worldweave.proto import codecs
from worldweave.proto.auth import call_metadata
from worldweave.proto.errors import ServerError, ServerUnavailableError
from worldweave.proto.geometry import Intrinsics
from worldweave.proto.worldweave.v1 import API_VERSION
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.sim_clients import conversions
from worldweave.sim_clients import world_state as ws
from worldweave.sim_clients.client import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TIMEOUT_S,
    channel_credentials,
    channel_options,
    check_api_version,
    client_error,
    rpc_error,
)
from worldweave.sim_clients.retry import RetryPolicy, call_with_retry_async


class AsyncStepStream:
    """The long-lived Step stream ``AsyncWorldClient.step`` sends every request on, one step at a time. A step past
    its deadline, or a failed stream, drops the stream; the next step opens a new one."""

    def __init__(self, stub: pb_grpc.WorldServiceStub, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata
        self._lock = asyncio.Lock()
        self._call = None

    async def step(self, request: pb.StepRequest, timeout_s: float) -> list[pb.StepResponse]:
        """Send ``request`` and return its responses; raises ``grpc.RpcError`` or ``asyncio.TimeoutError``."""
        async with self._lock:
            if self._call is not None and self._call.done():
                self._drop()
            if self._call is None:
                self._call = self._stub.Step(metadata=self._metadata)
            call = self._call

            async def exchange() -> list[pb.StepResponse]:
                await call.write(request)
                responses: list[pb.StepResponse] = []
                while not responses or not responses[-1].last_in_request:
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


class AsyncWorldClient:
    """A ``grpc.aio`` connection to a worldweave server; create it with ``await AsyncWorldClient.connect(...)``.

    Options as ``WorldClient``: ``timeout_s`` default deadline of unary calls (seconds), ``max_message_bytes``,
    ``token``, ``tls``, ``tls_root_certificates``, ``retry`` (refusals for load retried after the server's suggested
    delay; None: raised at once). ``info`` is the server's handshake answer.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        token: str | None = None,
        tls: bool = False,
        tls_root_certificates: bytes | str | Path | None = None,
        retry: RetryPolicy | None = RetryPolicy(),
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.retry = retry
        self.max_message_bytes = max_message_bytes
        self._metadata = call_metadata(token)
        credentials = channel_credentials(tls, tls_root_certificates)
        options = channel_options(max_message_bytes)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        self._stub = pb_grpc.WorldServiceStub(self._channel)
        self._steps = AsyncStepStream(self._stub, self._metadata)
        self.info: pb.GetServerInfoResponse | None = None

    @classmethod
    async def connect(cls, target: str = "127.0.0.1:50051", *, connect_timeout_s: float = 10.0, **options) -> AsyncWorldClient:
        """Open a connection and make the handshake (version check); ``options`` as the constructor's."""
        client = cls(target, **options)
        try:
            await client._handshake(connect_timeout_s)
        except BaseException:
            await client.close()
            raise
        return client

    async def _handshake(self, connect_timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self._channel.channel_ready(), connect_timeout_s)
        except asyncio.TimeoutError:
            raise ServerUnavailableError(
                f"server not reachable at {self.target} — is `worldweave serve` running? (no answer in {connect_timeout_s} s)"
            ) from None
        self.info = await self._call(
            "GetServerInfo", self._stub.GetServerInfo, pb.GetServerInfoRequest(client_api_version=API_VERSION)
        )
        warning = check_api_version(self.info.api_version)
        if warning:
            warnings.warn(warning, stacklevel=3)
        if self.info.limits.max_message_bytes > self.max_message_bytes:
            warnings.warn(
                f"the server sends messages up to {self.info.limits.max_message_bytes} bytes but this client accepts "
                f"{self.max_message_bytes}: pass max_message_bytes={self.info.limits.max_message_bytes} for large frames",
                stacklevel=3,
            )

    # ------------------------------------------------------------------------------------------- plumbing

    async def _call(self, name: str, method, request, timeout_s: float | None = None):
        """``await method(request)``, retried under ``self.retry`` when the server refuses it for load."""
        async def attempt(timeout: float | None):
            try:
                return await method(request, timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as error:
                raise rpc_error(error, self.target, name, timeout) from None

        return await call_with_retry_async(self.retry, self.timeout_s if timeout_s is None else timeout_s, attempt)

    async def _server_stream(self, name: str, method, request, decode, timeout_s: float | None) -> AsyncIterator:
        call = method(request, timeout=timeout_s, metadata=self._metadata)
        try:
            async for response in call:
                yield decode(response)
        except grpc.RpcError as error:
            raise rpc_error(error, self.target, name, timeout_s) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        """Close the channel (calls in flight are cancelled)."""
        self._steps.close()
        await self._channel.close()

    async def __aenter__(self) -> AsyncWorldClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------------- worlds

    async def create_world(
        self,
        frames: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
        intrinsics: Intrinsics | pb.Intrinsics,
        *,
        prompt: str = "",
        world_id: str = "",
        voxel_size_m: float | None = None,
        retrieval: str | None = None,
        max_anchors: int | None = None,
        seed: int | None = None,
        confidence_levels: Sequence[float] | None = None,
        default_min_confidence: float | None = None,
        timeout_s: float | None = None,
    ) -> pb.WorldInfo:
        """See ``WorldClient.create_world``."""
        config = ws.with_confidence_levels(
            conversions.world_config(voxel_size_m=voxel_size_m, retrieval=retrieval, max_anchors=max_anchors, seed=seed),
            confidence_levels, default_min_confidence,
        )
        seed_message = await asyncio.to_thread(conversions.seed_message, frames, intrinsics, prompt)
        request = pb.CreateWorldRequest(world_id=world_id, seed=seed_message, config=config)
        return (await self._call("CreateWorld", self._stub.CreateWorld, request, timeout_s)).world

    async def get_world(self, world_id: str) -> pb.WorldInfo:
        return (await self._call("GetWorld", self._stub.GetWorld, pb.GetWorldRequest(world_id=world_id))).world

    async def list_worlds(self) -> list[pb.WorldInfo]:
        return list((await self._call("ListWorlds", self._stub.ListWorlds, pb.ListWorldsRequest())).worlds)

    async def delete_world(self, world_id: str, *, delete_saved: bool = False) -> pb.DeleteWorldResponse:
        request = pb.DeleteWorldRequest(world_id=world_id, delete_saved=delete_saved)
        return await self._call("DeleteWorld", self._stub.DeleteWorld, request)

    async def save_world(self, world_id: str, *, timeout_s: float | None = None) -> pb.WorldInfo:
        request = pb.SaveWorldRequest(world_id=world_id)
        return (await self._call("SaveWorld", self._stub.SaveWorld, request, timeout_s)).world

    async def load_world(self, world_id: str, *, timeout_s: float | None = None) -> pb.WorldInfo:
        request = pb.LoadWorldRequest(world_id=world_id)
        return (await self._call("LoadWorld", self._stub.LoadWorld, request, timeout_s)).world

    # ------------------------------------------------------------------------------------------- frames

    async def render(
        self,
        world_id: str,
        poses: np.ndarray,
        *,
        intrinsics: Intrinsics | pb.Intrinsics | None = None,
        image: str = "raw",
        depth: str | None = None,
        coverage_mask: bool = False,
        jpeg_quality: int = codecs.DEFAULT_JPEG_QUALITY,
        timeout_s: float | None = None,
    ) -> list[conversions.Frame]:
        """See ``WorldClient.render``."""
        fmt = conversions.frame_format(image, depth, jpeg_quality=jpeg_quality, coverage_mask=coverage_mask)
        request = conversions.render_request(world_id, poses, fmt, intrinsics)
        response = await self._call("Render", self._stub.Render, request, timeout_s)
        return [conversions.decode_frame(frame, f"render frame {i}") for i, frame in enumerate(response.frames)]

    async def step(
        self,
        world_id: str,
        poses: np.ndarray,
        *,
        intrinsics: Intrinsics | pb.Intrinsics | None = None,
        dynamic_masks: Sequence[np.ndarray | None] | None = None,
        dynamic_boxes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] = (),
        prompt: str | None = None,
        seed: int | None = None,
        image: str = "raw",
        depth: str | None = "float16_m",
        jpeg_quality: int = codecs.DEFAULT_JPEG_QUALITY,
        timeout_s: float | None = None,
    ) -> list[conversions.Frame]:
        """See ``WorldClient.step``."""
        fmt = conversions.frame_format(image, depth, jpeg_quality=jpeg_quality)
        request = conversions.step_request(
            world_id, poses, fmt, intrinsics=intrinsics, dynamic_masks=dynamic_masks, dynamic_boxes=dynamic_boxes,
            prompt=prompt, seed=seed,
        )
        async def attempt(timeout: float | None) -> list[pb.StepResponse]:
            try:
                return await self._steps.step(request, timeout)
            except grpc.RpcError as error:
                raise rpc_error(error, self.target, "Step", timeout) from None
            except asyncio.TimeoutError:
                raise client_error(grpc.StatusCode.DEADLINE_EXCEEDED, "", self.target, "Step", timeout) from None

        responses = await call_with_retry_async(self.retry, self.timeout_s if timeout_s is None else timeout_s, attempt)
        return [conversions.decode_step_response(response) for response in responses]

    def step_stream(
        self,
        world_id: str,
        poses: Iterable[np.ndarray],
        *,
        intrinsics: Intrinsics | pb.Intrinsics | None = None,
        image: str = "raw",
        depth: str | None = "float16_m",
        jpeg_quality: int = codecs.DEFAULT_JPEG_QUALITY,
        timeout_s: float | None = None,
    ) -> AsyncIterator[conversions.Frame]:
        """See ``WorldClient.step_stream``: ``async for`` over the frames; leaving the loop cancels the stream."""
        fmt = conversions.frame_format(image, depth, jpeg_quality=jpeg_quality)
        requests = (conversions.step_request(world_id, item, fmt, intrinsics=intrinsics) for item in poses)
        return self._server_stream("Step", self._stub.Step, requests, conversions.decode_step_response, timeout_s)

    # ------------------------------------------------------------------------------------------- point cloud

    def stream_point_cloud(
        self,
        world_id: str,
        since_version: int = 0,
        *,
        follow: bool = False,
        include_positions: bool = False,
        max_chunk_bytes: int = 0,
        min_confidence: float | None = None,
        timeout_s: float | None = None,
    ) -> AsyncIterator[ws.PointCloudChunk]:
        """See ``WorldClient.stream_point_cloud``: ``async for`` over the chunks."""
        request = ws.point_cloud_request(world_id, since_version, follow=follow, max_chunk_bytes=max_chunk_bytes,
                                         include_positions=include_positions, min_confidence=min_confidence)
        return self._server_stream("StreamPointCloud", self._stub.StreamPointCloud, request,
                                   ws.decode_point_cloud_chunk, timeout_s)

    async def crop_point_cloud(
        self, world_id: str, min_m: np.ndarray, max_m: np.ndarray, *, max_chunk_bytes: int = 0,
        min_confidence: float | None = None, timeout_s: float | None = None,
    ) -> ws.CropResult:
        """See ``WorldClient.crop_point_cloud``."""
        request = ws.crop_request(world_id, min_m, max_m, max_chunk_bytes=max_chunk_bytes, min_confidence=min_confidence)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        stream = self._server_stream("CropPointCloud", self._stub.CropPointCloud, request, lambda r: r, timeout)
        return ws.decode_crop([chunk async for chunk in stream])

    # ------------------------------------------------------------------------------------------- queries

    async def raycast(
        self, world_id: str, origins_m: np.ndarray, directions: np.ndarray, max_range_m: float, *,
        min_confidence: float | None = None, timeout_s: float | None = None,
    ) -> ws.RaycastResult:
        """See ``WorldClient.raycast``."""
        request = ws.raycast_request(world_id, origins_m, directions, max_range_m, min_confidence=min_confidence)
        response = await self._call("Raycast", self._stub.Raycast, request, timeout_s)
        return ws.decode_raycast(response, ws.rows(request.origins_m))

    async def nearest_surface(
        self, world_id: str, points_m: np.ndarray, max_range_m: float, *, min_confidence: float | None = None,
        timeout_s: float | None = None,
    ) -> ws.NearestSurfaceResult:
        """See ``WorldClient.nearest_surface``."""
        request = ws.nearest_surface_request(world_id, points_m, max_range_m, min_confidence=min_confidence)
        response = await self._call("NearestSurface", self._stub.NearestSurface, request, timeout_s)
        return ws.decode_nearest_surface(response, ws.rows(request.points_m))

    async def check_spheres(
        self, world_id: str, centers_m: np.ndarray, radii_m, *, min_confidence: float | None = None,
        timeout_s: float | None = None,
    ) -> ws.CollisionResult:
        """See ``WorldClient.check_spheres``."""
        request = ws.sphere_collision_request(world_id, centers_m, radii_m, min_confidence=min_confidence)
        return await self._collide(request, ws.rows(request.spheres.centers_m), timeout_s)

    async def check_capsules(
        self, world_id: str, starts_m: np.ndarray, ends_m: np.ndarray, radii_m, *,
        min_confidence: float | None = None, timeout_s: float | None = None,
    ) -> ws.CollisionResult:
        """See ``WorldClient.check_capsules``."""
        request = ws.capsule_collision_request(world_id, starts_m, ends_m, radii_m, min_confidence=min_confidence)
        return await self._collide(request, ws.rows(request.capsules.starts_m), timeout_s)

    async def check_boxes(
        self, world_id: str, centers_m: np.ndarray, half_extents_m: np.ndarray, rotations: np.ndarray, *,
        min_confidence: float | None = None, timeout_s: float | None = None,
    ) -> ws.CollisionResult:
        """See ``WorldClient.check_boxes``."""
        request = ws.box_collision_request(world_id, centers_m, half_extents_m, rotations, min_confidence=min_confidence)
        return await self._collide(request, ws.rows(request.boxes.centers_m), timeout_s)

    async def _collide(self, request: pb.CheckCollisionRequest, n: int, timeout_s: float | None) -> ws.CollisionResult:
        return ws.decode_collision(await self._call("CheckCollision", self._stub.CheckCollision, request, timeout_s), n)

    async def query_occupancy(
        self, world_id: str, points_m: np.ndarray, *, min_confidence: float | None = None,
        timeout_s: float | None = None,
    ) -> ws.OccupancyResult:
        """See ``WorldClient.query_occupancy``."""
        request = ws.occupancy_request(world_id, points_m, min_confidence=min_confidence)
        response = await self._call("QueryOccupancy", self._stub.QueryOccupancy, request, timeout_s)
        return ws.decode_occupancy(response, ws.rows(request.points_m))

    # ------------------------------------------------------------------------------------------- edits

    async def remove_region(self, world_id: str, region: pb.Region, *, timeout_s: float | None = None) -> ws.EditResult:
        """See ``WorldClient.remove_region``."""
        request = ws.remove_region_request(world_id, region)
        response = await self._call("RemoveRegion", self._stub.RemoveRegion, request, timeout_s)
        return ws.EditResult(int(response.version), int(response.voxels_removed))

    async def recolor_region(
        self, world_id: str, region: pb.Region, rgb: Sequence[int], *, timeout_s: float | None = None
    ) -> ws.EditResult:
        """See ``WorldClient.recolor_region``."""
        request = ws.recolor_region_request(world_id, region, rgb)
        response = await self._call("RecolorRegion", self._stub.RecolorRegion, request, timeout_s)
        return ws.EditResult(int(response.version), int(response.voxels_changed))

    async def insert_points(
        self, world_id: str, points_m: np.ndarray, colors: np.ndarray, *, timeout_s: float | None = None
    ) -> ws.EditResult:
        """See ``WorldClient.insert_points``."""
        request = ws.insert_points_request(world_id, points_m, colors)
        response = await self._call("InsertPoints", self._stub.InsertPoints, request, timeout_s)
        return ws.EditResult(int(response.version), int(response.voxels_added))
