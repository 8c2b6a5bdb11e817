"""A world's steps as the viewer sees them: the ``WatchWorld`` stream, decoded into ``StepEvent`` records.

The SDK's call-by-name entry (``client.call``) reads a stream to its end and a watch never ends, so this module calls
``WatchWorld`` through the generated stub, on a channel of its own built from the client's options (address, TLS,
token), and maps failures to the SDK's ``WorldweaveError`` subclasses (a deleted world: ``NotFoundError``).

Frames: poses are 4x4 float64 camera-to-world (OpenCV camera, world Z up, metres); intrinsics in pixels.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np

from worldweave.proto.auth import call_metadata
from worldweave.proto.codecs import decode_image, decode_intrinsics, pose_matrix
from worldweave.proto.geometry import Intrinsics
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.sim_clients.aio_client import AsyncWorldClient
from worldweave.sim_clients.client import rpc_error


@dataclass(frozen=True)
class AnchorView:
    """An anchor of the watched world: ``anchor_id``, the ``frame_id`` it was made from, its 4x4 camera-to-world
    ``c2w`` and its ``intrinsics``."""

    anchor_id: int
    frame_id: int
    c2w: np.ndarray
    intrinsics: Intrinsics


@dataclass(frozen=True)
class StepEvent:
    """One message of a watch. ``version``: the world's memory version after the frame (first message: when the
    watch began). ``dropped``: messages lost just before this one (the viewer read too slowly). ``frame_id``,
    ``c2w`` (4x4), ``intrinsics``, ``coverage`` (fraction in [0, 1]) and ``timings_s`` (seconds per stage, "total"
    the whole step) describe the generated frame; None / empty in the first message. ``thumbnail`` and
    ``memory_thumbnail``: uint8 (h, w, 3) of the frame and of the memory render it was conditioned on, when asked
    for. ``anchors``: every anchor when ``anchors_complete``, else the anchors made from this frame."""

    version: int
    dropped: int
    frame_id: int | None
    c2w: np.ndarray | None
    intrinsics: Intrinsics | None
    coverage: float
    timings_s: dict[str, float]
    thumbnail: np.ndarray | None
    memory_thumbnail: np.ndarray | None
    anchors: tuple[AnchorView, ...]
    anchors_complete: bool


def decode_event(message: pb.WatchWorldResponse) -> StepEvent:
    """A ``WatchWorldResponse`` -> ``StepEvent`` (thumbnails decoded from JPEG)."""
    frame = message.frame if message.HasField("frame") else None
    anchors = tuple(
        AnchorView(a.anchor_id, a.frame_id, pose_matrix(a.pose, f"anchors[{i}].pose"),
                   decode_intrinsics(a.intrinsics, f"anchors[{i}].intrinsics"))
        for i, a in enumerate(message.anchors)
    )
    return StepEvent(
        version=message.version, dropped=message.dropped,
        frame_id=frame.frame_id if frame else None,
        c2w=pose_matrix(frame.pose, "frame.pose") if frame else None,
        intrinsics=decode_intrinsics(frame.intrinsics, "frame.intrinsics") if frame else None,
        coverage=frame.coverage if frame else 0.0,
        timings_s=dict(message.timings_s),
        thumbnail=decode_image(frame.thumbnail, "frame.thumbnail") if frame and frame.HasField("thumbnail") else None,
        memory_thumbnail=(decode_image(frame.memory_thumbnail, "frame.memory_thumbnail")
                          if frame and frame.HasField("memory_thumbnail") else None),
        anchors=anchors, anchors_complete=message.anchors_complete,
    )


async def watch_world(
    client: AsyncWorldClient, world_id: str, *, thumbnail_max_width: int = 0, include_anchors: bool = False
) -> AsyncIterator[StepEvent]:
    """The events of ``world_id``'s steps, whoever makes them, until the caller stops iterating (which cancels the
    call) or the world is deleted (``NotFoundError``). ``thumbnail_max_width``: pixels, 0 for none."""
    channel = client.options.channel(client.target, grpc.aio)
    request = pb.WatchWorldRequest(world_id=world_id, thumbnail_max_width=thumbnail_max_width,
                                   include_anchors=include_anchors)
    call = pb_grpc.WorldServiceStub(channel).WatchWorld(request, metadata=call_metadata(client.options.token))
    try:
        async for message in call:
            yield decode_event(message)
    except grpc.RpcError as error:
        raise rpc_error(error, client.target, "WatchWorld", None) from None
    finally:
        call.cancel()
        await channel.close()
