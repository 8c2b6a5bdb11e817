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
    decode_mask,
    encode_depth,
    encode_image,
    encode_mask,
    intrinsics_message,
    pose_matrix,
    pose_message,
)
from worldweave.proto.enums import RETRIEVAL_NAMES, depth_encoding, image_encoding
from worldweave.proto.errors import WireFormatError
from worldweave.proto.geometry import Intrinsics, quaternion_from_rotation
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
) -> pb.FrameFormat:
    """A ``FrameFormat``: RGB encoding, depth encoding (``None`` = no depth), JPEG quality 1..100, coverage mask."""
    if not 1 <= int(jpeg_quality) <= 100:
        raise WireFormatError(f"jpeg_quality must be in 1..100, got {jpeg_quality!r}")
    return pb.FrameFormat(
        image_encoding=image_encoding(image),
        jpeg_quality=int(jpeg_quality),
        depth_encoding=depth_encoding(depth),
        include_coverage_mask=bool(coverage_mask),
    )



# ------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class Frame:
    """A frame the server sent, decoded.

    ``rgb`` uint8 (H, W, 3). ``depth`` float32 (H, W) metres (0 = unknown), or None when not asked for.
    ``pose`` the 4x4 camera-to-world matrix actually used. ``version`` memory version. ``coverage`` fraction in
    [0, 1] of pixels memory covered before generation. ``frame_id`` the world's id of a generated frame (None for
    renders). ``coverage_mask`` bool (H, W) or None. For step frames: ``request_index`` (which request on the stream),
    ``pose_index`` (which pose in it), ``timings_s`` (seconds per world-step stage, "total" included).
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


def decode_frame(message: pb.Frame, name: str = "frame") -> Frame:
    """``Frame`` -> ``Frame`` record with numpy arrays."""
    return Frame(
        rgb=decode_image(message.rgb, f"{name} rgb"),
        depth=decode_depth(message.depth, f"{name} depth") if message.HasField("depth") else None,
        pose=pose_matrix(message.pose, f"{name} pose"),
        version=int(message.version),
        coverage=float(message.coverage),
        frame_id=int(message.frame_id) if message.HasField("frame_id") else None,
        coverage_mask=decode_mask(message.coverage_mask, f"{name} mask") if message.HasField("coverage_mask") else None,
    )


def decode_step_response(message: pb.StepResponse) -> Frame:
    """``StepResponse`` -> ``Frame`` record with its request and pose index and the step's timings."""
    name = f"step frame (request {message.request_index}, pose {message.pose_index})"
    return replace(
        decode_frame(message.frame, name),
        request_index=int(message.request_index),
        pose_index=int(message.pose_index),
        timings_s=dict(message.timings_s),
    )


def seed_message(
    frames: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    intrinsics: Intrinsics | pb.Intrinsics,
    prompt: str = "",
    *,
    image: ImageEncoding | int = pb.IMAGE_ENCODING_PNG,
    depth: DepthEncoding | int = pb.DEPTH_ENCODING_UINT16_MM,
) -> pb.Seed:
    """A ``Seed`` from ``(rgb uint8 (H, W, 3), depth float (H, W) metres, c2w 4x4)`` triples and intrinsics.

    Defaults are lossless for RGB (PNG) and millimetre-exact depth (uint16 mm, up to 65.535 m).
    """
    if len(frames) == 0:
        raise WireFormatError("a seed needs at least one (rgb, depth, c2w) frame")
    out = pb.Seed(intrinsics=intrinsics_message(intrinsics), prompt=prompt)
    for i, triple in enumerate(frames):
        if len(triple) != 3:
            raise WireFormatError(f"seed frame {i} must be (rgb, depth, c2w), got {len(triple)} items")
        rgb, depth_m, c2w = triple
        frame = out.frames.add()  # filled in place: constructors merge big submessages slowly
        frame.rgb.CopyFrom(encode_image(rgb, image_encoding(image)))
        frame.depth.CopyFrom(encode_depth(depth_m, depth_encoding(depth)))
        frame.pose.CopyFrom(pose_message(c2w, f"seed frame {i} pose"))
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


def step_request(
    world_id: str,
    poses: np.ndarray,
    fmt: pb.FrameFormat,
    *,
    intrinsics: Intrinsics | pb.Intrinsics | None = None,
    dynamic_masks: Sequence[np.ndarray | None] | None = None,
    dynamic_boxes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] = (),
    prompt: str | None = None,
    seed: int | None = None,
) -> pb.StepRequest:
    """A ``StepRequest``: poses, optional intrinsics, per-pose dynamic masks (bool (H, W) or None), dynamic boxes
    ``(center_m (3,), half_extents_m (3,), rotation 3x3 box-to-world)``, prompt, seed."""
    request = pb.StepRequest(world_id=world_id, poses=pose_messages(poses), format=fmt)
    if intrinsics is not None:
        request.intrinsics.CopyFrom(intrinsics_message(intrinsics))
    if dynamic_masks is not None:
        if len(dynamic_masks) != len(request.poses):
            raise WireFormatError(f"{len(dynamic_masks)} dynamic masks for {len(request.poses)} poses; give one per pose")
        for i, mask in enumerate(dynamic_masks):
            if mask is not None:
                request.dynamic_masks.add(pose_index=i).mask.CopyFrom(encode_mask(mask))
    for i, box in enumerate(dynamic_boxes):
        request.dynamic_boxes.append(oriented_box_message(*box, name=f"dynamic_boxes[{i}]"))
    if prompt is not None:
        request.prompt = prompt
    if seed is not None:
        request.seed = seed
    return request
