"""Bytes <-> records: the size limit, msgpack itself, the envelope and the schema version (pure functions).

Every message is one msgpack map, the *envelope*:

    {"version": 2, "type": "render", "id": 7, "body": {...the record's fields...}}

``version`` is the schema's major version (:data:`.schema.SCHEMA_VERSION` is the full semver, sent in
``hello_reply``); ``id`` is chosen by the engine and echoed in the reply (nil allowed); ``body`` is the record.
Decoding never trusts a length: msgpack itself is limited (list, map, string, bin sizes; no ext types), and every
error is a :class:`GatewayError` whose ``request_id`` is set whenever the envelope's ``id`` could be read.
"""

from __future__ import annotations

from typing import Any

import msgpack
from google.protobuf import message_factory
from google.protobuf.message import Message

from worldweave.proto.errors import WorldweaveError
from worldweave.sim_clients.conventions import Convention
from worldweave.sim_clients.gateway.errors import (
    GatewayError,
    HandshakeRequiredError,
    InvalidMessageError,
    MessageTooLargeError,
    SchemaVersionError,
)
from worldweave.sim_clients.gateway.messages import (
    MAX_LIST_ITEMS,
    MAX_STRING_CHARS,
    Hello,
    read_int,
    read_map,
    read_message,
    required,
)
from worldweave.sim_clients.gateway.schema import ENVELOPE_FIELDS, RPCS, SCHEMA_MAJOR, SCHEMA_VERSION

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest message accepted by default, bytes (a few raw 1920x1080 frames)."""
MAX_MAP_ENTRIES = 64
"""Most entries in any msgpack map (every record has far fewer fields)."""
REQUEST_TYPES = ("hello", *RPCS)
"""Every request ``type``: the gateway's ``hello``, then one per RPC."""


ENVELOPE_ROOM_BYTES = 64 * 1024
"""Room a packed envelope gets beyond its binary fields' bytes, bytes (msgpack grows the buffer if it needs more)."""


_BINARY = (bytes, bytearray, memoryview)
_HOLDS_BINARY = (*_BINARY, dict, list, tuple)


def binary_bytes(value: object) -> int:
    """Bytes in the binary values (``bytes``, ``bytearray``, ``memoryview``) anywhere inside ``value``'s maps and
    lists."""
    if isinstance(value, _BINARY):
        return len(value)
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (list, tuple)):
        return 0
    return sum([binary_bytes(item) for item in value if isinstance(item, _HOLDS_BINARY)])  # numbers and strings: 0


def encode(record_type: str, body: dict[str, Any], request_id: int | None) -> bytes:
    """A record -> one msgpack envelope (bytes)."""
    envelope = {"version": SCHEMA_MAJOR, "type": record_type, "id": request_id, "body": body}
    return msgpack.packb(envelope, use_bin_type=True)


def encode_view(record_type: str, body: dict[str, Any], request_id: int | None) -> memoryview:
    """:func:`encode`'s bytes as a read-only view, for large records (the gateway's replies, which carry frames).

    Packed into one buffer sized for the record's binary fields up front, so a frame's pixels are copied once (no
    growing buffer, no final copy into ``bytes``); ZMQ can send the view without copying it again (``copy=False``)."""
    envelope = {"version": SCHEMA_MAJOR, "type": record_type, "id": request_id, "body": body}
    packer = msgpack.Packer(use_bin_type=True, autoreset=False, buf_size=ENVELOPE_ROOM_BYTES + binary_bytes(body))
    packer.pack(envelope)
    return packer.getbuffer().toreadonly()


def encode_error(error: WorldweaveError, request_id: int | None) -> bytes:
    """An ``error`` reply for ``error`` (its gRPC status name and message)."""
    return encode("error", {"code": error.code, "message": str(error)}, request_id)


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


def decode_envelope(payload: bytes, types: tuple[str, ...], max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> tuple[int | None, str, dict]:
    """Bytes -> ``(request id, type, body map)``, the body unread; ``types`` are the accepted ``type`` values."""
    envelope = read_map(_unpack(payload, max_message_bytes), "message", None)  # keys checked once the version is known
    request_id = None
    try:
        if envelope.get("id") is not None:
            request_id = read_int(envelope["id"], "message.id")
        version = read_int(required(envelope, "version", "message"), "message.version")
        if version != SCHEMA_MAJOR:
            raise SchemaVersionError(
                f"message has schema version {version}, this gateway speaks {SCHEMA_MAJOR} (full {SCHEMA_VERSION}): "
                f"use the engine code shipped with this worldweave version"
            )
        read_map(envelope, "message", ENVELOPE_FIELDS)
        record_type = required(envelope, "type", "message")
        if record_type not in types:
            raise InvalidMessageError(f"message.type must be one of {', '.join(types)}; got {record_type!r}")
        body = envelope.get("body")
        return request_id, record_type, {} if body is None else read_map(body, f"{record_type} (the body)", None)
    except GatewayError as error:
        error.request_id = request_id
        raise


def decode_request(
    payload: bytes, *, convention: Convention | None, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> tuple[int | None, str, Hello | Message]:
    """Bytes from an engine -> ``(request id, type, record)``: a :class:`Hello`, or the RPC's request message with
    every value converted from ``convention`` (``None`` before the connection's hello) to canonical metres. Raises a
    :class:`GatewayError` subclass naming the bad value."""
    request_id, record_type, body = decode_envelope(payload, REQUEST_TYPES, max_message_bytes)
    try:
        if record_type == "hello":
            return request_id, record_type, Hello.from_wire(body, record_type)
        if convention is None:
            raise HandshakeRequiredError(f"{record_type} before hello: send hello with your convention first")
        rpc = RPCS[record_type]
        return request_id, record_type, read_message(message_factory.GetMessageClass(rpc.request)(), body, record_type, convention)
    except GatewayError as error:
        error.request_id = request_id
        raise
