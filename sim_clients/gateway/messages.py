"""The gateway's wire schema as typed records, with pure ``to_wire`` / ``from_wire`` (``SCHEMA.md`` beside this file
documents every field with its unit).

A wire value is what msgpack carries: maps with string keys, lists, numbers, strings, ``bin`` bytes. Every record
reads its map through :class:`Reader`, which names the full path of a bad value (``render.poses[2].rotation.qw``),
rejects unknown fields and never trusts a length. Poses stay in the connection's engine convention here; the
conversion to canonical poses is :mod:`.translate`'s job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, TypeVar, get_args

import numpy as np

from worldweave.proto.codecs import FLOAT32, INT64, UINT8, pack_array, unpack_array
from worldweave.proto.errors import InvalidIntrinsicsError, WireFormatError
from worldweave.proto.geometry import Intrinsics, Quaternion
from worldweave.sim_clients.conventions import (
    EnginePose,
    PoseForm,
    Rotator,
    RotatorPose,
    TransformPose,
)
from worldweave.sim_clients.gateway.errors import (
    HandshakeRequiredError,
    InvalidMessageError,
    MessageTooLargeError,
)

MAX_LIST_ITEMS = 4096
"""Most items in any list field (poses, frames, capabilities)."""
MAX_STRING_CHARS = 65536
"""Longest string field, characters (a prompt)."""
UINT64_MAX = 2**64 - 1

ImageEncoding = Literal["raw_rgb8", "png", "jpeg"]
DepthEncoding = Literal["float16_m", "uint16_mm"]
T = TypeVar("T")
IMAGE_ENCODINGS: tuple[str, ...] = get_args(ImageEncoding)
DEPTH_ENCODINGS: tuple[str, ...] = get_args(DepthEncoding)


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


class Reader:
    """The fields of one wire map, read by name and type; every error names the field's path and the bad value."""

    _MISSING = object()

    def __init__(self, value: object, path: str) -> None:
        if not isinstance(value, dict):
            raise InvalidMessageError(f"{path} must be a map, got {_kind(value)}")
        self._map = value
        self._path = path
        self._read: set[str] = set()

    def _get(self, name: str, required: bool) -> Any:
        self._read.add(name)
        value = self._map.get(name, self._MISSING)
        if value is self._MISSING or (value is None and not required):
            if required:
                raise InvalidMessageError(f"{self._path} is missing the field {name!r}")
            return self._MISSING
        return value

    @property
    def path(self) -> str:
        """The map's path in the message (``render.poses[2]``)."""
        return self._path

    def renamed(self, path: str) -> Reader:
        """The same map and the same record of read fields, naming errors after ``path``."""
        view = Reader({}, path)
        view._map, view._read = self._map, self._read
        return view

    def has(self, name: str) -> bool:
        """Whether ``name`` is present and not nil."""
        return self._map.get(name) is not None

    def field(self, name: str, parse: Callable[[object, str], T]) -> T:
        """A required field parsed by ``parse(value, path)``."""
        return parse(self._get(name, True), f"{self._path}.{name}")

    def optional(self, name: str, parse: Callable[[object, str], T]) -> T | None:
        """An optional field parsed by ``parse(value, path)``; ``None`` when absent or nil."""
        value = self._get(name, False)
        return None if value is self._MISSING else parse(value, f"{self._path}.{name}")

    def str(self, name: str, *, required: bool = True, default: str | None = "") -> str | None:
        value = self._get(name, required)
        if value is self._MISSING:
            return default
        if not isinstance(value, str):
            raise InvalidMessageError(f"{self._path}.{name} must be a string, got {_kind(value)}")
        if len(value) > MAX_STRING_CHARS:
            raise MessageTooLargeError(f"{self._path}.{name} has {len(value)} characters, over the limit {MAX_STRING_CHARS}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], *, required: bool = True, default: str | None = None) -> str | None:
        value = self._get(name, required)
        if value is self._MISSING:
            return default
        if not isinstance(value, str) or value not in choices:
            raise InvalidMessageError(f"{self._path}.{name} must be one of {', '.join(choices)}; got {_kind(value)}")
        return value

    def int(self, name: str, *, required: bool = True, lo: int = 0, hi: int = UINT64_MAX, default: int | None = None) -> int | None:
        value = self._get(name, required)
        if value is self._MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidMessageError(f"{self._path}.{name} must be an integer, got {_kind(value)}")
        if not lo <= value <= hi:
            raise InvalidMessageError(f"{self._path}.{name} must be in [{lo}, {hi}], got {value}")
        return value

    def float(self, name: str, *, required: bool = True, positive: bool = False, default: float | None = None) -> float | None:
        value = self._get(name, required)
        if value is self._MISSING:
            return default
        return _number(value, f"{self._path}.{name}", positive=positive)

    def bool(self, name: str, *, required: bool = True, default: bool = False) -> bool:
        value = self._get(name, required)
        if value is self._MISSING:
            return default
        if not isinstance(value, bool):
            raise InvalidMessageError(f"{self._path}.{name} must be a bool, got {_kind(value)}")
        return value

    def bytes(self, name: str, *, required: bool = True) -> bytes | None:
        value = self._get(name, required)
        if value is self._MISSING:
            return None
        if not isinstance(value, (bytes, bytearray)):
            raise InvalidMessageError(f"{self._path}.{name} must be bin (raw bytes), got {_kind(value)}")
        return bytes(value)

    def map(self, name: str, *, required: bool = True) -> Reader | None:
        value = self._get(name, required)
        if value is self._MISSING:
            return None
        return Reader(value, f"{self._path}.{name}")

    def list(self, name: str, *, required: bool = True, min_items: int = 0) -> list[tuple[Any, str]]:
        """The items of a list field with their paths; at most :data:`MAX_LIST_ITEMS`."""
        value = self._get(name, required)
        if value is self._MISSING:
            return []
        if not isinstance(value, (list, tuple)):
            raise InvalidMessageError(f"{self._path}.{name} must be a list, got {_kind(value)}")
        if len(value) > MAX_LIST_ITEMS:
            raise MessageTooLargeError(f"{self._path}.{name} has {len(value)} items, over the limit {MAX_LIST_ITEMS}")
        if len(value) < min_items:
            raise InvalidMessageError(f"{self._path}.{name} needs at least {min_items} item(s), got {len(value)}")
        return [(item, f"{self._path}.{name}[{i}]") for i, item in enumerate(value)]

    def numbers(self, name: str, count: int) -> np.ndarray:
        """A list of exactly ``count`` finite numbers, as float64."""
        items = self.list(name)
        if len(items) != count:
            raise InvalidMessageError(f"{self._path}.{name} must have {count} numbers, got {len(items)}")
        return np.array([_number(v, p) for v, p in items], dtype=np.float64)

    def array(self, name: str, dtype: str, columns: int | None, *, required: bool = True, finite: bool = True) -> np.ndarray | None:
        """A packed array field (bin, little-endian, row-major) of shape (N, ``columns``) or (N,); float arrays
        must be finite. ``None`` when optional and absent."""
        data = self.bytes(name, required=required)
        if data is None:
            return None
        path = f"{self._path}.{name}"
        try:
            array = unpack_array(data, dtype, columns, path)
        except WireFormatError as error:
            raise InvalidMessageError(str(error)) from None
        if finite and array.dtype.kind == "f":
            bad = ~np.isfinite(array)
            if bad.any():
                index = tuple(int(i) for i in np.argwhere(bad)[0])
                raise InvalidMessageError(f"{path}[{index[0]}] must be finite, got {float(array[index])}")
        return array

    def rgb(self, name: str) -> tuple[int, int, int]:
        """Three integers 0..255 (a list)."""
        items = self.list(name)
        if len(items) != 3:
            raise InvalidMessageError(f"{self._path}.{name} must have 3 integers (R, G, B), got {len(items)}")
        values = []
        for value, path in items:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
                raise InvalidMessageError(f"{path} must be an integer in 0..255, got {_kind(value)}")
            values.append(value)
        return values[0], values[1], values[2]

    def done(self) -> None:
        """Raise if the map holds a field nobody read (a typo, or a field of a newer schema)."""
        unknown = [k for k in self._map if k not in self._read]
        if unknown:
            shown = ", ".join(repr(k) for k in unknown[:5])
            raise InvalidMessageError(f"{self._path} has unknown field(s) {shown}; known: {', '.join(sorted(self._read))}")


def _number(value: object, path: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidMessageError(f"{path} must be a number, got {_kind(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidMessageError(f"{path} must be finite, got {value}")
    if positive and value <= 0:
        raise InvalidMessageError(f"{path} must be > 0, got {value}")
    return value


# ----------------------------------------------------------------------------------------------------------------
# Shared parts: pose, camera, images


def pose_to_wire(pose: EnginePose) -> dict[str, Any]:
    """An engine pose record (or 4x4 matrix) -> its wire map."""
    if isinstance(pose, TransformPose):
        q = pose.rotation
        return {"position": [float(v) for v in pose.position], "rotation": {"qw": float(q.qw), "qx": float(q.qx), "qy": float(q.qy), "qz": float(q.qz)}}
    if isinstance(pose, RotatorPose):
        r = pose.rotator
        return {"position": [float(v) for v in pose.position], "rotator": {"pitch": float(r.pitch_deg), "yaw": float(r.yaw_deg), "roll": float(r.roll_deg)}}
    return {"matrix": [float(v) for v in np.asarray(pose, dtype=np.float64).reshape(16)]}


def pose_from_wire(value: object, path: str, form: PoseForm) -> EnginePose:
    """A wire pose map in the connection's ``form`` -> a :class:`TransformPose`, :class:`RotatorPose` or 4x4."""
    reader = Reader(value, path)
    if form == "matrix":
        pose: EnginePose = reader.numbers("matrix", 16).reshape(4, 4)
    elif form == "position_quaternion":
        position = reader.numbers("position", 3)
        q = reader.map("rotation")
        pose = TransformPose(position, Quaternion(q.float("qw"), q.float("qx"), q.float("qy"), q.float("qz")))
        q.done()
    else:
        position = reader.numbers("position", 3)
        r = reader.map("rotator")
        pose = RotatorPose(position, Rotator(r.float("pitch"), r.float("yaw"), r.float("roll")))
        r.done()
    reader.done()
    return pose


def camera_to_wire(camera: Intrinsics) -> dict[str, Any]:
    return {"width": camera.width, "height": camera.height, "fx": camera.fx, "fy": camera.fy, "cx": camera.cx, "cy": camera.cy}


def camera_from_wire(value: object, path: str) -> Intrinsics:
    """``{width, height}`` plus exactly one of ``fov_x_deg``, ``fov_y_deg`` or all of ``fx, fy, cx, cy``."""
    r = Reader(value, path)
    width = r.int("width", lo=1, hi=16384)
    height = r.int("height", lo=1, hi=16384)
    forms = [r.has("fov_x_deg"), r.has("fov_y_deg"), any(r.has(k) for k in ("fx", "fy", "cx", "cy"))]
    if sum(forms) != 1:
        raise InvalidMessageError(f"{path} needs exactly one of fov_x_deg, fov_y_deg, or fx, fy, cx, cy")
    try:
        if forms[0]:
            camera = Intrinsics.from_fov(width, height, fov_x_deg=r.float("fov_x_deg"))
        elif forms[1]:
            camera = Intrinsics.from_fov(width, height, fov_y_deg=r.float("fov_y_deg"))
        else:
            camera = Intrinsics(r.float("fx"), r.float("fy"), r.float("cx"), r.float("cy"), width, height)
    except InvalidIntrinsicsError as error:
        raise InvalidMessageError(f"{path}: {error}") from None
    r.done()
    return camera


@dataclass(frozen=True)
class WireImage:
    """An RGB8 image: raw ``height x width x 3`` bytes, PNG or JPEG."""

    width: int
    height: int
    encoding: ImageEncoding
    data: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "encoding": self.encoding, "data": self.data}

    @classmethod
    def from_wire(cls, value: object, path: str) -> WireImage:
        r = Reader(value, path)
        image = cls(r.int("width", lo=1, hi=16384), r.int("height", lo=1, hi=16384), r.choice("encoding", IMAGE_ENCODINGS), r.bytes("data"))
        r.done()
        if image.encoding == "raw_rgb8" and len(image.data) != image.width * image.height * 3:
            raise InvalidMessageError(
                f"{path}.data has {len(image.data)} bytes; raw_rgb8 {image.width}x{image.height} needs {image.width * image.height * 3}"
            )
        return image


@dataclass(frozen=True)
class WireDepth:
    """A depth map along the optical axis, 0 = unknown: float16 metres or uint16 millimetres, little-endian."""

    width: int
    height: int
    encoding: DepthEncoding
    data: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "encoding": self.encoding, "data": self.data}

    @classmethod
    def from_wire(cls, value: object, path: str) -> WireDepth:
        r = Reader(value, path)
        depth = cls(r.int("width", lo=1, hi=16384), r.int("height", lo=1, hi=16384), r.choice("encoding", DEPTH_ENCODINGS), r.bytes("data"))
        r.done()
        if len(depth.data) != depth.width * depth.height * 2:
            raise InvalidMessageError(
                f"{path}.data has {len(depth.data)} bytes; {depth.encoding} {depth.width}x{depth.height} needs {depth.width * depth.height * 2}"
            )
        return depth


# ----------------------------------------------------------------------------------------------------------------
# Requests (engine -> gateway)


@dataclass(frozen=True)
class Hello:
    """Opens a connection: declares the engine's pose convention, once, before any other request."""

    TYPE: ClassVar[str] = "hello"
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
    def from_wire(cls, r: Reader, form: PoseForm | None) -> Hello:
        return cls(
            r.str("convention"),
            r.choice("up_axis", ("Y", "Z"), required=False),
            r.float("metres_per_unit", required=False, positive=True),
            r.str("client_name", required=False),
        )


@dataclass(frozen=True)
class SeedView:
    """One seed view of a new world: RGB, depth and the engine pose it was seen from."""

    rgb: WireImage
    depth: WireDepth
    pose: EnginePose

    def to_wire(self) -> dict[str, Any]:
        return {"rgb": self.rgb.to_wire(), "depth": self.depth.to_wire(), "pose": pose_to_wire(self.pose)}

    @classmethod
    def from_wire(cls, value: object, path: str, form: PoseForm) -> SeedView:
        r = Reader(value, path)
        view = cls(r.field("rgb", WireImage.from_wire), r.field("depth", WireDepth.from_wire),
                   r.field("pose", lambda v, p: pose_from_wire(v, p, form)))
        r.done()
        return view


def _need_form(form: PoseForm | None, type_name: str) -> PoseForm:
    if form is None:
        raise HandshakeRequiredError(f"{type_name} before hello: send hello with your convention first")
    return form


@dataclass(frozen=True)
class CreateWorld:
    """Creates a world from seed views (poses in the connection's convention)."""

    TYPE: ClassVar[str] = "create_world"
    camera: Intrinsics
    frames: tuple[SeedView, ...]
    world_id: str = ""
    prompt: str = ""
    voxel_size_m: float | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"world_id": self.world_id, "camera": camera_to_wire(self.camera),
                                "frames": [f.to_wire() for f in self.frames], "prompt": self.prompt}
        if self.voxel_size_m is not None:
            wire["voxel_size_m"] = self.voxel_size_m
        return wire

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> CreateWorld:
        form = _need_form(form, cls.TYPE)
        camera = r.field("camera", camera_from_wire)
        frames = tuple(SeedView.from_wire(v, p, form) for v, p in r.list("frames", min_items=1))
        return cls(camera, frames, r.str("world_id", required=False), r.str("prompt", required=False),
                   r.float("voxel_size_m", required=False, positive=True))


@dataclass(frozen=True)
class Render:
    """Renders the world's memory at 1..N engine poses (no generation, memory unchanged)."""

    TYPE: ClassVar[str] = "render"
    world_id: str
    poses: tuple[EnginePose, ...]
    camera: Intrinsics | None = None
    image_encoding: ImageEncoding = "raw_rgb8"
    depth_encoding: DepthEncoding | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"world_id": self.world_id, "poses": [pose_to_wire(p) for p in self.poses],
                                "image_encoding": self.image_encoding}
        if self.camera is not None:
            wire["camera"] = camera_to_wire(self.camera)
        if self.depth_encoding is not None:
            wire["depth_encoding"] = self.depth_encoding
        return wire

    @classmethod
    def _common(cls, r: Reader, form: PoseForm | None) -> dict[str, Any]:
        form = _need_form(form, cls.TYPE)
        return {
            "world_id": r.str("world_id"),
            "poses": tuple(pose_from_wire(v, p, form) for v, p in r.list("poses", min_items=1)),
            "camera": r.optional("camera", camera_from_wire),
            "image_encoding": r.choice("image_encoding", IMAGE_ENCODINGS, required=False, default="raw_rgb8"),
            "depth_encoding": r.choice("depth_encoding", DEPTH_ENCODINGS, required=False),
        }

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> Render:
        return cls(**cls._common(r, form))


@dataclass(frozen=True)
class Step(Render):
    """One step of the world loop: a frame generated and fused into memory per engine pose, in order."""

    TYPE: ClassVar[str] = "step"
    prompt: str | None = None
    seed: int | None = None

    def to_wire(self) -> dict[str, Any]:
        wire = super().to_wire()
        if self.prompt is not None:
            wire["prompt"] = self.prompt
        if self.seed is not None:
            wire["seed"] = self.seed
        return wire

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> Step:
        common = cls._common(r, form)
        return cls(**common, prompt=r.str("prompt", required=False, default=None), seed=r.int("seed", required=False))


@dataclass(frozen=True)
class DeleteWorld:
    """Unloads a world and, when asked, deletes its save."""

    TYPE: ClassVar[str] = "delete_world"
    world_id: str
    delete_saved: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {"world_id": self.world_id, "delete_saved": self.delete_saved}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> DeleteWorld:
        _need_form(form, cls.TYPE)
        return cls(r.str("world_id"), r.bool("delete_saved", required=False))


# ----------------------------------------------------------------------------------------------------------------
# Replies (gateway -> engine)


@dataclass(frozen=True)
class HelloReply:
    """The gateway's and server's description, and the convention now in force on this connection."""

    TYPE: ClassVar[str] = "hello_reply"
    schema_version: str
    server_api_version: str
    server_version: str
    capabilities: tuple[str, ...]
    convention: str
    metres_per_unit: float
    pose_form: str
    generator: str
    max_poses_per_call: int
    max_message_bytes: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version, "server_api_version": self.server_api_version,
            "server_version": self.server_version, "capabilities": list(self.capabilities),
            "convention": self.convention, "metres_per_unit": self.metres_per_unit, "pose_form": self.pose_form,
            "generator": self.generator, "max_poses_per_call": self.max_poses_per_call,
            "max_message_bytes": self.max_message_bytes,
        }

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> HelloReply:
        return cls(
            r.str("schema_version"), r.str("server_api_version"), r.str("server_version"),
            tuple(_string(v, p) for v, p in r.list("capabilities")), r.str("convention"),
            r.float("metres_per_unit", positive=True), r.str("pose_form"), r.str("generator"),
            r.int("max_poses_per_call"), r.int("max_message_bytes"),
        )


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise InvalidMessageError(f"{path} must be a string, got {_kind(value)}")
    return value


@dataclass(frozen=True)
class WorldReply:
    """A world's id and state (answers create_world)."""

    TYPE: ClassVar[str] = "world_reply"
    world_id: str
    memory_version: int
    frame_count: int

    def to_wire(self) -> dict[str, Any]:
        return {"world_id": self.world_id, "memory_version": self.memory_version, "frame_count": self.frame_count}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> WorldReply:
        return cls(r.str("world_id"), r.int("memory_version"), r.int("frame_count"))


@dataclass(frozen=True)
class DeleteReply:
    """What delete_world removed."""

    TYPE: ClassVar[str] = "delete_reply"
    unloaded: bool
    deleted_saved: bool

    def to_wire(self) -> dict[str, Any]:
        return {"unloaded": self.unloaded, "deleted_saved": self.deleted_saved}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> DeleteReply:
        return cls(r.bool("unloaded"), r.bool("deleted_saved"))


@dataclass(frozen=True)
class WireFrame:
    """One frame: the pose actually used (engine convention), memory version, coverage, RGB and optional depth."""

    pose: EnginePose
    memory_version: int
    coverage: float
    rgb: WireImage
    depth: WireDepth | None = None
    frame_id: int | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"pose": pose_to_wire(self.pose), "memory_version": self.memory_version, "coverage": self.coverage,
                                "rgb": self.rgb.to_wire()}
        if self.depth is not None:
            wire["depth"] = self.depth.to_wire()
        if self.frame_id is not None:
            wire["frame_id"] = self.frame_id
        return wire

    @classmethod
    def from_wire(cls, value: object, path: str, form: PoseForm) -> WireFrame:
        r = Reader(value, path)
        frame = cls(
            r.field("pose", lambda v, p: pose_from_wire(v, p, form)), r.int("memory_version"), r.float("coverage"),
            r.field("rgb", WireImage.from_wire), r.optional("depth", WireDepth.from_wire), r.int("frame_id", required=False),
        )
        r.done()
        return frame


@dataclass(frozen=True)
class FramesReply:
    """The frames of a render or a step, one per pose, in pose order."""

    TYPE: ClassVar[str] = "frames_reply"
    frames: tuple[WireFrame, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"frames": [f.to_wire() for f in self.frames]}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> FramesReply:
        form = _need_form(form, cls.TYPE)
        return cls(tuple(WireFrame.from_wire(v, p, form) for v, p in r.list("frames")))


@dataclass(frozen=True)
class ErrorReply:
    """A request failed: ``code`` is a gRPC status name, ``message`` names the bad value and what to do."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> ErrorReply:
        return cls(r.str("code"), r.str("message"))


# ----------------------------------------------------------------------------------------------------------------
# World state: point cloud, queries, edits. Arrays are packed bin fields; lengths and positions are in the
# connection's engine units and world axes (the gateway converts), voxel keys are the server's.


def _points(r: Reader, name: str) -> np.ndarray:
    return r.array(name, FLOAT32, 3)


def _per_item(r: Reader, name: str, n: int) -> np.ndarray:
    values = r.array(name, FLOAT32, None)
    if len(values) != n:
        raise InvalidMessageError(f"{r.path}.{name} has {len(values)} values, the batch has {n}")
    return values


def _same_rows(r: Reader, name: str, array: np.ndarray, n: int) -> np.ndarray:
    if len(array) != n:
        raise InvalidMessageError(f"{r.path}.{name} has {len(array)} rows, the batch has {n}")
    return array


@dataclass(frozen=True)
class PointCloud:
    """The world's voxels: everything (``since_version`` 0) or the changes since a version, in chunks."""

    TYPE: ClassVar[str] = "point_cloud"
    world_id: str
    since_version: int = 0
    max_chunk_bytes: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {"world_id": self.world_id, "since_version": self.since_version, "max_chunk_bytes": self.max_chunk_bytes}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> PointCloud:
        _need_form(form, cls.TYPE)
        return cls(r.str("world_id"), r.int("since_version", required=False, default=0),
                   r.int("max_chunk_bytes", required=False, default=0, hi=2**32 - 1))


@dataclass(frozen=True)
class Raycast:
    """Rays from ``origins`` (N, 3) along ``directions`` (N, 3) up to ``max_range`` (engine units)."""

    TYPE: ClassVar[str] = "raycast"
    world_id: str
    origins: np.ndarray
    directions: np.ndarray
    max_range: float

    def to_wire(self) -> dict[str, Any]:
        return {"world_id": self.world_id, "origins": pack_array(self.origins, FLOAT32, 3, "origins"),
                "directions": pack_array(self.directions, FLOAT32, 3, "directions"), "max_range": self.max_range}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> Raycast:
        _need_form(form, cls.TYPE)
        origins = _points(r, "origins")
        return cls(r.str("world_id"), origins, _same_rows(r, "directions", _points(r, "directions"), len(origins)),
                   r.float("max_range", positive=True))


@dataclass(frozen=True)
class NearestSurface:
    """The nearest surface to each of ``points`` (N, 3) within ``max_range`` (engine units)."""

    TYPE: ClassVar[str] = "nearest_surface"
    world_id: str
    points: np.ndarray
    max_range: float

    def to_wire(self) -> dict[str, Any]:
        return {"world_id": self.world_id, "points": pack_array(self.points, FLOAT32, 3, "points"), "max_range": self.max_range}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> NearestSurface:
        _need_form(form, cls.TYPE)
        return cls(r.str("world_id"), _points(r, "points"), r.float("max_range", positive=True))


@dataclass(frozen=True)
class CheckSpheres:
    """Spheres (``centers`` (N, 3), ``radii`` (N,), engine units) against the world."""

    TYPE: ClassVar[str] = "check_spheres"
    world_id: str
    centers: np.ndarray
    radii: np.ndarray

    def to_wire(self) -> dict[str, Any]:
        return {"world_id": self.world_id, "centers": pack_array(self.centers, FLOAT32, 3, "centers"),
                "radii": pack_array(self.radii, FLOAT32, None, "radii")}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> CheckSpheres:
        _need_form(form, cls.TYPE)
        centers = _points(r, "centers")
        return cls(r.str("world_id"), centers, _per_item(r, "radii", len(centers)))


@dataclass(frozen=True)
class CheckCapsules:
    """Capsules (segments ``starts`` -> ``ends`` (N, 3), ``radii`` (N,), engine units) against the world."""

    TYPE: ClassVar[str] = "check_capsules"
    world_id: str
    starts: np.ndarray
    ends: np.ndarray
    radii: np.ndarray

    def to_wire(self) -> dict[str, Any]:
        return {"world_id": self.world_id, "starts": pack_array(self.starts, FLOAT32, 3, "starts"),
                "ends": pack_array(self.ends, FLOAT32, 3, "ends"), "radii": pack_array(self.radii, FLOAT32, None, "radii")}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> CheckCapsules:
        _need_form(form, cls.TYPE)
        starts = _points(r, "starts")
        return cls(r.str("world_id"), starts, _same_rows(r, "ends", _points(r, "ends"), len(starts)),
                   _per_item(r, "radii", len(starts)))


@dataclass(frozen=True)
class CheckBoxes:
    """Oriented boxes (``centers``, ``half_extents`` (N, 3) engine units; ``rotations`` (N, 4) qw, qx, qy, qz,
    box-to-engine-world) against the world."""

    TYPE: ClassVar[str] = "check_boxes"
    world_id: str
    centers: np.ndarray
    half_extents: np.ndarray
    rotations: np.ndarray

    def to_wire(self) -> dict[str, Any]:
        return {"world_id": self.world_id, "centers": pack_array(self.centers, FLOAT32, 3, "centers"),
                "half_extents": pack_array(self.half_extents, FLOAT32, 3, "half_extents"),
                "rotations": pack_array(self.rotations, FLOAT32, 4, "rotations")}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> CheckBoxes:
        _need_form(form, cls.TYPE)
        centers = _points(r, "centers")
        return cls(r.str("world_id"), centers, _same_rows(r, "half_extents", _points(r, "half_extents"), len(centers)),
                   _same_rows(r, "rotations", r.array("rotations", FLOAT32, 4), len(centers)))


@dataclass(frozen=True)
class QueryOccupancy:
    """Occupancy (unknown, free, occupied) of each of ``points`` (N, 3), engine units."""

    TYPE: ClassVar[str] = "query_occupancy"
    world_id: str
    points: np.ndarray

    def to_wire(self) -> dict[str, Any]:
        return {"world_id": self.world_id, "points": pack_array(self.points, FLOAT32, 3, "points")}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> QueryOccupancy:
        _need_form(form, cls.TYPE)
        return cls(r.str("world_id"), _points(r, "points"))


@dataclass(frozen=True)
class CropPointCloud:
    """The voxels inside the box ``[min, max]`` (engine axes and units)."""

    TYPE: ClassVar[str] = "crop_point_cloud"
    world_id: str
    min: np.ndarray
    max: np.ndarray

    def to_wire(self) -> dict[str, Any]:
        return {"world_id": self.world_id, "min": [float(v) for v in self.min], "max": [float(v) for v in self.max]}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> CropPointCloud:
        _need_form(form, cls.TYPE)
        return cls(r.str("world_id"), r.numbers("min", 3), r.numbers("max", 3))


@dataclass(frozen=True)
class WireRegion:
    """A region of the engine's world (engine axes and units): ``box`` (``min``, ``max``), ``oriented_box``
    (``center``, ``half_extents``, ``rotation`` quaternion box-to-engine-world) or ``sphere`` (``center``,
    ``radius``)."""

    shape: Literal["box", "oriented_box", "sphere"]
    first: np.ndarray
    """``min`` (box) or ``center`` (oriented box, sphere)."""
    second: np.ndarray | None = None
    """``max`` (box) or ``half_extents`` (oriented box)."""
    rotation: Quaternion | None = None
    radius: float | None = None

    def to_wire(self) -> dict[str, Any]:
        first = [float(v) for v in self.first]
        if self.shape == "box":
            return {"box": {"min": first, "max": [float(v) for v in self.second]}}
        if self.shape == "sphere":
            return {"sphere": {"center": first, "radius": self.radius}}
        q = self.rotation
        return {"oriented_box": {"center": first, "half_extents": [float(v) for v in self.second],
                                 "rotation": {"qw": q.qw, "qx": q.qx, "qy": q.qy, "qz": q.qz}}}

    @classmethod
    def from_wire(cls, value: object, path: str) -> WireRegion:
        r = Reader(value, path)
        shapes = [name for name in ("box", "oriented_box", "sphere") if r.has(name)]
        if len(shapes) != 1:
            raise InvalidMessageError(f"{path} needs exactly one of box, oriented_box or sphere")
        shape = r.map(shapes[0])
        if shapes[0] == "box":
            region = cls("box", shape.numbers("min", 3), shape.numbers("max", 3))
        elif shapes[0] == "sphere":
            region = cls("sphere", shape.numbers("center", 3), radius=shape.float("radius"))
        else:
            q = shape.map("rotation")
            region = cls("oriented_box", shape.numbers("center", 3), shape.numbers("half_extents", 3),
                         Quaternion(q.float("qw"), q.float("qx"), q.float("qy"), q.float("qz")))
            q.done()
        shape.done()
        r.done()
        return region


@dataclass(frozen=True)
class RemoveRegion:
    """Removes the memory inside a region; it does not come back in later frames."""

    TYPE: ClassVar[str] = "remove_region"
    world_id: str
    region: WireRegion

    def to_wire(self) -> dict[str, Any]:
        return {"world_id": self.world_id, "region": self.region.to_wire()}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> RemoveRegion:
        _need_form(form, cls.TYPE)
        return cls(r.str("world_id"), r.field("region", WireRegion.from_wire))


@dataclass(frozen=True)
class RecolorRegion:
    """Recolours the memory inside a region with ``rgb``."""

    TYPE: ClassVar[str] = "recolor_region"
    world_id: str
    region: WireRegion
    rgb: tuple[int, int, int]

    def to_wire(self) -> dict[str, Any]:
        return {"world_id": self.world_id, "region": self.region.to_wire(), "rgb": list(self.rgb)}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> RecolorRegion:
        _need_form(form, cls.TYPE)
        return cls(r.str("world_id"), r.field("region", WireRegion.from_wire), r.rgb("rgb"))


@dataclass(frozen=True)
class InsertPoints:
    """Inserts ``points`` (N, 3) engine units with ``colors`` (N, 3) RGB."""

    TYPE: ClassVar[str] = "insert_points"
    world_id: str
    points: np.ndarray
    colors: np.ndarray

    def to_wire(self) -> dict[str, Any]:
        return {"world_id": self.world_id, "points": pack_array(self.points, FLOAT32, 3, "points"),
                "colors": pack_array(self.colors, UINT8, 3, "colors")}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> InsertPoints:
        _need_form(form, cls.TYPE)
        points = _points(r, "points")
        return cls(r.str("world_id"), points, _same_rows(r, "colors", r.array("colors", UINT8, 3), len(points)))


ChangeKind = Literal["added", "changed", "removed"]
CHANGE_KINDS: tuple[str, ...] = get_args(ChangeKind)


@dataclass(frozen=True)
class PointCloudChunk:
    """One chunk of a ``point_cloud`` answer: ``keys`` int64 (N,) voxel ids; for added and changed voxels
    ``positions`` float32 (N, 3) voxel centres (engine axes and units), ``colors`` uint8 (N, 3), ``flags`` uint8 (N,)
    (0 seed, 1 generated, 2 inserted); removed voxels carry keys only."""

    TYPE: ClassVar[str] = "point_cloud_chunk"
    since_version: int
    memory_version: int
    is_snapshot: bool
    kind: ChangeKind
    keys: np.ndarray
    positions: np.ndarray
    colors: np.ndarray
    flags: np.ndarray
    voxel_size: float
    last_in_version: bool

    def to_wire(self) -> dict[str, Any]:
        return {
            "since_version": self.since_version, "memory_version": self.memory_version, "is_snapshot": self.is_snapshot,
            "kind": self.kind, "count": len(self.keys), "keys": pack_array(self.keys, INT64, None, "keys"),
            "positions": pack_array(self.positions, FLOAT32, 3, "positions"), "colors": pack_array(self.colors, UINT8, 3, "colors"),
            "flags": pack_array(self.flags, UINT8, None, "flags"), "voxel_size": self.voxel_size,
            "last_in_version": self.last_in_version,
        }

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> PointCloudChunk:
        kind = r.choice("kind", CHANGE_KINDS)
        count = r.int("count")
        rows = 0 if kind == "removed" else count
        return cls(
            r.int("since_version"), r.int("memory_version"), r.bool("is_snapshot"), kind,
            _same_rows(r, "keys", r.array("keys", INT64, None), count),
            _same_rows(r, "positions", r.array("positions", FLOAT32, 3), rows),
            _same_rows(r, "colors", r.array("colors", UINT8, 3), rows),
            _same_rows(r, "flags", r.array("flags", UINT8, None), rows),
            r.float("voxel_size", positive=True), r.bool("last_in_version"),
        )


@dataclass(frozen=True)
class RaycastReply:
    """Per ray: ``hit`` (bool), ``distance`` (engine units; ``max_range`` on a miss), ``points`` (engine; 0 on a
    miss), ``colors``, ``unknown`` (the ray entered unobserved space before any hit)."""

    TYPE: ClassVar[str] = "raycast_reply"
    memory_version: int
    hit: np.ndarray
    distance: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    unknown: np.ndarray

    def to_wire(self) -> dict[str, Any]:
        return {"memory_version": self.memory_version, "hit": pack_array(self.hit, UINT8, None, "hit"),
                "distance": pack_array(self.distance, FLOAT32, None, "distance"), "points": pack_array(self.points, FLOAT32, 3, "points"),
                "colors": pack_array(self.colors, UINT8, 3, "colors"), "unknown": pack_array(self.unknown, UINT8, None, "unknown")}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> RaycastReply:
        hit = r.array("hit", UINT8, None)
        n = len(hit)
        return cls(r.int("memory_version"), hit, _per_item(r, "distance", n), _same_rows(r, "points", _points(r, "points"), n),
                   _same_rows(r, "colors", r.array("colors", UINT8, 3), n), _same_rows(r, "unknown", r.array("unknown", UINT8, None), n))


@dataclass(frozen=True)
class NearestReply:
    """Per point: ``found`` (bool), ``distance`` (engine units; ``max_range`` when not found), ``points`` (engine)."""

    TYPE: ClassVar[str] = "nearest_reply"
    memory_version: int
    found: np.ndarray
    distance: np.ndarray
    points: np.ndarray

    def to_wire(self) -> dict[str, Any]:
        return {"memory_version": self.memory_version, "found": pack_array(self.found, UINT8, None, "found"),
                "distance": pack_array(self.distance, FLOAT32, None, "distance"), "points": pack_array(self.points, FLOAT32, 3, "points")}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> NearestReply:
        found = r.array("found", UINT8, None)
        return cls(r.int("memory_version"), found, _per_item(r, "distance", len(found)),
                   _same_rows(r, "points", _points(r, "points"), len(found)))


@dataclass(frozen=True)
class CollisionReply:
    """Per shape: ``hit`` (bool), ``clearance`` (engine units: gap, or minus the penetration; +inf when no surface
    is within reach), ``contact_points`` (engine; 0 when none)."""

    TYPE: ClassVar[str] = "collision_reply"
    memory_version: int
    hit: np.ndarray
    clearance: np.ndarray
    contact_points: np.ndarray

    def to_wire(self) -> dict[str, Any]:
        return {"memory_version": self.memory_version, "hit": pack_array(self.hit, UINT8, None, "hit"),
                "clearance": pack_array(self.clearance, FLOAT32, None, "clearance"),
                "contact_points": pack_array(self.contact_points, FLOAT32, 3, "contact_points")}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> CollisionReply:
        hit = r.array("hit", UINT8, None)
        clearance = r.array("clearance", FLOAT32, None, finite=False)
        return cls(r.int("memory_version"), hit, _same_rows(r, "clearance", clearance, len(hit)),
                   _same_rows(r, "contact_points", _points(r, "contact_points"), len(hit)))


@dataclass(frozen=True)
class OccupancyReply:
    """Per point: ``states`` uint8, 1 unknown, 2 free, 3 occupied."""

    TYPE: ClassVar[str] = "occupancy_reply"
    memory_version: int
    states: np.ndarray

    def to_wire(self) -> dict[str, Any]:
        return {"memory_version": self.memory_version, "states": pack_array(self.states, UINT8, None, "states")}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> OccupancyReply:
        return cls(r.int("memory_version"), r.array("states", UINT8, None))


@dataclass(frozen=True)
class CropReply:
    """The voxels inside the box: ``points`` float32 (N, 3) centres (engine), ``colors`` uint8 (N, 3)."""

    TYPE: ClassVar[str] = "crop_reply"
    memory_version: int
    points: np.ndarray
    colors: np.ndarray

    def to_wire(self) -> dict[str, Any]:
        return {"memory_version": self.memory_version, "points": pack_array(self.points, FLOAT32, 3, "points"),
                "colors": pack_array(self.colors, UINT8, 3, "colors")}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> CropReply:
        points = _points(r, "points")
        return cls(r.int("memory_version"), points, _same_rows(r, "colors", r.array("colors", UINT8, 3), len(points)))


@dataclass(frozen=True)
class EditReply:
    """An edit's result: the memory version after it and how many voxels it removed, recoloured or added."""

    TYPE: ClassVar[str] = "edit_reply"
    memory_version: int
    voxels: int

    def to_wire(self) -> dict[str, Any]:
        return {"memory_version": self.memory_version, "voxels": self.voxels}

    @classmethod
    def from_wire(cls, r: Reader, form: PoseForm | None) -> EditReply:
        return cls(r.int("memory_version"), r.int("voxels"))


Request = (Hello | CreateWorld | Render | Step | DeleteWorld | PointCloud | Raycast | NearestSurface | CheckSpheres
           | CheckCapsules | CheckBoxes | QueryOccupancy | CropPointCloud | RemoveRegion | RecolorRegion | InsertPoints)
Reply = (HelloReply | WorldReply | DeleteReply | FramesReply | ErrorReply | PointCloudChunk | RaycastReply | NearestReply
         | CollisionReply | OccupancyReply | CropReply | EditReply)
ENVELOPE_FIELDS = ("version", "type", "id")
"""Fields of every message's envelope; no record has a field of these names."""
REQUEST_TYPES: dict[str, type] = {cls.TYPE: cls for cls in (
    Hello, CreateWorld, Render, Step, DeleteWorld, PointCloud, Raycast, NearestSurface, CheckSpheres, CheckCapsules,
    CheckBoxes, QueryOccupancy, CropPointCloud, RemoveRegion, RecolorRegion, InsertPoints)}
REPLY_TYPES: dict[str, type] = {cls.TYPE: cls for cls in (
    HelloReply, WorldReply, DeleteReply, FramesReply, ErrorReply, PointCloudChunk, RaycastReply, NearestReply,
    CollisionReply, OccupancyReply, CropReply, EditReply)}
