"""The SDK's requests and records: request messages built from numpy, and decoded frames.

Built on the wire layer's codecs (``worldweave.proto.codecs``), knowing only the proto and numpy. Conventions: a
pose is a 4x4 float64 **camera-to-world** matrix (OpenCV camera: x right, y down, z forward; world Z up; metres).
Images are uint8 (H, W, 3) RGB. Depth is float32 (H, W) metres along the optical axis, 0 = unknown. Every function
raises ``WireFormatError`` naming the bad value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from worldweave.proto.codecs import (
    DEFAULT_JPEG_QUALITY,
    decode_depth,
    decode_image,
    decode_labels,
    decode_mask,
    decode_normals,
    encode_depth,
    encode_image,
    encode_labels,
    encode_mask,
    intrinsics_message,
    pose_matrix,
    pose_message,
)
from worldweave.proto.enums import RETRIEVAL_NAMES, depth_encoding, image_encoding
from worldweave.proto.errors import WireFormatError
from worldweave.proto.geometry import Intrinsics, quaternion_from_rotation
from worldweave.proto.rig import Rig
from worldweave.proto.splice import SplitMessage, split_parser
from worldweave.proto.worldweave.v1 import world_pb2 as pb

ImageEncoding = Literal["raw", "png", "jpeg"]
"""How frames' RGB travels: raw RGB8, PNG (lossless) or JPEG (``jpeg_quality``); ``proto.enums.IMAGE_ENCODING_NAMES``."""
DepthEncoding = Literal["float16_m", "uint16_mm"]
"""How depth travels: float16 metres, or uint16 millimetres (exact to 1 mm, up to 65.535 m)."""
Retrieval = Literal["coverage", "iou", "recent", "random", "global"]
"""How a step picks the memories it conditions on: anchors covering the views (greedy set cover), top-K by IoU, the
most recent, random, or the whole voxel map (``global``); ``proto.enums.RETRIEVAL_NAMES``."""


def frame_format(
    image: ImageEncoding | int = pb.IMAGE_ENCODING_RAW_RGB8,
    depth: DepthEncoding | int | None = None,
    *,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    coverage_mask: bool = False,
    semantic: bool = False,
    instance: bool = False,
    normals: bool = False,
) -> pb.FrameFormat:
    """A ``FrameFormat``: RGB encoding, depth encoding (``None`` = no depth), JPEG quality 1..100, coverage mask, and
    whether to add semantic, instance and normal images rendered from memory."""
    if not 1 <= int(jpeg_quality) <= 100:
        raise WireFormatError(f"jpeg_quality must be in 1..100, got {jpeg_quality!r}")
    return pb.FrameFormat(
        image_encoding=image_encoding(image),
        jpeg_quality=int(jpeg_quality),
        depth_encoding=depth_encoding(depth),
        include_coverage_mask=bool(coverage_mask),
        include_semantic=bool(semantic),
        include_instance=bool(instance),
        include_normals=bool(normals),
    )



# ------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class Frame:
    """A frame the server sent, decoded.

    ``rgb`` uint8 (H, W, 3). ``depth`` float32 (H, W) metres (0 = unknown), or None when not asked for.
    ``pose`` the 4x4 camera-to-world matrix actually used. ``version`` memory version. ``coverage`` fraction in
    [0, 1] of pixels memory covered before generation. ``frame_id`` the world's id of a generated frame (None for
    renders). ``coverage_mask`` bool (H, W) or None. For step frames: ``request_index`` (which request on the stream),
    ``pose_index`` (which pose in it; with a rig, which body pose), ``camera_index`` (with a rig, which camera of it;
    else 0), ``timings_s`` (seconds per world-step stage, "total" included). When the format asked for them:
    ``semantic`` uint16 (H, W) class and ``instance`` uint32 (H, W) instance id of the memory seen at each pixel (0 =
    unlabelled or uncovered), ``normals`` float32 (H, W, 3) unit surface normals in the world frame (0 = unknown).
    """

    rgb: np.ndarray
    depth: np.ndarray | None
    pose: np.ndarray
    version: int
    coverage: float
    frame_id: int | None = None
    coverage_mask: np.ndarray | None = None
    request_index: int | None = None
    pose_index: int | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    camera_index: int | None = None
    semantic: np.ndarray | None = None
    instance: np.ndarray | None = None
    normals: np.ndarray | None = None


STEP_RGB_PATH = ("frame", "rgb", "data")
"""Where a ``StepResponse`` holds its frame's image bytes: left in the received buffer (``parse_step_response``)."""

parse_step_response = split_parser(pb.StepResponse, STEP_RGB_PATH)
"""The clients' Step response deserializer: wire bytes -> ``SplitMessage`` of a ``StepResponse`` whose image bytes
(``.data``) view the received buffer, so that a raw frame's pixels are never copied on the client (``proto.splice``)."""


@dataclass(frozen=True)
class _ImageFields:
    """An ``Image``'s fields, ``data`` a view of the received bytes: what ``decode_image`` reads of the message."""

    width: int
    height: int
    encoding: int
    data: memoryview


def decode_frame(message: pb.Frame, name: str = "frame", rgb_data: memoryview | None = None) -> Frame:
    """``Frame`` -> ``Frame`` record with numpy arrays. ``rgb_data``: the image's bytes, when they were kept out of
    ``message`` (``parse_step_response``); a raw image is then a read-only view of them, as of ``message.rgb.data``."""
    image = message.rgb if rgb_data is None else _ImageFields(
        message.rgb.width, message.rgb.height, message.rgb.encoding, rgb_data)
    return Frame(
        rgb=decode_image(image, f"{name} rgb"),
        depth=decode_depth(message.depth, f"{name} depth") if message.HasField("depth") else None,
        pose=pose_matrix(message.pose, f"{name} pose"),
        version=int(message.version),
        coverage=float(message.coverage),
        frame_id=int(message.frame_id) if message.HasField("frame_id") else None,
        coverage_mask=decode_mask(message.coverage_mask, f"{name} mask") if message.HasField("coverage_mask") else None,
        semantic=decode_labels(message.semantic, "semantic", f"{name} semantic") if message.HasField("semantic") else None,
        instance=decode_labels(message.instance, "instance", f"{name} instance") if message.HasField("instance") else None,
        normals=decode_normals(message.normals, f"{name} normals") if message.HasField("normals") else None,
    )


def decode_step_response(message: pb.StepResponse | SplitMessage[pb.StepResponse]) -> Frame:
    """``StepResponse`` (or one from ``parse_step_response``) -> ``Frame`` record with its request and pose index and
    the step's timings."""
    rgb_data = None
    if isinstance(message, SplitMessage):
        message, rgb_data = message.message, message.data
    name = f"step frame (request {message.request_index}, pose {message.pose_index}, camera {message.camera_index})"
    return replace(
        decode_frame(message.frame, name, rgb_data),
        request_index=int(message.request_index),
        pose_index=int(message.pose_index),
        timings_s=dict(message.timings_s),
        camera_index=int(message.camera_index),
    )


def seed_message(
    frames: Sequence[tuple[np.ndarray, ...]],
    intrinsics: Intrinsics | pb.Intrinsics,
    prompt: str = "",
    *,
    image: ImageEncoding | int = pb.IMAGE_ENCODING_PNG,
    depth: DepthEncoding | int = pb.DEPTH_ENCODING_UINT16_MM,
) -> pb.Seed:
    """A ``Seed`` from ``(rgb uint8 (H, W, 3), depth float (H, W) metres, c2w 4x4)`` triples and intrinsics; a frame
    may add label images, ``(rgb, depth, c2w, semantic, instance)`` with integer (H, W) semantic classes (0..65535)
    and instance ids (0..2**32-1), 0 = unlabelled, either one None.

    Defaults are lossless for RGB (PNG) and millimetre-exact depth (uint16 mm, up to 65.535 m).
    """
    if len(frames) == 0:
        raise WireFormatError("a seed needs at least one (rgb, depth, c2w) frame")
    out = pb.Seed(intrinsics=intrinsics_message(intrinsics), prompt=prompt)
    for i, triple in enumerate(frames):
        if len(triple) not in (3, 5):
            raise WireFormatError(
                f"seed frame {i} must be (rgb, depth, c2w) or (rgb, depth, c2w, semantic, instance), got {len(triple)} items"
            )
        rgb, depth_m, c2w = triple[:3]
        frame = out.frames.add()  # filled in place: constructors merge big submessages slowly
        frame.rgb.CopyFrom(encode_image(rgb, image_encoding(image)))
        frame.depth.CopyFrom(encode_depth(depth_m, depth_encoding(depth)))
        frame.pose.CopyFrom(pose_message(c2w, f"seed frame {i} pose"))
        for kind, labels in zip(("semantic", "instance"), triple[3:]):
            if labels is not None:
                getattr(frame, kind).CopyFrom(encode_labels(labels, kind))
    return out


# ------------------------------------------------------------------------------------------------ requests


def pose_messages(poses: np.ndarray, name: str = "poses") -> list[pb.Pose]:
    """A 4x4 camera-to-world matrix or an (N, 4, 4) stack -> N ``Pose`` messages (matrix form)."""
    stack = np.asarray(poses, dtype=np.float64)
    if stack.shape == (4, 4):
        stack = stack[None]
    if stack.ndim != 3 or stack.shape[1:] != (4, 4):
        raise WireFormatError(f"{name} must be a 4x4 matrix or an (N, 4, 4) stack, got shape {stack.shape}")
    return [pose_message(matrix, f"{name}[{i}]") for i, matrix in enumerate(stack)]


def vec3_message(values: np.ndarray, name: str) -> pb.Vec3:
    """Three numbers (metres) -> ``Vec3``."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.shape != (3,):
        raise WireFormatError(f"{name} must have 3 values, got {array.size}")
    return pb.Vec3(x=array[0], y=array[1], z=array[2])


def label_ids(semantic_class: int, instance_id: int) -> tuple[int, int]:
    """Check a semantic class (0..65535) and an instance id (0..2**32-1); 0 means none. Ids are the caller's own."""
    if not 0 <= int(semantic_class) <= 0xFFFF:
        raise WireFormatError(f"semantic_class must be in 0..65535 (uint16, 0 = unlabelled), got {semantic_class!r}")
    if not 0 <= int(instance_id) <= 0xFFFFFFFF:
        raise WireFormatError(f"instance_id must be in 0..4294967295 (uint32, 0 = none), got {instance_id!r}")
    return int(semantic_class), int(instance_id)


def oriented_box_message(
    center_m: np.ndarray, half_extents_m: np.ndarray, rotation: np.ndarray, *, name: str = "box"
) -> pb.OrientedBox:
    """An ``OrientedBox``: centre and half extents (metres), 3x3 box-to-world rotation (sent as a quaternion)."""
    rotation = np.asarray(rotation, dtype=np.float64)
    if rotation.shape != (3, 3):
        raise WireFormatError(f"{name} rotation must be 3x3, got shape {rotation.shape}")
    q = quaternion_from_rotation(rotation)
    return pb.OrientedBox(
        center_m=vec3_message(center_m, f"{name} centre"),
        half_extents_m=vec3_message(half_extents_m, f"{name} half extents"),
        rotation=pb.Quaternion(qw=q.qw, qx=q.qx, qy=q.qy, qz=q.qz),
    )


def world_config(
    *,
    voxel_size_m: float | None = None,
    retrieval: Retrieval | None = None,
    max_anchors: int | None = None,
    seed: int | None = None,
) -> pb.WorldConfig:
    """A ``WorldConfig``; None leaves a field unset (the server's default)."""
    config = pb.WorldConfig()
    if voxel_size_m is not None:
        config.voxel_size_m = voxel_size_m
    if retrieval is not None:
        codes = {name: code for code, name in RETRIEVAL_NAMES.items()}
        if retrieval not in codes:
            raise WireFormatError(f"unknown retrieval {retrieval!r}; use one of {sorted(codes)}")
        config.retrieval = codes[retrieval]
    if max_anchors is not None:
        config.max_anchors = max_anchors
    if seed is not None:
        config.seed = seed
    return config


def render_request(
    world_id: str,
    poses: np.ndarray,
    fmt: pb.FrameFormat,
    intrinsics: Intrinsics | pb.Intrinsics | None = None,
) -> pb.RenderRequest:
    """A ``RenderRequest`` for one pose or a stack of poses (intrinsics None: the world's default)."""
    request = pb.RenderRequest(world_id=world_id, poses=pose_messages(poses), format=fmt)
    if intrinsics is not None:
        request.intrinsics.CopyFrom(intrinsics_message(intrinsics))
    return request


def rig_message(rig: Rig) -> pb.Rig:
    """A ``Rig`` message: each camera's intrinsics and its mount ``T_body_cam`` (matrix form, exact)."""
    if not isinstance(rig, Rig):
        raise WireFormatError(f"rig must be a Rig (worldweave.proto.rig), got {type(rig).__name__}")
    return pb.Rig(cameras=[
        pb.RigCamera(intrinsics=intrinsics_message(camera.intrinsics),
                     mount=pose_message(camera.mount.matrix, f"rig camera {i} mount"))
        for i, camera in enumerate(rig.cameras)
    ])


def step_request(
    world_id: str,
    poses: np.ndarray,
    fmt: pb.FrameFormat,
    *,
    intrinsics: Intrinsics | pb.Intrinsics | None = None,
    rig: Rig | None = None,
    dynamic_masks: Sequence[np.ndarray | Sequence[np.ndarray | None] | None] | None = None,
    dynamic_boxes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] = (),
    dynamic_box_labels: Sequence[tuple[int, int]] | None = None,
    prompt: str | None = None,
    seed: int | None = None,
) -> pb.StepRequest:
    """A ``StepRequest``: poses, optional intrinsics, per-pose dynamic masks (bool (H, W) or None), dynamic boxes
    ``(center_m (3,), half_extents_m (3,), rotation 3x3 box-to-world)``, dynamic box labels (None, or one
    ``(semantic_class, instance_id)`` per box, 0: none), prompt, seed. With a ``rig``, ``poses`` are body poses,
    ``intrinsics`` must be None, and each pose's dynamic masks are None or one mask (or None) per camera.
    """
    request = pb.StepRequest(world_id=world_id, poses=pose_messages(poses), format=fmt)
    if intrinsics is not None:
        if rig is not None:
            raise WireFormatError("a rig step takes each camera's intrinsics from the rig: leave intrinsics None")
        request.intrinsics.CopyFrom(intrinsics_message(intrinsics))
    if rig is not None:
        request.rig.CopyFrom(rig_message(rig))
    if dynamic_masks is not None:
        if len(dynamic_masks) != len(request.poses):
            raise WireFormatError(f"{len(dynamic_masks)} dynamic masks for {len(request.poses)} poses; give one per pose")
        for i, masks in enumerate(dynamic_masks):
            per_camera = [masks] if rig is None else [None] * len(rig) if masks is None else list(masks)
            if len(per_camera) != (1 if rig is None else len(rig)):
                raise WireFormatError(f"pose {i} has {len(per_camera)} dynamic masks for a rig of {len(rig)} cameras")
            for c, mask in enumerate(per_camera):
                if mask is not None:
                    request.dynamic_masks.add(pose_index=i, camera_index=c).mask.CopyFrom(encode_mask(mask))
    for i, box in enumerate(dynamic_boxes):
        request.dynamic_boxes.append(oriented_box_message(*box, name=f"dynamic_boxes[{i}]"))
    if dynamic_box_labels is not None:
        if len(dynamic_box_labels) != len(dynamic_boxes):
            raise WireFormatError(
                f"{len(dynamic_box_labels)} dynamic box labels for {len(dynamic_boxes)} dynamic boxes; give one per box"
            )
        for i, pair in enumerate(dynamic_box_labels):
            try:
                semantic_class, instance_id = label_ids(*pair)
            except WireFormatError as error:
                raise WireFormatError(f"dynamic box {i}: {error}") from error
            request.dynamic_box_semantic_classes.append(semantic_class)
            request.dynamic_box_instance_ids.append(instance_id)
    if prompt is not None:
        request.prompt = prompt
    if seed is not None:
        request.seed = seed
    return request
