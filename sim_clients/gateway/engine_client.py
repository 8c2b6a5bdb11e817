"""A Python reference engine for the gateway: what the Unity, Unreal and Isaac code do, in a few lines of pyzmq.

    with GatewayClient("tcp://127.0.0.1:5555", "unity") as engine:
        frames = engine.step("demo", [TransformPose(position, Quaternion(qw=..., qx=..., qy=..., qz=...))],
                             camera=Intrinsics.from_fov(640, 480, fov_y_deg=60))

Poses go out and come back in the declared convention; the gateway converts. Useful for Python simulators that
would rather not depend on grpc, and as the executable reference of ``SCHEMA.md`` (the tests drive the gateway
with it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zmq

from worldweave.proto.errors import DeadlineExceededError, ServerError, error_for_status
from worldweave.proto.geometry import Intrinsics
from worldweave.sim_clients.conventions import EnginePose, PoseForm
from worldweave.sim_clients.gateway import codec
from worldweave.sim_clients.gateway.messages import (
    CheckBoxes,
    CheckCapsules,
    CheckSpheres,
    CollisionReply,
    CreateWorld,
    CropPointCloud,
    CropReply,
    DeleteReply,
    DeleteWorld,
    DepthEncoding,
    EditReply,
    ErrorReply,
    FramesReply,
    Hello,
    HelloReply,
    ImageEncoding,
    InsertPoints,
    NearestReply,
    NearestSurface,
    OccupancyReply,
    PointCloud,
    PointCloudChunk,
    QueryOccupancy,
    Raycast,
    RaycastReply,
    RecolorRegion,
    RemoveRegion,
    Render,
    Reply,
    Request,
    SeedView,
    Step,
    WireFrame,
    WireRegion,
    WorldReply,
)


class GatewayTimeoutError(DeadlineExceededError):
    """No reply within the timeout: is ``worldweave gateway`` running at that address, and its server?"""


class GatewayClient:
    """One DEALER connection to a gateway, with its convention declared at connect (``hello_reply`` in ``info``).

    Every call waits for its reply (``timeout_s``); an ``error`` reply raises the ``WorldweaveError`` of its status with the
    reply's gRPC status name in ``code``.
    """

    def __init__(self, address: str, convention: str, *, up_axis: str | None = None, metres_per_unit: float | None = None,
                 timeout_s: float = 30.0, max_message_bytes: int = codec.DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self._context = zmq.Context()
        self.socket = self._context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(address)
        self._next_id = 1
        self.pose_form: PoseForm | None = None
        try:
            self.info: HelloReply = self.call(Hello(convention, up_axis, metres_per_unit, "worldweave-python"))
        except BaseException:
            self.close()
            raise
        self.pose_form = self.info.pose_form

    def send(self, request: Request) -> int:
        """Send without waiting; returns the request id (replies come back in order)."""
        request_id = self._next_id
        self._next_id += 1
        self.socket.send(codec.encode(request, request_id))
        return request_id

    def receive(self) -> tuple[int | None, Reply]:
        """The next reply, as ``(request id, record)``, error replies included."""
        if not self.socket.poll(int(self.timeout_s * 1000)):
            raise GatewayTimeoutError(
                f"no reply from the gateway at {self.address} in {self.timeout_s} s: is `worldweave gateway` running, "
                "and is its server up?"
            )
        return codec.decode_reply(self.socket.recv(), pose_form=self.pose_form, max_message_bytes=self.max_message_bytes)

    def call(self, request: Request) -> Reply:
        """Send and wait for the reply; an error reply raises the ``WorldweaveError`` of its status."""
        request_id = self.send(request)
        reply_id, reply = self.receive()
        if isinstance(reply, ErrorReply):
            raise error_for_status(reply.code, reply.message)
        if reply_id != request_id:
            raise ServerError(f"reply to request {reply_id} while waiting for {request_id}")
        return reply

    def call_chunks(self, request: Request) -> list[PointCloudChunk]:
        """Send a ``point_cloud`` request and collect its chunk messages up to the one flagged ``last_in_version``."""
        request_id = self.send(request)
        chunks: list[PointCloudChunk] = []
        while not chunks or not chunks[-1].last_in_version:
            reply_id, reply = self.receive()
            if isinstance(reply, ErrorReply):
                raise error_for_status(reply.code, reply.message)
            if reply_id != request_id or not isinstance(reply, PointCloudChunk):
                raise ServerError(f"{reply.TYPE} to request {reply_id} while waiting for chunks of {request_id}")
            chunks.append(reply)
        return chunks

    def create_world(self, views: Sequence[SeedView], camera: Intrinsics, *, world_id: str = "", prompt: str = "") -> WorldReply:
        """A new world from seed views (poses in this connection's convention)."""
        return self.call(CreateWorld(camera, tuple(views), world_id, prompt))

    def render(self, world_id: str, poses: Sequence[EnginePose], *, camera: Intrinsics | None = None,
               image_encoding: ImageEncoding = "raw_rgb8", depth_encoding: DepthEncoding | None = None) -> tuple[WireFrame, ...]:
        """Memory seen from each pose; frames in pose order."""
        reply: FramesReply = self.call(Render(world_id, tuple(poses), camera, image_encoding, depth_encoding))
        return reply.frames

    def step(self, world_id: str, poses: Sequence[EnginePose], *, camera: Intrinsics | None = None,
             image_encoding: ImageEncoding = "raw_rgb8", depth_encoding: DepthEncoding | None = None,
             prompt: str | None = None, seed: int | None = None) -> tuple[WireFrame, ...]:
        """Generate (and remember) a frame per pose; frames in pose order."""
        reply: FramesReply = self.call(Step(world_id, tuple(poses), camera, image_encoding, depth_encoding, prompt, seed))
        return reply.frames

    def delete_world(self, world_id: str, *, delete_saved: bool = False) -> DeleteReply:
        return self.call(DeleteWorld(world_id, delete_saved))

    # World state: arrays in this connection's engine axes and units.

    def point_cloud(self, world_id: str, since_version: int = 0, *, max_chunk_bytes: int = 0) -> list[PointCloudChunk]:
        """The world's voxels (``since_version`` 0) or the changes since a version, as chunks."""
        return self.call_chunks(PointCloud(world_id, since_version, max_chunk_bytes))

    def raycast(self, world_id: str, origins: np.ndarray, directions: np.ndarray, max_range: float) -> RaycastReply:
        return self.call(Raycast(world_id, np.asarray(origins, np.float32), np.asarray(directions, np.float32), max_range))

    def nearest_surface(self, world_id: str, points: np.ndarray, max_range: float) -> NearestReply:
        return self.call(NearestSurface(world_id, np.asarray(points, np.float32), max_range))

    def check_spheres(self, world_id: str, centers: np.ndarray, radii: np.ndarray) -> CollisionReply:
        return self.call(CheckSpheres(world_id, np.asarray(centers, np.float32), np.asarray(radii, np.float32)))

    def check_capsules(self, world_id: str, starts: np.ndarray, ends: np.ndarray, radii: np.ndarray) -> CollisionReply:
        return self.call(CheckCapsules(world_id, np.asarray(starts, np.float32), np.asarray(ends, np.float32),
                                       np.asarray(radii, np.float32)))

    def check_boxes(self, world_id: str, centers: np.ndarray, half_extents: np.ndarray, rotations: np.ndarray) -> CollisionReply:
        """``rotations``: (N, 4) quaternions qw, qx, qy, qz, box-to-engine-world."""
        return self.call(CheckBoxes(world_id, np.asarray(centers, np.float32), np.asarray(half_extents, np.float32),
                                    np.asarray(rotations, np.float32)))

    def query_occupancy(self, world_id: str, points: np.ndarray) -> OccupancyReply:
        return self.call(QueryOccupancy(world_id, np.asarray(points, np.float32)))

    def crop_point_cloud(self, world_id: str, min_corner: np.ndarray, max_corner: np.ndarray) -> CropReply:
        return self.call(CropPointCloud(world_id, np.asarray(min_corner, float), np.asarray(max_corner, float)))

    def remove_region(self, world_id: str, region: WireRegion) -> EditReply:
        return self.call(RemoveRegion(world_id, region))

    def recolor_region(self, world_id: str, region: WireRegion, rgb: tuple[int, int, int]) -> EditReply:
        return self.call(RecolorRegion(world_id, region, tuple(int(v) for v in rgb)))

    def insert_points(self, world_id: str, points: np.ndarray, colors: np.ndarray) -> EditReply:
        return self.call(InsertPoints(world_id, np.asarray(points, np.float32), np.asarray(colors, np.uint8)))

    def close(self) -> None:
        self.socket.close(linger=0)
        self._context.term()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
