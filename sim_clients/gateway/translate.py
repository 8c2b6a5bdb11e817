"""Pure translation between the gateway's engine-side records and the SDK's canonical values (no network).

Requests: engine poses -> canonical 4x4 camera-to-world stacks (via the connection's :class:`Convention`), wire
images -> numpy. Replies: SDK ``Frame`` records (canonical pose, numpy RGB / depth) -> :class:`WireFrame` with
the pose in the engine's convention and the image in the encoding the engine asked for. Frames are fetched from the
server as raw RGB8 and encoded here once, so a JPEG is compressed once, not twice.

World state: engine points, lengths, quaternions and regions -> canonical metres (``Convention.points_to_canonical``
and ``directions_to_canonical``, lengths times ``metres_per_unit``), and answers back into engine axes and units.
Every convention's world axes are a signed permutation of the canonical ones (``world_to_canonical`` has one +-1
per row; a test checks it), so an engine axis-aligned box is a canonical axis-aligned box.
"""

from __future__ import annotations

import numpy as np

from worldweave.proto import codecs
from worldweave.proto.errors import InvalidPoseError, WireFormatError
from worldweave.proto.geometry import rotations_from_quaternions
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.sim_clients import conversions
from worldweave.sim_clients import world_state as ws
from worldweave.sim_clients.conventions import Convention, ConventionError, EnginePose
from worldweave.sim_clients.gateway.errors import InvalidMessageError
from worldweave.sim_clients.gateway.messages import (
    CollisionReply,
    DepthEncoding,
    ImageEncoding,
    NearestReply,
    PointCloudChunk,
    RaycastReply,
    WireDepth,
    WireFrame,
    WireImage,
    WireRegion,
)

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
        return codecs.decode_image(message, path)
    except WireFormatError as error:
        raise InvalidMessageError(str(error)) from None


def depth_array(depth: WireDepth, path: str) -> np.ndarray:
    """A wire depth map -> float32 (H, W) metres."""
    message = pb.DepthImage(width=depth.width, height=depth.height, encoding=DEPTH_ENCODING_PROTO[depth.encoding], data=depth.data)
    try:
        return codecs.decode_depth(message, path)
    except WireFormatError as error:
        raise InvalidMessageError(str(error)) from None


def wire_frame(
    frame: conversions.Frame, convention: Convention, image_encoding: ImageEncoding, depth_encoding: DepthEncoding | None
) -> WireFrame:
    """An SDK frame (canonical pose, numpy images) -> a wire frame in the engine's convention and encodings."""
    height, width = frame.rgb.shape[:2]
    if image_encoding == "raw_rgb8":
        rgb = WireImage(width, height, "raw_rgb8", np.ascontiguousarray(frame.rgb).tobytes())
    else:
        encoded = codecs.encode_image(frame.rgb, IMAGE_ENCODING_PROTO[image_encoding])
        rgb = WireImage(width, height, image_encoding, encoded.data)
    depth = None
    if depth_encoding is not None and frame.depth is not None:
        encoded_depth = codecs.encode_depth(frame.depth, DEPTH_ENCODING_PROTO[depth_encoding])
        depth = WireDepth(width, height, depth_encoding, encoded_depth.data)
    return WireFrame(convention.from_canonical(frame.pose), frame.version, frame.coverage, rgb, depth, frame.frame_id)


# ---------------------------------------------------------------------------------------------------------------
# World state


def engine_points(points_m: np.ndarray, convention: Convention) -> np.ndarray:
    """Canonical points (N, 3) metres -> float32 engine points (engine axes and units)."""
    return convention.points_from_canonical(points_m).astype(np.float32)


def engine_lengths(lengths_m: np.ndarray, convention: Convention) -> np.ndarray:
    """Metres -> float32 engine units (infinities stay infinite)."""
    return (np.asarray(lengths_m, dtype=np.float64) / convention.metres_per_unit).astype(np.float32)


def canonical_rotations(quaternions: np.ndarray, convention: Convention, path: str) -> np.ndarray:
    """Box-to-engine-world rotations as (N, 4) quaternions -> (N, 3, 3) box-to-canonical-world rotations.

    A box ``c + R_e l`` (``|l| <= h``) in engine axes is ``W c + (W R_e D) l'`` in canonical axes with ``l' = D l``
    and ``D = diag(det W, 1, 1)``: flipping a box axis leaves the box unchanged and makes the rotation proper.
    """
    try:
        engine = rotations_from_quaternions(quaternions, path)
    except InvalidPoseError as error:
        raise InvalidMessageError(str(error)) from None
    flip = np.diag([np.sign(np.linalg.det(convention.world_to_canonical)), 1.0, 1.0])
    return convention.world_to_canonical @ engine @ flip


def canonical_box(
    min_engine: np.ndarray, max_engine: np.ndarray, convention: Convention, path: str
) -> tuple[np.ndarray, np.ndarray]:
    """An engine axis-aligned box -> the same box's canonical corners (min, max), metres. A ``min`` above ``max`` on
    some engine axis is refused (``path`` names it), as the server refuses it: the corners are never swapped."""
    if np.any(min_engine > max_engine):
        raise InvalidMessageError(f"{path}: min {min_engine.tolist()} exceeds max {max_engine.tolist()} on some axis")
    corners = convention.points_to_canonical(np.stack([min_engine, max_engine]))
    return corners.min(axis=0), corners.max(axis=0)


def canonical_region(region: WireRegion, convention: Convention, path: str) -> pb.Region:
    """An engine region -> a canonical ``Region`` message (metres)."""
    if region.shape == "box":
        return ws.box_region(*canonical_box(region.first, region.second, convention, f"{path}.box"))
    center = convention.points_to_canonical(region.first[None])[0]
    if region.shape == "sphere":
        return ws.sphere_region(center, region.radius * convention.metres_per_unit)
    q = region.rotation
    rotation = canonical_rotations(np.array([[q.qw, q.qx, q.qy, q.qz]]), convention, f"{path}.oriented_box.rotation")[0]
    return ws.oriented_box_region(center, region.second * convention.metres_per_unit, rotation)


def wire_chunk(chunk: ws.PointCloudChunk, convention: Convention) -> PointCloudChunk:
    """An SDK point-cloud chunk (with positions) -> the engine's chunk (positions and voxel size in engine units)."""
    if chunk.kind == "removed":
        positions, colors, flags = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.uint8)
    else:
        positions, colors, flags = engine_points(chunk.positions_m, convention), chunk.colors, chunk.flags
    return PointCloudChunk(chunk.since_version, chunk.version, chunk.is_snapshot, chunk.kind, chunk.keys, positions,
                           colors, flags, chunk.voxel_size_m / convention.metres_per_unit, chunk.last_in_version)


# The conversions are linear: the server's 0 stand-ins for "no point" stay 0 in engine axes.


def raycast_reply(result: ws.RaycastResult, convention: Convention) -> RaycastReply:
    return RaycastReply(result.version, result.hit.astype(np.uint8), engine_lengths(result.distance_m, convention),
                        engine_points(result.points_m, convention), result.colors, result.unknown.astype(np.uint8))


def nearest_reply(result: ws.NearestSurfaceResult, convention: Convention) -> NearestReply:
    return NearestReply(result.version, result.found.astype(np.uint8), engine_lengths(result.distance_m, convention),
                        engine_points(result.points_m, convention))


def collision_reply(result: ws.CollisionResult, convention: Convention) -> CollisionReply:
    return CollisionReply(result.version, result.hit.astype(np.uint8), engine_lengths(result.clearance_m, convention),
                          engine_points(result.contact_points_m, convention))
