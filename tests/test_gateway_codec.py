"""The gateway's pure codec, driven by the proto descriptors: every request and reply of every RPC (a sample
message filled from its descriptor, so a field added to the proto is covered too) survives canonical -> engine ->
canonical in every convention; a field added to the proto reaches the wire with no edit; SCHEMA.md is what the
generator writes; and fuzzed malformed messages (random bytes, flipped bytes, wrong types, missing fields, huge
declared lengths, deep nesting, oversize) all raise a ``GatewayError`` naming the problem, never another exception."""

from __future__ import annotations

import copy
import math

import msgpack
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor as FD

from worldweave.proto.codecs import FLOAT32, intrinsics_message, pose_message, unpack_array
from worldweave.proto.enums import enum_names
from worldweave.proto.geometry import Intrinsics, Quaternion, rotation_from_quaternion
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.sim_clients import conventions as cv
from worldweave.sim_clients.gateway import codec, schema, schema_doc
from worldweave.sim_clients.gateway.errors import (
    GatewayError,
    HandshakeRequiredError,
    InvalidMessageError,
    MessageTooLargeError,
    SchemaVersionError,
)
from worldweave.sim_clients.gateway.messages import Hello, camera_from_wire, read_message, write_message

CONVENTIONS = [cv.get_convention(name) for name in cv.CONVENTIONS] + [cv.get_convention("usd", up_axis="Y", metres_per_unit=0.01)]
ROTATION = Quaternion(0.9, 0.1, 0.3, -0.2)


def c2w() -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation_from_quaternion(ROTATION)
    matrix[:3, 3] = [1.0, -2.0, 0.5]
    return matrix


def packed(kind: str | None) -> bytes:
    if kind == "rotation":
        q = np.array([tuple(ROTATION), (0.5, 0.5, -0.5, 0.5)])
        return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(FLOAT32).tobytes()
    if kind in ("point", "direction"):
        return np.array([[0.5, 1.0, 2.0], [-1.0, 0.25, 3.0]], FLOAT32).tobytes()
    return np.array([0.5, 2.0], FLOAT32).tobytes() if kind == "length" else b"\x01\x02\x03"


def scalar(field) -> object:
    if field.type == FD.TYPE_BYTES:
        return packed(schema.field_kind(field))
    if field.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return 0.25
    if field.type == FD.TYPE_STRING:
        return "w"
    if field.type == FD.TYPE_BOOL:
        return True
    if field.type == FD.TYPE_ENUM:
        return min(enum_names(field.enum_type))
    return 3


def fill(message, depth: int = 0):
    """Every (non-hidden) field of ``message`` set to a valid sample value, the first member of each oneof."""
    special = schema.message_kind(message.DESCRIPTOR)
    if special == "pose":
        message.CopyFrom(pose_message(c2w()))
        return message
    if special == "camera":
        message.CopyFrom(intrinsics_message(Intrinsics(500.0, 500.0, 319.5, 239.5, 640, 480)))
        return message
    if special == "vec3":
        message.x, message.y, message.z = 0.5, 1.0, 2.0
        return message
    if message.DESCRIPTOR.name == "Quaternion":
        message.qw, message.qx, message.qy, message.qz = (v / np.linalg.norm(ROTATION) for v in ROTATION)
        return message
    for field in schema.wire_fields(message.DESCRIPTOR).values():
        oneof = field.containing_oneof
        if oneof is not None and len(oneof.fields) > 1 and oneof.fields[0] is not field:
            continue
        target = getattr(message, field.name)
        if schema.is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            if value_field.type == FD.TYPE_MESSAGE:
                fill(target["a"], depth + 1)
            else:
                target["a"] = scalar(value_field)
        elif field.type == FD.TYPE_MESSAGE:
            if depth < 4:
                for item in ([target.add(), target.add()] if field.is_repeated else [target]):
                    fill(item, depth + 1)
                    item.SetInParent()
        elif field.is_repeated:
            target.extend([scalar(field)] * 2)
        else:
            setattr(message, field.name, scalar(field))
    if special == "box":
        message.min_m.x, message.max_m.x = -1.0, 1.0
    return message


def same(a: object, b: object, path: str = "") -> None:
    """Wire values equal up to float32 rounding (packed arrays compared as float32)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (path, a.keys(), getattr(b, "keys", lambda: b)())
        for key in a:
            same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, bytes) and len(a) % 4 == 0 and len(a) > 3:
        np.testing.assert_allclose(unpack_array(a, FLOAT32, None, path), unpack_array(b, FLOAT32, None, path), atol=1e-5, err_msg=path)
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6), (path, a, b)
    else:
        assert a == b, (path, a, b)


def sample_requests():
    for rpc in schema.RPCS.values():
        yield rpc, fill(message_factory.GetMessageClass(rpc.request)())


@pytest.mark.parametrize("convention", CONVENTIONS, ids=lambda c: f"{c.name}-{c.metres_per_unit}")
def test_every_request_and_reply_round_trips_through_the_engine_convention(convention):
    for rpc in schema.RPCS.values():
        for descriptor, read_type in ((rpc.request, rpc.type), (rpc.response, None)):
            message = fill(message_factory.GetMessageClass(descriptor)())
            engine_body = write_message(message, convention)
            if read_type is not None:  # requests go through the codec itself
                _, record_type, back = codec.decode_request(codec.encode(read_type, engine_body, 1), convention=convention)
                assert record_type == read_type
            else:
                back = read_message(message_factory.GetMessageClass(descriptor)(), engine_body, rpc.reply_type, convention)
            same(write_message(message, cv.CANONICAL), write_message(back, cv.CANONICAL), rpc.type)


def test_engine_units_and_axes_on_the_wire():
    """Unreal: centimetres and a left-handed y; lengths scale, points flip y, poses come back as rotators."""
    request = pb.RaycastRequest(world_id="w", origins_m=np.array([[1.0, 2.0, 3.0]], FLOAT32).tobytes(),
                                directions=np.array([[0.0, 1.0, 0.0]], FLOAT32).tobytes(), max_range_m=2.0)
    body = write_message(request, cv.UNREAL)
    assert set(body) == {"world_id", "origins", "directions", "max_range", "return_normals"}
    np.testing.assert_allclose(unpack_array(body["origins"], FLOAT32, 3, "o"), [[100.0, -200.0, 300.0]])
    np.testing.assert_allclose(unpack_array(body["directions"], FLOAT32, 3, "d"), [[0.0, -1.0, 0.0]])
    assert body["max_range"] == pytest.approx(200.0)
    frame = write_message(pb.Frame(pose=pose_message(np.eye(4)), version=4, rgb=pb.Image(encoding=pb.IMAGE_ENCODING_RAW_RGB8)), cv.UNREAL)
    assert set(frame["pose"]) == {"position", "rotator"} and frame["rgb"]["encoding"] == "raw" and "frame_id" not in frame


def test_names_are_derived_once_and_never_shadow_each_other():
    for rpc in schema.RPCS.values():
        for descriptor in (rpc.request, rpc.response):
            names = [schema.wire_name(f) for f in descriptor.fields if f"{descriptor.name}.{f.name}" not in schema.HIDDEN_FIELDS]
            assert len(names) == len(set(names)), descriptor.name
    assert schema.RPCS["nearest_surface"].reply_type == "nearest_surface_reply"
    assert [rpc.type for rpc in schema.RPCS.values() if rpc.streams] == ["step", "stream_point_cloud", "crop_point_cloud"]
    assert "follow" not in schema.wire_fields(pb.StreamPointCloudRequest.DESCRIPTOR)


def test_a_field_added_to_the_proto_reaches_the_gateway_with_no_edit(monkeypatch):
    """world.proto plus a made-up field: ``return_tangents`` on RaycastRequest, ``tangents`` on the response (as
    ``return_normals`` / ``normals`` were added). The request field is read with no edit; the tangents come back in
    engine axes once ``FIELD_KINDS`` says they are directions (one row)."""
    proto = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(proto)
    messages = {m.name: m for m in proto.message_type}
    messages["RaycastRequest"].field.add(name="return_tangents", number=99, type=FD.TYPE_BOOL, label=FD.LABEL_OPTIONAL)
    messages["RaycastResponse"].field.add(name="tangents", number=99, type=FD.TYPE_BYTES, label=FD.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    request_type = message_factory.GetMessageClass(pool.FindMessageTypeByName("worldweave.v1.RaycastRequest"))
    response_type = message_factory.GetMessageClass(pool.FindMessageTypeByName("worldweave.v1.RaycastResponse"))
    request = read_message(request_type(), {"world_id": "w", "return_tangents": True, "max_range": 5.0}, "raycast", cv.UNREAL)
    assert request.return_tangents and request.max_range_m == pytest.approx(0.05)
    tangents = np.array([[0.0, 1.0, 0.0]], FLOAT32).tobytes()
    monkeypatch.setitem(schema.FIELD_KINDS, "tangents", "direction")
    body = write_message(response_type(version=1, tangents=tangents), cv.UNREAL)
    np.testing.assert_array_equal(unpack_array(body["tangents"], FLOAT32, 3, "tangents"), [[0.0, -1.0, 0.0]])


def test_schema_md_is_generated_from_the_schema():
    assert schema_doc.SCHEMA_PATH.read_text() == schema_doc.render(), (
        "sim_clients/gateway/SCHEMA.md is stale: run python -m worldweave.sim_clients.gateway.schema_doc")


def test_camera_forms_on_the_wire():
    for camera, expected in [
        ({"width": 640, "height": 480, "fov_y_deg": 60.0}, Intrinsics.from_fov(640, 480, fov_y_deg=60.0)),
        ({"width": 640, "height": 480, "fov_x_deg": 90.0}, Intrinsics.from_fov(640, 480, fov_x_deg=90.0)),
        ({"width": 640, "height": 480, "fx": 500, "fy": 500, "cx": 320, "cy": 240}, Intrinsics(500, 500, 320, 240, 640, 480)),
    ]:
        assert camera_from_wire(camera, "camera") == expected
    for bad in [{"width": 640, "height": 480}, {"width": 640, "height": 480, "fov_x_deg": 90, "fov_y_deg": 60},
                {"width": 640, "height": 480, "fx": 500}, {"width": 640, "height": 480, "fov_y_deg": 0.0}]:
        with pytest.raises(InvalidMessageError, match="camera"):
            camera_from_wire(bad, "camera")


# ---------------------------------------------------------------------------------------------------------------
# Malformed messages

UNITY_POSE = {"position": [1.0, 2.0, 3.0], "rotation": {"qw": 0.9, "qx": 0.1, "qy": 0.3, "qz": -0.2}}
RENDER = {"world_id": "w1", "poses": [UNITY_POSE]}


def envelope(record_type: str, body: dict, request_id: int = 1) -> dict:
    return msgpack.unpackb(codec.encode(record_type, body, request_id), raw=False)


def decode(wire: dict | bytes, convention: cv.Convention | None = cv.UNITY):
    payload = wire if isinstance(wire, bytes) else msgpack.packb(wire, use_bin_type=True)
    return codec.decode_request(payload, convention=convention)


def valid_messages(convention: cv.Convention = cv.UNITY) -> list[bytes]:
    return [codec.encode(rpc.type, write_message(message, convention), 3) for rpc, message in sample_requests()]


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
    for good in valid_messages():
        for _ in range(150):
            bad = bytearray(good)
            for i in rng.integers(0, len(bad), size=int(rng.integers(1, 4))):
                bad[i] = int(rng.integers(0, 256))
            try:
                decode(bytes(bad))
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


WRONG_VALUES = [True, -1, 2**64 - 1, 1.5, float("nan"), float("inf"), "x", b"\x00", [], [1, 2], {}, {"a": 1}]


@pytest.mark.parametrize("payload", valid_messages(), ids=list(schema.RPCS))
def test_every_field_with_wrong_types_and_missing(payload):
    wire = msgpack.unpackb(payload, raw=False)
    errors = 0
    every = list(paths(wire["body"]))[1:]
    for i, (path, _) in enumerate(every):  # three wrong values per field, taking turns through the list
        for new in (WRONG_VALUES[i % len(WRONG_VALUES)], WRONG_VALUES[(i + 5) % len(WRONG_VALUES)], KeyError):
            try:
                decode(replaced(wire, ("body", *path), new))
            except GatewayError as error:
                errors += 1
                assert str(error)
    assert errors >= len(every)


def test_missing_and_unknown_fields_are_named():
    wire = envelope("render", RENDER)
    with pytest.raises(InvalidMessageError, match=r"render.poses\[0\].rotation is missing the field 'qw'"):
        decode(replaced(wire, ("body", "poses", 0, "rotation", "qw"), KeyError))
    with pytest.raises(InvalidMessageError, match=r"render has unknown field\(s\) 'colour'"):
        decode({**wire, "body": {**wire["body"], "colour": 1}})
    with pytest.raises(InvalidMessageError, match=r"message has unknown field\(s\) 'world_id'"):
        decode({**wire, "world_id": "w1"})
    with pytest.raises(InvalidMessageError, match=r"render.poses\[0\].position must have 3 numbers"):
        decode(replaced(wire, ("body", "poses", 0, "position"), [1.0, 2.0]))
    with pytest.raises(InvalidMessageError, match="must be finite"):
        decode(replaced(wire, ("body", "poses", 0, "rotation", "qx"), float("nan")))
    with pytest.raises(InvalidMessageError, match="message must be a map"):
        decode(msgpack.packb([1, 2, 3]))
    with pytest.raises(InvalidMessageError, match="message.type must be one of"):
        decode({**wire, "type": "explode"})
    with pytest.raises(InvalidMessageError, match=r"render.format.image_encoding must be one of raw, png, jpeg; got string 'raw_rgb8'"):
        decode({**wire, "body": {**RENDER, "format": {"image_encoding": "raw_rgb8"}}})
    region = {"world_id": "w", "region": {"box": {"min": [0, 0, 0], "max": [1, 1, 1]}, "sphere": {"center": [0, 0, 0], "radius": 1.0}}}
    with pytest.raises(InvalidMessageError, match="remove_region.region takes one of box, oriented_box, sphere; got box, sphere"):
        decode(codec.encode("remove_region", region, 1))


def test_huge_declared_lengths_and_nesting():
    header = msgpack.packb({"version": 2, "type": "render", "id": 1})
    cases = [
        b"\xc6\xff\xff\xff\xff" + b"abc",  # bin32 of 4 GiB, 3 bytes present
        b"\xdb\xff\xff\xff\xff" + b"abc",  # str32 of 4 GiB
        b"\xdd\xff\xff\xff\xff",  # array32 of 4 billion items
        b"\xdf\xff\xff\xff\xff",  # map32 of 4 billion entries
        b"\x91" * 100_000 + b"\x00",  # 100k nested arrays
        b"\x81\xa1a" * 50_000 + b"\x00",  # 50k nested maps
        header[:-1],  # truncated
        header + b"\x00",  # trailing data
        msgpack.packb({"version": 2, "type": "render", "id": 1, "t": msgpack.ExtType(5, b"xx")}),
        msgpack.packb({"version": 2, "type": "render", "id": 1, "body": {"poses": list(range(5000))}}),
        msgpack.packb({"version": 2, "type": "render", "id": 1, "body": {"world_id": "w" * 300_000}}),
        msgpack.packb({1: 2}),
        msgpack.packb({"version": 2, "type": "hello", "id": 1, "body": {"convention": b"\xff\xfe"}}),
    ]
    for payload in cases:
        with pytest.raises(GatewayError) as info:
            decode(payload)
        assert str(info.value)
    with pytest.raises(MessageTooLargeError, match="exceeds max_array_len"):
        decode(cases[2])


def test_oversize_message_is_refused_before_parsing():
    payload = codec.encode("render", RENDER, 1)
    with pytest.raises(MessageTooLargeError, match=f"message of {len(payload)} bytes is over the gateway's limit of 100"):
        codec.decode_request(payload, convention=cv.UNITY, max_message_bytes=100)


def test_version_mismatch_keeps_the_request_id():
    wire = envelope("render", RENDER, request_id=77)
    with pytest.raises(SchemaVersionError, match="schema version 1, this gateway speaks 2") as info:
        decode({**wire, "version": 1})
    assert info.value.request_id == 77
    reply = msgpack.unpackb(codec.encode_error(info.value, info.value.request_id), raw=False)
    assert reply == {"version": 2, "type": "error", "id": 77, "body": {"code": "FAILED_PRECONDITION", "message": str(info.value)}}


def test_requests_before_hello_need_a_handshake():
    with pytest.raises(HandshakeRequiredError, match="render before hello: send hello"):
        decode(codec.encode("render", RENDER, 1), convention=None)
    _, _, hello = decode(codec.encode("hello", Hello("unity").to_wire(), 1), convention=None)
    assert hello == Hello("unity")


def test_pose_of_the_wrong_form_is_named():
    with pytest.raises(InvalidMessageError, match=r"render.poses\[0\] has unknown field\(s\) 'rotation'"):
        decode(codec.encode("render", RENDER, 1), convention=cv.UNREAL)
    with pytest.raises(InvalidMessageError, match="must have 16 numbers"):
        decode(codec.encode("render", {"world_id": "w", "poses": [{"matrix": [1.0] * 15}]}, 1), convention=cv.OPENGL)


def test_packed_arrays_name_the_bad_value():
    body = {"world_id": "w1", "origins": np.zeros((4, 3), FLOAT32).tobytes(), "directions": np.ones((4, 3), FLOAT32).tobytes()}
    for field, value, message in [
        ("origins", b"\0" * 13, r"raycast.origins has 13 bytes, not a whole number of float32 \(N, 3\) rows"),
        ("origins", np.array([[0, np.nan, 0]], "<f4").tobytes(), r"raycast.origins\[0\] must be finite, got nan"),
        ("max_range", "far", "raycast.max_range must be a number"),
    ]:
        with pytest.raises(InvalidMessageError, match=message):
            decode(codec.encode("raycast", {**body, field: value}, 1))
    with pytest.raises(InvalidMessageError, match=r"recolor_region.rgb must be bin"):
        decode(codec.encode("recolor_region", {"world_id": "w", "rgb": [1, 2, 3]}, 1))
