"""Protobuf wire bytes with one large ``bytes`` field spliced in, so that a frame's pixels are copied once.

Filling a message's ``bytes`` field from an array and serializing it copies the payload several times (the array to
``bytes``, into the message, into its serialization: ~0.5 ms for a 640x480 RGB frame). ``serialize_with_bytes``
serializes the message with that field left empty, then writes the payload straight from its buffer into the
output, between the field's tag and whatever follows the message holding it, and rewrites the length prefixes of
the submessages on the way. The result is byte for byte what ``SerializeToString(deterministic=True)`` gives once
the field is set (map fields, such as a step's timings, in key order, so equal messages give equal bytes): the field
must be the last by number of its message (an encoder writes fields in number order), and its message is
found in the serialized bytes by walking the tags (protobuf's encoding: varint tags and lengths, little-endian
fixed-width numbers). ``serialize_with_fields`` does the same for several ``bytes`` fields of the top message, in
any position (a point-cloud chunk's arrays).

``split_bytes`` is the reverse, for a receiver: the message's wire bytes without that field (short: parsed as a
message) and a view of the field's bytes inside the received buffer, so that the pixels are not copied at all
(parsing copies every ``bytes`` field into the message, and each read of it copies it out again).

Part of the wire layer: protobuf only, pure functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from worldweave.proto.errors import WireFormatError

LENGTH_DELIMITED = 2
"""Wire type of ``bytes``, strings and submessages: a varint length, then that many bytes."""
FIXED_WIDTH = {1: 8, 5: 4}
"""Wire type -> byte count of the fixed-width ones (64-bit and 32-bit numbers)."""

M = TypeVar("M", bound=Message)


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


def _fields(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int, int, int]]:
    """The fields in ``data[start:end]`` (one message's content), in order: ``(number, wire type, offset of its tag,
    offset of its length varint, offset of its content, offset past it)``; for a field that is not length-delimited
    the length varint's offset is its content's. ``WireFormatError`` when the fields do not end at ``end``."""
    offset = start
    while offset < end:
        tag_at = offset
        key, offset = read_varint(data, offset)
        field, wire_type = key >> 3, key & 7
        length_at = offset
        if wire_type == LENGTH_DELIMITED:
            length, content_at = read_varint(data, offset)
            offset = content_at + length
        elif wire_type == 0:
            content_at = offset
            _, offset = read_varint(data, offset)
        elif wire_type in FIXED_WIDTH:
            content_at = offset
            offset += FIXED_WIDTH[wire_type]
        else:
            raise WireFormatError(f"protobuf wire type {wire_type} (groups) is not used by world.proto")
        yield field, wire_type, tag_at, length_at, content_at, offset
    if offset != end:
        raise WireFormatError(f"malformed protobuf: a field runs past byte {end} of its message")


def find_field(data: bytes, start: int, end: int, number: int) -> tuple[int, int, int]:
    """The length-delimited field ``number`` among the fields in ``data[start:end]`` (one message's content):
    ``(offset of its length varint, offset of its content, offset past its content)``."""
    for field, wire_type, _, length_at, content_at, content_end in _fields(data, start, end):
        if field == number and wire_type == LENGTH_DELIMITED:
            return length_at, content_at, content_end
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
    serialized = message.SerializeToString(deterministic=True)  # map entries in key order, not the map's hash order
    data = memoryview(data).cast("B")  # one byte per item, whatever the buffer's shape (a C-contiguous array)
    size = len(data)
    if size == 0:
        return serialized  # an empty bytes field is not written
    tail = _field_head(numbers[-1], size)
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


def serialize_with_fields(message: Message, fields: Mapping[str, bytes | memoryview]) -> bytes:
    """``message`` serialized as if its top-level ``bytes`` fields named in ``fields`` held those buffers (bytes, or
    any C-contiguous buffer such as an array), each copied once, from its own buffer: byte for byte what
    ``SerializeToString(deterministic=True)`` gives once they are set, their tags and lengths written among the
    message's own fields in field-number order (an empty buffer, as an empty field, is not written). The fields must
    be empty in ``message`` (``ValueError`` otherwise, or for a field that is not ``bytes``: a programming error)."""
    descriptor = message.DESCRIPTOR
    spliced = []
    for name, data in fields.items():
        field = descriptor.fields_by_name[name]
        if field.type != FieldDescriptor.TYPE_BYTES or getattr(message, name):
            raise ValueError(f"serialize_with_fields: {name} is not an empty bytes field of {descriptor.name}")
        view = memoryview(data)
        if view.nbytes:
            spliced.append((field.number, view.cast("B")))  # one byte per item, whatever the buffer's shape
    spliced.sort(key=lambda item: item[0])
    serialized = message.SerializeToString(deterministic=True)
    parts: list[bytes | memoryview] = []
    position = 0
    for number, wire_type, tag_at, *_ in _fields(serialized, 0, len(serialized)):
        while spliced and spliced[0][0] < number:
            field_number, data = spliced.pop(0)
            parts += [serialized[position:tag_at], _field_head(field_number, len(data)), data]
            position = tag_at
    parts.append(serialized[position:])
    for field_number, data in spliced:
        parts += [_field_head(field_number, len(data)), data]
    return b"".join(parts)


def _field_head(number: int, size: int) -> bytes:
    """The tag and length of length-delimited field ``number`` holding ``size`` bytes."""
    return varint(number << 3 | LENGTH_DELIMITED) + varint(size)


def _only_field(data: bytes, start: int, end: int, number: int) -> tuple[int, int, int, int] | None:
    """The field ``number`` among the fields in ``data[start:end]`` when it occurs there exactly once, length-delimited:
    ``(offset of its tag, offset of its length varint, offset of its content, offset past its content)``; None when it
    is absent, repeated (protobuf merges repeats) or of another wire type."""
    found = None
    for field, wire_type, *offsets in _fields(data, start, end):
        if field == number:
            if found is not None or wire_type != LENGTH_DELIMITED:
                return None
            found = tuple(offsets)
    return found


def split_bytes(data: bytes, numbers: Sequence[int]) -> tuple[bytes, memoryview] | None:
    """``data`` (a serialized message) without the ``bytes`` field at the path of field ``numbers`` (from the top
    message down, e.g. ``(4, 4, 4)`` for a ``StepResponse``'s ``frame.rgb.data``), and a read-only view of that field's
    bytes inside ``data`` (no copy): the reverse of ``serialize_with_bytes``. The length prefixes of the messages on
    the way are rewritten, so the first part parses as the message with the field empty.

    None when the field, or a message on the way to it, is absent or occurs more than once (the caller parses
    ``data`` whole); ``WireFormatError`` when ``data`` is malformed on that path."""
    levels = []
    start, end = 0, len(data)
    for number in numbers:
        found = _only_field(data, start, end, number)
        if found is None:
            return None
        levels.append(found)
        _, _, start, end = found
    tag_at, _, start, end = levels[-1]
    removed = end - tag_at
    prefixes = []
    for _, length_at, content_at, content_end in reversed(levels[:-1]):
        prefix = varint(content_end - content_at - removed)
        prefixes.append(prefix)
        removed += (content_at - length_at) - len(prefix)
    prefixes.reverse()
    parts: list[bytes] = []
    position = 0
    for (_, length_at, content_at, _), prefix in zip(levels[:-1], prefixes):
        parts += [data[position:length_at], prefix]
        position = content_at
    parts += [data[position:tag_at], data[end:]]
    return b"".join(parts), memoryview(data)[start:end].toreadonly()


@dataclass(frozen=True)
class SplitMessage(Generic[M]):
    """A received message whose one large ``bytes`` field was left in the received buffer (``split_parser``)."""

    message: M
    """The message, that field empty."""
    data: memoryview
    """The field's bytes: a read-only view of the received buffer (or of a copy when the message could not be split)."""
    wire: bytes
    """The message's wire bytes, as received."""

    def whole(self) -> M:
        """The message with the field in it, as ``FromString(wire)`` parses it (one copy of the field)."""
        return type(self.message).FromString(self.wire)


def split_parser(message_class: type[M], path: Sequence[str]) -> Callable[[bytes], SplitMessage[M]]:
    """A gRPC response deserializer: wire bytes -> ``SplitMessage`` with the ``bytes`` field at ``path`` (field names
    from ``message_class`` down, e.g. ``("frame", "rgb", "data")``) viewed in place (``split_bytes``). A message that
    cannot be split so (the field or a message on the way absent or repeated) is parsed whole, and the field's bytes
    moved out of it."""
    numbers, descriptor = [], message_class.DESCRIPTOR
    for name in path:
        field = descriptor.fields_by_name[name]
        numbers.append(field.number)
        descriptor = field.message_type
    holder_path, name = tuple(path[:-1]), path[-1]

    def parse(wire: bytes) -> SplitMessage[M]:
        split = split_bytes(wire, numbers)
        if split is not None:
            return SplitMessage(message_class.FromString(split[0]), split[1], wire)
        message = message_class.FromString(wire)
        holder = message
        for part in holder_path:
            holder = getattr(holder, part)
        data = memoryview(getattr(holder, name)).toreadonly()
        if len(data):  # then every message on the way is set already: clearing the field sets none of them
            holder.ClearField(name)
        return SplitMessage(message, data, wire)

    return parse
