"""The wire's enums and the short names the SDK, the CLI and the engine accept for them.

Part of the wire layer: imports the generated messages only.
"""

from __future__ import annotations

from google.protobuf.descriptor import EnumDescriptor

from worldweave.proto.errors import WireFormatError
from worldweave.proto.worldweave.v1 import world_pb2 as pb

IMAGE_ENCODING_NAMES = {
    pb.IMAGE_ENCODING_RAW_RGB8: "raw",
    pb.IMAGE_ENCODING_PNG: "png",
    pb.IMAGE_ENCODING_JPEG: "jpeg",
}
"""Wire image encodings and the short names the client and CLI accept."""
DEPTH_ENCODING_NAMES = {
    pb.DEPTH_ENCODING_FLOAT16_M: "float16_m",
    pb.DEPTH_ENCODING_UINT16_MM: "uint16_mm",
}
"""Wire depth encodings and the short names the client accepts."""
RETRIEVAL_NAMES = {
    pb.RETRIEVAL_COVERAGE: "coverage",
    pb.RETRIEVAL_IOU: "iou",
    pb.RETRIEVAL_RECENT: "recent",
    pb.RETRIEVAL_RANDOM: "random",
    pb.RETRIEVAL_GLOBAL: "global",
}
"""Wire retrieval modes and their names (the engine's ``MemoryConfig.retrieval`` values)."""
SHORT_NAMES = {"ImageEncoding": IMAGE_ENCODING_NAMES, "DepthEncoding": DEPTH_ENCODING_NAMES, "Retrieval": RETRIEVAL_NAMES}
"""The enums whose short names are the tables above."""


def enum_names(enum: EnumDescriptor) -> dict[int, str]:
    """Every value of a wire enum and its short name: the tables above, else the value's name without the enum's
    prefix, lowercased (``CHANGE_KIND_ADDED`` -> ``"added"``). ``*_UNSPECIFIED`` (0) has no name."""
    if enum.name in SHORT_NAMES:
        return dict(SHORT_NAMES[enum.name])
    prefix = "".join(f"_{c}" if c.isupper() else c.upper() for c in enum.name).lstrip("_") + "_"
    return {value.number: value.name.removeprefix(prefix).lower() for value in enum.values if value.number != 0}



def image_encoding(value: int | str) -> int:
    """An ``ImageEncoding`` from its wire value or short name (``"raw"``, ``"png"``, ``"jpeg"``)."""
    if isinstance(value, str):
        for code, name in IMAGE_ENCODING_NAMES.items():
            if value.lower() == name:
                return code
        raise WireFormatError(f"unknown image encoding {value!r}; use one of {sorted(IMAGE_ENCODING_NAMES.values())}")
    if value not in IMAGE_ENCODING_NAMES:
        raise WireFormatError(f"unknown image encoding {value!r}; valid values are {sorted(IMAGE_ENCODING_NAMES)}")
    return int(value)


def depth_encoding(value: int | str | None) -> int:
    """A ``DepthEncoding`` from its wire value or short name; ``None`` means no depth (UNSPECIFIED)."""
    if value is None:
        return pb.DEPTH_ENCODING_UNSPECIFIED
    if isinstance(value, str):
        for code, name in DEPTH_ENCODING_NAMES.items():
            if value.lower() == name:
                return code
        raise WireFormatError(f"unknown depth encoding {value!r}; use one of {sorted(DEPTH_ENCODING_NAMES.values())}")
    if value not in DEPTH_ENCODING_NAMES and value != pb.DEPTH_ENCODING_UNSPECIFIED:
        raise WireFormatError(f"unknown depth encoding {value!r}; valid values are {sorted(DEPTH_ENCODING_NAMES)}")
    return int(value)
