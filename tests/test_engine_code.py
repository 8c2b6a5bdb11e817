"""The engine-side reference code (Unity C#, Unreal C++, Isaac Sim Python) cannot run here; this checks what it
states against the Python conventions module and the gateway schema: convention names, FOV fields, the W / A
matrices and units, and that the messages it builds decode with the gateway's own codec. For rigs: the Unity and Unreal
rig step requests (field names read from the source) decode with the gateway codec, and the mount each computes from
engine transforms converts as ``Convention.mount_to_canonical`` says, so body pose x mount is the camera's own pose."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import msgpack
import numpy as np
import pytest

from worldweave.proto.codecs import intrinsics_message, pose_matrix
from worldweave.proto.geometry import Intrinsics, Quaternion, quaternion_from_rotation, rotation_from_quaternion
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


def function_body(source: str, signature: str) -> str:
    """The text between a function's opening brace and the closing brace at its own indentation (C# or C++)."""
    found = re.search(r"^([ \t]*)[^\n]*" + re.escape(signature) + r"[^\n]*\n\1\{\n(.*?)\n\1\}", source, re.DOTALL | re.MULTILINE)
    assert found, f"no function {signature}"
    return found.group(2)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    return rotation_from_quaternion(Quaternion(*rng.normal(size=4)))


def assert_rig_request(record: pb.StepRequest, convention: cv.Convention, mounts: list, cameras: list,
                       intrinsics: list[Intrinsics]) -> None:
    """A decoded rig step: no request-wide intrinsics, each camera's own, each mount as ``mount_to_canonical`` gives
    it, and body pose x mount equal to the canonical pose of the camera's own engine pose."""
    assert not record.HasField("intrinsics") and len(record.poses) == 1
    body = pose_matrix(record.poses[0])
    assert len(record.rig.cameras) == len(cameras)
    for wire, mount, camera, k in zip(record.rig.cameras, mounts, cameras, intrinsics):
        assert wire.intrinsics == intrinsics_message(k)
        np.testing.assert_allclose(pose_matrix(wire.mount), convention.mount_to_canonical(mount), atol=1e-9)
        np.testing.assert_allclose(body @ pose_matrix(wire.mount), convention.to_canonical(camera), atol=1e-9)


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
    # A rig's frames are routed by camera_index; a step's replies end with last_in_request.
    assert {"camera_index", "last_in_request"} <= set(csharp_keys("ReplyBody"))


def hamilton(a: Quaternion, b: Quaternion) -> Quaternion:
    """``a * b`` as Unity's ``Quaternion`` operator computes it (Hamilton product)."""
    return Quaternion(a.qw * b.qw - a.qx * b.qx - a.qy * b.qy - a.qz * b.qz,
                      a.qw * b.qx + a.qx * b.qw + a.qy * b.qz - a.qz * b.qy,
                      a.qw * b.qy - a.qx * b.qz + a.qy * b.qw + a.qz * b.qx,
                      a.qw * b.qz + a.qx * b.qy - a.qy * b.qx + a.qz * b.qw)


def unity_mount(body: cv.TransformPose, camera: cv.TransformPose) -> cv.TransformPose:
    """``UnityConvention.Mount`` in numpy: ``Quaternion.Inverse(body.rotation) * (camera.position - body.position)``
    and ``Quaternion.Inverse(body.rotation) * camera.rotation``."""
    q = body.rotation
    inverse = Quaternion(q.qw, -q.qx, -q.qy, -q.qz)
    return cv.TransformPose(rotation_from_quaternion(q).T @ (camera.position - body.position), hamilton(inverse, camera.rotation))


def test_unity_rig_request_decodes_and_its_mounts_convert_as_the_conventions_module_says():
    mount_code = function_body(UNITY_CS, "WirePose Mount(Transform body, Transform camera)")
    assert "Quaternion.Inverse(body.rotation) * (camera.position - body.position)" in mount_code
    assert "Quaternion.Inverse(body.rotation) * camera.rotation" in mount_code
    # The request: the body is this Transform, each camera's mount relative to it, each camera's own field of view.
    send = function_body(UNITY_CS, "void SendRig()")
    assert "Poses = new[] { WirePose.Of(transform.position, transform.rotation) }" in send
    assert "Mount = UnityConvention.Mount(transform, slot.camera.transform)" in send
    assert "FovYDeg = slot.camera.fieldOfView" in send
    assert set(csharp_keys("RigStepRequest")) == set(schema.ENVELOPE_FIELDS)
    assert set(csharp_keys("WireRig")) == set(fields(pb.Rig))
    assert set(csharp_keys("WireRigCamera")) == set(fields(pb.RigCamera))
    assert "rig" in csharp_keys("RigStepBody") and "intrinsics" not in csharp_keys("RigStepBody")
    rng = np.random.default_rng(1)

    def transform() -> cv.TransformPose:
        return cv.TransformPose(rng.uniform(-5, 5, size=3), quaternion_from_rotation(random_rotation(rng)))

    def wire(pose: cv.TransformPose) -> dict:
        q = pose.rotation
        return {"position": pose.position.tolist(), "rotation": dict(zip(csharp_keys("WireQuaternion"), (q.qw, q.qx, q.qy, q.qz)))}

    assert csharp_keys("WireQuaternion") == ["qw", "qx", "qy", "qz"]
    for _ in range(10):
        body, cameras = transform(), [transform() for _ in range(3)]
        mounts = [unity_mount(body, camera) for camera in cameras]
        sizes, fovs = [(64, 48), (32, 32), (80, 40)], rng.uniform(30.0, 100.0, size=3)
        values = {"world_id": "w", "poses": [wire(body)], "format": {"image_encoding": "raw"}, "rig": {"cameras": [
            {"intrinsics": {"width": w, "height": h, "fov_y_deg": fov}, "mount": wire(mount)}
            for (w, h), fov, mount in zip(sizes, fovs, mounts)]}}
        payload = codec.encode("step", {k: values[k] for k in csharp_keys("RigStepBody")}, 3)
        _, _, record = codec.decode_request(payload, convention=cv.UNITY)
        intrinsics = [Intrinsics.from_fov(w, h, fov_y_deg=fov) for (w, h), fov in zip(sizes, fovs)]
        assert_rig_request(record, cv.UNITY, mounts, cameras, intrinsics)


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
                   | fields(pb.FrameFormat) | fields(pb.Rig) | fields(pb.RigCamera)
                   | {"position", "rotator", "pitch", "yaw", "roll", "width", "height"})
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


UNREAL_HELPERS = ("PackPose", "PackMount", "PackIntrinsics", "PackRawFormat")
"""The .cpp's packing helpers, inlined where a Send function calls them."""
CPP_TOKEN = re.compile(r'PackEnvelope\(Pk, ([^,]+), [^,]+, (\d+)\)|Pk\.pack_map\((\d+)\)|Pk\.pack_array\(([^;]*)\);'
                       r'|PackStr\(Pk, ([^)]*)\)|Pk\.pack\(|(' + "|".join(UNREAL_HELPERS) + r')\(Pk')


def cpp_packed(body: str) -> list[tuple]:
    """What a C++ Send function packs, in order: ("map", n), ("array", n or None: a loop), ("str", text or None:
    not a literal), ("num",); the envelope's type and body size first."""
    tokens: list[tuple] = []
    for m in CPP_TOKEN.finditer(body):
        envelope, body_size, map_size, array_size, text, helper = m.group(1, 2, 3, 4, 5, 6)
        if envelope is not None:
            tokens += [("type", envelope.strip('"') if envelope.startswith('"') else None), ("map", int(body_size))]
        elif map_size is not None:
            tokens.append(("map", int(map_size)))
        elif array_size is not None:
            tokens.append(("array", int(array_size) if array_size.isdigit() else None))
        elif text is not None:
            literal = text.startswith('"')
            tokens.append(("str", text.strip('"') if literal else FOV_FIELD[cv.UNREAL.fov_axis] if text.endswith("FovField") else None))
        elif helper is not None:
            tokens += cpp_packed(function_body(UNREAL_CPP, f"void {helper}(Packer& Pk"))
        else:
            tokens.append(("num",))
    return tokens


def msgpack_walk(value: object) -> list[tuple]:
    """The tokens of :func:`cpp_packed` for a Python value; a list of maps shows its first item only (a C++ loop)."""
    if isinstance(value, dict):
        return [("map", len(value))] + [t for k, v in value.items() for t in [("str", k)] + msgpack_walk(v)]
    if isinstance(value, list):
        items = value[:1] if value and isinstance(value[0], dict) else value
        return [("array", len(value))] + [t for item in items for t in msgpack_walk(item)]
    return [("str", value)] if isinstance(value, str) else [("num",)]


def assert_cpp_packs(signature: str, record_type: str, body: dict) -> None:
    """The C++ function packs exactly ``body``'s structure and keys (its non-literal strings and loop lengths match
    any), so ``body`` is the message it sends."""
    packed, expected = cpp_packed(function_body(UNREAL_CPP, signature)), [("type", record_type)] + msgpack_walk(body)
    assert len(packed) == len(expected), (packed, expected)
    for got, want in zip(packed, expected):
        assert got[0] == want[0] and (len(got) == 1 or got[1] is None or got[1] == want[1]), (got, want)


def test_unreal_single_camera_step_packs_the_body_the_gateway_reads():
    body = {"world_id": "w", "poses": [{"position": [100.0, 200.0, 50.0], "rotator": {"pitch": 0.0, "yaw": 90.0, "roll": 0.0}}],
            "intrinsics": {"width": 640, "height": 480, "fov_x_deg": 90.0}, "format": {"image_encoding": "raw"}}
    assert_cpp_packs("UWorldweaveCameraComponent::SendPose(", "step", body)  # RequestType: "step" or "render"
    _, _, record = codec.decode_request(codec.encode("step", body, 1), convention=cv.UNREAL)
    assert record.intrinsics == intrinsics_message(Intrinsics.from_fov(640, 480, fov_x_deg=90.0))


def unreal_mount(body: cv.RotatorPose, camera: cv.RotatorPose) -> cv.RotatorPose:
    """``PackMount`` in numpy: ``BodyQuat.UnrotateVector(camera location - body location)`` and
    ``(BodyQuat.Inverse() * CameraQuat).Rotator()``."""
    r_body = cv.rotation_from_rotator(body.rotator)
    return cv.RotatorPose(r_body.T @ (camera.position - body.position),
                          cv.rotator_from_rotation(r_body.T @ cv.rotation_from_rotator(camera.rotator)))


def test_unreal_rig_request_decodes_and_its_mounts_convert_as_the_conventions_module_says():
    mount_code = function_body(UNREAL_CPP, "void PackMount(Packer& Pk")
    assert "BodyQuat.UnrotateVector(Camera.GetComponentLocation() - Body.GetActorLocation())" in mount_code
    assert "(BodyQuat.Inverse() * Camera.GetComponentQuat()).Rotator()" in mount_code
    assert "BodyQuat = Body.GetActorQuat()" in mount_code
    # The request: the body is the actor, each camera's mount relative to it, each camera's own field of view.
    send = function_body(UNREAL_CPP, "UWorldweaveCameraComponent::SendRig(")
    assert "Location = Body.GetActorLocation()" in send and "Rotator = Body.GetActorRotation()" in send
    assert re.search(r"Pk\.pack_array\(1\);\s*PackPose\(Pk, Location, Rotator\);", send)
    assert re.search(r'PackStr\(Pk, "mount"\);\s*PackMount\(Pk, Body, \*RigCameraComponents\[I\]\);', send)
    assert "RigCameraComponents[I]->FieldOfView" in send
    rng = np.random.default_rng(2)

    def transform() -> cv.RotatorPose:
        return cv.RotatorPose(rng.uniform(-500, 500, size=3), cv.rotator_from_rotation(random_rotation(rng)))

    def wire(pose: cv.RotatorPose) -> dict:
        r = pose.rotator
        return {"position": pose.position.tolist(), "rotator": {"pitch": r.pitch_deg, "yaw": r.yaw_deg, "roll": r.roll_deg}}

    for _ in range(10):
        body, cameras = transform(), [transform() for _ in range(3)]
        mounts = [unreal_mount(body, camera) for camera in cameras]
        sizes, fovs = [(64, 48), (32, 32), (80, 40)], rng.uniform(30.0, 120.0, size=3)
        rig_body = {"world_id": "w", "poses": [wire(body)], "rig": {"cameras": [
            {"intrinsics": {"width": w, "height": h, "fov_x_deg": fov}, "mount": wire(mount)}
            for (w, h), fov, mount in zip(sizes, fovs, mounts)]}, "format": {"image_encoding": "raw"}}
        assert_cpp_packs("UWorldweaveCameraComponent::SendRig(", "step", rig_body)
        _, _, record = codec.decode_request(codec.encode("step", rig_body, 4), convention=cv.UNREAL)
        intrinsics = [Intrinsics.from_fov(w, h, fov_x_deg=fov) for (w, h), fov in zip(sizes, fovs)]
        assert_rig_request(record, cv.UNREAL, mounts, cameras, intrinsics)


def test_unreal_routes_rig_frames_by_camera_index_until_the_last_reply():
    handle = function_body(UNREAL_CPP, "bool UWorldweaveCameraComponent::HandleReply(")
    assert {"camera_index", "last_in_request"} <= set(re.findall(r'Find\([^,]+, "([^"]+)"\)', handle)) <= (
        fields(pb.StepResponse) | fields(pb.RenderResponse) | {"type", "body", "code", "message", "coverage"})
    assert "RigTextures[I]" in handle
    assert "bWaiting = !HandleReply(Message)" in function_body(UNREAL_CPP, "UWorldweaveCameraComponent::TickComponent(")


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
