"""Snapshots of a world's state that are cheap to take, fork and restore: copy-on-write by the kernel.

A snapshot (``WorldSnapshot``) is what ``World.snapshot`` freezes: memory (voxel map with its key index, anchors,
the retrieval generator's state), configuration, prompt, leading frames and frame counter. The generator and depth
estimator are not part of it (a server shares them between worlds; they keep no state between steps) and neither
are the spatial queries (rebuilt lazily from memory).

How the copy is avoided. The arrays that change in place (the voxel map's columns and its hash table) are written
once into one anonymous in-memory file (``memfd_create``), and from then on every owner of that state, the world it
was taken from included, maps them from that file *privately* (``MAP_PRIVATE``): reading shares the file's pages,
and the first write to a 4 KiB page copies that page only, for that owner only (the kernel's copy-on-write). So a
fork or a restore maps a few files (microseconds to milliseconds), a step afterwards copies just the pages it
writes, and two worlds never see each other's writes. The one copy is made when a world is frozen for the first
time after it changed; freezing it again at the same voxel-map version reuses that file. The zero tail of an array
(a voxel map's unused capacity) is not written: the file keeps a hole there, which costs no memory.

Anchors are shared structurally: a fork's ``AnchorStore`` holds the same ``Anchor`` objects, and the store copies an
anchor before it edits it (``AnchorStore.fork``), so neither side sees the other's edits. Small mutable records
(configs, the random generator) are deep-copied.

Where ``os.memfd_create`` or ``mmap`` are missing (not Linux), or for tensors off the CPU, arrays are copied
instead (correct, not cheap). What a snapshot holds is listed by type in ``_freeze_value``: an attribute of a type
it does not know is a ``TypeError``, so a new field of the voxel map or the world is never silently shared.
"""

from __future__ import annotations

import copy
import dataclasses
import mmap
import os
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from worldweave.bridge.memory.anchors import AnchorStore
from worldweave.bridge.memory.change_log import ChangeLog
from worldweave.bridge.memory.spatial_memory import SpatialMemory
from worldweave.bridge.memory.voxel_index import HashIndex, SortedKeyIndex
from worldweave.bridge.memory.voxel_map import VoxelMap
from worldweave.proto.errors import NotFoundError
from worldweave.proto.geometry import Intrinsics

if TYPE_CHECKING:
    from worldweave.bridge.world import World

_PAGE = mmap.ALLOCATIONGRANULARITY
_WRITE_CHUNK = 1 << 22
"""Granularity of the zero tail of an array left unwritten (a hole) in a snapshot file, bytes (4 MiB)."""
_SHARED_TYPES = (int, float, str, bool, type(None), np.generic, torch.device, Intrinsics)
"""Immutable values a snapshot keeps as they are."""
_WALKED_TYPES = (VoxelMap, HashIndex, SortedKeyIndex)
"""Objects whose attributes are frozen one by one (their arrays change in place)."""
CHECKPOINT_ID_CHARS = 12
"""Length of a checkpoint id: lowercase hex digits."""


class _File:
    """An anonymous in-memory file holding frozen arrays. Its descriptor is closed when no snapshot refers to it any
    more; the kernel keeps its pages while some array still maps them."""

    def __init__(self, size: int) -> None:
        self.fd = os.memfd_create("worldweave-snapshot", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, max(size, 1))
        self._finalizer = weakref.finalize(self, os.close, self.fd)
        with _cache_lock:
            _live_files.add(self)

    def allocated_bytes(self) -> int:
        """Bytes of memory the file holds (its holes cost none)."""
        return os.fstat(self.fd).st_blocks * 512


_live_files: weakref.WeakSet[_File] = weakref.WeakSet()
_cache_lock = threading.Lock()
"""Guards ``_live_files`` and ``_frozen_maps``: worlds are frozen on several pool threads at once."""


def snapshot_file_bytes() -> int:
    """Memory all live snapshot files hold, bytes: with the process's anonymous memory, what its worlds and snapshots
    take (RSS counts a file page once per mapping, and not at all where nothing maps it)."""
    with _cache_lock:
        files = list(_live_files)
    return sum(f.allocated_bytes() for f in files)


@dataclass(frozen=True)
class _FrozenArray:
    """One array in a snapshot file: ``file`` (None: kept as a private copy in ``copy``), byte ``offset``, layout."""

    file: _File | None
    offset: int
    dtype: np.dtype
    shape: tuple[int, ...]
    copy: np.ndarray | None
    tensor_device: torch.device | None
    """The torch device the array came from, or None for a numpy array."""

    def view(self) -> np.ndarray | torch.Tensor:
        """A fresh private (copy-on-write) array with the frozen content, as numpy or as a tensor like the original."""
        if self.file is None:
            array = self.copy.copy()
        else:
            size = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
            if size == 0:
                array = np.empty(self.shape, self.dtype)
            else:
                buffer = mmap.mmap(self.file.fd, size, flags=mmap.MAP_PRIVATE,
                                   prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=self.offset)
                array = np.frombuffer(buffer, self.dtype, count=int(np.prod(self.shape))).reshape(self.shape)
        if self.tensor_device is None:
            return array
        return torch.from_numpy(array).to(self.tensor_device)


def _nonzero_end(data: np.ndarray) -> int:
    """Bytes of ``data`` (uint8) up to the end of its last ``_WRITE_CHUNK`` piece that is not all zero: what needs
    writing (a voxel map's unused capacity is zeros, left as holes in the file). Reads only the zero tail."""
    end = len(data)
    while end > 0:
        start = max(0, end - _WRITE_CHUNK)
        piece = data[start:end]
        words = piece[: len(piece) // 8 * 8].view(np.uint64)
        if words.any() or piece[len(words) * 8 :].any():
            return end
        end = start
    return 0


def _memfd_available() -> bool:
    return hasattr(os, "memfd_create") and hasattr(mmap, "MAP_PRIVATE")


class _Freezer:
    """Collects the arrays of one freeze and writes them into one file."""

    def __init__(self) -> None:
        self._pending: list[tuple[np.ndarray, int]] = []
        self._size = 0
        self.file: _File | None = None
        self._use_file = _memfd_available()

    def add(self, value: np.ndarray | torch.Tensor) -> _FrozenArray:
        device = value.device if isinstance(value, torch.Tensor) else None
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        array = np.ascontiguousarray(array)
        if not self._use_file or (device is not None and device.type != "cpu"):
            return _FrozenArray(None, 0, array.dtype, array.shape, array.copy(), device)
        offset = self._size
        self._size += -(-array.nbytes // _PAGE) * _PAGE
        self._pending.append((array, offset))
        return _FrozenArray(None, offset, array.dtype, array.shape, None, device)

    def write(self, frozen: list[_FrozenArray]) -> list[_FrozenArray]:
        """Write the pending arrays into a new file; return ``frozen`` with the file filled in."""
        if not self._pending:
            return frozen
        self.file = _File(self._size)
        for array, offset in self._pending:
            data = array.reshape(-1).view(np.uint8)
            end = _nonzero_end(data)
            if end:
                os.pwrite(self.file.fd, memoryview(data[:end]), offset)
        self._pending = []  # the sources go as soon as their owner lets them go (``_adopt``)
        return [dataclasses.replace(f, file=self.file) if f.copy is None else f for f in frozen]


@dataclass(frozen=True)
class _FrozenObject:
    """An object of a ``_WALKED_TYPES`` class, attribute by attribute."""

    cls: type
    attributes: dict[str, Any]


@dataclass(frozen=True)
class _FreshLog:
    """A change log: a thaw gets a new, empty one at its map's version (``changes_since`` older answers a snapshot)."""

    retention_versions: int
    max_keys: int


_frozen_maps: weakref.WeakKeyDictionary[VoxelMap, tuple[int, _FrozenObject]] = weakref.WeakKeyDictionary()
"""The last freeze of each live voxel map, with the version it froze: reused while the version is unchanged."""


@dataclass(frozen=True)
class _Slot:
    """Where an array goes in a recipe until the file is written: its index among the freeze's arrays."""

    index: int


def _resolve(value: Any, arrays: list[_FrozenArray]) -> Any:
    """Swap the ``_Slot`` placeholders of a recipe for the written ``_FrozenArray``s."""
    if isinstance(value, _FrozenObject):
        return _FrozenObject(value.cls, {k: _resolve(v, arrays) for k, v in value.attributes.items()})
    if isinstance(value, _Slot):
        return arrays[value.index]
    return value


def _walk(name: str, value: Any, freezer: _Freezer, pending: list[_FrozenArray]) -> Any:
    """The recipe of ``value``: arrays queued in ``freezer`` (a ``_Slot`` for each), walked objects attribute by
    attribute, immutable values as they are; ``TypeError`` naming an attribute of any other type."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        pending.append(freezer.add(value))
        return _Slot(len(pending) - 1)
    if isinstance(value, _WALKED_TYPES):
        return _FrozenObject(type(value), {k: _walk(f"{name}.{k}", v, freezer, pending) for k, v in vars(value).items()})
    if isinstance(value, _SHARED_TYPES):
        return value
    if isinstance(value, ChangeLog):
        return _FreshLog(value.retention_versions, value.max_keys)
    raise TypeError(f"a snapshot does not know how to freeze {name} ({type(value).__name__}); add it to bridge/checkpoints.py")


def freeze_voxel_map(voxel_map: VoxelMap) -> _FrozenObject:
    """The voxel map's state in a snapshot file (one copy), or the previous freeze when its version is unchanged.
    The live map then maps its arrays from the file too, so the copy does not double its memory."""
    with _cache_lock:
        cached = _frozen_maps.get(voxel_map)
    if cached is not None and cached[0] == voxel_map.version:
        return cached[1]
    freezer = _Freezer()
    pending: list[_FrozenArray] = []
    recipe = _walk("voxel_map", voxel_map, freezer, pending)
    written = freezer.write(pending)
    frozen = _resolve(recipe, written)
    _adopt(voxel_map, frozen)
    with _cache_lock:
        _frozen_maps[voxel_map] = (voxel_map.version, frozen)
    return frozen


def _adopt(target: Any, frozen: _FrozenObject) -> None:
    """Point ``target``'s arrays at private views of the snapshot file (same content), freeing its own copies."""
    for name, value in frozen.attributes.items():
        if isinstance(value, _FrozenArray) and value.file is not None:
            setattr(target, name, value.view())
        elif isinstance(value, _FrozenObject):
            _adopt(getattr(target, name), value)


def thaw_voxel_map(frozen: _FrozenObject, *, version: int | None = None) -> VoxelMap:
    """A new voxel map with the frozen content, sharing the file's pages until it writes them. ``version``: the new
    map's version (default the frozen one); its change log starts empty there, so ``changes_since`` an older
    version answers a snapshot."""
    if version is not None:
        frozen = _FrozenObject(frozen.cls, {**frozen.attributes, "version": int(version)})
    voxel_map = _thaw(frozen)
    voxel_map._log.clear(voxel_map.version)
    with _cache_lock:
        _frozen_maps[voxel_map] = (voxel_map.version, frozen)  # frozen again before it changes: no copy
    return voxel_map


def _thaw(value: Any) -> Any:
    if isinstance(value, _FrozenArray):
        return value.view()
    if isinstance(value, _FreshLog):
        return ChangeLog(value.retention_versions, value.max_keys)
    if isinstance(value, _FrozenObject):
        obj = value.cls.__new__(value.cls)
        for name, attribute in value.attributes.items():
            setattr(obj, name, _thaw(attribute))
        return obj
    return value


@dataclass(frozen=True)
class MemorySnapshot:
    """A ``SpatialMemory`` frozen: its config, device, frozen voxel map, anchors and random generator state."""

    config: Any
    device: torch.device
    voxel_map: _FrozenObject
    anchors: AnchorStore
    rng: np.random.Generator


def freeze_memory(memory: SpatialMemory) -> MemorySnapshot:
    """``memory`` frozen: the voxel map into a snapshot file (``freeze_voxel_map``), the anchors shared."""
    known = {"config", "device", "voxel_map", "anchors", "_rng"}
    unknown = set(vars(memory)) - known
    if unknown:
        raise TypeError(f"a snapshot does not know SpatialMemory fields {sorted(unknown)}; add them to bridge/checkpoints.py")
    return MemorySnapshot(copy.deepcopy(memory.config), memory.device, freeze_voxel_map(memory.voxel_map),
                          memory.anchors.fork(), copy.deepcopy(memory._rng))


def thaw_memory(snapshot: MemorySnapshot, *, version: int | None = None) -> SpatialMemory:
    """A new memory with ``snapshot``'s content (``version``: as in ``thaw_voxel_map``)."""
    memory = SpatialMemory.__new__(SpatialMemory)
    memory.config = copy.deepcopy(snapshot.config)
    memory.device = snapshot.device
    memory.voxel_map = thaw_voxel_map(snapshot.voxel_map, version=version)
    memory.anchors = snapshot.anchors.fork()
    memory._rng = copy.deepcopy(snapshot.rng)
    return memory


@dataclass(frozen=True)
class WorldSnapshot:
    """A world's state at one moment (``World.snapshot``). ``version`` and ``frame_count``: the world's memory
    version and frame counter then. ``created_unix_s``: when it was taken, seconds since the Unix epoch."""

    memory: MemorySnapshot
    config: Any
    intrinsics: Intrinsics
    prompt: str
    leading: tuple[np.ndarray, ...]
    frame_count: int
    version: int
    created_unix_s: float


@dataclass(frozen=True)
class CheckpointInfo:
    """What ``CheckpointStore.list`` reports of a checkpoint: its id, the world's version and frame count then, and
    when it was taken (seconds since the Unix epoch)."""

    checkpoint_id: str
    version: int
    frame_count: int
    created_unix_s: float


class CheckpointStore:
    """A world's checkpoints by id (``CHECKPOINT_ID_CHARS`` hex digits), oldest first."""

    def __init__(self) -> None:
        self._snapshots: dict[str, WorldSnapshot] = {}

    def __len__(self) -> int:
        return len(self._snapshots)

    def add(self, snapshot: WorldSnapshot, checkpoint_id: str | None = None) -> CheckpointInfo:
        """Keep ``snapshot`` under ``checkpoint_id`` (default: a new random id); returns its info."""
        checkpoint_id = checkpoint_id or uuid.uuid4().hex[:CHECKPOINT_ID_CHARS]
        self._snapshots[checkpoint_id] = snapshot
        return self.info(checkpoint_id)

    def fork(self) -> CheckpointStore:
        """A store with the same checkpoints (snapshots are never changed, so they are shared); adding to either
        does not show in the other."""
        store = CheckpointStore()
        store._snapshots = dict(self._snapshots)
        return store

    def get(self, checkpoint_id: str) -> WorldSnapshot:
        """The snapshot of ``checkpoint_id``; ``NotFoundError`` naming the known ids when there is none."""
        try:
            return self._snapshots[checkpoint_id]
        except KeyError:
            known = list(self._snapshots)[:10]
            raise NotFoundError(
                f"no checkpoint {checkpoint_id[:64]!r} of this world; its checkpoints are {known} (ListCheckpoints)"
            ) from None

    def info(self, checkpoint_id: str) -> CheckpointInfo:
        snapshot = self.get(checkpoint_id)
        return CheckpointInfo(checkpoint_id, snapshot.version, snapshot.frame_count, snapshot.created_unix_s)

    def list(self) -> list[CheckpointInfo]:
        return [self.info(checkpoint_id) for checkpoint_id in self._snapshots]

    def items(self) -> list[tuple[str, WorldSnapshot]]:
        return list(self._snapshots.items())


_WORLD_FIELDS = {"config", "memory", "query_reach", "_queries", "intrinsics", "prompt", "generator", "depth_estimator",
                 "_leading", "_next_frame_id", "checkpoints"}
"""``World`` attributes a snapshot knows: what it freezes, what the world's host keeps (generator, depth estimator,
query reach, checkpoints) and what is rebuilt (queries)."""


def freeze_world(world: World) -> WorldSnapshot:
    """The world's state now (see the module docstring for what that holds and what it costs)."""
    unknown = set(vars(world)) - _WORLD_FIELDS
    if unknown:
        raise TypeError(f"a snapshot does not know World fields {sorted(unknown)}; add them to bridge/checkpoints.py")
    return WorldSnapshot(
        memory=freeze_memory(world.memory), config=copy.deepcopy(world.config), intrinsics=world.intrinsics,
        prompt=world.prompt, leading=tuple(world._leading), frame_count=int(world.frame_count),
        version=int(world.version), created_unix_s=time.time(),
    )


def thaw_world_into(world: World, snapshot: WorldSnapshot, *, version: int | None = None) -> None:
    """Set ``world``'s state to ``snapshot``'s (its generator, depth estimator, query reach and checkpoints stay);
    ``version``: the memory version it continues from (default the snapshot's)."""
    world.config = copy.deepcopy(snapshot.config)
    world.memory = thaw_memory(snapshot.memory, version=version)
    world._queries = None
    world.intrinsics = snapshot.intrinsics
    world.prompt = snapshot.prompt
    world._leading = list(snapshot.leading)
    world._next_frame_id = snapshot.frame_count
