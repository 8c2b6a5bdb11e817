"""Moving a world between servers through shared storage, exactly: save and unload on one, load (and recover) on
another, with the same memory, version, checkpoints and exactly-once step sessions. Plain Python over a server's
registry (no Ray): ``server.cluster.replica`` runs it inside a Ray Serve replica, the tests run it in-process.

Shared storage (``shared_config``) is one folder all servers see: ``worlds/`` is every server's data folder (a save
is ``worlds/<id>/``: the world, its step sessions, and in its manifest the position of its record log it covers,
``log``: ``{"log": file name, "records": N}``), and ``logs/`` its record folder (every world recorded, each record
fsynced before its request is answered, ``server.record_log``).

A world's record is a chain of logs ("segments"). Creating the world starts the first (its record 1 is the
creation). Each time a server takes the world (``Handoff.acquire``), it starts a new segment whose header says what
it continues from: ``continues = {"log": L, "records": N, "version": V, "generation": G}``, the world at version V
as log L stood after record N (the save plus the records replayed on top of it), at its G-th acquire. So whatever a server dies with, the world is its
newest save plus the records after the position that save notes, walked along the chain (``recovery_plan``):

* after an orderly ``release`` (save, then unload) the save covers the whole chain: nothing to replay ("loaded");
* after a crash, the records since the last save (autosave bounds them) are replayed through the same servicer code
  that ran them, numbered steps with their ``(session_id, sequence)``, so the sessions keep each answer again and a
  retry is answered from it, not run twice ("recovered"). A deterministic generator re-runs each step; otherwise the
  log kept the frames and they are played back (``server.replay.playback_generator``). Each replayed record's
  version and frame count, and the final memory hash, are checked against the log: a recovery that differs from the
  log is an error, never a silently different world.

A world with neither a save nor a log is unknown here; DeleteWorld with ``delete_saved`` retires its logs too
(``Recording.retire``), so a deleted world is unknown afterwards, not rebuilt from them. A log that continues from a save that is missing, unreadable,
or not the one it names (DATA_LOSS, ``StorageError``, naming the world) is never replaced by an empty world.
Records past a truncated or corrupted tail (a write cut short by the crash) were never acknowledged and are dropped.

All methods run on the server's event loop. The caller (the front door) routes no call to a world while it is being
acquired or released; acquire and release of one world are serialised here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

from worldweave.bridge.storage import read_manifest, resolve_folder
from worldweave.proto.errors import (
    LimitExceededError,
    NotFoundError,
    PreconditionError,
    StorageError,
)
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server.auth import caller
from worldweave.server.record_log import (
    SUFFIX,
    LogReader,
    MemoryHasher,
    Record,
    RecordKind,
    WorldRecorder,
)
from worldweave.server.registry import (
    FORMAT_VERSION,
    MANIFEST_KIND,
    WorldRegistry,
    check_world_id,
)
from worldweave.server.service import WorldServicer

logger = logging.getLogger(__name__)

WORLDS_FOLDER = "worlds"
"""Folder of the shared storage that holds the worlds' saves (every server's data folder)."""
LOGS_FOLDER = "logs"
"""Folder of the shared storage that holds the worlds' record logs."""
ACQUIRED = ("held", "loaded", "recovered", "unknown")
"""What ``Handoff.acquire`` answers: the world was loaded here already; loaded from its save (nothing to replay);
rebuilt from its save (or its creation) and the records after it; neither saved nor recorded on shared storage."""


def shared_config(config, shared_dir: Path):
    """``config`` (a ``ServerConfig``) for a server whose worlds live in ``shared_dir``: saves in ``worlds/``, every
    world recorded into ``logs/`` with an fsync per record. ``PreconditionError`` when ``config`` names its own data
    or record folder (a server of shared storage keeps its worlds there only)."""
    if config.data_dir is not None or config.record_dir is not None:
        raise PreconditionError(f"a server of shared storage {shared_dir} keeps its worlds there: do not set a data "
                                f"folder ({config.data_dir}) or a record folder ({config.record_dir})")
    shared_dir = Path(shared_dir)
    return replace(config, data_dir=shared_dir / WORLDS_FOLDER, record_dir=shared_dir / LOGS_FOLDER,
                   record_every_world=True, record_fsync=True)


# ------------------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Segment:
    """One log of a world's chain: its file and its header."""

    path: Path
    header: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def continues(self) -> dict | None:
        """What this segment starts from (``{"log", "records", "version"}``); None: it starts with the creation."""
        return self.header.get("continues")


@dataclass(frozen=True)
class Span:
    """Records ``after + 1`` .. ``upto`` of ``segment`` (``upto`` None: to its end) to replay, in order."""

    segment: Segment
    after: int
    upto: int | None


def world_segments(folder: Path, world_id: str) -> list[Segment]:
    """Every log of ``world_id`` in the log folder ``folder``, oldest first (by creation time in the header).
    ``StorageError`` naming the world for a log whose header cannot be read."""
    segments = []
    for path in sorted(folder.glob(f"{world_id}.*{SUFFIX}")) if folder.is_dir() else ():
        reader = LogReader(path)
        reader.close()
        if reader.header.get("world_id") == world_id:
            segments.append(Segment(path, reader.header))
    return sorted(segments, key=lambda segment: (segment.header.get("created_unix_s", 0.0), segment.name))


def tip(segments: list[Segment]) -> Segment | None:
    """The newest segment of a world's chain: one that no other continues from, of the highest ``generation`` when
    there are several (two acquires that continued from one position, the first of which crashed before it wrote a
    record); None for no segments. Generations count acquires, so no clock decides."""
    continued = {segment.continues["log"] for segment in segments if segment.continues}
    tips = [segment for segment in segments if segment.name not in continued]
    return max(tips, key=generation) if tips else None


def generation(segment: Segment) -> int:
    """How many acquires the world had when ``segment`` was started (0: the log of its creation)."""
    return int((segment.continues or {}).get("generation", 0))


def recovery_plan(world_id: str, segments: list[Segment], save: dict | None) -> list[Span]:
    """What to replay on top of the save ``save`` (its manifest; None: no save) to get world ``world_id`` back, given
    its log ``segments``: the spans from the position the save covers to the end of the newest segment. Empty: the
    save is the world. ``StorageError`` (DATA_LOSS) naming the world when the logs continue from a save that is not
    there, or that is not on the chain."""
    newest = tip(segments)
    if newest is None:
        return []
    covered = (save.get("log") or {"log": None, "records": 0}) if save is not None else None
    by_name = {segment.name: segment for segment in segments}
    spans: list[Span] = []
    segment, upto = newest, None
    while True:
        if covered is not None and segment.name == covered["log"]:
            if upto is not None and covered["records"] > upto:
                raise StorageError(f"world {world_id!r}: its save covers {covered['records']} records of {segment.name}, "
                                   f"past the {upto} the next log continues from: the logs were not written by this save")
            spans.append(Span(segment, covered["records"], upto))
            break
        start = segment.continues
        if start is None:  # the segment starts with the world's creation
            if save is not None:
                raise StorageError(f"world {world_id!r}: its save on shared storage (version {save.get('version')}) is "
                                   f"not on the chain of its logs (newest {newest.name}); it is not the save they "
                                   "continue from")
            spans.append(Span(segment, 0, upto))
            break
        if save is None:
            raise StorageError(f"world {world_id!r}: its save is missing from shared storage, but its log "
                               f"{segment.name} continues from it (version {start['version']}); the world cannot be "
                               "rebuilt from the log alone")
        spans.append(Span(segment, 0, upto))
        if covered["log"] == start["log"] and covered["records"] == start["records"]:
            if int(save.get("version", -1)) != int(start["version"]):
                raise StorageError(f"world {world_id!r}: its save on shared storage is version {save.get('version')}, "
                                   f"but its log {segment.name} continues from version {start['version']}")
            break
        if start["log"] not in by_name:
            raise StorageError(f"world {world_id!r}: its log {segment.name} continues from the log {start['log']}, "
                               "which is missing from shared storage")
        segment, upto = by_name[start["log"]], int(start["records"])
    return spans[::-1]


# ------------------------------------------------------------------------------------------------ replay


class _ReplayContext:
    """The part of a gRPC call's context the servicer's handlers use on replay: ``abort`` raises."""

    def __init__(self, where: str) -> None:
        self.where = where

    async def abort(self, code, details: str) -> None:
        raise StorageError(f"{self.where} failed on replay ({code.name}: {details}); the world is not recovered")


class _Replaying(WorldRecorder):
    """The hook of a world while its records are replayed: it records nothing (the log holds them already) and
    reports the log position replayed so far, which a save meanwhile (autosave) notes as what it covers."""

    def __init__(self, position: dict) -> None:
        super().__init__(None)
        self.at = position

    def position(self) -> dict | None:
        return dict(self.at)


async def _one(request) -> AsyncIterator:
    yield request


class Handoff:
    """Acquire and release worlds of ``registry`` (a server of shared storage: ``shared_config``); ``limits``: the
    server's request limits (``ServerLimits``), which replayed requests meet again; ``capacity``: most worlds held
    at once (``acquire`` beyond it is RESOURCE_EXHAUSTED; None: no bound)."""

    def __init__(self, registry: WorldRegistry, limits, *, capacity: int | None = None) -> None:
        if registry.data_dir is None or registry.recording.folder is None:
            raise PreconditionError("a hand-off needs a server of shared storage: a data folder and a record folder "
                                    "(shared_config)")
        registry.recording = replace(registry.recording, retire_on_delete=True)
        self.registry = registry
        self.capacity = capacity
        self._servicer = WorldServicer(registry, limits, pb.GetServerInfoResponse())
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, world_id: str) -> asyncio.Lock:
        return self._locks.setdefault(world_id, asyncio.Lock())

    def held(self) -> list[str]:
        """Ids of the worlds loaded here (the calling tenant's), sorted."""
        tenant = caller().tenant
        return sorted(entry.world_id for entry in self.registry.loaded() if entry.tenant == tenant)

    async def acquire(self, world_id: str) -> str:
        """Make world ``world_id`` loaded here; one of ``ACQUIRED`` (see the module). ``StorageError`` (DATA_LOSS)
        naming the world when its save or logs on shared storage cannot give it back exactly."""
        check_world_id(world_id)
        async with self._lock(world_id):
            if world_id in self.held():
                return "held"
            if self.capacity is not None and len(self.held()) >= self.capacity:
                raise LimitExceededError(f"this server holds {self.capacity} worlds, its capacity: release one before "
                                         f"acquiring {world_id!r}")
            tenant = caller().tenant
            folder = self.registry.folder(world_id)
            has_save = folder.exists() or folder.with_name(folder.name + ".previous").exists()
            segments = await self.registry.offload(
                lambda: world_segments(self.registry.recording.tenant_folder(tenant), world_id))
            if not has_save and not segments:
                return "unknown"
            save = await self.registry.offload(lambda: self._manifest(world_id, folder)) if has_save else None
            plan = recovery_plan(world_id, segments, save)
            if save is not None:
                try:
                    await self.registry.load(world_id)
                except (StorageError, OSError, ValueError) as error:
                    raise StorageError(f"world {world_id!r}: its save on shared storage is unreadable ({error}); "
                                       "it is not recovered") from None
                self.registry.entry(world_id).recorder = _Replaying(save.get("log") or {"log": None, "records": 0})
            try:
                replayed, position = await self._replay(world_id, plan, save)
                entry = self.registry.entry(world_id)
                version = int(entry.world.version)
                continues = position if position is not None else {
                    **((save or {}).get("log") or {"log": None, "records": 0})}
                after = 1 + max((generation(segment) for segment in segments), default=0)
                entry.recorder = await self.registry.offload(lambda: self.registry.recording.start(
                    world_id, tenant, continues={**continues, "version": version, "generation": after}))
            except BaseException:
                if world_id in self.held():
                    await self.registry.delete(world_id, delete_saved=False)
                raise
            logger.info("world %r %s here at version %d (%d records replayed)", world_id,
                        "recovered" if replayed else "loaded", version, replayed)
            return "recovered" if replayed else "loaded"

    @staticmethod
    def _manifest(world_id: str, folder: Path) -> dict:
        try:
            return read_manifest(resolve_folder(folder), MANIFEST_KIND, (FORMAT_VERSION,))
        except (StorageError, OSError) as error:
            raise StorageError(f"world {world_id!r}: its save on shared storage is unreadable ({error}); it is not "
                               "recovered") from None

    async def _replay(self, world_id: str, plan: list[Span], save: dict | None) -> tuple[int, dict | None]:
        """Replay ``plan`` onto the loaded world (or, without a save, from its creation record); return the records
        replayed and the position reached (``{"log", "records"}``; None when nothing was replayed). While it runs,
        the world's hook is a ``_Replaying``, so a save meanwhile (autosave) notes the position replayed so far."""
        replayed, position, last = 0, None, None
        for span in plan:
            reader = LogReader(span.segment.path)
            try:
                playback = None
                if span.segment.header.get("replay") == "playback":
                    from worldweave.server.replay import playback_generator

                    playback = playback_generator(span.segment.header.get("generator", {}))
                reached = span.after
                for number, record in reader.records():
                    if number <= span.after:
                        continue
                    if span.upto is not None and number > span.upto:
                        break
                    where = f"world {world_id!r}: record {number} of {span.segment.name} ({record.kind.name.lower()})"
                    if save is None and replayed == 0 and record.kind is not RecordKind.CREATE:
                        raise StorageError(f"{where}: the world has no save and its first log does not start with "
                                           "its creation")
                    await self._apply(world_id, record, where, playback)
                    replayed, last, reached = replayed + 1, record, number
                    position = {"log": span.segment.name, "records": number}
                    self.registry.entry(world_id).recorder = _Replaying(position)
                if span.upto is not None and reached < span.upto:
                    raise StorageError(f"world {world_id!r}: {span.segment.name} ends at record {reached}, before "
                                       f"record {span.upto}, which the next log continues from")
            finally:
                reader.close()
        if last is not None:
            entry = self.registry.entry(world_id)
            memory = await self.registry.run(entry, MemoryHasher())
            if memory != last.meta["memory"]:
                raise StorageError(f"world {world_id!r}: its memory after replay differs from its log's (hash {memory}, "
                                   f"log {last.meta['memory']}); it is not recovered")
        return replayed, position

    async def _apply(self, world_id: str, record: Record, where: str, playback) -> None:
        """Run one record's request through the servicer (its world's lock, the engine), unrecorded, and check the
        version and frame count it leaves against the log's."""
        request = record.message()
        request.world_id = world_id
        context = _ReplayContext(where)
        if record.kind is RecordKind.CREATE:
            request.record = False  # the log holds it already; the server starts a new segment afterwards
            await self._servicer.CreateWorld(request, context)
        elif record.kind is RecordKind.STEP:
            world = self.registry.entry(world_id).world
            generator = world.generator
            if playback is not None:
                playback.load(record)
                world.generator = playback
            try:
                async for _ in self._servicer.Step(_one(request), context):
                    pass
            finally:
                world.generator = generator
        elif record.kind is RecordKind.CHECKPOINT:  # under the id the log names, so clients' ids still work
            checkpoint_id = record.meta["checkpoint_id"]
            await self.registry.run(self.registry.entry(world_id),
                                    lambda world: world.checkpoints.add(world.snapshot(), checkpoint_id))
        else:
            handler = {RecordKind.REMOVE: "RemoveRegion", RecordKind.RECOLOR: "RecolorRegion",
                       RecordKind.INSERT: "InsertPoints", RecordKind.RESTORE: "RestoreWorld",
                       RecordKind.LABEL: "LabelRegion"}[record.kind]
            await getattr(self._servicer, handler)(request, context)
        world = self.registry.entry(world_id).world
        if (int(world.version), int(world.frame_count)) != (record.meta["version"], record.meta["frame_count"]):
            raise StorageError(f"{where}: replay left the world at version {world.version} with {world.frame_count} "
                               f"frames, the log says {record.meta['version']} and {record.meta['frame_count']}; it "
                               "is not recovered")

    async def release(self, world_id: str) -> bool:
        """Save world ``world_id`` to shared storage and unload it; False when it is not loaded here."""
        check_world_id(world_id)
        async with self._lock(world_id):
            try:
                entry = self.registry.entry(world_id)
            except (NotFoundError, PreconditionError):
                return False
            await self.registry.save(entry)
            await self.registry.delete(world_id, delete_saved=False)
            return True

    async def drain(self) -> list[str]:
        """Release every world held here; their ids."""
        held = self.held()
        await asyncio.gather(*(self.release(world_id) for world_id in held))
        return held
