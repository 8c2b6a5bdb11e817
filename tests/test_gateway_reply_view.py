"""The gateway's replies packed once into a buffer sized for their frames (``codec.encode_view``): the same bytes as
``codec.encode``, whatever the binary fields, and read by the engine client in place."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from worldweave.proto import codecs
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.sim_clients import conventions as cv
from worldweave.sim_clients.gateway import codec
from worldweave.sim_clients.gateway.messages import write_message


def render_reply(frames: int, width: int, height: int) -> dict:
    rng = np.random.default_rng(frames)
    response = pb.RenderResponse(frames=[
        pb.Frame(pose=codecs.pose_message(np.eye(4)), version=1, coverage=0.5,
                 rgb=codecs.encode_image(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)),
                 depth=codecs.encode_depth(rng.uniform(0.5, 4.0, (height, width)).astype(np.float32), pb.DEPTH_ENCODING_UINT16_MM))
        for _ in range(frames)
    ])
    return write_message(response, cv.UNITY)


@pytest.mark.parametrize("frames, width, height", [(0, 1, 1), (1, 8, 6), (3, 640, 480)])
def test_a_reply_view_holds_the_bytes_of_the_reply(frames: int, width: int, height: int):
    body = render_reply(frames, width, height)
    view = codec.encode_view("render_reply", body, 7)
    assert isinstance(view, memoryview) and view.readonly
    assert view.tobytes() == codec.encode("render_reply", body, 7)
    assert codec.binary_bytes(body) == frames * width * height * (3 + 2)
    assert msgpack.unpackb(view, raw=False)["body"] == body


def test_binary_bytes_counts_every_nested_binary_value():
    assert codec.binary_bytes({"a": b"xy", "b": [bytearray(3), {"c": memoryview(b"abcd")}], "d": "text", "e": 5}) == 9
