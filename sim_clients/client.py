"""``WorldClient``: the synchronous Python client of a worldweave server. numpy in, numpy out.

    from worldweave.sim_clients.client import WorldClient
    with WorldClient("127.0.0.1:50051") as client:
        world = client.create_world([(rgb, depth_m, c2w)], intrinsics)
        frames = client.step(world.world_id, next_c2w)           # one pose -> one frame
        for frame in client.step_stream(world.world_id, trajectory):   # many poses, streamed
            ...

Poses are 4x4 float64 camera-to-world matrices (OpenCV camera, world Z up, metres; ``conventions`` converts from
engine forms). Frames come back as ``conversions.Frame`` records; point-cloud chunks, query answers and edit results
as the records of ``world_state`` (``PointCloudMirror`` keeps a copy of a world's cloud from the chunks). Every call has a deadline; every failure is a
``WorldweaveError`` subclass whose message says what to do. At connect the client checks the server's API
version: a different major version is ``IncompatibleServerError``, a different minor version a warning.

``step`` sends every request on one long-lived stream per client (a stream per call costs more than the rest of
a loopback round trip); steps from several threads on one client run one at a time. ``step_stream`` opens its own
stream. Transport only: request building and decoding are the pure functions of ``conversions`` and
``world_state``. ``token`` sends ``authorization: Bearer <token>`` with every call; ``tls`` (or
``tls_root_certificates``) connects over TLS. ``AsyncWorldClient`` (``aio_client``) has the same surface on asyncio.
"""

from __future__ import annotations

import math
import queue
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np

from worldweave.proto import codecs
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
from worldweave.proto.geometry import Intrinsics
from worldweave.proto.worldweave.v1 import API_VERSION
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.sim_clients import conversions
from worldweave.sim_clients import world_state as ws
from worldweave.sim_clients.retry import RetryPolicy, call_with_retry

DEFAULT_MAX_MESSAGE_BYTES = 128 << 20
"""Largest message the client sends or receives, bytes: a raw 1920x1080 frame is 6.2 MB (10.4 MB with depth)."""
DEFAULT_TIMEOUT_S = 60.0
"""Deadline of unary calls, seconds."""


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

    def __init__(self, stub: pb_grpc.WorldServiceStub, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._stub = stub
        self._metadata = metadata
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue | None = None
        self._call = None
        self._watchdog = Watchdog()

    def step(self, request: pb.StepRequest, timeout_s: float) -> list[pb.StepResponse]:
        """Send ``request`` and return its responses (one per pose); raises ``grpc.RpcError`` on failure and
        ``StepDeadlineError`` past ``timeout_s`` seconds."""
        with self._lock:
            if self._call is not None and self._call.done():  # ended between steps (server gone, late watchdog)
                self._drop()
            if self._call is None:
                self._requests = queue.SimpleQueue()
                self._call = self._stub.Step(iter(self._requests.get, None), metadata=self._metadata)
            call = self._call
            self._requests.put(request)
            self._watchdog.arm(time.monotonic() + timeout_s, call)
            responses: list[pb.StepResponse] = []
            try:
                while not responses or not responses[-1].last_in_request:
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


class WorldClient:
    """A connection to a worldweave server at ``target`` (``host:port``).

    ``timeout_s``: default deadline of unary calls, seconds. ``connect_timeout_s``: how long to wait for the server
    at connect. ``max_message_bytes``: the channel's message limit both ways (match the server's, reported in
    ``info.limits``). ``token``: bearer token for a server started with one. ``tls``: connect over TLS, trusting
    the system's roots or ``tls_root_certificates`` (PEM bytes or file; setting it implies ``tls``). ``retry``:
    how unary calls and ``step`` retry a call the server refused for load, after the delay it suggested
    (``retry.RetryPolicy``: by default as often as the call's deadline allows); None: raise every refusal at
    once (``LimitExceededError``, whose ``retry_after_s`` is the suggested delay).
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
        self.target = target
        self.timeout_s = timeout_s
        self.retry = retry
        self.max_message_bytes = max_message_bytes
        self._metadata = call_metadata(token)
        credentials = channel_credentials(tls, tls_root_certificates)
        options = channel_options(max_message_bytes)
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self._stub = pb_grpc.WorldServiceStub(self._channel)
        self._steps = PersistentStepStream(self._stub, self._metadata)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=connect_timeout_s)
        except grpc.FutureTimeoutError:
            self._channel.close()
            raise ServerUnavailableError(
                f"server not reachable at {target} — is `worldweave serve` running? (no answer in {connect_timeout_s} s)"
            ) from None
        try:
            self.info: pb.GetServerInfoResponse = self._call(
                "GetServerInfo", self._stub.GetServerInfo, pb.GetServerInfoRequest(client_api_version=API_VERSION)
            )
            warning = check_api_version(self.info.api_version)
        except WorldweaveError:
            self.close()
            raise
        if warning:
            warnings.warn(warning, stacklevel=2)
        if self.info.limits.max_message_bytes > max_message_bytes:
            warnings.warn(
                f"the server sends messages up to {self.info.limits.max_message_bytes} bytes but this client accepts "
                f"{max_message_bytes}: pass max_message_bytes={self.info.limits.max_message_bytes} for large frames",
                stacklevel=2,
            )

    # ------------------------------------------------------------------------------------------- plumbing

    def _call(self, name: str, method, request, timeout_s: float | None = None):
        """``method(request)``, retried under ``self.retry`` when the server refuses it for load."""
        def attempt(timeout: float | None):
            try:
                return method(request, timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as error:
                raise rpc_error(error, self.target, name, timeout) from None

        return call_with_retry(self.retry, self.timeout_s if timeout_s is None else timeout_s, attempt)

    def close(self) -> None:
        """Close the channel (calls in flight are cancelled)."""
        self._steps.close()
        self._channel.close()

    def __enter__(self) -> WorldClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- worlds

    def create_world(
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
        """Create a world from ``(rgb uint8 (H, W, 3), depth float (H, W) metres, c2w 4x4)`` seed frames.

        ``world_id`` empty lets the server choose. ``retrieval``: "coverage", "iou", "recent", "random" or "global".
        ``confidence_levels``: the minimum confidences its queries and stream accept (``min_confidence=``), each in
        [0, 1]; ``default_min_confidence``: the level used when a call names none (docs/confidence.md).
        Unset options take the server's defaults. Returns the world's description (``.world_id``, ``.version``,
        ``.config.confidence_levels``, ...).
        """
        config = ws.with_confidence_levels(conversions.world_config(
            voxel_size_m=voxel_size_m, retrieval=retrieval, max_anchors=max_anchors, seed=seed
        ), confidence_levels, default_min_confidence)
        request = pb.CreateWorldRequest(
            world_id=world_id, seed=conversions.seed_message(frames, intrinsics, prompt), config=config
        )
        return self._call("CreateWorld", self._stub.CreateWorld, request, timeout_s).world

    def get_world(self, world_id: str) -> pb.WorldInfo:
        """Describe one loaded world."""
        return self._call("GetWorld", self._stub.GetWorld, pb.GetWorldRequest(world_id=world_id)).world

    def list_worlds(self) -> list[pb.WorldInfo]:
        """Every world: loaded ones and those saved in the server's data folder (``.loaded``, ``.saved``)."""
        return list(self._call("ListWorlds", self._stub.ListWorlds, pb.ListWorldsRequest()).worlds)

    def delete_world(self, world_id: str, *, delete_saved: bool = False) -> pb.DeleteWorldResponse:
        """Unload a world and, with ``delete_saved``, delete its save."""
        request = pb.DeleteWorldRequest(world_id=world_id, delete_saved=delete_saved)
        return self._call("DeleteWorld", self._stub.DeleteWorld, request)

    def save_world(self, world_id: str, *, timeout_s: float | None = None) -> pb.WorldInfo:
        """Save a world to the server's data folder (atomically)."""
        return self._call("SaveWorld", self._stub.SaveWorld, pb.SaveWorldRequest(world_id=world_id), timeout_s).world

    def load_world(self, world_id: str, *, timeout_s: float | None = None) -> pb.WorldInfo:
        """Load a saved world (for example after a server restart)."""
        return self._call("LoadWorld", self._stub.LoadWorld, pb.LoadWorldRequest(world_id=world_id), timeout_s).world

    # ------------------------------------------------------------------------------------------- frames

    def render(
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
        """Render memory at one 4x4 pose or an (N, 4, 4) stack: no generation, no memory update. A stack is one
        chunk (anchors retrieved once for all its poses), so a pose's frame can depend on the rest of the stack.

        ``image``: "raw", "png" or "jpeg". ``depth``: None (no depth), "float16_m" or "uint16_mm".
        """
        fmt = conversions.frame_format(image, depth, jpeg_quality=jpeg_quality, coverage_mask=coverage_mask)
        request = conversions.render_request(world_id, poses, fmt, intrinsics)
        response = self._call("Render", self._stub.Render, request, timeout_s)
        return [conversions.decode_frame(frame, f"render frame {i}") for i, frame in enumerate(response.frames)]

    def step(
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
        """Generate one frame per pose (a 4x4 or an (N, 4, 4) stack), fuse them into memory, return them in order.

        ``dynamic_masks``: one bool (H, W) or None per pose, True on dynamic pixels (kept out of memory).
        ``dynamic_boxes``: ``(center_m, half_extents_m, rotation 3x3)`` boxes whose content is dynamic.
        """
        fmt = conversions.frame_format(image, depth, jpeg_quality=jpeg_quality)
        request = conversions.step_request(
            world_id, poses, fmt, intrinsics=intrinsics, dynamic_masks=dynamic_masks, dynamic_boxes=dynamic_boxes,
            prompt=prompt, seed=seed,
        )
        def attempt(timeout: float | None) -> list[pb.StepResponse]:
            try:
                return self._steps.step(request, timeout)
            except grpc.RpcError as error:
                raise rpc_error(error, self.target, "Step", timeout) from None
            except StepDeadlineError:
                raise client_error(grpc.StatusCode.DEADLINE_EXCEEDED, "", self.target, "Step", timeout) from None

        responses = call_with_retry(self.retry, self.timeout_s if timeout_s is None else timeout_s, attempt)
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
    ) -> Iterator[conversions.Frame]:
        """Stream steps: each item of ``poses`` (a 4x4, or an (N, 4, 4) chunk) is one StepRequest; yields frames in
        order as they arrive. Stopping the iteration cancels the stream on the server. ``timeout_s``: deadline of
        the whole stream (None: no deadline)."""
        fmt = conversions.frame_format(image, depth, jpeg_quality=jpeg_quality)
        requests = (
            conversions.step_request(world_id, item, fmt, intrinsics=intrinsics) for item in poses
        )
        return self._server_stream("Step", self._stub.Step, requests, conversions.decode_step_response, timeout_s)

    def _server_stream(self, name: str, method, request, decode, timeout_s: float | None) -> Iterator:
        """Yield ``decode(response)`` for each response of the streaming call ``method(request)``, started on the
        first ``next``; the call is cancelled when the caller stops iterating."""
        call = method(request, timeout=timeout_s, metadata=self._metadata)
        try:
            for response in call:
                yield decode(response)
        except grpc.RpcError as error:
            raise rpc_error(error, self.target, name, timeout_s) from None
        finally:
            call.cancel()

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
    ) -> Iterator[ws.PointCloudChunk]:
        """The world's voxel cloud as chunks: a snapshot (``since_version`` 0, or one the server no longer holds:
        ``is_snapshot``), else the added, changed and removed voxels since ``since_version``. With ``follow`` the
        stream stays open and brings each new version's changes until the iteration stops (or ``timeout_s``
        seconds pass; None: no deadline). ``PointCloudMirror.apply`` takes the chunks. ``min_confidence``: only
        voxels at or above this level (one of the world's ``confidence_levels``; None: the world's default; 0: all,
        to filter locally with ``PointCloudMirror.points(min_confidence=...)``)."""
        request = ws.point_cloud_request(world_id, since_version, follow=follow, max_chunk_bytes=max_chunk_bytes,
                                         include_positions=include_positions, min_confidence=min_confidence)
        return self._server_stream("StreamPointCloud", self._stub.StreamPointCloud, request,
                                   ws.decode_point_cloud_chunk, timeout_s)

    def crop_point_cloud(
        self, world_id: str, min_m: np.ndarray, max_m: np.ndarray, *, max_chunk_bytes: int = 0,
        min_confidence: float | None = None, timeout_s: float | None = None,
    ) -> ws.CropResult:
        """The voxels whose centres lie in the axis-aligned box ``[min_m, max_m]`` (world metres) and whose
        confidence is at least ``min_confidence`` (None: the world's default level)."""
        request = ws.crop_request(world_id, min_m, max_m, max_chunk_bytes=max_chunk_bytes, min_confidence=min_confidence)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        return ws.decode_crop(self._server_stream("CropPointCloud", self._stub.CropPointCloud, request, lambda r: r, timeout))

    # ------------------------------------------------------------------------------------------- queries

    # Every query takes ``min_confidence``: one of the world's ``confidence_levels`` (``get_world(...).config``),
    # None for the world's default level. Voxels below it are unknown space: never a hit, never free.

    def raycast(
        self, world_id: str, origins_m: np.ndarray, directions: np.ndarray, max_range_m: float, *,
        min_confidence: float | None = None, timeout_s: float | None = None,
    ) -> ws.RaycastResult:
        """Cast rays from ``origins_m`` (N, 3) along ``directions`` (N, 3), up to ``max_range_m`` metres."""
        request = ws.raycast_request(world_id, origins_m, directions, max_range_m, min_confidence=min_confidence)
        response = self._call("Raycast", self._stub.Raycast, request, timeout_s)
        return ws.decode_raycast(response, ws.rows(request.origins_m))

    def nearest_surface(
        self, world_id: str, points_m: np.ndarray, max_range_m: float, *, min_confidence: float | None = None,
        timeout_s: float | None = None,
    ) -> ws.NearestSurfaceResult:
        """The nearest surface point to each of ``points_m`` (N, 3) within ``max_range_m`` metres."""
        request = ws.nearest_surface_request(world_id, points_m, max_range_m, min_confidence=min_confidence)
        response = self._call("NearestSurface", self._stub.NearestSurface, request, timeout_s)
        return ws.decode_nearest_surface(response, ws.rows(request.points_m))

    def check_spheres(
        self, world_id: str, centers_m: np.ndarray, radii_m, *, min_confidence: float | None = None,
        timeout_s: float | None = None,
    ) -> ws.CollisionResult:
        """Collision of spheres (``centers_m`` (N, 3), ``radii_m`` a number or (N,), metres) with the world."""
        request = ws.sphere_collision_request(world_id, centers_m, radii_m, min_confidence=min_confidence)
        return self._collide(request, ws.rows(request.spheres.centers_m), timeout_s)

    def check_capsules(
        self, world_id: str, starts_m: np.ndarray, ends_m: np.ndarray, radii_m, *,
        min_confidence: float | None = None, timeout_s: float | None = None,
    ) -> ws.CollisionResult:
        """Collision of capsules (segments ``starts_m`` -> ``ends_m``, radii ``radii_m``, metres) with the world."""
        request = ws.capsule_collision_request(world_id, starts_m, ends_m, radii_m, min_confidence=min_confidence)
        return self._collide(request, ws.rows(request.capsules.starts_m), timeout_s)

    def check_boxes(
        self, world_id: str, centers_m: np.ndarray, half_extents_m: np.ndarray, rotations: np.ndarray, *,
        min_confidence: float | None = None, timeout_s: float | None = None,
    ) -> ws.CollisionResult:
        """Collision of oriented boxes (centres and half extents (N, 3) metres; box-to-world ``rotations`` as (N, 4)
        quaternions qw, qx, qy, qz or (N, 3, 3) matrices) with the world."""
        request = ws.box_collision_request(world_id, centers_m, half_extents_m, rotations, min_confidence=min_confidence)
        return self._collide(request, ws.rows(request.boxes.centers_m), timeout_s)

    def _collide(self, request: pb.CheckCollisionRequest, n: int, timeout_s: float | None) -> ws.CollisionResult:
        return ws.decode_collision(self._call("CheckCollision", self._stub.CheckCollision, request, timeout_s), n)

    def query_occupancy(
        self, world_id: str, points_m: np.ndarray, *, min_confidence: float | None = None,
        timeout_s: float | None = None,
    ) -> ws.OccupancyResult:
        """Occupancy of each of ``points_m`` (N, 3): ``OCCUPANCY_UNKNOWN`` / ``_FREE`` / ``_OCCUPIED`` codes."""
        request = ws.occupancy_request(world_id, points_m, min_confidence=min_confidence)
        response = self._call("QueryOccupancy", self._stub.QueryOccupancy, request, timeout_s)
        return ws.decode_occupancy(response, ws.rows(request.points_m))

    # ------------------------------------------------------------------------------------------- edits

    def remove_region(self, world_id: str, region: pb.Region, *, timeout_s: float | None = None) -> ws.EditResult:
        """Remove the memory inside ``region`` (``world_state.box_region``, ``sphere_region``,
        ``oriented_box_region``); it does not come back in later frames."""
        response = self._call("RemoveRegion", self._stub.RemoveRegion, ws.remove_region_request(world_id, region), timeout_s)
        return ws.EditResult(int(response.version), int(response.voxels_removed))

    def recolor_region(
        self, world_id: str, region: pb.Region, rgb: Sequence[int], *, timeout_s: float | None = None
    ) -> ws.EditResult:
        """Recolour the memory inside ``region`` with ``rgb`` (three integers 0..255)."""
        request = ws.recolor_region_request(world_id, region, rgb)
        response = self._call("RecolorRegion", self._stub.RecolorRegion, request, timeout_s)
        return ws.EditResult(int(response.version), int(response.voxels_changed))

    def insert_points(
        self, world_id: str, points_m: np.ndarray, colors: np.ndarray, *, timeout_s: float | None = None
    ) -> ws.EditResult:
        """Insert ``points_m`` (N, 3) world metres with ``colors`` uint8 (N, 3); ``voxels`` counts new voxels."""
        request = ws.insert_points_request(world_id, points_m, colors)
        response = self._call("InsertPoints", self._stub.InsertPoints, request, timeout_s)
        return ws.EditResult(int(response.version), int(response.voxels_added))

