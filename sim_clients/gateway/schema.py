"""The gateway's wire schema: derived from ``world.proto``'s descriptors, plus one small table of what the gateway
adds on top of gRPC. ``SCHEMA.md`` is generated from this module (``python -m worldweave.sim_clients.gateway.schema_doc``).

Derivation, for every RPC of ``WorldService``:

* the request ``type`` is the RPC's name in snake case (``NearestSurface`` -> ``nearest_surface``) and its ``body``
  is the RPC's request message as a msgpack map; each response message comes back as one ``<type>_reply`` (a
  server-streaming RPC answers one reply per message, the last flagged by the field :data:`STREAM_LAST` names);
* a field's key is its proto name, except that a field the gateway converts into engine units loses its ``_m``
  suffix (``origins_m`` -> ``origins``: engine units, not metres); enums travel as the short names of
  :mod:`worldweave.proto.enums` (``"raw"``, ``"png"``, ``"added"``), ``bytes`` as msgpack bin.

So a field added to the ``.proto`` reaches engines with no edit here; only a field the gateway must convert (a new
point, direction or length in world units) needs a row in :data:`FIELD_KINDS`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from worldweave.proto.worldweave.v1 import world_pb2 as pb

SCHEMA_VERSION = "2.0.0"
"""Semver of the gateway's wire schema; the envelope carries its major part. 2.0.0: records derived from the proto."""
SCHEMA_MAJOR = int(SCHEMA_VERSION.split(".")[0])
SERVICE = pb.DESCRIPTOR.services_by_name["WorldService"]

FieldKind = Literal["point", "direction", "length", "rotation", "mount"]
FIELD_KINDS: dict[str, FieldKind] = {
    # Points in world axes, metres: engine axes and units on the gateway (packed float32 (N, 3) or a Vec3).
    "origins_m": "point", "points_m": "point", "surface_points_m": "point", "contact_points_m": "point",
    "positions_m": "point", "centers_m": "point", "center_m": "point", "starts_m": "point", "ends_m": "point",
    "min_m": "point", "max_m": "point",
    # Directions in world axes, any length: engine axes.
    "directions": "direction", "normals": "direction", "NormalImage.data": "direction",
    # Lengths, metres: engine units (a packed float32 array of any shape, a double, or a Vec3 of extents).
    "max_range_m": "length", "distance_m": "length", "clearance_m": "length", "radii_m": "length",
    "radius_m": "length", "half_extents_m": "length", "voxel_size_m": "length",
    # Box-to-world rotations: box-to-engine-world (packed float32 (N, 4) qw, qx, qy, qz, or a Quaternion).
    "rotations_wxyz": "rotation", "OrientedBox.rotation": "rotation",
    # A rig camera's mount: relative to the rig's body, as the engine states a child's local transform (a pose in the
    # connection's pose form, converted by ``Convention.mount_to_canonical``, not as a camera-to-world pose).
    "RigCamera.mount": "mount",
}
"""Fields the gateway converts between the connection's engine convention and the canonical frame, by field name
(or ``Message.field`` where a name means different things in different messages)."""
MessageKind = Literal["pose", "camera", "box", "vec3"]
MESSAGE_KINDS: dict[str, MessageKind] = {"Pose": "pose", "Intrinsics": "camera", "Box": "box", "Vec3": "vec3"}
"""Messages with an engine form: a pose in the connection's pose form (both ways); intrinsics that a request may also
give as a field of view; an axis-aligned box whose corners are re-sorted after conversion; a Vec3 as 3 numbers."""
HIDDEN_FIELDS: dict[str, str] = {
    "StreamPointCloudRequest.follow": "the gateway answers a request once: poll with since_version instead",
    "WorldService.WatchWorld": "an endless stream of a world's step events: the gateway answers a request once",
}
"""Proto fields (and RPCs, as ``WorldService.Name``) the gateway does not offer, and why."""
STREAM_LAST: dict[str, str] = {
    "StreamPointCloudResponse": "last_in_version", "CropPointCloudResponse": "last", "StepResponse": "last_in_request",
}
"""The bool field that marks the last reply of a server-streaming RPC's answer, by response message."""
UNIT_SUFFIX = "_m"


def snake_case(name: str) -> str:
    """``NearestSurface`` -> ``nearest_surface``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@functools.cache
def field_kind(field: FieldDescriptor) -> FieldKind | None:
    """How the gateway converts ``field`` (:data:`FIELD_KINDS`), or None."""
    return FIELD_KINDS.get(f"{field.containing_type.name}.{field.name}", FIELD_KINDS.get(field.name))


@functools.cache
def message_kind(descriptor: Descriptor) -> MessageKind | None:
    """The engine form of a message type (:data:`MESSAGE_KINDS`), or None."""
    return MESSAGE_KINDS.get(descriptor.name)


def wire_name(field: FieldDescriptor) -> str:
    """The field's msgpack key: its proto name, less ``_m`` where the gateway carries it in engine units."""
    if field_kind(field) in ("point", "length") and field.name.endswith(UNIT_SUFFIX):
        return field.name[: -len(UNIT_SUFFIX)]
    return field.name


@functools.cache
def wire_fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    """A message's fields by msgpack key, in field-number order, less :data:`HIDDEN_FIELDS`."""
    fields = sorted(descriptor.fields, key=lambda f: f.number)
    return {wire_name(f): f for f in fields if f"{descriptor.name}.{f.name}" not in HIDDEN_FIELDS}


@functools.cache
def oneof_groups(descriptor: Descriptor) -> tuple[tuple[str, ...], ...]:
    """The msgpack keys of each oneof of a message that has two or more members (a proto3 ``optional`` field is a
    oneof of its own, which no message can set twice)."""
    fields = wire_fields(descriptor)
    groups = (tuple(name for name, f in fields.items() if f.containing_oneof is oneof) for oneof in descriptor.oneofs)
    return tuple(group for group in groups if len(group) > 1)


@functools.cache
def is_map(field: FieldDescriptor) -> bool:
    """Whether ``field`` is a proto ``map<,>``."""
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


@dataclass(frozen=True)
class Rpc:
    """One RPC as the gateway offers it."""

    name: str
    """The RPC's name in ``WorldService`` (``Raycast``)."""
    type: str
    """The request's ``type`` (``raycast``)."""
    reply_type: str
    """Each reply's ``type`` (``raycast_reply``)."""
    request: Descriptor
    response: Descriptor
    streams: bool
    """Server-streaming: one reply per response message, the last with :attr:`last_field` true."""
    last_field: str | None


def _rpc(method) -> Rpc:
    last = STREAM_LAST.get(method.output_type.name)
    if method.server_streaming and last is None:
        raise RuntimeError(f"{method.name} streams {method.output_type.name}: name its last-reply flag in STREAM_LAST")
    return Rpc(method.name, snake_case(method.name), snake_case(method.name) + "_reply", method.input_type,
               method.output_type, method.server_streaming, last)


RPCS: dict[str, Rpc] = {
    rpc.type: rpc for rpc in map(_rpc, (m for m in SERVICE.methods if f"{SERVICE.name}.{m.name}" not in HIDDEN_FIELDS))
}
"""Every RPC of ``WorldService`` by request type."""
REPLY_TYPES: dict[str, Rpc] = {rpc.reply_type: rpc for rpc in RPCS.values()}

# ---------------------------------------------------------------------------------------------------------------
# The gateway's own records (no RPC behind them): name, type, meaning.

HELLO_FIELDS = (
    ("convention", "string", "the engine's convention, one of the names above"),
    ("up_axis", '`"Y"` or `"Z"`, optional', '`usd` only: the stage\'s up axis (default `"Z"`)'),
    ("metres_per_unit", "number > 0, optional", "`usd` only: the stage's `metersPerUnit` (default 1)"),
    ("client_name", "string, optional", "for the gateway's log"),
)
HELLO_REPLY_FIELDS = (
    ("schema_version", "string", f'this schema\'s semver, `"{SCHEMA_VERSION}"`'),
    ("convention", "string", "the convention now in force on this connection"),
    ("metres_per_unit", "number", "its length unit, metres (Unreal 0.01)"),
    ("pose_form", "string", "`position_quaternion`, `position_rotator` or `matrix`: how poses are written"),
    ("max_message_bytes", "uint", "the gateway's message limit, bytes"),
    ("server", "map", "the server's `get_server_info_reply`: API version, capabilities, generator, limits"),
)
ERROR_FIELDS = (
    ("code", "string", "a gRPC status name: `INVALID_ARGUMENT` (malformed message or bad value), `RESOURCE_EXHAUSTED` "
     "(over a limit), `FAILED_PRECONDITION` (no `hello` yet, schema version mismatch), `NOT_FOUND`, `UNAVAILABLE` "
     "(server not reachable), `UNIMPLEMENTED`, `INTERNAL`, or any other status the server answered with"),
    ("message", "string", "what was wrong, naming the field path (`render.poses[2].rotation.qw`) and the bad value"),
)
ENVELOPE_FIELDS = ("version", "type", "id", "body")
"""The keys of every message: schema major version, record type, request id, the record itself."""
