"""The worlds a server holds: by id, each with its lock, saved to and loaded from the data folder.

A world id is 1..64 characters from ``[A-Za-z0-9_-]`` (it names a folder). With a data folder, world ``w`` saves
to ``DATA/w/`` atomically (``bridge.storage.atomic_folder``): ``DATA/w/world/`` is what ``World.save`` writes and
``DATA/w/manifest.json`` the server's record of it (id, version, intrinsics, prompt, configuration, counts), so the
worlds of a data folder are listed again after a restart without loading them.

Every method runs on the server's event loop (the dict of worlds needs no lock); engine work goes to the thread
pool under the world's lock (``scheduling.run_locked``). Work that changes a world's version wakes the point-cloud
streams following it (``wait_for_change``) and counts towards autosave (``AutosavePolicy``): with a data folder, a
world is saved after every N changes (steps or edits) and/or once a change has stayed unsaved for S seconds, and the
worlds with unsaved changes are saved when the server stops.
"""

from __future__ import annotations

import asyncio
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
from worldweave.server.scheduling import run_locked
from worldweave.server.world_state import QUERY_REACH

T = TypeVar("T")
logger = logging.getLogger(__name__)

WORLD_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
MANIFEST_KIND = "worldweave.server.world"
FORMAT_VERSION = 1
WORLD_FOLDER = "world"
"""Subfolder of a saved world's folder that ``World.save`` writes."""


def check_world_id(world_id: str) -> str:
    """Return ``world_id`` or raise ``InvalidInputError`` naming it (ids name folders: no path characters)."""
    if not WORLD_ID_PATTERN.fullmatch(world_id):
        raise InvalidInputError(f"world_id {world_id!r} must be 1..64 characters from A-Z, a-z, 0-9, '_' and '-'")
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
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    saved: bool = False
    deleted: bool = False
    """Set when the world was unloaded while work waited for its lock; that work answers NOT_FOUND."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set (and replaced by a fresh event) whenever locked work changed the world's version or it was unloaded."""
    unsaved_changes: int = 0
    """Pieces of locked work (steps, edits) that changed the world since its last save."""
    unsaved_since_s: float = 0.0
    """``time.monotonic()`` of the first unsaved change."""

    def notify_changed(self) -> None:
        """Wake everything waiting in ``WorldRegistry.wait_for_change``."""
        self.changed.set()
        self.changed = asyncio.Event()


class WorldRegistry:
    """Worlds by id; ``generator`` is the server's shared (fair-queued) generator and ``depth_estimator`` its
    shared depth estimator (None: the generator's own depth is used), both given to every world created or loaded,
    as are the server's query reaches (``world_state.QUERY_REACH``); ``data_dir`` may be None."""

    def __init__(
        self,
        generator: Generator,
        executor: Executor,
        *,
        data_dir: Path | None = None,
        device: str = "cpu",
        autosave: AutosavePolicy = AutosavePolicy(),
        depth_estimator: DepthEstimator | None = None,
    ) -> None:
        if autosave.enabled and data_dir is None:
            raise PreconditionError("autosave needs a data folder: start the server with --data-dir DIR")
        self.generator = generator
        self.depth_estimator = depth_estimator
        self.executor = executor
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.device = device
        self.autosave = autosave
        self._autosaving: dict[str, asyncio.Task] = {}
        self._loaded: dict[str, WorldEntry] = {}
        self._saved: dict[str, WorldSummary] = {}
        self._busy: set[str] = set()
        """Ids being created or loaded: reserved so two requests cannot make the same world."""

    # ------------------------------------------------------------------------------------------- discovery

    def scan(self) -> list[str]:
        """Read the manifests of every world saved in the data folder; return the ids of unreadable saves."""
        broken = []
        if self.data_dir is None or not self.data_dir.is_dir():
            return broken
        for folder in sorted(self.data_dir.iterdir()):
            name = folder.name.removesuffix(".previous")
            if not WORLD_ID_PATTERN.fullmatch(name) or name in self._saved:
                continue
            try:
                self._saved[name] = self._read_summary(name)
            except StorageError:
                broken.append(name)
        return broken

    def _folder(self, world_id: str) -> Path:
        if self.data_dir is None:
            raise PreconditionError("this server has no data folder: start it with `worldweave serve --data-dir DIR`")
        return self.data_dir / world_id

    def _read_summary(self, world_id: str) -> WorldSummary:
        folder = resolve_folder(self._folder(world_id))
        return WorldSummary.from_manifest(read_manifest(folder, MANIFEST_KIND, (FORMAT_VERSION,)), loaded=False)

    # ------------------------------------------------------------------------------------------- lookup

    def entry(self, world_id: str) -> WorldEntry:
        """The loaded world ``world_id``; NOT_FOUND, or FAILED_PRECONDITION when it is saved but not loaded."""
        check_world_id(world_id)
        entry = self._loaded.get(world_id)
        if entry is not None:
            return entry
        if world_id in self._saved:
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
        """Every world, loaded or saved, sorted by id."""
        out = {world_id: self.summary(entry) for world_id, entry in self._loaded.items()}
        for world_id, saved in self._saved.items():
            out.setdefault(world_id, saved)
        return [out[world_id] for world_id in sorted(out)]

    async def offload(self, work: Callable[[], T]) -> T:
        """Run ``work()`` on the pool without any lock (decoding, validation)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, work)

    async def run(self, entry: WorldEntry, work: Callable[[World], T]) -> T:
        """Run ``work(world)`` on the pool under the world's lock; NOT_FOUND if the world was deleted meanwhile.
        When the work changed the world's version, followers are woken and autosave counts it."""
        changed = False

        def locked() -> T:
            nonlocal changed
            if entry.deleted:
                raise NotFoundError(f"world {entry.world_id!r} was deleted")
            before = entry.world.version
            try:
                return work(entry.world)
            finally:
                changed = entry.world.version != before

        try:
            return await run_locked(entry.lock, self.executor, locked)
        finally:
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
        if entry.world_id in self._autosaving or entry.deleted:
            return
        task = asyncio.get_running_loop().create_task(self._autosave(entry))
        self._autosaving[entry.world_id] = task
        task.add_done_callback(lambda _: self._autosaving.pop(entry.world_id, None))

    async def _autosave(self, entry: WorldEntry) -> None:
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
        """A fresh world id (12 hex digits) not used by any loaded or saved world."""
        while True:
            world_id = uuid.uuid4().hex[:12]
            if world_id not in self._loaded and world_id not in self._saved and world_id not in self._busy:
                return world_id

    def _reserve(self, world_id: str) -> None:
        if world_id in self._loaded or world_id in self._busy:
            raise AlreadyExistsError(f"world {world_id!r} already exists; pick another id or DeleteWorld it first")

    async def create(
        self, world_id: str, frames: list[RGBDFrame], prompt: str, memory: MemoryConfig
    ) -> WorldSummary:
        """Build a world from seed frames (one at a time per id); ALREADY_EXISTS if the id is loaded or saved."""
        check_world_id(world_id)
        self._reserve(world_id)
        if world_id in self._saved:
            raise AlreadyExistsError(
                f"world {world_id!r} is saved in the data folder; LoadWorld it or DeleteWorld it with delete_saved"
            )
        self._busy.add(world_id)
        try:
            config = WorldConfig(memory=memory, generator=self.generator.name)
            world = await self.offload(
                lambda: World(Seed(frames=frames, prompt=prompt), config, generator=self.generator,
                              depth_estimator=self.depth_estimator, device=self.device, query_reach=QUERY_REACH),
            )
            entry = WorldEntry(world_id, world, unsaved_changes=1, unsaved_since_s=time.monotonic())
            self._loaded[world_id] = entry
            return self.summary(entry)
        finally:
            self._busy.discard(world_id)

    async def save(self, entry: WorldEntry) -> WorldSummary:
        """Save a loaded world atomically to ``DATA/<id>/``."""
        folder = self._folder(entry.world_id)

        def write(world: World) -> WorldSummary:
            summary = self.summary(entry)
            with atomic_folder(folder) as tmp:
                world.save(tmp / WORLD_FOLDER)
                write_manifest(tmp, summary.to_manifest())
            return summary

        summary = await self.run(entry, write)
        entry.saved = True
        entry.unsaved_changes = 0
        self._saved[entry.world_id] = replace(summary, loaded=False, saved=True)
        return self.summary(entry)

    async def load(self, world_id: str) -> WorldSummary:
        """Load a saved world; FAILED_PRECONDITION when loaded, NOT_FOUND when no save has that id."""
        check_world_id(world_id)
        folder = self._folder(world_id)
        if world_id in self._loaded:
            raise PreconditionError(f"world {world_id!r} is already loaded; DeleteWorld it first to reload its save")
        self._reserve(world_id)
        if world_id not in self._saved and not (folder.exists() or folder.with_name(folder.name + ".previous").exists()):
            raise NotFoundError(f"no saved world {world_id!r} in {self.data_dir}")
        self._busy.add(world_id)
        try:
            def read() -> tuple[WorldSummary, World]:
                summary = self._read_summary(world_id)
                world = World.load(resolve_folder(folder) / WORLD_FOLDER, generator=self.generator,
                                   depth_estimator=self.depth_estimator, device=self.device, query_reach=QUERY_REACH)
                return summary, world

            summary, world = await self.offload(read)
            self._saved[world_id] = summary
            entry = WorldEntry(world_id, world, saved=True)
            self._loaded[world_id] = entry
            return self.summary(entry)
        finally:
            self._busy.discard(world_id)

    async def delete(self, world_id: str, *, delete_saved: bool) -> tuple[bool, bool]:
        """Unload a world (after work in progress on it) and optionally delete its save; (unloaded, deleted_saved)."""
        check_world_id(world_id)
        entry = self._loaded.get(world_id)
        has_save = world_id in self._saved
        if entry is None and not (delete_saved and has_save):
            if has_save:
                raise PreconditionError(f"world {world_id!r} is not loaded; set delete_saved to delete its save")
            raise NotFoundError(f"no world {world_id!r}; ListWorlds shows the worlds this server has")
        if entry is not None:
            async with entry.lock:
                entry.deleted = True
                self._loaded.pop(world_id, None)
                entry.notify_changed()
        deleted_saved = False
        if delete_saved and has_save:
            folder = self._folder(world_id)
            self._saved.pop(world_id, None)

            def remove() -> None:
                for path in (folder, folder.with_name(folder.name + ".previous")):
                    shutil.rmtree(path, ignore_errors=True)

            await self.offload(remove)
            deleted_saved = True
        return entry is not None, deleted_saved
