"""Pure translation between the gateway's engine-side records and the SDK's canonical values (no network).

Requests: engine poses -> canonical 4x4 camera-to-world stacks (via the connection's :class:`Convention`), wire
images -> numpy. Replies: SDK ``Frame`` records (canonical pose, numpy RGB / depth) -> :class:`WireFrame` with
the pose in the engine's convention and the image in the encoding the engine asked for. Frames are fetched from the
server as raw RGB8 and encoded here once, so a JPEG is compressed once, not twice.
"""

from __future__ import annotations

import numpy as np

from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.sim_clients import conversions
from worldweave.sim_clients.conventions import Convention, ConventionError, EnginePose
from worldweave.sim_clients.gateway.errors import InvalidMessageError
from worldweave.sim_clients.gateway.messages import DepthEncoding, ImageEncoding, WireDepth, WireFrame, WireImage

IMAGE_ENCODING_PROTO = {"raw_rgb8": pb.IMAGE_ENCODING_RAW_RGB8, "png": pb.IMAGE_ENCODING_PNG, "jpeg": pb.IMAGE_ENCODING_JPEG}
DEPTH_ENCODING_PROTO = {"float16_m": pb.DEPTH_ENCODING_FLOAT16_M, "uint16_mm": pb.DEPTH_ENCODING_UINT16_MM}


def canonical_poses(poses: tuple[EnginePose, ...], convention: Convention, path: str) -> np.ndarray:
    """Engine poses -> (N, 4, 4) float64 canonical camera-to-world; a bad pose is named ``path[i]``."""
    out = np.empty((len(poses), 4, 4))
    for i, pose in enumerate(poses):
        try:
            out[i] = convention.to_canonical(pose)
        except ConventionError as error:
            raise InvalidMessageError(f"{path}[{i}]: {error}") from None
    return out


def image_array(image: WireImage, path: str) -> np.ndarray:
    """A wire RGB image (raw, PNG or JPEG) -> uint8 (H, W, 3); a bad one is named ``path``."""
    message = pb.Image(width=image.width, height=image.height, encoding=IMAGE_ENCODING_PROTO[image.encoding], data=image.data)
    try:
        return conversions.decode_image(message, path)
    except conversions.WireFormatError as error:
        raise InvalidMessageError(str(error)) from None


def depth_array(depth: WireDepth, path: str) -> np.ndarray:
    """A wire depth map -> float32 (H, W) metres."""
    message = pb.DepthImage(width=depth.width, height=depth.height, encoding=DEPTH_ENCODING_PROTO[depth.encoding], data=depth.data)
    try:
        return conversions.decode_depth(message, path)
    except conversions.WireFormatError as error:
        raise InvalidMessageError(str(error)) from None


def wire_frame(
    frame: conversions.Frame, convention: Convention, image_encoding: ImageEncoding, depth_encoding: DepthEncoding | None
) -> WireFrame:
    """An SDK frame (canonical pose, numpy images) -> a wire frame in the engine's convention and encodings."""
    height, width = frame.rgb.shape[:2]
    if image_encoding == "raw_rgb8":
        rgb = WireImage(width, height, "raw_rgb8", np.ascontiguousarray(frame.rgb).tobytes())
    else:
        encoded = conversions.encode_image(frame.rgb, IMAGE_ENCODING_PROTO[image_encoding])
        rgb = WireImage(width, height, image_encoding, encoded.data)
    depth = None
    if depth_encoding is not None and frame.depth is not None:
        encoded_depth = conversions.encode_depth(frame.depth, DEPTH_ENCODING_PROTO[depth_encoding])
        depth = WireDepth(width, height, depth_encoding, encoded_depth.data)
    return WireFrame(convention.from_canonical(frame.pose), frame.version, frame.coverage, rgb, depth, frame.frame_id)
