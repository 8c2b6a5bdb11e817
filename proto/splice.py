"""Protobuf wire bytes with one large ``bytes`` field spliced in, so that a frame's pixels are copied once.

Filling a message's ``bytes`` field from an array and serializing it copies the payload several times (the array to
``bytes``, into the message, into its serialization: ~0.5 ms for a 640x480 RGB frame). ``serialize_with_bytes``
serializes the message with that field left empty, then writes the payload straight from its buffer into the
output, between the field's tag and whatever follows the message holding it, and rewrites the length prefixes of
the submessages on the way. The result is byte for byte what ``SerializeToString`` gives once the field is set:
the field must be the last by number of its message (an encoder writes fields in number order), and its message is
found in the serialized bytes by walking the tags (protobuf's encoding: varint tags and lengths, little-endian
fixed-width numbers).

Part of the wire layer: protobuf only, pure functions.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from worldweave.proto.errors import WireFormatError

LENGTH_DELIMITED = 2
"""Wire type of ``bytes``, strings and submessages: a varint length, then that many bytes."""
FIXED_WIDTH = {1: 8, 5: 4}
"""Wire type -> byte count of the fixed-width ones (64-bit and 32-bit numbers)."""


def varint(value: int) -> bytes:
    """Protobuf's base-128 encoding of a non-negative integer (7 bits per byte, least significant first)."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes, offset: int) -> tuple[int, int]:
    """The varint at ``data[offset:]`` and the offset just past it; ``WireFormatError`` when it runs off the end or
    past 64 bits."""
    value = shift = 0
    while True:
        if offset >= len(data) or shift > 63:
            raise WireFormatError(f"malformed protobuf: a varint runs past byte {offset} of {len(data)}")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7


def find_field(data: bytes, start: int, end: int, number: int) -> tuple[int, int, int]:
    """The length-delimited field ``number`` among the fields in ``data[start:end]`` (one message's content):
    ``(offset of its length varint, offset of its content, offset past its content)``."""
    offset = start
    while offset < end:
        key, offset = read_varint(data, offset)
        field, wire_type = key >> 3, key & 7
        if wire_type == LENGTH_DELIMITED:
            length_at = offset
            length, offset = read_varint(data, offset)
            if field == number:
                return length_at, offset, offset + length
            offset += length
        elif wire_type == 0:
            _, offset = read_varint(data, offset)
        elif wire_type in FIXED_WIDTH:
            offset += FIXED_WIDTH[wire_type]
        else:
            raise WireFormatError(f"protobuf wire type {wire_type} (groups) is not used by world.proto")
    raise WireFormatError(f"field {number} is not in the serialized message")


def serialize_with_bytes(message: Message, path: Sequence[str], data: bytes | memoryview) -> bytes:
    """``message`` serialized as if the ``bytes`` field at ``path`` (field names from ``message`` down, e.g.
    ``("frame", "rgb", "data")``) held ``data`` (bytes, or any C-contiguous buffer such as an image array), which is
    copied once, from its own buffer.

    The field must be empty in ``message``, every message on the way to it set, and it must be the last field by
    number of its message (``ValueError`` otherwise: a programming error, not bad input)."""
    descriptor, holder = message.DESCRIPTOR, message
    numbers = []
    for depth, name in enumerate(path):
        field = descriptor.fields_by_name[name]
        numbers.append(field.number)
        if depth < len(path) - 1:
            if not holder.HasField(name):
                raise ValueError(f"serialize_with_bytes: {'.'.join(path[:depth + 1])} is not set")
            holder, descriptor = getattr(holder, name), field.message_type
    last = descriptor.fields_by_name[path[-1]]
    if last.type != FieldDescriptor.TYPE_BYTES or last.number != max(f.number for f in descriptor.fields):
        raise ValueError(f"serialize_with_bytes: {'.'.join(path)} is not the last-numbered bytes field of its message")
    if getattr(holder, path[-1]):
        raise ValueError(f"serialize_with_bytes: {'.'.join(path)} is not empty")
    serialized = message.SerializeToString()
    data = memoryview(data).cast("B")  # one byte per item, whatever the buffer's shape (a C-contiguous array)
    size = len(data)
    if size == 0:
        return serialized  # an empty bytes field is not written
    tail = varint(numbers[-1] << 3 | LENGTH_DELIMITED) + varint(size)
    # Walk down to the message holding the field: each level's length prefix grows by what is added inside it.
    levels = []
    start, end = 0, len(serialized)
    for number in numbers[:-1]:
        length_at, start, end = find_field(serialized, start, end, number)
        levels.append((length_at, start, end))
    added = len(tail) + size
    lengths = []
    for length_at, start, end in reversed(levels):
        prefix = varint(end - start + added)
        lengths.append(prefix)
        added += len(prefix) - (start - length_at)
    lengths.reverse()
    parts: list[bytes | memoryview] = []
    position = 0
    for (length_at, start, _), prefix in zip(levels, lengths):
        parts += [serialized[position:length_at], prefix]
        position = start
    inner_end = levels[-1][2] if levels else len(serialized)
    parts += [serialized[position:inner_end], tail, data, serialized[inner_end:]]
    return b"".join(parts)
