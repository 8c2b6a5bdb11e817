"""Wire maps <-> proto messages, driven by the descriptors (:mod:`.schema`): pure functions, no network.

A wire value is what msgpack carries: maps with string keys, lists, numbers, strings, ``bin`` bytes. Reading a
request body fills the RPC's request message field by field, converting what :data:`.schema.FIELD_KINDS` and
:data:`.schema.MESSAGE_KINDS` name from the connection's engine convention into canonical metres; every error names
the full path of the bad value (``render.poses[2].rotation.qw``), unknown fields are refused and no length is
trusted. Writing a response converts back into the engine's convention. Any message of ``world.proto`` (or of a
descriptor built like it) goes through the same two functions.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from worldweave.proto.codecs import FLOAT32, pack_array, pose_matrix, unpack_array
from worldweave.proto.enums import enum_names
from worldweave.proto.errors import InvalidInputError, InvalidIntrinsicsError, WireFormatError
from worldweave.proto.geometry import Intrinsics, Quaternion
from worldweave.sim_clients.conventions import (
    Convention,
    EnginePose,
    PoseForm,
    Rotator,
    RotatorPose,
    TransformPose,
)
from worldweave.sim_clients.gateway import translate
from worldweave.sim_clients.gateway.errors import InvalidMessageError, MessageTooLargeError
from worldweave.sim_clients.gateway.schema import (
    HELLO_FIELDS,
    FieldKind,
    field_kind,
    is_map,
    message_kind,
    oneof_groups,
    wire_fields,
)

MAX_LIST_ITEMS = 4096
"""Most items in any list field (poses, frames, capabilities)."""
MAX_STRING_CHARS = 65536
"""Longest string field, characters (a prompt)."""
FD = FieldDescriptor
INT_RANGES = {
    FD.TYPE_INT32: (-(1 << 31), (1 << 31) - 1), FD.TYPE_SINT32: (-(1 << 31), (1 << 31) - 1),
    FD.TYPE_SFIXED32: (-(1 << 31), (1 << 31) - 1), FD.TYPE_UINT32: (0, (1 << 32) - 1),
    FD.TYPE_FIXED32: (0, (1 << 32) - 1), FD.TYPE_INT64: (-(1 << 63), (1 << 63) - 1),
    FD.TYPE_SINT64: (-(1 << 63), (1 << 63) - 1), FD.TYPE_SFIXED64: (-(1 << 63), (1 << 63) - 1),
    FD.TYPE_UINT64: (0, (1 << 64) - 1), FD.TYPE_FIXED64: (0, (1 << 64) - 1),
}
UINT64_MAX = INT_RANGES[FD.TYPE_UINT64][1]


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, (bytes, bytearray)):
        return f"bin of {len(value)} bytes"
    if isinstance(value, str):
        return f"string {value[:40]!r}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    if value is None:
        return "nil"
    return type(value).__name__


# ---------------------------------------------------------------------------------------------------------------
# Typed reads of one wire value; each names ``path`` in its error.


def read_map(value: object, path: str, known: tuple[str, ...] | dict | None) -> dict:
    """A map whose keys are all in ``known`` (a typo, or a field of a newer schema, is refused; None: any keys)."""
    if not isinstance(value, dict):
        raise InvalidMessageError(f"{path} must be a map, got {_kind(value)}")
    unknown = [] if known is None else [k for k in value if k not in known]
    if unknown:
        shown = ", ".join(repr(k) for k in unknown[:5])
        raise InvalidMessageError(f"{path} has unknown field(s) {shown}; known: {', '.join(sorted(known))}")
    return value


def required(fields: dict, name: str, path: str) -> object:
    """``fields[name]``, which must be present and not nil."""
    value = fields.get(name)
    if value is None:
        raise InvalidMessageError(f"{path} is missing the field {name!r}")
    return value


def read_string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise InvalidMessageError(f"{path} must be a string, got {_kind(value)}")
    if len(value) > MAX_STRING_CHARS:
        raise MessageTooLargeError(f"{path} has {len(value)} characters, over the limit {MAX_STRING_CHARS}")
    return value


def read_number(value: object, path: str, *, positive: bool = False) -> float:
    """A finite number (int or float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidMessageError(f"{path} must be a number, got {_kind(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidMessageError(f"{path} must be finite, got {value}")
    if positive and value <= 0:
        raise InvalidMessageError(f"{path} must be > 0, got {value}")
    return value


def read_int(value: object, path: str, lo: int = 0, hi: int = UINT64_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidMessageError(f"{path} must be an integer, got {_kind(value)}")
    if not lo <= value <= hi:
        raise InvalidMessageError(f"{path} must be in [{lo}, {hi}], got {value}")
    return value


def read_list(value: object, path: str) -> list[tuple[Any, str]]:
    """The items of a list with their paths; at most :data:`MAX_LIST_ITEMS`."""
    if not isinstance(value, (list, tuple)):
        raise InvalidMessageError(f"{path} must be a list, got {_kind(value)}")
    if len(value) > MAX_LIST_ITEMS:
        raise MessageTooLargeError(f"{path} has {len(value)} items, over the limit {MAX_LIST_ITEMS}")
    return [(item, f"{path}[{i}]") for i, item in enumerate(value)]


def read_numbers(value: object, path: str, count: int) -> np.ndarray:
    """A list of exactly ``count`` finite numbers, as float64."""
    items = read_list(value, path)
    if len(items) != count:
        raise InvalidMessageError(f"{path} must have {count} numbers, got {len(items)}")
    return np.array([read_number(v, p) for v, p in items], dtype=np.float64)


def _choice(value: object, path: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidMessageError(f"{path} must be one of {', '.join(choices)}; got {_kind(value)}")
    return value


# ---------------------------------------------------------------------------------------------------------------
# The gateway's own parts: hello, engine poses, cameras


@dataclass(frozen=True)
class Hello:
    """Opens a connection: declares the engine's convention, once, before any other request."""

    convention: str
    up_axis: str | None = None
    metres_per_unit: float | None = None
    client_name: str = ""

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"convention": self.convention, "client_name": self.client_name}
        if self.up_axis is not None:
            wire["up_axis"] = self.up_axis
        if self.metres_per_unit is not None:
            wire["metres_per_unit"] = self.metres_per_unit
        return wire

    @classmethod
    def from_wire(cls, value: object, path: str) -> Hello:
        fields = read_map(value, path, tuple(name for name, _, _ in HELLO_FIELDS))
        get = fields.get
        return cls(
            read_string(required(fields, "convention", path), f"{path}.convention"),
            None if get("up_axis") is None else _choice(get("up_axis"), f"{path}.up_axis", ("Y", "Z")),
            None if get("metres_per_unit") is None else read_number(get("metres_per_unit"), f"{path}.metres_per_unit", positive=True),
            "" if get("client_name") is None else read_string(get("client_name"), f"{path}.client_name"),
        )


def _quaternion_map(q: Quaternion) -> dict[str, float]:
    return {"qw": float(q.qw), "qx": float(q.qx), "qy": float(q.qy), "qz": float(q.qz)}


def pose_to_wire(pose: EnginePose) -> dict[str, Any]:
    """An engine pose record (or 4x4 matrix) -> its wire map."""
    if isinstance(pose, TransformPose):
        return {"position": [float(v) for v in pose.position], "rotation": _quaternion_map(pose.rotation)}
    if isinstance(pose, RotatorPose):
        r = pose.rotator
        return {"position": [float(v) for v in pose.position], "rotator": {"pitch": float(r.pitch_deg), "yaw": float(r.yaw_deg), "roll": float(r.roll_deg)}}
    return {"matrix": [float(v) for v in np.asarray(pose, dtype=np.float64).reshape(16)]}


def _numbers_map(value: object, path: str, names: tuple[str, ...]) -> list[float]:
    fields = read_map(value, path, names)
    return [read_number(required(fields, name, path), f"{path}.{name}") for name in names]


def pose_from_wire(value: object, path: str, form: PoseForm) -> EnginePose:
    """A wire pose map in the connection's ``form`` -> a :class:`TransformPose`, :class:`RotatorPose` or 4x4."""
    if form == "matrix":
        fields = read_map(value, path, ("matrix",))
        return read_numbers(required(fields, "matrix", path), f"{path}.matrix", 16).reshape(4, 4)
    second = "rotation" if form == "position_quaternion" else "rotator"
    fields = read_map(value, path, ("position", second))
    position = read_numbers(required(fields, "position", path), f"{path}.position", 3)
    if form == "position_quaternion":
        return TransformPose(position, Quaternion(*_numbers_map(required(fields, second, path), f"{path}.{second}", ("qw", "qx", "qy", "qz"))))
    return RotatorPose(position, Rotator(*_numbers_map(required(fields, second, path), f"{path}.{second}", ("pitch", "yaw", "roll"))))


def camera_from_wire(value: object, path: str) -> Intrinsics:
    """``{width, height}`` plus exactly one of ``fov_x_deg``, ``fov_y_deg`` or all of ``fx, fy, cx, cy``."""
    fields = read_map(value, path, ("width", "height", "fov_x_deg", "fov_y_deg", "fx", "fy", "cx", "cy"))
    width = read_int(required(fields, "width", path), f"{path}.width", 1, 16384)
    height = read_int(required(fields, "height", path), f"{path}.height", 1, 16384)
    has = {name for name, v in fields.items() if v is not None}
    forms = ["fov_x_deg" in has, "fov_y_deg" in has, bool(has & {"fx", "fy", "cx", "cy"})]
    if sum(forms) != 1:
        raise InvalidMessageError(f"{path} needs exactly one of fov_x_deg, fov_y_deg, or fx, fy, cx, cy")

    def number(name: str) -> float:
        return read_number(required(fields, name, path), f"{path}.{name}")

    try:
        if forms[0]:
            return Intrinsics.from_fov(width, height, fov_x_deg=number("fov_x_deg"))
        if forms[1]:
            return Intrinsics.from_fov(width, height, fov_y_deg=number("fov_y_deg"))
        return Intrinsics(number("fx"), number("fy"), number("cx"), number("cy"), width, height)
    except InvalidIntrinsicsError as error:
        raise InvalidMessageError(f"{path}: {error}") from None


# ---------------------------------------------------------------------------------------------------------------
# Engine forms of whole messages (schema.MESSAGE_KINDS), both ways


def _read_pose(target: Message, value: object, path: str, convention: Convention, kind: FieldKind | None) -> None:
    to_canonical = convention.mount_to_canonical if kind == "mount" else convention.to_canonical
    try:
        c2w = to_canonical(pose_from_wire(value, path, convention.pose_form))
    except InvalidInputError as error:
        raise InvalidMessageError(f"{path}: {error}") from None
    target.matrix.values[:] = c2w.reshape(16).tolist()


def _read_camera(target: Message, value: object, path: str, convention: Convention, kind: FieldKind | None) -> None:
    camera = camera_from_wire(value, path)
    target.fx, target.fy, target.cx, target.cy = camera.fx, camera.fy, camera.cx, camera.cy
    target.width, target.height = camera.width, camera.height


def _read_box(target: Message, value: object, path: str, convention: Convention, kind: FieldKind | None) -> None:
    names = wire_fields(target.DESCRIPTOR)  # the min and max corners
    fields = read_map(value, path, names)
    corners = [read_numbers(required(fields, name, path), f"{path}.{name}", 3) for name in names]
    for field, values in zip(names.values(), translate.box_to_canonical(*corners, convention, path)):
        vec3 = getattr(target, field.name)
        vec3.x, vec3.y, vec3.z = values.tolist()


def _read_vec3(target: Message, value: object, path: str, convention: Convention, kind: FieldKind | None) -> None:
    values = read_numbers(value, path, 3)
    if kind is not None:
        values = translate.to_canonical(kind, values[None], convention, path)[0]
    target.x, target.y, target.z = values.tolist()


READ_SPECIAL = {"pose": _read_pose, "camera": _read_camera, "box": _read_box, "vec3": _read_vec3}


def _write_pose(message: Message, convention: Convention, kind: FieldKind | None) -> object:
    from_canonical = convention.mount_from_canonical if kind == "mount" else convention.from_canonical
    return pose_to_wire(from_canonical(pose_matrix(message)))


def _write_box(message: Message, convention: Convention, kind: FieldKind | None) -> object:
    fields = wire_fields(message.DESCRIPTOR)
    corners = [np.array([v.x, v.y, v.z]) for v in (getattr(message, f.name) for f in fields.values())]
    return dict(zip(fields, (c.tolist() for c in translate.box_from_canonical(*corners, convention))))


def _write_vec3(message: Message, convention: Convention, kind: FieldKind | None) -> object:
    values = np.array([[message.x, message.y, message.z]])
    return (values if kind is None else translate.from_canonical(kind, values, convention))[0].tolist()


WRITE_SPECIAL = {"pose": _write_pose, "box": _write_box, "vec3": _write_vec3}
"""Engine forms of messages in replies (intrinsics go out as their fields)."""

# ---------------------------------------------------------------------------------------------------------------
# Requests: wire map -> proto message, engine -> canonical


def _read_array(field: FieldDescriptor, data: bytes, path: str, convention: Convention, kind: FieldKind) -> bytes:
    """A packed float32 array of ``kind`` in engine units -> the canonical packed array. Must be finite."""
    try:
        values = unpack_array(data, FLOAT32, translate.COLUMNS[kind], path)
    except WireFormatError as error:
        raise InvalidMessageError(str(error)) from None
    bad = ~np.isfinite(values)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InvalidMessageError(f"{path}[{index[0]}] must be finite, got {float(values[index])}")
    return np.ascontiguousarray(translate.to_canonical(kind, values, convention, path), dtype=FLOAT32).tobytes()


def _read_scalar(field: FieldDescriptor, value: object, path: str, convention: Convention) -> object:
    kind = field_kind(field)
    if field.type == FD.TYPE_STRING:
        return read_string(value, path)
    if field.type == FD.TYPE_BOOL:
        if not isinstance(value, bool):
            raise InvalidMessageError(f"{path} must be a bool, got {_kind(value)}")
        return value
    if field.type == FD.TYPE_BYTES:
        if not isinstance(value, (bytes, bytearray)):
            raise InvalidMessageError(f"{path} must be bin (raw bytes), got {_kind(value)}")
        return bytes(value) if kind is None else _read_array(field, bytes(value), path, convention, kind)
    if field.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        number = read_number(value, path)
        return number if kind is None else float(translate.to_canonical(kind, np.array(number), convention, path))
    if field.type == FD.TYPE_ENUM:
        names = {name: number for number, name in enum_names(field.enum_type).items()}
        return names[_choice(value, path, tuple(names))]
    lo, hi = INT_RANGES[field.type]
    return read_int(value, path, lo, hi)


def _read_into(target: Message, field: FieldDescriptor, value: object, path: str, convention: Convention) -> None:
    """Fill the submessage ``target`` of ``field``."""
    special = message_kind(field.message_type)
    if special is not None:
        READ_SPECIAL[special](target, value, path, convention, field_kind(field))
        return
    read_message(target, value, path, convention)
    kind = field_kind(field)
    if kind == "rotation":  # a Quaternion: box-to-engine-world -> box-to-canonical-world
        q = translate.to_canonical(kind, np.array([[target.qw, target.qx, target.qy, target.qz]]), convention, path)[0]
        target.qw, target.qx, target.qy, target.qz = q.tolist()


def read_message(message: Message, value: object, path: str, convention: Convention) -> Message:
    """Fill ``message`` from its wire map ``value`` (engine convention -> canonical); returns it. Absent and nil
    fields stay unset; a oneof takes at most one of its fields."""
    fields = wire_fields(message.DESCRIPTOR)
    given = {name: v for name, v in read_map(value, path, fields).items() if v is not None}
    for group in oneof_groups(message.DESCRIPTOR):
        chosen = [name for name in group if name in given]
        if len(chosen) > 1:
            raise InvalidMessageError(f"{path} takes one of {', '.join(group)}; got {', '.join(chosen)}")
    message.SetInParent()
    for name, raw in given.items():
        field = fields[name]
        field_path = f"{path}.{name}"
        if is_map(field):
            entries = read_map(raw, field_path, None)
            key_field, value_field = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            target = getattr(message, field.name)
            for key, item in entries.items():
                key = _read_scalar(key_field, key, field_path, convention)
                if value_field.type == FD.TYPE_MESSAGE:
                    _read_into(target[key], value_field, item, f"{field_path}[{key!r}]", convention)
                else:
                    target[key] = _read_scalar(value_field, item, f"{field_path}[{key!r}]", convention)
        elif field.is_repeated:
            target = getattr(message, field.name)
            for item, item_path in read_list(raw, field_path):
                if field.type == FD.TYPE_MESSAGE:
                    _read_into(target.add(), field, item, item_path, convention)
                else:
                    target.append(_read_scalar(field, item, item_path, convention))
        elif field.type == FD.TYPE_MESSAGE:
            _read_into(getattr(message, field.name), field, raw, field_path, convention)
        else:
            setattr(message, field.name, _read_scalar(field, raw, field_path, convention))
    return message


# ---------------------------------------------------------------------------------------------------------------
# Replies: proto message -> wire map, canonical -> engine


def _write_value(field: FieldDescriptor, value: object, convention: Convention) -> object:
    kind = field_kind(field)
    if field.type == FD.TYPE_MESSAGE:
        return write_message(value, convention, kind)
    if field.type == FD.TYPE_ENUM:
        return enum_names(field.enum_type).get(value, value)
    if kind is not None and field.type == FD.TYPE_BYTES:
        values = unpack_array(value, FLOAT32, translate.COLUMNS[kind], field.name)
        return pack_array(translate.from_canonical(kind, values, convention), FLOAT32, translate.COLUMNS[kind], field.name)
    if kind is not None and field.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return float(translate.from_canonical(kind, np.array(value), convention))
    return value


@functools.cache
def _write_plan(descriptor: Descriptor) -> tuple[tuple[str, FieldDescriptor, str], ...]:
    """How ``write_message`` writes each field of a message, in wire order: (msgpack key, field, ``"map"``,
    ``"list"``, ``"as_is"`` (a scalar that goes out as it is), ``"optional"`` (converted, and only when set) or
    ``"value"`` (converted))."""
    plan = []
    for name, field in wire_fields(descriptor).items():
        if is_map(field):
            how = "map"
        elif field.is_repeated:
            how = "list"
        elif field.has_presence:
            how = "optional"
        elif field.type in (FD.TYPE_MESSAGE, FD.TYPE_ENUM) or field_kind(field) is not None:
            how = "value"
        else:
            how = "as_is"
        plan.append((name, field, how))
    return tuple(plan)


def write_message(message: Message, convention: Convention, kind: FieldKind | None = None) -> object:
    """A proto message -> its wire value in the connection's engine convention: a map of every field (unset
    optional fields, submessages and oneof members left out), or the engine form of :data:`.WRITE_SPECIAL`."""
    special = message_kind(message.DESCRIPTOR)
    if special in WRITE_SPECIAL:
        return WRITE_SPECIAL[special](message, convention, kind)
    out: dict[str, object] = {}
    for name, field, how in _write_plan(message.DESCRIPTOR):
        if how == "as_is":
            out[name] = getattr(message, field.name)
        elif how == "map":
            value_field = field.message_type.fields_by_name["value"]
            out[name] = {k: _write_value(value_field, v, convention) for k, v in getattr(message, field.name).items()}
        elif how == "list":
            out[name] = [_write_value(field, v, convention) for v in getattr(message, field.name)]
        elif how == "value" or message.HasField(field.name):
            out[name] = _write_value(field, getattr(message, field.name), convention)
    if kind == "rotation":  # a Quaternion: box-to-canonical-world -> box-to-engine-world
        q = translate.from_canonical(kind, np.array([[out["qw"], out["qx"], out["qy"], out["qz"]]]), convention)[0]
        out.update(zip(("qw", "qx", "qy", "qz"), q.tolist()))
    return out
