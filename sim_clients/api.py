"""The client API, described once: ``ClientApi`` (frames at the top level, the rest in sub-APIs) and ``Worlds``.

    client.worlds        create, get, list, delete, save, load                   (api.Worlds)
    client.render / step / step_stream                                           (frames: the main loop)
    client.queries       raycast, nearest_surface, check_spheres, check_capsules, check_boxes, occupancy
    client.edits         remove_region, recolor_region, insert_points, label_region
    client.point_cloud   stream, crop, mirror
    client.call          any RPC by its name, with a request message (raw response messages back)

Every method is a request builder, an RPC name and a decoder handed to the client's ``Transport``
(``transport.py``): ``WorldClient`` returns the record, ``AsyncWorldClient`` an awaitable of it (streams: iterators /
async iterators). Poses are 4x4 float64 camera-to-world matrices (OpenCV camera, world Z up, metres); every call takes
``timeout_s`` (seconds; None: the client's default).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from google.protobuf.message import Message

from worldweave.proto import codecs
from worldweave.proto.geometry import Intrinsics
from worldweave.proto.rig import Rig
from worldweave.proto.splice import SplitMessage
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.sim_clients import conversions
from worldweave.sim_clients import world_state as ws
from worldweave.sim_clients.conversions import DepthEncoding, Frame, ImageEncoding, Retrieval
from worldweave.sim_clients.transport import Answer, Stream, Transport

SERVICE = pb.DESCRIPTOR.services_by_name["WorldService"]
"""The service whose RPCs ``ClientApi.call`` sends by name."""


def _frames(response: pb.RenderResponse) -> list[Frame]:
    return [conversions.decode_frame(frame, f"render frame {i}") for i, frame in enumerate(response.frames)]


def _step_frames(responses: list[SplitMessage[pb.StepResponse]]) -> list[Frame]:
    return [conversions.decode_step_response(response) for response in responses]


class Worlds:
    """``client.worlds``: create, describe, list, delete, save and load worlds. Each returns the world's
    description, ``WorldInfo`` (``.world_id``, ``.version``, ``.frame_count``, ``.config``, ...)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def create(
        self,
        frames: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
        intrinsics: Intrinsics | pb.Intrinsics,
        *,
        prompt: str = "",
        world_id: str = "",
        voxel_size_m: float | None = None,
        retrieval: Retrieval | None = None,
        max_anchors: int | None = None,
        seed: int | None = None,
        confidence_levels: Sequence[float] | None = None,
        default_min_confidence: float | None = None,
        record: bool | None = None,
        timeout_s: float | None = None,
    ) -> Answer[pb.WorldInfo]:
        """Create a world from ``(rgb uint8 (H, W, 3), depth float32 (H, W) metres, c2w float64 4x4)`` seed frames
        seen through ``intrinsics`` (pixels).

        ``world_id`` empty lets the server choose. ``retrieval``: how a step picks the memories it conditions on.
        ``confidence_levels``: the minimum confidences its queries and stream accept (``min_confidence=``), each in
        [0, 1]; ``default_min_confidence``: the level used when a call names none (docs/confidence.md). ``record``:
        whether the server logs the world's requests for ``worldweave replay`` (docs/rollouts.md; True needs a server
        started with ``--record DIR``). Unset options take the server's defaults.
        """
        config = ws.with_confidence_levels(conversions.world_config(
            voxel_size_m=voxel_size_m, retrieval=retrieval, max_anchors=max_anchors, seed=seed
        ), confidence_levels, default_min_confidence)

        def build() -> pb.CreateWorldRequest:
            seed_frames = conversions.seed_message(frames, intrinsics, prompt)
            return pb.CreateWorldRequest(world_id=world_id, seed=seed_frames, config=config, record=record)

        return self._transport.unary("CreateWorld", build, lambda r: r.world, timeout_s)

    def get(self, world_id: str, *, timeout_s: float | None = None) -> Answer[pb.WorldInfo]:
        """Describe one loaded world."""
        return self._transport.unary("GetWorld", pb.GetWorldRequest(world_id=world_id), lambda r: r.world, timeout_s)

    def list(self, *, timeout_s: float | None = None) -> Answer[list[pb.WorldInfo]]:
        """Every world: loaded ones and those saved in the server's data folder (``.loaded``, ``.saved``)."""
        return self._transport.unary("ListWorlds", pb.ListWorldsRequest(), lambda r: [*r.worlds], timeout_s)

    def delete(
        self, world_id: str, *, delete_saved: bool = False, timeout_s: float | None = None
    ) -> Answer[pb.DeleteWorldResponse]:
        """Unload a world and, with ``delete_saved``, delete its save."""
        request = pb.DeleteWorldRequest(world_id=world_id, delete_saved=delete_saved)
        return self._transport.unary("DeleteWorld", request, lambda r: r, timeout_s)

    def save(self, world_id: str, *, timeout_s: float | None = None) -> Answer[pb.WorldInfo]:
        """Save a world to the server's data folder (atomically)."""
        return self._transport.unary("SaveWorld", pb.SaveWorldRequest(world_id=world_id), lambda r: r.world, timeout_s)

    def load(self, world_id: str, *, timeout_s: float | None = None) -> Answer[pb.WorldInfo]:
        """Load a saved world (for example after a server restart)."""
        return self._transport.unary("LoadWorld", pb.LoadWorldRequest(world_id=world_id), lambda r: r.world, timeout_s)


class ClientApi:
    """What ``WorldClient`` and ``AsyncWorldClient`` offer, written once over a ``Transport`` (see the module)."""

    worlds: Worlds
    """Create, describe, list, delete, save, load worlds."""
    queries: ws.Queries
    """Raycast, nearest surface, collision of spheres / capsules / boxes, occupancy."""
    edits: ws.Edits
    """Remove, recolour, insert memory."""
    point_cloud: ws.PointCloud
    """Stream, crop and mirror the world's voxel cloud."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self.worlds = Worlds(transport)
        self.queries = ws.Queries(transport)
        self.edits = ws.Edits(transport)
        self.point_cloud = ws.PointCloud(transport)

    def render(
        self,
        world_id: str,
        poses: np.ndarray,
        *,
        intrinsics: Intrinsics | pb.Intrinsics | None = None,
        image: ImageEncoding = "raw",
        depth: DepthEncoding | None = None,
        coverage_mask: bool = False,
        semantic: bool = False,
        instance: bool = False,
        normals: bool = False,
        jpeg_quality: int = codecs.DEFAULT_JPEG_QUALITY,
        timeout_s: float | None = None,
    ) -> Answer[list[Frame]]:
        """Render memory at one 4x4 pose or an (N, 4, 4) stack: no generation, no memory update. A stack is one
        chunk (anchors retrieved once for all its poses), so a pose's frame can depend on the rest of the stack.
        ``depth`` None: no depth. ``intrinsics`` None: the world's. ``semantic`` / ``instance`` / ``normals``: add
        those images rendered from memory (``Frame.semantic``, ``.instance``, ``.normals``; docs/sensors.md)."""
        fmt = conversions.frame_format(image, depth, jpeg_quality=jpeg_quality, coverage_mask=coverage_mask,
                                       semantic=semantic, instance=instance, normals=normals)
        request = conversions.render_request(world_id, poses, fmt, intrinsics)
        return self._transport.unary("Render", request, _frames, timeout_s)

    def step(
        self,
        world_id: str,
        poses: np.ndarray,
        *,
        intrinsics: Intrinsics | pb.Intrinsics | None = None,
        rig: Rig | None = None,
        dynamic_masks: Sequence[np.ndarray | Sequence[np.ndarray | None] | None] | None = None,
        dynamic_boxes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] = (),
        dynamic_box_labels: Sequence[tuple[int, int]] | None = None,
        prompt: str | None = None,
        seed: int | None = None,
        image: ImageEncoding = "raw",
        depth: DepthEncoding | None = "float16_m",
        semantic: bool = False,
        instance: bool = False,
        normals: bool = False,
        jpeg_quality: int = codecs.DEFAULT_JPEG_QUALITY,
        timeout_s: float | None = None,
    ) -> Answer[list[Frame]]:
        """Generate one frame per pose (a 4x4 or an (N, 4, 4) stack), fuse them into memory, return them in order.
        Sent on the client's long-lived Step stream (steps from several threads or tasks run one at a time).

        ``rig`` (``sim_clients.rigs``): cameras rigidly mounted on one body; ``poses`` are then body poses, each
        answering one frame per camera, pose-major (``Frame.pose_index``, ``Frame.camera_index``), fused as one
        memory update per body pose; leave ``intrinsics`` None (each camera has its own).
        ``dynamic_masks``: one bool (H, W) or None per pose, True on dynamic pixels (kept out of memory); with a rig,
        per pose None or a list with one mask (or None) per camera.
        ``dynamic_boxes``: ``(center_m (3,), half_extents_m (3,), rotation 3x3 box-to-world)`` boxes whose content
        is dynamic. ``dynamic_box_labels``: None, or one ``(semantic_class, instance_id)`` per box (0: none); the
        step's semantic / instance images show them on the pixels whose depth lies inside the box (docs/sensors.md).
        ``semantic`` / ``instance`` / ``normals``: add those images, rendered from memory after each frame is fused.
        """
        fmt = conversions.frame_format(image, depth, jpeg_quality=jpeg_quality, semantic=semantic, instance=instance,
                                       normals=normals)
        request = conversions.step_request(
            world_id, poses, fmt, intrinsics=intrinsics, rig=rig, dynamic_masks=dynamic_masks,
            dynamic_boxes=dynamic_boxes, dynamic_box_labels=dynamic_box_labels, prompt=prompt, seed=seed,
        )
        return self._transport.step(request, _step_frames, timeout_s)

    def step_stream(
        self,
        world_id: str,
        poses: Iterable[np.ndarray],
        *,
        intrinsics: Intrinsics | pb.Intrinsics | None = None,
        image: ImageEncoding = "raw",
        depth: DepthEncoding | None = "float16_m",
        jpeg_quality: int = codecs.DEFAULT_JPEG_QUALITY,
        timeout_s: float | None = None,
    ) -> Stream[Frame]:
        """Stream steps on a stream of its own: each item of ``poses`` (a 4x4, or an (N, 4, 4) chunk) is one
        StepRequest; yields frames in order as they arrive. ``timeout_s``: deadline of the whole stream (None:
        none)."""
        fmt = conversions.frame_format(image, depth, jpeg_quality=jpeg_quality)
        requests = (conversions.step_request(world_id, item, fmt, intrinsics=intrinsics) for item in poses)
        return self._transport.stream("Step", requests, conversions.decode_step_response, timeout_s)

    def call(
        self, rpc: str, request: Message, *, timeout_s: float | None = None, frame_views: bool = False
    ) -> Answer[list[Message] | list[SplitMessage[pb.StepResponse]]]:
        """Send ``request`` as the RPC named ``rpc`` (``"Raycast"``, a ``WorldService`` method) and return its
        response messages, undecoded: one for a unary RPC, every message of a server-streaming one (read to its end),
        a step's responses for ``"Step"`` (on the client's Step stream). Deadline, retry and errors as for every
        method. For programs that forward messages (the ZMQ gateway); everyone else uses the methods above.

        ``frame_views`` (Step only): each response as a ``proto.splice.SplitMessage`` instead, its ``.message``
        without the frame's image bytes and its ``.data`` those bytes, a read-only view of the received buffer (the
        pixels are not copied; ``.whole()`` is the plain message)."""
        method = SERVICE.methods_by_name.get(rpc)
        if method is None:
            raise ValueError(f"no RPC {rpc!r} in WorldService; one of {sorted(SERVICE.methods_by_name)}")
        if request.DESCRIPTOR is not method.input_type:
            raise TypeError(f"{rpc} takes a {method.input_type.name}, got a {request.DESCRIPTOR.name}")
        if rpc == "Step":  # the Step stream's responses keep their image bytes apart (conversions.parse_step_response)
            return self._transport.step(request, list if frame_views else lambda rs: [r.whole() for r in rs], timeout_s)
        if frame_views:
            raise ValueError(f"frame_views is for Step, not {rpc}")
        if method.server_streaming:
            return self._transport.collect(rpc, request, list, timeout_s)
        return self._transport.unary(rpc, request, lambda response: [response], timeout_s)
