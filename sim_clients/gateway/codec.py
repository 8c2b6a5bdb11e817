"""Bytes <-> typed records: the size limit, msgpack itself, the envelope and the schema version (pure functions).

Every message is one msgpack map, the *envelope*:

    {"version": 1, "type": "render", "id": 7, ...the record's fields...}

``version`` is the schema's major version (:data:`SCHEMA_VERSION` is the full semver, sent in ``hello_reply``);
``id`` is chosen by the engine and echoed in the reply (nil allowed). Decoding never trusts a length: msgpack
itself is limited (list, map, string, bin sizes; no ext types), and every error is a :class:`GatewayError`
whose ``request_id`` is set whenever the envelope's ``id`` could be read.
"""

from __future__ import annotations

from typing import Any

import msgpack

from worldweave.proto.errors import WorldweaveError
from worldweave.sim_clients.conventions import PoseForm
from worldweave.sim_clients.gateway.errors import (
    GatewayError,
    InvalidMessageError,
    MessageTooLargeError,
    SchemaVersionError,
)
from worldweave.sim_clients.gateway.messages import (
    MAX_LIST_ITEMS,
    MAX_STRING_CHARS,
    REPLY_TYPES,
    REQUEST_TYPES,
    UINT64_MAX,
    ErrorReply,
    Reader,
    Reply,
    Request,
)

SCHEMA_VERSION = "1.0.0"
"""Semver of the wire schema in ``SCHEMA.md``; the envelope carries its major part."""
SCHEMA_MAJOR = int(SCHEMA_VERSION.split(".")[0])
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest message accepted by default, bytes (a few raw 1920x1080 frames)."""
MAX_MAP_ENTRIES = 64
"""Most entries in any msgpack map (every record has far fewer fields)."""


def encode(record: Request | Reply, request_id: int | None) -> bytes:
    """A record -> one msgpack envelope (bytes)."""
    envelope: dict[str, Any] = {"version": SCHEMA_MAJOR, "type": record.TYPE, "id": request_id}
    envelope.update(record.to_wire())
    return msgpack.packb(envelope, use_bin_type=True)


def encode_error(error: WorldweaveError, request_id: int | None) -> bytes:
    """An ``error`` reply for ``error`` (its gRPC status name and message)."""
    return encode(ErrorReply(error.code, str(error)), request_id)


def _unpack(payload: bytes, max_message_bytes: int) -> object:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise InvalidMessageError(f"a message must be bytes, got {type(payload).__name__}")
    if len(payload) > max_message_bytes:
        raise MessageTooLargeError(f"message of {len(payload)} bytes is over the gateway's limit of {max_message_bytes} bytes")
    try:
        return msgpack.unpackb(
            payload, raw=False, strict_map_key=True, use_list=True,
            max_str_len=4 * MAX_STRING_CHARS, max_bin_len=max_message_bytes, max_array_len=MAX_LIST_ITEMS,
            max_map_len=MAX_MAP_ENTRIES, max_ext_len=0,
        )
    except msgpack.exceptions.StackError:
        raise InvalidMessageError("message is not valid msgpack: nested too deeply") from None
    except ValueError as error:  # msgpack's format, truncation, extra-data and limit errors are all ValueErrors
        if "exceeds max_" in str(error):
            raise MessageTooLargeError(f"message holds a field over the gateway's limits: {error}") from None
        raise InvalidMessageError(f"message is not valid msgpack: {error or type(error).__name__}") from None


def _decode(payload: bytes, types: dict[str, type], pose_form: PoseForm | None, max_message_bytes: int) -> tuple[int | None, Any]:
    value = _unpack(payload, max_message_bytes)
    envelope = Reader(value, "message")
    request_id: int | None = None
    try:
        request_id = envelope.int("id", required=False, hi=UINT64_MAX)
        version = envelope.int("version", hi=UINT64_MAX)
        if version != SCHEMA_MAJOR:
            raise SchemaVersionError(
                f"message has schema version {version}, this gateway speaks {SCHEMA_MAJOR} (full {SCHEMA_VERSION}): "
                f"use the engine code shipped with this worldweave version"
            )
        type_name = envelope.choice("type", tuple(types))
        record = types[type_name].from_wire(envelope.renamed(type_name), pose_form)
        envelope.done()
    except GatewayError as error:
        error.request_id = request_id
        raise
    return request_id, record


def decode_request(payload: bytes, *, pose_form: PoseForm | None, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> tuple[int | None, Request]:
    """Bytes from an engine -> ``(request id, request record)``; poses are read in ``pose_form`` (``None``
    before the connection's hello). Raises a :class:`GatewayError` subclass naming the bad value."""
    return _decode(payload, REQUEST_TYPES, pose_form, max_message_bytes)


def decode_reply(payload: bytes, *, pose_form: PoseForm | None, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> tuple[int | None, Reply]:
    """Bytes from the gateway -> ``(request id, reply record)`` (the engine side's half, used by Python clients)."""
    return _decode(payload, REPLY_TYPES, pose_form, max_message_bytes)
