"""Pure conversions between the wire messages of ``world.proto`` and numpy: no network, no engine.

This is the one codec of the wire formats (images, depth, masks, poses, intrinsics): the client uses it directly
and the server's ``worldweave.server.codecs`` builds the engine's types on top of it. It knows only the proto and
numpy (and Pillow for PNG / JPEG), never ``worldweave.bridge``.

Conventions (DESIGN §4): a pose is a 4x4 float64 **camera-to-world** matrix (OpenCV camera: x right, y down,
z forward; world Z up; metres). Images are uint8 (H, W, 3) RGB. Depth is float32 (H, W) metres along the optical
axis, 0 = unknown. Every function raises ``WireFormatError`` naming the bad value.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image as PILImage

from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.sim_clients.conventions import (
    CameraIntrinsics,
    ConventionError,
    Quaternion,
    quaternion_from_rotation,
    rotation_from_quaternion,
)

DEFAULT_JPEG_QUALITY = 90
"""JPEG quality used when a FrameFormat leaves ``jpeg_quality`` at 0."""
MAX_UINT16_MM = 65535
"""Largest depth a uint16-millimetre map holds (65.535 m); farther depth saturates here."""
MAX_FLOAT16 = 65504.0
"""Largest finite float16; farther depth saturates here instead of becoming infinite."""
IMAGE_ENCODING_NAMES = {
    pb.IMAGE_ENCODING_RAW_RGB8: "raw",
    pb.IMAGE_ENCODING_PNG: "png",
    pb.IMAGE_ENCODING_JPEG: "jpeg",
}
"""Wire image encodings and the short names the client and CLI accept."""
DEPTH_ENCODING_NAMES = {
    pb.DEPTH_ENCODING_FLOAT16_M: "float16_m",
    pb.DEPTH_ENCODING_UINT16_MM: "uint16_mm",
}
"""Wire depth encodings and the short names the client accepts."""
RETRIEVAL_NAMES = {
    pb.RETRIEVAL_COVERAGE: "coverage",
    pb.RETRIEVAL_IOU: "iou",
    pb.RETRIEVAL_RECENT: "recent",
    pb.RETRIEVAL_RANDOM: "random",
    pb.RETRIEVAL_GLOBAL: "global",
}
"""Wire retrieval modes and their names (the engine's ``MemoryConfig.retrieval`` values)."""


class WireFormatError(ValueError):
    """A message or array does not follow the wire format (size, dtype, encoding, pose form)."""


# ------------------------------------------------------------------------------------------------ enums


def image_encoding(value: int | str) -> int:
    """An ``ImageEncoding`` from its wire value or short name (``"raw"``, ``"png"``, ``"jpeg"``)."""
    if isinstance(value, str):
        for code, name in IMAGE_ENCODING_NAMES.items():
            if value.lower() == name:
                return code
        raise WireFormatError(f"unknown image encoding {value!r}; use one of {sorted(IMAGE_ENCODING_NAMES.values())}")
    if value not in IMAGE_ENCODING_NAMES:
        raise WireFormatError(f"unknown image encoding {value!r}; valid values are {sorted(IMAGE_ENCODING_NAMES)}")
    return int(value)


def depth_encoding(value: int | str | None) -> int:
    """A ``DepthEncoding`` from its wire value or short name; ``None`` means no depth (UNSPECIFIED)."""
    if value is None:
        return pb.DEPTH_ENCODING_UNSPECIFIED
    if isinstance(value, str):
        for code, name in DEPTH_ENCODING_NAMES.items():
            if value.lower() == name:
                return code
        raise WireFormatError(f"unknown depth encoding {value!r}; use one of {sorted(DEPTH_ENCODING_NAMES.values())}")
    if value not in DEPTH_ENCODING_NAMES and value != pb.DEPTH_ENCODING_UNSPECIFIED:
        raise WireFormatError(f"unknown depth encoding {value!r}; valid values are {sorted(DEPTH_ENCODING_NAMES)}")
    return int(value)


def frame_format(
    image: int | str = pb.IMAGE_ENCODING_RAW_RGB8,
    depth: int | str | None = None,
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


# ------------------------------------------------------------------------------------------------ images


def _check_size(width: int, height: int, name: str) -> None:
    if width <= 0 or height <= 0:
        raise WireFormatError(f"{name} must have a positive size, got {width}x{height}")


def encode_image(rgb: np.ndarray, encoding: int = pb.IMAGE_ENCODING_RAW_RGB8, *, jpeg_quality: int = 0) -> pb.Image:
    """uint8 (H, W, 3) RGB -> ``Image`` in ``encoding`` (``jpeg_quality`` 0 means the default, 90)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise WireFormatError(f"an RGB image must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    _check_size(width, height, "an RGB image")
    encoding = image_encoding(encoding)
    if encoding == pb.IMAGE_ENCODING_RAW_RGB8:
        data = np.ascontiguousarray(rgb).tobytes()
    else:
        buffer = io.BytesIO()
        picture = PILImage.fromarray(np.ascontiguousarray(rgb), mode="RGB")
        if encoding == pb.IMAGE_ENCODING_PNG:
            picture.save(buffer, format="PNG", compress_level=1)
        else:
            picture.save(buffer, format="JPEG", quality=jpeg_quality or DEFAULT_JPEG_QUALITY)
        data = buffer.getvalue()
    return pb.Image(width=width, height=height, encoding=encoding, data=data)


def decode_image(message: pb.Image, name: str = "image") -> np.ndarray:
    """``Image`` -> uint8 (H, W, 3) RGB; the decoded size must equal the stated ``width`` x ``height``.

    A raw image comes back as a read-only view over the message's bytes (no copy); copy it to write into it.
    """
    width, height = int(message.width), int(message.height)
    _check_size(width, height, name)
    if message.encoding == pb.IMAGE_ENCODING_RAW_RGB8:
        expected = width * height * 3
        if len(message.data) != expected:
            raise WireFormatError(
                f"{name}: raw RGB8 {width}x{height} needs {expected} bytes, got {len(message.data)}"
            )
        return np.frombuffer(message.data, dtype=np.uint8).reshape(height, width, 3)
    if message.encoding not in (pb.IMAGE_ENCODING_PNG, pb.IMAGE_ENCODING_JPEG):
        raise WireFormatError(f"{name}: unknown image encoding {message.encoding}; use RAW_RGB8, PNG or JPEG")
    kind = IMAGE_ENCODING_NAMES[message.encoding].upper()
    try:
        picture = PILImage.open(io.BytesIO(message.data), formats=[kind])
    except (OSError, ValueError) as error:  # Pillow's UnidentifiedImageError is an OSError
        raise WireFormatError(f"{name}: data is not a readable {kind} image ({error})") from error
    if picture.size != (width, height):  # checked before decoding pixels: no decompression bombs
        raise WireFormatError(f"{name}: the {kind} is {picture.size[0]}x{picture.size[1]}, the message says {width}x{height}")
    if picture.mode != "RGB":
        raise WireFormatError(f"{name}: the {kind} has mode {picture.mode!r}; send 8-bit RGB")
    try:
        return np.asarray(picture)
    except (OSError, ValueError) as error:
        raise WireFormatError(f"{name}: the {kind} data is truncated or corrupt ({error})") from error


def encode_depth(depth_m: np.ndarray, encoding: int) -> pb.DepthImage:
    """float (H, W) metres (0 = unknown) -> ``DepthImage``; values past the encoding's range saturate."""
    depth_m = np.asarray(depth_m)
    if depth_m.ndim != 2 or not np.issubdtype(depth_m.dtype, np.floating):
        raise WireFormatError(f"a depth map must be float (H, W) metres, got {depth_m.dtype} {depth_m.shape}")
    height, width = depth_m.shape
    _check_size(width, height, "a depth map")
    bad = ~np.isfinite(depth_m) | (depth_m < 0)
    if bad.any():
        v, u = np.argwhere(bad)[0]
        raise WireFormatError(f"depth has an invalid value {float(depth_m[v, u])} at pixel (u={u}, v={v}); use 0 for unknown")
    encoding = depth_encoding(encoding)
    if encoding == pb.DEPTH_ENCODING_FLOAT16_M:
        data = np.minimum(depth_m, MAX_FLOAT16).astype("<f2").tobytes()
    elif encoding == pb.DEPTH_ENCODING_UINT16_MM:
        data = np.clip(np.rint(depth_m * 1000.0), 0, MAX_UINT16_MM).astype("<u2").tobytes()
    else:
        raise WireFormatError("a depth map needs an encoding: FLOAT16_M or UINT16_MM")
    return pb.DepthImage(width=width, height=height, encoding=encoding, data=data)


def decode_depth(message: pb.DepthImage, name: str = "depth") -> np.ndarray:
    """``DepthImage`` -> float32 (H, W) metres (values are not validated here: NaN or negative pass through)."""
    width, height = int(message.width), int(message.height)
    _check_size(width, height, name)
    expected = width * height * 2
    if message.encoding not in DEPTH_ENCODING_NAMES:
        raise WireFormatError(f"{name}: unknown depth encoding {message.encoding}; use FLOAT16_M or UINT16_MM")
    if len(message.data) != expected:
        raise WireFormatError(f"{name}: {width}x{height} 16-bit depth needs {expected} bytes, got {len(message.data)}")
    if message.encoding == pb.DEPTH_ENCODING_FLOAT16_M:
        values = np.frombuffer(message.data, dtype="<f2").astype(np.float32)
    else:
        values = np.frombuffer(message.data, dtype="<u2").astype(np.float32) / np.float32(1000.0)
    return values.reshape(height, width)


def encode_mask(mask: np.ndarray) -> pb.Mask:
    """bool (H, W) -> ``Mask`` with bits packed row-major, most significant bit first."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.bool_:
        raise WireFormatError(f"a mask must be bool (H, W), got {mask.dtype} {mask.shape}")
    height, width = mask.shape
    _check_size(width, height, "a mask")
    return pb.Mask(width=width, height=height, packed_bits=np.packbits(mask, axis=None).tobytes())


def decode_mask(message: pb.Mask, name: str = "mask") -> np.ndarray:
    """``Mask`` -> bool (H, W)."""
    width, height = int(message.width), int(message.height)
    _check_size(width, height, name)
    expected = (width * height + 7) // 8
    if len(message.packed_bits) != expected:
        raise WireFormatError(f"{name}: {width}x{height} bits need {expected} bytes, got {len(message.packed_bits)}")
    bits = np.unpackbits(np.frombuffer(message.packed_bits, dtype=np.uint8), count=width * height)
    return bits.astype(bool).reshape(height, width)


# ------------------------------------------------------------------------------------------------ packed arrays

FLOAT32 = "<f4"
"""Wire dtype of packed positions, directions, distances and radii: little-endian float32."""
INT64 = "<i8"
"""Wire dtype of packed voxel keys: little-endian int64."""
UINT8 = "|u1"
"""Wire dtype of packed colours, flags, booleans and enum codes."""


def pack_array(values, dtype: str, columns: int | None, name: str) -> bytes:
    """Numbers of shape (N, ``columns``) (or (N,) when ``columns`` is None) -> little-endian, C-order bytes of
    ``dtype`` (``FLOAT32``, ``INT64``, ``UINT8``): a packed array field of ``world.proto``."""
    array = np.asarray(values)
    expected = "(N,)" if columns is None else f"(N, {columns})"
    if (columns is None and array.ndim != 1) or (columns is not None and (array.ndim != 2 or array.shape[1] != columns)):
        raise WireFormatError(f"{name} must have shape {expected}, got {array.shape}")
    if np.dtype(dtype).kind in "iu" and array.dtype.kind == "f":
        raise WireFormatError(f"{name} must hold integers ({np.dtype(dtype).name}), got {array.dtype}")
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def unpack_array(data: bytes, dtype: str, columns: int | None, name: str) -> np.ndarray:
    """A packed array field -> read-only numpy array of shape (N, ``columns``) (or (N,)) viewing ``data``; raises
    ``WireFormatError`` naming the field when its length is not a whole number of rows."""
    row = np.dtype(dtype).itemsize * (columns or 1)
    if len(data) % row:
        shape = "(N,)" if columns is None else f"(N, {columns})"
        raise WireFormatError(
            f"{name} has {len(data)} bytes, not a whole number of {np.dtype(dtype).name} {shape} rows of {row} bytes"
        )
    array = np.frombuffer(data, dtype=dtype)
    return array if columns is None else array.reshape(-1, columns)


VOXEL_KEY_AXIS_BITS = 21
"""Bits per axis in a packed voxel key (``StreamPointCloudResponse.keys``)."""
_VOXEL_KEY_OFFSET = 1 << (VOXEL_KEY_AXIS_BITS - 1)
_VOXEL_KEY_MASK = (1 << VOXEL_KEY_AXIS_BITS) - 1


def voxel_indices(keys: np.ndarray) -> np.ndarray:
    """Packed int64 voxel keys -> (N, 3) int64 voxel indices ``(i, j, k)``.

    A key packs ``(i + 2**20) << 42 | (j + 2**20) << 21 | (k + 2**20)``; voxel ``(i, j, k)`` holds the world points
    with ``i = floor(x / voxel_size_m)`` (likewise y, z).
    """
    keys = np.asarray(keys, dtype=np.int64)
    shifts = np.array([2 * VOXEL_KEY_AXIS_BITS, VOXEL_KEY_AXIS_BITS, 0], dtype=np.int64)
    return ((keys[:, None] >> shifts) & _VOXEL_KEY_MASK) - _VOXEL_KEY_OFFSET


def voxel_centers(keys: np.ndarray, voxel_size_m: float) -> np.ndarray:
    """Packed int64 voxel keys -> (N, 3) float32 voxel centres, world metres: ``(index + 0.5) * voxel_size_m``,
    computed in float64 (bit-identical to the server's positions)."""
    return ((voxel_indices(keys).astype(np.float64) + 0.5) * float(voxel_size_m)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ poses


def pose_message(c2w: np.ndarray, name: str = "pose") -> pb.Pose:
    """4x4 camera-to-world matrix -> ``Pose`` in matrix form (exact; the server checks it is rigid)."""
    matrix = np.asarray(c2w, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise WireFormatError(f"{name} must be a 4x4 camera-to-world matrix, got shape {matrix.shape}")
    return pb.Pose(matrix=pb.Matrix4x4(values=matrix.reshape(-1).tolist()))


def pose_matrix(message: pb.Pose, name: str = "pose") -> np.ndarray:
    """``Pose`` (either form) -> 4x4 float64 camera-to-world matrix."""
    form = message.WhichOneof("form")
    if form == "matrix":
        values = np.asarray(message.matrix.values, dtype=np.float64)
        if values.shape != (16,):
            raise WireFormatError(f"{name}: a matrix pose needs 16 values (4x4 row-major), got {values.size}")
        return values.reshape(4, 4)
    if form == "position_quaternion":
        q = message.position_quaternion.rotation
        try:
            rotation = rotation_from_quaternion(Quaternion(q.qw, q.qx, q.qy, q.qz))
        except ConventionError as error:
            raise WireFormatError(f"{name}: {error}") from error
        matrix = np.eye(4)
        matrix[:3, :3] = rotation
        p = message.position_quaternion.position
        matrix[:3, 3] = (p.x, p.y, p.z)
        return matrix
    raise WireFormatError(f"{name} is empty: set position_quaternion or matrix")


# ------------------------------------------------------------------------------------------------ intrinsics

def intrinsics_message(intrinsics: CameraIntrinsics | pb.Intrinsics) -> pb.Intrinsics:
    """An ``Intrinsics`` message (pixels) from the SDK's ``CameraIntrinsics`` (or a message, returned as is)."""
    if isinstance(intrinsics, pb.Intrinsics):
        return intrinsics
    if not isinstance(intrinsics, CameraIntrinsics):
        raise WireFormatError(f"intrinsics must be a CameraIntrinsics, got {type(intrinsics).__name__}")
    return pb.Intrinsics(
        fx=intrinsics.fx, fy=intrinsics.fy, cx=intrinsics.cx, cy=intrinsics.cy,
        width=intrinsics.width, height=intrinsics.height,
    )


def camera_intrinsics(message: pb.Intrinsics, name: str = "intrinsics") -> CameraIntrinsics:
    """``Intrinsics`` message -> ``CameraIntrinsics`` (validated: positive focal lengths and size)."""
    try:
        return CameraIntrinsics(message.fx, message.fy, message.cx, message.cy, message.width, message.height)
    except ConventionError as error:
        raise WireFormatError(f"{name}: {error}") from error


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
    intrinsics: CameraIntrinsics | pb.Intrinsics,
    prompt: str = "",
    *,
    image: int | str = pb.IMAGE_ENCODING_PNG,
    depth: int | str = pb.DEPTH_ENCODING_UINT16_MM,
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
    retrieval: str | None = None,
    max_anchors: int | None = None,
    seed: int | None = None,
) -> pb.WorldConfig:
    """A ``WorldConfig``; None leaves a field unset (the server's default). ``retrieval`` is a name of
    ``RETRIEVAL_NAMES``."""
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
    intrinsics: CameraIntrinsics | pb.Intrinsics | None = None,
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
    intrinsics: CameraIntrinsics | pb.Intrinsics | None = None,
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
