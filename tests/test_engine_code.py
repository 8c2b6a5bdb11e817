"""The engine-side reference code (Unity C#, Unreal C++, Isaac Sim Python) cannot run here; this checks what it
states against the Python conventions module and the gateway schema: convention names, FOV fields, the W / A
matrices and units, and that the messages it builds decode with the gateway's own codec."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import msgpack
import numpy as np
import pytest

from worldweave.proto.codecs import intrinsics_message, pose_matrix
from worldweave.proto.geometry import Intrinsics, Quaternion, rotation_from_quaternion
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.sim_clients import conventions as cv
from worldweave.sim_clients.gateway import codec, schema
from worldweave.sim_clients.gateway.messages import Hello

ROOT = Path(__file__).resolve().parents[1] / "sim_clients"
UNITY_CS = (ROOT / "unity" / "WorldweaveCamera.cs").read_text()
UNREAL_H = (ROOT / "unreal" / "WorldweaveCameraComponent.h").read_text()
UNREAL_CPP = (ROOT / "unreal" / "WorldweaveCameraComponent.cpp").read_text()
ISAAC_PY = ROOT / "isaac" / "worldweave_isaac.py"

FOV_FIELD = {"vertical": "fov_y_deg", "horizontal": "fov_x_deg"}


def numbers(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", text)]


def matrix_constant(source: str, name: str) -> np.ndarray:
    """A 3x3 constant written ``name... = { {a, b, c}, {...}, {...} }`` in C# or C++."""
    found = re.search(name + r"[^=]*=\s*(\{[^;]*\})\s*;", source)
    assert found, f"no constant {name}"
    values = numbers(found.group(1).replace("f", ""))
    assert len(values) == 9, f"{name} has {len(values)} values"
    return np.array(values).reshape(3, 3)


def string_constant(source: str, name: str) -> str:
    found = re.search(name + r'\s*=\s*"([^"]*)"', source)
    assert found, f"no string constant {name}"
    return found.group(1)


def float_constant(source: str, name: str) -> float:
    found = re.search(name + r"\s*=\s*(-?[\d.]+)f?\s*;", source)
    assert found, f"no number constant {name}"
    return float(found.group(1))


# ---------------------------------------------------------------------------------------------------------------
# Unity


def test_unity_constants_match_the_conventions_module():
    assert string_constant(UNITY_CS, "Name") == cv.UNITY.name
    assert string_constant(UNITY_CS, "FovField") == FOV_FIELD[cv.UNITY.fov_axis]
    assert float_constant(UNITY_CS, "MetresPerUnit") == cv.UNITY.metres_per_unit
    assert float_constant(UNITY_CS, "SchemaMajor") == schema.SCHEMA_MAJOR
    np.testing.assert_array_equal(matrix_constant(UNITY_CS, "WorldToCanonical"), cv.UNITY.world_to_canonical)
    np.testing.assert_array_equal(matrix_constant(UNITY_CS, "OpenCvToCamera"), cv.UNITY.opencv_to_camera)


def csharp_keys(class_name: str) -> list[str]:
    """The ``[Key("...")]`` names of one C# record class (constants resolved)."""
    body = re.search(r"class " + class_name + r"\s*\{(.*?)\n    \}", UNITY_CS, re.S)
    assert body, f"no C# class {class_name}"
    keys = re.findall(r'\[Key\("([^"]+)"\)\]', body.group(1))
    keys += [FOV_FIELD[cv.UNITY.fov_axis] for _ in re.findall(r"\[Key\(UnityConvention\.FovField\)\]", body.group(1))]
    return keys


def fields(message: type) -> set[str]:
    """The gateway's keys of a proto message."""
    return set(schema.wire_fields(message.DESCRIPTOR))


def test_unity_requests_decode_with_the_gateway_codec():
    assert set(csharp_keys("HelloRequest")) == set(csharp_keys("StepRequest")) == set(schema.ENVELOPE_FIELDS)
    pose = {"position": [1.0, 2.0, 3.0], "rotation": {k: (1.0 if k == "qw" else 0.0) for k in csharp_keys("WireQuaternion")}}
    assert set(csharp_keys("WirePose")) == set(pose)
    camera = {k: 640 if k == "width" else 480 if k == "height" else 60.0 for k in csharp_keys("WireCamera")}
    hello = {k: {"convention": "unity", "client_name": "unity"}[k] for k in csharp_keys("HelloBody")}
    _, _, record = codec.decode_request(codec.encode("hello", hello, 1), convention=None)
    assert record == Hello("unity", client_name="unity")
    assert set(csharp_keys("WireFormat")) <= fields(pb.FrameFormat)
    for request_type in ("step", "render"):
        values = {"world_id": "w", "poses": [pose], "intrinsics": camera, "format": {"image_encoding": "raw"}}
        body = {k: values[k] for k in csharp_keys("StepBody")}
        _, _, record = codec.decode_request(codec.encode(request_type, body, 1), convention=cv.UNITY)
        assert record.intrinsics == intrinsics_message(Intrinsics.from_fov(640, 480, fov_y_deg=60.0))
        assert record.format.image_encoding == pb.IMAGE_ENCODING_RAW_RGB8
        np.testing.assert_allclose(pose_matrix(record.poses[0])[:3, 3], [3.0, -1.0, 2.0])


def test_unity_reply_fields_exist_in_the_schema():
    assert set(csharp_keys("WireFrame")) <= fields(pb.Frame)
    assert set(csharp_keys("WireImage")) <= fields(pb.Image)
    assert set(csharp_keys("Reply")) == {"type", "id", "body"}
    error = {name for name, _, _ in schema.ERROR_FIELDS}
    assert set(csharp_keys("ReplyBody")) <= fields(pb.RenderResponse) | fields(pb.StepResponse) | error
    assert {"step_reply", "render_reply"} <= set(re.findall(r'"(\w+_reply)"', UNITY_CS))
    assert {"step_reply", "render_reply"} == {schema.RPCS["step"].reply_type, schema.RPCS["render"].reply_type}


# ---------------------------------------------------------------------------------------------------------------
# Unreal


def test_unreal_constants_match_the_conventions_module():
    assert string_constant(UNREAL_H, "Convention") == cv.UNREAL.name
    assert string_constant(UNREAL_H, "FovField") == FOV_FIELD[cv.UNREAL.fov_axis]
    assert float_constant(UNREAL_H, "MetresPerUnit") == cv.UNREAL.metres_per_unit
    assert float_constant(UNREAL_H, "SchemaMajor") == schema.SCHEMA_MAJOR
    np.testing.assert_array_equal(matrix_constant(UNREAL_H, "WorldToCanonical"), cv.UNREAL.world_to_canonical)
    np.testing.assert_array_equal(matrix_constant(UNREAL_H, "OpenCvToCamera"), cv.UNREAL.opencv_to_camera)


def test_unreal_packs_only_schema_keys_and_the_rotator_form():
    packed = set(re.findall(r'PackStr\(Pk, "([^"]+)"\)', UNREAL_CPP))
    read = set(re.findall(r'Find\([^,]+, "([^"]+)"\)', UNREAL_CPP))
    hello = {name for name, _, _ in schema.HELLO_FIELDS}
    schema_keys = (set(schema.ENVELOPE_FIELDS) | hello | fields(pb.StepRequest) | fields(pb.RenderRequest)
                   | fields(pb.FrameFormat) | {"position", "rotator", "pitch", "yaw", "roll", "width", "height"})
    values = {"hello", "unreal", "raw"}
    assert packed - values <= schema_keys, packed - values - schema_keys
    assert {"position", "rotator", "pitch", "yaw", "roll"} <= packed  # cv.UNREAL.pose_form == "position_rotator"
    assert cv.UNREAL.pose_form == "position_rotator"
    error = {name for name, _, _ in schema.ERROR_FIELDS}
    reply_fields = {"type", "body"} | fields(pb.RenderResponse) | fields(pb.StepResponse) | error
    assert read <= reply_fields | fields(pb.Frame) | fields(pb.Image), read - reply_fields - fields(pb.Frame) - fields(pb.Image)
    # The rotator's fields, in the order Unreal's FRotator names them, are the ones the gateway reads.
    body = {"world_id": "w", "poses": [{"position": [100.0, 200.0, 50.0], "rotator": {"pitch": 0.0, "yaw": 90.0, "roll": 0.0}}],
            "intrinsics": {"width": 640, "height": 480, "fov_x_deg": 90.0}, "format": {"image_encoding": "raw"}}
    _, _, record = codec.decode_request(codec.encode("step", body, 1), convention=cv.UNREAL)
    np.testing.assert_allclose(pose_matrix(record.poses[0])[:3, 2], [0.0, -1.0, 0.0], atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Isaac Sim


@pytest.fixture(scope="module")
def isaac():
    return runpy.run_path(str(ISAAC_PY), run_name="worldweave_isaac_under_test")


def test_isaac_constants_match_the_conventions_module(isaac):
    assert isaac["CONVENTION"] == "usd" and isaac["SCHEMA_MAJOR"] == schema.SCHEMA_MAJOR
    np.testing.assert_array_equal(isaac["OPENGL_TO_OPENCV"], cv.usd().opencv_to_camera)
    np.testing.assert_array_equal(isaac["Y_UP_TO_Z_UP"], cv.usd("Y").world_to_canonical)


@pytest.mark.parametrize("up_axis, metres_per_unit", [("Z", 1.0), ("Y", 0.01), ("Z", 0.01)])
def test_isaac_canonical_pose_matches_the_conventions_module(isaac, up_axis, metres_per_unit):
    convention = cv.get_convention("usd", up_axis=up_axis, metres_per_unit=metres_per_unit)
    rng = np.random.default_rng(0)
    for _ in range(50):
        c2w = np.eye(4)
        c2w[:3, :3] = rotation_from_quaternion(Quaternion(*rng.normal(size=4)))
        c2w[:3, 3] = rng.uniform(-10, 10, size=3)
        local_to_world = convention.matrix_from_canonical(c2w)
        gf_rows = local_to_world.T  # what np.array(Gf.Matrix4d) gives
        columns = isaac["local_to_world_columns"](gf_rows)
        np.testing.assert_allclose(isaac["canonical_c2w"](columns, up_axis, metres_per_unit), c2w, atol=1e-9)


def test_isaac_step_request_decodes_and_converts(isaac):
    convention = cv.get_convention("usd", up_axis="Y", metres_per_unit=0.01)
    local_to_world = np.eye(4)
    local_to_world[:3, 3] = [100.0, 200.0, -300.0]
    fx = isaac["focal_length_px"](640, 18.147, 20.955)
    assert fx == pytest.approx(Intrinsics.from_usd_camera(640, 480, focal_length=18.147, horizontal_aperture=20.955).fx)
    payload = msgpack.packb(isaac["step_request"](5, "w", local_to_world, 640, 480, fx))
    request_id, _, record = codec.decode_request(payload, convention=convention)
    assert request_id == 5 and record.format.image_encoding == pb.IMAGE_ENCODING_PNG
    assert record.intrinsics.cx == 319.5
    np.testing.assert_allclose(pose_matrix(record.poses[0]), isaac["canonical_c2w"](local_to_world, "Y", 0.01))
