"""A world's record: every state-changing request it ran, with hashes of what came out, in an append-only log
(``worldweave serve --record DIR``; ``worldweave replay LOG`` re-runs one: ``server/replay.py``; docs/rollouts.md).

What is recorded: CreateWorld (with its seed), every Step that ran (a retried numbered step answered from the kept
frames ran nothing and is not recorded), RemoveRegion, RecolorRegion, InsertPoints, Checkpoint (for a later restore)
and RestoreWorld, each as the request's protobuf bytes as the server received them, once the world's work succeeded,
under the world's lock (so in the order the world ran them). Each record also holds the memory version and frame
count after it, a memory hash (``MemoryHasher``) and, for a step, each frame's id and rgb and depth hashes; when the
server's generator is not deterministic (``Generator.deterministic``) or returns no depth, a step's record also keeps
its frames (rgb, fused depth, fusion confidence) so replay can fuse them again.

File layout (integers little-endian)::

    b"WWRECLOG"                     8 bytes, the magic
    format version                  uint32 (FORMAT_VERSION; a reader refuses any other)
    header length, header CRC32     uint32, uint32
    header                          JSON (UTF-8): world id, tenant, generator contract and options, replay mode,
                                    device, the server's limits and version, creation time; a log that
                                    continues a saved world (``Recording.start``) names the save it starts
                                    from (``continues``) and holds no creation record
    records, back to back, each:
      body length, body CRC32       uint32, uint32
      body                          kind uint8 (``RecordKind``), request length uint32, request (protobuf),
                                    meta length uint32, meta JSON (hashes, version, ``arrays``: dtype, shape and
                                    byte count of each array that follows), the arrays (raw, zlib-compressed)

Durability: each record is one ``write`` followed by ``fsync`` before the request is answered, so every answered
request is on disk and a crash of the server or of the machine loses none (``--record-no-fsync``: ``write`` only,
which a crash of the server survives, one of the machine not); a write cut short leaves a tail that the length and
CRC frame reveal (``LogReader``: replay stops there and says where). Nothing pickled, on disk or read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from worldweave.proto.errors import InvalidInputError, PreconditionError, StorageError
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server.auth import DEFAULT_TENANT
from worldweave.server.scheduling import GENERATOR_CONTRACT
from worldweave.server.version import server_version

if TYPE_CHECKING:
    from worldweave.bridge.generators.base import Generator
    from worldweave.bridge.world import World
    from worldweave.server.limits import ServerLimits

T = TypeVar("T")
logger = logging.getLogger(__name__)

MAGIC = b"WWRECLOG"
FORMAT_VERSION = 1
"""The log layout this code writes and the only one it reads."""
SUFFIX = ".wwlog"
RETIRED_SUFFIX = ".deleted"
"""Added to the name of a deleted world's logs (``Recording.retire``)."""
HEADER_KIND = "worldweave.world_log"
_FRAME = struct.Struct("<II")
"""A length and a CRC32: before the header and before each record's body."""
_U32 = struct.Struct("<I")
ARRAY_COMPRESSION_LEVEL = 1
"""zlib level of a kept frame's arrays (lossless; level 1: fast, about half the size of raw depth)."""


class RecordKind(IntEnum):
    """What a record holds: the request type it was, and the RPC that replay sends it to."""

    CREATE = 1
    STEP = 2
    REMOVE = 3
    RECOLOR = 4
    INSERT = 5
    CHECKPOINT = 6
    RESTORE = 7
    LABEL = 8


REQUEST_TYPES: dict[RecordKind, type] = {
    RecordKind.CREATE: pb.CreateWorldRequest, RecordKind.STEP: pb.StepRequest,
    RecordKind.REMOVE: pb.RemoveRegionRequest, RecordKind.RECOLOR: pb.RecolorRegionRequest,
    RecordKind.INSERT: pb.InsertPointsRequest, RecordKind.CHECKPOINT: pb.CheckpointRequest,
    RecordKind.RESTORE: pb.RestoreWorldRequest, RecordKind.LABEL: pb.LabelRegionRequest,
}
"""Each kind's request message."""
KIND_OF: dict[type, RecordKind] = {message: kind for kind, message in REQUEST_TYPES.items()}


@dataclass(frozen=True)
class Record:
    """One entry of a log: ``request`` the request's protobuf bytes; ``meta`` what came out (JSON-ready: ``version``,
    ``frame_count``, ``memory`` hash, ``frames`` of a step, ``checkpoint_id`` of a checkpoint); ``arrays`` a step's
    kept frames, per frame rgb uint8 (H, W, 3), depth float32 (H, W) metres, confidence float32 (H, W)."""

    kind: RecordKind
    request: bytes
    meta: dict
    arrays: tuple[np.ndarray, ...] = ()

    def message(self):
        """The request, parsed."""
        return REQUEST_TYPES[self.kind].FromString(self.request)


# ------------------------------------------------------------------------------------------------ hashes


def array_hash(array: np.ndarray) -> str:
    """Hex SHA-256 (first 32 digits) of an array's dtype, shape and bytes."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()[:32]


class MemoryHasher:
    """A stable hash of a world's memory: the voxel map's version, voxel size and every column of its live rows
    (``VoxelMap.columns``, by name: float colours and surface points exact, not
    rounded), the frame count, and each anchor (id, frame id, pose, intrinsics, confidence, source and its arrays),
    in id order. Two worlds built by the same calls hash equal; any difference in what they hold shows. Each voxel
    column enters as its CRC-32 (6 GB/s against SHA-256's 1.8: a check against accidental divergence, not against
    an adversary), the anchors' arrays as SHA-256.

    An anchor's hash is kept while the store holds the same anchor object: an edit replaces an anchor and its
    arrays rather than writing into them (``AnchorStore._writable``), so only new and edited anchors are hashed again.
    Costs about 2 ms per step for 80k voxels and 150 anchors of 320x240 on a busy core (``benchmarks/bench_record.py``)."""

    def __init__(self) -> None:
        self._anchors: dict[int, tuple[object, bytes]] = {}

    def __call__(self, world: World) -> str:
        import torch  # here, so that 'worldweave replay --help' (which imports this module) stays fast

        voxel_map = world.memory.voxel_map
        count = len(voxel_map)
        digest = hashlib.sha256(json.dumps([int(voxel_map.version), voxel_map.voxel_size_m, count,
                                            int(world.frame_count)]).encode())
        for name, value in sorted(voxel_map.columns().items()):
            column = value.cpu().contiguous()
            crc = zlib.crc32(column.view(torch.uint8).numpy().data) if column.numel() else 0
            digest.update(f"{name}{column.dtype}{tuple(column.shape)}{crc:08x}".encode())
        anchors = {}
        for anchor in world.memory.anchors:
            kept = self._anchors.get(anchor.id)
            anchors[anchor.id] = kept if kept is not None and kept[0] is anchor else (anchor, self._anchor(anchor))
            digest.update(anchors[anchor.id][1])
        self._anchors = anchors
        return digest.hexdigest()[:32]

    @staticmethod
    def _anchor(anchor) -> bytes:
        k = anchor.intrinsics
        digest = hashlib.sha256(json.dumps([anchor.id, anchor.frame_id, float(anchor.confidence), int(anchor.source),
                                            [k.fx, k.fy, k.cx, k.cy, k.width, k.height]]).encode())
        for array in (anchor.pose.matrix, anchor.image, anchor.depth, anchor.points_cam, anchor.colors,
                      anchor.point_size_m, anchor.point_confidence, anchor.observed):
            digest.update(array_hash(np.asarray(array)).encode())
        return digest.digest()


# ------------------------------------------------------------------------------------------------ encoding


def encode_body(record: Record) -> bytes:
    """A record's body (see the module's layout)."""
    blobs, listed = [], []
    for array in record.arrays:
        blob = zlib.compress(np.ascontiguousarray(array).data, ARRAY_COMPRESSION_LEVEL)
        blobs.append(blob)
        listed.append({"dtype": array.dtype.str, "shape": list(array.shape), "bytes": len(blob)})
    meta = json.dumps({**record.meta, "arrays": listed}, separators=(",", ":")).encode()
    return b"".join([bytes([record.kind]), _U32.pack(len(record.request)), record.request, _U32.pack(len(meta)), meta,
                     *blobs])


def decode_body(body: bytes, where: str) -> Record:
    """A record from its body (CRC already checked); ``StorageError`` naming ``where`` for a malformed one."""
    try:
        kind = RecordKind(body[0])
        (request_length,) = _U32.unpack_from(body, 1)
        request = body[5:5 + request_length]
        (meta_length,) = _U32.unpack_from(body, 5 + request_length)
        start = 9 + request_length
        meta = json.loads(body[start:start + meta_length])
        offset, arrays = start + meta_length, []
        for entry in meta.pop("arrays"):
            raw = zlib.decompress(body[offset:offset + entry["bytes"]])
            arrays.append(np.frombuffer(raw, dtype=np.dtype(entry["dtype"])).reshape(entry["shape"]))
            offset += entry["bytes"]
    except (ValueError, IndexError, KeyError, TypeError, struct.error, zlib.error) as error:
        raise StorageError(f"{where} is malformed though its CRC matches: {error}") from error
    if len(request) != request_length or offset != len(body):
        raise StorageError(f"{where} is malformed though its CRC matches: its lengths do not add up")
    return Record(kind, request, meta, tuple(arrays))


# ------------------------------------------------------------------------------------------------ writing


class LogWriter:
    """Appends records to a new log file at ``path`` (which must not exist) that starts with ``header``; each record is
    one ``write``, then an ``fsync`` unless ``fsync`` is False (the folder is fsynced once, when the file is created).
    Without fsync a record survives a crash of the server (it is in the kernel's page cache once ``write`` returns)
    but not one of the machine."""

    def __init__(self, path: Path, header: dict, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.records = 0
        """Records appended so far (the header is none): the log's position, which a save notes."""
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        header_bytes = json.dumps(header).encode()
        self._write(MAGIC + _U32.pack(FORMAT_VERSION) + _FRAME.pack(len(header_bytes), zlib.crc32(header_bytes))
                    + header_bytes)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        if self.fsync:
            os.fsync(self._fd)

    def append(self, record: Record) -> None:
        """Write ``record`` and fsync it."""
        body = encode_body(record)
        self._write(_FRAME.pack(len(body), zlib.crc32(body)) + body)
        self.records += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# ------------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class LogEnd:
    """How a log ends, once read through: ``records`` complete records; ``problem`` None for a clean end, else what
    is wrong with record ``records + 1`` ("truncated tail", "corrupted record (CRC mismatch)"), which starts at byte
    ``offset`` of the ``size``-byte file."""

    records: int
    offset: int
    size: int
    problem: str | None = None

    def describe(self) -> str:
        if self.problem is None:
            return f"{self.records} records, the log ends cleanly at byte {self.size}"
        return (f"stopped at record {self.records + 1} of {self.records + 1}: {self.problem} at byte {self.offset} "
                f"of {self.size}")


class LogReader:
    """Reads a log written by ``LogWriter``. Opening checks the magic, the format version and the header (a
    ``StorageError`` saying what is wrong: not a log, another format version, a damaged header); ``records()``
    yields ``(number, Record)`` from 1 and stops at the first record that is cut short or fails its CRC, which
    ``end`` then describes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._file = self.path.open("rb")
        except OSError as error:
            raise StorageError(f"cannot read the log {self.path}: {error.strerror}") from None
        self.size = os.fstat(self._file.fileno()).st_size
        start = self._file.read(len(MAGIC) + _U32.size)
        if start[:len(MAGIC)] != MAGIC:
            raise StorageError(f"{self.path} is not a worldweave record log (it does not start with {MAGIC!r})")
        if len(start) < len(MAGIC) + _U32.size:
            raise StorageError(f"{self.path} ends inside its format version: nothing was recorded")
        (version,) = _U32.unpack_from(start, len(MAGIC))
        if version != FORMAT_VERSION:
            raise StorageError(
                f"{self.path} is a record log of format version {version}; this worldweave reads format version "
                f"{FORMAT_VERSION} only: replay it with the worldweave version that wrote it"
            )
        header = self._frame()
        if not isinstance(header, bytes):
            raise StorageError(f"{self.path}: its header is {header}: the log is unusable")
        try:
            self.header: dict = json.loads(header)
        except ValueError as error:
            raise StorageError(f"{self.path}: its header is not JSON ({error})") from None
        if not isinstance(self.header, dict) or self.header.get("kind") != HEADER_KIND or "world_id" not in self.header:
            raise StorageError(f"{self.path}: its header is not a world log's ({str(self.header)[:80]})")
        self._first_record = self._file.tell()
        self.end: LogEnd | None = None
        """How the log ended (``LogEnd``); None until ``records()`` has read it through."""

    def _frame(self) -> bytes | str:
        """The next framed body, or why there is none ("" at a clean end of the file)."""
        head = self._file.read(_FRAME.size)
        if not head:
            return ""
        if len(head) < _FRAME.size:
            return "truncated tail"
        length, crc = _FRAME.unpack(head)
        body = self._file.read(length)
        if len(body) < length:
            return "truncated tail"
        if zlib.crc32(body) != crc:
            return "corrupted record (CRC mismatch)"
        return body

    def records(self) -> Iterator[tuple[int, Record]]:
        """``(number, Record)`` for each complete record, from 1; then ``end`` says how the log ended."""
        self._file.seek(self._first_record)
        number = 0
        while True:
            offset = self._file.tell()
            body = self._frame()
            if not isinstance(body, bytes):
                self.end = LogEnd(number, offset, self.size, body or None)
                return
            number += 1
            yield number, decode_body(body, f"record {number} of {self.path}")

    def count(self) -> LogEnd:
        """Read the log through without decoding records (for a progress bar): how it ends."""
        for _ in self.records():
            pass
        return self.end

    def close(self) -> None:
        self._file.close()


# ------------------------------------------------------------------------------------------------ the hook


class WorldRecorder:
    """The hook a world's entry holds: ``record(world, request, result)`` is called under the world's lock after a
    state-changing request succeeded, appends its record to ``log`` (a ``LogWriter``, or on replay anything with
    ``append`` and ``close``) and returns ``result``. ``log`` None: the world is not recorded, and a call costs one
    attribute test. ``keep_frames``: whether a step's record keeps its frames (for a generator replay cannot re-run).

    A log that cannot be written (disk full) is closed with an error in the server's log, and the world goes on
    unrecorded: its log stays valid up to its last record."""

    def __init__(self, log: LogWriter | None = None, *, keep_frames: bool = False) -> None:
        self.log = log
        self.keep_frames = keep_frames
        self._memory_hash = MemoryHasher()

    def record(self, world: World, request, result: T) -> T:
        """Append the record of ``request`` (a message of ``REQUEST_TYPES``) that ``world`` just ran with ``result``
        (a ``StepResult`` for a step, a ``CheckpointInfo`` for a checkpoint); return ``result``."""
        if self.log is None:
            return result
        kind = KIND_OF[type(request)]
        meta: dict = {"version": int(world.version), "frame_count": int(world.frame_count),
                      "memory": self._memory_hash(world)}
        arrays: list[np.ndarray] = []
        if kind is RecordKind.STEP:
            meta["frames"] = [{"frame_id": f.frame_id, "camera": f.camera_index, "rgb": array_hash(f.rgb),
                               "depth": array_hash(f.depth)} for f in result.frames]
            if self.keep_frames:
                arrays = [a for f in result.frames for a in (f.rgb, f.depth, f.confidence)]
        elif kind is RecordKind.CHECKPOINT:
            meta["checkpoint_id"] = result.checkpoint_id
        try:
            self.log.append(Record(kind, request.SerializeToString(), meta, tuple(arrays)))
        except OSError as error:
            logger.error("recording stopped: cannot write %s (%s); the world goes on unrecorded",
                         getattr(self.log, "path", "the log"), error)
            self.close()
        return result

    def position(self) -> dict | None:
        """Where the world's record stands: ``{"log": file name, "records": records written}`` while it is recorded
        into a ``LogWriter``, else None. Read under the world's lock, it is what a save of the world covers."""
        if not isinstance(self.log, LogWriter):
            return None
        return {"log": self.log.path.name, "records": self.log.records}

    def close(self) -> None:
        """Close the log (the world was deleted, or writing failed); later calls record nothing."""
        if self.log is not None:
            log, self.log = self.log, None
            log.close()


NOT_RECORDED = WorldRecorder()
"""The hook of every world that is not recorded (it holds no state)."""


def not_recorded(world_id: str, tenant: str, world: World) -> WorldRecorder:
    """The opener of a world that is not recorded (``Recording.opener``)."""
    return NOT_RECORDED


@dataclass(frozen=True)
class Recording:
    """Which worlds a server records, and where: ``folder`` None records none; else a world is recorded when its
    CreateWorldRequest sets ``record``, or leaves it unset and ``every_world`` is True. The default tenant's logs go
    to ``folder/``, tenant t's to ``folder/@tenants/t/``, each named ``<world id>.<UTC time>-<6 hex>.wwlog``.
    ``generator`` (the server's backend class), ``generator_options``, ``device`` and ``limits`` go into each log's
    header, for replay. ``fsync``: fsync each record before the request is answered (``LogWriter``)."""

    folder: Path | None = None
    every_world: bool = True
    fsync: bool = True
    generator: type[Generator] | None = None
    generator_options: dict = field(default_factory=dict)
    device: str = "cpu"
    limits: ServerLimits | None = None
    retire_on_delete: bool = False
    """DeleteWorld with ``delete_saved`` also retires the world's logs (``retire``), so that no server rebuilds the
    deleted world from them (set for shared storage by ``server.cluster.handoff``)."""

    def __post_init__(self) -> None:
        if self.folder is not None and self.generator is None:
            raise InvalidInputError("a Recording with a folder needs the server's generator class (its header names it)")

    def opener(self, request: pb.CreateWorldRequest) -> Callable[[str, str, World], WorldRecorder]:
        """How the world ``request`` creates is recorded: a function of (world id, tenant, the new world), called on
        the thread pool before anyone else can reach the world, that writes the log's header and the create record
        and returns the world's hook. ``PreconditionError`` when ``request`` asks for a record and there is no folder."""
        wanted = request.record if request.HasField("record") else self.every_world and self.folder is not None
        if wanted and self.folder is None:
            raise PreconditionError("record is set but this server keeps no records: start it with "
                                    "`worldweave serve --record DIR`")
        if not wanted:
            return not_recorded

        def open_log(world_id: str, tenant: str, world: World) -> WorldRecorder:
            recorder = self.start(world_id, tenant)
            recorder.record(world, request, None)
            return recorder

        return open_log

    def tenant_folder(self, tenant: str) -> Path:
        """The folder of ``tenant``'s logs (``folder`` for the default tenant; needs a ``folder``)."""
        from worldweave.server.registry import TENANTS_FOLDER  # the registry imports this module

        if self.folder is None:
            raise PreconditionError("this server keeps no records: start it with `worldweave serve --record DIR`")
        return self.folder if tenant == DEFAULT_TENANT else self.folder / TENANTS_FOLDER / tenant

    def retire(self, world_id: str, tenant: str) -> list[Path]:
        """Rename every log of ``world_id`` to ``<name>.deleted`` (kept for ``worldweave replay``, no longer the
        world's); the new paths."""
        retired = []
        for path in sorted(self.tenant_folder(tenant).glob(f"{world_id}.*{SUFFIX}")):
            target = path.with_name(path.name + RETIRED_SUFFIX)
            os.rename(path, target)
            retired.append(target)
        return retired

    def start(self, world_id: str, tenant: str, *, continues: dict | None = None) -> WorldRecorder:
        """A new log of world ``world_id`` with its header written, and the hook that records into it. ``continues``
        (a world loaded from a save rather than created; ``server.cluster.handoff``): goes into the header as what
        the log starts from, ``{"log": file name or None, "records": N, "version": V}`` (the save of version V,
        which covers log ``log`` up to record N); None: the log starts with the world's creation."""
        folder = self.tenant_folder(tenant)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = folder / f"{world_id}.{stamp}-{uuid.uuid4().hex[:6]}{SUFFIX}"
        keep_frames = not (self.generator.deterministic and self.generator.returns_depth)
        header = {
            "kind": HEADER_KIND, "world_id": world_id, "tenant": tenant,
            "created_unix_s": time.time(), "server_version": server_version(), "device": self.device,
            "replay": "playback" if keep_frames else "rerun",
            "generator": {name: getattr(self.generator, name) for name in GENERATOR_CONTRACT},
            "generator_options": self.generator_options,
            "limits": asdict(self.limits) if self.limits is not None else {},
            "fsync": "after every record" if self.fsync else "never (write only)",
        }
        if continues is not None:
            header["continues"] = continues
        try:
            folder.mkdir(parents=True, exist_ok=True)
            writer = LogWriter(path, header, fsync=self.fsync)
        except OSError as error:
            raise StorageError(f"cannot start the record of world {world_id!r} in {folder}: {error}") from None
        logger.info("recording world %r to %s (replay %s)", world_id, path, header["replay"])
        return WorldRecorder(writer, keep_frames=keep_frames)
