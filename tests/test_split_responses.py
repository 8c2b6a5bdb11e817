"""A Step answer received with its image bytes left in the received buffer (``proto.splice.split_bytes``,
``conversions.parse_step_response``): the same message and the same frame as parsing it whole, in every frame format,
with the pixels never copied; what cannot be split so is parsed whole; the client and the gateway give the same
answers as before (``call`` the plain messages, the gateway the same reply bytes)."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from worldweave.bridge.eval.wall import yaw_poses
from worldweave.proto import codecs as wire
from worldweave.proto.errors import WireFormatError
from worldweave.proto.geometry import Pose, Quaternion
from worldweave.proto.splice import SplitMessage, serialize_with_bytes, split_bytes
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server import codecs
from worldweave.sim_clients import conventions as cv
from worldweave.sim_clients import conversions
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.gateway import codec
from worldweave.sim_clients.gateway.messages import write_message
from worldweave.sim_clients.gateway.server import reply_body

RNG = np.random.default_rng(2424)
PATH = conversions.STEP_RGB_PATH


def encoded_step(height: int, width: int, image_encoding: int = pb.IMAGE_ENCODING_RAW_RGB8,
                 depth_encoding: int | None = None) -> tuple[bytes, np.ndarray]:
    """A StepResponse's wire bytes as the server sends them (``encode_step_response``), and its RGB."""
    rgb = RNG.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    fmt = codecs.FrameFormat(image_encoding, 90, depth_encoding, False)
    response = pb.StepResponse(request_index=7, pose_index=1, camera_index=2, last_in_request=True,
                               timings_s={"total": 0.25, "generate": 0.125})
    pose = Pose.from_position_quaternion(RNG.normal(size=3), Quaternion(*RNG.normal(size=4)))
    encoded = codecs.encode_step_response(fmt, response, rgb=rgb, depth_m=(RNG.random((height, width)) * 5).astype(
        np.float32), pose=pose, version=11, coverage=0.5, frame_id=3)
    return encoded.data, rgb


def assert_same_frame(got: conversions.Frame, expected: conversions.Frame) -> None:
    for name in ("rgb", "depth", "pose", "coverage_mask", "semantic", "instance", "normals"):
        a, b = getattr(got, name), getattr(expected, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype and a.flags.writeable == b.flags.writeable, name
    for name in ("version", "coverage", "frame_id", "request_index", "pose_index", "camera_index", "timings_s"):
        assert getattr(got, name) == getattr(expected, name), name


@pytest.mark.parametrize("side", [1, 5, 37, 74, 75, 2400])
def test_splitting_is_the_reverse_of_splicing_and_copies_no_pixel(side):
    """Frame sizes whose image, frame and message lengths cross a varint width (127, 16383, 2097151 bytes)."""
    data, rgb = encoded_step(side, side if side < 2400 else 300)
    split = conversions.parse_step_response(data)
    whole = pb.StepResponse.FromString(data)
    assert split.data.readonly and split.data.obj is data  # a view of the received bytes, not a copy
    assert split.data == rgb.tobytes()
    expected = pb.StepResponse.FromString(data)
    expected.frame.rgb.ClearField("data")
    assert split.message == expected and split.wire is data and split.whole() == whole
    assert serialize_with_bytes(split.message, PATH, split.data) == data


@pytest.mark.parametrize("image_encoding", [pb.IMAGE_ENCODING_RAW_RGB8, pb.IMAGE_ENCODING_PNG, pb.IMAGE_ENCODING_JPEG])
@pytest.mark.parametrize("depth_encoding", [None, pb.DEPTH_ENCODING_FLOAT16_M])
def test_a_split_answer_decodes_to_the_frame_of_the_whole_message(image_encoding, depth_encoding):
    data, rgb = encoded_step(24, 32, image_encoding, depth_encoding)
    got = conversions.decode_step_response(conversions.parse_step_response(data))
    assert_same_frame(got, conversions.decode_step_response(pb.StepResponse.FromString(data)))
    assert not got.rgb.flags.writeable  # as before: a read-only view of received bytes; copy it to write into it
    if image_encoding == pb.IMAGE_ENCODING_RAW_RGB8:
        np.testing.assert_array_equal(got.rgb, rgb)


def test_what_cannot_be_split_is_parsed_whole_with_the_bytes_moved_out():
    data, _ = encoded_step(4, 6)
    no_frame = pb.StepResponse(request_index=3, last_in_request=True).SerializeToString()
    no_pixels = pb.StepResponse(frame=pb.Frame(version=2, rgb=pb.Image(width=1, height=1))).SerializeToString()
    # Protobuf merges a repeated submessage and keeps the last of a repeated bytes field: a splitter must not guess.
    repeated_frame = data + pb.StepResponse(frame=pb.Frame(version=9)).SerializeToString()
    repeated_bytes = data + pb.StepResponse(frame=pb.Frame(rgb=pb.Image(data=b"\x01" * 72))).SerializeToString()
    for wire_bytes in (no_frame, no_pixels, repeated_frame, repeated_bytes):
        whole = pb.StepResponse.FromString(wire_bytes)
        split = conversions.parse_step_response(wire_bytes)
        assert split.data == whole.frame.rgb.data and split.data.readonly
        assert not split.message.frame.rgb.data and split.whole() == whole
        if split.data:
            split.message.frame.rgb.data = bytes(split.data)
        assert split.message == whole and split.message.HasField("frame") == whole.HasField("frame")
    assert split_bytes(repeated_frame, (4, 4, 4)) is None and split_bytes(no_frame, (4, 4, 4)) is None


def test_a_malformed_answer_is_a_wire_format_error():
    data, _ = encoded_step(4, 6)
    with pytest.raises(WireFormatError):
        split_bytes(data[:40], (4, 4, 4))


def test_the_gateway_sends_a_split_answer_as_the_same_reply_bytes():
    data, _ = encoded_step(48, 64)
    split = conversions.parse_step_response(data)
    expected = codec.encode("step_reply", write_message(pb.StepResponse.FromString(data), cv.UNITY), 5)
    got = codec.encode_view("step_reply", reply_body(split, cv.UNITY), 5)
    assert got.tobytes() == expected
    assert msgpack.unpackb(got, raw=False)["body"]["frame"]["rgb"]["data"] == bytes(split.data)
    empty = pb.StepResponse(request_index=1).SerializeToString()
    assert codec.encode("step_reply", reply_body(conversions.parse_step_response(empty), cv.UNITY), 5) == codec.encode(
        "step_reply", write_message(pb.StepResponse.FromString(empty), cv.UNITY), 5)


def test_the_client_calls_step_as_before_and_with_frame_views(client: WorldClient, world_id: str):
    request = conversions.step_request(world_id, yaw_poses(1)[0], conversions.frame_format("raw", "float16_m"))
    (plain,) = client.call("Step", request)
    assert isinstance(plain, pb.StepResponse) and len(plain.frame.rgb.data) == 3 * plain.frame.rgb.width * plain.frame.rgb.height
    (view,) = client.call("Step", request, frame_views=True)
    assert isinstance(view, SplitMessage) and view.data.readonly
    np.testing.assert_array_equal(conversions.decode_step_response(view).rgb, wire.decode_image(view.whole().frame.rgb))
    assert view.message.frame.version == plain.frame.version + 1
    frame = client.step(world_id, yaw_poses(1)[0])[0]
    assert frame.rgb.shape == (plain.frame.rgb.height, plain.frame.rgb.width, 3) and not frame.rgb.flags.writeable
    with pytest.raises(ValueError, match="frame_views is for Step"):
        client.call("GetServerInfo", pb.GetServerInfoRequest(), frame_views=True)
