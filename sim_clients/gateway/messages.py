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

from worldweave.sim_clients.conventions import (
    CameraIntrinsics,
    ConventionError,
    EnginePose,
    PoseForm,
    Quaternion,
    Rotator,
    RotatorPose,
    TransformPose,
)
from worldweave.sim_clients.gateway.errors import HandshakeRequiredError, InvalidMessageError, MessageTooLargeError

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


def camera_to_wire(camera: CameraIntrinsics) -> dict[str, Any]:
    return {"width": camera.width, "height": camera.height, "fx": camera.fx, "fy": camera.fy, "cx": camera.cx, "cy": camera.cy}


def camera_from_wire(value: object, path: str) -> CameraIntrinsics:
    """``{width, height}`` plus exactly one of ``fov_x_deg``, ``fov_y_deg`` or all of ``fx, fy, cx, cy``."""
    r = Reader(value, path)
    width = r.int("width", lo=1, hi=16384)
    height = r.int("height", lo=1, hi=16384)
    forms = [r.has("fov_x_deg"), r.has("fov_y_deg"), any(r.has(k) for k in ("fx", "fy", "cx", "cy"))]
    if sum(forms) != 1:
        raise InvalidMessageError(f"{path} needs exactly one of fov_x_deg, fov_y_deg, or fx, fy, cx, cy")
    try:
        if forms[0]:
            camera = CameraIntrinsics.from_fov(width, height, fov_x_deg=r.float("fov_x_deg"))
        elif forms[1]:
            camera = CameraIntrinsics.from_fov(width, height, fov_y_deg=r.float("fov_y_deg"))
        else:
            camera = CameraIntrinsics(r.float("fx"), r.float("fy"), r.float("cx"), r.float("cy"), width, height)
    except ConventionError as error:
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
    camera: CameraIntrinsics
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
    camera: CameraIntrinsics | None = None
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


Request = Hello | CreateWorld | Render | Step | DeleteWorld
Reply = HelloReply | WorldReply | DeleteReply | FramesReply | ErrorReply
ENVELOPE_FIELDS = ("version", "type", "id")
"""Fields of every message's envelope; no record has a field of these names."""
REQUEST_TYPES: dict[str, type] = {cls.TYPE: cls for cls in (Hello, CreateWorld, Render, Step, DeleteWorld)}
REPLY_TYPES: dict[str, type] = {cls.TYPE: cls for cls in (HelloReply, WorldReply, DeleteReply, FramesReply, ErrorReply)}
