"""The few protobuf fields the front door reads or writes in forwarded bytes, without decoding whole messages.

The front door forwards requests and responses as raw bytes; it needs a request's ``world_id`` (field 1 of every
request that names a world), a point-cloud chunk's ``version`` and ``last_in_version`` (to reopen a follow
stream where it stopped), and a Step answer's ``request_index`` (renumbered when a Step stream continues on
another replica). A frame's megabytes are skipped by their length prefix, never copied or parsed.

Wire format: each field is a varint key ``(number << 3) | wire type`` followed by a varint (type 0), 8 bytes
(type 1), a varint length and that many bytes (type 2) or 4 bytes (type 5). For a singular scalar field the last
occurrence wins, so appending a field overrides it without rewriting the message.
"""

from __future__ import annotations

from worldweave.proto.errors import InvalidInputError
from worldweave.proto.splice import read_varint, varint

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


def scalar_fields(data: bytes, wanted: frozenset[int]) -> dict[int, int | bytes]:
    """The last value of each field number in ``wanted`` found in the message ``data``: an int for a varint field,
    the bytes of a length-delimited one. Fields not present are absent from the result. ``InvalidInputError`` for
    bytes that are not a protobuf message."""
    found: dict[int, int | bytes] = {}
    at, end = 0, len(data)
    while at < end:
        key, at = read_varint(data, at)
        number, kind = key >> 3, key & 7
        if kind == VARINT:
            value, at = read_varint(data, at)
            if number in wanted:
                found[number] = value
        elif kind == LENGTH_DELIMITED:
            length, at = read_varint(data, at)
            if at + length > end:
                raise InvalidInputError(f"malformed protobuf: field {number} runs past the message ({end} bytes)")
            if number in wanted:
                found[number] = bytes(data[at:at + length])
            at += length
        elif kind == FIXED64:
            at += 8
        elif kind == FIXED32:
            at += 4
        else:
            raise InvalidInputError(f"malformed protobuf: wire type {kind} of field {number} at byte {at}")
        if at > end:
            raise InvalidInputError(f"malformed protobuf: field {number} runs past the message ({end} bytes)")
    return found


WORLD_ID_FIELD = 1
"""``world_id`` is field 1 of every WorldService request that names a world (CreateWorld's is the id to create)."""


def string_field(message: bytes, number: int) -> str:
    """The string field ``number`` of a message's bytes ("" when unset); ``InvalidInputError`` for bytes that are
    not a protobuf message or a field that is not UTF-8."""
    value = scalar_fields(message, frozenset({number})).get(number, b"")
    try:
        return value.decode("utf-8") if isinstance(value, bytes) else ""
    except UnicodeDecodeError:
        raise InvalidInputError(f"field {number} is not UTF-8 text") from None


def world_id_of(request: bytes) -> str:
    """The ``world_id`` of a request's bytes ("" when unset); ``InvalidInputError`` as ``string_field``."""
    return string_field(request, WORLD_ID_FIELD)


def with_varint_field(message: bytes, number: int, value: int) -> bytes:
    """``message`` with the varint field ``number`` set to ``value`` (appended: the last occurrence wins)."""
    return message + varint(number << 3 | VARINT) + varint(value)


def with_string_field(message: bytes, number: int, value: str) -> bytes:
    """``message`` with the string field ``number`` set to ``value`` (appended: the last occurrence wins)."""
    encoded = value.encode("utf-8")
    return message + varint(number << 3 | LENGTH_DELIMITED) + varint(len(encoded)) + encoded
