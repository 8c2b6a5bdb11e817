"""A Step answer encoded on the engine thread (``codecs.encode_step_response``, ``proto.splice``) is byte for byte the
message ``frame_to_proto`` builds and protobuf serializes, in every frame format; the splice refuses what it cannot
write exactly; decoders read a frame's bytes once. A point-cloud chunk's arrays spliced field by field are its
serialization too."""

from __future__ import annotations

import numpy as np
import pytest

from worldweave.bridge.memory.labels import LabelImages, LabelRequest
from worldweave.proto import codecs as wire
from worldweave.proto.geometry import Pose, Quaternion
from worldweave.proto.splice import read_varint, serialize_with_bytes, serialize_with_fields, varint
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server import codecs

RNG = np.random.default_rng(24)


def frame_arrays(height: int, width: int) -> dict:
    return {
        "rgb": RNG.integers(0, 256, size=(height, width, 3), dtype=np.uint8),
        "depth_m": (RNG.random((height, width)) * 7).astype(np.float32),
        "pose": Pose.from_position_quaternion(RNG.normal(size=3), Quaternion(*RNG.normal(size=4))),
        "version": int(RNG.integers(1, 1 << 40)),
        "coverage": float(RNG.random()),
    }


def header(**fields) -> pb.StepResponse:
    return pb.StepResponse(timings_s={"total": 0.25, "generate": 0.125, "integrate": 1e-3}, **fields)


@pytest.mark.parametrize("image_encoding", [pb.IMAGE_ENCODING_RAW_RGB8, pb.IMAGE_ENCODING_PNG, pb.IMAGE_ENCODING_JPEG])
@pytest.mark.parametrize("depth_encoding", [None, pb.DEPTH_ENCODING_FLOAT16_M, pb.DEPTH_ENCODING_UINT16_MM])
@pytest.mark.parametrize("labelled", [False, True])
def test_an_encoded_step_answer_is_the_serialized_message(image_encoding, depth_encoding, labelled):
    height, width = 30, 41
    arrays = frame_arrays(height, width)
    labels = LabelImages(RNG.integers(0, 1 << 16, (height, width)).astype(np.uint16),
                         RNG.integers(0, 1 << 32, (height, width)).astype(np.uint32)) if labelled else None
    fmt = codecs.FrameFormat(image_encoding, 77, depth_encoding, False, LabelRequest(labelled, labelled, False))
    indices = {"request_index": 9, "pose_index": 2, "camera_index": 1, "last_in_request": True}
    for frame_id in (None, 0, 1 << 35):
        expected = header(**indices)
        codecs.frame_to_proto(fmt, expected.frame, frame_id=frame_id, labels=labels, **arrays)
        encoded = codecs.encode_step_response(fmt, header(**indices), frame_id=frame_id, labels=labels, **arrays)
        assert encoded.data == expected.SerializeToString(deterministic=True)
        assert encoded.SerializeToString() is encoded.data and encoded.ByteSize() == expected.ByteSize()
        assert encoded.last_in_request and encoded.timings_s == dict(expected.timings_s)


@pytest.mark.parametrize("side", [1, 5, 37, 74, 75, 2400])
def test_splicing_rewrites_every_length_prefix_whatever_its_width(side):
    """Frame sizes whose image, frame and message lengths cross a varint width (127, 16383, 2097151 bytes)."""
    fmt = codecs.FrameFormat(pb.IMAGE_ENCODING_RAW_RGB8, 90, None, False)
    arrays = frame_arrays(side, side if side < 2400 else 300)
    expected = header(request_index=1)
    codecs.frame_to_proto(fmt, expected.frame, frame_id=3, **arrays)
    encoded = codecs.encode_step_response(fmt, header(request_index=1), frame_id=3, **arrays)
    assert encoded.data == expected.SerializeToString(deterministic=True)
    parsed = pb.StepResponse.FromString(encoded.data)
    np.testing.assert_array_equal(wire.decode_image(parsed.frame.rgb), arrays["rgb"])


def test_a_non_contiguous_frame_is_sent_as_its_pixels():
    fmt = codecs.FrameFormat(pb.IMAGE_ENCODING_RAW_RGB8, 90, None, False)
    arrays = frame_arrays(20, 30)
    arrays["rgb"] = arrays["rgb"][:, ::-1]  # a view with a negative stride
    expected = header()
    codecs.frame_to_proto(fmt, expected.frame, **arrays)
    assert codecs.encode_step_response(fmt, header(), **arrays).data == expected.SerializeToString(deterministic=True)


def test_splicing_one_level_and_an_empty_payload():
    image = pb.Image(width=4, height=1, encoding=pb.IMAGE_ENCODING_RAW_RGB8)
    payload = bytes(range(12))
    assert serialize_with_bytes(image, ("data",), memoryview(payload)) == pb.Image(
        width=4, height=1, encoding=pb.IMAGE_ENCODING_RAW_RGB8, data=payload).SerializeToString()
    assert serialize_with_bytes(image, ("data",), b"") == image.SerializeToString()


def test_splicing_refuses_what_it_cannot_write_exactly():
    response = pb.StepResponse(request_index=1)
    with pytest.raises(ValueError, match="frame is not set"):
        serialize_with_bytes(response, ("frame", "rgb", "data"), b"abc")
    response.frame.rgb.width = 1
    response.frame.rgb.data = b"xyz"
    with pytest.raises(ValueError, match="is not empty"):
        serialize_with_bytes(response, ("frame", "rgb", "data"), b"abc")
    with pytest.raises(ValueError, match="last-numbered bytes field"):  # RaycastRequest has fields after origins_m
        serialize_with_bytes(pb.RaycastRequest(world_id="w"), ("origins_m",), b"\x00" * 12)
    with pytest.raises(ValueError, match="last-numbered bytes field"):  # not a bytes field
        serialize_with_bytes(pb.StepResponse(frame=pb.Frame(version=1)), ("frame", "version"), b"\x01")


@pytest.mark.parametrize("rows", [0, 1, 300, 70_000])
@pytest.mark.parametrize("with_positions", [False, True])
@pytest.mark.parametrize("last", [False, True])
def test_a_chunk_spliced_field_by_field_is_the_serialized_message(rows, with_positions, last):
    """A point-cloud chunk's arrays written among its numbers in field order (``serialize_with_fields``), whatever
    their lengths' widths and whichever fields are empty, equal protobuf's serialization with them set."""
    rng = np.random.default_rng(rows)
    arrays = {"keys": rng.integers(0, 1 << 62, size=rows),
              "colors": rng.integers(0, 256, size=(rows, 3), dtype=np.uint8), "flags": np.zeros(rows, np.uint8),
              "confidence": rng.uniform(0, 1, rows).astype(np.float32)}
    if with_positions:
        arrays["positions_m"] = rng.normal(size=(rows, 3)).astype(np.float32)
    numbers = dict(since_version=3, version=2**40, is_snapshot=True, kind=pb.CHANGE_KIND_ADDED, count=rows,
                   voxel_size_m=0.02, last_in_version=last, min_confidence=0.25)
    expected = pb.StreamPointCloudResponse(**numbers, **{name: array.tobytes() for name, array in arrays.items()})
    got = serialize_with_fields(pb.StreamPointCloudResponse(**numbers), arrays)
    assert got == expected.SerializeToString(deterministic=True)
    assert serialize_with_fields(pb.StreamPointCloudResponse(), {"keys": arrays["keys"][:1]}) == (
        pb.StreamPointCloudResponse(keys=arrays["keys"][:1].tobytes()).SerializeToString())


def test_splicing_fields_refuses_what_it_cannot_write_exactly():
    with pytest.raises(ValueError, match="keys is not an empty bytes field"):
        serialize_with_fields(pb.StreamPointCloudResponse(keys=b"\x01" * 8), {"keys": b"\x02" * 8})
    with pytest.raises(ValueError, match="count is not an empty bytes field"):
        serialize_with_fields(pb.StreamPointCloudResponse(), {"count": b"\x02"})


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, (1 << 35) + 5])
def test_varints_round_trip(value):
    encoded = varint(value)
    assert read_varint(encoded + b"\x00", 0) == (value, len(encoded))


def test_decoders_give_the_arrays_whatever_the_encoding():
    arrays = frame_arrays(6, 9)
    message = wire.encode_image(arrays["rgb"])
    decoded = wire.decode_image(message)
    np.testing.assert_array_equal(decoded, arrays["rgb"])
    assert not decoded.flags.writeable
    image, data = wire.encode_image_parts(arrays["rgb"])
    assert data is arrays["rgb"] and not image.data  # the pixels themselves, not a copy
    depth = wire.decode_depth(wire.encode_depth(arrays["depth_m"], pb.DEPTH_ENCODING_UINT16_MM))
    np.testing.assert_allclose(depth, np.round(arrays["depth_m"] * 1000) / 1000, atol=1e-6)
