"""The gateway's pure codec: round trips of every record, and fuzzed malformed messages (random bytes, flipped
bytes, wrong types, missing fields, huge declared lengths, deep nesting, oversize) that must all raise a
``GatewayError`` naming the problem -- never any other exception."""

from __future__ import annotations

import copy
import math
import struct

import msgpack
import numpy as np
import pytest

from worldweave.proto.geometry import Intrinsics, Quaternion
from worldweave.sim_clients.conventions import Rotator, RotatorPose, TransformPose
from worldweave.sim_clients.gateway import codec
from worldweave.sim_clients.gateway import messages as m
from worldweave.sim_clients.gateway.errors import (
    GatewayError,
    HandshakeRequiredError,
    InvalidMessageError,
    MessageTooLargeError,
    SchemaVersionError,
)

CAMERA = Intrinsics.from_fov(8, 6, fov_y_deg=60.0)
RGB = m.WireImage(8, 6, "raw_rgb8", bytes(range(144)))
DEPTH = m.WireDepth(8, 6, "uint16_mm", bytes(96))
UNITY_POSE = TransformPose(np.array([1.0, 2.0, 3.0]), Quaternion(0.9, 0.1, 0.3, -0.2))
UNREAL_POSE = RotatorPose(np.array([100.0, -50.0, 20.0]), Rotator(10.0, 90.0, -5.0))
MATRIX_POSE = np.array([[1.0, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]])
POINTS = np.arange(12, dtype=np.float32).reshape(4, 3) / 3
RADII = np.array([0.1, 0.2, 0.0, 1.5], dtype=np.float32)
QUATERNIONS = np.tile(np.array([0.9, 0.1, 0.3, -0.2], dtype=np.float32), (4, 1))
COLORS = np.arange(12, dtype=np.uint8).reshape(4, 3)
FLAGS = np.array([0, 1, 2, 1], dtype=np.uint8)
KEYS = np.array([5, 1 << 40, 7, 123456789012], dtype=np.int64)
BOX = m.WireRegion("box", np.array([0.0, 1, 2]), np.array([1.0, 2, 3]))
SPHERE = m.WireRegion("sphere", np.array([0.0, 1, 2]), radius=0.5)
ORIENTED = m.WireRegion("oriented_box", np.array([0.0, 1, 2]), np.array([0.5, 0.5, 1.0]), Quaternion(0.9, 0.1, 0.3, -0.2))

REQUESTS = [
    ("position_quaternion", m.Hello("unity", client_name="test")),
    ("position_quaternion", m.Hello("usd", up_axis="Y", metres_per_unit=0.01)),
    ("position_quaternion", m.CreateWorld(CAMERA, (m.SeedView(RGB, DEPTH, UNITY_POSE),), "w1", "a room", 0.02)),
    ("position_quaternion", m.Render("w1", (UNITY_POSE, UNITY_POSE), CAMERA, "png", "float16_m")),
    ("position_rotator", m.Render("w1", (UNREAL_POSE,))),
    ("matrix", m.Step("w1", (MATRIX_POSE,), CAMERA, prompt="go", seed=7)),
    ("position_rotator", m.Step("w1", (UNREAL_POSE,))),
    ("matrix", m.DeleteWorld("w1", delete_saved=True)),
    ("matrix", m.PointCloud("w1", 7, 1 << 20)),
    ("matrix", m.Raycast("w1", POINTS, POINTS + 1, 5.0)),
    ("matrix", m.NearestSurface("w1", POINTS, 0.5)),
    ("matrix", m.CheckSpheres("w1", POINTS, RADII)),
    ("matrix", m.CheckCapsules("w1", POINTS, POINTS * 2, RADII)),
    ("matrix", m.CheckBoxes("w1", POINTS, POINTS + 0.1, QUATERNIONS)),
    ("matrix", m.QueryOccupancy("w1", POINTS)),
    ("matrix", m.CropPointCloud("w1", np.array([0.0, 0, 0]), np.array([1.0, 2, 3]))),
    ("matrix", m.RemoveRegion("w1", BOX)),
    ("matrix", m.RemoveRegion("w1", ORIENTED)),
    ("matrix", m.RecolorRegion("w1", SPHERE, (255, 0, 9))),
    ("matrix", m.InsertPoints("w1", POINTS, COLORS)),
]
REPLIES = [
    ("matrix", m.HelloReply("1.0.0", "1.0.0", "0.1.0", ("render", "step"), "opengl", 1.0, "matrix", "reproject", 8, 1 << 26)),
    ("matrix", m.WorldReply("w1", 3, 12)),
    ("matrix", m.DeleteReply(True, False)),
    ("position_rotator", m.FramesReply((m.WireFrame(UNREAL_POSE, 4, 0.5, RGB, DEPTH, 9), m.WireFrame(UNREAL_POSE, 4, 1.0, RGB)))),
    ("matrix", m.ErrorReply("NOT_FOUND", "no world 'x'")),
    ("matrix", m.PointCloudChunk(3, 5, False, "added", KEYS, POINTS, COLORS, FLAGS, 2.0, False)),
    ("matrix", m.PointCloudChunk(3, 5, False, "removed", KEYS, POINTS[:0], COLORS[:0], FLAGS[:0], 2.0, True)),
    ("matrix", m.RaycastReply(4, FLAGS.clip(0, 1), RADII, POINTS, COLORS, FLAGS.clip(0, 1))),
    ("matrix", m.NearestReply(4, FLAGS.clip(0, 1), RADII, POINTS)),
    ("matrix", m.CollisionReply(4, FLAGS.clip(0, 1), np.array([0.1, -0.2, np.inf, 0.0], np.float32), POINTS)),
    ("matrix", m.OccupancyReply(4, FLAGS + 1)),
    ("matrix", m.CropReply(4, POINTS, COLORS)),
    ("matrix", m.EditReply(4, 120)),
]


def same(a, b) -> bool:
    """Structural equality of records holding numpy arrays."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if hasattr(a, "__dataclass_fields__"):
        return type(a) is type(b) and all(same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b)
    return a == b


@pytest.mark.parametrize("form, record", REQUESTS, ids=[type(r).__name__ for _, r in REQUESTS])
def test_requests_round_trip(form, record):
    request_id, decoded = codec.decode_request(codec.encode(record, 42), pose_form=form)
    assert request_id == 42
    assert same(decoded, record)


@pytest.mark.parametrize("form, record", REPLIES, ids=[type(r).__name__ for _, r in REPLIES])
def test_replies_round_trip(form, record):
    request_id, decoded = codec.decode_reply(codec.encode(record, None), pose_form=form)
    assert request_id is None
    assert same(decoded, record)


def test_no_record_field_shadows_the_envelope():
    for record_type in [*m.REQUEST_TYPES.values(), *m.REPLY_TYPES.values()]:
        assert not set(record_type.__dataclass_fields__) & set(m.ENVELOPE_FIELDS), record_type


def test_camera_forms_on_the_wire():
    for camera, expected in [
        ({"width": 640, "height": 480, "fov_y_deg": 60.0}, Intrinsics.from_fov(640, 480, fov_y_deg=60.0)),
        ({"width": 640, "height": 480, "fov_x_deg": 90.0}, Intrinsics.from_fov(640, 480, fov_x_deg=90.0)),
        ({"width": 640, "height": 480, "fx": 500, "fy": 500, "cx": 320, "cy": 240}, Intrinsics(500, 500, 320, 240, 640, 480)),
    ]:
        assert m.camera_from_wire(camera, "camera") == expected
    for bad in [{"width": 640, "height": 480}, {"width": 640, "height": 480, "fov_x_deg": 90, "fov_y_deg": 60},
                {"width": 640, "height": 480, "fx": 500}, {"width": 640, "height": 480, "fov_y_deg": 0.0}]:
        with pytest.raises(InvalidMessageError, match="camera"):
            m.camera_from_wire(bad, "camera")


# ---------------------------------------------------------------------------------------------------------------
# Malformed messages


def envelope(record, request_id=1) -> dict:
    return msgpack.unpackb(codec.encode(record, request_id), raw=False)


def decode(wire: dict | bytes, form="position_quaternion"):
    payload = wire if isinstance(wire, bytes) else msgpack.packb(wire, use_bin_type=True)
    return codec.decode_request(payload, pose_form=form)


def test_random_bytes_never_escape_as_other_errors():
    rng = np.random.default_rng(0)
    for _ in range(3000):
        payload = rng.integers(0, 256, size=int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
        try:
            decode(payload)
        except GatewayError as error:
            assert str(error)


def test_flipped_bytes_of_valid_messages():
    rng = np.random.default_rng(1)
    for form, record in REQUESTS:
        good = bytearray(codec.encode(record, 3))
        for _ in range(300):
            bad = bytearray(good)
            for i in rng.integers(0, len(bad), size=int(rng.integers(1, 4))):
                bad[i] = int(rng.integers(0, 256))
            try:
                decode(bytes(bad), form)
            except GatewayError as error:
                assert str(error)


def paths(value, prefix=()):
    """Every (path, value) inside a wire structure."""
    yield prefix, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from paths(item, prefix + (i,))


def replaced(wire, path, new):
    wire = copy.deepcopy(wire)
    target = wire
    for key in path[:-1]:
        target = target[key]
    if new is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = new
    return wire


WRONG_VALUES = [None, True, -1, 2**64 - 1, 1.5, float("nan"), float("inf"), "x", b"\x00", [], [1, 2], {}, {"a": 1}]


@pytest.mark.parametrize("form, record", REQUESTS[2:], ids=[type(r).__name__ for _, r in REQUESTS[2:]])
def test_every_field_with_wrong_types_and_missing(form, record):
    wire = envelope(record)
    errors = 0
    for path, _ in list(paths(wire))[1:]:
        for new in [*WRONG_VALUES, KeyError]:
            try:
                decode(replaced(wire, path, new), form)
            except GatewayError as error:
                errors += 1
                assert str(error)
    assert errors > 5 * len(list(paths(wire)))


def test_missing_and_unknown_fields_are_named():
    wire = envelope(m.Render("w1", (UNITY_POSE,)))
    with pytest.raises(InvalidMessageError, match=r"render is missing the field 'world_id'"):
        decode(replaced(wire, ("world_id",), KeyError))
    with pytest.raises(InvalidMessageError, match=r"render.poses\[0\].rotation is missing the field 'qw'"):
        decode(replaced(wire, ("poses", 0, "rotation", "qw"), KeyError))
    with pytest.raises(InvalidMessageError, match=r"unknown field\(s\) 'colour'"):
        decode({**wire, "colour": 1})
    with pytest.raises(InvalidMessageError, match=r"render.poses\[0\].position must have 3 numbers"):
        decode(replaced(wire, ("poses", 0, "position"), [1.0, 2.0]))
    with pytest.raises(InvalidMessageError, match="must be finite"):
        decode(replaced(wire, ("poses", 0, "rotation", "qx"), float("nan")))
    with pytest.raises(InvalidMessageError, match="needs at least 1"):
        decode(replaced(wire, ("poses",), []))
    with pytest.raises(InvalidMessageError, match="message must be a map"):
        decode(msgpack.packb([1, 2, 3]))
    with pytest.raises(InvalidMessageError, match="type must be one of"):
        decode({**wire, "type": "explode"})


def test_raw_image_size_must_match():
    record = m.CreateWorld(CAMERA, (m.SeedView(RGB, DEPTH, UNITY_POSE),))
    wire = envelope(record)
    with pytest.raises(InvalidMessageError, match=r"frames\[0\].rgb.data has 10 bytes; raw_rgb8 8x6 needs 144"):
        decode(replaced(wire, ("frames", 0, "rgb", "data"), bytes(10)))
    with pytest.raises(InvalidMessageError, match="needs 96"):
        decode(replaced(wire, ("frames", 0, "depth", "data"), bytes(95)))


def test_huge_declared_lengths_and_nesting():
    header = msgpack.packb({"version": 1, "type": "render", "id": 1})[:-0 or None]
    cases = [
        b"\xc6\xff\xff\xff\xff" + b"abc",  # bin32 of 4 GiB, 3 bytes present
        b"\xdb\xff\xff\xff\xff" + b"abc",  # str32 of 4 GiB
        b"\xdd\xff\xff\xff\xff",  # array32 of 4 billion items
        b"\xdf\xff\xff\xff\xff",  # map32 of 4 billion entries
        b"\x91" * 100_000 + b"\x00",  # 100k nested arrays
        b"\x81\xa1a" * 50_000 + b"\x00",  # 50k nested maps
        header[:-1],  # truncated
        header + b"\x00",  # trailing data
        msgpack.packb({"version": 1, "type": "render", "id": 1, "t": msgpack.ExtType(5, b"xx")}),
        msgpack.packb({"version": 1, "type": "render", "id": 1, "poses": list(range(5000))}),
        msgpack.packb({"version": 1, "type": "render", "id": 1, "world_id": "w" * 300_000}),
        msgpack.packb({1: 2}),
        msgpack.packb({"version": 1, "type": "hello", "id": 1, "convention": b"\xff\xfe"}),
    ]
    for payload in cases:
        with pytest.raises(GatewayError) as info:
            decode(payload)
        assert str(info.value)
    with pytest.raises(MessageTooLargeError, match="exceeds max_array_len"):
        decode(cases[2])


def test_oversize_message_is_refused_before_parsing():
    payload = codec.encode(m.Render("w1", (UNITY_POSE,)), 1)
    with pytest.raises(MessageTooLargeError, match=f"message of {len(payload)} bytes is over the gateway's limit of 100"):
        codec.decode_request(payload, pose_form="position_quaternion", max_message_bytes=100)


def test_version_mismatch_keeps_the_request_id():
    wire = envelope(m.Render("w1", (UNITY_POSE,)), request_id=77)
    with pytest.raises(SchemaVersionError, match="schema version 2, this gateway speaks 1") as info:
        decode({**wire, "version": 2})
    assert info.value.request_id == 77
    reply_id, reply = codec.decode_reply(codec.encode_error(info.value, info.value.request_id), pose_form=None)
    assert reply_id == 77 and reply == m.ErrorReply("FAILED_PRECONDITION", str(info.value))


def test_requests_before_hello_need_a_handshake():
    with pytest.raises(HandshakeRequiredError, match="send hello"):
        decode(codec.encode(m.Render("w1", (UNITY_POSE,)), 1), form=None)
    request_id, hello = decode(codec.encode(m.Hello("unity"), 1), form=None)
    assert hello == m.Hello("unity")


def test_pose_of_the_wrong_form_is_named():
    with pytest.raises(InvalidMessageError, match=r"render.poses\[0\] is missing the field 'rotator'"):
        decode(codec.encode(m.Render("w1", (UNITY_POSE,)), 1), form="position_rotator")
    wire = envelope(m.Step("w1", (MATRIX_POSE,)))
    with pytest.raises(InvalidMessageError, match="must have 16 numbers"):
        decode(replaced(wire, ("poses", 0, "matrix"), [1.0] * 15), form="matrix")


def test_float32_and_ints_accepted_as_numbers():
    wire = envelope(m.Render("w1", (UNITY_POSE,)))
    wire = replaced(wire, ("poses", 0, "position"), [1, 2, 3])
    payload = msgpack.packb(wire, use_bin_type=True, use_single_float=True)
    _, record = decode(payload)
    assert list(record.poses[0].position) == [1.0, 2.0, 3.0]
    assert struct.calcsize("<f") == 4


def test_packed_arrays_name_the_bad_value():
    wire = envelope(m.Raycast("w1", POINTS, POINTS + 1, 5.0))
    for field, value, message in [
        ("origins", b"\0" * 13, r"raycast.origins has 13 bytes, not a whole number of float32 \(N, 3\) rows"),
        ("origins", np.array([[0, np.nan, 0]], "<f4").tobytes(), r"raycast.origins\[0\] must be finite, got nan"),
        ("directions", POINTS[:2].tobytes(), "raycast.directions has 2 rows, the batch has 4"),
        ("max_range", -1.0, "raycast.max_range must be > 0"),
    ]:
        with pytest.raises(InvalidMessageError, match=message):
            decode(replaced(wire, (field,), value), "matrix")
    region = envelope(m.RemoveRegion("w1", BOX))
    with pytest.raises(InvalidMessageError, match="remove_region.region needs exactly one of box, oriented_box or sphere"):
        decode(replaced(region, ("region", "sphere"), {"center": [0, 0, 0], "radius": 1.0}), "matrix")
    with pytest.raises(InvalidMessageError, match=r"recolor_region.rgb\[2\] must be an integer in 0..255"):
        decode(replaced(envelope(m.RecolorRegion("w1", SPHERE, (1, 2, 3))), ("rgb", 2), 256), "matrix")


def test_world_state_requests_need_a_handshake():
    with pytest.raises(HandshakeRequiredError, match="point_cloud before hello"):
        codec.decode_request(codec.encode(m.PointCloud("w1"), 1), pose_form=None)
