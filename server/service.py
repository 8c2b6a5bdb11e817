"""The ``WorldService`` servicer: each RPC validates its request, runs engine work under the world's lock off the
event loop, and answers; pure helpers (handshake, config and summary messages, size checks) live outside the class.

Every failure is answered with the status ``errors.status_for`` gives it; nothing a request does stops the server.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import grpc

from worldweave.bridge.checkpoints import CheckpointInfo
from worldweave.bridge.generators.base import Generator
from worldweave.bridge.memory.spatial_memory import MemoryConfig
from worldweave.proto import codecs as wire
from worldweave.proto.enums import (
    DEPTH_ENCODING_NAMES,
    IMAGE_ENCODING_NAMES,
    RETRIEVAL_NAMES,
)
from worldweave.proto.errors import InvalidInputError, LimitExceededError
from worldweave.proto.geometry import Intrinsics
from worldweave.proto.rig import Rig
from worldweave.proto.worldweave.v1 import API_VERSION
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.server import codecs, point_cloud, world_state
from worldweave.server.errors import status_for
from worldweave.server.limits import MIB, ServerLimits, check_budget, limits_message
from worldweave.server.registry import WorldRegistry, WorldSummary, check_world_id
from worldweave.server.sessions import check_session, exactly_once
from worldweave.server.watch import Watches, step_events


CONVENTIONS = pb.Conventions(
    world_frame="right_handed_z_up_metres",
    camera_frame="opencv",
    pose="camera_to_world",
    quaternion="wxyz_hamilton",
    depth="metres_optical_axis_zero_unknown",
)
"""The conventions (``docs/conventions.md``), as the tokens the handshake reports."""

CAPABILITIES = ("lifecycle", "render", "step", "point_cloud_stream", "queries", "edits", "watch", "rollouts", "lidar",
                "rigs", "labels")
"""Features every server of this version implements; "persistence" is added when it has a data folder, "recording"
when it records worlds (``serve --record``: CreateWorld may set ``record``)."""


# ------------------------------------------------------------------------------------------------ pure helpers


def server_info(
    generator: Generator, limits: ServerLimits, *, persistence: bool, recording: bool = False, server_version: str,
) -> pb.GetServerInfoResponse:
    """The handshake answer: API version, capabilities, generator contract, conventions, limits, encodings."""
    cls = type(generator)
    return pb.GetServerInfoResponse(
        api_version=API_VERSION,
        server_version=server_version,
        capabilities=[*CAPABILITIES, *(["persistence"] if persistence else []), *(["recording"] if recording else [])],
        generator=pb.GeneratorInfo(
            name=cls.name,
            chunk_multiple=cls.chunk_multiple,
            chunk_offset=cls.chunk_offset,
            max_frames=cls.max_frames,
            max_width=cls.max_width,
            max_height=cls.max_height,
            size_multiple=cls.size_multiple,
            returns_depth=cls.returns_depth,
        ),
        conventions=CONVENTIONS,
        limits=limits_message(limits),
        image_encodings=sorted(IMAGE_ENCODING_NAMES),
        depth_encodings=sorted(DEPTH_ENCODING_NAMES),
    )


def memory_config_from_proto(config: pb.WorldConfig) -> MemoryConfig:
    """``WorldConfig`` -> ``MemoryConfig``: set fields override the engine's defaults (which validate them)."""
    overrides: dict[str, object] = {}
    if config.HasField("voxel_size_m"):
        overrides["voxel_size_m"] = config.voxel_size_m
    if config.retrieval != pb.RETRIEVAL_UNSPECIFIED:
        if config.retrieval not in RETRIEVAL_NAMES:
            raise InvalidInputError(f"config.retrieval {config.retrieval} is not a Retrieval value (1..5)")
        overrides["retrieval"] = RETRIEVAL_NAMES[config.retrieval]
    if config.HasField("max_anchors"):
        overrides["k"] = config.max_anchors
    if config.HasField("seed"):
        overrides["seed"] = config.seed
    if config.confidence_levels:
        overrides["confidence_levels"] = tuple(config.confidence_levels)
        overrides["default_min_confidence"] = None  # the rule for the declared levels, unless set below
    if config.HasField("default_min_confidence"):
        overrides["default_min_confidence"] = config.default_min_confidence
    try:
        return replace(MemoryConfig(), **overrides)
    except InvalidInputError as error:  # the engine names its own fields: max_anchors is MemoryConfig.k
        raise InvalidInputError(f"config (max_anchors is the engine's k): {error}") from error


def memory_config_to_proto(memory: MemoryConfig) -> pb.WorldConfig:
    """``MemoryConfig`` -> ``WorldConfig`` with every field filled in (the declared confidence levels too)."""
    retrieval = {name: code for code, name in RETRIEVAL_NAMES.items()}[memory.retrieval]
    return pb.WorldConfig(
        voxel_size_m=memory.voxel_size_m, retrieval=retrieval, max_anchors=memory.k, seed=memory.seed,
        confidence_levels=memory.confidence_levels, default_min_confidence=memory.default_min_confidence,
    )


def summary_to_proto(summary: WorldSummary) -> pb.WorldInfo:
    """A ``WorldSummary`` -> ``WorldInfo``."""
    return pb.WorldInfo(
        world_id=summary.world_id,
        loaded=summary.loaded,
        saved=summary.saved,
        version=summary.version,
        intrinsics=wire.intrinsics_message(summary.intrinsics),
        prompt=summary.prompt,
        config=memory_config_to_proto(summary.memory),
        generator=summary.generator,
        voxel_count=summary.voxel_count,
        frame_count=summary.frame_count,
    )


def frame_bytes(intrinsics: Intrinsics, fmt: codecs.FrameFormat) -> int:
    """Upper estimate of one encoded frame's size, bytes (raw RGB8, plus 16-bit depth, mask, uint16 semantic, uint32
    instance and float32 x 3 normal images when asked for)."""
    pixels = intrinsics.width * intrinsics.height
    labels = fmt.labels
    per_pixel = 3 + (2 if fmt.depth_encoding is not None else 0) + 2 * labels.semantic + 4 * labels.instance + 12 * labels.normals
    return per_pixel * pixels + pixels // 8 + 1024


def check_message_size(frames: int, intrinsics: Intrinsics, fmt: codecs.FrameFormat, limit: int, what: str) -> None:
    """Raise ``LimitExceededError`` when ``frames`` frames in one message would exceed ``limit`` bytes."""
    size = frames * frame_bytes(intrinsics, fmt)
    if size > limit:
        raise LimitExceededError(
            f"{what}: {frames} frame(s) of {intrinsics.width}x{intrinsics.height} need about {size / MIB:.1f} MiB, over "
            f"the {limit / MIB:.0f} MiB message limit; send fewer poses per call (the Step stream sends one frame "
            "per message)"
        )


def check_pixels(poses: int, intrinsics: Intrinsics, limits: ServerLimits, what: str) -> None:
    """Raise ``LimitExceededError`` when ``poses`` frames of ``intrinsics``' size are over the pixel budget
    (``ServerLimits.max_pixels_per_call``), before any of them is rendered or generated."""
    check_budget(
        what, poses * intrinsics.width * intrinsics.height, limits.max_pixels_per_call, "max_pixels_per_call", "pixels",
        f"{poses} pose(s) of {intrinsics.width}x{intrinsics.height}: send fewer poses per call or smaller images",
    )


def check_rig_pixels(poses: int, rig: Rig, limits: ServerLimits) -> None:
    """``check_pixels`` for a step of ``poses`` body poses seen by ``rig``: poses x the sum of the cameras' pixels."""
    if len(rig) == 1:
        check_pixels(poses, rig.cameras[0].intrinsics, limits, "Step")
        return
    sizes = " + ".join(f"{c.intrinsics.width}x{c.intrinsics.height}" for c in rig.cameras)
    check_budget("Step", poses * rig.pixels, limits.max_pixels_per_call, "max_pixels_per_call", "pixels",
                 f"{poses} pose(s) x {len(rig)} rig cameras ({sizes}): send fewer poses or cameras per call or smaller "
                 "images")


def step_rig(request: pb.StepRequest, default: Intrinsics, generator: Generator, limits: ServerLimits) -> Rig:
    """The cameras of a StepRequest: its ``rig`` (``codecs.rig_from_proto``; ``intrinsics`` must then be unset), or
    one camera at the pose with the request's intrinsics (``request_intrinsics``)."""
    if not request.HasField("rig"):
        return single_rig(request_intrinsics(request.intrinsics, request.HasField("intrinsics"), default, generator))
    if request.HasField("intrinsics"):
        raise InvalidInputError("a step with a rig takes each camera's intrinsics from rig.cameras[i].intrinsics: "
                                "leave StepRequest.intrinsics unset")
    cls = type(generator)
    return codecs.rig_from_proto(request.rig, default, max_cameras=limits.max_rig_cameras, max_width=cls.max_width,
                                 max_height=cls.max_height)


@functools.lru_cache(maxsize=64)
def single_rig(intrinsics: Intrinsics) -> Rig:
    """``Rig.single(intrinsics)``, built once per intrinsics and shared (a ``Rig`` is immutable): building one checks
    its identity mount, ~0.05 ms of every step."""
    return Rig.single(intrinsics)


def request_intrinsics(message: pb.Intrinsics, has: bool, default: Intrinsics, generator: Generator) -> Intrinsics:
    """The request's intrinsics if set (checked against the largest image), else the world's default."""
    if not has:
        return default
    intrinsics = wire.decode_intrinsics(message)
    codecs.check_size(intrinsics.width, intrinsics.height, type(generator).max_width, type(generator).max_height,
                      "the requested image size")
    return intrinsics


def checkpoint_to_proto(info: CheckpointInfo) -> pb.CheckpointInfo:
    """A ``CheckpointInfo`` -> its message."""
    return pb.CheckpointInfo(checkpoint_id=info.checkpoint_id, version=info.version, frame_count=info.frame_count,
                             created_unix_s=info.created_unix_s)


def replayed_response(stored: codecs.EncodedStepResponse | pb.StepResponse, request_index: int) -> pb.StepResponse:
    """A kept step answer (as sent, or a message read back from a save) sent again: the same frame, flagged
    ``replayed``, indexed for the request it answers now."""
    response = pb.StepResponse.FromString(stored.SerializeToString())
    response.request_index = request_index
    response.replayed = True
    return response


# ------------------------------------------------------------------------------------------------ servicer

Handler = Callable[..., Awaitable]


def _end_with(context: grpc.aio.ServicerContext, error: Exception) -> None:
    """Make ``error``'s status (``errors.status_for``) the call's, for the handler to return on: no exception leaves
    the handler. ``context.abort`` raises one that grpc keeps on the call, and its traceback holds the handler's frames
    in reference cycles, with the error it answers, that only the cyclic garbage collector frees: about 80 objects per
    refused call at 64 soak clients, whose collections then held the GIL for 10-200 ms at a time."""
    code, details = status_for(error)
    context.set_code(code)
    context.set_details(details)


def _answers_errors(method: Handler) -> Handler:
    """Turn any exception of a unary handler into its status (``errors.status_for``); the server keeps serving."""

    @functools.wraps(method)
    async def wrapper(self: WorldServicer, request, context: grpc.aio.ServicerContext):
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - each error type gets its own status in status_for
            _end_with(context, error)

    return wrapper


def _streams_errors(method: Callable[..., AsyncIterator]) -> Callable[..., AsyncIterator]:
    """Turn any exception of a server-streaming handler into its status, as ``_answers_errors`` does."""

    @functools.wraps(method)
    async def wrapper(self: WorldServicer, request, context: grpc.aio.ServicerContext):
        try:
            async for response in method(self, request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - each error type gets its own status in status_for
            _end_with(context, error)

    return wrapper


class WorldServicer(pb_grpc.WorldServiceServicer):
    """Serves ``registry``'s worlds; ``info`` is the handshake answer, ``limits`` the request limits."""

    def __init__(self, registry: WorldRegistry, limits: ServerLimits, info: pb.GetServerInfoResponse) -> None:
        self.registry = registry
        self.limits = limits
        self.info = info
        self.watches = Watches(registry)
        """Who watches which world's steps (``WatchWorld``)."""

    async def GetServerInfo(self, request: pb.GetServerInfoRequest, context) -> pb.GetServerInfoResponse:
        return self.info

    # ------------------------------------------------------------------------------------------- lifecycle

    @_answers_errors
    async def CreateWorld(self, request: pb.CreateWorldRequest, context) -> pb.CreateWorldResponse:
        world_id = check_world_id(request.world_id) if request.world_id else self.registry.new_id()
        memory = memory_config_from_proto(request.config)
        generator = type(self.registry.generator)
        frames, _, prompt = await self.registry.offload(
            lambda: codecs.seed_from_proto(
                request.seed,
                max_frames=self.limits.max_seed_frames,
                max_width=generator.max_width,
                max_height=generator.max_height,
            )
        )
        summary = await self.registry.create(world_id, frames, prompt, memory,
                                             log=self.registry.recording.opener(request))
        return pb.CreateWorldResponse(world=summary_to_proto(summary))

    @_answers_errors
    async def GetWorld(self, request: pb.GetWorldRequest, context) -> pb.GetWorldResponse:
        return pb.GetWorldResponse(world=summary_to_proto(self.registry.summary(self.registry.entry(request.world_id))))

    @_answers_errors
    async def ListWorlds(self, request: pb.ListWorldsRequest, context) -> pb.ListWorldsResponse:
        return pb.ListWorldsResponse(worlds=[summary_to_proto(s) for s in self.registry.summaries()])

    @_answers_errors
    async def DeleteWorld(self, request: pb.DeleteWorldRequest, context) -> pb.DeleteWorldResponse:
        unloaded, deleted_saved = await self.registry.delete(request.world_id, delete_saved=request.delete_saved)
        return pb.DeleteWorldResponse(unloaded=unloaded, deleted_saved=deleted_saved)

    @_answers_errors
    async def SaveWorld(self, request: pb.SaveWorldRequest, context) -> pb.SaveWorldResponse:
        summary = await self.registry.save(self.registry.entry(request.world_id))
        return pb.SaveWorldResponse(world=summary_to_proto(summary))

    @_answers_errors
    async def LoadWorld(self, request: pb.LoadWorldRequest, context) -> pb.LoadWorldResponse:
        return pb.LoadWorldResponse(world=summary_to_proto(await self.registry.load(request.world_id)))

    # ------------------------------------------------------------------------------------------- rollouts

    @_answers_errors
    async def ForkWorld(self, request: pb.ForkWorldRequest, context) -> pb.ForkWorldResponse:
        entry = self.registry.entry(request.world_id)
        new_world_id = check_world_id(request.new_world_id) if request.new_world_id else ""
        summary = await self.registry.fork(entry, request.checkpoint_id, new_world_id)
        return pb.ForkWorldResponse(world=summary_to_proto(summary))

    @_answers_errors
    async def Checkpoint(self, request: pb.CheckpointRequest, context) -> pb.CheckpointResponse:
        entry = self.registry.entry(request.world_id)
        info = await self.registry.run(entry, lambda world: entry.recorder.record(world, request, world.checkpoint()))
        return pb.CheckpointResponse(checkpoint=checkpoint_to_proto(info))

    @_answers_errors
    async def RestoreWorld(self, request: pb.RestoreWorldRequest, context) -> pb.RestoreWorldResponse:
        entry = self.registry.entry(request.world_id)
        await self.registry.run(entry, lambda world: entry.recorder.record(world, request,
                                                                          world.restore(request.checkpoint_id)))
        return pb.RestoreWorldResponse(world=summary_to_proto(self.registry.summary(entry)))

    @_answers_errors
    async def ListCheckpoints(self, request: pb.ListCheckpointsRequest, context) -> pb.ListCheckpointsResponse:
        infos = await self.registry.run(self.registry.entry(request.world_id), lambda world: world.checkpoints.list())
        return pb.ListCheckpointsResponse(checkpoints=[checkpoint_to_proto(info) for info in infos])

    # ------------------------------------------------------------------------------------------- frames

    @_answers_errors
    async def Render(self, request: pb.RenderRequest, context) -> pb.RenderResponse:
        entry = self.registry.entry(request.world_id)
        poses = codecs.poses_from_proto(request.poses, self.limits.max_poses_per_call)
        fmt = codecs.frame_format_from_proto(request.format)
        intrinsics = request_intrinsics(
            request.intrinsics, request.HasField("intrinsics"), entry.world.intrinsics, self.registry.generator
        )
        check_message_size(len(poses), intrinsics, fmt, self.limits.max_message_bytes, "Render")
        check_pixels(len(poses), intrinsics, self.limits, "Render")

        def render(world) -> pb.RenderResponse:
            results = world.render(poses, intrinsics=intrinsics)
            labels = world.render_labels(poses, fmt.labels, intrinsics=intrinsics) if fmt.labels else [None] * len(poses)
            version = int(world.version)
            response = pb.RenderResponse()
            for pose, r, images in zip(poses, results, labels):
                codecs.frame_to_proto(fmt, response.frames.add(), rgb=r.rgb, depth_m=r.depth, pose=pose, version=version,
                                      coverage=r.coverage, coverage_mask=r.mask, labels=images)
            return response

        return await self.registry.run(entry, render)

    async def Step(self, request_iterator: AsyncIterator[pb.StepRequest], context) -> AsyncIterator[pb.StepResponse]:
        try:
            request_index = 0
            async for request in request_iterator:
                for response in await self._step(request, request_index):
                    yield response
                request_index += 1
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - each error type gets its own status in status_for
            _end_with(context, error)

    async def _step(
        self, request: pb.StepRequest, request_index: int
    ) -> list[codecs.EncodedStepResponse] | list[pb.StepResponse]:
        """Validate one StepRequest, step its world under the world's lock, and encode the frames there, on the
        engine thread, into their wire bytes (``codecs.encode_step_response``); a numbered step (session and
        sequence) runs once, and a repeat gets the kept frames (``sessions``), as messages."""
        numbered = check_session(request.session_id, request.sequence if request.HasField("sequence") else None)
        entry = self.registry.entry(request.world_id)
        poses = codecs.poses_from_proto(request.poses, self.limits.max_poses_per_call)
        fmt = codecs.frame_format_from_proto(request.format)
        rig = step_rig(request, entry.world.intrinsics, self.registry.generator, self.limits)
        for camera in rig.cameras:
            check_message_size(1, camera.intrinsics, fmt, self.limits.max_message_bytes, "Step")
        check_rig_pixels(len(poses), rig, self.limits)
        has_rig = request.HasField("rig")
        cameras = rig if has_rig else rig.cameras[0].intrinsics
        masks = codecs.dynamic_masks_from_proto(request.dynamic_masks, len(poses), cameras)
        boxes = [codecs.oriented_box_from_proto(b, f"dynamic_boxes[{i}]") for i, b in enumerate(request.dynamic_boxes)]
        box_labels = codecs.dynamic_box_labels_from_proto(request)
        prompt = request.prompt if request.HasField("prompt") else None
        seed = request.seed if request.HasField("seed") else None

        loop = asyncio.get_running_loop()

        def step(world) -> list[codecs.EncodedStepResponse]:
            watched = self.watches.watched(entry)
            anchors_before = world.memory.anchors.ids if watched else []
            result = world.step(
                poses, intrinsics=None if has_rig else rig.cameras[0].intrinsics, rig=rig if has_rig else None,
                dynamic_masks=masks, dynamic_boxes=boxes, dynamic_box_labels=box_labels, prompt=prompt, seed=seed,
                labels=fmt.labels,
            )
            entry.recorder.record(world, request, result)
            if watched:  # published from under the lock, so watchers see steps in the order they ran
                loop.call_soon_threadsafe(self.watches.publish, entry, step_events(
                    world, result, [c.intrinsics for c in rig.cameras], anchors_before))
            responses = []
            for i, f in enumerate(result.frames):  # pose-major: every camera of body pose 0, then of pose 1, ...
                response = pb.StepResponse(request_index=request_index, pose_index=i // len(rig),
                                           camera_index=f.camera_index, last_in_request=i == len(result.frames) - 1,
                                           timings_s=result.timings_s)
                responses.append(codecs.encode_step_response(
                    fmt, response, rgb=f.rgb, depth_m=f.depth, pose=f.pose, version=f.version, coverage=f.coverage,
                    frame_id=f.frame_id, labels=f.labels))
            return responses

        if numbered is None:
            return await self.registry.run(entry, step)
        responses, replayed = await exactly_once(entry.sessions, *numbered, lambda: self.registry.run(entry, step))
        return [replayed_response(r, request_index) for r in responses] if replayed else responses

    # ------------------------------------------------------------------------------------------- world state
    # Point cloud (``point_cloud``), spatial queries and edits (``world_state``): pure helpers and handlers there.

    @_streams_errors
    async def StreamPointCloud(self, request: pb.StreamPointCloudRequest, context) -> AsyncIterator[codecs.EncodedMessage]:
        async for chunk in point_cloud.stream_point_cloud(self.registry, request, self.limits.max_message_bytes):
            yield chunk

    @_streams_errors
    async def WatchWorld(self, request: pb.WatchWorldRequest, context) -> AsyncIterator[pb.WatchWorldResponse]:
        async for message in self.watches.watch(request):
            yield message

    @_streams_errors
    async def CropPointCloud(self, request: pb.CropPointCloudRequest, context) -> AsyncIterator[pb.CropPointCloudResponse]:
        for chunk in await point_cloud.crop_point_cloud(self.registry, request, self.limits.max_message_bytes):
            yield chunk

    @_answers_errors
    async def Raycast(self, request: pb.RaycastRequest, context) -> pb.RaycastResponse:
        return await world_state.raycast(self.registry, request, self.limits)

    @_answers_errors
    async def ScanLidar(self, request: pb.ScanLidarRequest, context) -> pb.ScanLidarResponse:
        return await world_state.scan_lidar(self.registry, request, self.limits)

    @_answers_errors
    async def NearestSurface(self, request: pb.NearestSurfaceRequest, context) -> pb.NearestSurfaceResponse:
        return await world_state.nearest_surface(self.registry, request, self.limits)

    @_answers_errors
    async def CheckCollision(self, request: pb.CheckCollisionRequest, context) -> pb.CheckCollisionResponse:
        return await world_state.check_collision(self.registry, request, self.limits)

    @_answers_errors
    async def QueryOccupancy(self, request: pb.QueryOccupancyRequest, context) -> pb.QueryOccupancyResponse:
        return await world_state.query_occupancy(self.registry, request, self.limits)

    @_answers_errors
    async def RemoveRegion(self, request: pb.RemoveRegionRequest, context) -> pb.RemoveRegionResponse:
        return await world_state.remove_region(self.registry, request)

    @_answers_errors
    async def RecolorRegion(self, request: pb.RecolorRegionRequest, context) -> pb.RecolorRegionResponse:
        return await world_state.recolor_region(self.registry, request)

    @_answers_errors
    async def InsertPoints(self, request: pb.InsertPointsRequest, context) -> pb.InsertPointsResponse:
        return await world_state.insert_points(self.registry, request, self.limits)

    @_answers_errors
    async def LabelRegion(self, request: pb.LabelRegionRequest, context) -> pb.LabelRegionResponse:
        return await world_state.label_region(self.registry, request)
