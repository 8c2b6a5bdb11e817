"""The worlds a server holds: by id, each with its lock, saved to and loaded from the data folder.

A world id is 1..64 characters from ``[A-Za-z0-9_-]`` (it names a folder). With a data folder, world ``w`` saves
to ``DATA/w/`` atomically (``bridge.storage.atomic_folder``): ``DATA/w/world/`` is what ``World.save`` writes and
``DATA/w/manifest.json`` the server's record of it (id, version, intrinsics, prompt, configuration, counts, and for a
recorded world the position of its record log the save covers, ``log``), so the worlds of a data folder are listed
again after a restart without loading them; ``DATA/w/sessions.bin`` holds its exactly-once step sessions
(``sessions``), which a load brings back. A save killed mid-write leaves its
temporary folder (``DATA/.w.tmp-XXXXXXXX``): the next save of ``w`` and the next start-up (``scan``) delete it.

Tenants: every world belongs to the tenant of the call that created or loaded it (``auth.caller()``), and ids are
resolved in the calling tenant's namespace only, so a tenant neither sees nor reaches another's worlds (a lookup
of another tenant's id fails exactly as for an id nobody has) and two tenants may use the same id. The default
tenant (a server without auth, or with one bare token) keeps the layout above, ``DATA/w/``; tenant ``t`` saves
to ``DATA/@tenants/t/w/``.

Every method runs on the server's event loop (the dict of worlds needs no lock); engine work goes to the thread
pool under the world's lock (``scheduling.run_locked``) once admission control lets it in (``scheduling.Admission``:
bounded queues, fair turns between clients). Work that changes a world's version wakes the point-cloud
streams following it (``wait_for_change``) and counts towards autosave (``AutosavePolicy``): with a data folder, a
world is saved after every N changes (steps or edits) and/or once a change has stayed unsaved for S seconds, and the
worlds with unsaved changes are saved when the server stops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.generators.base import Generator
from worldweave.bridge.generators.depth import DepthEstimator
from worldweave.bridge.memory.spatial_memory import MemoryConfig
from worldweave.bridge.storage import (
    atomic_folder,
    read_manifest,
    remove_stale_temporaries,
    resolve_folder,
    write_manifest,
)
from worldweave.bridge.world import Seed, World, WorldConfig
from worldweave.proto.errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    PreconditionError,
    StorageError,
)
from worldweave.proto.geometry import Intrinsics
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server.auth import DEFAULT_TENANT, TENANT_PATTERN, caller
from worldweave.server.record_log import NOT_RECORDED, Recording, WorldRecorder, not_recorded
from worldweave.server.scheduling import Admission, WorldLock, as_server_work, run_locked
from worldweave.server.sessions import StepSessions
from worldweave.server.world_state import QUERY_REACH

T = TypeVar("T")
logger = logging.getLogger(__name__)

WORLD_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
MANIFEST_KIND = "worldweave.server.world"
FORMAT_VERSION = 1
WORLD_FOLDER = "world"
"""Subfolder of a saved world's folder that ``World.save`` writes."""
SESSIONS_FILE = "sessions.bin"
"""File of a saved world's folder that holds its step sessions (``StepSessions.to_bytes``)."""
TENANTS_FOLDER = "@tenants"
"""Folder of the data folder that holds one folder per tenant but the default one (not a world id: '@')."""

WorldKey = tuple[str, str]
"""(tenant, world id): how the registry keys a world, so that tenants never share one."""


ECHO_CHARS = 64
"""Most characters of a user's string an error message repeats (``clip``)."""


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """``repr(text)`` for an error message, cut to its first ``limit`` characters and ``… (N chars)`` when longer:
    a message stays short (gRPC carries it in an 8 KiB header) whatever the client sent."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} chars)"


def check_world_id(world_id: str) -> str:
    """Return ``world_id`` or raise ``InvalidInputError`` naming it, clipped (ids name folders: no path
    characters). Every later message that names an id names a checked one, at most 64 characters."""
    if not WORLD_ID_PATTERN.fullmatch(world_id):
        raise InvalidInputError(f"world_id {clip(world_id)} must be 1..64 characters from A-Z, a-z, 0-9, '_' and '-'")
    return world_id


@dataclass(frozen=True)
class WorldSummary:
    """What the server reports of a world, loaded or only saved.

    ``version``: memory version (saved version when not loaded). ``intrinsics``: default camera. ``memory``: the
    memory configuration in force. ``voxel_count``: voxels in the global map. ``frame_count``: frames generated.
    """

    world_id: str
    loaded: bool
    saved: bool
    version: int
    intrinsics: Intrinsics
    prompt: str
    memory: MemoryConfig
    generator: str
    voxel_count: int
    frame_count: int

    def to_manifest(self) -> dict:
        """JSON-ready record of a saved world (``loaded`` and ``saved`` are facts of the moment, left out)."""
        record = asdict(self)
        del record["loaded"], record["saved"]
        return {"kind": MANIFEST_KIND, "format_version": FORMAT_VERSION, **record}

    @classmethod
    def from_manifest(cls, manifest: dict, *, loaded: bool) -> WorldSummary:
        """The summary of a save from its manifest (see ``to_manifest``)."""
        try:
            return cls(
                world_id=str(manifest["world_id"]),
                loaded=loaded,
                saved=True,
                version=int(manifest["version"]),
                intrinsics=Intrinsics(**manifest["intrinsics"]),
                prompt=str(manifest["prompt"]),
                memory=MemoryConfig.from_dict(manifest["memory"]),
                generator=str(manifest["generator"]),
                voxel_count=int(manifest["voxel_count"]),
                frame_count=int(manifest["frame_count"]),
            )
        except (KeyError, TypeError, ValueError) as error:  # InvalidInputError is a ValueError
            raise StorageError(f"saved world manifest of {manifest.get('world_id')!r} is malformed: {error!r}") from error


@dataclass(frozen=True)
class AutosavePolicy:
    """When a server saves its worlds by itself (it needs a data folder). Zero turns a rule off."""

    every_changes: int = 0
    """Save a world once this many steps or edits have changed it since its last save (creating a world counts as
    its first change)."""
    every_s: float = 0.0
    """Save a world once a change has stayed unsaved for this many seconds (checked every ``every_s / 4``, at
    most every second)."""

    def __post_init__(self) -> None:
        if self.every_changes < 0 or not self.every_s >= 0:
            raise InvalidInputError(f"autosave needs every_changes >= 0 and every_s >= 0 seconds, got {self}")

    @property
    def enabled(self) -> bool:
        return self.every_changes > 0 or self.every_s > 0


@dataclass
class WorldEntry:
    """A loaded world, the lock its work runs under, whether a save of it exists, and what follows it."""

    world_id: str
    world: World
    tenant: str = DEFAULT_TENANT
    """The tenant whose world this is."""
    lock: WorldLock = field(default_factory=WorldLock)
    saved: bool = False
    deleted: bool = False
    """Set when the world was unloaded while work waited for its lock; that work answers NOT_FOUND."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set (and replaced by a fresh event) whenever locked work changed the world's version or it was unloaded."""
    unsaved_changes: int = 0
    """Pieces of locked work (steps, edits) that changed the world since its last save."""
    unsaved_since_s: float = 0.0
    """``time.monotonic()`` of the first unsaved change."""
    sessions: StepSessions = field(default_factory=StepSessions)
    """The exactly-once step sessions of this world (``sessions``)."""
    recorder: WorldRecorder = NOT_RECORDED
    """Records the world's state-changing requests when it is recorded (``record_log``; CreateWorld's ``record``)."""

    @property
    def key(self) -> WorldKey:
        return self.tenant, self.world_id

    def notify_changed(self) -> None:
        """Wake everything waiting in ``WorldRegistry.wait_for_change``."""
        self.changed.set()
        self.changed = asyncio.Event()


def on_loop(loop: asyncio.AbstractEventLoop, work: Callable[[], T]) -> T:
    """Run ``work()`` on ``loop`` from another thread (a pool thread) and return its result: for state that only the
    loop changes, read while that thread holds a world's lock (``save`` reads the step sessions so)."""
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(work())
        except BaseException as error:  # handed to the waiting thread, which raises it
            done.set_exception(error)

    loop.call_soon_threadsafe(run)
    return done.result()


class WorldRegistry:
    """Worlds by id; ``generator`` is the server's shared (fair-queued) generator and ``depth_estimator`` its
    shared depth estimator (None: the generator's own depth is used), both given to every world created or loaded,
    as are the server's query reaches (``world_state.QUERY_REACH``); ``data_dir`` may be None. ``admission``
    bounds the calls waiting for locked work (``scheduling.Admission``; default: its default bounds). ``recording``:
    which worlds are recorded, and where (``record_log.Recording``; default: none)."""

    def __init__(
        self,
        generator: Generator,
        executor: Executor,
        *,
        data_dir: Path | None = None,
        device: str = "cpu",
        autosave: AutosavePolicy = AutosavePolicy(),
        depth_estimator: DepthEstimator | None = None,
        admission: Admission | None = None,
        recording: Recording = Recording(),
    ) -> None:
        if autosave.enabled and data_dir is None:
            raise PreconditionError("autosave needs a data folder: start the server with --data-dir DIR")
        self.generator = generator
        self.depth_estimator = depth_estimator
        self.executor = executor
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.device = device
        self.autosave = autosave
        self.admission = admission if admission is not None else Admission()
        self.recording = recording
        self._autosaving: dict[WorldKey, asyncio.Task] = {}
        self._loaded: dict[WorldKey, WorldEntry] = {}
        self._saved: dict[WorldKey, WorldSummary] = {}
        self._busy: set[WorldKey] = set()
        """Keys of worlds being created or loaded: reserved so two requests cannot make the same world."""

    # ------------------------------------------------------------------------------------------- discovery

    def scan(self) -> list[str]:
        """Read the manifests of every world saved in the data folder, of every tenant; return the folders of
        unreadable saves, relative to the data folder (``w`` for the default tenant, ``@tenants/t/w`` for t's).
        Run at start-up, before any save: it also deletes the temporary folders that interrupted saves left."""
        broken = []
        if self.data_dir is None or not self.data_dir.is_dir():
            return broken
        tenants_dir = self.data_dir / TENANTS_FOLDER
        tenants = sorted(
            folder.name for folder in (tenants_dir.iterdir() if tenants_dir.is_dir() else ())
            if folder.is_dir() and TENANT_PATTERN.fullmatch(folder.name) and folder.name != DEFAULT_TENANT
        )
        for tenant in [DEFAULT_TENANT, *tenants]:
            for stale in remove_stale_temporaries(self._tenant_dir(tenant)):
                logger.warning("removed %s, left by a save that was interrupted", stale)
            for folder in sorted(self._tenant_dir(tenant).iterdir()):
                key = (tenant, folder.name.removesuffix(".previous"))
                if not WORLD_ID_PATTERN.fullmatch(key[1]) or key in self._saved:
                    continue
                try:
                    self._saved[key] = self._read_summary(key)
                except StorageError:
                    broken.append(str(self._folder(key).relative_to(self.data_dir)))
        return broken

    def _tenant_dir(self, tenant: str) -> Path:
        """The folder of ``tenant``'s saved worlds: the data folder itself for the default tenant."""
        if self.data_dir is None:
            raise PreconditionError("this server has no data folder: start it with `worldweave serve --data-dir DIR`")
        return self.data_dir if tenant == DEFAULT_TENANT else self.data_dir / TENANTS_FOLDER / tenant

    def _folder(self, key: WorldKey) -> Path:
        tenant, world_id = key
        return self._tenant_dir(tenant) / world_id

    def folder(self, world_id: str) -> Path:
        """The save folder of world ``world_id`` of the calling tenant (whether or not a save is there)."""
        return self._folder(self._key(world_id))

    def _read_summary(self, key: WorldKey) -> WorldSummary:
        folder = resolve_folder(self._folder(key))
        return WorldSummary.from_manifest(read_manifest(folder, MANIFEST_KIND, (FORMAT_VERSION,)), loaded=False)

    @staticmethod
    def _key(world_id: str) -> WorldKey:
        """The key of ``world_id`` in the calling tenant's namespace (``InvalidInputError`` for a malformed id)."""
        return caller().tenant, check_world_id(world_id)

    # ------------------------------------------------------------------------------------------- lookup

    def entry(self, world_id: str) -> WorldEntry:
        """The loaded world ``world_id``; NOT_FOUND, or FAILED_PRECONDITION when it is saved but not loaded."""
        key = self._key(world_id)
        entry = self._loaded.get(key)
        if entry is not None:
            return entry
        if key in self._saved:
            raise PreconditionError(f"world {world_id!r} is saved but not loaded: call LoadWorld first")
        raise NotFoundError(f"no world {world_id!r}; ListWorlds shows the worlds this server has")

    def summary(self, entry: WorldEntry) -> WorldSummary:
        """The summary of a loaded world (reads counters only; call it under the world's lock or accept a race)."""
        world = entry.world
        return WorldSummary(
            world_id=entry.world_id,
            loaded=True,
            saved=entry.saved,
            version=int(world.version),
            intrinsics=world.intrinsics,
            prompt=world.prompt,
            memory=world.config.memory,
            generator=self.generator.name,
            voxel_count=len(world.memory.voxel_map),
            frame_count=int(world.frame_count),
        )

    def summaries(self) -> list[WorldSummary]:
        """Every world of the calling tenant, loaded or saved, sorted by id."""
        tenant = caller().tenant
        out = {world_id: self.summary(entry) for (owner, world_id), entry in self._loaded.items() if owner == tenant}
        for (owner, world_id), saved in self._saved.items():
            if owner == tenant:
                out.setdefault(world_id, saved)
        return [out[world_id] for world_id in sorted(out)]

    def loaded(self) -> list[WorldEntry]:
        """Every loaded world of every tenant, in no order (the server's metrics; never answered to a caller)."""
        return list(self._loaded.values())

    async def offload(self, work: Callable[[], T]) -> T:
        """Run ``work()`` on the pool without any lock (decoding, validation)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, work)

    async def run(self, entry: WorldEntry, work: Callable[[World], T]) -> T:
        """Run ``work(world)`` on the pool under the world's lock; NOT_FOUND if the world was deleted meanwhile;
        RESOURCE_EXHAUSTED at once when a client's call would wait beyond the queue bounds (``admission``).
        When the work changed the world's version, followers are woken and autosave counts it."""
        changed = False
        ticket = self.admission.admit(entry.lock, entry.world_id)

        def locked() -> T:
            nonlocal changed
            ticket.start()
            if entry.deleted:
                raise NotFoundError(f"world {entry.world_id!r} was deleted")
            before = entry.world.version
            try:
                return work(entry.world)
            finally:
                changed = entry.world.version != before

        try:
            return await run_locked(entry.lock, self.executor, locked, self.admission.gate if ticket.gated else None)
        finally:
            self.admission.done(ticket)
            if changed:
                if entry.unsaved_changes == 0:
                    entry.unsaved_since_s = time.monotonic()
                entry.unsaved_changes += 1
                entry.notify_changed()
                if 0 < self.autosave.every_changes <= entry.unsaved_changes:
                    self._start_autosave(entry)

    async def wait_for_change(self, entry: WorldEntry, version: int) -> int:
        """Wait until the world's version differs from ``version``; return the new version. NOT_FOUND when the
        world is unloaded meanwhile."""
        while True:
            event = entry.changed
            if entry.deleted:
                raise NotFoundError(f"world {entry.world_id!r} was deleted")
            current = int(entry.world.version)
            if current != version:
                return current
            await event.wait()

    # ------------------------------------------------------------------------------------------- autosave

    def _start_autosave(self, entry: WorldEntry) -> None:
        """Save ``entry`` in the background unless a save of it is already under way."""
        if entry.key in self._autosaving or entry.deleted:
            return
        task = asyncio.get_running_loop().create_task(self._autosave(entry))
        self._autosaving[entry.key] = task
        task.add_done_callback(lambda _: self._autosaving.pop(entry.key, None))

    async def _autosave(self, entry: WorldEntry) -> None:
        as_server_work()  # never refused by admission control, though a client's call may have started it
        try:
            await self.save(entry)
        except NotFoundError:  # unloaded while the save waited for its lock
            pass
        except (StorageError, OSError) as error:
            logger.error("autosave of world %r failed: %s", entry.world_id, error)

    async def autosave_loop(self) -> None:
        """Save the worlds whose oldest unsaved change is ``autosave.every_s`` old; runs until cancelled."""
        if self.autosave.every_s <= 0:
            return
        tick_s = min(1.0, self.autosave.every_s / 4)
        while True:
            await asyncio.sleep(tick_s)
            now = time.monotonic()
            for entry in list(self._loaded.values()):
                if entry.unsaved_changes and now - entry.unsaved_since_s >= self.autosave.every_s:
                    self._start_autosave(entry)

    async def save_unsaved(self) -> list[str]:
        """With autosave on, save every loaded world with unsaved changes (at shutdown); return their ids."""
        if not self.autosave.enabled:
            return []
        await asyncio.gather(*self._autosaving.values(), return_exceptions=True)
        dirty = [entry for entry in self._loaded.values() if entry.unsaved_changes]
        await asyncio.gather(*(self._autosave(entry) for entry in dirty))
        return [entry.world_id for entry in dirty]

    # ------------------------------------------------------------------------------------------- lifecycle

    def new_id(self) -> str:
        """A fresh world id (12 hex digits) not used by any loaded or saved world of the calling tenant."""
        while True:
            key = self._key(uuid.uuid4().hex[:12])
            if key not in self._loaded and key not in self._saved and key not in self._busy:
                return key[1]

    def _reserve(self, key: WorldKey) -> None:
        if key in self._loaded or key in self._busy:
            raise AlreadyExistsError(f"world {key[1]!r} already exists; pick another id or DeleteWorld it first")

    async def create(
        self, world_id: str, frames: list[RGBDFrame], prompt: str, memory: MemoryConfig, *,
        log: Callable[[str, str, World], WorldRecorder] = not_recorded,
    ) -> WorldSummary:
        """Build a world from seed frames (one at a time per id); ALREADY_EXISTS if the id is loaded or saved.
        ``log``: how it is recorded (``Recording.opener``), started before the world can be reached."""
        key = self._key(world_id)
        self._reserve(key)
        if key in self._saved:
            raise AlreadyExistsError(
                f"world {world_id!r} is saved in the data folder; LoadWorld it or DeleteWorld it with delete_saved"
            )
        self._busy.add(key)
        try:
            config = WorldConfig(memory=memory, generator=self.generator.name)
            world = await self.offload(
                lambda: World(Seed(frames=frames, prompt=prompt), config, generator=self.generator,
                              depth_estimator=self.depth_estimator, device=self.device, query_reach=QUERY_REACH),
            )
            recorder = await self.offload(lambda: log(world_id, key[0], world))
            entry = WorldEntry(world_id, world, key[0], unsaved_changes=1, unsaved_since_s=time.monotonic(),
                               recorder=recorder)
            self._loaded[key] = entry
            return self.summary(entry)
        finally:
            self._busy.discard(key)

    async def fork(self, entry: WorldEntry, checkpoint_id: str, new_world_id: str) -> WorldSummary:
        """A new world of the calling tenant, ``new_world_id`` (empty: a fresh id), copied from ``entry``'s world now or
        from its checkpoint ``checkpoint_id`` (``World.fork``); ALREADY_EXISTS if the id is loaded or saved."""
        key = self._key(new_world_id or self.new_id())
        self._reserve(key)
        if key in self._saved:
            raise AlreadyExistsError(f"world {key[1]!r} is saved in the data folder; pick another id for the fork")
        self._busy.add(key)
        try:
            world = await self.run(entry, lambda parent: parent.fork(checkpoint_id or None))
            forked = WorldEntry(key[1], world, key[0], unsaved_changes=1, unsaved_since_s=time.monotonic())
            self._loaded[key] = forked
            return self.summary(forked)
        finally:
            self._busy.discard(key)

    async def save(self, entry: WorldEntry) -> WorldSummary:
        """Save a loaded world atomically to its tenant's folder (``DATA/<id>/`` for the default tenant), with its
        step sessions and, when it is recorded, the position of its log the save covers (all under its lock)."""
        folder = self._folder(entry.key)
        loop = asyncio.get_running_loop()

        def write(world: World) -> WorldSummary:
            summary = self.summary(entry)
            sessions = on_loop(loop, entry.sessions.to_bytes)
            manifest = summary.to_manifest()
            position = entry.recorder.position()
            if position is not None:
                manifest["log"] = position
            with atomic_folder(folder) as tmp:
                world.save(tmp / WORLD_FOLDER)
                (tmp / SESSIONS_FILE).write_bytes(sessions)
                write_manifest(tmp, manifest)
            return summary

        summary = await self.run(entry, write)
        entry.saved = True
        entry.unsaved_changes = 0
        self._saved[entry.key] = replace(summary, loaded=False, saved=True)
        return self.summary(entry)

    async def load(self, world_id: str) -> WorldSummary:
        """Load a saved world; FAILED_PRECONDITION when loaded, NOT_FOUND when no save has that id."""
        key = self._key(world_id)
        folder = self._folder(key)
        if key in self._loaded:
            raise PreconditionError(f"world {world_id!r} is already loaded; DeleteWorld it first to reload its save")
        self._reserve(key)
        if key not in self._saved and not (folder.exists() or folder.with_name(folder.name + ".previous").exists()):
            raise NotFoundError(f"no saved world {world_id!r} in {self.data_dir}")
        self._busy.add(key)
        try:
            def read() -> tuple[WorldSummary, World, StepSessions]:
                summary = self._read_summary(key)
                saved = resolve_folder(folder)
                world = World.load(saved / WORLD_FOLDER, generator=self.generator,
                                   depth_estimator=self.depth_estimator, device=self.device, query_reach=QUERY_REACH)
                sessions_file = saved / SESSIONS_FILE
                sessions = (StepSessions.from_bytes(sessions_file.read_bytes(), pb.StepResponse.FromString,
                                                    str(sessions_file))
                            if sessions_file.exists() else StepSessions())  # a save made before sessions were saved
                return summary, world, sessions

            summary, world, sessions = await self.offload(read)
            self._saved[key] = summary
            entry = WorldEntry(world_id, world, key[0], saved=True, sessions=sessions)
            self._loaded[key] = entry
            return self.summary(entry)
        finally:
            self._busy.discard(key)

    async def delete(self, world_id: str, *, delete_saved: bool) -> tuple[bool, bool]:
        """Unload a world (after work in progress on it) and optionally delete its save; (unloaded, deleted_saved)."""
        key = self._key(world_id)
        entry = self._loaded.get(key)
        has_save = key in self._saved
        if entry is None and not (delete_saved and has_save):
            if has_save:
                raise PreconditionError(f"world {world_id!r} is not loaded; set delete_saved to delete its save")
            raise NotFoundError(f"no world {world_id!r}; ListWorlds shows the worlds this server has")
        if entry is not None:
            async with entry.lock:
                entry.deleted = True
                entry.recorder.close()
                self._loaded.pop(key, None)
                entry.notify_changed()
        deleted_saved = False
        if delete_saved and has_save:
            folder = self._folder(key)
            self._saved.pop(key, None)

            def remove() -> None:
                for path in (folder, folder.with_name(folder.name + ".previous")):
                    shutil.rmtree(path, ignore_errors=True)

            await self.offload(remove)
            deleted_saved = True
        if delete_saved and self.recording.retire_on_delete:
            await self.offload(lambda: self.recording.retire(key[1], key[0]))
        return entry is not None, deleted_saved
