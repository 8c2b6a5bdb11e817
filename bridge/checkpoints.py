"""Snapshots of a world's state that are cheap to take, fork and restore: copy-on-write by the kernel.

A snapshot (``WorldSnapshot``) is what ``World.snapshot`` freezes: memory (voxel map with its key index, anchors,
the retrieval generator's state), configuration, prompt, leading frames and frame counter. The generator and depth
estimator are not part of it (a server shares them between worlds; they keep no state between steps) and neither
are the spatial queries (rebuilt lazily from memory).

How the copy is avoided. The arrays that change in place (the voxel map's columns and its key index's hash table)
are written into anonymous in-memory files (``memfd_create``), and from then on every owner of that state, the world
it was taken from included, maps them from those files *privately* (``MAP_PRIVATE``): reading shares the files'
pages, and the first write to a 4 KiB page copies that page only, for that owner only (the kernel's copy-on-write).
So a fork or a restore maps a few files (milliseconds), a step afterwards copies just the pages it writes, and two
worlds never see each other's writes.

What a freeze after a change writes: only the pages written since the last freeze, where that is known. A page that
was copied on write is a page written since its owner mapped it, and the kernel says which those are
(``/proc/self/pagemap``: present and no longer a file page, or swapped out; its flag bits need no privilege). A
freeze copies those pages of each array into a new file and lays them over the previous freeze's content, one of two
ways (``_freeze_array``):

* few runs of pages (runs ``_MERGE_GAP_PAGES`` apart joined): as *pieces* (``_FrozenArray.pieces``), which a view
  maps each at its place in one address range; at most ``MAX_PIECES`` per array, which bounds the mappings per view
  (the kernel allows about 65,000 per process). After the freeze the world maps the new pieces too, so its copied
  pages are freed and the next freeze sees only later writes. A voxel map's columns go this way: a step changes them
  in a few runs of rows (rows are appended in the order voxels are first seen, and the voxels one view sees were
  mostly first seen together), about 1 MB at 2M voxels.
* many runs, up to ``_MAX_SCATTERED_FRACTION`` of the pages: as *scattered* runs (``_FrozenArray.scattered``), which
  a view copies in (its own memory) instead of mapping each. The world keeps its view, whose written pages are exactly
  those, so each freeze copies every page written since the pieces were last laid (they grow step by step). A voxel
  map's hash table goes this way: it puts each new key at a random slot, so a step that adds a few hundred voxels
  writes pages all over it (about 600 runs at 2M voxels).

An array is written whole, into a file of its own, when neither fits (at least half of its pages changed; more
scattered pages than the fraction; files holding more than twice its size) or it is unknown what changed (it is not
the view of the last freeze any more: it grew or was rebuilt; the page map is unreadable). At 2M voxels that is the
hash table every fourth step or so: such a fork takes a few times longer (64 MB to copy). Freezing again at the same
voxel-map version reuses the last freeze. The zero tail of an array (unused capacity) is never written: views keep it
as anonymous zero pages, which cost no memory until written (reading one maps the kernel's zero page, which the page
map cannot tell from a write, so such pages are checked for zeros).

Every array attribute of the voxel map and its key index is frozen this way: a new column needs nothing here.

Anchors are shared structurally: a fork's ``AnchorStore`` holds the same ``Anchor`` objects, and the store copies an
anchor before it edits it (``AnchorStore.fork``), so neither side sees the other's edits. Small mutable records
(configs, the random generator) are deep-copied.

Where ``os.memfd_create`` or ``mmap`` are missing (not Linux), or for tensors off the CPU, arrays are copied
instead (correct, not cheap). What a snapshot holds is listed by type in ``_walk``: an attribute of a type it does
not know is a ``TypeError``, so a new non-array field of the voxel map or the world is never silently shared.
"""

from __future__ import annotations

import copy
import dataclasses
import ctypes
import mmap
import os
import sys
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from worldweave.bridge.generators.base import GeneratorState
from worldweave.bridge.memory.anchors import AnchorStore
from worldweave.bridge.memory.change_log import ChangeLog
from worldweave.bridge.memory.spatial_memory import SpatialMemory
from worldweave.bridge.memory.voxel_index import HashIndex, SortedKeyIndex
from worldweave.bridge.memory.voxel_map import VoxelMap
from worldweave.proto.errors import NotFoundError
from worldweave.proto.geometry import Intrinsics

if TYPE_CHECKING:
    from worldweave.bridge.world import World

_PAGE = mmap.PAGESIZE
"""The unit of copy on write and of a snapshot file's layout, bytes (4 KiB)."""
_WRITE_CHUNK = 1 << 22
"""Granularity of the zero tail of an array left unwritten in a snapshot, bytes (4 MiB)."""
MAX_PIECES = 32
"""Most pieces (runs of pages from one file) a frozen array may have; past it a freeze writes the array whole. Each
piece is one mapping per view of it: a big world's 15 arrays take at most ~500 of the ~65,000 a process may hold."""
_MERGE_GAP_PAGES = 8
"""Runs of written pages this close are copied as one run (the clean pages between them too): fewer pieces."""
_MAX_CHANGED_FRACTION = 0.5
"""A freeze writes an array whole once this fraction of its pages changed (as much to copy, and one piece)."""
_MAX_STORED_FACTOR = 2.0
"""A freeze writes an array whole once the files its pieces use would hold more than this times its size."""
_MAX_SCATTERED_FRACTION = 0.25
"""Most of an array's pages that may be ``scattered`` (copied into every view: each view's own memory)."""
_SHARED_TYPES = (int, float, str, bool, type(None), np.generic, torch.device, Intrinsics)
"""Immutable values a snapshot keeps as they are."""
_WALKED_TYPES = (VoxelMap, HashIndex, SortedKeyIndex)
"""Objects whose attributes are frozen one by one (their arrays change in place)."""
CHECKPOINT_ID_CHARS = 12
"""Length of a checkpoint id: lowercase hex digits."""

_MAP_FIXED = 0x10
"""Linux ``MAP_FIXED`` (the ``mmap`` module does not export it)."""
if sys.platform.startswith("linux") and hasattr(os, "memfd_create"):
    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.mmap.restype = ctypes.c_void_p
    _libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
else:
    _libc = None


def _memfd_available() -> bool:
    return _libc is not None


class _File:
    """An anonymous in-memory file of ``size`` bytes holding frozen pages. Its descriptor is closed when no frozen
    array refers to it any more; the kernel keeps its pages while some view still maps them."""

    def __init__(self, size: int) -> None:
        self.size = size
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
class _Piece:
    """Bytes ``start .. start + length`` of an array (page-aligned), stored in ``file`` from ``file_offset``."""

    file: _File | None
    """None only while a freeze plans a delta, before it writes the file."""
    file_offset: int
    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


def _map_pieces(pieces: tuple[_Piece, ...], size: int) -> mmap.mmap:
    """A private mapping of ``size`` bytes (a page multiple) holding ``pieces``, zero elsewhere. Each piece is mapped
    over its place in one anonymous range; closing or dropping the returned object unmaps them all."""
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(region))
    for piece in pieces:
        target = address + piece.start
        result = _libc.mmap(target, piece.length, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | _MAP_FIXED,
                            piece.file.fd, piece.file_offset)
        if result != target:
            error = ctypes.get_errno()
            raise OSError(error, f"mapping a snapshot file failed: {os.strerror(error)}")
    return region


def _iov_max() -> int:
    """Most buffers one ``os.preadv`` / ``os.pwritev`` takes."""
    return os.sysconf("SC_IOV_MAX")


def _copy_in(runs: tuple[_Piece, ...], region: mmap.mmap) -> None:
    """Read ``runs`` (consecutive in their file) into their places in ``region``, ``os.preadv`` batch by batch."""
    target = memoryview(region)
    batch = _iov_max()
    for first in range(0, len(runs), batch):
        part = runs[first : first + batch]
        expected = sum(p.length for p in part)
        if os.preadv(part[0].file.fd, [target[p.start : p.end] for p in part], part[0].file_offset) != expected:
            raise OSError(f"reading {expected} bytes of a snapshot file came up short")


@dataclass(frozen=True)
class _FrozenArray:
    """One array in a snapshot: its content is ``pieces`` (runs of pages in snapshot files, sorted, not overlapping;
    bytes outside every piece are zero) with ``scattered`` laid over them, or ``copy`` (a private copy: no memfd
    here, or a tensor off the CPU). ``tensor_device``: the torch device the array came from, or None for a numpy
    array."""

    dtype: np.dtype
    shape: tuple[int, ...]
    tensor_device: torch.device | None
    pieces: tuple[_Piece, ...] = ()
    scattered: tuple[_Piece, ...] = ()
    """Many small runs of pages (sorted, consecutive in one file) that a view copies in instead of mapping each: the
    pages a hash table's new keys fell on since its last whole write (see ``_freeze_array``)."""
    copy: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def mapped_bytes(self) -> int:
        """``nbytes`` rounded up to whole pages: the size of a view's mapping."""
        return -(-self.nbytes // _PAGE) * _PAGE

    def stored_bytes(self) -> int:
        """Bytes of the files the pieces use (superseded pages included: a file is kept whole)."""
        return sum({id(p.file): p.file.size for p in self.pieces}.values())

    def view(self) -> np.ndarray | torch.Tensor:
        """A fresh private (copy-on-write) array with the frozen content, as numpy or as a tensor like the original."""
        if self.copy is not None:
            array = self.copy.copy()
        elif self.nbytes == 0:
            array = np.empty(self.shape, self.dtype)
        else:
            region = _map_pieces(self.pieces, self.mapped_bytes)
            _copy_in(self.scattered, region)
            array = np.frombuffer(region, self.dtype, count=int(np.prod(self.shape))).reshape(self.shape)
        if self.tensor_device is None:
            return array
        return torch.from_numpy(array).to(self.tensor_device)


def _nonzero_end(data: np.ndarray) -> int:
    """Bytes of ``data`` (uint8) up to the end of its last ``_WRITE_CHUNK`` piece that is not all zero: what needs
    writing (a voxel map's unused capacity is zeros, left unwritten). Reads only the zero tail."""
    end = len(data)
    while end > 0:
        start = max(0, end - _WRITE_CHUNK)
        piece = data[start:end]
        words = piece[: len(piece) // 8 * 8].view(np.uint64)
        if words.any() or piece[len(words) * 8 :].any():
            return end
        end = start
    return 0


def _written_pages(address: int, pages: int) -> np.ndarray | None:
    """Indices of the pages of ``pages`` pages from ``address`` (page-aligned, a private file mapping) that this
    process wrote since it mapped them: copied on write (present, not a file page) or swapped out. None where
    ``/proc/self/pagemap`` cannot be read (its flag bits need no privilege since Linux 4.2)."""
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return None
    try:
        raw = bytearray()
        while len(raw) < 8 * pages:
            chunk = os.pread(fd, 8 * pages - len(raw), (address // _PAGE) * 8 + len(raw))
            if not chunk:
                return None
            raw += chunk
    except OSError:
        return None
    finally:
        os.close(fd)
    entries = np.frombuffer(raw, np.uint64)
    present = (entries >> np.uint64(63)) & np.uint64(1)
    swapped = (entries >> np.uint64(62)) & np.uint64(1)
    file_page = (entries >> np.uint64(61)) & np.uint64(1)
    return np.flatnonzero(((present == 1) & (file_page == 0)) | (swapped == 1))


def _drop_zero_gap_pages(pages: np.ndarray, frozen: _FrozenArray, data: np.ndarray) -> np.ndarray:
    """``pages`` without those outside every piece of ``frozen`` (anonymous zero memory in a view) that still hold
    only zeros: the page map cannot tell reading such a page (the kernel maps its shared zero page) from writing it."""
    edges = np.zeros(frozen.mapped_bytes // _PAGE + 1, np.int32)
    pieces = frozen.pieces + frozen.scattered
    np.add.at(edges, np.array([p.start // _PAGE for p in pieces], np.int64), 1)
    np.add.at(edges, np.array([-(-p.end // _PAGE) for p in pieces], np.int64), -1)
    covered = np.cumsum(edges[:-1]) > 0
    gap = pages[~covered[pages]]
    if len(gap) == 0:
        return pages
    full = len(data) // _PAGE
    whole = gap[gap < full]
    nonzero = np.zeros(len(gap), bool)
    nonzero[: len(whole)] = data[: full * _PAGE].view(np.uint64).reshape(full, _PAGE // 8)[whole].any(axis=1)
    nonzero[len(whole):] = bool(data[full * _PAGE :].any())  # the partial last page, if it was touched
    return np.sort(np.concatenate([pages[covered[pages]], gap[nonzero]]))


def _page_runs(pages: np.ndarray, size: int, merge_gap_pages: int | None = None) -> list[tuple[int, int]]:
    """Sorted page indices as byte ranges ``[start, end)`` of runs of pages (gaps up to ``merge_gap_pages``, default
    ``_MERGE_GAP_PAGES``, clean pages joined), clipped to ``size`` bytes."""
    if len(pages) == 0:
        return []
    gap = _MERGE_GAP_PAGES if merge_gap_pages is None else merge_gap_pages
    breaks = np.flatnonzero(np.diff(pages) > 1 + gap)
    starts = np.concatenate([pages[:1], pages[breaks + 1]])
    ends = np.concatenate([pages[breaks], pages[-1:]]) + 1
    return [(int(s) * _PAGE, min(int(e) * _PAGE, size)) for s, e in zip(starts, ends)]


def _overlay(pieces: tuple[_Piece, ...], runs: list[tuple[int, int]], file_offset: int = 0) -> list[_Piece]:
    """``pieces`` with the byte ranges ``runs`` cut out and laid over them as new pieces of a file not written yet
    (``file`` None, at consecutive offsets from ``file_offset`` in run order); sorted by ``start``."""
    out = []
    for start, end in runs:
        out.append(_Piece(None, file_offset, start, end - start))
        file_offset += end - start
    for piece in pieces:
        parts = [(piece.start, piece.end)]
        for start, end in runs:
            if end <= piece.start or start >= piece.end:
                continue
            parts = [kept for a, b in parts for kept in ((a, min(b, start)), (max(a, end), b)) if kept[0] < kept[1]]
        out += [_Piece(piece.file, piece.file_offset + a - piece.start, a, b - a) for a, b in parts]
    return sorted(out, key=lambda p: p.start)


class _Deltas:
    """Runs of written pages of one freeze, of every array, copied into one file (``write``) that the planned pieces
    (``file`` None) then point to (``_resolve``). A freeze keeps two (pieces, scattered runs); one file for all
    arrays keeps a lineage of freezes to few open descriptors."""

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, int, int, int]] = []
        self.size = 0

    def add(self, data: np.ndarray, runs: list[tuple[int, int]]) -> int:
        """Queue the byte ranges ``runs`` of ``data`` (uint8); returns the file offset of the first."""
        first = self.size
        for start, end in runs:
            self._runs.append((data, start, end, self.size))
            self.size += end - start
        return first

    def write(self) -> _File | None:
        """The file holding every queued run (None when there is none); the sources are let go."""
        if not self._runs:
            return None
        file = _File(self.size)
        batch = _iov_max()
        for first in range(0, len(self._runs), batch):  # the runs lie one after another in the file
            part = self._runs[first : first + batch]
            buffers = []
            for data, start, end, _ in part:
                buffers.append(memoryview(data[start : min(end, len(data))]))
                if end > len(data):  # the array ends inside this page: pad it, so the next run keeps its offset
                    buffers.append(bytes(end - max(start, len(data))))
            os.pwritev(file.fd, buffers, part[0][3])
        self._runs = []
        return file


def _write_whole(data: np.ndarray) -> tuple[_Piece, ...]:
    """Write ``data`` (up to its zero tail) into a new file: its pieces (none when it is all zero)."""
    end = -(-_nonzero_end(data) // _PAGE) * _PAGE
    if end == 0:
        return ()
    file = _File(end)
    os.pwrite(file.fd, memoryview(data[:end]), 0)
    return (_Piece(file, 0, 0, end),)


def _freeze_array(
    value: np.ndarray | torch.Tensor, base: _FrozenArray | None, deltas: _Deltas, scatters: _Deltas
) -> _FrozenArray:
    """``value`` frozen. ``base``: the frozen array ``value`` is still a private view of (the last freeze), or None.

    With a base, the pages the view wrote (the kernel's page map; a view copied ``base.scattered`` in, so those count
    as written too) are copied: as pieces laid over the base's (few runs, at most ``MAX_PIECES`` pieces in all) into
    the freeze's file ``deltas``, else as ``scattered`` runs over the base's pieces (up to ``_MAX_SCATTERED_FRACTION``
    of the pages: a hash table's new keys) into the freeze's file ``scatters`` (apart, so that the next freeze, which
    copies them again, lets that file go). Otherwise, or when that is unknown, the array is written whole into a file
    of its own."""
    device = value.device if isinstance(value, torch.Tensor) else None
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
    if not _memfd_available() or (device is not None and device.type != "cpu"):
        return _FrozenArray(array.dtype, array.shape, device, copy=np.array(array, copy=True))
    array = np.ascontiguousarray(array)
    data = array.reshape(-1).view(np.uint8)
    frozen = _FrozenArray(array.dtype, array.shape, device)
    if base is not None and base.copy is None and (base.dtype, base.shape) == (array.dtype, array.shape) and data.size:
        pages = base.mapped_bytes // _PAGE
        written = _written_pages(array.ctypes.data, pages)
        if written is not None:
            written = _drop_zero_gap_pages(written, base, data)
        if written is not None and len(written) == 0:
            return base
        if written is not None and len(written) < _MAX_CHANGED_FRACTION * pages:
            runs = _page_runs(written, base.mapped_bytes)
            if len(runs) <= MAX_PIECES and len(_overlay(base.pieces, runs)) <= MAX_PIECES and (
                base.stored_bytes() + sum(end - start for start, end in runs) <= _MAX_STORED_FACTOR * base.mapped_bytes
            ):
                return dataclasses.replace(frozen, pieces=tuple(_overlay(base.pieces, runs, deltas.add(data, runs))))
            if len(written) <= _MAX_SCATTERED_FRACTION * pages:
                exact = _page_runs(written, base.mapped_bytes, merge_gap_pages=0)
                offset = scatters.add(data, exact)
                scattered = []
                for start, end in exact:
                    scattered.append(_Piece(None, offset, start, end - start))
                    offset += end - start
                return dataclasses.replace(frozen, pieces=base.pieces, scattered=tuple(scattered))
    return dataclasses.replace(frozen, pieces=_write_whole(data))


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


@dataclass(frozen=True)
class _Origin:
    """A live array that is a private view of ``frozen`` (made by a thaw or a freeze): the object itself (weakly)
    and its address. A freeze trusts the page map for it only while the attribute still holds that very object."""

    ref: weakref.ref
    address: int
    frozen: _FrozenArray

    def holds(self, value: Any) -> bool:
        return self.ref() is value and _address(value) == self.address


def _address(value: np.ndarray | torch.Tensor) -> int:
    return value.data_ptr() if isinstance(value, torch.Tensor) else value.__array_interface__["data"][0]


@dataclass(frozen=True)
class _MapFreeze:
    """The last freeze of a live voxel map: the version it froze, the frozen map, and which of the map's arrays are
    still views of it (by attribute path, e.g. ``("_index", "_table_keys")``)."""

    version: int
    frozen: _FrozenObject
    origins: dict[tuple[str, ...], _Origin]


_frozen_maps: weakref.WeakKeyDictionary[VoxelMap, _MapFreeze] = weakref.WeakKeyDictionary()
"""The last freeze of each live voxel map: reused while its version is unchanged, the base of the next one."""


def _walk(path: tuple[str, ...], value: Any, origins: dict[tuple[str, ...], _Origin], *deltas: _Deltas) -> Any:
    """``value`` frozen: arrays by ``_freeze_array`` (against their origin's frozen array while the attribute holds
    the same view), walked objects attribute by attribute, immutable values as they are; ``TypeError`` naming an
    attribute of any other type."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        origin = origins.get(path)
        return _freeze_array(value, origin.frozen if origin is not None and origin.holds(value) else None, *deltas)
    if isinstance(value, _WALKED_TYPES):
        return _FrozenObject(type(value), {k: _walk((*path, k), v, origins, *deltas) for k, v in vars(value).items()})
    if isinstance(value, _SHARED_TYPES):
        return value
    if isinstance(value, ChangeLog):
        return _FreshLog(value.retention_versions, value.max_keys)
    name = ".".join(("voxel_map", *path))
    raise TypeError(f"a snapshot does not know how to freeze {name} ({type(value).__name__}); add it to bridge/checkpoints.py")


def _resolve(value: Any, delta_file: _File | None, scatter_file: _File | None) -> Any:
    """``value`` (a frozen object) with its planned pieces (``file`` None) pointing to the freeze's files."""
    if isinstance(value, _FrozenObject):
        return _FrozenObject(value.cls, {k: _resolve(v, delta_file, scatter_file) for k, v in value.attributes.items()})
    if isinstance(value, _FrozenArray):
        def filled(pieces: tuple[_Piece, ...], file: _File | None) -> tuple[_Piece, ...]:
            if all(p.file is not None for p in pieces):
                return pieces  # the same tuple: ``_adopt`` recognises pieces a freeze kept
            return tuple(dataclasses.replace(p, file=file) if p.file is None else p for p in pieces)

        pieces, scattered = filled(value.pieces, delta_file), filled(value.scattered, scatter_file)
        if pieces is not value.pieces or scattered is not value.scattered:
            return dataclasses.replace(value, pieces=pieces, scattered=scattered)
    return value


def freeze_voxel_map(voxel_map: VoxelMap) -> _FrozenObject:
    """The voxel map's state in snapshot files, or the previous freeze when its version is unchanged. Only what
    changed since the last freeze is copied (see the module docstring); the live map then maps the new pieces too,
    so the copy does not double its memory."""
    with _cache_lock:
        cached = _frozen_maps.get(voxel_map)
    if cached is not None and cached.version == voxel_map.version:
        return cached.frozen
    origins = {} if cached is None else cached.origins
    deltas, scatters = _Deltas(), _Deltas()
    frozen = _resolve(_walk((), voxel_map, origins, deltas, scatters), deltas.write(), scatters.write())
    new_origins: dict[tuple[str, ...], _Origin] = {}
    _adopt(voxel_map, frozen, origins, new_origins, ())
    with _cache_lock:
        _frozen_maps[voxel_map] = _MapFreeze(voxel_map.version, frozen, new_origins)
    return frozen


def _adopt(target: Any, frozen: _FrozenObject, old: dict, new: dict, path: tuple[str, ...]) -> None:
    """Point ``target``'s arrays at fresh private views of ``frozen`` (same content, the copied pages freed) and
    record them in ``new``; an array that did not change stays the view it was (``old``)."""
    for name, value in frozen.attributes.items():
        key = (*path, name)
        if isinstance(value, _FrozenArray) and value.copy is None:
            current = getattr(target, name)
            origin = old.get(key)
            if origin is not None and origin.holds(current) and (
                origin.frozen is value or (value.scattered and value.pieces is origin.frozen.pieces)
            ):  # unchanged, or the view's own written pages became ``scattered``: it already holds that content
                new[key] = _Origin(origin.ref, origin.address, value)
            else:
                view = value.view()
                setattr(target, name, view)
                new[key] = _Origin(weakref.ref(view), _address(view), value)
        elif isinstance(value, _FrozenObject):
            _adopt(getattr(target, name), value, old, new, key)


def thaw_voxel_map(frozen: _FrozenObject, *, version: int | None = None) -> VoxelMap:
    """A new voxel map with the frozen content, sharing the files' pages until it writes them. ``version``: the new
    map's version (default the frozen one); its change log starts empty there, so ``changes_since`` an older
    version answers a snapshot."""
    if version is not None:
        frozen = _FrozenObject(frozen.cls, {**frozen.attributes, "version": int(version)})
    origins: dict[tuple[str, ...], _Origin] = {}
    voxel_map = _thaw(frozen, origins, ())
    voxel_map._log.clear(voxel_map.version)
    with _cache_lock:
        _frozen_maps[voxel_map] = _MapFreeze(voxel_map.version, frozen, origins)  # frozen again unchanged: no copy
    return voxel_map


def _thaw(value: Any, origins: dict[tuple[str, ...], _Origin], path: tuple[str, ...]) -> Any:
    if isinstance(value, _FrozenArray):
        view = value.view()
        if value.copy is None:
            origins[path] = _Origin(weakref.ref(view), _address(view), value)
        return view
    if isinstance(value, _FreshLog):
        return ChangeLog(value.retention_versions, value.max_keys)
    if isinstance(value, _FrozenObject):
        obj = value.cls.__new__(value.cls)
        for name, attribute in value.attributes.items():
            setattr(obj, name, _thaw(attribute, origins, (*path, name)))
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
    generator_state: GeneratorState
    """A copy of what the world's generator kept of it (``GeneratorState``)."""


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
                 "_leading", "_next_frame_id", "checkpoints", "_condition_memo", "_generator_state"}
"""``World`` attributes a snapshot knows: what it freezes, what the world's host keeps (generator, depth estimator,
query reach, checkpoints) and what is rebuilt or dropped (queries, the last condition kept for a still camera)."""


def freeze_world(world: World) -> WorldSnapshot:
    """The world's state now (see the module docstring for what that holds and what it costs)."""
    unknown = set(vars(world)) - _WORLD_FIELDS
    if unknown:
        raise TypeError(f"a snapshot does not know World fields {sorted(unknown)}; add them to bridge/checkpoints.py")
    return WorldSnapshot(
        memory=freeze_memory(world.memory), config=copy.deepcopy(world.config), intrinsics=world.intrinsics,
        prompt=world.prompt, leading=tuple(world._leading), frame_count=int(world.frame_count),
        version=int(world.version), created_unix_s=time.time(),
        generator_state=copy.deepcopy(world._generator_state),
    )


def thaw_world_into(world: World, snapshot: WorldSnapshot, *, version: int | None = None) -> None:
    """Set ``world``'s state to ``snapshot``'s (its generator, depth estimator, query reach and checkpoints stay);
    ``version``: the memory version it continues from (default the snapshot's)."""
    world.config = copy.deepcopy(snapshot.config)
    world.memory = thaw_memory(snapshot.memory, version=version)
    world._queries = None
    world._condition_memo = None
    world._generator_state = copy.deepcopy(snapshot.generator_state)
    world.intrinsics = snapshot.intrinsics
    world.prompt = snapshot.prompt
    world._leading = list(snapshot.leading)
    world._next_frame_id = snapshot.frame_count
