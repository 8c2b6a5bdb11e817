"""The byte codecs of the wire formats: images, depth, masks, packed arrays, poses and intrinsics <-> numpy.

Pure functions, no network: the client SDK, the server and the gateway all encode and decode through them.
Conventions: a pose is a 4x4 float64 **camera-to-world** matrix (OpenCV camera: x right, y down, z forward; world
Z up; metres). Images are uint8 (H, W, 3) RGB. Depth is float32 (H, W) metres along the optical axis, 0 = unknown.
Every function raises ``WireFormatError`` naming the bad value.

Part of the wire layer: imports numpy, protobuf and Pillow (PNG / JPEG) only.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage

from worldweave.proto.enums import (
    DEPTH_ENCODING_NAMES,
    IMAGE_ENCODING_NAMES,
    depth_encoding,
    image_encoding,
)
from worldweave.proto.errors import (
    InvalidInputError,
    InvalidIntrinsicsError,
    WireFormatError,
)
from worldweave.proto.geometry import Intrinsics, Quaternion, rotation_from_quaternion
from worldweave.proto.worldweave.v1 import world_pb2 as pb

DEFAULT_JPEG_QUALITY = 90
"""JPEG quality used when a FrameFormat leaves ``jpeg_quality`` at 0."""
MAX_UINT16_MM = 65535
"""Largest depth a uint16-millimetre map holds (65.535 m); farther depth saturates here."""
MAX_FLOAT16 = 65504.0
"""Largest finite float16; farther depth saturates here instead of becoming infinite."""


# ------------------------------------------------------------------------------------------------ images


def _check_size(width: int, height: int, name: str) -> None:
    if width <= 0 or height <= 0:
        raise WireFormatError(f"{name} must have a positive size, got {width}x{height}")


def encode_image(rgb: np.ndarray, encoding: int = pb.IMAGE_ENCODING_RAW_RGB8, *, jpeg_quality: int = 0) -> pb.Image:
    """uint8 (H, W, 3) RGB -> ``Image`` in ``encoding`` (``jpeg_quality`` 0 means the default, 90)."""
    image, data = encode_image_parts(rgb, encoding, jpeg_quality=jpeg_quality)
    image.data = bytes(data)
    return image


def encode_image_parts(
    rgb: np.ndarray, encoding: int = pb.IMAGE_ENCODING_RAW_RGB8, *, jpeg_quality: int = 0
) -> tuple[pb.Image, bytes | np.ndarray]:
    """``encode_image`` in two parts, for ``splice.serialize_with_bytes``: the ``Image`` with ``data`` left empty,
    and its data: for RAW_RGB8 the pixels themselves, a C-contiguous uint8 (H, W, 3) array (``rgb`` itself when it
    is one: no copy; do not write into it until the data is sent), for PNG and JPEG the compressed bytes."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise WireFormatError(f"an RGB image must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    _check_size(width, height, "an RGB image")
    encoding = image_encoding(encoding)
    if encoding == pb.IMAGE_ENCODING_RAW_RGB8:
        data = np.ascontiguousarray(rgb)
    else:
        buffer = io.BytesIO()
        picture = PILImage.fromarray(np.ascontiguousarray(rgb), mode="RGB")
        if encoding == pb.IMAGE_ENCODING_PNG:
            picture.save(buffer, format="PNG", compress_level=1)
        else:
            picture.save(buffer, format="JPEG", quality=jpeg_quality or DEFAULT_JPEG_QUALITY)
        data = buffer.getvalue()
    return pb.Image(width=width, height=height, encoding=encoding), data


def decode_image(message: pb.Image, name: str = "image") -> np.ndarray:
    """``Image`` -> uint8 (H, W, 3) RGB; the decoded size must equal the stated ``width`` x ``height``.

    A PNG or JPEG is checked before any pixel is decompressed: its stated size against Pillow's decompression-bomb
    limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89,478,485 pixels unless the application changed it), then the size in
    its header against the stated one. A header claiming over twice the limit stops Pillow itself
    (``DecompressionBombError``): a ``WireFormatError`` as well. A header in Pillow's warning range (once to twice
    the limit) cannot match an accepted stated size, so it is refused too (Pillow may print its
    ``DecompressionBombWarning`` first).

    A raw image comes back as a read-only view over the bytes read from the message (one copy: each read of a
    ``bytes`` field copies it out of the message, so every decoder here reads ``data`` once); copy it to write into it.
    """
    width, height = int(message.width), int(message.height)
    _check_size(width, height, name)
    data = message.data
    if message.encoding == pb.IMAGE_ENCODING_RAW_RGB8:
        expected = width * height * 3
        if len(data) != expected:
            raise WireFormatError(
                f"{name}: raw RGB8 {width}x{height} needs {expected} bytes, got {len(data)}"
            )
        return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
    if message.encoding not in (pb.IMAGE_ENCODING_PNG, pb.IMAGE_ENCODING_JPEG):
        raise WireFormatError(f"{name}: unknown image encoding {message.encoding}; use RAW_RGB8, PNG or JPEG")
    kind = IMAGE_ENCODING_NAMES[message.encoding].upper()
    limit = PILImage.MAX_IMAGE_PIXELS  # Pillow's decompression-bomb threshold (None: switched off by the application)
    if limit is not None and width * height > limit:
        raise WireFormatError(
            f"{name}: a {kind} of {width}x{height} = {width * height} pixels is over the {limit}-pixel decoding limit"
        )
    try:
        picture = PILImage.open(io.BytesIO(data), formats=[kind])
    except (OSError, ValueError) as error:  # Pillow's UnidentifiedImageError is an OSError
        raise WireFormatError(f"{name}: data is not a readable {kind} image ({error})") from error
    except PILImage.DecompressionBombError as error:  # a header claiming over twice the limit, whatever was declared
        raise WireFormatError(f"{name}: the {kind} header claims a size over the decoding limit ({error})") from error
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
    data = message.data
    if len(data) != expected:
        raise WireFormatError(f"{name}: {width}x{height} 16-bit depth needs {expected} bytes, got {len(data)}")
    if message.encoding == pb.DEPTH_ENCODING_FLOAT16_M:
        values = np.frombuffer(data, dtype="<f2").astype(np.float32)
    else:
        values = np.frombuffer(data, dtype="<u2").astype(np.float32) / np.float32(1000.0)
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
    packed = message.packed_bits
    if len(packed) != expected:
        raise WireFormatError(f"{name}: {width}x{height} bits need {expected} bytes, got {len(packed)}")
    bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=width * height)
    return bits.astype(bool).reshape(height, width)


LABEL_WIRE_DTYPES = {"semantic": "<u2", "instance": "<u4"}
"""Wire dtype of each label image: semantic classes little-endian uint16, instance ids little-endian uint32."""


def encode_labels(labels: np.ndarray, kind: str) -> pb.LabelImage:
    """Integer (H, W) labels (0 = unlabelled) -> ``LabelImage`` of ``kind`` (``"semantic"``: uint16, ``"instance"``:
    uint32); values outside that type are an error."""
    labels = np.asarray(labels)
    dtype = np.dtype(LABEL_WIRE_DTYPES[kind])
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise WireFormatError(f"a {kind} image must be integer (H, W), got {labels.dtype} {labels.shape}")
    height, width = labels.shape
    _check_size(width, height, f"a {kind} image")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > np.iinfo(dtype).max):
        raise WireFormatError(f"{kind} labels must lie in 0..{np.iinfo(dtype).max}, got {labels.min()}..{labels.max()}")
    return pb.LabelImage(width=width, height=height, data=labels.astype(dtype).tobytes())


def decode_labels(message: pb.LabelImage, kind: str, name: str | None = None) -> np.ndarray:
    """``LabelImage`` of ``kind`` -> (H, W) uint16 (semantic) or uint32 (instance) labels."""
    name = name or kind
    width, height = int(message.width), int(message.height)
    _check_size(width, height, name)
    dtype = np.dtype(LABEL_WIRE_DTYPES[kind])
    expected = width * height * dtype.itemsize
    data = message.data
    if len(data) != expected:
        raise WireFormatError(f"{name}: {width}x{height} {dtype.name} labels need {expected} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("=")).reshape(height, width)


def encode_normals(normals: np.ndarray) -> pb.NormalImage:
    """float (H, W, 3) unit normals (0 = unknown) -> ``NormalImage`` (float32, the layout of a packed (N, 3) array,
    so the gateway converts it like any direction)."""
    normals = np.asarray(normals)
    if normals.ndim != 3 or normals.shape[2] != 3 or not np.issubdtype(normals.dtype, np.floating):
        raise WireFormatError(f"a normal image must be float (H, W, 3), got {normals.dtype} {normals.shape}")
    height, width = normals.shape[:2]
    _check_size(width, height, "a normal image")
    if not np.all(np.abs(normals) <= 1.0 + 1e-3):
        raise WireFormatError("normals must be unit vectors or (0, 0, 0) (components in [-1, 1])")
    return pb.NormalImage(width=width, height=height, data=normals.astype(FLOAT32).tobytes())


def decode_normals(message: pb.NormalImage, name: str = "normals") -> np.ndarray:
    """``NormalImage`` -> float32 (H, W, 3) normals."""
    width, height = int(message.width), int(message.height)
    _check_size(width, height, name)
    expected = width * height * 12
    data = message.data
    if len(data) != expected:
        raise WireFormatError(f"{name}: {width}x{height} float32 normals need {expected} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=FLOAT32).astype(np.float32).reshape(height, width, 3)


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
    return packed_array(values, dtype, columns, name).tobytes()


def packed_array(values, dtype: str, columns: int | None, name: str) -> np.ndarray:
    """``pack_array`` without the copy to ``bytes``: a C-contiguous array of ``dtype`` whose buffer is the field's
    bytes (``values`` themselves when they already are so), for a writer that copies it once into a message's
    serialization (``proto.splice.serialize_with_fields``)."""
    array = np.asarray(values)
    expected = "(N,)" if columns is None else f"(N, {columns})"
    if (columns is None and array.ndim != 1) or (columns is not None and (array.ndim != 2 or array.shape[1] != columns)):
        raise WireFormatError(f"{name} must have shape {expected}, got {array.shape}")
    if np.dtype(dtype).kind in "iu" and array.dtype.kind == "f":
        raise WireFormatError(f"{name} must hold integers ({np.dtype(dtype).name}), got {array.dtype}")
    return np.ascontiguousarray(array, dtype=dtype)


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
        except InvalidInputError as error:
            raise WireFormatError(f"{name}: {error}") from error
        matrix = np.eye(4)
        matrix[:3, :3] = rotation
        p = message.position_quaternion.position
        matrix[:3, 3] = (p.x, p.y, p.z)
        return matrix
    raise WireFormatError(f"{name} is empty: set position_quaternion or matrix")


# ------------------------------------------------------------------------------------------------ intrinsics

def intrinsics_message(intrinsics: Intrinsics | pb.Intrinsics) -> pb.Intrinsics:
    """An ``Intrinsics`` message (pixels) from an ``Intrinsics`` (or a message, returned as is)."""
    if isinstance(intrinsics, pb.Intrinsics):
        return intrinsics
    if not isinstance(intrinsics, Intrinsics):
        raise WireFormatError(f"intrinsics must be an Intrinsics, got {type(intrinsics).__name__}")
    return pb.Intrinsics(
        fx=intrinsics.fx, fy=intrinsics.fy, cx=intrinsics.cx, cy=intrinsics.cy,
        width=intrinsics.width, height=intrinsics.height,
    )


def decode_intrinsics(message: pb.Intrinsics, name: str = "intrinsics") -> Intrinsics:
    """``Intrinsics`` message -> ``Intrinsics`` (validated: finite, positive focal lengths and size); raises
    ``InvalidIntrinsicsError`` naming ``name``."""
    try:
        return Intrinsics(message.fx, message.fy, message.cx, message.cy, int(message.width), int(message.height))
    except InvalidIntrinsicsError as error:
        raise InvalidIntrinsicsError(f"{name}: {error}") from error
