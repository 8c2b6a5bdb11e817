"""Generate ``SCHEMA.md`` (beside this file) from the gateway's schema and ``world.proto``'s comments.

    python -m worldweave.sim_clients.gateway.schema_doc          # rewrite SCHEMA.md
    python -m worldweave.sim_clients.gateway.schema_doc --check  # exit 1 when SCHEMA.md is stale

The records, their keys and types come from :mod:`.schema` (the proto's descriptors and the gateway's table); each
field's meaning is its comment in ``world.proto`` (read with protoc's source info), so the page cannot drift from
what the gateway accepts. The prose around the tables (transport, envelope, engine forms) is written here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from worldweave.proto.enums import enum_names
from worldweave.proto.generate import PROTO_FILE, PROTO_ROOT
from worldweave.sim_clients.conventions import CONVENTIONS, get_convention
from worldweave.sim_clients.gateway.codec import DEFAULT_MAX_MESSAGE_BYTES, MAX_MAP_ENTRIES
from worldweave.sim_clients.gateway.messages import MAX_LIST_ITEMS, MAX_STRING_CHARS
from worldweave.sim_clients.gateway.schema import (
    ERROR_FIELDS,
    HELLO_FIELDS,
    HELLO_REPLY_FIELDS,
    HIDDEN_FIELDS,
    RPCS,
    SCHEMA_MAJOR,
    SCHEMA_VERSION,
    field_kind,
    is_map,
    message_kind,
    wire_fields,
)

SCHEMA_PATH = Path(__file__).with_name("SCHEMA.md")
FD = FieldDescriptor
KIND_NOTES = {
    "point": "engine axes and units", "direction": "engine axes", "length": "engine units",
    "rotation": "box-to-engine-world",
    "mount": "camera-to-body, as the engine states a child's local transform (engine camera axes and units)",
}


def proto_comments() -> dict[str, str]:
    """Leading comments of ``world.proto`` by ``Message``, ``Message.field``, ``Service.Rpc``, one line each."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "world.pb"
        code = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", "--include_source_info",
                            f"--descriptor_set_out={out}", str(PROTO_ROOT / PROTO_FILE)])
        if code != 0:
            raise RuntimeError(f"protoc failed ({code}) on {PROTO_ROOT / PROTO_FILE}")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    proto = files.file[0]
    names: dict[tuple[int, ...], str] = {}
    for i, message in enumerate(proto.message_type):
        names[(4, i)] = message.name
        for j, field in enumerate(message.field):
            names[(4, i, 2, j)] = f"{message.name}.{field.name}"
    for i, service in enumerate(proto.service):
        for j, method in enumerate(service.method):
            names[(6, i, 2, j)] = f"{service.name}.{method.name}"
    return {names[tuple(loc.path)]: " ".join(loc.leading_comments.split())
            for loc in proto.source_code_info.location if tuple(loc.path) in names and loc.leading_comments}


def _type(field: FieldDescriptor) -> str:
    if is_map(field):
        key, value = (field.message_type.fields_by_name[n] for n in ("key", "value"))
        return f"map {_type(key)} → {_type(value)}"
    kind, special = field_kind(field), field.message_type and message_kind(field.message_type)
    if special == "pose":
        text = "pose"
    elif special == "camera":
        text = "camera"
    elif special == "box":
        text = "box (engine corners)"
    elif special == "vec3":
        text = "3 numbers"
    elif field.type == FD.TYPE_MESSAGE:
        text = f"[`{field.message_type.name}`](#{field.message_type.name.lower()})"
    elif field.type == FD.TYPE_ENUM:
        text = " or ".join(f'`"{name}"`' for name in enum_names(field.enum_type).values())
    elif field.type == FD.TYPE_BYTES:
        text = "bin"
    elif field.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        text = "number"
    elif field.type == FD.TYPE_STRING:
        text = "string"
    elif field.type == FD.TYPE_BOOL:
        text = "bool"
    else:
        text = _int_name(field)
    if kind is not None:
        text += f", {KIND_NOTES[kind]}"
    if field.is_repeated:
        text = f"list of {text}"
    elif field.has_presence and field.type != FD.TYPE_MESSAGE:
        text += ", optional"
    return text


def _int_name(field: FieldDescriptor) -> str:
    names = {FD.TYPE_UINT32: "uint32", FD.TYPE_UINT64: "uint64", FD.TYPE_INT32: "int32", FD.TYPE_INT64: "int64"}
    return names.get(field.type, "integer")


def _table(rows: list[tuple[str, str, str]]) -> list[str]:
    lines = ["| field | type | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | {kind} | {meaning} |" for name, kind, meaning in rows]
    return lines


def _fields(descriptor: Descriptor, comments: dict[str, str]) -> list[str]:
    fields = wire_fields(descriptor)
    if not fields:
        return ["(no fields)"]
    return _table([(name, _type(f), comments.get(f"{descriptor.name}.{f.name}", "")) for name, f in fields.items()])


def _referenced(descriptor: Descriptor, seen: dict[str, Descriptor]) -> None:
    """Every plain message type reachable from ``descriptor``'s fields, into ``seen``, in first-use order."""
    for field in wire_fields(descriptor).values():
        if field.type != FD.TYPE_MESSAGE or is_map(field) or message_kind(field.message_type):
            continue
        if field.message_type.name not in seen:
            seen[field.message_type.name] = field.message_type
            _referenced(field.message_type, seen)


HEADER = f"""# Gateway wire schema, version {SCHEMA_VERSION}

<!-- Generated by `python -m worldweave.sim_clients.gateway.schema_doc` from world.proto and
sim_clients/gateway/schema.py: edit those, not this page (a test fails when it is stale). -->

`worldweave gateway --zmq tcp://127.0.0.1:5555 --server 127.0.0.1:50051` listens on a ZMQ **ROUTER** socket and
forwards to a worldweave gRPC server. An engine connects a **DEALER** socket (NetMQ `DealerSocket`, cppzmq
`socket_type::dealer`, pyzmq `zmq.DEALER`) — or a REQ socket, whose empty delimiter frame the gateway keeps — and
sends **one msgpack map per ZMQ message** (a single frame). Every request is one RPC of the server's `WorldService`
(`world.proto`), or the gateway's own `hello`. The gateway answers every request with exactly one reply — except a
server-streaming RPC (`step`, `stream_point_cloud`, `crop_point_cloud`), answered by one reply per response message,
the last flagged — in the order the requests of that connection arrived. Requests from one connection run one at
a time; different connections run concurrently. A connection may pipeline up to 32 requests; past that, a request
is refused at once with `RESOURCE_EXHAUSTED` (that error reply can overtake the replies still pending).

The records are the RPCs' request and response messages, field for field, as msgpack maps; what the gateway adds:

* **Engine conventions.** Each connection declares its engine convention once (`hello`); poses, points, directions,
  lengths and box rotations are then read and written in that convention's axes and units (the tables say which
  fields), and a field carried in engine units drops the proto's `_m` suffix (`origins_m` → `origins`).
* **Limits and errors.** Size limits below, and an `error` reply for every failure, with a gRPC status name.

Encoding rules:

* msgpack maps with **string keys**; strings UTF-8; byte arrays as msgpack **bin** (never lists of numbers);
  no ext types. Numbers may be int, float32 or float64; `NaN` and infinities in a request are refused.
* Absent and `nil` mean the same. **Unknown fields are refused** (a typo is an error, not a silently ignored
  option). Of the fields of a proto `oneof` (e.g. a region's `box`, `oriented_box`, `sphere`) send at most one.
* Enums travel as names (`"raw"`, `"png"`, `"added"`); an absent enum is the proto's `UNSPECIFIED`.
* Packed arrays are **bin** fields holding little-endian, row-major values of the dtype and shape the field's
  meaning states (`float32 (N, 3)`: `12·N` bytes); in the gateway's units where the type says so.
* Limits: a message over `max_message_bytes` ({DEFAULT_MAX_MESSAGE_BYTES >> 20} MiB by default, `--max-message-mib`;
  sent in `hello_reply`), a list over {MAX_LIST_ITEMS} items, a string over {MAX_STRING_CHARS} characters, a map over
  {MAX_MAP_ENTRIES} entries are answered with `RESOURCE_EXHAUSTED`. Messages over 4x the limit are dropped by ZMQ itself
  (the socket's `MAXMSGSIZE`), which closes that peer's connection.

## Envelope (every message, both directions)

| field | type | meaning |
| --- | --- | --- |
| `version` | uint | schema **major** version: `{SCHEMA_MAJOR}`. Any other value is answered `FAILED_PRECONDITION`. |
| `type` | string | the record type: a request type below, its reply type (`<request type>_reply`), or `error` |
| `id` | uint64 or nil | chosen by the engine, echoed in the reply's `id` (nil when the request's `id` could not be read) |
| `body` | map | the record's fields (absent or nil: no fields) |

## Engine forms

The engine declares its convention **once per connection** in `hello`; from then on every pose in a request is
read in that convention and every pose in a reply is written in it. Names, axes and units are in
`docs/conventions.md`: {", ".join(f"`{name}`" for name in CONVENTIONS)}.

A **pose** is a map whose form depends on the convention (`pose_form` in `hello_reply`):

| pose form | conventions | fields |
| --- | --- | --- |
| `position_quaternion` | {{position_quaternion}} | `position`: 3 numbers, engine units, engine world axes; `rotation`: map `{{{{qw, qx, qy, qz}}}}` (numbers; normalised by the gateway, must not be zero), the camera's local-to-world rotation |
| `position_rotator` | {{position_rotator}} | `position`: 3 numbers (Unreal **centimetres**, CARLA metres); `rotator`: map `{{{{pitch, yaw, roll}}}}` in **degrees** |
| `matrix` | {{matrix}} | `matrix`: 16 numbers, the camera's local-to-world 4x4, **row-major** (`[r00, r01, r02, tx, r10, …, 0, 0, 0, 1]`), engine units; the rotation block must be orthonormal (no scale) |

A **camera** (the proto's `Intrinsics`) in a request: `width`, `height` (uint, pixels, 1..16384) and exactly one of
`fov_x_deg` (horizontal field of view, degrees: Unreal, CARLA, AirSim), `fov_y_deg` (vertical, degrees: Unity), or
all of `fx, fy, cx, cy` (pixels, OpenCV pixel centres). A FOV gives square pixels and `cx = (width − 1)/2`,
`cy = (height − 1)/2`. In a reply: `fx, fy, cx, cy, width, height`.

A **box** (the proto's `Box`): `min`, `max`, 3 numbers each, engine axes and units; `min` <= `max` on every engine
axis, else `INVALID_ARGUMENT` (never swapped). **3 numbers** (the proto's `Vec3`): a list `[x, y, z]`.

Depth is along the optical axis, 0 = unknown, always metric whatever the engine's unit. Frames come back exactly as
the server encodes them (`raw`: `height·width·3` bytes, rows top to bottom, RGB).

## `hello` — declare the convention (first, once per connection; may be sent again to change it)

Any other request before `hello` is answered `FAILED_PRECONDITION`. Answer: `hello_reply`.
"""


def render() -> str:
    """The text of ``SCHEMA.md``."""
    comments = proto_comments()
    forms: dict[str, list[str]] = {"position_quaternion": [], "position_rotator": [], "matrix": []}
    for name in CONVENTIONS:
        forms[get_convention(name).pose_form].append(f"`{name}`")
    lines = HEADER.format(**{form: ", ".join(names) for form, names in forms.items()}).splitlines()
    lines += _table(list(HELLO_FIELDS)) + ["", "### `hello_reply`", ""] + _table(list(HELLO_REPLY_FIELDS))
    lines += ["", "## `error` — the reply to any request that failed", ""] + _table(list(ERROR_FIELDS))
    lines += ["", "A malformed message never closes the connection or stops the gateway: it gets an `error` reply and the",
              "next message is read as usual.", "", "## Requests and replies", ""]
    seen: dict[str, object] = {}
    for rpc in RPCS.values():
        comment = comments.get(f"WorldService.{rpc.name}", "")
        lines += [f"### `{rpc.type}` — the `{rpc.name}` RPC", "", comment, ""] + _fields(rpc.request, comments)
        if rpc.streams:
            lines += ["", f"Answer: one `{rpc.reply_type}` per response, the last with `{rpc.last_field}` true:", ""]
        else:
            lines += ["", f"Answer: `{rpc.reply_type}`:", ""]
        lines += _fields(rpc.response, comments) + [""]
        _referenced(rpc.request, seen)
        _referenced(rpc.response, seen)
    lines += ["## Messages inside records", ""]
    for name, descriptor in seen.items():
        lines += [f"### `{name}`", "", comments.get(name, ""), ""] + _fields(descriptor, comments) + [""]
    lines += ["## Not offered by the gateway", ""]
    lines += [f"* `{field}`: {why}." for field, why in HIDDEN_FIELDS.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when SCHEMA.md differs from what would be written")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if SCHEMA_PATH.read_text() != text:
            print(f"{SCHEMA_PATH} is stale: run python -m worldweave.sim_clients.gateway.schema_doc", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
